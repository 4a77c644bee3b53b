"""Borg scheduling on the real kube-scheduler calling Cell's extender, on KWOK nodes (issue 3).

Each test gets nodes of its own (tainted and labelled for it), so what else the shared cell runs
cannot change the outcome.
"""

from __future__ import annotations

import collections
import time

import pytest
from kubernetes import client
from typer.testing import CliRunner

from cell.cli import app
from cell.localcell.supervisor import LocalCell
from tests.integration.conftest import NodeFactory
from tests.integration.helpers import deployment, pin_to_test_nodes, wait_for

pytestmark = pytest.mark.cluster


# A loaded machine can delay KWOK's heartbeats; the node lifecycle controller then taints the node and
# evicts its pods after --default-not-ready-toleration-seconds. Pods that must stay put tolerate that.
NODE_TROUBLE_TOLERATIONS = [{"key": key, "operator": "Exists", "effect": "NoExecute"}
                            for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]


def _deploy(kube_api: client.ApiClient, namespace: str, name: str, replicas: int, cpu: str, band: str,
            stay_put: bool = False) -> None:
    manifest = deployment(name, replicas, cpu=cpu, memory="256Mi", priority_class=band)
    spec = manifest["spec"]["template"]["spec"]
    pin_to_test_nodes(spec, namespace)
    if stay_put:
        spec["tolerations"].extend(NODE_TROUBLE_TOLERATIONS)
    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, manifest)


def _removal_evidence(kube_api: client.ApiClient, namespace: str) -> str:
    """Who removed pods in the namespace (preemption, taint eviction, ...), for a failure message."""
    events = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    lines = [f"{e.involved_object.name}: {e.reason} ({e.source.component if e.source else '?'}): {e.message}"
             for e in events if e.reason in ("Preempted", "TaintManagerEviction", "Killing", "Evicted")]
    return "\n".join(lines) or "no Preempted/TaintManagerEviction/Killing/Evicted events"


def _pods(kube_api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def _bound(kube_api: client.ApiClient, namespace: str, selector: str, count: int, timeout: float = 90) -> list:
    def ready() -> list | None:
        pods = _pods(kube_api, namespace, selector)
        bound = [p for p in pods if p.spec.node_name]
        return bound if len(bound) >= count else None

    return wait_for(ready, timeout, what=f"{count} pods of {selector} bound")


def _zone_of(kube_api: client.ApiClient) -> dict[str, str]:
    nodes = client.CoreV1Api(kube_api).list_node().items
    return {n.metadata.name: n.metadata.labels.get("topology.kubernetes.io/zone", "") for n in nodes}


def _pod_scheduled_message(kube_api: client.ApiClient, namespace: str, pod: str) -> str:
    status = client.CoreV1Api(kube_api).read_namespaced_pod(pod, namespace).status
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return cond.message or cond.reason or ""
    return ""


def _spread_frontend(kube_api: client.ApiClient, namespace: str, test_nodes: NodeFactory) -> list[client.V1Pod]:
    test_nodes(6)  # two nodes in each of zone-a, zone-b, zone-c
    _deploy(kube_api, namespace, "frontend", 6, "1", "production")
    return _bound(kube_api, namespace, "app=frontend", 6)


def test_production_pods_of_one_job_spread_across_zones(kube_api: client.ApiClient, namespace: str,
                                                        test_nodes: NodeFactory) -> None:
    pods = _spread_frontend(kube_api, namespace, test_nodes)
    zones = collections.Counter(_zone_of(kube_api)[p.spec.node_name] for p in pods)
    assert zones == {"zone-a": 2, "zone-b": 2, "zone-c": 2}, f"production pods not spread by zone: {zones}"


def test_production_pods_of_one_job_each_get_their_own_node(kube_api: client.ApiClient, namespace: str,
                                                            test_nodes: NodeFactory) -> None:
    pods = _spread_frontend(kube_api, namespace, test_nodes)
    nodes = collections.Counter(p.spec.node_name for p in pods)
    assert max(nodes.values()) == 1, f"production pods should each get their own node (least allocated): {nodes}"


def test_batch_pods_pack_onto_the_fewest_nodes(kube_api: client.ApiClient, namespace: str,
                                               test_nodes: NodeFactory) -> None:
    test_nodes(6)
    # Eight 1-CPU batch tasks fit on one 8-CPU node; Borg's best fit packs them (less stranding),
    # where stock Kubernetes' least-allocated scoring would put one on every node.
    _deploy(kube_api, namespace, "crunch", 8, "1", "batch")
    pods = _bound(kube_api, namespace, "app=crunch", 8)
    used_nodes = {p.spec.node_name for p in pods}
    assert len(used_nodes) <= 2, f"batch pods spread over {len(used_nodes)} nodes instead of packing: {used_nodes}"


def test_production_pod_preempts_batch_pods_in_a_full_cell(kube_api: client.ApiClient, namespace: str,
                                                           test_nodes: NodeFactory) -> None:
    test_nodes(3)
    _deploy(kube_api, namespace, "filler", 24, "1", "batch")  # 3 nodes x 8 CPU: the cell is full
    fillers = _bound(kube_api, namespace, "app=filler", 24)
    filler_uids = {p.metadata.uid for p in fillers}
    _deploy(kube_api, namespace, "serving", 1, "2", "production")

    def serving_bound() -> list | None:
        pods = [p for p in _pods(kube_api, namespace, "app=serving") if p.spec.node_name]
        return pods or None

    serving = wait_for(serving_bound, 90, what="the production pod to preempt batch pods and bind")
    assert serving[0].spec.node_name.startswith(namespace)
    remaining = {p.metadata.uid for p in _pods(kube_api, namespace, "app=filler")}
    preempted = filler_uids - remaining
    assert len(preempted) >= 2, "a 2-CPU production pod in a full cell needs two 1-CPU batch victims"


def test_no_prod_pod_preempts_a_prod_pod(local_cell: LocalCell, kube_api: client.ApiClient, namespace: str,
                                         test_nodes: NodeFactory) -> None:
    test_nodes(3)
    _deploy(kube_api, namespace, "incumbent", 6, "4", "production", stay_put=True)  # two per node: full
    incumbents = _bound(kube_api, namespace, "app=incumbent", 6)
    before = {p.metadata.uid for p in incumbents}
    _deploy(kube_api, namespace, "newcomer", 1, "2", "production")
    _deploy(kube_api, namespace, "watcher", 1, "2", "monitoring")

    def both_unschedulable() -> list[tuple[str, str]] | None:
        found = []
        for app_name in ("newcomer", "watcher"):
            pods = _pods(kube_api, namespace, f"app={app_name}")
            if not pods:
                return None
            message = _pod_scheduled_message(kube_api, namespace, pods[0].metadata.name)
            if not message:
                return None
            found.append((pods[0].metadata.name, message))
        return found

    pending = wait_for(both_unschedulable, 60, what="newcomer and watcher to be reported unschedulable")
    time.sleep(5)  # give preemption every chance to (wrongly) happen
    after = {p.metadata.uid for p in _pods(kube_api, namespace, "app=incumbent")}
    assert after == before, ("a prod pod was preempted by a prod pod (R1 broken):\n"
                             + _removal_evidence(kube_api, namespace))
    for app_name in ("newcomer", "watcher"):
        pod = _pods(kube_api, namespace, f"app={app_name}")[0]
        assert not pod.spec.node_name, f"{app_name} was bound although the cell is full of prod pods"

    newcomer = pending[0][0]
    result = CliRunner().invoke(app, ["why", f"{namespace}/{newcomer}", "--state-dir", str(local_cell.state_dir)])
    assert result.exit_code == 0, result.output
    text = result.output
    for node in (f"{namespace}-1", f"{namespace}-2", f"{namespace}-3"):
        assert node in text, f"cell why does not mention {node}:\n{text}"
    assert "cpu" in text.lower(), f"cell why does not name the cpu shortage:\n{text}"
    assert "prod" in text.lower(), f"cell why does not explain that prod pods cannot be preempted:\n{text}"


def test_extender_restart_in_a_burst_loses_no_pod(local_cell: LocalCell, kube_api: client.ApiClient,
                                                  namespace: str, test_nodes: NodeFactory) -> None:
    test_nodes(6)
    _deploy(kube_api, namespace, "burst", 200, "10m", "batch")
    time.sleep(1.0)
    local_cell.restart("extender")

    def settled() -> bool:
        pods = _pods(kube_api, namespace, "app=burst")
        if len(pods) < 200:
            return False
        for pod in pods:
            if not pod.spec.node_name and not _pod_scheduled_message(kube_api, namespace, pod.metadata.name):
                return False
        return True

    wait_for(settled, 180, interval=2, what="all 200 pods bound or pending with a reason")
    pods = _pods(kube_api, namespace, "app=burst")
    bound = [p for p in pods if p.spec.node_name]
    # 200 x 10m fits easily on 6 nodes: once the extender is back every pod must be bound.
    wait_for(lambda: len([p for p in _pods(kube_api, namespace, "app=burst") if p.spec.node_name]) == 200, 120,
             interval=2, what="all 200 pods bound after the extender restart")
    assert len(pods) == 200 and len(bound) <= 200


def test_bare_pods_of_one_service_spread_across_zones(kube_api: client.ApiClient, namespace: str,
                                                      test_nodes: NodeFactory) -> None:
    # Upstream's "Multi-AZ Clusters should spread the pods of a service across zones" (docs/conformance.md):
    # pods without owners, requests or priority (so they pack), tied together by a Service alone.
    test_nodes(6)
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(namespace, {
        "metadata": {"name": "test-service"},
        "spec": {"selector": {"service": "test-service"}, "ports": [{"port": 80, "targetPort": 80}]}})
    time.sleep(2)  # the extender's Service watch sees it within milliseconds; the pods must not come first
    for i in range(15):
        spec = pin_to_test_nodes({"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
                                 namespace)
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": f"test-service-{i}", "labels": {"service": "test-service"}}, "spec": spec})
    pods = _bound(kube_api, namespace, "service=test-service", 15)
    zones = collections.Counter(_zone_of(kube_api)[p.spec.node_name] for p in pods)
    assert zones == {"zone-a": 5, "zone-b": 5, "zone-c": 5}, f"the Service's pods are not spread by zone: {zones}"

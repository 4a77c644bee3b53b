"""Allocs and alloc sets on a real cell (issue 5, SPEC §4 A1-A6): the CRD, the operator's placement,
the extender's enforcement through the real kube-scheduler, the quota webhook's charge.

Each test gets KWOK nodes of its own (tainted and labelled for it); its Allocs select those nodes
with spec.nodeSelector and its pods select and tolerate them, so what else the shared cell runs
cannot change the outcome.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from cell.cli import app
from cell.localcell.supervisor import LocalCell
from cell.students import StudentSpec, add_students, remove_students
from scheduler_ext.policy.model import ALLOC_LABEL, ZONE_LABEL
from scheduler_ext.policy.resources import Resources
from tests.integration.conftest import NodeFactory
from tests.integration.helpers import deployment, pin_to_test_nodes, restricted, wait_for

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "cell.distos.dev", "v1alpha1", "allocs"
FINALIZER = "cell.distos.dev/alloc-protection"
TEST_LABEL = "cell.distos.dev/test"


# --- helpers -------------------------------------------------------------------------------------

def alloc_manifest(name: str, prefix: str, count: int = 1, cpu: str = "2", memory: str = "1Gi",
                   band: str = "production", spread_by: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"priorityClassName": band, "count": count, "resources": {"cpu": cpu, "memory": memory},
                            "nodeSelector": {TEST_LABEL: prefix}}
    if spread_by:
        spec["spreadBy"] = spread_by
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Alloc", "metadata": {"name": name}, "spec": spec}


def create_alloc(api: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)


def read_alloc(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def delete_alloc(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def wait_phase(api: client.ApiClient, namespace: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        alloc = read_alloc(api, namespace, name)
        return alloc if alloc and (alloc.get("status") or {}).get("phase") == phase else None

    try:
        return wait_for(reached, timeout, what=f"Alloc {namespace}/{name} {phase}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Alloc is now: {json.dumps(read_alloc(api, namespace, name))}") from None


def placed(alloc: dict[str, Any]) -> set[tuple[int, str]]:
    return {(i["index"], i["node"]) for i in (alloc.get("status") or {}).get("instances") or []}


def instance_nodes(alloc: dict[str, Any]) -> list[str]:
    return [i["node"] for i in (alloc.get("status") or {}).get("instances") or []]


def member_template(prefix: str, alloc: str | None, cpu: str, memory: str = "256Mi",
                    band: str = "production") -> dict[str, Any]:
    """A pod spec pinned to the test's nodes; with alloc, a member of it (SPEC A2)."""
    spec = {"priorityClassName": band,
            "containers": [{"name": "main", "image": "cell.local/web:1.0",
                            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    labels = {ALLOC_LABEL: alloc} if alloc else {}
    return {"labels": labels, "spec": restricted(pin_to_test_nodes(spec, prefix))}


def create_pod(api: client.ApiClient, namespace: str, name: str, prefix: str, alloc: str | None, cpu: str,
               memory: str = "256Mi", node: str | None = None) -> None:
    template = member_template(prefix, alloc, cpu, memory)
    if node:
        template["spec"]["nodeSelector"]["kubernetes.io/hostname"] = node
    client.CoreV1Api(api).create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": template["labels"]},
        "spec": template["spec"]})


def create_members(api: client.ApiClient, namespace: str, name: str, prefix: str, alloc: str, replicas: int,
                   cpu: str, memory: str = "256Mi") -> None:
    """A Deployment whose pods are members of `alloc`."""
    manifest = deployment(name, replicas, cpu=cpu, memory=memory, priority_class="production",
                          labels={ALLOC_LABEL: alloc})
    pin_to_test_nodes(manifest["spec"]["template"]["spec"], prefix)
    client.AppsV1Api(api).create_namespaced_deployment(namespace, manifest)


def live_pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def bound_pods(api: client.ApiClient, namespace: str, selector: str, count: int, timeout: float = 90) -> list:
    def ready() -> list | None:
        bound = [p for p in live_pods(api, namespace, selector) if p.spec.node_name]
        return bound if len(bound) >= count else None

    return wait_for(ready, timeout, what=f"{count} pods of {selector} bound")


def pending_message(api: client.ApiClient, namespace: str, pod: str) -> str:
    """The scheduler's PodScheduled=False message ("" while bound or not yet tried)."""
    try:
        pod_obj = client.CoreV1Api(api).read_namespaced_pod(pod, namespace)
    except ApiException:
        return ""
    if pod_obj.spec.node_name:
        return ""
    for cond in pod_obj.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return cond.message or ""
    return ""


def wait_unschedulable(api: client.ApiClient, namespace: str, pod: str, *needles: str, timeout: float = 60) -> str:
    def seen() -> str:
        message = pending_message(api, namespace, pod)
        return message if message and all(n in message for n in needles) else ""

    try:
        return wait_for(seen, timeout, what=f"pod {pod} unschedulable, naming {needles}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last message: {pending_message(api, namespace, pod)!r}") from None


def requests_by_node(pods: list[client.V1Pod]) -> dict[str, Resources]:
    use: dict[str, Resources] = {}
    for pod in pods:
        requests = Resources.parse(pod.spec.containers[0].resources.requests)
        use[pod.spec.node_name] = use.get(pod.spec.node_name, Resources()) + requests
    return use


def reserved_by_node(api: client.ApiClient, namespace: str) -> dict[str, Resources]:
    """What the namespace's Allocs reserve on each node, from their status."""
    held: dict[str, Resources] = {}
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    for alloc in items:
        per_instance = Resources.parse(alloc["spec"]["resources"])
        for node in instance_nodes(alloc):
            held[node] = held.get(node, Resources()) + per_instance
    return held


NODE_CAPACITY = Resources.parse({"cpu": "8", "memory": "32Gi"})  # a KWOK node of dedicated_node_manifests


# --- the CRD -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "complaint"), [
    ("count", 0, "spec.count"),
    ("count", -2, "spec.count"),
    ("resources", {"cpu": "lots", "memory": "1Gi"}, "spec.resources.cpu"),
    ("resources", {"cpu": "1", "memory": "-1Gi"}, "spec.resources.memory"),
    ("resources", {"cpu": "1"}, "spec.resources.memory"),
    ("priorityClassName", "urgent", "spec.priorityClassName"),
])
def test_crd_refuses_malformed_allocs(local_cell: LocalCell, namespace: str, field: str, value: Any,
                                      complaint: str) -> None:
    manifest = alloc_manifest("bad", namespace)
    manifest["spec"][field] = value
    result = subprocess.run([str(local_cell.kubectl), f"--kubeconfig={local_cell.paths.kubeconfig}", "-n", namespace,
                             "create", "-f", "-"], input=json.dumps(manifest), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0, f"a malformed Alloc ({field}={value!r}) was accepted"
    assert complaint in result.stderr, f"the refusal does not name {complaint}: {result.stderr}"
    assert read_alloc(local_cell.api(), namespace, "bad") is None


# --- placement (A1, A6) --------------------------------------------------------------------------

def test_alloc_set_reserved_on_distinct_nodes_in_distinct_zones(kube_api: client.ApiClient, namespace: str,
                                                                test_nodes: NodeFactory) -> None:
    names = test_nodes(4)  # zones a, b, c, a
    create_alloc(kube_api, namespace, alloc_manifest("cache", namespace, count=3, cpu="500m", memory="256Mi",
                                                     spread_by=ZONE_LABEL))
    alloc = wait_phase(kube_api, namespace, "cache", "Reserved")
    status = alloc["status"]
    nodes = instance_nodes(alloc)
    assert sorted(i["index"] for i in status["instances"]) == [0, 1, 2]
    assert len(set(nodes)) == 3 and set(nodes) <= set(names), f"instances not on distinct test nodes: {nodes}"
    zones = {client.CoreV1Api(kube_api).read_node(n).metadata.labels[ZONE_LABEL] for n in nodes}
    assert zones == {"zone-a", "zone-b", "zone-c"}, f"instances not spread by zone: {zones}"
    assert all(i["used"] == {"cpu": "0", "memory": "0"} for i in status["instances"]), status
    assert status["message"] == "" and status["observedGeneration"] == alloc["metadata"]["generation"]
    assert FINALIZER in alloc["metadata"]["finalizers"]


def test_an_alloc_set_grows_and_shrinks_without_moving_what_it_holds(kube_api: client.ApiClient, namespace: str,
                                                                     test_nodes: NodeFactory) -> None:
    names = test_nodes(3)
    create_alloc(kube_api, namespace, alloc_manifest("elastic", namespace, count=1, cpu="1"))
    first = placed(wait_phase(kube_api, namespace, "elastic", "Reserved"))
    custom = client.CustomObjectsApi(kube_api)

    def resize(count: int) -> dict[str, Any]:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "elastic", {"spec": {"count": count}})

        def settled() -> dict[str, Any] | None:
            alloc = read_alloc(kube_api, namespace, "elastic") or {}
            status = alloc.get("status") or {}
            done = status.get("observedGeneration") == alloc["metadata"]["generation"] and status.get("phase")
            return alloc if done == "Reserved" and len(status["instances"]) == count else None

        return wait_for(settled, 60, what=f"Alloc elastic Reserved with {count} instances")

    grown = placed(resize(3))
    assert first <= grown and {n for _, n in grown} == set(names), grown
    shrunk = placed(resize(2))
    assert first <= shrunk and {i for i, _ in shrunk} == {0, 1} and shrunk <= grown, shrunk


def test_instances_that_fit_nowhere_wait_with_a_reason_and_are_placed_when_capacity_frees(
        kube_api: client.ApiClient, namespace: str, test_nodes: NodeFactory) -> None:
    names = test_nodes(2)
    for index, node in enumerate(names):  # 6 of 8 CPU taken on each node
        create_pod(kube_api, namespace, f"filler-{index}", namespace, None, "6", node=node)
    bound_pods(kube_api, namespace, "!" + ALLOC_LABEL, 2)
    create_alloc(kube_api, namespace, alloc_manifest("big", namespace, count=2, cpu="4"))
    pending = wait_phase(kube_api, namespace, "big", "Pending")
    assert "0 of 2 instance(s)" in pending["status"]["message"], pending["status"]
    assert "instance needs cpu 4" in pending["status"]["message"], pending["status"]

    client.CoreV1Api(kube_api).delete_namespaced_pod("filler-0", namespace, grace_period_seconds=0)
    partial = wait_phase(kube_api, namespace, "big", "PartiallyReserved")
    assert instance_nodes(partial) == [names[0]], partial["status"]
    assert "1 of 2 instance(s)" in partial["status"]["message"], partial["status"]

    client.CoreV1Api(kube_api).delete_namespaced_pod("filler-1", namespace, grace_period_seconds=0)
    reserved = wait_phase(kube_api, namespace, "big", "Reserved")
    assert sorted(instance_nodes(reserved)) == sorted(names)
    assert reserved["status"]["instances"][0]["node"] == names[0], "a placed instance moved"


def test_non_members_never_get_reserved_capacity(kube_api: client.ApiClient, namespace: str,
                                                 test_nodes: NodeFactory) -> None:
    (node,) = test_nodes(1)
    create_alloc(kube_api, namespace, alloc_manifest("hold", namespace, cpu="6", memory="1Gi"))
    wait_phase(kube_api, namespace, "hold", "Reserved")
    # 8 CPU node, 6 reserved, nothing running: a 3 CPU non-member must wait, a 2 CPU one fits.
    create_pod(kube_api, namespace, "outsider", namespace, None, "3")
    wait_unschedulable(kube_api, namespace, "outsider", "insufficient capacity outside allocs", "alloc reservations")
    create_pod(kube_api, namespace, "small", namespace, None, "2")
    (small,) = bound_pods(kube_api, namespace, "!" + ALLOC_LABEL, 1)
    assert small.metadata.name == "small" and small.spec.node_name == node
    assert not client.CoreV1Api(kube_api).read_namespaced_pod("outsider", namespace).spec.node_name


# --- members (A2, A3) ----------------------------------------------------------------------------

def test_members_of_several_jobs_share_an_alloc_inside_its_instances(kube_api: client.ApiClient, namespace: str,
                                                                     test_nodes: NodeFactory) -> None:
    names = test_nodes(3)
    create_alloc(kube_api, namespace, alloc_manifest("shared", namespace, count=2, cpu="2", memory="2Gi"))
    alloc = wait_phase(kube_api, namespace, "shared", "Reserved")
    alloc_nodes = set(instance_nodes(alloc))
    spare = (set(names) - alloc_nodes).pop()

    create_members(kube_api, namespace, "front", namespace, "shared", 2, cpu="1", memory="512Mi")
    create_members(kube_api, namespace, "back", namespace, "shared", 2, cpu="1", memory="512Mi")
    members = bound_pods(kube_api, namespace, f"{ALLOC_LABEL}=shared", 4)
    assert {p.spec.node_name for p in members} <= alloc_nodes, "a member ran outside its alloc's nodes"
    use = requests_by_node(members)
    assert all(u.fits_in(Resources.parse({"cpu": "2", "memory": "2Gi"})) for u in use.values()), use

    def used_recorded() -> bool:
        status = (read_alloc(kube_api, namespace, "shared") or {}).get("status") or {}
        return all(i["used"] == {"cpu": "2", "memory": "1Gi"} for i in status.get("instances") or [])

    wait_for(used_recorded, 30, what="status.instances[].used = the members' requests")

    # Both instances are full: a fifth member waits although the spare node is empty (A2).
    client.AppsV1Api(kube_api).patch_namespaced_deployment_scale("back", namespace, {"spec": {"replicas": 3}})

    def newcomer() -> str:
        waiting = [p for p in live_pods(kube_api, namespace, "app=back") if not p.spec.node_name]
        return waiting[0].metadata.name if waiting else ""

    pod = wait_for(newcomer, 30, what="a third back pod")
    message = wait_unschedulable(kube_api, namespace, pod, "too little left", "not a node of alloc")
    assert spare not in {p.spec.node_name for p in live_pods(kube_api, namespace, f"{ALLOC_LABEL}=shared")}, message


def test_member_deleted_and_recreated_lands_back_in_its_alloc(kube_api: client.ApiClient, namespace: str,
                                                              test_nodes: NodeFactory) -> None:
    test_nodes(3)
    create_alloc(kube_api, namespace, alloc_manifest("home", namespace, cpu="1", memory="512Mi"))
    (node,) = instance_nodes(wait_phase(kube_api, namespace, "home", "Reserved"))
    members = f"{ALLOC_LABEL}=home"
    create_members(kube_api, namespace, "svc", namespace, "home", 1, cpu="1", memory="512Mi")
    for _ in range(3):  # the ReplicaSet recreates it; it lands back every time (A3)
        (member,) = bound_pods(kube_api, namespace, members, 1)
        assert member.spec.node_name == node, f"member on {member.spec.node_name}, alloc on {node}"
        client.CoreV1Api(kube_api).delete_namespaced_pod(member.metadata.name, namespace, grace_period_seconds=0)
        wait_gone(kube_api, namespace, member.metadata.name)
    (member,) = bound_pods(kube_api, namespace, members, 1)
    assert member.spec.node_name == node

    # A bare pod deleted and recreated under the same name lands back too.
    client.AppsV1Api(kube_api).delete_namespaced_deployment("svc", namespace)
    wait_for(lambda: not live_pods(kube_api, namespace, members), 60, what="svc's pods gone")
    for _ in range(2):
        create_pod(kube_api, namespace, "again", namespace, "home", "500m")
        (again,) = bound_pods(kube_api, namespace, members, 1)
        assert again.spec.node_name == node
        client.CoreV1Api(kube_api).delete_namespaced_pod("again", namespace, grace_period_seconds=0)
        wait_gone(kube_api, namespace, "again")
    assert instance_nodes(read_alloc(kube_api, namespace, "home") or {}) == [node], "the reservation moved"


def wait_gone(api: client.ApiClient, namespace: str, pod: str) -> None:
    def gone() -> bool:
        try:
            client.CoreV1Api(api).read_namespaced_pod(pod, namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, 30, what=f"pod {pod} gone")


# --- quota (A4) ----------------------------------------------------------------------------------

@pytest.fixture
def student(local_cell: LocalCell) -> Iterator[str]:
    name = f"a-{uuid.uuid4().hex[:6]}"
    bands = {"production": {"cpu": "4", "memory": "8Gi"}, "batch": {"cpu": "4", "memory": "4Gi"}}
    add_students([StudentSpec(name, bands)], local_cell.paths)
    yield name
    remove_students([name], local_cell.paths)


def _used_production(api: client.ApiClient, namespace: str) -> dict[str, str]:
    return _used(api, namespace, "production")


def _used(api: client.ApiClient, namespace: str, band: str) -> dict[str, str]:
    quota = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "bandquotas", "quota")
    return dict(((quota.get("status") or {}).get("used") or {}).get(band) or {})


def test_alloc_is_charged_to_its_band_once_and_members_are_not(kube_api: client.ApiClient, student: str,
                                                                 namespace: str, test_nodes: NodeFactory) -> None:
    test_nodes(2)
    prefix = namespace  # the test nodes' label; the objects live in the student's (managed) namespace
    create_alloc(kube_api, student, alloc_manifest("cache", prefix, count=2, cpu="1", memory="1Gi"))
    wait_for(lambda: _used_production(kube_api, student) == {"cpu": "2", "memory": "2Gi"}, 30,
             what="the alloc charged: production cpu 2 / memory 2Gi")

    # Members are inside the alloc's charge: 2 x 1 CPU more is admitted and not charged again.
    create_members(kube_api, student, "cache", prefix, "cache", 2, cpu="1", memory="1Gi")

    # Another alloc of 3 x 1 CPU would make 5 of 4: refused at submission, naming the band.
    with pytest.raises(ApiException) as refused:
        create_alloc(kube_api, student, alloc_manifest("more", prefix, count=3, cpu="1", memory="1Gi"))
    body = refused.value.body or ""
    assert refused.value.status == 403 and "band production needs cpu 3, 2 in use, limit 4" in body, body
    assert read_alloc(kube_api, student, "more") is None

    members = bound_pods(kube_api, student, f"{ALLOC_LABEL}=cache", 2)
    alloc_nodes = set(instance_nodes(read_alloc(kube_api, student, "cache") or {}))
    assert {p.spec.node_name for p in members} <= alloc_nodes
    # A later change the operator must show (a batch job) proves it has seen the members, whose
    # events came first on the same watch: only then does an unchanged production charge mean something.
    sync = deployment("sync", 1, cpu="100m", memory="64Mi", priority_class="batch")
    client.AppsV1Api(kube_api).create_namespaced_deployment(student, sync)
    wait_for(lambda: _used(kube_api, student, "batch") == {"cpu": "100m", "memory": "64Mi"}, 60,
             what="the operator charging the batch Deployment sync")
    assert _used_production(kube_api, student) == {"cpu": "2", "memory": "2Gi"}

    # Non-members are charged as usual, against what the alloc left.
    manifest = deployment("api", 3, cpu="1", memory="256Mi", priority_class="production")
    with pytest.raises(ApiException) as refused:
        client.AppsV1Api(kube_api).create_namespaced_deployment(student, manifest)
    assert "band production needs cpu 3, 2 in use, limit 4" in (refused.value.body or "")


# --- deletion (A5) -------------------------------------------------------------------------------

def test_deleting_an_alloc_evicts_its_members_and_releases_the_reservation(
        kube_api: client.ApiClient, namespace: str, test_nodes: NodeFactory) -> None:
    (node,) = test_nodes(1)
    create_alloc(kube_api, namespace, alloc_manifest("gone", namespace, cpu="6", memory="2Gi"))
    wait_phase(kube_api, namespace, "gone", "Reserved")
    create_members(kube_api, namespace, "inside", namespace, "gone", 2, cpu="2", memory="512Mi")
    members = {p.metadata.uid for p in bound_pods(kube_api, namespace, f"{ALLOC_LABEL}=gone", 2)}
    create_pod(kube_api, namespace, "waiting", namespace, None, "3")
    wait_unschedulable(kube_api, namespace, "waiting", "alloc reservations")

    delete_alloc(kube_api, namespace, "gone")
    wait_for(lambda: read_alloc(kube_api, namespace, "gone") is None, 60, what="the Alloc gone")
    # Its members were evicted; the replacements their ReplicaSet makes have no alloc to run in.
    now = live_pods(kube_api, namespace, f"{ALLOC_LABEL}=gone")
    assert not members & {p.metadata.uid for p in now}, "a member survived its alloc's deletion"
    # The reservation is released: the 3 CPU non-member now fits on the node.
    wait_for(lambda: client.CoreV1Api(kube_api).read_namespaced_pod("waiting", namespace).spec.node_name == node,
             60, what="the non-member scheduled into the released room")
    replacements = wait_for(lambda: live_pods(kube_api, namespace, "app=inside"), 30, what="replacement pods")
    # Tried while the alloc was going ("none placed yet") or after ("does not exist"): never run.
    wait_unschedulable(kube_api, namespace, replacements[0].metadata.name, f"alloc {namespace}/gone")
    assert not [p for p in live_pods(kube_api, namespace, "app=inside") if p.spec.node_name]


def test_alloc_deletion_waits_for_a_pod_disruption_budget(kube_api: client.ApiClient, namespace: str,
                                                          test_nodes: NodeFactory) -> None:
    test_nodes(1)
    create_alloc(kube_api, namespace, alloc_manifest("guarded", namespace, cpu="2", memory="1Gi"))
    wait_phase(kube_api, namespace, "guarded", "Reserved")
    create_members(kube_api, namespace, "keep", namespace, "guarded", 2, cpu="1", memory="256Mi")
    bound_pods(kube_api, namespace, "app=keep", 2)
    policy = client.PolicyV1Api(kube_api)
    policy.create_namespaced_pod_disruption_budget(namespace, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "keep"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "keep"}}}})

    def budget_known() -> bool:
        status = policy.read_namespaced_pod_disruption_budget("keep", namespace).status
        return bool(status and status.expected_pods == 2)

    wait_for(budget_known, 30, what="the PodDisruptionBudget observed")
    delete_alloc(kube_api, namespace, "guarded")

    def refused() -> str:
        status = (read_alloc(kube_api, namespace, "guarded") or {}).get("status") or {}
        return status.get("message", "") if "PodDisruptionBudget" in status.get("message", "") else ""

    message = wait_for(refused, 30, what="the Alloc reporting the refused evictions")
    assert "reservation released" in message
    alloc = read_alloc(kube_api, namespace, "guarded")
    assert alloc is not None and FINALIZER in alloc["metadata"]["finalizers"] and instance_nodes(alloc) == []
    assert len(bound_pods(kube_api, namespace, "app=keep", 2)) == 2

    policy.delete_namespaced_pod_disruption_budget("keep", namespace)
    wait_for(lambda: read_alloc(kube_api, namespace, "guarded") is None, 60, what="the Alloc gone")


# --- concurrency ---------------------------------------------------------------------------------

def test_two_allocs_racing_for_the_last_free_node_never_both_get_it(kube_api: client.ApiClient, namespace: str,
                                                                    test_nodes: NodeFactory) -> None:
    (node,) = test_nodes(1)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def submit(name: str) -> None:
        try:
            barrier.wait(10)
            create_alloc(kube_api, namespace, alloc_manifest(name, namespace, cpu="5", memory="1Gi"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors

    def settled() -> dict[str, str] | None:
        phases = {name: ((read_alloc(kube_api, namespace, name) or {}).get("status") or {}).get("phase", "")
                  for name in ("left", "right")}
        return phases if sorted(phases.values()) == ["Pending", "Reserved"] else None

    phases = wait_for(settled, 60, what="one Alloc Reserved, the other Pending")
    winner = next(name for name, phase in phases.items() if phase == "Reserved")
    loser = next(name for name, phase in phases.items() if phase == "Pending")
    assert reserved_by_node(kube_api, namespace) == {node: Resources.parse({"cpu": "5", "memory": "1Gi"})}
    message = (read_alloc(kube_api, namespace, loser) or {})["status"]["message"]
    assert "instance needs cpu 5" in message and "cpu 3" in message, message

    # The loser gets the node as soon as the winner lets go (A5, A6).
    delete_alloc(kube_api, namespace, winner)
    assert instance_nodes(wait_phase(kube_api, namespace, loser, "Reserved")) == [node]


def test_operator_restart_in_the_middle_of_placement_never_reserves_twice(
        local_cell: LocalCell, kube_api: client.ApiClient, namespace: str, test_nodes: NodeFactory) -> None:
    names = test_nodes(4)  # 4 x 8 CPU: room for 8 instances of 3 CPU (two per node)
    allocs = [f"set-{i}" for i in range(6)]  # 6 sets x 2 instances = 12 wanted, 8 fit
    for name in allocs[:3]:
        create_alloc(kube_api, namespace, alloc_manifest(name, namespace, count=2, cpu="3", memory="1Gi"))
    local_cell.stop("operator")
    before = {name: placed(read_alloc(kube_api, namespace, name) or {}) for name in allocs[:3]}
    for name in allocs[3:]:
        create_alloc(kube_api, namespace, alloc_manifest(name, namespace, count=2, cpu="3", memory="1Gi"))
    local_cell.start("operator")

    def converged() -> dict[str, dict[str, Any]] | None:
        statuses = {name: (read_alloc(kube_api, namespace, name) or {}).get("status") or {} for name in allocs}
        placed = sum(len(s.get("instances") or []) for s in statuses.values())
        return statuses if placed == 8 and all(s.get("phase") for s in statuses.values()) else None

    statuses = wait_for(converged, 90, what="8 instances placed over the 6 sets")
    for name, status in statuses.items():
        nodes = [i["node"] for i in status["instances"]]
        assert len(nodes) == len(set(nodes)) <= 2, f"{name} holds a node twice: {status}"
        assert len({i["index"] for i in status["instances"]}) == len(nodes), f"{name} repeats an index: {status}"
        assert set(nodes) <= set(names)
        expected = {0: "Pending", 1: "PartiallyReserved", 2: "Reserved"}[len(nodes)]
        assert status["phase"] == expected, f"{name}: {status}"
    for node, held in reserved_by_node(kube_api, namespace).items():
        assert held.fits_in(NODE_CAPACITY), f"{node} reserved {held} of {NODE_CAPACITY}: reserved twice"
    for name, recorded in before.items():
        assert recorded <= placed({"status": statuses[name]}), f"{name}: a placed instance moved: {statuses[name]}"
    # And it stays so: the operator's sweep, level-triggered, changes nothing more.
    time.sleep(7)
    again = {name: (read_alloc(kube_api, namespace, name) or {}).get("status") or {} for name in allocs}
    assert {n: s["instances"] for n, s in again.items()} == {n: s["instances"] for n, s in statuses.items()}


# --- introspection -------------------------------------------------------------------------------

def test_cell_top_shows_reservations(local_cell: LocalCell, kube_api: client.ApiClient, namespace: str,
                                     test_nodes: NodeFactory) -> None:
    (node,) = test_nodes(1)
    create_alloc(kube_api, namespace, alloc_manifest("shown", namespace, cpu="3", memory="2Gi"))
    wait_phase(kube_api, namespace, "shown", "Reserved")
    create_pod(kube_api, namespace, "member", namespace, "shown", "1", "512Mi")
    bound_pods(kube_api, namespace, f"{ALLOC_LABEL}=shown", 1)
    result = CliRunner().invoke(app, ["top", "--state-dir", str(local_cell.state_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    row = next((line for line in result.output.splitlines() if f" {node} " in line), "")
    assert row, f"cell top has no row for {node}:\n{result.output}"
    # allocatable 8 / 32Gi, requested 1 / 512Mi (the member), reserved 3 / 2Gi, free 5 / 30Gi.
    assert "3 / 2Gi" in row and "5 / 30Gi" in row, f"cell top does not show the reservation on {node}: {row}"
    assert "alloc reserved" in result.output

"""The extender inside a real local cell: healthy, transparent for ordinary pods, explains
alloc failures through /why and `cell why`, and `cell top` sees every node."""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

import pytest
from kubernetes import client
from rich.console import Console

from cell.pki import extender_client_context
from cell.top import top
from cell.why import fetch_extender_why, why

pytestmark = pytest.mark.cluster


def _wait(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "main", "image": "cell.local/web:1.0",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Any:
    core = client.CoreV1Api(kube_api)
    name = f"extender-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def test_extender_is_healthy_and_serves_metrics(local_cell: Any) -> None:
    url = (local_cell.state_dir / "extender.url").read_text().strip()
    context = extender_client_context(local_cell.paths.pki_dir)
    with urllib.request.urlopen(f"{url}/healthz", timeout=5, context=context) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{url}/metrics", timeout=5, context=context) as response:
        assert b"cell_extender_cache_objects" in response.read()


def test_ordinary_pod_is_scheduled_and_alloc_member_without_alloc_is_explained(
        local_cell: Any, kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _pod("plain"))
    _wait(lambda: core.read_namespaced_pod("plain", namespace).spec.node_name, what="plain pod bound")

    core.create_namespaced_pod(namespace, _pod("orphan", {"cell.distos.dev/alloc": "ghost"}))
    url = (local_cell.state_dir / "extender.url").read_text().strip()
    context = extender_client_context(local_cell.paths.pki_dir)
    record = _wait(lambda: fetch_extender_why(url, namespace, "orphan", context=context),
                   what="the extender's filter decision")
    assert record["feasible"] == []
    reasons = {r for node in record["nodes"].values() for r in node["reasons"]}
    assert reasons == {f"member of alloc {namespace}/ghost, which does not exist"}
    assert core.read_namespaced_pod("orphan", namespace).spec.node_name is None

    console = Console(record=True, width=200)
    printed = why(namespace, "orphan", local_cell.kubeconfig, local_cell.state_dir, console=console)
    text = console.export_text()
    assert printed["pod"] == f"{namespace}/orphan"
    assert "the extender's last filter decision" in text
    assert f"member of alloc {namespace}/ghost, which does not exist" in text


def test_top_sees_every_node(local_cell: Any, kube_api: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube_api).list_node().items
    usage = top(local_cell.kubeconfig, Console(record=True, width=200))
    assert {n.name for n in usage.nodes} == {n.metadata.name for n in nodes}
    assert usage.capacity.cpu > 0


def _sized_pod(name: str, cpu: str, priority_class: str) -> dict[str, Any]:
    pod = _pod(name, {"app": name})
    pod["spec"]["priorityClassName"] = priority_class
    pod["spec"]["containers"][0]["resources"]["requests"] = {"cpu": cpu, "memory": "64Mi"}
    return pod


def test_preemption_keeps_r1(kube_api: client.ApiClient, namespace: str) -> None:
    """A monitoring pod may not preempt production pods (R1), though kube-scheduler alone would;
    once a batch pod holds a node, that is the one it preempts."""
    core = client.CoreV1Api(kube_api)
    nodes = [n for n in core.list_node().items if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"]

    def free_cpu(node: Any) -> int:
        used = sum(int(float(c.resources.requests.get("cpu", "0").rstrip("m")) * (1 if c.resources.requests.get(
            "cpu", "0").endswith("m") else 1000)) for p in core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node.metadata.name}").items for c in p.spec.containers
            if c.resources and c.resources.requests)
        allocatable = node.status.allocatable["cpu"]
        total = int(allocatable[:-1]) if allocatable.endswith("m") else int(allocatable) * 1000
        return total - used

    # Fill every node with one production pod that leaves less than 1 cpu free.
    for i, node in enumerate(nodes):
        pod = _sized_pod(f"prod-{i}", f"{free_cpu(node) - 500}m", "production")
        pod["spec"]["nodeName"] = node.metadata.name  # placed directly: this test is about preemption
        core.create_namespaced_pod(namespace, pod)
    core.create_namespaced_pod(namespace, _sized_pod("mon", "1", "monitoring"))
    _wait(lambda: any(c.type == "PodScheduled" and c.status == "False"
                      for c in (core.read_namespaced_pod("mon", namespace).status.conditions or [])),
          what="the monitoring pod to be found unschedulable")
    time.sleep(3)  # give a wrong preemption the time to show
    prods = [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name.startswith("prod-")]
    assert len(prods) == len(nodes) and all(p.metadata.deletion_timestamp is None for p in prods)
    assert core.read_namespaced_pod("mon", namespace).spec.node_name is None

    # Swap one production pod for a batch pod of the same size: now there is something to preempt.
    target = nodes[0].metadata.name
    core.delete_namespaced_pod("prod-0", namespace, grace_period_seconds=0)
    _wait(lambda: not [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name == "prod-0"],
          what="prod-0 gone")
    batch = _sized_pod("batch-0", f"{free_cpu(nodes[0]) - 500}m", "batch")
    batch["spec"]["nodeName"] = target
    core.create_namespaced_pod(namespace, batch)
    bound = _wait(lambda: core.read_namespaced_pod("mon", namespace).spec.node_name, timeout=120,
                  what="the monitoring pod to preempt the batch pod")
    assert bound == target
    survivors = [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name.startswith("prod-")]
    assert len(survivors) == len(nodes) - 1 and all(p.metadata.deletion_timestamp is None for p in survivors)

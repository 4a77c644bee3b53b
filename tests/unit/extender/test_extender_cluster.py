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
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        assert b"cell_extender_cache_objects" in response.read()


def test_ordinary_pod_is_scheduled_and_alloc_member_without_alloc_is_explained(
        local_cell: Any, kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _pod("plain"))
    _wait(lambda: core.read_namespaced_pod("plain", namespace).spec.node_name, what="plain pod bound")

    core.create_namespaced_pod(namespace, _pod("orphan", {"cell.distos.dev/alloc": "ghost"}))
    url = (local_cell.state_dir / "extender.url").read_text().strip()
    record = _wait(lambda: fetch_extender_why(url, namespace, "orphan"), what="the extender's filter decision")
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

"""`cell why` and `cell top` without a cluster: reasons, rendering, and the extender's /why over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from rich.console import Console

from cell.errors import CellError
from cell.top import render_usage
from cell.why import compute_why, fetch_extender_why, parse_target, render_why
from scheduler_ext.extender.cache import ALLOCS, NODES, PODS, SERVICES, ClusterCache
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.usage import cell_usage
from tests.unit.extender.extender_fixtures import (
    alloc_manifest,
    extender_args,
    node_manifest,
    pod_manifest,
    served_extender,
)


def _snapshot() -> CellSnapshot:
    return CellSnapshot.from_manifests(
        [node_manifest("node-1", cpu="4", memory="8Gi"), node_manifest("node-2", zone="zone-b", cpu="4", memory="8Gi")],
        [pod_manifest("filler", node="node-2", cpu="3", priority=500000, phase="Running")],
        [alloc_manifest("cache", ["node-1"], cpu="2", memory="1Gi")],
    )


@pytest.mark.parametrize("target", ["web", "/web", "alice/", "a/b/c", ""])
def test_parse_target_rejects_anything_but_namespace_slash_pod(target: str) -> None:
    with pytest.raises(CellError, match="expected NAMESPACE/POD"):
        parse_target(target)


def test_parse_target() -> None:
    assert parse_target("alice/web-1") == ("alice", "web-1")


def test_compute_why_gives_every_node_its_reason() -> None:
    pod = PodInfo.from_manifest(pod_manifest("big", cpu="3"))
    record = compute_why(_snapshot(), pod)
    assert record["feasible"] == []
    assert "alloc reservations hold cpu 2" in record["nodes"]["node-1"]["reasons"][0]
    assert "cpu 3 > 1 free" in record["nodes"]["node-2"]["reasons"][0]


def test_compute_why_judges_a_bound_pod_without_itself() -> None:
    bound = PodInfo.from_manifest(pod_manifest("filler", node="node-2", cpu="3", priority=500000))
    record = compute_why(_snapshot(), bound)
    assert record["nodes"]["node-2"]["fits"] is True  # its own 3 cpu do not count against it


def test_render_why_prints_nodes_and_a_summary() -> None:
    console = Console(record=True, width=200)
    manifest = pod_manifest("big", cpu="3", labels={"cell.distos.dev/alloc": "cache"})
    status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                  "reason": "Unschedulable", "message": "0/2 nodes are available"}]}
    pod = PodInfo.from_manifest(manifest)
    render_why(compute_why(_snapshot(), pod), pod, status, "computed now", console)
    text = console.export_text()
    assert "alice/big: Pending; band production (priority 800000)" in text
    assert "member of alloc alice/cache" in text
    assert "scheduler: Unschedulable: 0/2 nodes are available" in text
    assert "alloc alice/cache instance has too little left: cpu 3 > 2 free" in text
    assert "not a node of alloc alice/cache" in text
    assert "0 of 2 node(s) feasible" in text


def test_render_usage() -> None:
    console = Console(record=True, width=200)
    render_usage(cell_usage(_snapshot()), console)
    text = console.export_text()
    assert "Cell capacity: cpu 8, memory 16Gi on 2 node(s)" in text
    assert "production" in text and "batch" in text
    assert "node-1" in text and "zone-b" in text


@pytest.fixture
def extender_url() -> Iterator[str]:
    """A real extender app on a free port, in a thread (the CLI talks to it with urllib)."""
    cache = ClusterCache()
    cache.replace(NODES, [node_manifest("node-1", cpu="2", memory="2Gi")])
    cache.replace(PODS, [])
    cache.replace(ALLOCS, [])
    cache.replace(SERVICES, [])
    with served_extender(cache) as url:
        yield url


def test_fetch_extender_why_over_http(extender_url: str) -> None:
    import urllib.request

    assert fetch_extender_why(extender_url, "alice", "big") is None  # no decision yet
    request = urllib.request.Request(f"{extender_url}/filter", data=extender_args(pod_manifest("big", cpu="3"),
                                     ["node-1"]), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    record = fetch_extender_why(extender_url, "alice", "big")
    assert record is not None and record["pod"] == "alice/big"
    assert "cpu 3 > 2 free" in record["nodes"]["node-1"]["reasons"][0]


def test_fetch_extender_why_unreachable_is_none() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert fetch_extender_why(f"http://127.0.0.1:{port}", "a", "b", timeout=1) is None

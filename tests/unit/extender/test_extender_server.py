"""The extender's HTTP surface, driven with aiohttp's test client on kube-scheduler-shaped requests."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from scheduler_ext.extender.cache import ALLOCS, NODES, PODS, SERVICES, ClusterCache
from scheduler_ext.extender.server import create_app
from scheduler_ext.policy.scheduler import PolicyCache, Scheduler
from tests.unit.extender.extender_fixtures import alloc_manifest, extender_args, node_manifest, pod_manifest

NODE_NAMES = ["node-1", "node-2", "node-3"]


def _cache(allocs: list[dict[str, Any]] | None = None, pods: list[dict[str, Any]] | None = None) -> ClusterCache:
    cache = ClusterCache()
    cache.replace(NODES, [node_manifest("node-1", cpu="4", memory="8Gi"),
                          node_manifest("node-2", zone="zone-b", rack="rack-2", cpu="4", memory="8Gi"),
                          node_manifest("node-3", zone="zone-c", rack="rack-3", cpu="4", memory="8Gi")])
    cache.replace(PODS, pods or [])
    cache.replace(ALLOCS, allocs or [])
    cache.replace(SERVICES, [])
    return cache


Scenario = Callable[[TestClient], Awaitable[None]]


def _run(cache: ClusterCache, scenario: Scenario, **app_options: Any) -> None:
    async def main() -> None:
        app = create_app(cache, **app_options)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)
    asyncio.run(main())


async def _post(client: TestClient, path: str, body: bytes) -> tuple[ClientResponse, Any]:
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    text = await response.text()
    return response, (json.loads(text) if response.content_type == "application/json" else text)


def test_filter_applies_alloc_reservations_with_reasons() -> None:
    # node-1: an alloc holds 3 of 4 cpu; a non-member asking for 2 cpu fits only elsewhere (A1).
    cache = _cache(allocs=[alloc_manifest("cache", ["node-1"], cpu="3", memory="1Gi")])

    async def scenario(client: TestClient) -> None:
        response, body = await _post(client, "/filter", extender_args(pod_manifest("web-1", cpu="2"), NODE_NAMES))
        assert response.status == 200
        assert set(body) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
        assert sorted(body["NodeNames"]) == ["node-2", "node-3"]
        assert "alloc reservations hold cpu 3" in body["FailedNodes"]["node-1"]
        assert body["FailedAndUnresolvableNodes"] == {} and body["Error"] == ""

        member = pod_manifest("cache-0", labels={"cell.distos.dev/alloc": "cache"}, cpu="1")
        _, body = await _post(client, "/filter", extender_args(member, NODE_NAMES))
        assert body["NodeNames"] == ["node-1"]
        assert set(body["FailedAndUnresolvableNodes"]) == {"node-2", "node-3"}  # preemption cannot help (A2)
        assert "not a node of alloc alice/cache" in body["FailedAndUnresolvableNodes"]["node-2"]

    _run(cache, scenario)


def test_filter_with_a_node_list_echoes_the_nodes() -> None:
    # nodeCacheCapable false: kube-scheduler sends whole nodes and reads Nodes back.
    cache = _cache(allocs=[alloc_manifest("cache", ["node-1"], cpu="4", memory="1Gi")])
    args = json.dumps({"Pod": pod_manifest("web-1", cpu="1"),
                       "Nodes": {"items": [node_manifest(n) for n in NODE_NAMES]}, "NodeNames": None}).encode()

    async def scenario(client: TestClient) -> None:
        _, body = await _post(client, "/filter", args)
        assert body["NodeNames"] is None
        assert [n["metadata"]["name"] for n in body["Nodes"]["items"]] == ["node-2", "node-3"]
        assert body["Nodes"]["items"][0]["status"]["nodeInfo"]["kubeletVersion"] == "fake"  # echoed whole

    _run(cache, scenario)


def test_filter_reads_a_node_its_watch_has_not_delivered_yet() -> None:
    # kube-scheduler knows node-4 already; the cache's watch has not brought it: read it, don't fail it.
    cache = _cache()
    reads: list[list[str]] = []

    def read_nodes(names: list[str]) -> list[dict[str, Any]]:
        reads.append(names)
        return [node_manifest(name, zone="zone-a", rack="rack-1", cpu="4", memory="8Gi")
                for name in names if name == "node-4"]

    async def scenario(client: TestClient) -> None:
        _, body = await _post(client, "/filter", extender_args(pod_manifest("web-1", cpu="1"),
                                                               [*NODE_NAMES, "node-4", "gone"]))
        assert sorted(body["NodeNames"]) == ["node-1", "node-2", "node-3", "node-4"]
        assert "gone" in body["FailedNodes"]
        assert reads == [["node-4", "gone"]]
        _, body = await _post(client, "/filter", extender_args(pod_manifest("web-2", cpu="1"), [*NODE_NAMES, "node-4"]))
        assert "node-4" in body["NodeNames"] and len(reads) == 1  # learnt once, then served from the cache

    _run(cache, scenario, read_nodes=read_nodes)


def test_prioritize_prod_spreads_and_batch_packs() -> None:
    busy = pod_manifest("filler", node="node-2", cpu="3", memory="6Gi", priority=500000, owner="filler-rs",
                        phase="Running")
    cache = _cache(pods=[busy])

    async def scenario(client: TestClient) -> None:
        response, prod = await _post(client, "/prioritize", extender_args(pod_manifest("p", cpu="500m"), NODE_NAMES))
        assert response.status == 200
        assert [entry["Host"] for entry in prod] == NODE_NAMES
        scores = {entry["Host"]: entry["Score"] for entry in prod}
        assert all(0 <= s <= 10 for s in scores.values())
        assert scores["node-1"] > scores["node-2"]
        _, batch = await _post(client, "/prioritize",
                               extender_args(pod_manifest("b", cpu="500m", priority=500000, owner="b-rs"),
                                             NODE_NAMES))
        scores = {entry["Host"]: entry["Score"] for entry in batch}
        assert scores["node-2"] > scores["node-1"]

    _run(cache, scenario)


def test_preempt_enforces_r1_and_keeps_allowed_victims() -> None:
    prod_victim = pod_manifest("prod", node="node-1", cpu="4", priority=800000, uid="u-prod", phase="Running")
    batch_victim = pod_manifest("batch", node="node-2", cpu="4", priority=500000, uid="u-batch", phase="Running")
    cache = _cache(pods=[prod_victim, batch_victim])
    args = json.dumps({
        "Pod": pod_manifest("mon", cpu="2", priority=950000),
        "NodeNameToVictims": None,
        "NodeNameToMetaVictims": {
            "node-1": {"Pods": [{"UID": "u-prod"}], "NumPDBViolations": 0},  # R1: monitoring may not take prod
            "node-2": {"Pods": [{"UID": "u-batch"}], "NumPDBViolations": 1},
        },
    }).encode()

    async def scenario(client: TestClient) -> None:
        response, body = await _post(client, "/preempt", args)
        assert response.status == 200
        assert body == {"NodeNameToMetaVictims": {"node-2": {"Pods": [{"UID": "u-batch"}], "NumPDBViolations": 1}}}

    _run(cache, scenario)


def test_preempt_with_full_victims() -> None:
    batch_victim = pod_manifest("batch", node="node-2", cpu="4", priority=500000, uid="u-batch", phase="Running")
    cache = _cache(pods=[batch_victim])
    args = json.dumps({"Pod": pod_manifest("p", cpu="2", priority=800000),
                       "NodeNameToVictims": {"node-2": {"Pods": [batch_victim], "NumPDBViolations": 0}},
                       "NodeNameToMetaVictims": None}).encode()

    async def scenario(client: TestClient) -> None:
        _, body = await _post(client, "/preempt", args)
        assert body["NodeNameToMetaVictims"]["node-2"]["Pods"] == [{"UID": "u-batch"}]

    _run(cache, scenario)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/filter", b"{not json", "malformed ExtenderArgs"),
        ("/filter", b"[]", "malformed ExtenderArgs"),
        ("/filter", json.dumps({"Pod": {"metadata": {"name": "x", "namespace": "a"}}}).encode(),
         "neither NodeNames nor Nodes"),
        ("/filter", json.dumps({"Pod": {"metadata": {}}, "NodeNames": []}).encode(), "needs name and namespace"),
        ("/prioritize", json.dumps({"Pod": "oops", "NodeNames": []}).encode(), "malformed ExtenderArgs"),
        ("/filter", json.dumps({"Pod": pod_manifest("p", cpu="lots"), "NodeNames": ["node-1"]}).encode(),
         "not a quantity"),
        ("/preempt", json.dumps({"Pod": pod_manifest("p"), "NodeNameToMetaVictims": {"n": {"Pods": 3}}}).encode(),
         "malformed ExtenderPreemptionArgs"),
    ],
)
def test_malformed_requests_get_400_and_the_server_keeps_serving(path: str, body: bytes, message: str) -> None:
    async def scenario(client: TestClient) -> None:
        response, text = await _post(client, path, body)
        assert response.status == 400
        assert message in text
        response, ok = await _post(client, "/filter", extender_args(pod_manifest("ok"), NODE_NAMES))
        assert response.status == 200 and len(ok["NodeNames"]) == 3

    _run(_cache(), scenario)


def test_not_synced_yet() -> None:
    cache = ClusterCache()

    async def scenario(client: TestClient) -> None:
        assert (await client.get("/healthz")).status == 503
        _, body = await _post(client, "/filter", extender_args(pod_manifest("p"), ["node-1"]))
        assert "not synced" in body["Error"]
        _, scores = await _post(client, "/prioritize", extender_args(pod_manifest("p"), ["node-1"]))
        assert scores == [{"Host": "node-1", "Score": 0}]

    _run(cache, scenario)


def test_healthz_and_metrics() -> None:
    async def scenario(client: TestClient) -> None:
        assert (await client.get("/healthz")).status == 200
        for _ in range(2):
            await _post(client, "/filter", extender_args(pod_manifest("p"), NODE_NAMES))
        await _post(client, "/filter", b"garbage")
        text = await (await client.get("/metrics")).text()
        assert 'cell_extender_requests_total{code="200",verb="filter"} 2.0' in text
        assert 'cell_extender_requests_total{code="400",verb="filter"} 1.0' in text
        assert 'cell_extender_request_duration_seconds_count{verb="filter"} 3.0' in text
        assert 'cell_extender_cache_objects{kind="nodes"} 3.0' in text
        # The first filter computes 3 nodes; the second pod (same class) and the rankings prepared after
        # each filter for prioritize (3 nodes each) are answered from the score cache.
        assert 'cell_extender_score_cache_lookups{result="miss"} 3.0' in text
        assert 'cell_extender_score_cache_lookups{result="hit"} 9.0' in text

    _run(_cache(), scenario)


def test_why_returns_the_last_filter_decision_per_node() -> None:
    cache = _cache(allocs=[alloc_manifest("cache", ["node-1"], cpu="4", memory="1Gi")])

    async def scenario(client: TestClient) -> None:
        response = await client.get("/why/alice/web-1")
        assert response.status == 404
        assert "no filter decision recorded for alice/web-1" in (await response.json())["error"]
        await _post(client, "/filter", extender_args(pod_manifest("web-1", cpu="5"), NODE_NAMES))
        record = await (await client.get("/why/alice/web-1")).json()
        assert record["pod"] == "alice/web-1" and record["feasible"] == []
        assert set(record["nodes"]) == set(NODE_NAMES)
        assert not record["nodes"]["node-2"]["fits"]
        assert "cpu 5 > 4 free" in record["nodes"]["node-2"]["reasons"][0]
        assert "alloc reservations hold cpu 4" in record["nodes"]["node-1"]["reasons"][0]

    _run(cache, scenario)


def test_relaxed_randomization_returns_enough_feasible_nodes() -> None:
    cache = ClusterCache()
    cache.replace(NODES, [node_manifest(f"node-{i}") for i in range(50)])
    cache.replace(PODS, [])
    cache.mark_absent(ALLOCS)
    cache.replace(SERVICES, [])
    names = [f"node-{i}" for i in range(50)]

    async def scenario(client: TestClient) -> None:
        _, body = await _post(client, "/filter", extender_args(pod_manifest("p"), names))
        assert len(body["NodeNames"]) == 10 and body["FailedNodes"] == {}
        record = await (await client.get("/why/alice/p")).json()
        assert record["unexamined"] == 40
        assert len(record["nodes"]) == 50
        skipped = [n for n, v in record["nodes"].items() if v["fits"] is None]
        assert len(skipped) == 40 and "relaxed randomization" in record["nodes"][skipped[0]]["reasons"][0]

    _run(cache, scenario, scheduler=Scheduler(PolicyCache(), enough_feasible=10, rng=random.Random(1)))

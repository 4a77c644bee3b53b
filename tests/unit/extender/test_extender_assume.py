"""Assumed placements and preemption bookkeeping: what keeps the extender right within a burst,
before the watch shows the bindings (issue 3)."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from scheduler_ext.extender.cache import ALLOCS, NODES, PODS, SERVICES, ClusterCache
from scheduler_ext.extender.server import create_app
from scheduler_ext.policy.model import PodInfo
from scheduler_ext.policy.resources import Resources
from tests.unit.extender.extender_fixtures import extender_args, node_manifest, pod_manifest

ZONES = ("zone-a", "zone-b", "zone-c")
SIX = [f"node-{i}" for i in range(1, 7)]  # two per zone, a rack each, like the integration test


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(pods: list[dict[str, Any]] | None = None, clock: Clock | None = None, ttl: float = 30.0) -> ClusterCache:
    cache = ClusterCache(assume_ttl=ttl, clock=clock or Clock())
    cache.replace(NODES, [node_manifest(name, zone=ZONES[i % 3], rack=f"rack-{i}") for i, name in enumerate(SIX)])
    cache.replace(PODS, pods or [])
    cache.mark_absent(ALLOCS)
    cache.replace(SERVICES, [])
    return cache


def _pod(name: str, **kw: Any) -> PodInfo:
    return PodInfo.from_manifest(pod_manifest(name, **kw))


# --- the cache --------------------------------------------------------------------------------------

def test_an_assumed_pod_counts_on_its_node_until_the_watch_confirms_it() -> None:
    cache = _cache()
    cache.assume(_pod("web-1", cpu="2"), "node-3")
    assert cache.snapshot().nodes["node-3"].requested.cpu == 2000
    assert cache.assumed() == {"uid-alice-web-1": "node-3"}
    cache.apply(PODS, "ADDED", pod_manifest("web-1", cpu="2", node="node-3", phase="Pending"))
    assert cache.assumed() == {}
    assert cache.snapshot().nodes["node-3"].requested.cpu == 2000  # counted once
    assert cache.assume_outcomes == {"confirmed": 1, "moved": 0, "gone": 0, "expired": 0, "no-such-pod": 0,
                                     "pending": 0}


def test_the_watch_moves_a_wrong_assumption_where_the_pod_really_went() -> None:
    cache = _cache()
    cache.assume(_pod("web-1", cpu="2"), "node-3")
    cache.apply(PODS, "ADDED", pod_manifest("web-1", cpu="2", node="node-5"))
    snapshot = cache.snapshot()
    assert snapshot.nodes["node-3"].pods == ()
    assert [p.name for p in snapshot.nodes["node-5"].pods] == ["web-1"]
    assert cache.assume_outcomes["moved"] == 1


def test_a_late_event_from_before_the_binding_keeps_the_assumption() -> None:
    cache = _cache()
    cache.assume(_pod("web-1", cpu="2"), "node-3")
    # The watch lags kube-scheduler: the pod's creation (still unbound) arrives after prioritize.
    cache.apply(PODS, "ADDED", pod_manifest("web-1", cpu="2", phase="Pending"))
    cache.apply(PODS, "MODIFIED", pod_manifest("web-1", cpu="2", phase="Pending"))
    assert cache.assumed() == {"uid-alice-web-1": "node-3"}
    assert cache.snapshot().nodes["node-3"].requested.cpu == 2000
    cache.apply(PODS, "MODIFIED", pod_manifest("web-1", cpu="2", node="node-3", phase="Pending"))
    assert cache.assume_outcomes == {"confirmed": 1, "moved": 0, "gone": 0, "expired": 0, "no-such-pod": 0,
                                     "pending": 0}


def test_a_pod_the_watch_showed_deleted_is_not_booked_by_a_late_question() -> None:
    clock = Clock()
    cache = _cache(clock=clock, ttl=10)
    cache.apply(PODS, "ADDED", pod_manifest("web-1", cpu="2", phase="Pending"))
    cache.apply(PODS, "DELETED", pod_manifest("web-1", cpu="2", phase="Pending"))
    # kube-scheduler's informer lags: it still schedules the deleted pod, alone on node-3.
    cache.assume(_pod("web-1", cpu="2"), "node-3")
    assert cache.assumed() == {}
    assert cache.snapshot().nodes["node-3"].requested.cpu == 0
    clock.now += 11  # the memory of the deletion is bounded like an assumption
    cache.snapshot()
    cache.assume(_pod("web-1", cpu="2"), "node-3")
    assert cache.assumed() == {"uid-alice-web-1": "node-3"}


def test_an_assumption_never_confirmed_expires() -> None:
    clock = Clock()
    cache = _cache(clock=clock, ttl=10)
    cache.assume(_pod("web-1", cpu="2"), "node-1")
    clock.now += 5
    cache.assume(_pod("web-2", cpu="1"), "node-2")
    clock.now += 6  # web-1 is 11 s old, web-2 6 s
    snapshot = cache.snapshot()
    assert snapshot.nodes["node-1"].pods == ()
    assert snapshot.nodes["node-2"].requested.cpu == 1000
    assert cache.assumed() == {"uid-alice-web-2": "node-2"}
    assert cache.assume_outcomes["expired"] == 1


def test_a_deleted_pod_ends_its_assumption_and_a_relist_keeps_pending_ones() -> None:
    cache = _cache()
    cache.assume(_pod("web-1"), "node-1")
    cache.assume(_pod("web-2"), "node-2")
    cache.apply(PODS, "DELETED", pod_manifest("web-1", node="node-1"))
    assert cache.assume_outcomes["gone"] == 1
    cache.replace(PODS, [])  # a relist shows bound pods only: web-2 is not bound yet
    assert [p.name for p in cache.snapshot().nodes["node-2"].pods] == ["web-2"]


def test_assume_does_not_override_what_the_watch_has_shown() -> None:
    cache = _cache(pods=[pod_manifest("web-1", node="node-1", phase="Running")])
    cache.assume(_pod("web-1"), "node-2")
    assert [p.name for p in cache.snapshot().nodes["node-1"].pods] == ["web-1"]
    assert cache.snapshot().nodes["node-2"].pods == ()
    cache.assume(_pod("web-9"), "no-such-node")
    assert cache.assumed() == {}


# --- through the HTTP verbs, the way kube-scheduler drives them ---------------------------------------

Scenario = Callable[[TestClient], Awaitable[None]]


def _run(cache: ClusterCache, scenario: Scenario) -> None:
    async def main() -> None:
        async with TestClient(TestServer(create_app(cache, enough_feasible=None))) as client:
            await scenario(client)
    asyncio.run(main())


async def _post(client: TestClient, path: str, body: bytes) -> Any:
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    return json.loads(await response.text())


async def _schedule(client: TestClient, pod: dict[str, Any], names: list[str]) -> str:
    """One scheduling cycle as kube-scheduler runs it: filter, then prioritize, then the top score."""
    filtered = await _post(client, "/filter", extender_args(pod, names))
    feasible = filtered["NodeNames"]
    if len(feasible) == 1:
        return str(feasible[0])
    scores = await _post(client, "/prioritize", extender_args(pod, feasible))
    top = max(entry["Score"] for entry in scores)
    winners = [entry["Host"] for entry in scores if entry["Score"] == top]
    assert len(winners) == 1, f"the extender must name one best node: {scores}"
    return str(winners[0])


def test_a_burst_of_prod_pods_spreads_over_zones_before_any_binding_is_seen() -> None:
    cache = _cache()

    async def scenario(client: TestClient) -> None:
        placed = [await _schedule(client, pod_manifest(f"frontend-{i}", cpu="1", owner="frontend-rs"), SIX)
                  for i in range(6)]
        assert len(set(placed)) == 6  # least allocated: a node each
        zones = collections.Counter(ZONES[SIX.index(n) % 3] for n in placed)
        assert zones == {"zone-a": 2, "zone-b": 2, "zone-c": 2}

    _run(cache, scenario)


def test_a_burst_of_batch_pods_packs_before_any_binding_is_seen() -> None:
    cache = _cache()

    async def scenario(client: TestClient) -> None:
        placed = [await _schedule(client, pod_manifest(f"crunch-{i}", cpu="1", priority=500000, owner="crunch-rs"),
                                  SIX) for i in range(8)]
        assert len(set(placed)) == 1, placed  # eight 1-CPU tasks fill one 8-CPU node

    _run(cache, scenario)


def test_a_lone_feasible_node_is_assumed_at_filter() -> None:
    cache = _cache()

    async def scenario(client: TestClient) -> None:
        await _post(client, "/filter", extender_args(pod_manifest("big", cpu="6"), ["node-4"]))
        assert cache.assumed() == {"uid-alice-big": "node-4"}
        body = await _post(client, "/filter", extender_args(pod_manifest("next", cpu="4"), ["node-4", "node-5"]))
        assert body["NodeNames"] == ["node-5"]
        assert "cpu 4 > 2 free" in body["FailedNodes"]["node-4"]

    _run(cache, scenario)


def _preemption_args(pod: dict[str, Any], victims: dict[str, list[str]]) -> bytes:
    return json.dumps({"Pod": pod, "NodeNameToVictims": None, "NodeNameToMetaVictims": {
        node: {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": 0} for node, uids in victims.items()}
    }).encode()


def _full_of_batch() -> list[dict[str, Any]]:
    """node-1..3: 8 x 1-CPU batch pods each (node-3's are lowest: best-effort)."""
    return [pod_manifest(f"f-{n}-{i}", node=f"node-{n}", cpu="1", memory="1Gi", priority=100000 if n == 3 else 500000,
                         uid=f"f-{n}-{i}", owner="filler-rs", phase="Running")
            for n in (1, 2, 3) for i in range(8)]


def test_preempt_offers_only_cells_r3_choice() -> None:
    cache = _cache(pods=_full_of_batch())
    serving = pod_manifest("serving", cpu="2", owner="serving-rs")

    async def scenario(client: TestClient) -> None:
        body = await _post(client, "/preempt", _preemption_args(serving, {
            f"node-{n}": [f"f-{n}-0", f"f-{n}-1"] for n in (1, 2, 3)}))
        # Lowest victims win (R3): node-3's best-effort pods.
        assert body == {"NodeNameToMetaVictims": {"node-3": {
            "Pods": [{"UID": "f-3-0"}, {"UID": "f-3-1"}], "NumPDBViolations": 0}}}

    _run(cache, scenario)


def test_the_preemptor_finds_its_nominated_node_free_while_the_watch_still_shows_its_victims() -> None:
    cache = _cache(pods=_full_of_batch())
    serving = pod_manifest("serving", cpu="2", owner="serving-rs")

    async def scenario(client: TestClient) -> None:
        await _post(client, "/preempt", _preemption_args(serving, {"node-2": ["f-2-0", "f-2-1"]}))
        # kube-scheduler retries the nominated node first; the victims' deletions have not arrived.
        body = await _post(client, "/filter", extender_args(serving, ["node-2"]))
        assert body["NodeNames"] == ["node-2"]
        # Another pod still sees node-2 full: only the preemptor may use the room.
        other = await _post(client, "/filter", extender_args(pod_manifest("other", cpu="1"), ["node-2"]))
        assert other["NodeNames"] == []

    _run(cache, scenario)


def test_preempt_drops_nodes_it_cannot_vet() -> None:
    cache = _cache(pods=_full_of_batch()[:16])  # node-3 looks empty: Cell has not seen its pods yet
    serving = pod_manifest("serving", cpu="2", owner="serving-rs")

    async def scenario(client: TestClient) -> None:
        # Victims Cell does not know (node-3), or none needed by Cell's view: no offer on that node.
        body = await _post(client, "/preempt", _preemption_args(serving, {"node-3": ["f-3-0", "f-3-1"]}))
        assert body == {"NodeNameToMetaVictims": {}}
        body = await _post(client, "/preempt", _preemption_args(serving, {"node-3": []}))
        assert body == {"NodeNameToMetaVictims": {}}
        metrics = await (await client.get("/metrics")).text()
        assert 'cell_extender_preempt_nodes_dropped_total{reason="unknown-victims"} 1.0' in metrics
        assert 'cell_extender_preempt_nodes_dropped_total{reason="no-victims-needed"} 1.0' in metrics

    _run(cache, scenario)


def test_r1_a_monitoring_pod_gets_no_prod_victims_whatever_is_proposed() -> None:
    incumbents = [pod_manifest(f"inc-{n}-{i}", node=f"node-{n}", cpu="4", uid=f"inc-{n}-{i}", owner="inc-rs",
                               phase="Running") for n in (1, 2, 3) for i in range(2)]
    cache = _cache(pods=incumbents)
    watcher = pod_manifest("watcher", cpu="2", priority=950000, owner="watcher-rs")

    async def scenario(client: TestClient) -> None:
        body = await _post(client, "/preempt", _preemption_args(watcher, {
            f"node-{n}": [f"inc-{n}-0"] for n in (1, 2, 3)}))
        assert body == {"NodeNameToMetaVictims": {}}

    _run(cache, scenario)


def test_evictions_end_when_the_preemptor_is_placed_or_after_their_ttl() -> None:
    from scheduler_ext.extender.server import Evictions
    from scheduler_ext.policy.preemption import Victims

    cache = _cache(pods=_full_of_batch())
    snapshot = cache.snapshot()
    victims = Victims("node-1", tuple(p for p in snapshot.nodes["node-1"].pods if p.name in ("f-1-0", "f-1-1")))
    clock = Clock()
    evictions = Evictions(ttl=10, clock=clock)
    preemptor = _pod("serving", cpu="2")
    evictions.record(preemptor.uid, victims)
    assert evictions.view_for(preemptor, snapshot).nodes["node-1"].requested.cpu == 6000
    assert evictions.view_for(_pod("other"), snapshot) is snapshot  # nobody else gets the room
    clock.now += 11
    assert evictions.view_for(preemptor, snapshot) is snapshot
    evictions.record("another", victims)  # recording prunes what expired
    assert len(evictions) == 1
    evictions.forget("another")
    assert len(evictions) == 0


def test_prioritize_uses_the_ranking_prepared_after_filter_only_when_nothing_changed() -> None:
    cache = _cache()

    async def scenario(client: TestClient) -> None:
        first = pod_manifest("frontend-0", cpu="1", owner="frontend-rs")
        second = pod_manifest("frontend-1", cpu="1", owner="frontend-rs")
        placed = await _schedule(client, first, SIX)
        # Filter the second pod, then change the cell before prioritize: the prepared ranking is stale.
        await _post(client, "/filter", extender_args(second, SIX))
        cache.apply(PODS, "ADDED", pod_manifest("intruder", cpu="7", node="node-2", phase="Running"))
        scores = await _post(client, "/prioritize", extender_args(second, SIX))
        best = max(scores, key=lambda entry: entry["Score"])["Host"]
        assert best not in (placed, "node-2")  # the intruder's node is full now, and is not picked
        metrics = await (await client.get("/metrics")).text()
        assert 'cell_extender_ranked_ahead_total{result="used"} 1.0' in metrics
        assert 'cell_extender_ranked_ahead_total{result="stale"} 1.0' in metrics

    _run(cache, scenario)


def test_a_booking_for_a_pod_the_api_does_not_have_is_dropped_at_once() -> None:
    """Anyone reaching the extender could book made-up pods; each booking is checked off the request path."""
    cache = ClusterCache()
    cache.replace("nodes", [{"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}}])
    for kind in ("pods", "allocs"):
        cache.replace(kind, [])
    ghost = PodInfo("ns", "ghost", "uid-ghost", 0, Resources(1000, 2**30))
    cache.assume(ghost, "n1")
    assert cache.assumed() == {"uid-ghost": "n1"}
    assert cache.forget_assumed("uid-ghost")
    assert cache.assumed() == {} and cache.snapshot().nodes["n1"].requested == Resources()
    cache.assume(ghost, "n1")  # a retry about the same made-up pod books nothing
    assert cache.assumed() == {}
    assert not cache.forget_assumed("uid-ghost")
    assert cache.assume_outcomes["no-such-pod"] == 1

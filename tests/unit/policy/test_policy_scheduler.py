"""Borg §3.4 in the scheduling pass: equivalence classes, score caching, relaxed randomization."""

from __future__ import annotations

import random
from collections import Counter

from scheduler_ext.policy.model import CellSnapshot, PodInfo, ServiceInfo
from scheduler_ext.policy.scheduler import NOT_EXAMINED, UNKNOWN_NODE, EquivalenceClass, PolicyCache, Scheduler
from tests.unit.policy.policy_builders import BATCH, PROD, alloc, cell, node, pod


def _cell(n: int = 20) -> CellSnapshot:
    zones = ("zone-a", "zone-b", "zone-c")
    return cell(*(node(f"node-{i}", cpu="4", zone=zones[i % 3], rack=f"rack-{i % 5}",
                       pods=(pod(f"f{i}", cpu=str(i % 4), memory="1Gi", priority=BATCH),)) for i in range(n)))


def test_equivalence_class_ignores_what_does_not_matter() -> None:
    a = pod("a", cpu="1", priority=PROD, job="web")
    b = pod("b", cpu="1", priority=PROD + 5, job="api")  # same band, other job: same class
    assert EquivalenceClass.of(a) == EquivalenceClass.of(b)
    assert EquivalenceClass.of(a) != EquivalenceClass.of(pod("c", cpu="1", priority=BATCH))
    assert EquivalenceClass.of(a) != EquivalenceClass.of(pod("d", cpu="2"))
    assert EquivalenceClass.of(a) != EquivalenceClass.of(pod("e", cpu="1", alloc="cache"))


def test_cache_hits_for_equivalent_pods_and_matches_uncached() -> None:
    snapshot = _cell()
    cache = PolicyCache()
    cached, fresh = Scheduler(cache), Scheduler()
    first = pod("a", cpu="1", job="web")
    second = pod("b", cpu="1", job="web")
    assert cached.schedule(first, snapshot) == fresh.schedule(first, snapshot)
    misses = cache.misses
    assert cached.schedule(second, snapshot).scores == fresh.schedule(second, snapshot).scores
    assert cache.misses == misses  # the second pod was answered from the cache entirely
    assert cache.hits >= len(snapshot.nodes)


def test_cache_invalidates_a_changed_node_only() -> None:
    snapshot = _cell()
    cache = PolicyCache()
    scheduler = Scheduler(cache)
    web = pod("a", cpu="1", job="web")
    decision = scheduler.schedule(web, snapshot)
    after = snapshot.with_pod_bound(web, decision.node)
    misses = cache.misses
    again = scheduler.schedule(pod("b", cpu="1", job="web"), after)
    assert cache.misses == misses + 1  # only the node the first pod landed on was recomputed
    assert again == Scheduler().schedule(pod("b", cpu="1", job="web"), after)


def test_cache_invalidates_everything_when_allocs_change() -> None:
    snapshot = _cell(4)
    cache = PolicyCache()
    scheduler = Scheduler(cache)
    scheduler.filter(pod("a", cpu="1"), snapshot)
    reserved = snapshot.with_allocs([alloc("c", cpu="4", nodes=("node-0",))])
    result = scheduler.filter(pod("a", cpu="1"), reserved)
    assert "node-0" in result.failed and "alloc reservations" in result.failed["node-0"]


def test_cache_is_bounded_in_classes() -> None:
    cache = PolicyCache(max_classes=2)
    scheduler = Scheduler(cache)
    snapshot = _cell(3)
    for cpu in ("1", "2", "3"):
        scheduler.filter(pod("p", cpu=cpu), snapshot)
    assert len(cache) == 2 * 3


def test_relaxed_randomization_stops_at_enough_feasible() -> None:
    snapshot = _cell(30)
    scheduler = Scheduler(PolicyCache(), enough_feasible=5, rng=random.Random(7))
    result = scheduler.filter(pod("p", cpu="100m"), snapshot)
    assert len(result.feasible) == 5
    assert len(result.unexamined) == 25
    assert len(result.verdicts) == 5  # every node examined was feasible: exactly five looked at
    verdicts = result.all_verdicts()
    assert sum(v is NOT_EXAMINED for v in verdicts.values()) == 25
    assert set(verdicts) == set(snapshot.nodes)
    # Another seed examines other nodes: the order is random, not the snapshot's.
    other = Scheduler(enough_feasible=5, rng=random.Random(8)).filter(pod("p", cpu="100m"), snapshot)
    assert other.feasible != result.feasible


def test_unknown_nodes_fail_with_a_reason() -> None:
    result = Scheduler().filter(pod("p"), _cell(2), ["node-0", "node-99"])
    assert result.feasible == ("node-0",)
    assert result.verdicts["node-99"] is UNKNOWN_NODE
    assert "not (yet) known" in result.failed["node-99"]


def test_decision_message_summarises_reasons_when_nothing_fits() -> None:
    snapshot = cell(node("node-0", cpu="4"), node("node-1", cpu="4"), node("node-2", cpu="8", unschedulable=True))
    decision = Scheduler().schedule(pod("p", cpu="5"), snapshot)
    assert decision.node is None
    assert decision.message == ("alice/p fits no node: 2 node(s): insufficient capacity outside allocs: "
                                "cpu 5 > 4 free; 1 node(s): node is cordoned (unschedulable)")
    assert set(decision.verdicts) == {"node-0", "node-1", "node-2"}


def test_schedule_spreads_a_prod_job_over_zones() -> None:
    snapshot = cell(*(node(f"node-{i}", zone=("zone-a", "zone-b", "zone-c")[i % 3]) for i in range(6)))
    scheduler = Scheduler(PolicyCache())
    zones = []
    for i in range(3):
        replica = pod(f"web-{i}", cpu="1", job="web")
        decision = scheduler.schedule(replica, snapshot)
        snapshot = snapshot.with_pod_bound(replica, decision.node)
        zones.append(snapshot.nodes[decision.node].zone)
    assert sorted(zones) == ["zone-a", "zone-b", "zone-c"]


def test_schedule_spreads_the_pods_of_a_service_over_zones() -> None:
    # Upstream's "Multi-AZ Clusters should spread the pods of a service across zones": bare pods (no
    # owner, no requests, no priority: they pack) whose only tie is the Service selecting them.
    snapshot = cell(*(node(f"node-{i}", zone=("zone-a", "zone-b", "zone-c")[i % 3], rack=f"rack-{i % 6}")
                      for i in range(12)))
    service = ServiceInfo("alice", "test-service", (("service", "test-service"),))
    scheduler = Scheduler(PolicyCache())

    def zones_of(services: tuple[ServiceInfo, ...]) -> Counter[str]:
        placed, zones = snapshot, Counter[str]()
        for i in range(15):
            replica = PodInfo.from_manifest({"metadata": {"namespace": "alice", "name": f"test-service-{i}",
                                                          "uid": f"u{i}", "labels": {"service": "test-service"}},
                                             "spec": {"containers": [{"name": "pause"}]}}, services)
            decision = scheduler.schedule(replica, placed)
            assert decision.node is not None
            placed = placed.with_pod_bound(replica, decision.node)
            zones[placed.nodes[decision.node].zone] += 1
        return zones

    assert sorted(zones_of((service,)).values()) == [5, 5, 5]
    assert max(zones_of(()).values()) > 5  # without the Service each pod is a job of its own: they pile up


def test_ranking_names_one_best_node_on_the_wire() -> None:
    # Three identical empty nodes: a tie. The first in the order given wins and alone scores 10, so
    # kube-scheduler (which picks at random among equal totals) binds where Cell assumed.
    snapshot = cell(node("n1"), node("n2"), node("n3", cpu="2"))
    web = pod("web-0", cpu="1", job="web")
    ranking = Scheduler().rank(web, snapshot, ["n2", "n1", "n3", "gone"])
    assert ranking.best == "n2"
    assert ranking.scores["n1"] == ranking.scores["n2"] > ranking.scores["n3"]
    wire = ranking.wire(["n2", "n1", "n3", "gone"])
    assert wire["n2"] == 10
    assert 0 < wire["n3"] < wire["n1"] <= 9
    assert wire["gone"] == 0
    assert Scheduler().schedule(web, snapshot, ["n2", "n1", "n3"]).node == "n2"


def test_ranking_leaves_out_nodes_the_pod_does_not_fit() -> None:
    snapshot = cell(node("small", cpu="1"), node("big", cpu="8"))
    ranking = Scheduler().rank(pod("p", cpu="2"), snapshot)
    assert ranking.best == "big" and set(ranking.scores) == {"big"}
    assert ranking.wire(["small", "big"]) == {"small": 0, "big": 10}
    assert Scheduler().rank(pod("huge", cpu="64"), snapshot).best is None

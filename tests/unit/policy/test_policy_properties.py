"""Property tests: invariants of the policy over random cells and pods."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_ext.policy.feasibility import check_node
from scheduler_ext.policy.model import (
    ALLOC_LABEL,
    RACK_LABEL,
    ZONE_LABEL,
    AllocInfo,
    AllocInstance,
    CellSnapshot,
    NodeInfo,
    PodInfo,
)
from scheduler_ext.policy.preemption import preempt
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.scheduler import PolicyCache, Scheduler
from tests.unit.policy.policy_builders import BATCH, BEST_EFFORT, MONITORING, PROD

PRIORITIES = st.sampled_from([MONITORING, PROD, PROD - 1, BATCH, BATCH - 1, BEST_EFFORT, 0])
CPU = st.integers(min_value=0, max_value=4000).map(lambda m: m - m % 250)
MEMORY = st.integers(min_value=0, max_value=8).map(lambda g: g * 2**29)
settings.register_profile("cell", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("cell")


@st.composite
def pods(draw: st.DrawFn, name: str, allocs: tuple[str, ...] = ()) -> PodInfo:
    alloc = draw(st.sampled_from((None, *allocs))) if allocs else None
    return PodInfo("alice", name, f"uid-{name}", draw(PRIORITIES), Resources(draw(CPU), draw(MEMORY)),
                   {ALLOC_LABEL: alloc} if alloc else {}, f"alice/ReplicaSet/{draw(st.sampled_from('abc'))}")


@st.composite
def cells(draw: st.DrawFn) -> CellSnapshot:
    count = draw(st.integers(min_value=1, max_value=6))
    names = [f"node-{i}" for i in range(count)]
    alloc_names = ("cache", "db")
    allocs = []
    for alloc_name in alloc_names:
        placed = draw(st.lists(st.sampled_from(names), unique=True, max_size=2))
        allocs.append(AllocInfo("alice", alloc_name, Resources(draw(CPU), draw(MEMORY)), len(placed), PROD,
                                instances=tuple(AllocInstance(i, n) for i, n in enumerate(placed))))
    nodes = []
    for i, name in enumerate(names):
        node_pods = draw(st.lists(pods(f"{name}-p", alloc_names), max_size=4))
        node_pods = [PodInfo(p.namespace, f"{p.name}{j}", f"{p.uid}{j}", p.priority, p.requests, p.labels, p.owner,
                             name) for j, p in enumerate(node_pods)]
        nodes.append(NodeInfo(name, Resources(draw(st.sampled_from([2000, 4000, 8000])), 8 * 2**30),
                              {ZONE_LABEL: f"zone-{i % 3}", RACK_LABEL: f"rack-{i % 4}"}, tuple(node_pods),
                              max_pods=draw(st.integers(min_value=1, max_value=6))))
    return CellSnapshot(nodes, allocs)


@given(cells(), pods("new", ("cache", "db")))
def test_an_infeasible_node_is_never_chosen(snapshot: CellSnapshot, pod: PodInfo) -> None:
    decision = Scheduler(PolicyCache(), enough_feasible=2, rng=random.Random(0)).schedule(pod, snapshot)
    if decision.node is not None:
        assert check_node(pod, snapshot, snapshot.nodes[decision.node]).fits
    else:
        assert not any(check_node(pod, snapshot, n).fits for n in snapshot.nodes.values())


@given(cells(), pods("new", ("cache", "db")))
def test_scores_are_within_0_and_10(snapshot: CellSnapshot, pod: PodInfo) -> None:
    for score in Scheduler().scores(pod, snapshot).values():
        assert 0 <= score <= 10


@given(cells(), pods("new", ("cache", "db")), st.sampled_from([MONITORING, PROD, BATCH]),
       st.integers(min_value=1, max_value=8).map(lambda c: c * 1000))
def test_preemption_never_breaks_r1_and_frees_enough(snapshot: CellSnapshot, pod: PodInfo, priority: int,
                                                     cpu: int) -> None:
    # Big, important preemptors: the cases where preemption happens at all.
    pod = PodInfo(pod.namespace, pod.name, pod.uid, priority, Resources(cpu, pod.requests.memory), pod.labels,
                  pod.owner)
    decision = preempt(pod, snapshot)
    if decision.victims is None:
        return
    for victim in decision.victims.pods:
        assert victim.priority < pod.priority  # R2
        assert not (pod.band.is_prod and victim.band.is_prod)  # R1
    gone = frozenset(v.uid for v in decision.victims.pods)
    assert check_node(pod, snapshot, snapshot.nodes[decision.node], without=gone).fits


@given(cells(), st.lists(pods("q", ("cache", "db")), min_size=1, max_size=6))
def test_cached_results_equal_uncached(snapshot: CellSnapshot, queue: list[PodInfo]) -> None:
    cached, fresh = Scheduler(PolicyCache(max_classes=4)), Scheduler()
    for i, pod in enumerate(queue):
        pod = PodInfo(pod.namespace, f"q{i}", f"uq{i}", pod.priority, pod.requests, pod.labels, pod.owner)
        expected = fresh.schedule(pod, snapshot)
        assert cached.schedule(pod, snapshot) == expected
        if expected.node is not None:
            snapshot = snapshot.with_pod_bound(pod, expected.node)


@given(cells(), st.lists(st.tuples(pods("d"), st.integers(min_value=0, max_value=5), st.booleans()), max_size=8))
def test_derived_spread_counts_equal_a_fresh_count(snapshot: CellSnapshot,
                                                   steps: list[tuple[PodInfo, int, bool]]) -> None:
    jobs = ("alice/ReplicaSet/a", "alice/ReplicaSet/b", "alice/ReplicaSet/c")
    for job in jobs:
        snapshot.job_domains(job)  # memoized, so later snapshots derive them incrementally
    names = sorted(snapshot.nodes)
    for i, (pod, where, remove) in enumerate(steps):
        node = snapshot.nodes[names[where % len(names)]]
        if remove and node.pods:
            snapshot = snapshot.with_nodes(node.without_pods({node.pods[0].uid}))
        else:
            pod = PodInfo(pod.namespace, f"d{i}", f"ud{i}", pod.priority, pod.requests, pod.labels, pod.owner)
            snapshot = snapshot.with_pod_bound(pod, node.name)
        fresh = CellSnapshot(dict(snapshot.nodes), snapshot.allocs)
        for job in jobs:
            assert snapshot.job_domains(job) == fresh.job_domains(job)


@given(cells(), st.lists(st.tuples(st.integers(min_value=0, max_value=5), st.sampled_from(["zone-0", "zone-9"]),
                                   st.sampled_from(["rack-0", "rack-9"])), max_size=6))
def test_derived_spread_counts_follow_relabelled_nodes(snapshot: CellSnapshot,
                                                       moves: list[tuple[int, str, str]]) -> None:
    jobs = ("alice/ReplicaSet/a", "alice/ReplicaSet/b", "alice/ReplicaSet/c")
    for job in jobs:
        snapshot.job_domains(job)
    names = sorted(snapshot.nodes)
    for where, zone, rack in moves:
        node = snapshot.nodes[names[where % len(names)]]
        relabelled = NodeInfo(node.name, node.allocatable, {**node.labels, ZONE_LABEL: zone, RACK_LABEL: rack},
                              node.pods, node.max_pods, node.unschedulable)
        snapshot = snapshot.with_nodes(relabelled)
        fresh = CellSnapshot(dict(snapshot.nodes), snapshot.allocs)
        for job in jobs:
            assert snapshot.job_domains(job) == fresh.job_domains(job)

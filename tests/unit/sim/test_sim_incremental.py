"""policy/incremental.py: advancing a cell in place decides exactly as immutable snapshots do."""

from __future__ import annotations

import random

from scheduler_ext.policy.incremental import CellState, IncrementalScheduler, TaskClass
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.scheduler import NOT_EXAMINED, EquivalenceClass, PolicyCache, Scheduler
from tests.unit.policy.policy_builders import BATCH, BEST_EFFORT, MONITORING, PROD, alloc, cell, node, pod

ZONES = ("zone-a", "zone-b", "zone-c")


def _start(n: int = 30) -> CellSnapshot:
    return cell(*(node(f"node-{i}", cpu=("4", "8", "16")[i % 3], zone=ZONES[i % 3], rack=f"rack-{i % 7}",
                       pods=tuple(pod(f"old-{i}-{k}", cpu="1", priority=BATCH, namespace="lab", job=f"old-{k}")
                                  for k in range(i % 4)))
                  for i in range(n)))


def _stream(count: int, seed: int) -> list[PodInfo]:
    rng = random.Random(seed)
    shapes = [("500m", "1Gi"), ("1", "2Gi"), ("2", "4Gi"), ("12", "8Gi")]  # the last fits only big nodes
    priorities = [MONITORING, PROD, BATCH, BEST_EFFORT]
    return [pod(f"t-{i}", *rng.choice(shapes), priority=rng.choice(priorities), job=f"job-{rng.randrange(6)}")
            for i in range(count)]


def test_same_decisions_as_scheduler_over_immutable_snapshots() -> None:
    snapshot = _start()
    state = CellState(snapshot)
    reference = Scheduler(PolicyCache(), enough_feasible=5, rng=random.Random(7))
    incremental = IncrementalScheduler(PolicyCache(), enough_feasible=5, rng=random.Random(7))
    placed = pending = 0
    for task in _stream(150, seed=3):
        expected = reference.schedule(task, snapshot)
        got = incremental.schedule(task, state)
        assert got.node == expected.node, task.key
        assert got.scores == expected.scores, task.key
        # The examined nodes carry the same verdicts; only the unexamined ones are left out.
        assert {n: v for n, v in expected.verdicts.items() if v is not NOT_EXAMINED} == dict(got.verdicts)
        if expected.node is None:
            pending += 1
            continue
        placed += 1
        snapshot = snapshot.with_pod_bound(task, expected.node)
        state.bind(task, got.node)
    assert placed > 50 and pending > 0  # the stream exercised both outcomes
    frozen = state.freeze()
    assert {n: [p.uid for p in v.pods] for n, v in frozen.nodes.items()} == \
           {n: [p.uid for p in v.pods] for n, v in snapshot.nodes.items()}
    for job in {p.owner for p in snapshot.pods()}:
        assert state.job_domains(job) == CellSnapshot(dict(snapshot.nodes)).job_domains(job)


def test_evict_puts_the_cell_back_and_keeps_spread_counts_right() -> None:
    start = _start(9)
    state = CellState(start)
    web = [pod(f"web-{i}", cpu="1", job="web") for i in range(3)]
    for i, task in enumerate(web):
        state.bind(task, f"node-{i}")
    assert state.job_domains("alice/ReplicaSet/web").zones == {"zone-a": 1, "zone-b": 1, "zone-c": 1}
    assert state.find_pod(web[1].uid) is not None and state.find_pod(web[1].uid).node_name == "node-1"
    gone = state.evict([web[1].uid, "no-such-uid"])
    assert [p.key for p in gone] == ["alice/web-1"]
    assert state.find_pod(web[1].uid) is None
    assert state.job_domains("alice/ReplicaSet/web").zones == {"zone-a": 1, "zone-c": 1}
    fresh = CellSnapshot(dict(state.nodes))
    assert state.job_domains("alice/ReplicaSet/web") == fresh.job_domains("alice/ReplicaSet/web")
    assert [p.uid for p in state.nodes["node-1"].pods] == [p.uid for p in start.nodes["node-1"].pods]


def test_a_new_alloc_reaches_cached_decisions() -> None:
    state = CellState(cell(node("node-1", cpu="4"), node("node-2", cpu="4", zone="zone-b")))
    scheduler = IncrementalScheduler(PolicyCache())
    assert scheduler.filter(pod("a", cpu="2"), state).feasible == ("node-1", "node-2")
    state.put_alloc(alloc("cache", cpu="3", memory="1Gi", nodes=("node-1",)))
    result = scheduler.filter(pod("b", cpu="2"), state)
    assert result.feasible == ("node-2",)
    assert "alloc reservations hold" in result.failed["node-1"]
    assert Scheduler().filter(pod("b", cpu="2"), state.freeze()).feasible == ("node-2",)


def test_without_equivalence_classes_decisions_stay_but_nothing_is_shared() -> None:
    snapshot = _start(12)
    with_classes = IncrementalScheduler(PolicyCache(), rng=random.Random(1))
    cache = PolicyCache()
    per_task = IncrementalScheduler(cache, rng=random.Random(1), equivalence_classes=False)
    tasks = [pod(f"t-{i}", cpu="1", job="same") for i in range(5)]  # one class, five tasks
    for task in tasks:
        assert per_task.schedule(task, snapshot) == with_classes.schedule(task, snapshot)
    # Every task evaluated every node afresh: the cache was only reused between filter and ranking.
    assert cache.misses == len(tasks) * len(snapshot.nodes)
    assert per_task.classify(tasks[0]) != per_task.classify(tasks[1])
    assert isinstance(per_task.classify(tasks[0]), TaskClass)
    assert with_classes.classify(tasks[0]) == EquivalenceClass.of(tasks[1])

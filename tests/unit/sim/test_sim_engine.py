"""The Fauxmaster's pass: quota at submission, allocs, priority order, preemption (R1-R3), reasons."""

from __future__ import annotations

import pytest

from cell.errors import CellError
from cell.sim.engine import SimOptions, Techniques, simulate
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.resources import Resources
from tests.unit.sim.sim_builders import alloc, band_quota, job, nodes, running_pod, sim_cell, workload

GiB = 2**30
ALL_OFF = Techniques(equivalence_classes=False, score_caching=False, relaxed_randomization=False)


def _alloc_manifest(name: str, node: str, cpu: str = "2", namespace: str = "alice") -> dict:
    return {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"priorityClassName": "production", "count": 1, "resources": {"cpu": cpu, "memory": "2Gi"}},
            "status": {"instances": [{"index": 0, "node": node}]}}


def test_quota_refuses_a_whole_job_and_charges_the_admitted_ones() -> None:
    cell = sim_cell(*nodes(4), band_quota("alice", {"production": {"cpu": "4", "memory": "8Gi"}}))
    result = simulate(cell, workload(job("web", "production", tasks=3), job("api", "production", tasks=2),
                                     job("big", "production", tasks=5, namespace="alice")))
    assert [r.ref for r in result.rejections] == ["Job alice/api", "Job alice/big"]
    assert result.rejections[0].reason == "BandQuota alice/quota: band production needs cpu 2, 3 in use, limit 4"
    assert result.rejections[1].reason.startswith("BandQuota alice/quota: band production needs cpu 5, 3 in use")
    assert sorted(result.placements) == ["alice/web-0", "alice/web-1", "alice/web-2"]  # never part of a job
    assert result.quota_use["alice"][Band.PRODUCTION] == Resources(3000, 3 * GiB)


def test_unlimited_namespaces_and_best_effort_are_not_refused() -> None:
    cell = sim_cell(*nodes(2), band_quota("alice", {"production": {"cpu": "1", "memory": "1Gi"}}))
    result = simulate(cell, workload(job("free", "best-effort", tasks=4), job("other", "batch", namespace="bob")))
    assert not result.rejections and len(result.placements) == 5


def test_alloc_is_charged_once_and_its_members_run_only_inside_it() -> None:
    cell = sim_cell(*nodes(6, cpu="4"), band_quota("alice", {"production": {"cpu": "4", "memory": "4Gi"}}))
    load = workload(job("cache", "production", tasks=4, cpu="500m", memory="256Mi", alloc="cache"),
                    job("web", "production", tasks=1, cpu="1"),
                    job("fill", "best-effort", tasks=44, cpu="500m", memory="128Mi", namespace="bob"),
                    allocs=(alloc("cache", count=2, cpu="1", memory="1Gi", spread_by="topology.kubernetes.io/zone"),))
    result = simulate(cell, load)
    assert [(a.key, a.phase) for a in result.allocs] == [("alice/cache", "Reserved")]
    instances = result.allocs[0].nodes
    zones = {result.final.nodes[n].zone for n in instances}
    assert len(instances) == 2 and len(zones) == 2  # distinct nodes, distinct zones (spreadBy)
    # The alloc (2 CPU) is charged, its members are not (A4): 1 more CPU of web still fits the 4 of quota.
    assert [r.ref for r in result.rejections] == []
    assert result.quota_use["alice"][Band.PRODUCTION] == Resources(3000, 3 * GiB)
    members = [p for p in result.placements.values() if p.job == "alice/Job/cache"]
    assert {p.node for p in members} <= set(instances)
    assert len(members) == 4  # two 500m members per 1-CPU instance
    # Best-effort filled the cell around the reservations, never into them (A1).
    for name in instances:
        node = result.final.nodes[name]
        outside = sum(p.requests.cpu for p in node.pods if p.alloc is None)
        assert outside + 1000 <= node.allocatable.cpu
    assert any(p.job == "bob/Job/fill" for p in result.pending)


def test_members_of_an_alloc_that_could_not_be_placed_stay_pending_with_the_reason() -> None:
    cell = sim_cell(*nodes(2, cpu="2"))
    result = simulate(cell, workload(job("m", "production", tasks=1, cpu="500m", alloc="big"),
                                     allocs=(alloc("big", count=1, cpu="4"),)))
    assert result.allocs[0].phase == "Pending" and "fit nowhere" in result.allocs[0].message
    assert "not a node of alloc alice/big (its instances: none placed yet)" in result.pending[0].reason


def test_higher_bands_are_scheduled_first_whatever_the_submission_order() -> None:
    cell = sim_cell(*nodes(1, cpu="2"))
    result = simulate(cell, workload(job("late", "batch", tasks=2), job("first", "monitoring", tasks=1),
                                     job("second", "production", tasks=1)))
    assert sorted(result.placements) == ["alice/first-0", "alice/second-0"]
    assert {p.task for p in result.pending} == {"alice/late-0", "alice/late-1"}
    assert not result.preemptions


def test_prod_preempts_batch_and_the_victims_go_back_to_the_queue() -> None:
    running = [running_pod(f"old-{i}", f"node-{i % 2 + 1}") for i in range(8)]  # two 4-CPU nodes, full of batch
    result = simulate(sim_cell(*nodes(2, cpu="4"), *running), workload(job("web", "production", tasks=2)))
    assert sorted(result.placements) == ["alice/web-0", "alice/web-1"]
    assert len(result.preemptions) == 2
    for event in result.preemptions:
        assert event.victim_band is Band.BATCH and event.preemptor_band is Band.PRODUCTION
        assert "R1: prod may preempt non-prod" in event.reason
    # The victims were rescheduled and found no room: pending, with the reason.
    assert {p.task for p in result.pending} == {e.victim for e in result.preemptions}
    assert all("no pod here may be preempted (R1/R2)" in p.reason for p in result.pending)
    assert result.stats.requeued == 2


def test_prod_never_preempts_prod_r1() -> None:
    running = [running_pod(f"prod-{i}", "node-1", band="production") for i in range(4)]
    result = simulate(sim_cell(*nodes(1, cpu="4"), *running), workload(job("mon", "monitoring")))
    assert not result.preemptions and not result.placements
    assert "no pod here may be preempted (R1/R2)" in result.pending[0].reason


def test_batch_does_not_preempt_batch_but_does_preempt_best_effort_r2() -> None:
    running = [running_pod("b", "node-1", band="batch", cpu="2"),
               running_pod("e", "node-2", band="best-effort", cpu="2")]
    result = simulate(sim_cell(*nodes(2, cpu="2"), *running), workload(job("crunch", "batch", tasks=2, cpu="2")))
    assert [(e.victim, e.victim_band) for e in result.preemptions] == [("lab/e", Band.BEST_EFFORT)]
    assert "R2: strictly lower priority" in result.preemptions[0].reason
    assert len(result.placements) == 1 and {p.task for p in result.pending} == {"alice/crunch-1", "lab/e"}


def test_no_preemption_option_leaves_the_tasks_pending() -> None:
    running = [running_pod(f"old-{i}", "node-1") for i in range(4)]
    result = simulate(sim_cell(*nodes(1, cpu="4"), *running), workload(job("web", "production")),
                      SimOptions(preemption=False))
    assert not result.preemptions and result.pending[0].reason.startswith("fits no node: 1 node(s)")


def test_same_seed_same_run_and_the_techniques_do_not_change_decisions() -> None:
    cell = sim_cell(*nodes(40, cpu="8"), *(running_pod(f"old-{i}", f"node-{i % 40 + 1}") for i in range(30)))
    load = workload(*(job(f"b{i}", "batch", tasks=12, cpu=("250m", "500m", "1")[i % 3]) for i in range(10)),
                    job("web", "production", tasks=20, cpu="2"), job("huge", "batch", tasks=250, cpu="1"))
    runs = [simulate(cell, load, SimOptions(seed=5, enough_feasible=4)) for _ in range(2)]
    assert {k: p.node for k, p in runs[0].placements.items()} == {k: p.node for k, p in runs[1].placements.items()}
    other_seed = simulate(cell, load, SimOptions(seed=6, enough_feasible=4))
    assert {k: p.node for k, p in other_seed.placements.items()} != {k: p.node for k, p in runs[0].placements.items()}
    # Caching and equivalence classes (and the failure memo built on them) are pure speed-ups.
    cached = simulate(cell, load, SimOptions(seed=5, enough_feasible=4))
    uncached = simulate(cell, load, SimOptions(seed=5, enough_feasible=4, techniques=Techniques(
        equivalence_classes=False, score_caching=False)))
    assert {k: p.node for k, p in cached.placements.items()} == {k: p.node for k, p in uncached.placements.items()}
    assert [p.task for p in cached.pending] == [p.task for p in uncached.pending]
    assert cached.stats.memo_hits > 0 and uncached.stats.memo_hits == 0
    # Relaxed randomization examines fewer nodes than the exhaustive scan.
    exhaustive = simulate(cell, load, SimOptions(techniques=ALL_OFF))
    assert cached.stats.nodes_examined < exhaustive.stats.nodes_examined
    assert exhaustive.stats.nodes_examined >= exhaustive.stats.decisions * 1  # every decision looked at nodes


def test_enough_feasible_zero_examines_every_node() -> None:
    cell = sim_cell(*nodes(150))
    result = simulate(cell, workload(job("one", "production")), SimOptions(enough_feasible=0))
    assert result.stats.nodes_examined == 150
    relaxed = simulate(cell, workload(job("one", "production")), SimOptions(enough_feasible=10))
    assert relaxed.stats.nodes_examined == 10  # an empty cell: every node examined is feasible


def test_a_workload_alloc_that_already_exists_in_the_cell_is_an_error() -> None:
    cell = sim_cell(*nodes(1), _alloc_manifest("cache", "node-1"))
    with pytest.raises(CellError, match="alloc alice/cache already exists in the cell"):
        simulate(cell, workload(job("x"), allocs=(alloc("cache"),)))


def test_members_of_an_alloc_in_the_snapshot_use_it() -> None:
    cell = sim_cell(*nodes(3, cpu="4"), _alloc_manifest("cache", "node-2", cpu="2"))
    result = simulate(cell, workload(job("m", "production", tasks=3, cpu="1", alloc="cache")))
    assert {p.node for p in result.placements.values()} == {"node-2"}
    assert len(result.placements) == 2  # the third does not fit in the 2-CPU instance
    assert "alloc alice/cache instance has too little left" in result.pending[0].reason

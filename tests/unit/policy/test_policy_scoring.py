"""Scoring (Borg §3.2): prod spreads, non-prod packs, a job spreads across zones then racks."""

from __future__ import annotations

import pytest

from scheduler_ext.policy.feasibility import node_ledger
from scheduler_ext.policy.scheduler import Scheduler
from scheduler_ext.policy.scoring import resource_score, score_node, spread_score
from tests.unit.policy.policy_builders import BATCH, BEST_EFFORT, MONITORING, PROD, alloc, cell, node, pod

# node-empty is idle, node-busy has 6 of 8 cpu and 24 of 32Gi in use by another job.
CELL = cell(
    node("node-empty", zone="zone-a"),
    node("node-busy", zone="zone-b", pods=(pod("filler", cpu="6", memory="24Gi", job="filler", priority=BATCH),)),
)


@pytest.mark.parametrize(
    ("priority", "preferred", "other"),
    [
        (PROD, "node-empty", "node-busy"),  # least allocated: headroom for spikes
        (MONITORING, "node-empty", "node-busy"),
        (BATCH, "node-busy", "node-empty"),  # best fit: pack, leave whole nodes free
        (BEST_EFFORT, "node-busy", "node-empty"),
    ],
)
def test_bands_spread_or_pack(priority: int, preferred: str, other: str) -> None:
    candidate = pod("new", cpu="1", memory="1Gi", priority=priority, job="web")
    assert score_node(candidate, CELL, CELL.nodes[preferred]) > score_node(candidate, CELL, CELL.nodes[other])


def test_resource_score_extremes() -> None:
    full = cell(node("n", cpu="2", memory="2Gi"))
    books = node_ledger(full, full.nodes["n"])
    assert resource_score(pod("p", cpu="2", memory="2Gi", priority=PROD), books) == 0  # nothing left
    assert resource_score(pod("b", cpu="2", memory="2Gi", priority=BATCH), books) == 10  # perfect fit


def test_member_lands_inside_its_reservation() -> None:
    # The reservation is already counted: a member does not make the node look fuller.
    snapshot = cell(node("n", cpu="4", memory="4Gi"), allocs=(alloc("c", cpu="2", memory="2Gi", nodes=("n",)),))
    books = node_ledger(snapshot, snapshot.nodes["n"])
    member = pod("m", cpu="1", memory="1Gi", alloc="c", priority=BATCH)
    outsider = pod("o", cpu="1", memory="1Gi", priority=BATCH)
    assert resource_score(member, books) == pytest.approx(5.0)
    assert resource_score(outsider, books) == pytest.approx(7.5)


def test_job_spreads_across_zones_before_racks() -> None:
    web = pod("web-0", job="web", cpu="100m", memory="100Mi", priority=BATCH)
    placed = (pod("web-1", job="web", cpu="100m", memory="100Mi", priority=BATCH),)
    snapshot = cell(
        node("a1", zone="zone-a", rack="rack-1", pods=placed),
        node("a1-same-rack", zone="zone-a", rack="rack-1"),
        node("a2-other-rack", zone="zone-a", rack="rack-2"),
        node("b3-other-zone", zone="zone-b", rack="rack-3"),
    )
    spread = {name: spread_score(snapshot.job_domains(web.owner), n) for name, n in snapshot.nodes.items()}
    assert spread["b3-other-zone"] > spread["a2-other-rack"] > spread["a1-same-rack"]
    assert spread["a1"] == spread["a1-same-rack"] == 0
    assert spread["b3-other-zone"] == 10
    scores = {name: score_node(web, snapshot, n) for name, n in snapshot.nodes.items()}
    assert max(scores, key=lambda name: scores[name]) == "b3-other-zone"


def test_a_job_with_no_pods_yet_is_indifferent_to_domains() -> None:
    domains = CELL.job_domains(pod("x", job="new").owner)
    assert {spread_score(domains, n) for n in CELL.nodes.values()} == {10}


def test_a_batch_job_packs_before_it_spreads() -> None:
    # Eight 1-CPU batch tasks on six empty 8-CPU nodes in three zones: best fit fills one node; the
    # job's spread only tells equally packed nodes apart.
    snapshot = cell(*(node(f"n{i}", zone=("zone-a", "zone-b", "zone-c")[i % 3], rack=f"rack-{i}") for i in range(6)))
    scheduler = Scheduler()
    used = set()
    for i in range(8):
        task = pod(f"crunch-{i}", cpu="1", memory="256Mi", priority=BATCH, job="crunch")
        decision = scheduler.schedule(task, snapshot)
        snapshot = snapshot.with_pod_bound(task, decision.node)
        used.add(decision.node)
    assert len(used) == 1


def test_equally_packed_nodes_are_told_apart_by_the_jobs_spread() -> None:
    mine = pod("crunch-0", cpu="1", priority=BATCH, job="crunch")
    other = pod("other-0", cpu="1", priority=BATCH, job="other")
    snapshot = cell(node("same-rack", zone="zone-a", rack="rack-1", pods=(mine,)),
                    node("same-zone", zone="zone-a", rack="rack-2", pods=(other,)),
                    node("other-zone", zone="zone-b", rack="rack-3", pods=(other,)),
                    node("fuller", zone="zone-a", rack="rack-1",
                         pods=(pod("other-1", cpu="1", priority=BATCH, job="other"), other)))
    task = pod("crunch-1", cpu="1", priority=BATCH, job="crunch")
    scores = {name: score_node(task, snapshot, n) for name, n in snapshot.nodes.items()}
    # One CPU in use on each of the first three: the job's spread decides, zones before racks.
    assert scores["other-zone"] > scores["same-zone"] > scores["same-rack"]
    # A fuller node is a better fit, whatever the spread: packing leads for non-prod.
    assert scores["fuller"] > scores["other-zone"]


def test_prod_job_spreads_over_zones_and_a_node_each() -> None:
    snapshot = cell(*(node(f"n{i}", zone=("zone-a", "zone-b", "zone-c")[i % 3], rack=f"rack-{i}") for i in range(6)))
    scheduler = Scheduler()
    placed = []
    for i in range(6):
        replica = pod(f"frontend-{i}", cpu="1", memory="256Mi", job="frontend")
        decision = scheduler.schedule(replica, snapshot)
        snapshot = snapshot.with_pod_bound(replica, decision.node)
        placed.append(decision.node)
    assert len(set(placed)) == 6
    assert sorted(snapshot.nodes[n].zone for n in placed) == ["zone-a"] * 2 + ["zone-b"] * 2 + ["zone-c"] * 2

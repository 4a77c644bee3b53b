"""Scoring (Borg §3.2): prod spreads, non-prod packs, a job spreads across zones then racks."""

from __future__ import annotations

import pytest

from scheduler_ext.policy.feasibility import node_ledger
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

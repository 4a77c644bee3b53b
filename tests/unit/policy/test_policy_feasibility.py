"""Feasibility: plain capacity, and allocs (SPEC A1, A2), table-driven."""

from __future__ import annotations

import pytest

from scheduler_ext.policy.feasibility import alloc_instance_fits, check_node, node_ledger
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from tests.unit.policy.policy_builders import BATCH, alloc, cell, node, pod

# The cell used by most cases: node-1 has alloc alice/cache (2 cpu / 2Gi) with one 1-cpu member
# running; node-2 is plain; node-3 is cordoned.
MEMBER = pod("cache-0", cpu="1", memory="1Gi", alloc="cache")
CELL = cell(
    node("node-1", cpu="4", memory="8Gi", pods=(MEMBER, pod("other", cpu="1", memory="1Gi", priority=BATCH))),
    node("node-2", cpu="4", memory="8Gi", zone="zone-b"),
    node("node-3", cpu="4", memory="8Gi", unschedulable=True),
    allocs=(alloc("cache", cpu="2", memory="2Gi", nodes=("node-1",)),),
)
IN_ZONE_B = {"topology.kubernetes.io/zone": "zone-b"}


@pytest.mark.parametrize(
    ("candidate", "node_name", "fits", "reason_part", "resolvable"),
    [
        # A1: node-1 has 4 cpu; other uses 1, the alloc holds 2 (its member is inside): 1 cpu left for others.
        (pod("small", cpu="1"), "node-1", True, "fits", True),
        (pod("big", cpu="2"), "node-1", False, "alloc reservations hold cpu 2 / memory 2Gi", True),
        (pod("big", cpu="2"), "node-2", True, "fits", True),
        (pod("huge", cpu="5"), "node-2", False, "cpu 5 > 4 free", True),
        # A2: a member fits only on its alloc's nodes, inside the instance's remaining capacity.
        (pod("cache-1", cpu="1", alloc="cache"), "node-1", True, "fits in alloc alice/cache", True),
        (pod("cache-1", cpu="1500m", alloc="cache"), "node-1", False, "too little left: cpu 1500m > 1 free", True),
        (pod("cache-1", cpu="1", alloc="cache"), "node-2", False, "not a node of alloc alice/cache", False),
        (pod("cache-1", cpu="1", alloc="cache", namespace="bob"), "node-1", False, "bob/cache, which does not exist",
         False),
        (pod("any", cpu="1"), "node-3", False, "cordoned", False),
        (pod("sel", cpu="1", selector=IN_ZONE_B), "node-1", False, "node selector", False),
        (pod("sel", cpu="1", selector=IN_ZONE_B), "node-2", True, "fits", True),
    ],
)
def test_check_node(candidate: PodInfo, node_name: str, fits: bool, reason_part: str, resolvable: bool) -> None:
    verdict = check_node(candidate, CELL, CELL.nodes[node_name])
    assert verdict.fits is fits
    assert verdict.resolvable is resolvable
    assert reason_part in verdict.message


def test_ledger_counts_members_inside_their_reservation() -> None:
    books = node_ledger(CELL, CELL.nodes["node-1"])
    assert books.ordinary.cpu == 1000  # "other" only
    assert books.reserved.cpu == 2000  # the instance, its member inside
    assert books.free.cpu == 1000
    assert books.reservation_for("alice/cache").remaining.cpu == 1000


def test_overflowing_members_still_count() -> None:
    # Members admitted beyond the instance (e.g. before the alloc existed) use more than it holds.
    snapshot = cell(node("n", cpu="4", pods=(pod("m1", cpu="2", alloc="c"), pod("m2", cpu="1", alloc="c"))),
                    allocs=(alloc("c", cpu="2", nodes=("n",)),))
    books = node_ledger(snapshot, snapshot.nodes["n"])
    assert books.reserved.cpu == 3000
    assert check_node(pod("x", cpu="1"), snapshot, snapshot.nodes["n"]).fits
    assert not check_node(pod("x", cpu="2"), snapshot, snapshot.nodes["n"]).fits


def test_pod_slots() -> None:
    full = cell(node("n", max_pods=1, pods=(pod("a", cpu="0"),)))
    verdict = check_node(pod("b", cpu="0"), full, full.nodes["n"])
    assert not verdict.fits and "too many pods: 1 of 1" in verdict.message


def test_without_frees_capacity_for_preemption() -> None:
    victim = pod("v", cpu="3", priority=BATCH)
    snapshot = cell(node("n", cpu="4", pods=(victim,)))
    assert not check_node(pod("p", cpu="2"), snapshot, snapshot.nodes["n"]).fits
    assert check_node(pod("p", cpu="2"), snapshot, snapshot.nodes["n"], without=frozenset({victim.uid})).fits


@pytest.mark.parametrize(
    ("resources", "selector", "fits", "reason_part"),
    [
        (("1", "1Gi"), None, True, "fits"),
        (("3", "1Gi"), None, False, "instance needs cpu 3 / memory 1Gi, node has cpu 1 / memory 5Gi free"),
        (("1", "1Gi"), {"type": "gpu"}, False, "node selector type=gpu"),
    ],
)
def test_alloc_instance_fits(resources: tuple[str, str], selector: dict | None, fits: bool, reason_part: str) -> None:
    new = alloc("new", *resources, count=1, selector=selector)
    verdict = alloc_instance_fits(new, CELL, CELL.nodes["node-1"])
    assert verdict.fits is fits
    assert reason_part in verdict.message


def test_alloc_instance_absorbs_its_members_already_on_the_node() -> None:
    # Two members run on n before the instance exists; the instance covers them, not adds to them.
    members = (pod("m1", cpu="1", alloc="c"), pod("m2", cpu="1", alloc="c"))
    snapshot = CellSnapshot([node("n", cpu="3", pods=members)])
    assert alloc_instance_fits(alloc("c", cpu="3", count=1), snapshot, snapshot.nodes["n"]).fits
    assert not alloc_instance_fits(alloc("c", cpu="4", count=1), snapshot, snapshot.nodes["n"]).fits

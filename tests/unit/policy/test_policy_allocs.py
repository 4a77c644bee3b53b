"""Alloc placement (A1, A6): distinct nodes, spreadBy, nodeSelector, kept instances, messages."""

from __future__ import annotations

from scheduler_ext.policy.allocs import PARTIALLY_RESERVED, PENDING, RESERVED, place_alloc
from scheduler_ext.policy.model import ZONE_LABEL, AllocInstance
from tests.unit.policy.policy_builders import BATCH, alloc, cell, node, pod

CELL = cell(
    node("node-1", zone="zone-a", rack="rack-1"),
    node("node-2", zone="zone-a", rack="rack-2", pods=(pod("busy", cpu="4", priority=BATCH),)),
    node("node-3", zone="zone-b", rack="rack-3", type="gpu"),
    node("node-4", zone="zone-c", rack="rack-4", pods=(pod("full", cpu="7", priority=BATCH),)),
)


def test_places_count_instances_on_distinct_nodes() -> None:
    placement = place_alloc(alloc("c", cpu="1", count=3), CELL)
    assert placement.phase == RESERVED and placement.message == ""
    assert [i.index for i in placement.instances] == [0, 1, 2]
    assert len(set(placement.nodes)) == 3


def test_prod_spreads_non_prod_packs() -> None:
    prod = place_alloc(alloc("p", cpu="1", count=1), CELL)
    batch = place_alloc(alloc("b", cpu="1", count=1, priority=BATCH), CELL)
    assert prod.nodes[0] in {"node-1", "node-3"}  # an idle node
    assert batch.nodes == ("node-4",)  # the fullest node that still fits


def test_spread_by_zone() -> None:
    placement = place_alloc(alloc("c", cpu="1", count=3, spread_by=ZONE_LABEL), CELL)
    zones = [CELL.nodes[n].zone for n in placement.nodes]
    assert sorted(zones) == ["zone-a", "zone-b", "zone-c"]


def test_spread_by_zone_cannot_exceed_zones() -> None:
    placement = place_alloc(alloc("c", cpu="1", count=4, spread_by=ZONE_LABEL), CELL)
    assert placement.phase == PARTIALLY_RESERVED
    assert len(placement.instances) == 3
    assert "3 of 4 instance(s)" in placement.message and "already holds an instance" in placement.message


def test_node_selector() -> None:
    placement = place_alloc(alloc("c", cpu="1", count=2, selector={"type": "gpu"}), CELL)
    assert placement.nodes == ("node-3",)
    assert placement.phase == PARTIALLY_RESERVED
    assert "node selector type=gpu does not match" in placement.message


def test_nothing_fits_is_pending_with_reason() -> None:
    placement = place_alloc(alloc("c", cpu="9", count=1), CELL)
    assert placement.phase == PENDING and placement.instances == ()
    assert "instance needs cpu 9" in placement.message


def test_placed_instances_stay_and_missing_ones_are_added() -> None:
    existing = alloc("c", cpu="1", count=2, nodes=("node-2",))
    placement = place_alloc(existing, CELL)
    assert placement.instances[0] == AllocInstance(0, "node-2")
    assert placement.instances[1].index == 1 and placement.instances[1].node != "node-2"


def test_instance_on_a_vanished_node_is_replaced_and_extra_ones_dropped() -> None:
    gone = alloc("c", cpu="1", count=1, nodes=("node-9", "node-1"))  # count lowered to 1, node-9 gone
    placement = place_alloc(gone, CELL)
    assert len(placement.instances) == 1 and placement.instances[0].index == 0
    assert placement.instances[0].node in CELL.nodes


def test_other_allocs_reservations_are_respected() -> None:
    snapshot = cell(node("n1", cpu="4"), allocs=(alloc("other", cpu="3", nodes=("n1",)),))
    assert place_alloc(alloc("c", cpu="2", count=1), snapshot).phase == PENDING
    assert place_alloc(alloc("c", cpu="1", count=1), snapshot).phase == RESERVED

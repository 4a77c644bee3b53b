"""The pure side of the operator's work on Allocs: which recorded instances hold, the status written
back (phase, instances[].used, message), giving back instances squeezed out while placing, release."""

from __future__ import annotations

import pytest

from scheduler_ext.policy.allocs import (
    PARTIALLY_RESERVED,
    PENDING,
    RESERVED,
    AllocPlacement,
    alloc_status,
    members_use,
    needs_placement,
    phase_of,
    place_alloc,
    releasing_status,
    squeezed_out,
    valid_instances,
    without_instances,
)
from scheduler_ext.policy.model import AllocInstance
from tests.unit.policy.policy_builders import alloc, cell, node, pod

NODES = {"n1", "n2", "n3"}


@pytest.mark.parametrize(("count", "recorded", "kept"), [
    (2, [(0, "n1"), (1, "n2")], [(0, "n1"), (1, "n2")]),
    (2, [(0, "n1"), (1, "gone")], [(0, "n1")]),  # a vanished node holds nothing
    (1, [(0, "n1"), (1, "n2")], [(0, "n1")]),  # count lowered: extra instances go
    (2, [(0, "n1"), (0, "n2")], [(0, "n1")]),  # an index recorded twice counts once
    (2, [(0, "n1"), (1, "n1")], [(0, "n1")]),  # a node recorded twice counts once
    (2, [(-1, "n1"), (1, "n2")], [(1, "n2")]),
])
def test_valid_instances_never_count_an_instance_twice(count: int, recorded: list[tuple[int, str]],
                                                       kept: list[tuple[int, str]]) -> None:
    a = alloc("c", count=count).with_instances(AllocInstance(i, n) for i, n in recorded)
    assert valid_instances(a, NODES) == tuple(AllocInstance(i, n) for i, n in kept)
    assert needs_placement(a, NODES) is (recorded != kept or len(kept) != count)


def test_needs_placement_only_when_instances_are_missing_or_stale() -> None:
    assert not needs_placement(alloc("c", nodes=("n1", "n2")), NODES)
    assert needs_placement(alloc("c", count=3, nodes=("n1", "n2")), NODES)
    assert needs_placement(alloc("c", nodes=("n1", "n9")), NODES)


def test_place_alloc_drops_duplicate_records_and_fills_the_gap() -> None:
    snapshot = cell(node("n1"), node("n2"), node("n3"))
    a = alloc("c", cpu="1", count=2).with_instances((AllocInstance(0, "n1"), AllocInstance(1, "n1")))
    placement = place_alloc(a, snapshot)
    assert placement.phase == RESERVED
    assert placement.instances[0] == AllocInstance(0, "n1")
    assert placement.instances[1].index == 1 and placement.instances[1].node != "n1"


@pytest.mark.parametrize(("placed", "count", "phase"), [(0, 2, PENDING), (1, 2, PARTIALLY_RESERVED),
                                                        (2, 2, RESERVED)])
def test_phase_of(placed: int, count: int, phase: str) -> None:
    assert phase_of(placed, count) == phase


def test_status_records_each_instance_with_its_members_use() -> None:
    a = alloc("cache", cpu="500m", memory="256Mi", nodes=("n1", "n2"))
    members = [
        pod("m1", cpu="250m", memory="128Mi", alloc="cache"),
        pod("m2", cpu="250m", memory="128Mi", alloc="cache"),
        pod("m3", cpu="100m", memory="64Mi", alloc="cache"),
        pod("other", cpu="1", alloc="db"),  # another alloc's member on the same node
        pod("elsewhere", cpu="1", alloc="cache", namespace="bob"),  # same name, other namespace
    ]
    on = {"m1": "n1", "m2": "n1", "m3": "n2", "other": "n1", "elsewhere": "n1"}
    bound = [type(p)(p.namespace, p.name, p.uid, p.priority, p.requests, p.labels, p.owner, on[p.name])
             for p in members]
    status = alloc_status(a, AllocPlacement(a.instances, RESERVED, ""), bound, generation=3)
    assert status == {
        "phase": "Reserved",
        "instances": [{"index": 0, "node": "n1", "used": {"cpu": "500m", "memory": "256Mi"}},
                      {"index": 1, "node": "n2", "used": {"cpu": "100m", "memory": "64Mi"}}],
        "message": "",
        "observedGeneration": 3,
    }
    assert members_use(a, [pod("unbound", alloc="cache")]) == {}


def test_instances_squeezed_out_while_placing_are_given_back() -> None:
    # n1 had room for the 4 CPU instance when placed; a 6 CPU pod was bound there before the write.
    a = alloc("big", cpu="4", count=2, nodes=("n1", "n2"))
    after = cell(node("n1", pods=(pod("intruder", cpu="6"),)), node("n2"), allocs=(a,))
    dropped = squeezed_out(a, after, {0, 1})
    assert dropped == (AllocInstance(0, "n1"),)
    assert squeezed_out(a, after, {1}) == ()  # only the instances just placed are checked
    placement = without_instances(a, AllocPlacement(a.instances, RESERVED, ""), dropped, "node filled up")
    assert placement.phase == PARTIALLY_RESERVED and placement.instances == (AllocInstance(1, "n2"),)
    assert "instance(s) 0 on n1: node filled up" in placement.message


def test_members_inside_a_new_instance_do_not_squeeze_it_out() -> None:
    a = alloc("cache", cpu="4", nodes=("n1",))
    after = cell(node("n1", pods=(pod("m", cpu="4", alloc="cache"), pod("x", cpu="4"))), allocs=(a,))
    assert squeezed_out(a, after, {0}) == ()


def test_releasing_status_holds_nothing_and_says_why() -> None:
    a = alloc("cache", nodes=("n1",))
    status = releasing_status(a, members_left=2, blocked=["cache-b", "cache-a"], generation=1)
    assert status["instances"] == [] and status["phase"] == PENDING
    assert "alice/cache is being deleted: reservation released" in status["message"]
    assert "evicting 2 member pod(s)" in status["message"]
    assert "cache-a, cache-b" in status["message"] and "PodDisruptionBudget" in status["message"]
    assert releasing_status(a, 0)["message"] == "alloc alice/cache is being deleted: reservation released"


def test_capacity_shortfalls_are_one_line_naming_the_most_any_node_has_free() -> None:
    snapshot = cell(node("n1", pods=(pod("a", cpu="1"),)), node("n2", pods=(pod("b", cpu="3", memory="2Gi"),)),
                    node("n3", cpu="4", gpu="yes"), node("n4", unschedulable=True))
    placement = place_alloc(alloc("c", cpu="9", memory="1Gi", count=2), snapshot)
    assert placement.message == (
        "0 of 2 instance(s) of cpu 9 / memory 1Gi placed; 2 fit nowhere: "
        "3 node(s): instance needs cpu 9 / memory 1Gi, nodes have at most cpu 7 / memory 32Gi free; "
        "1 node(s): node is cordoned (unschedulable)")
    one = place_alloc(alloc("c", cpu="5", count=1, selector={"gpu": "yes"}), snapshot)
    assert "1 node(s): instance needs cpu 5 / memory 2Gi, node has cpu 4 / memory 32Gi free" in one.message

"""A7: a reservation is held at its band. A higher band's pod may take a lower band's instance
(R1/R2); the instance is then given back and placed again; a band without quota cannot hold the cell.
"""

from __future__ import annotations

from scheduler_ext.policy.allocs import place_alloc, preempted
from scheduler_ext.policy.bands import PRIORITY_CLASSES
from scheduler_ext.policy.feasibility import check_node
from scheduler_ext.policy.model import AllocInfo, AllocInstance, CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources

CPU = 1000
NODE = Resources(8 * CPU, 32 * 2**30)


def pod(name: str, band: str, cpu: float, alloc: str | None = None, node: str | None = None) -> PodInfo:
    labels = {"cell.distos.dev/alloc": alloc} if alloc else {}
    # Members are alice's (the alloc's owner); everyone else is another student, bob.
    return PodInfo("alice" if alloc else "bob", name, f"uid-{name}", PRIORITY_CLASSES[band],
                   Resources(int(cpu * CPU), 2**30), labels, node_name=node)


def cell(alloc: AllocInfo, *pods: PodInfo) -> CellSnapshot:
    nodes = [NodeInfo(f"node-{i}", NODE, pods=tuple(p for p in pods if p.node_name == f"node-{i}"))
             for i in range(1, 3)]
    return CellSnapshot(nodes, [alloc])


def hostage(band: str = "best-effort") -> AllocInfo:
    """6 x 7500m in a band without quota (the issue's case), here on both nodes."""
    return AllocInfo("alice", "hog", Resources(7500, 2**30), count=2, priority=PRIORITY_CLASSES[band],
                     instances=(AllocInstance(0, "node-1"), AllocInstance(1, "node-2")))


def test_a_higher_band_pod_is_not_kept_out_by_a_lower_bands_reservation() -> None:
    snapshot = cell(hostage())
    node = snapshot.nodes["node-1"]
    assert check_node(pod("prod", "production", 2), snapshot, node).fits
    assert check_node(pod("batch", "batch", 2), snapshot, node).fits  # batch > best-effort (R2)
    verdict = check_node(pod("free", "best-effort", 2), snapshot, node)
    assert not verdict.fits and "alloc reservations hold" in verdict.message  # same band: A1 holds


def test_r1_prod_reservations_hold_against_prod_pods() -> None:
    snapshot = cell(hostage("production"))
    assert not check_node(pod("prod", "production", 2), snapshot, snapshot.nodes["node-1"]).fits
    assert check_node(pod("vip", "monitoring", 2), snapshot, snapshot.nodes["node-1"]).fits is False


def test_members_use_still_counts_for_the_preemptor() -> None:
    alloc = hostage()
    member = pod("m", "best-effort", 7, alloc="hog", node="node-1")
    snapshot = cell(alloc, member)
    assert not check_node(pod("prod", "production", 2), snapshot, snapshot.nodes["node-1"]).fits
    assert check_node(pod("prod", "production", 1), snapshot, snapshot.nodes["node-1"]).fits


def test_the_taken_instance_is_given_back_and_placed_again_when_room_frees() -> None:
    alloc = hostage()
    assert preempted(alloc, cell(alloc)) == ()
    taken = cell(alloc, pod("prod", "production", 2, node="node-1"))
    assert preempted(alloc, taken) == (AllocInstance(0, "node-1"),)
    # Given back: the instance fits nowhere while the pod runs (A6 then places it again)...
    given_back = alloc.with_instances([AllocInstance(1, "node-2")])
    later = CellSnapshot(taken.nodes, [given_back])
    placement = place_alloc(given_back, later)
    assert placement.phase == "PartiallyReserved" and "fit nowhere" in placement.message
    # ... and once the pod is gone, it is placed again.
    assert place_alloc(given_back, CellSnapshot(cell(alloc).nodes, [given_back])).phase == "Reserved"


def test_a_member_cannot_overcommit_a_node_whose_instance_was_taken() -> None:
    alloc = hostage()
    snapshot = cell(alloc, pod("prod", "production", 2, node="node-1"))
    assert check_node(pod("m", "best-effort", 1, alloc="hog"), snapshot, snapshot.nodes["node-1"]).fits
    verdict = check_node(pod("m", "best-effort", 7, alloc="hog"), snapshot, snapshot.nodes["node-1"])
    assert not verdict.fits and "node overcommitted" in verdict.message

"""Properties of alloc placement over random cells: what the operator relies on to never reserve
twice and never oversell a node, whatever order allocs arrive in."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_ext.policy.allocs import RESERVED, needs_placement, phase_of, place_alloc, valid_instances
from scheduler_ext.policy.feasibility import ledger
from scheduler_ext.policy.model import ZONE_LABEL, AllocInfo, AllocInstance, CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources
from tests.unit.policy.policy_builders import BATCH, PROD

CPU = st.integers(min_value=1, max_value=16).map(lambda q: q * 250)
MEMORY = st.integers(min_value=1, max_value=8).map(lambda q: q * 2**29)
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def snapshots(draw: st.DrawFn) -> CellSnapshot:
    nodes = []
    for i in range(draw(st.integers(min_value=0, max_value=7))):
        name = f"n{i}"
        capacity = Resources(draw(st.sampled_from([2000, 4000, 8000])), 8 * 2**30)
        pods, used = [], Resources()
        for j in range(draw(st.integers(min_value=0, max_value=3))):
            requests = Resources(draw(CPU), draw(MEMORY))
            if (used + requests).fits_in(capacity):  # the scheduler never overcommits a node
                used = used + requests
                pods.append(PodInfo("bob", f"{name}-p{j}", f"uid-{name}-{j}", BATCH, requests, node_name=name))
        labels = {ZONE_LABEL: f"zone-{i % 3}", "disk": draw(st.sampled_from(["ssd", "hdd"]))}
        nodes.append(NodeInfo(name, capacity, labels, tuple(pods), unschedulable=draw(st.booleans()) and i == 0))
    return CellSnapshot(nodes)


@st.composite
def allocs(draw: st.DrawFn, name: str, nodes: list[str]) -> AllocInfo:
    count = draw(st.integers(min_value=1, max_value=4))
    recorded = draw(st.lists(st.tuples(st.integers(min_value=0, max_value=4), st.sampled_from([*nodes, "gone"])),
                             max_size=3)) if nodes else []
    return AllocInfo("alice", name, Resources(draw(CPU), draw(MEMORY)), count, draw(st.sampled_from([PROD, BATCH])),
                     draw(st.sampled_from([None, ZONE_LABEL])),
                     draw(st.sampled_from([{}, {"disk": "ssd"}])),
                     tuple(AllocInstance(i, n) for i, n in recorded))


def _holds(snapshot: CellSnapshot, alloc: AllocInfo, node: str) -> bool:
    others = tuple(a for a in snapshot.allocs_on(node) if a.key != alloc.key)
    return ledger(snapshot.nodes[node], (*others, alloc)).committed.fits_in(snapshot.nodes[node].allocatable)


@PROPERTY
@given(st.data())
def test_placement_keeps_what_holds_and_adds_only_what_fits(data: st.DataObject) -> None:
    snapshot = data.draw(snapshots())
    alloc = data.draw(allocs("cache", list(snapshot.nodes)))
    placement = place_alloc(alloc, snapshot)
    indices = [i.index for i in placement.instances]
    nodes = placement.nodes
    assert len(set(indices)) == len(indices) and all(0 <= i < alloc.count for i in indices)
    assert len(set(nodes)) == len(nodes) <= alloc.count, "an instance counted twice"
    kept = valid_instances(alloc, snapshot.nodes)
    assert set(kept) <= set(placement.instances), "a recorded instance moved"
    assert placement.phase == phase_of(len(placement.instances), alloc.count)
    assert (placement.message == "") is (placement.phase == RESERVED)
    placed = alloc.with_instances(placement.instances)
    for instance in set(placement.instances) - set(kept):
        node = snapshot.nodes[instance.node]
        assert not node.unschedulable
        assert all(node.labels.get(k) == v for k, v in alloc.node_selector.items())
        assert _holds(snapshot, placed, instance.node), f"{instance} oversells {instance.node}"
    if alloc.spread_by:
        new_domains = [snapshot.nodes[i.node].labels.get(alloc.spread_by)
                       for i in placement.instances if i not in kept]
        kept_domains = {snapshot.nodes[i.node].labels.get(alloc.spread_by) for i in kept}
        assert len(set(new_domains)) == len(new_domains) and not kept_domains & set(new_domains)


@PROPERTY
@given(st.data())
def test_placing_again_changes_nothing(data: st.DataObject) -> None:
    """What the operator relies on after a restart: the recorded result is a fixed point."""
    snapshot = data.draw(snapshots())
    alloc = data.draw(allocs("cache", list(snapshot.nodes)))
    first = place_alloc(alloc, snapshot)
    recorded = alloc.with_instances(first.instances)
    again = place_alloc(recorded, snapshot.with_allocs((recorded,)))
    assert again.instances == first.instances
    assert needs_placement(recorded, snapshot.nodes) is (first.phase != RESERVED)


@PROPERTY
@given(st.data())
def test_allocs_placed_one_at_a_time_never_oversell_a_node(data: st.DataObject) -> None:
    """The operator serialises placement on a snapshot holding every alloc placed so far."""
    snapshot = data.draw(snapshots())
    placed: list[AllocInfo] = []
    for name in ("a", "b", "c", "d"):
        alloc = data.draw(allocs(name, list(snapshot.nodes))).with_instances(())
        current = snapshot.with_allocs(placed)
        placed.append(alloc.with_instances(place_alloc(alloc, current).instances))
    final = snapshot.with_allocs(placed)
    for name, node in final.nodes.items():
        books = ledger(node, final.allocs_on(name))
        assert books.committed.fits_in(node.allocatable), f"{name}: {books.committed} of {node.allocatable}"

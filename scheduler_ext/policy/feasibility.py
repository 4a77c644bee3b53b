"""Feasibility: may this pod run on this node? A verdict is (fits, reasons), never a bare bool.

Allocs (SPEC §4): every placed instance reserves its resources on its node (A1), so a pod that is
not a member sees the node's allocatable minus ordinary use minus every reservation there, except
the reservations of bands it may preempt (A7: a reservation is held at its band; the operator then
gives such an instance back and places it again when room frees). A member
(A2) fits only on a node holding an instance of its alloc, inside that instance's remaining
capacity. Members' use is counted inside their instance, not on top of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler_ext.policy.bands import may_preempt
from scheduler_ext.policy.model import AllocInfo, CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.resources import ZERO, Resources


@dataclass(frozen=True, slots=True)
class Verdict:
    """A feasibility decision and the human-readable reasons for it.

    `resolvable` is False when evicting pods could not help (wrong node for an alloc member, a
    cordoned node, a node selector): kube-scheduler then skips the node when preempting.
    """

    fits: bool
    reasons: tuple[str, ...]
    resolvable: bool = True

    def __bool__(self) -> bool:
        return self.fits

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


def _max(a: Resources, b: Resources) -> Resources:
    return Resources(max(a.cpu, b.cpu), max(a.memory, b.memory))


@dataclass(frozen=True, slots=True)
class Reservation:
    """One alloc instance on a node: what it holds back and what its members already use."""

    alloc: AllocInfo
    members_use: Resources

    @property
    def reserved(self) -> Resources:
        """Members that overflow their instance (admitted before the alloc existed) still count."""
        use = self.members_use
        if not use.cpu and not use.memory:
            return self.alloc.resources  # no member here yet (every instance just placed)
        return _max(self.alloc.resources, use)

    @property
    def remaining(self) -> Resources:
        return self.alloc.resources - self.members_use


@dataclass(frozen=True, slots=True)
class NodeLedger:
    """A node's books: ordinary use, reservations, and what is left for non-members."""

    node: NodeInfo
    ordinary: Resources
    reservations: tuple[Reservation, ...]

    @property
    def reserved(self) -> Resources:
        reservations = self.reservations
        if len(reservations) == 1:
            return reservations[0].reserved
        total = ZERO
        for reservation in reservations:
            total = total + reservation.reserved
        return total

    @property
    def committed(self) -> Resources:
        return self.ordinary + self.reserved

    @property
    def free(self) -> Resources:
        """Capacity a non-member may use (A1)."""
        return self.node.allocatable - self.committed

    def physical_for(self, reservation: Reservation) -> Resources:
        """What a member of `reservation` may still take on the node physically, even if something
        overcommitted it (or a higher band's pod took the instance's room, A7): the allocatable less
        everything else on the node and what the instance's members already use."""
        held = self.ordinary + reservation.members_use
        for other in self.reservations:
            if other is not reservation:
                held = held + other.reserved
        return self.node.allocatable - held

    def free_for(self, priority: int) -> Resources:
        """Capacity a non-member of this priority may use: A7, a reservation is held at its band, so
        one the pod may preempt (R1/R2) holds back only what its members really use."""
        held = Resources()
        for reservation in self.reservations:
            if may_preempt(priority, reservation.alloc.priority):
                held = held + reservation.members_use
            else:
                held = held + reservation.reserved
        return self.node.allocatable - (self.ordinary + held)

    def reservation_for(self, alloc_key: str) -> Reservation | None:
        return next((r for r in self.reservations if r.alloc.key == alloc_key), None)


def ledger(node: NodeInfo, allocs: Iterable[AllocInfo], without: frozenset[str] = frozenset()) -> NodeLedger:
    """Book the node's pods (except the uids in `without`) against the allocs placed on it."""
    allocs = tuple(allocs)
    if not allocs and not without:
        # No reservation on the node (the common case): its pods' sum is already known.
        return NodeLedger(node=node, ordinary=node.requested, reservations=())
    if not node.pods:
        return NodeLedger(node=node, ordinary=ZERO, reservations=tuple(Reservation(a, ZERO) for a in allocs))
    keys = {alloc.key for alloc in allocs}
    ordinary_cpu = ordinary_mem = 0
    members: dict[str, list[int]] = {key: [0, 0] for key in keys}
    for pod in node.pods:
        if pod.uid in without:
            continue
        alloc_key = pod.alloc
        if alloc_key in keys:
            use = members[alloc_key]
            use[0] += pod.requests.cpu
            use[1] += pod.requests.memory
        else:
            ordinary_cpu += pod.requests.cpu
            ordinary_mem += pod.requests.memory
    return NodeLedger(
        node=node,
        ordinary=Resources(ordinary_cpu, ordinary_mem),
        reservations=tuple(Reservation(a, Resources(*members[a.key])) for a in allocs),
    )


def node_ledger(snapshot: CellSnapshot, node: NodeInfo, without: frozenset[str] = frozenset()) -> NodeLedger:
    return ledger(node, snapshot.allocs_on(node.name), without)


def _selector_mismatch(pod: PodInfo, node: NodeInfo) -> list[str]:
    return [f"node selector {key}={value} does not match (node has {node.labels.get(key, 'no such label')})"
            for key, value in pod.node_selector.items() if node.labels.get(key) != value]


def check_node(pod: PodInfo, snapshot: CellSnapshot, node: NodeInfo,
               without: frozenset[str] = frozenset()) -> Verdict:
    """Whether `pod` fits on `node` (pods with uids in `without` treated as gone, for preemption)."""
    return node_verdict(pod, node, snapshot.allocs_on(node.name), snapshot.allocs, without)


def node_verdict(pod: PodInfo, node: NodeInfo, allocs_here: tuple[AllocInfo, ...], allocs: Mapping[str, AllocInfo],
                 without: frozenset[str] = frozenset()) -> Verdict:
    """`check_node` given what it reads of the snapshot: the allocs placed on the node, and all allocs
    (so that a verdict can be worked out after the snapshot has moved on)."""
    reasons: list[str] = []
    if node.unschedulable:
        reasons.append("node is cordoned (unschedulable)")
    reasons.extend(_selector_mismatch(pod, node))
    resolvable = not reasons
    pod_count = sum(1 for p in node.pods if p.uid not in without) if without else len(node.pods)
    if pod_count + 1 > node.max_pods:
        reasons.append(f"too many pods: {pod_count} of {node.max_pods} slots used")
    books = ledger(node, allocs_here, without)
    alloc_key = pod.alloc
    if alloc_key is None:
        free = books.free_for(pod.priority) if books.reservations else books.free
        shortfall = pod.requests.shortfall(free)
        if shortfall:
            held = books.reserved
            note = f" (alloc reservations hold {held})" if not held.is_zero() else ""
            reasons.append("insufficient capacity outside allocs: " + ", ".join(shortfall) + note)
        if reasons:
            return Verdict(False, tuple(reasons), resolvable)
        return Verdict(True, (f"fits: {pod.requests} requested, {free} free",))

    alloc = allocs.get(alloc_key)
    if alloc is None:
        reasons.append(f"member of alloc {alloc_key}, which does not exist")
        return Verdict(False, tuple(reasons), resolvable=False)
    reservation = books.reservation_for(alloc_key)
    if reservation is None:
        where = ", ".join(alloc.nodes) or "none placed yet"
        reasons.append(f"not a node of alloc {alloc_key} (its instances: {where})")
        return Verdict(False, tuple(reasons), resolvable=False)
    remaining = reservation.remaining
    shortfall = pod.requests.shortfall(remaining)
    if shortfall:
        reasons.append(f"alloc {alloc_key} instance has too little left: " + ", ".join(shortfall))
    physical = books.physical_for(reservation)
    if not shortfall and not pod.requests.fits_in(physical):
        reasons.append("node overcommitted: " + ", ".join(pod.requests.shortfall(physical)))
    if reasons:
        return Verdict(False, tuple(reasons), resolvable)
    return Verdict(True, (f"fits in alloc {alloc_key}: {pod.requests} requested, {remaining} left in instance",))


def node_fits(pod: PodInfo, node: NodeInfo, allocs_here: tuple[AllocInfo, ...],
              allocs: Mapping[str, AllocInfo]) -> bool:
    """`node_verdict(...).fits` without writing the reasons (the scheduler's hot path; a verdict is
    worked out when someone reads it). The same checks in the same order; a test holds them together."""
    if node.unschedulable or len(node.pods) + 1 > node.max_pods:
        return False
    labels = node.labels
    for key, value in pod.node_selector.items():
        if labels.get(key) != value:
            return False
    books = ledger(node, allocs_here)
    requests = pod.requests
    alloc_key = pod.alloc
    if alloc_key is None:
        return requests.fits_in(books.free_for(pod.priority) if books.reservations else books.free)
    reservation = books.reservation_for(alloc_key) if allocs.get(alloc_key) is not None else None
    if reservation is None:
        return False
    if not requests.fits_in(reservation.remaining):
        return False
    return requests.fits_in(books.physical_for(reservation))


def alloc_instance_fits(alloc: AllocInfo, snapshot: CellSnapshot, node: NodeInfo) -> Verdict:
    """Whether a new instance of `alloc` fits on `node` (A1: it must fit beside everything else)."""
    reasons: list[str] = []
    if node.unschedulable:
        reasons.append("node is cordoned (unschedulable)")
    for key, value in alloc.node_selector.items():
        if node.labels.get(key) != value:
            reasons.append(f"node selector {key}={value} does not match")
    here = snapshot.allocs_on(node.name)
    others = tuple(a for a in here if a.key != alloc.key) if here else here
    # Book the node as if the instance were already there: members running here fall inside it.
    books = ledger(node, (*others, alloc))
    if not books.committed.fits_in(node.allocatable):
        free = ledger(node, others).free
        reasons.append(f"instance needs {alloc.resources}, node has {free} free")
    if reasons:
        return Verdict(False, tuple(reasons))
    return Verdict(True, ("fits",))

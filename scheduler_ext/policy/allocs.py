"""Alloc placement (SPEC §4, Borg §2.4): put an alloc set's instances on distinct nodes.

Pure: the operator passes the alloc (with the instances already placed) and a snapshot, and
writes back what comes out. Placed instances stay where they are (A3: a reservation is not
moved because something changed); only missing ones are placed. Instances that fit nowhere are
reported in the message (A6) and placed on a later call when capacity frees.

The alloc's status (phase, instances with their members' use, message) is also derived here, so
the operator only reads the cell and writes what these functions return.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from scheduler_ext.policy.bands import may_preempt
from scheduler_ext.policy.feasibility import Verdict, alloc_instance_fits, ledger
from scheduler_ext.policy.model import AllocInfo, AllocInstance, CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources

_TOO_SMALL = "instance needs "  # how alloc_instance_fits words a capacity shortfall

PENDING = "Pending"
PARTIALLY_RESERVED = "PartiallyReserved"
RESERVED = "Reserved"


@dataclass(frozen=True, slots=True)
class AllocPlacement:
    """The alloc's instances after placement, its phase, and a message for what did not fit."""

    instances: tuple[AllocInstance, ...]
    phase: str
    message: str

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(instance.node for instance in self.instances)


def phase_of(placed: int, count: int) -> str:
    if placed >= count:
        return RESERVED
    return PARTIALLY_RESERVED if placed else PENDING


def valid_instances(alloc: AllocInfo, nodes: Collection[str]) -> tuple[AllocInstance, ...]:
    """The recorded instances that still hold: index below count, on a node that exists, and the
    first one recorded for its index and for its node (an instance is never counted twice)."""
    seen_indices: set[int] = set()
    seen_nodes: set[str] = set()
    kept = []
    for instance in alloc.instances:
        if not 0 <= instance.index < alloc.count or instance.node not in nodes:
            continue
        if instance.index in seen_indices or instance.node in seen_nodes:
            continue
        seen_indices.add(instance.index)
        seen_nodes.add(instance.node)
        kept.append(instance)
    return tuple(kept)


def needs_placement(alloc: AllocInfo, nodes: Collection[str]) -> bool:
    """Whether the recorded instances differ from what should be held: some are missing or stale."""
    kept = valid_instances(alloc, nodes)
    return len(kept) != alloc.count or len(kept) != len(alloc.instances)


def _utilisation_after(alloc: AllocInfo, snapshot: CellSnapshot, node: NodeInfo) -> float:
    others = tuple(a for a in snapshot.allocs_on(node.name) if a.key != alloc.key)
    after = ledger(node, (*others, alloc)).committed
    cap = node.allocatable
    cpu = after.cpu / cap.cpu if cap.cpu else 1.0
    memory = after.memory / cap.memory if cap.memory else 1.0
    return (cpu + memory) / 2


def _summarise(reasons: dict[str, list[str]]) -> str:
    """"3 node(s): reason; 2 node(s): other reason", most common first."""
    ordered = sorted(reasons.items(), key=lambda item: (-len(item[1]), item[0]))
    return "; ".join(f"{len(nodes)} node(s): {reason}" for reason, nodes in ordered)


def place_alloc(alloc: AllocInfo, snapshot: CellSnapshot) -> AllocPlacement:
    """Place the alloc's missing instances; prod allocs spread (least allocated), others pack."""
    kept = list(valid_instances(alloc, snapshot.nodes))
    kept_indices = {i.index for i in kept}
    used_nodes = {i.node for i in kept}
    used_domains = {snapshot.nodes[i.node].labels.get(alloc.spread_by) for i in kept} if alloc.spread_by else set()
    missing = [index for index in range(alloc.count) if index not in kept_indices]

    rejected: dict[str, list[str]] = {}
    too_small: dict[str, Resources] = {}
    candidates: list[tuple[float, str, str | None]] = []
    for name in sorted(snapshot.nodes) if missing else ():
        node = snapshot.nodes[name]
        if name in used_nodes:
            continue
        domain = node.labels.get(alloc.spread_by) if alloc.spread_by else None
        if alloc.spread_by and domain is None:
            verdict = Verdict(False, (f"node has no {alloc.spread_by} label to spread by",))
        elif alloc.spread_by and domain in used_domains:
            verdict = Verdict(False, (f"{alloc.spread_by}={domain} already holds an instance",))
        else:
            verdict = alloc_instance_fits(alloc, snapshot, node)
        if not verdict.fits:
            # A node out for another reason is listed under that one alone. Capacity shortfalls differ
            # node by node only in the free amounts: one line for all of them.
            others = [r for r in verdict.reasons if not r.startswith(_TOO_SMALL)]
            if others:
                rejected.setdefault("; ".join(others), []).append(name)
            else:
                too_small[name] = ledger(node, tuple(a for a in snapshot.allocs_on(name) if a.key != alloc.key)).free
            continue
        usage = _utilisation_after(alloc, snapshot, node)
        candidates.append((usage if alloc.band.is_prod else -usage, name, domain))

    placed = list(kept)
    candidates.sort()
    for index in missing:
        choice = next((c for c in candidates if c[1] not in used_nodes
                       and (c[2] is None or c[2] not in used_domains)), None)
        if choice is None:
            break
        placed.append(AllocInstance(index, choice[1]))
        used_nodes.add(choice[1])
        if choice[2] is not None:
            used_domains.add(choice[2])
            # Nodes sharing that domain are now out, for the same reason as above.
            for _, name, domain in candidates:
                if domain == choice[2] and name not in used_nodes:
                    rejected.setdefault(f"{alloc.spread_by}={domain} already holds an instance", []).append(name)

    if too_small:
        most = Resources(max(f.cpu for f in too_small.values()), max(f.memory for f in too_small.values()))
        where = "node has" if len(too_small) == 1 else "nodes have at most"
        rejected[f"{_TOO_SMALL}{alloc.resources}, {where} {most} free"] = list(too_small)
    placed.sort(key=lambda i: i.index)
    unplaced = alloc.count - len(placed)
    if unplaced == 0:
        return AllocPlacement(tuple(placed), RESERVED, "")
    why = _summarise(rejected) or "no nodes in the cell"
    message = (f"{len(placed)} of {alloc.count} instance(s) of {alloc.resources} placed; "
               f"{unplaced} fit nowhere: {why}")
    return AllocPlacement(tuple(placed), phase_of(len(placed), alloc.count), message)


def squeezed_out(alloc: AllocInfo, snapshot: CellSnapshot, indices: Collection[int]) -> tuple[AllocInstance, ...]:
    """Of the instances with these indices (just placed), those whose node can no longer hold them.

    `snapshot` is the cell read again after the placement was recorded, with `alloc` as recorded:
    a pod bound to the node between the placement's snapshot and its write overcommits the node,
    and the instance must give the room back (A1 never holds on an overcommitted node).
    """
    out = []
    for instance in alloc.instances:
        if instance.index not in indices:
            continue
        node = snapshot.nodes.get(instance.node)
        if node is None:
            out.append(instance)
            continue
        others = tuple(a for a in snapshot.allocs_on(node.name) if a.key != alloc.key)
        if not ledger(node, (*others, alloc)).committed.fits_in(node.allocatable):
            out.append(instance)
    return tuple(out)


def preempted(alloc: AllocInfo, snapshot: CellSnapshot) -> tuple[AllocInstance, ...]:
    """A7: the instances whose node a higher band's pods took (R1/R2 let them preempt the alloc).

    Such a pod was placed as if the instance were not there; the node is now overcommitted with
    the instance counted, and the instance gives its room back (to be placed again, A6).
    """
    out = []
    for instance in alloc.instances:
        node = snapshot.nodes.get(instance.node)
        if node is None:
            continue
        if not any(may_preempt(pod.priority, alloc.priority) for pod in node.pods if pod.alloc != alloc.key):
            continue
        others = tuple(a for a in snapshot.allocs_on(node.name) if a.key != alloc.key)
        if not ledger(node, (*others, alloc)).committed.fits_in(node.allocatable):
            out.append(instance)
    return tuple(out)


def without_instances(alloc: AllocInfo, placement: AllocPlacement, dropped: Collection[AllocInstance],
                      reason: str) -> AllocPlacement:
    """The placement with `dropped` given back, and why (they are placed again on a later call)."""
    if not dropped:
        return placement
    kept = tuple(i for i in placement.instances if i not in dropped)
    where = ", ".join(f"{i.index} on {i.node}" for i in dropped)
    message = f"{len(kept)} of {alloc.count} instance(s) of {alloc.resources} placed; instance(s) {where}: {reason}"
    return AllocPlacement(kept, phase_of(len(kept), alloc.count), message)


def members_use(alloc: AllocInfo, members: Iterable[PodInfo]) -> dict[str, Resources]:
    """What the alloc's bound members request, per node (pods of other allocs are ignored)."""
    use: dict[str, Resources] = {}
    for pod in members:
        if pod.alloc == alloc.key and pod.node_name:
            use[pod.node_name] = use.get(pod.node_name, Resources()) + pod.requests
    return use


def alloc_status(alloc: AllocInfo, placement: AllocPlacement, members: Iterable[PodInfo],
                 generation: int | None = None) -> dict[str, Any]:
    """The Alloc's status as written to the API: phase, instances with `used`, message.

    `used` is what the members on that instance's node request (SPEC §4): at most the instance's
    resources when the extender kept them inside it.
    """
    use = members_use(alloc, members)
    status: dict[str, Any] = {
        "phase": placement.phase,
        "instances": [{"index": i.index, "node": i.node, "used": use.get(i.node, Resources()).to_dict()}
                      for i in sorted(placement.instances, key=lambda i: i.index)],
        "message": placement.message,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def releasing_status(alloc: AllocInfo, members_left: int, blocked: Collection[str] = (),
                     generation: int | None = None) -> dict[str, Any]:
    """The status of an alloc being deleted (A5): no instance is held, members are being evicted."""
    message = f"alloc {alloc.key} is being deleted: reservation released"
    if members_left:
        message += f"; evicting {members_left} member pod(s)"
    if blocked:
        message += f"; eviction refused for {', '.join(sorted(blocked))} (a PodDisruptionBudget), retrying"
    status: dict[str, Any] = {"phase": PENDING, "instances": [], "message": message}
    if generation is not None:
        status["observedGeneration"] = generation
    return status

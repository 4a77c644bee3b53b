"""Alloc placement (SPEC §4, Borg §2.4): put an alloc set's instances on distinct nodes.

Pure: the operator passes the alloc (with the instances already placed) and a snapshot, and
writes back what comes out. Placed instances stay where they are (A3: a reservation is not
moved because something changed); only missing ones are placed. Instances that fit nowhere are
reported in the message (A6) and placed on a later call when capacity frees.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_ext.policy.feasibility import Verdict, alloc_instance_fits, ledger
from scheduler_ext.policy.model import AllocInfo, AllocInstance, CellSnapshot, NodeInfo

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
    kept = [i for i in alloc.instances if i.index < alloc.count and i.node in snapshot.nodes]
    kept_indices = {i.index for i in kept}
    used_nodes = {i.node for i in kept}
    used_domains = {snapshot.nodes[i.node].labels.get(alloc.spread_by) for i in kept} if alloc.spread_by else set()
    missing = [index for index in range(alloc.count) if index not in kept_indices]

    rejected: dict[str, list[str]] = {}
    candidates: list[tuple[float, str, str | None]] = []
    for name in sorted(snapshot.nodes):
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
            rejected.setdefault(verdict.message, []).append(name)
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

    placed.sort(key=lambda i: i.index)
    unplaced = alloc.count - len(placed)
    if unplaced == 0:
        return AllocPlacement(tuple(placed), RESERVED, "")
    phase = PENDING if not placed else PARTIALLY_RESERVED
    why = _summarise(rejected) or "no nodes in the cell"
    message = (f"{len(placed)} of {alloc.count} instance(s) of {alloc.resources} placed; "
               f"{unplaced} fit nowhere: {why}")
    return AllocPlacement(tuple(placed), phase, message)

"""The cell's books by band and by node (what `cell top` shows): capacity, reservations, use.

Reservations are charged to their alloc's band (A4); a member's use is inside its reservation,
so it is shown as "in allocs" and not added to the band's ordinary use again.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.feasibility import node_ledger
from scheduler_ext.policy.model import CellSnapshot
from scheduler_ext.policy.resources import Resources


@dataclass(frozen=True, slots=True)
class BandUsage:
    band: Band
    pods: int
    requested: Resources  # pods outside allocs
    reserved: Resources  # alloc instances charged to this band
    in_allocs: Resources  # members' requests, inside the reservations above


@dataclass(frozen=True, slots=True)
class NodeUsage:
    name: str
    zone: str
    rack: str
    allocatable: Resources
    requested: Resources  # every pod on the node
    reserved: Resources  # alloc instances (at least their members' use)
    free: Resources  # what a non-member could still get
    pods: int
    max_pods: int
    by_band: dict[Band, Resources]


@dataclass(frozen=True, slots=True)
class CellUsage:
    capacity: Resources
    bands: tuple[BandUsage, ...]
    nodes: tuple[NodeUsage, ...]

    @property
    def free(self) -> Resources:
        total = Resources()
        for node in self.nodes:
            total = total + node.free
        return total


def cell_usage(snapshot: CellSnapshot) -> CellUsage:
    capacity = Resources()
    pods = dict.fromkeys(Band, 0)
    requested = dict.fromkeys(Band, Resources())
    in_allocs = dict.fromkeys(Band, Resources())
    reserved = dict.fromkeys(Band, Resources())
    nodes: list[NodeUsage] = []
    for name in sorted(snapshot.nodes, key=natural_order):
        node = snapshot.nodes[name]
        capacity = capacity + node.allocatable
        books = node_ledger(snapshot, node)
        by_band = dict.fromkeys(Band, Resources())
        members = {r.alloc.key for r in books.reservations}
        for pod in node.pods:
            band = pod.band
            pods[band] += 1
            by_band[band] = by_band[band] + pod.requests
            if pod.alloc in members:
                in_allocs[band] = in_allocs[band] + pod.requests
            else:
                requested[band] = requested[band] + pod.requests
        for reservation in books.reservations:
            band = reservation.alloc.band
            reserved[band] = reserved[band] + reservation.reserved
        nodes.append(NodeUsage(name, node.zone, node.rack, node.allocatable, node.requested, books.reserved,
                               books.free, len(node.pods), node.max_pods, by_band))
    bands = tuple(BandUsage(band, pods[band], requested[band], reserved[band], in_allocs[band])
                  for band in sorted(Band, reverse=True))
    return CellUsage(capacity, bands, tuple(nodes))


def natural_order(name: str) -> tuple[str, int, str]:
    """node-2 before node-10."""
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return (head, int(tail) if tail else -1, name)

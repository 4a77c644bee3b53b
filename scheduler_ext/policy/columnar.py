"""A snapshot's nodes as columns: the numbers feasibility and the resource score read, one numpy
array per quantity, one slot per node.

The scheduler's score cache (`scheduler.PolicyCache`) keeps one equivalence class's results as
columns over the same slots, so that a class is checked and scored over a run of candidate machines
in a few array operations instead of a Python loop per machine (Borg §3.4 describes the same cache;
the columns only change how it is stored and filled). The arithmetic is the scalar code's, operation
for operation, so every result is bit-identical (`scoring.resource_scores`, tested).

- `NodeTable`: slot numbers of a snapshot's nodes, in the snapshot's order. Snapshots derived from
  one another (`CellSnapshot.derive`, `CellState.bind`) share it while the node set and its order
  stay the same, and so does every class's column.
- `NodeArrays`: the per-slot numbers of one snapshot. Immutable snapshots never change theirs (a
  derived snapshot gets a copy with its changed slots rewritten); a `CellState` rewrites its own in
  place as it binds and evicts.

A slot's `ids` entry is the `id()` of the NodeInfo it describes; `nodes` holds that NodeInfo, so the
id cannot be reused while the entry exists. A column's entry is valid exactly while its id equals
the snapshot's, which is the identity check the scalar cache made per node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from scheduler_ext.policy.objects import AllocInfo, NodeInfo

Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Objects = npt.NDArray[Any]


class NodeTable:
    """Node name <-> slot, and zone/rack name <-> small integer (grown as new ones appear)."""

    __slots__ = ("index", "names", "racks", "zones")

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.index = {name: slot for slot, name in enumerate(names)}
        self.zones: dict[str, int] = {}
        self.racks: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.names)

    def zone_id(self, zone: str) -> int:
        found = self.zones.get(zone)
        if found is None:
            found = self.zones[zone] = len(self.zones)
        return found

    def rack_id(self, rack: str) -> int:
        found = self.racks.get(rack)
        if found is None:
            found = self.racks[rack] = len(self.racks)
        return found

    def slots(self, names: Iterable[str]) -> Ints:
        """Each name's slot, -1 for a name not in the table."""
        get = self.index.get
        return np.array([get(name, -1) for name in names], dtype=np.int64)


class NodeArrays:
    """One snapshot's nodes, slot by slot: identity, capacity, use, pod slots, cordon, zone and rack."""

    __slots__ = ("_committed", "_reserved", "cap_cpu", "cap_mem", "closed", "ids", "max_pods", "nodes", "pods",
                 "rack", "table", "used_cpu", "used_mem", "zone")

    table: NodeTable
    ids: Ints
    nodes: Objects
    cap_cpu: Ints
    cap_mem: Ints
    used_cpu: Ints
    used_mem: Ints
    pods: Ints
    max_pods: Ints
    closed: Bools
    zone: Ints
    rack: Ints
    _reserved: tuple[object, Bools] | None
    _committed: _Committed | None

    @classmethod
    def build(cls, nodes: Mapping[str, NodeInfo]) -> NodeArrays:
        table = NodeTable(list(nodes))
        infos = list(nodes.values())
        arrays = cls()
        arrays.table = table
        arrays.ids = np.array([id(n) for n in infos], dtype=np.int64)
        arrays.nodes = np.empty(len(infos), dtype=object)
        arrays.nodes[:] = infos
        arrays.cap_cpu = np.array([n.allocatable.cpu for n in infos], dtype=np.int64)
        arrays.cap_mem = np.array([n.allocatable.memory for n in infos], dtype=np.int64)
        arrays.used_cpu = np.array([n.requested.cpu for n in infos], dtype=np.int64)
        arrays.used_mem = np.array([n.requested.memory for n in infos], dtype=np.int64)
        arrays.pods = np.array([len(n.pods) for n in infos], dtype=np.int64)
        arrays.max_pods = np.array([n.max_pods for n in infos], dtype=np.int64)
        arrays.closed = np.array([n.unschedulable for n in infos], dtype=np.bool_)
        arrays.zone = np.array([table.zone_id(n.zone) for n in infos], dtype=np.int64)
        arrays.rack = np.array([table.rack_id(n.rack) for n in infos], dtype=np.int64)
        arrays._reserved = None
        arrays._committed = None
        return arrays

    def copy(self) -> NodeArrays:
        """Another snapshot's arrays: the same table, copies of the numbers."""
        other = NodeArrays()
        other.table = self.table
        for name in ("ids", "nodes", "cap_cpu", "cap_mem", "used_cpu", "used_mem", "pods", "max_pods", "closed",
                     "zone", "rack"):
            setattr(other, name, getattr(self, name).copy())
        other._reserved = self._reserved
        other._committed = self._committed.copy() if self._committed is not None else None
        return other

    def set(self, slot: int, node: NodeInfo) -> None:
        """Slot `slot` now holds `node` (a new version of the node there)."""
        self.ids[slot] = id(node)
        self.nodes[slot] = node
        self.cap_cpu[slot] = node.allocatable.cpu
        self.cap_mem[slot] = node.allocatable.memory
        self.used_cpu[slot] = node.requested.cpu
        self.used_mem[slot] = node.requested.memory
        self.pods[slot] = len(node.pods)
        self.max_pods[slot] = node.max_pods
        self.closed[slot] = node.unschedulable
        self.zone[slot] = self.table.zone_id(node.zone)
        self.rack[slot] = self.table.rack_id(node.rack)
        if self._committed is not None:
            self._committed.set(slot, node)

    def set_pods(self, slot: int, node: NodeInfo) -> None:
        """`set` for a node whose pods alone changed (a bind or an eviction)."""
        self.ids[slot] = id(node)
        self.nodes[slot] = node
        self.used_cpu[slot] = node.requested.cpu
        self.used_mem[slot] = node.requested.memory
        self.pods[slot] = len(node.pods)
        if self._committed is not None:
            self._committed.set(slot, node)

    def derived(self, nodes: Mapping[str, NodeInfo], changed: Iterable[str]) -> NodeArrays | None:
        """The arrays of a successor whose nodes differ from these only in `changed`; None when the
        node set or its order differ (the successor then builds its own table)."""
        table = self.table
        if len(nodes) != len(table.names) or list(nodes) != table.names:
            return None
        other = self.copy()
        index = table.index
        for name in changed:
            slot = index.get(name)
            if slot is not None:  # None: a node that came and went between the two snapshots
                other.set(slot, nodes[name])
        return other

    def reserved(self, allocs: object, by_node: Mapping[str, tuple[AllocInfo, ...]]) -> Bools:
        """Slots of nodes holding an alloc instance (their books need the scalar ledger), for the
        snapshot's `allocs` mapping (`by_node` is its index); kept while the mapping object is."""
        cached = self._reserved
        if cached is not None and cached[0] is allocs:
            return cached[1]
        mask = np.zeros(len(self.table), dtype=np.bool_)
        index = self.table.index
        for name, here in by_node.items():
            slot = index.get(name)
            if slot is not None and here:
                mask[slot] = True
        self._reserved = (allocs, mask)
        return mask

    def committed(self, allocs: object, by_node: Mapping[str, tuple[AllocInfo, ...]],
                  books: Callable[[NodeInfo, tuple[AllocInfo, ...]], tuple[int, int]]) -> tuple[Ints, Ints]:
        """What each node has committed (ordinary use plus reservations, what a non-member is
        checked and scored against), for the snapshot's `allocs` mapping; `books(node, allocs_here)`
        works it out for a node holding instances (the scalar ledger). Kept while the mapping object
        is, and rewritten with the slots that change."""
        cached = self._committed
        if cached is None or cached.allocs is not allocs:
            cached = self._committed = _Committed(self, allocs, by_node, books)
        return cached.cpu, cached.mem


class _Committed:
    """`NodeArrays.committed` for one allocs mapping: the nodes' use, with the reserved slots' books."""

    __slots__ = ("allocs", "books", "by_node", "cpu", "mem")

    def __init__(self, arrays: NodeArrays | None, allocs: object, by_node: Mapping[str, tuple[AllocInfo, ...]],
                 books: Callable[[NodeInfo, tuple[AllocInfo, ...]], tuple[int, int]]) -> None:
        self.allocs = allocs
        self.by_node = by_node
        self.books = books
        if arrays is None:
            return
        self.cpu = arrays.used_cpu.copy()
        self.mem = arrays.used_mem.copy()
        index = arrays.table.index
        for name, here in by_node.items():
            slot = index.get(name)
            if slot is not None and here:
                self.cpu[slot], self.mem[slot] = books(arrays.nodes[slot], here)

    def copy(self) -> _Committed:
        other = _Committed(None, self.allocs, self.by_node, self.books)
        other.cpu = self.cpu.copy()
        other.mem = self.mem.copy()
        return other

    def set(self, slot: int, node: NodeInfo) -> None:
        here = self.by_node.get(node.name)
        if here:
            self.cpu[slot], self.mem[slot] = self.books(node, here)
        else:
            self.cpu[slot] = node.requested.cpu
            self.mem[slot] = node.requested.memory

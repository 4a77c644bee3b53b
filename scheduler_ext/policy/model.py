"""The cell state the policy decides on: an immutable snapshot of nodes, pods and allocs.

The objects themselves (`PodInfo`, `NodeInfo`, `AllocInfo`) are `policy.objects`, re-exported here
for the modules that read them with the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from scheduler_ext.policy.columnar import Ints, NodeArrays
from scheduler_ext.policy.objects import (
    ALLOC_LABEL,
    HOSTNAME_LABEL,
    RACK_LABEL,
    TERMINAL_PHASES,
    ZONE_LABEL,
    AllocInfo,
    AllocInstance,
    NodeInfo,
    PodInfo,
    ServiceInfo,
    effective_requests,
    job_key,
)

# Re-exported: the modules that read a snapshot read its objects with it.
__all__ = [
    "ALLOC_LABEL", "HOSTNAME_LABEL", "RACK_LABEL", "TERMINAL_PHASES", "ZONE_LABEL", "AllocInfo", "AllocInstance",
    "CellSnapshot", "DomainCounts", "NodeInfo", "PodInfo", "ServiceInfo", "effective_requests", "job_key",
]

@dataclass(frozen=True, slots=True)
class DomainCounts:
    """How many pods of one job sit in each zone and rack (for spreading the job)."""

    zones: Mapping[str, int]
    racks: Mapping[str, int]
    max_zone: int
    max_rack: int

    @classmethod
    def of(cls, zones: dict[str, int], racks: dict[str, int]) -> DomainCounts:
        zones = {k: v for k, v in zones.items() if v}
        racks = {k: v for k, v in racks.items() if v}
        return cls(zones, racks, max(zones.values(), default=0), max(racks.values(), default=0))


_CARRIED_JOBS = 32  # jobs whose spread counts a derived snapshot keeps up to date


class CellSnapshot:
    """An immutable view of the cell. Derived indexes are computed once, on first use.

    `allocs` is held as given: adapters that keep the same allocs mapping object across
    snapshots let the score cache know that no reservation changed (see `scheduler.PolicyCache`).
    """

    __slots__ = ("_allocs_by_node", "_arrays", "_domains", "_pods_by_uid", "allocs", "nodes")

    nodes: Mapping[str, NodeInfo]
    allocs: Mapping[str, AllocInfo]
    _allocs_by_node: dict[str, tuple[AllocInfo, ...]] | None
    _arrays: NodeArrays | None
    _domains: dict[str, DomainCounts]
    _pods_by_uid: dict[str, PodInfo] | None

    def __init__(self, nodes: Mapping[str, NodeInfo] | Iterable[NodeInfo],
                 allocs: Mapping[str, AllocInfo] | Iterable[AllocInfo] = ()) -> None:
        node_map = dict(nodes) if isinstance(nodes, Mapping) else {n.name: n for n in nodes}
        alloc_map = allocs if isinstance(allocs, MappingProxyType) else MappingProxyType(
            dict(allocs) if isinstance(allocs, Mapping) else {a.key: a for a in allocs})
        object.__setattr__(self, "nodes", MappingProxyType(node_map))
        object.__setattr__(self, "allocs", alloc_map)
        object.__setattr__(self, "_allocs_by_node", None)
        object.__setattr__(self, "_arrays", None)
        object.__setattr__(self, "_domains", {})
        object.__setattr__(self, "_pods_by_uid", None)

    @classmethod
    def derive(cls, previous: CellSnapshot, nodes: Mapping[str, NodeInfo], allocs: Mapping[str, AllocInfo],
               changed: Iterable[str]) -> CellSnapshot:
        """A successor of `previous` where only the nodes named in `changed` differ.

        The per-job domain counts of recently used jobs are carried over and adjusted for the
        changed nodes instead of being recounted over the whole cell, and so are the node columns
        (`arrays`), with only the changed slots rewritten.
        """
        snapshot = cls(nodes, allocs)
        changed = list(changed)
        if previous._arrays is not None:
            object.__setattr__(snapshot, "_arrays", previous._arrays.derived(snapshot.nodes, changed))
        versions = [(previous.nodes.get(name), snapshot.nodes.get(name)) for name in changed]
        # Only jobs whose count changed on a changed node need new counts; the rest are shared.
        touched: set[str] = set()
        for before, after in versions:
            old_counts = before.job_counts if before is not None else {}
            new_counts = after.job_counts if after is not None else {}
            moved = (before is not None and after is not None
                     and (before.zone != after.zone or before.rack != after.rack))
            touched.update(job for job in old_counts.keys() | new_counts.keys()
                           if moved or old_counts.get(job) != new_counts.get(job))
        carried = list(previous._domains.items())[-_CARRIED_JOBS:]
        for job, counts in carried:
            if job in touched:
                zones, racks = dict(counts.zones), dict(counts.racks)
                for before, after in versions:
                    for node, sign in ((before, -1), (after, 1)):
                        count = node.job_counts.get(job) if node is not None else None
                        if count:
                            zones[node.zone] = zones.get(node.zone, 0) + sign * count  # type: ignore[union-attr]
                            racks[node.rack] = racks.get(node.rack, 0) + sign * count  # type: ignore[union-attr]
                counts = DomainCounts.of(zones, racks)
            snapshot._domains[job] = counts
        return snapshot

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CellSnapshot is immutable")

    @classmethod
    def from_manifests(cls, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                       allocs: Iterable[Mapping[str, Any]] = ()) -> CellSnapshot:
        """From API objects: Node, Pod and Alloc dicts. Pending and terminal pods are left out."""
        by_node: dict[str, list[PodInfo]] = {}
        for manifest in pods:
            if not PodInfo.is_active(manifest):
                continue
            pod = PodInfo.from_manifest(manifest)
            if pod.node_name:
                by_node.setdefault(pod.node_name, []).append(pod)
        node_infos = [NodeInfo.from_manifest(n, by_node.get((n.get("metadata") or {}).get("name", ""), ()))
                      for n in nodes]
        return cls(node_infos, [AllocInfo.from_manifest(a) for a in allocs])

    def allocs_on(self, node: str) -> tuple[AllocInfo, ...]:
        """Allocs with an instance placed on `node`."""
        return self.allocs_index().get(node, ())

    def allocs_index(self) -> Mapping[str, tuple[AllocInfo, ...]]:
        """Node name -> allocs with an instance there (only nodes that hold one), built on first use."""
        index = self._allocs_by_node
        if index is None:
            built: dict[str, list[AllocInfo]] = {}
            for alloc in self.allocs.values():
                for instance in alloc.instances:
                    built.setdefault(instance.node, []).append(alloc)
            index = {name: tuple(allocs) for name, allocs in built.items()}
            object.__setattr__(self, "_allocs_by_node", index)
        return index

    def arrays(self) -> NodeArrays:
        """The nodes as columns (`columnar.NodeArrays`), built on first use (O(nodes) once; a derived
        snapshot copies its predecessor's instead)."""
        arrays = self._arrays
        if arrays is None:
            arrays = NodeArrays.build(self.nodes)
            object.__setattr__(self, "_arrays", arrays)
        return arrays

    def job_domains(self, job: str) -> DomainCounts:
        """Per-zone and per-rack pod counts of one job, memoized per snapshot."""
        cached = self._domains.pop(job, None)
        if cached is not None:
            self._domains[job] = cached  # most recently used last: `derive` carries the tail
            return cached
        zones: dict[str, int] = {}
        racks: dict[str, int] = {}
        for node in self.nodes.values():
            count = node.job_counts.get(job)
            if count:
                zones[node.zone] = zones.get(node.zone, 0) + count
                racks[node.rack] = racks.get(node.rack, 0) + count
        result = DomainCounts.of(zones, racks)
        self._domains[job] = result
        return result

    def job_spread(self, job: str) -> tuple[Ints, Ints, int, int]:
        """`job_domains(job)` as arrays over the node table's zone and rack ids (`arrays().table`):
        the job's pod count per zone, per rack, and the largest of each (0: no pod of the job runs)."""
        domains = self.job_domains(job)
        table = self.arrays().table
        zone_ids = [(table.zone_id(zone), count) for zone, count in domains.zones.items()]
        rack_ids = [(table.rack_id(rack), count) for rack, count in domains.racks.items()]
        zones = np.zeros(len(table.zones), dtype=np.int64)
        racks = np.zeros(len(table.racks), dtype=np.int64)
        for at, count in zone_ids:
            zones[at] = count
        for at, count in rack_ids:
            racks[at] = count
        return zones, racks, domains.max_zone, domains.max_rack

    def pods(self) -> Iterable[PodInfo]:
        for node in self.nodes.values():
            yield from node.pods

    def find_pod(self, uid: str) -> PodInfo | None:
        """A bound pod by uid (index built on first use)."""
        index = self._pods_by_uid
        if index is None:
            index = {pod.uid: pod for pod in self.pods()}
            object.__setattr__(self, "_pods_by_uid", index)
        return index.get(uid)

    def with_nodes(self, *nodes: NodeInfo) -> CellSnapshot:
        """A new snapshot with these nodes replaced (or added); allocs are shared."""
        updated = dict(self.nodes)
        for node in nodes:
            updated[node.name] = node
        return CellSnapshot.derive(self, updated, self.allocs, (node.name for node in nodes))

    def with_pod_bound(self, pod: PodInfo, node: str) -> CellSnapshot:
        """The snapshot after binding `pod` to `node` (what the simulator does after a decision)."""
        bound = PodInfo(pod.namespace, pod.name, pod.uid, pod.priority, pod.requests, pod.labels,
                        pod.owner, node, pod.node_selector)
        return self.with_nodes(self.nodes[node].with_pod(bound))

    def with_allocs(self, allocs: Iterable[AllocInfo]) -> CellSnapshot:
        snapshot = CellSnapshot(self.nodes, allocs)
        if type(self) is CellSnapshot:  # the same nodes, and a snapshot's arrays never change (a CellState's do)
            object.__setattr__(snapshot, "_arrays", self._arrays)
        return snapshot

"""A cell that advances in place, for passes that place many pods in a row (the Fauxmaster).

`CellSnapshot.with_pod_bound` copies the node map (O(nodes)) and `Scheduler.filter` lists the
nodes relaxed randomization did not examine (O(nodes)): right for the extender, which answers one
pod per request against a fresh snapshot, but 10,000 machines x 100,000 tasks makes that the whole
cost of a from-scratch pass. This module removes those two O(nodes) steps and nothing else:

- `CellState` is a `CellSnapshot` whose node map is a live view: binding a pod replaces that one
  node's `NodeInfo` and its slot in the node columns (so the score cache's identity check still
  sees exactly what changed) and adjusts the job's zone/rack counts, instead of copying the cell.
- `IncrementalScheduler` is `Scheduler` with the same filter, random order, cache lookups and
  ranking; only its `filter` does not list the nodes it skipped, so a placed pod's decision
  keeps the verdicts of the nodes examined. It can also switch equivalence classes off (each task
  its own class), for measuring what they buy.

Given the same rng seed, placing pods one by one here yields the same decisions as
`Scheduler.schedule` + `with_pod_bound` (tested).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from scheduler_ext.policy.columnar import Ints
from scheduler_ext.policy.model import AllocInfo, CellSnapshot, DomainCounts, NodeInfo, PodInfo
from scheduler_ext.policy.scheduler import (
    EquivalenceClass,
    PolicyCache,
    Scheduler,
)

_SPREAD_JOBS = 64  # jobs whose zone/rack counts a CellState keeps as arrays


class CellState(CellSnapshot):
    """A snapshot owned by one pass and advanced in place with `bind`, `evict` and `put_alloc`.

    Every policy function takes it where it takes a `CellSnapshot`. Anything that must not change
    under it (a report, a reference run) takes `freeze()`.
    """

    __slots__ = ("_counts", "_live", "_spread")

    _live: dict[str, NodeInfo]
    _counts: dict[str, tuple[dict[str, int], dict[str, int]]]
    _spread: dict[str, list[Any]]  # jobs ranked lately: [zone counts, rack counts, max zone, max rack]

    def __init__(self, start: CellSnapshot) -> None:
        live = dict(start.nodes)
        super().__init__(live, start.allocs)
        object.__setattr__(self, "_live", live)
        object.__setattr__(self, "nodes", MappingProxyType(live))  # read-only for others, current for us
        counts: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
        for node in live.values():
            for job, count in node.job_counts.items():
                zones, racks = counts.setdefault(job, ({}, {}))
                zones[node.zone] = zones.get(node.zone, 0) + count
                racks[node.rack] = racks.get(node.rack, 0) + count
        object.__setattr__(self, "_counts", counts)
        object.__setattr__(self, "_spread", {})
        object.__setattr__(self, "_pods_by_uid", {pod.uid: pod for node in live.values() for pod in node.pods})
        # Its own columns, rewritten slot by slot as it advances (a snapshot's never change).
        object.__setattr__(self, "_arrays", start._arrays.copy() if start._arrays is not None else None)

    def freeze(self) -> CellSnapshot:
        """An immutable copy of the state as it is now."""
        frozen = CellSnapshot(dict(self._live), self.allocs)
        if self._arrays is not None:
            object.__setattr__(frozen, "_arrays", self._arrays.copy())
        return frozen

    def _replace(self, node: NodeInfo) -> None:
        """The node's new version (only its pods differ)."""
        self._live[node.name] = node
        arrays = self._arrays
        if arrays is not None:
            arrays.set_pods(arrays.table.index[node.name], node)

    def job_domains(self, job: str) -> DomainCounts:
        cached = self._domains.get(job)
        if cached is None:
            zones, racks = self._counts.get(job, ({}, {}))
            cached = self._domains[job] = DomainCounts.of(zones, racks)
        return cached

    def job_spread(self, job: str) -> tuple[Ints, Ints, int, int]:
        spread = self._spread.get(job)
        if spread is None:
            spread = self._spread[job] = list(super().job_spread(job))
            if len(self._spread) > _SPREAD_JOBS:
                del self._spread[next(iter(self._spread))]
        return spread[0], spread[1], spread[2], spread[3]

    def _count(self, node: NodeInfo, pod: PodInfo, sign: int) -> None:
        zones, racks = self._counts.setdefault(pod.owner, ({}, {}))
        zones[node.zone] = zones.get(node.zone, 0) + sign
        racks[node.rack] = racks.get(node.rack, 0) + sign
        self._domains.pop(pod.owner, None)
        spread = self._spread.get(pod.owner)
        if spread is not None:
            table = self.arrays().table
            zone, rack = table.zone_id(node.zone), table.rack_id(node.rack)
            zones, racks = spread[0], spread[1]
            if zone >= len(zones) or rack >= len(racks) or sign < 0:
                # A zone or rack the arrays were not sized for, or a count that fell: count afresh.
                del self._spread[pod.owner]
                return
            zones[zone] += 1
            racks[rack] += 1
            spread[2] = max(spread[2], int(zones[zone]))
            spread[3] = max(spread[3], int(racks[rack]))

    def bind(self, pod: PodInfo, node_name: str) -> PodInfo:
        """Put `pod` on `node_name` (no feasibility check: the caller decided); returns the bound pod."""
        node = self._live[node_name]
        bound = PodInfo(pod.namespace, pod.name, pod.uid, pod.priority, pod.requests, pod.labels,
                        pod.owner, node_name, pod.node_selector)
        self._replace(node.with_pod(bound))
        self._count(node, bound, 1)
        assert self._pods_by_uid is not None
        self._pods_by_uid[bound.uid] = bound
        return bound

    def evict(self, uids: Iterable[str]) -> list[PodInfo]:
        """Remove the pods with these uids from their nodes; returns the pods removed."""
        assert self._pods_by_uid is not None
        gone = [pod for pod in (self._pods_by_uid.pop(uid, None) for uid in set(uids)) if pod is not None]
        by_node: dict[str, set[str]] = {}
        for pod in gone:
            by_node.setdefault(pod.node_name or "", set()).add(pod.uid)
        for name, on_node in by_node.items():
            node = self._live[name]
            for pod in node.pods:
                if pod.uid in on_node:
                    self._count(node, pod, -1)
            self._replace(node.without_pods(on_node))
        return gone

    def put_alloc(self, alloc: AllocInfo) -> None:
        """Add or replace an alloc; a new mapping object tells the score cache reservations changed."""
        allocs = dict(self.allocs)
        allocs[alloc.key] = alloc
        object.__setattr__(self, "allocs", MappingProxyType(allocs))
        object.__setattr__(self, "_allocs_by_node", None)


@dataclass(frozen=True, slots=True)
class TaskClass(EquivalenceClass):
    """A class of one task: the cache key when equivalence classes are switched off."""

    task: str

    @classmethod
    def of_task(cls, pod: PodInfo) -> TaskClass:
        base = EquivalenceClass.of(pod)
        return cls(base.requests, base.prod, base.alloc, base.node_selector, pod.uid or pod.key)


class IncrementalScheduler(Scheduler):
    """`Scheduler` for long passes: a placed pod costs the nodes examined, not the nodes in the cell.

    Only `filter` differs: it does not list the nodes it skipped (a test holds the two to the same
    decisions). Ranking and `schedule` are the base class's. `equivalence_classes=False` keys the
    score cache by task instead of by class (Borg §3.4 without its first technique); with
    `cache=None` it makes no difference.
    """

    list_unexamined = False

    def __init__(self, cache: PolicyCache | None = None, enough_feasible: int | None = None,
                 rng: random.Random | None = None, equivalence_classes: bool = True) -> None:
        super().__init__(cache, enough_feasible, rng)
        self.equivalence_classes = equivalence_classes

    def classify(self, pod: PodInfo) -> EquivalenceClass:
        """The key results for `pod` are shared under: its class, or the task itself."""
        return EquivalenceClass.of(pod) if self.equivalence_classes else TaskClass.of_task(pod)

"""Borg's scheduling pass with its scalability techniques (Borg §3.4), over an immutable snapshot.

- Equivalence classes: pods that agree on everything feasibility and the resource score read
  (requests, prod or not, alloc membership, node selector) share those results.
- Score caching: (class, node) results are kept until the node or the cell's allocs change; a
  changed node is a new `NodeInfo` object, so validity is an identity check (the cache entry
  holds the old object, so its identity cannot be reused).
- Relaxed randomization: nodes are examined in random order until enough feasible ones are
  found; the rest are left unexamined rather than failed.

The job-spread part of a score depends on the job's other pods, so it is never cached: it is
read from the snapshot's memoized per-job domain counts.

Scores reach kube-scheduler as integers 0..10 (`Ranking.wire`): the node Cell would pick gets 10 and
every other node its score scaled into 0..9. kube-scheduler adds the extender's score to its own
plugins' and takes the highest, so Cell's pick wins unless a user preference (affinity) outweighs
it, and ties among equally good nodes are broken here, the way `schedule` breaks them. That is
what lets the extender assume where a pod goes before the binding is seen (extender/cache.py).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from scheduler_ext.policy.columnar import Bools, Floats, Ints, NodeArrays, NodeTable, Objects
from scheduler_ext.policy.feasibility import Verdict, check_node, ledger, node_fits, node_ledger, node_verdict
from scheduler_ext.policy.model import AllocInfo, CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.scoring import (
    MAX_SCORE,
    combine_many,
    plain_resource_score,
    resource_score,
    resource_scores,
    spread_scores,
)

NOT_EXAMINED = Verdict(False, ("not examined: enough feasible nodes were found first (relaxed randomization)",))
UNKNOWN_NODE = Verdict(False, ("node not (yet) known to Cell's scheduler cache",))


@dataclass(frozen=True, slots=True)
class EquivalenceClass:
    """Exactly the pod attributes that feasibility and the resource score depend on."""

    requests: Resources
    prod: bool
    alloc: str | None
    node_selector: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, pod: PodInfo) -> EquivalenceClass:
        return cls(pod.requests, pod.band.is_prod, pod.alloc, tuple(sorted(pod.node_selector.items())))


@dataclass(slots=True)
class _Entry:
    """One (class, node) result, as `PolicyCache.lookup` returns it."""

    node: NodeInfo
    allocs: Mapping[str, object]
    verdict: Verdict
    resource: float


class _Column:
    """One equivalence class's results over one node table, a slot per node: valid in a slot while
    `ids` there is the id of the snapshot's node (`refs` holds that node, so the id stays unique).
    Verdicts are worked out when first read (`verdicts`: slot -> the node it is for, its verdict)."""

    __slots__ = ("allocs", "fits", "ids", "refs", "resource", "table", "verdicts")

    def __init__(self, table: NodeTable, allocs: Mapping[str, object]) -> None:
        size = len(table)
        self.table = table
        self.allocs = allocs
        self.ids: Ints = np.zeros(size, dtype=np.int64)
        self.refs: Objects = np.empty(size, dtype=object)
        self.fits: Bools = np.zeros(size, dtype=np.bool_)
        self.resource: Floats = np.zeros(size, dtype=np.float64)
        self.verdicts: dict[int, tuple[NodeInfo, Verdict]] = {}

    def held(self) -> int:
        return int(np.count_nonzero(self.ids))

    def drop(self, slot: int) -> None:
        self.ids[slot] = 0
        self.refs[slot] = None
        self.verdicts.pop(slot, None)


class PolicyCache:
    """(equivalence class, node) -> verdict and resource score, LRU-bounded in classes.

    Each class's results are a `_Column` over the snapshot's node table; a class whose column was
    built for another table (the node set changed) or other allocs starts afresh.
    """

    def __init__(self, max_classes: int = 256) -> None:
        self._classes: OrderedDict[EquivalenceClass, _Column] = OrderedDict()
        self._max_classes = max_classes
        self.hits = 0
        self.misses = 0

    def column(self, eclass: EquivalenceClass, table: NodeTable, allocs: Mapping[str, object]) -> _Column:
        """The class's column for this table and these allocs (touched once per request, not per node)."""
        column = self._classes.get(eclass)
        if column is None:
            column = self._classes[eclass] = _Column(table, allocs)
            if len(self._classes) > self._max_classes:
                self._classes.popitem(last=False)
            return column
        self._classes.move_to_end(eclass)
        if column.table is not table or column.allocs is not allocs:
            column = self._classes[eclass] = _Column(table, allocs)
        return column

    def lookup(self, pod: PodInfo, eclass: EquivalenceClass, snapshot: CellSnapshot, node: NodeInfo) -> _Entry:
        """One node's result through the cache."""
        arrays = snapshot.arrays()
        slot = arrays.table.index.get(node.name)
        if slot is None or arrays.nodes[slot] is not node:
            self.misses += 1
            return _evaluate(pod, snapshot, node)  # not this snapshot's node: nothing to keep it under
        column = self.column(eclass, arrays.table, snapshot.allocs)
        slots = np.array([slot], dtype=np.int64)
        fits, resource, _, hits, misses = _lookup(pod, snapshot, arrays, column, slots, None, True)
        self.hits += hits
        self.misses += misses
        examined = _Examined(pod, snapshot, column, slots, fits, arrays.nodes[slots], [node.name])
        return _Entry(node, snapshot.allocs, examined.at(0), float(resource[0]))

    def invalidate(self, node: str | None = None) -> None:
        """Drop cached results for one node (or all); identity checks make this optional."""
        if node is None:
            self._classes.clear()
            return
        for column in self._classes.values():
            slot = column.table.index.get(node)
            if slot is not None:
                column.drop(slot)

    def __len__(self) -> int:
        return sum(column.held() for column in self._classes.values())


def _evaluate(pod: PodInfo, snapshot: CellSnapshot, node: NodeInfo) -> _Entry:
    """One node's result, scalar (the reference the columns are tested against)."""
    verdict = check_node(pod, snapshot, node)
    resource = resource_score(pod, node_ledger(snapshot, node)) if verdict.fits else 0.0
    return _Entry(node, snapshot.allocs, verdict, resource)


def _evaluate_slots(pod: PodInfo, snapshot: CellSnapshot, arrays: NodeArrays, slots: Ints) -> tuple[Bools, Floats]:
    """Whether `pod` fits on the nodes in `slots`, and their resource scores (0 where it does not fit).

    A pod outside allocs on a node without reservations (nearly every case) is decided on the
    node's numbers: cordon, pod slots, cpu and memory left; many such nodes at once on the columns.
    Nodes holding an alloc instance, and an alloc member's own instance nodes, take the scalar
    ledger (`node_fits`). Verdicts (the reasons) are worked out only when read (`_Examined`).
    """
    if len(slots) <= _SCALAR_AT_MOST:
        return _evaluate_few(pod, snapshot, arrays, slots)
    allocs = snapshot.allocs
    by_node = snapshot.allocs_index()
    alloc_key = pod.alloc
    if alloc_key is None:
        # Checked and scored against what each node has committed: its use, plus the reservations
        # of the alloc instances it holds (A1), as the scalar ledger books them.
        requests = pod.requests
        committed_cpu, committed_mem = arrays.committed(allocs, by_node, _committed)
        cap_cpu, cap_mem = arrays.cap_cpu[slots], arrays.cap_mem[slots]
        used_cpu, used_mem = committed_cpu[slots], committed_mem[slots]
        fits = ((arrays.pods[slots] < arrays.max_pods[slots]) & ~arrays.closed[slots]
                & (requests.cpu <= np.maximum(cap_cpu - used_cpu, 0))
                & (requests.memory <= np.maximum(cap_mem - used_mem, 0)))
        if pod.node_selector:
            selector = tuple(pod.node_selector.items())
            fits &= np.fromiter((all(node.labels.get(k) == v for k, v in selector) for node in arrays.nodes[slots]),
                                dtype=np.bool_, count=len(slots))
        resource = resource_scores(requests.cpu, requests.memory, pod.band.is_prod, cap_cpu, cap_mem,
                                   used_cpu, used_mem)
        resource[~fits] = 0.0
        return fits, resource
    # A member fits only on a node holding an instance of its alloc (A2): elsewhere the answer is no
    # whatever else holds (its reasons are worked out if someone reads them); there, the ledger decides.
    fits = np.zeros(len(slots), dtype=np.bool_)
    resource = np.zeros(len(slots), dtype=np.float64)
    alloc = allocs.get(alloc_key)
    if alloc is None or not alloc.instances:
        return fits, resource
    nodes = arrays.nodes
    for k in np.isin(slots, arrays.table.slots(alloc.nodes)).nonzero()[0].tolist():
        node = nodes[slots[k]]
        here = by_node.get(node.name, ())
        fit = fits[k] = node_fits(pod, node, here, allocs)
        resource[k] = resource_score(pod, ledger(node, here)) if fit else 0.0
    return fits, resource


def _committed(node: NodeInfo, here: tuple[AllocInfo, ...]) -> tuple[int, int]:
    committed = ledger(node, here).committed
    return committed.cpu, committed.memory


_SCALAR_AT_MOST = 12  # fewer nodes than this are evaluated one by one (numpy's per-call cost dominates)


def _evaluate_few(pod: PodInfo, snapshot: CellSnapshot, arrays: NodeArrays, slots: Ints) -> tuple[Bools, Floats]:
    """`_evaluate_slots` node by node, with the same rules and the same arithmetic."""
    allocs = snapshot.allocs
    by_node = snapshot.allocs_index()
    alloc_key = pod.alloc
    plain = alloc_key is None and not pod.node_selector
    cpu, memory, prod = pod.requests.cpu, pod.requests.memory, pod.band.is_prod
    fits: list[bool] = []
    resource: list[float] = []
    nodes = arrays.nodes
    for slot in slots.tolist():
        node: NodeInfo = nodes[slot]
        here = by_node.get(node.name, ())
        if plain and not here:
            cap, used = node.allocatable, node.requested
            fit = (not node.unschedulable and len(node.pods) < node.max_pods
                   and cpu <= max(cap.cpu - used.cpu, 0) and memory <= max(cap.memory - used.memory, 0))
            fits.append(fit)
            resource.append(plain_resource_score(cpu, memory, prod, node) if fit else 0.0)
        elif alloc_key is not None and not any(alloc.key == alloc_key for alloc in here):
            fits.append(False)  # an alloc member away from its instances (A2)
            resource.append(0.0)
        else:
            fit = node_fits(pod, node, here, allocs)
            fits.append(fit)
            resource.append(resource_score(pod, ledger(node, here)) if fit else 0.0)
    return np.array(fits, dtype=np.bool_), np.array(resource, dtype=np.float64)


def _commit(column: _Column, arrays: NodeArrays, examined: int, stale_at: Ints, slots: Ints, ids: Ints,
            fits: Bools, resource: Floats) -> int:
    """Keep in the column what was evaluated among the first `examined` nodes only (those beyond were never
    looked at). `stale_at` (ascending) are the evaluated nodes' positions among those looked up, `slots`,
    `fits` and `resource` their slots and results, `ids[stale_at]` their current ids. Returns how many were
    kept: the lookup's misses."""
    misses = int(np.searchsorted(stale_at, examined))
    if misses:
        kept = slots[:misses]
        column.ids[kept] = ids[stale_at[:misses]]
        column.refs[kept] = arrays.nodes[kept]
        column.fits[kept] = fits[:misses]
        column.resource[kept] = resource[:misses]
    return misses


def _lookup_range(pod: PodInfo, snapshot: CellSnapshot, arrays: NodeArrays, column: _Column, lo: int, hi: int,
                  need: int | None) -> tuple[Bools, Ints, int, int, int]:
    """`_lookup` over the slots lo..hi-1 in order (the whole-cell case: slices, no index arrays).

    Returns (fits of the examined nodes, slots of the fitting ones, nodes examined, hits, misses).
    """
    now = arrays.ids[lo:hi]
    stale_at = (column.ids[lo:hi] != now).nonzero()[0]
    fits = column.fits[lo:hi]
    if stale_at.size:
        stale_slots = stale_at + lo
        new_fits, new_resource = _evaluate_slots(pod, snapshot, arrays, stale_slots)
        fits = fits.copy()
        fits[stale_at] = new_fits
    feasible = fits.nonzero()[0]
    examined = hi - lo
    if need is not None and len(feasible) >= need:
        feasible = feasible[:need]
        examined = int(feasible[-1]) + 1
    if stale_at.size:
        misses = _commit(column, arrays, examined, stale_at, stale_slots, now, new_fits, new_resource)
        seen = fits[:examined]  # a copy already
    else:
        misses = 0
        seen = fits[:examined].copy()  # a view of the column, which later pods change
    return seen, feasible + lo, examined, examined - misses, misses


def _lookup(pod: PodInfo, snapshot: CellSnapshot, arrays: NodeArrays, column: _Column, slots: Ints,
            need: int | None, want_resource: bool) -> tuple[Bools, Floats, int, int, int]:
    """Look `slots` up in the column in order (-1: a node the snapshot does not have, which never fits)
    and evaluate the ones it does not hold. With `need`, stop at the node where the `need`-th fitting
    one is found; only the nodes up to there count as examined and are kept in the column.

    Returns (fits, resource score or an empty array, nodes examined, hits, misses).
    """
    known = None if slots.size == 0 or slots.min() >= 0 else slots >= 0
    safe = slots if known is None else np.where(known, slots, 0)
    now = arrays.ids[safe]
    stale = column.ids[safe] != now
    if known is not None:
        stale &= known
    fits = column.fits[safe]
    resource = column.resource[safe] if want_resource else _NO_FLOATS
    stale_at = np.flatnonzero(stale)
    if stale_at.size:
        stale_slots = safe[stale_at]
        new_fits, new_resource = _evaluate_slots(pod, snapshot, arrays, stale_slots)
        fits[stale_at] = new_fits
        if want_resource:
            resource[stale_at] = new_resource
    if known is not None:
        fits &= known
    examined = len(slots)
    if need is not None and examined:
        found = np.cumsum(fits)
        if found[-1] >= need:
            examined = int(np.searchsorted(found, need)) + 1
    misses = 0
    if stale_at.size:
        misses = _commit(column, arrays, examined, stale_at, stale_slots, now, new_fits, new_resource)
    looked_up = examined if known is None else int(np.count_nonzero(known[:examined]))
    if examined < len(slots):
        fits = fits[:examined]
        if want_resource:
            resource = resource[:examined]
    return fits, resource, examined, looked_up - misses, misses


_NO_FLOATS: Floats = np.zeros(0, dtype=np.float64)


class _Examined(Mapping[str, Verdict]):
    """The examined nodes' verdicts, in examination order; a verdict is worked out (and kept in the
    class's column) when first read, from the node as it was when examined."""

    __slots__ = ("_allocs", "_by_node", "_column", "_fits", "_given", "_index", "_memo", "_names", "_nodes", "_pod",
                 "_slots", "_table")

    def __init__(self, pod: PodInfo, snapshot: CellSnapshot, column: _Column, slots: Ints, fits: Bools,
                 nodes: Objects, names: list[str] | None) -> None:
        self._pod = pod
        self._allocs = snapshot.allocs
        self._by_node = snapshot.allocs_index()
        self._column = column
        self._table = column.table
        self._slots = slots
        self._fits = fits
        self._nodes = nodes
        self._names = names
        self._given = names
        self._index: dict[str, int] | None = None
        self._memo: dict[int, Verdict] = {}

    def given_names(self) -> list[str] | None:
        """The examined names as the caller gave them (None: slots of the whole cell)."""
        return self._given

    def names(self) -> list[str]:
        if self._names is None:
            table = self._table.names
            self._names = [table[slot] for slot in self._slots.tolist()]
        return self._names

    def failed_names(self) -> list[str]:
        names = self.names()
        return [names[k] for k in np.flatnonzero(~self._fits).tolist()]

    def failed_count(self) -> int:
        return len(self._fits) - int(np.count_nonzero(self._fits))

    def at(self, k: int) -> Verdict:
        verdict = self._memo.get(k)
        if verdict is not None:
            return verdict
        slot = int(self._slots[k])
        if slot < 0:
            verdict = UNKNOWN_NODE
        else:
            node = self._nodes[k]
            column = self._column
            held = column.verdicts.get(slot)
            if held is not None and held[0] is node:
                verdict = held[1]
            else:
                verdict = node_verdict(self._pod, node, self._by_node.get(node.name, ()), self._allocs)
                if column.refs[slot] is node:
                    column.verdicts[slot] = (node, verdict)
        self._memo[k] = verdict
        return verdict

    def _positions(self) -> dict[str, int]:
        if self._index is None:
            self._index = {name: k for k, name in enumerate(self.names())}
        return self._index

    def __getitem__(self, name: str) -> Verdict:
        return self.at(self._positions()[name])

    def __contains__(self, name: object) -> bool:
        return name in self._positions()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._slots)


@dataclass(frozen=True, slots=True)
class FilterResult:
    """Feasible nodes (in examination order), failed nodes with reasons, and the examined nodes'
    verdicts; `unexamined` are the nodes relaxed randomization did not need to look at."""

    feasible: tuple[str, ...]
    failed: Mapping[str, str]
    verdicts: Mapping[str, Verdict]
    unexamined: tuple[str, ...] = ()

    def all_verdicts(self) -> dict[str, Verdict]:
        """Every node's verdict, the unexamined ones included."""
        return {**self.verdicts, **dict.fromkeys(self.unexamined, NOT_EXAMINED)}


_WIRE_SCALE = (MAX_SCORE - 1) / MAX_SCORE


def wire_score(score: float) -> int:
    """A node that is not Cell's pick: its 0..10 score scaled into kube-scheduler's 0..9, rounded
    half up; a negative score (the pod does not fit) is 0."""
    return int(min(score, MAX_SCORE) * _WIRE_SCALE + 0.5) if score >= 0 else 0


@dataclass(frozen=True, slots=True)
class Ranking:
    """Borg's score (0..10, a float) of every candidate node the pod fits on, and the best of them
    (ties: the first in the order given). Nodes the pod does not fit on, or unknown ones, are absent."""

    best: str | None
    scores: Mapping[str, float]

    def wire(self, node_names: Iterable[str]) -> dict[str, int]:
        """Extender scores: the best node 10, the other fitting nodes 0..9 (`wire_score`), the rest 0."""
        get = self.scores.get
        wired = {name: wire_score(get(name, -1.0)) for name in node_names}
        if self.best is not None and self.best in wired:
            wired[self.best] = MAX_SCORE
        return wired


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a pod goes (None: nowhere) and why, node by node: Borg's introspection record."""

    pod: str
    node: str | None
    scores: Mapping[str, int]
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)

    @property
    def message(self) -> str:
        if self.node is not None:
            return f"{self.pod} -> {self.node} (score {self.scores[self.node]})"
        counts: dict[str, int] = {}
        for verdict in self.verdicts.values():
            if not verdict.fits:
                counts[verdict.message] = counts.get(verdict.message, 0) + 1
        summary = "; ".join(f"{n} node(s): {reason}" for reason, n in sorted(counts.items(), key=lambda i: -i[1]))
        return f"{self.pod} fits no node: {summary or 'no nodes'}"


class Scheduler:
    """Filter, score and place pods against snapshots, with the §3.4 techniques switchable.

    `enough_feasible=None` examines every node (what `cell why` wants); a number turns relaxed
    randomization on. `cache=None` computes everything afresh (the reference the cache is
    tested against).
    """

    def __init__(self, cache: PolicyCache | None = None, enough_feasible: int | None = None,
                 rng: random.Random | None = None) -> None:
        self.cache = cache
        self.enough_feasible = enough_feasible
        self.rng = rng or random.Random()
        self._last_class: tuple[PodInfo, EquivalenceClass] | None = None

    def classify(self, pod: PodInfo) -> EquivalenceClass:
        """The key the score cache shares results under (subclasses may key differently)."""
        return EquivalenceClass.of(pod)

    def class_of(self, pod: PodInfo) -> EquivalenceClass:
        """`classify`, remembered for the last pod asked about (a pass asks twice per pod)."""
        last = self._last_class
        if last is not None and last[0] is pod:
            return last[1]
        eclass = self.classify(pod)
        self._last_class = (pod, eclass)
        return eclass

    def _column(self, pod: PodInfo, snapshot: CellSnapshot, arrays: NodeArrays) -> _Column:
        """The score cache's column for the pod's class (a throwaway one when uncached)."""
        if self.cache is None:
            return _Column(arrays.table, snapshot.allocs)
        return self.cache.column(self.class_of(pod), arrays.table, snapshot.allocs)

    def _count(self, hits: int, misses: int) -> None:
        if self.cache is not None:
            self.cache.hits += hits
            self.cache.misses += misses

    # The extender lists the nodes relaxed randomization skipped (`cell why` shows them); a long
    # simulated pass does not (listing them is O(nodes) per pod).
    list_unexamined = True

    def filter(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> FilterResult:
        return self.filter_result(self._examine(pod, snapshot, node_names))

    def _examine(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None) -> _Pass:
        """Look the candidates up in the pod's class column, in examination order, until enough fit.

        Relaxed randomization: the candidates are examined from a random starting point
        (kube-scheduler rotates its own list; this re-randomizes it with one draw, not one per node)
        until enough feasible ones are found, a run of candidates at a time.
        """
        arrays = snapshot.arrays()
        table = arrays.table
        column = self._column(pod, snapshot, arrays)
        names = None if node_names is None else list(node_names)
        total = len(table) if names is None else len(names)
        enough = self.enough_feasible or 0
        relaxed = self.enough_feasible is not None and total > enough
        start = self.rng.randrange(total) if relaxed else 0
        run = max(2 * enough, _FIRST_RUN) if relaxed else total
        examined_parts: list[Ints] = []
        fits_parts: list[Bools] = []
        feasible_parts: list[Ints] = []
        found = hits = misses = 0
        examined_names: list[str] | None = None
        if names is None:
            # The whole cell from `start` round to `start - 1`: two runs of consecutive slots.
            for lo, hi in ((start, total), (0, start)) if start else ((0, total),):
                at = lo
                while at < hi and not (relaxed and found >= enough):
                    end = min(hi, at + run)
                    fits, fitting, examined, chunk_hits, chunk_misses = _lookup_range(
                        pod, snapshot, arrays, column, at, end, enough - found if relaxed else None)
                    hits += chunk_hits
                    misses += chunk_misses
                    examined_parts.append(np.arange(at, at + examined, dtype=np.int64))
                    fits_parts.append(fits)
                    feasible_parts.append(fitting)
                    found += len(fitting)
                    at += examined
                    run *= 2
        else:
            order = names[start:] + names[:start] if start else names
            candidates = table.slots(order)
            done = 0
            while done < total and not (relaxed and found >= enough):
                chunk = candidates[done:done + run]
                fits, _, examined, chunk_hits, chunk_misses = _lookup(
                    pod, snapshot, arrays, column, chunk, enough - found if relaxed else None, False)
                hits += chunk_hits
                misses += chunk_misses
                examined_parts.append(chunk[:examined])
                fits_parts.append(fits)
                feasible_parts.append(chunk[:examined][fits])
                found += len(feasible_parts[-1])
                done += examined
                run *= 2
            examined_names = order[:done]
        self._count(hits, misses)
        slots = _joined(examined_parts)
        fits = fits_parts[0] if len(fits_parts) == 1 else np.concatenate([np.zeros(0, np.bool_), *fits_parts])
        nodes = arrays.nodes[slots] if names is None else arrays.nodes[np.maximum(slots, 0)]
        verdicts = _Examined(pod, snapshot, column, slots, fits, nodes, examined_names)
        return _Pass(arrays, column, verdicts, _joined(feasible_parts), fits, names, total)

    def _scores(self, pod: PodInfo, snapshot: CellSnapshot, arrays: NodeArrays, slots: Ints,
                resource: Floats) -> Floats:
        """Borg's score of each node in `slots` (the pod fits on all of them): resource part from the
        cache, the job's spread from the snapshot's per-job zone and rack counts."""
        prod = pod.band.is_prod
        zones, racks, max_zone, max_rack = snapshot.job_spread(pod.owner)
        if max_zone == 0:  # no pod of the job runs yet: every node spreads it equally
            return combine_many(resource, float(MAX_SCORE), prod)
        spread = spread_scores(zones[arrays.zone[slots]], racks[arrays.rack[slots]], max_zone, max_rack)
        return combine_many(resource, spread, prod)

    def rank(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> Ranking:
        """Score the nodes the pod fits on and pick the best (ties: first in `node_names` order)."""
        arrays = snapshot.arrays()
        table = arrays.table
        column = self._column(pod, snapshot, arrays)
        names = list(table.names if node_names is None else node_names)
        slots = table.slots(names)
        fits, resource, _, hits, misses = _lookup(pod, snapshot, arrays, column, slots, None, True)
        self._count(hits, misses)
        if not fits.any():
            return Ranking(None, {})
        fitting = [name for name, fit in zip(names, fits.tolist(), strict=True) if fit]
        scores = self._scores(pod, snapshot, arrays, slots[fits], resource[fits])
        return Ranking(fitting[int(np.argmax(scores))], dict(zip(fitting, scores.tolist(), strict=True)))

    def scores(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> dict[str, int]:
        """Extender scores 0..10 per node (see `Ranking.wire`); unfit or unknown nodes score 0."""
        names = list(snapshot.nodes if node_names is None else node_names)
        return self.rank(pod, snapshot, names).wire(names)

    def schedule(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> Decision:
        """Filter, score the feasible nodes, pick the best (ties: first examined)."""
        examined = self._examine(pod, snapshot, node_names)
        verdicts: Mapping[str, Verdict] = examined.verdicts
        if self.list_unexamined and len(verdicts) < examined.total:
            verdicts = self.filter_result(examined).all_verdicts()
        slots = examined.feasible
        if not len(slots):
            return Decision(pod.key, None, {}, verdicts)
        # Ranking the feasible nodes reads the results filter just kept: all hits.
        self._count(len(slots), 0)
        scores = self._scores(pod, snapshot, examined.arrays, slots, examined.column.resource[slots])
        best = int(np.argmax(scores))
        names = examined.verdicts.given_names()
        pick = examined.arrays.table.names[int(slots[best])] if names is None else examined.feasible_names()[best]
        return Decision(pod.key, pick, _WireScores(examined, scores, best), verdicts)

    def filter_result(self, examined: _Pass) -> FilterResult:
        verdicts = examined.verdicts
        reasons = _Reasons(verdicts)
        feasible = tuple(examined.feasible_names())
        if self.list_unexamined and len(verdicts) < examined.total:
            seen = set(verdicts.names())
            every = examined.arrays.table.names if examined.names is None else examined.names
            return FilterResult(feasible, reasons, verdicts, tuple([n for n in every if n not in seen]))
        return FilterResult(feasible, reasons, verdicts)


@dataclass(slots=True)
class _Pass:
    """What examining the candidates found: the verdicts, the fitting nodes' slots (in order)."""

    arrays: NodeArrays
    column: _Column
    verdicts: _Examined
    feasible: Ints
    fits: Bools
    names: list[str] | None  # the candidates as given (None: the whole cell)
    total: int
    _feasible_names: list[str] | None = None

    def feasible_names(self) -> list[str]:
        if self._feasible_names is None:
            examined = self.verdicts.given_names()
            if examined is None:
                table = self.arrays.table.names
                self._feasible_names = [table[slot] for slot in self.feasible.tolist()]
            else:
                self._feasible_names = [name for name, fit in zip(examined, self.fits.tolist(), strict=True) if fit]
        return self._feasible_names


class _WireScores(Mapping[str, int]):
    """`Ranking.wire` of the feasible nodes, worked out when read: the pick 10, the others 0..9."""

    def __init__(self, examined: _Pass, scores: Floats, best: int) -> None:
        self._examined = examined
        self._scores = scores
        self._best = best
        self._wired: dict[str, int] | None = None

    def _all(self) -> dict[str, int]:
        if self._wired is None:
            names = self._examined.feasible_names()
            wired = (np.minimum(self._scores, MAX_SCORE) * _WIRE_SCALE + 0.5).astype(np.int64)  # `wire_score`
            self._wired = dict(zip(names, wired.tolist(), strict=True))
            self._wired[names[self._best]] = MAX_SCORE
        return self._wired

    def __getitem__(self, name: str) -> int:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


_FIRST_RUN = 256  # candidates looked up at once before the run doubles (relaxed randomization)


def _joined(parts: list[Ints]) -> Ints:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class _Reasons(Mapping[str, str]):
    """`FilterResult.failed` rendered on demand: most callers never read a failed node's message."""

    def __init__(self, verdicts: _Examined) -> None:
        self._verdicts = verdicts
        self._failed: list[str] | None = None

    def __getitem__(self, name: str) -> str:
        verdict = self._verdicts[name]
        if verdict.fits:
            raise KeyError(name)
        return verdict.message

    def __iter__(self) -> Iterator[str]:
        if self._failed is None:
            self._failed = self._verdicts.failed_names()
        return iter(self._failed)

    def __len__(self) -> int:
        return self._verdicts.failed_count()

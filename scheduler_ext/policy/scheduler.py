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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from scheduler_ext.policy.feasibility import Verdict, check_node, node_ledger
from scheduler_ext.policy.model import CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.scoring import MAX_SCORE, combine, resource_score, spread_score

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
    node: NodeInfo
    allocs: Mapping[str, object]
    verdict: Verdict
    resource: float


class PolicyCache:
    """(equivalence class, node) -> verdict and resource score, LRU-bounded in classes."""

    def __init__(self, max_classes: int = 256) -> None:
        self._classes: OrderedDict[EquivalenceClass, dict[str, _Entry]] = OrderedDict()
        self._max_classes = max_classes
        self.hits = 0
        self.misses = 0

    def entries(self, eclass: EquivalenceClass) -> dict[str, _Entry]:
        """The class's per-node entries (touched once per request, not once per node)."""
        entries = self._classes.get(eclass)
        if entries is None:
            entries = self._classes[eclass] = {}
            if len(self._classes) > self._max_classes:
                self._classes.popitem(last=False)
        else:
            self._classes.move_to_end(eclass)
        return entries

    def lookup(self, pod: PodInfo, eclass: EquivalenceClass, snapshot: CellSnapshot, node: NodeInfo) -> _Entry:
        return self.lookup_in(self.entries(eclass), pod, snapshot, node)

    def lookup_in(self, entries: dict[str, _Entry], pod: PodInfo, snapshot: CellSnapshot, node: NodeInfo) -> _Entry:
        entry = entries.get(node.name)
        if entry is not None and entry.node is node and entry.allocs is snapshot.allocs:
            self.hits += 1
            return entry
        self.misses += 1
        entry = entries[node.name] = _evaluate(pod, snapshot, node)
        return entry

    def invalidate(self, node: str | None = None) -> None:
        """Drop cached results for one node (or all); identity checks make this optional."""
        if node is None:
            self._classes.clear()
            return
        for entries in self._classes.values():
            entries.pop(node, None)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._classes.values())


def _evaluate(pod: PodInfo, snapshot: CellSnapshot, node: NodeInfo) -> _Entry:
    verdict = check_node(pod, snapshot, node)
    resource = resource_score(pod, node_ledger(snapshot, node)) if verdict.fits else 0.0
    return _Entry(node, snapshot.allocs, verdict, resource)


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


def wire_score(score: float) -> int:
    """A node that is not Cell's pick: its 0..10 score scaled into kube-scheduler's 0..9."""
    return max(0, min(MAX_SCORE - 1, round(score * (MAX_SCORE - 1) / MAX_SCORE)))


@dataclass(frozen=True, slots=True)
class Ranking:
    """Borg's score (0..10, a float) of every candidate node the pod fits on, and the best of them
    (ties: the first in the order given). Nodes the pod does not fit on, or unknown ones, are absent."""

    best: str | None
    scores: Mapping[str, float]

    def wire(self, node_names: Iterable[str]) -> dict[str, int]:
        """Extender scores: the best node 10, the other fitting nodes 0..9, the rest 0."""
        scores = self.scores
        return {name: MAX_SCORE if name == self.best else wire_score(scores[name]) if name in scores else 0
                for name in node_names}


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

    def _lookup(self, eclass: EquivalenceClass) -> Callable[[PodInfo, CellSnapshot, NodeInfo], _Entry]:
        if self.cache is None:
            return _evaluate
        entries = self.cache.entries(eclass)
        return partial(self.cache.lookup_in, entries)

    def _order(self, names: Sequence[str]) -> Iterator[str]:
        """Relaxed randomization: a random order, drawn lazily (Fisher-Yates, one swap per node
        examined), so stopping early costs nothing for the nodes never looked at."""
        if self.enough_feasible is None or len(names) <= self.enough_feasible:
            yield from names
            return
        pool = list(names)
        randbelow = self.rng.randrange
        for i in range(len(pool) - 1, -1, -1):
            j = randbelow(i + 1)
            pool[i], pool[j] = pool[j], pool[i]
            yield pool[i]

    def filter(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> FilterResult:
        names: Sequence[str] = list(snapshot.nodes if node_names is None else node_names)
        enough = self.enough_feasible
        lookup = self._lookup(EquivalenceClass.of(pod))
        feasible: list[str] = []
        failed: dict[str, str] = {}
        verdicts: dict[str, Verdict] = {}
        nodes = snapshot.nodes
        for name in self._order(names):
            if enough is not None and len(feasible) >= enough:
                unexamined = tuple(n for n in names if n not in verdicts)
                return FilterResult(tuple(feasible), failed, verdicts, unexamined)
            node = nodes.get(name)
            verdict = UNKNOWN_NODE if node is None else lookup(pod, snapshot, node).verdict
            verdicts[name] = verdict
            if verdict.fits:
                feasible.append(name)
            else:
                failed[name] = verdict.message
        return FilterResult(tuple(feasible), failed, verdicts)

    def rank(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> Ranking:
        """Score the nodes the pod fits on and pick the best (ties: first in `node_names` order)."""
        lookup = self._lookup(EquivalenceClass.of(pod))
        prod = pod.band.is_prod
        domains = snapshot.job_domains(pod.owner)
        uniform = domains.max_zone == 0  # no pod of the job runs yet: every node spreads it equally
        nodes = snapshot.nodes
        scores: dict[str, float] = {}
        best: str | None = None
        best_score = -1.0
        for name in nodes if node_names is None else node_names:
            node = nodes.get(name)
            if node is None:
                continue
            entry = lookup(pod, snapshot, node)
            if not entry.verdict.fits:
                continue
            spread = MAX_SCORE if uniform else spread_score(domains, node)
            score = scores[name] = combine(entry.resource, spread, prod)
            if score > best_score:
                best, best_score = name, score
        return Ranking(best, scores)

    def scores(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> dict[str, int]:
        """Extender scores 0..10 per node (see `Ranking.wire`); unfit or unknown nodes score 0."""
        names = list(snapshot.nodes if node_names is None else node_names)
        return self.rank(pod, snapshot, names).wire(names)

    def schedule(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> Decision:
        """Filter, score the feasible nodes, pick the best (ties: first examined)."""
        filtered = self.filter(pod, snapshot, node_names)
        ranking = self.rank(pod, snapshot, filtered.feasible)
        return Decision(pod.key, ranking.best, ranking.wire(filtered.feasible), filtered.all_verdicts())

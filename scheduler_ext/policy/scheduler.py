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
from itertools import chain

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

    def classify(self, pod: PodInfo) -> EquivalenceClass:
        """The key the score cache shares results under (subclasses may key differently)."""
        return EquivalenceClass.of(pod)

    def _entries(self, pod: PodInfo) -> dict[str, _Entry]:
        """The score cache's entries for the pod's class (a throwaway dict when uncached)."""
        return {} if self.cache is None else self.cache.entries(self.classify(pod))

    def _lookup(self, eclass: EquivalenceClass) -> Callable[[PodInfo, CellSnapshot, NodeInfo], _Entry]:
        """One (pod, node) result through the cache, as a call (for subclasses' own loops)."""
        if self.cache is None:
            return _evaluate
        return partial(self.cache.lookup_in, self.cache.entries(eclass))

    def _count(self, hits: int, misses: int) -> None:
        if self.cache is not None:
            self.cache.hits += hits
            self.cache.misses += misses

    def _order(self, names: Sequence[str]) -> Iterator[str]:
        """Relaxed randomization: the candidates from a random starting point (kube-scheduler
        rotates its own list; this re-randomizes it, and costs one draw, not one per node)."""
        enough = self.enough_feasible
        if enough is None or len(names) <= enough:
            return iter(names)
        start = self.rng.randrange(len(names))
        return chain(names[start:], names[:start])

    # The extender lists the nodes relaxed randomization skipped (`cell why` shows them); a long
    # simulated pass does not (listing them is O(nodes) per pod).
    list_unexamined = True

    def _candidates(self, snapshot: CellSnapshot, node_names: Iterable[str] | None) -> Sequence[str]:
        return list(snapshot.nodes if node_names is None else node_names)

    def _node_lookup(self, snapshot: CellSnapshot) -> Callable[[str], NodeInfo | None]:
        return snapshot.nodes.get

    def filter(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> FilterResult:
        # The hot path of the extender: score-cache hits are checked inline, not through calls.
        names = self._candidates(snapshot, node_names)
        enough = self.enough_feasible or 0
        relaxed = self.enough_feasible is not None and len(names) > enough
        entries = self._entries(pod)
        allocs = snapshot.allocs
        node_of = self._node_lookup(snapshot)
        entry_of = entries.get
        feasible: list[str] = []
        failed: list[str] = []
        verdicts: dict[str, Verdict] = {}
        hits = misses = found = 0
        for name in self._order(names):
            node = node_of(name)
            if node is None:
                verdict = UNKNOWN_NODE
            else:
                entry = entry_of(name)
                if entry is not None and entry.node is node and entry.allocs is allocs:
                    hits += 1
                else:
                    misses += 1
                    entry = entries[name] = _evaluate(pod, snapshot, node)
                verdict = entry.verdict
            verdicts[name] = verdict
            if verdict.fits:
                feasible.append(name)
                found += 1
                if relaxed and found >= enough:
                    break
            else:
                failed.append(name)
        self._count(hits, misses)
        reasons = _Reasons(verdicts, failed)
        if self.list_unexamined and len(verdicts) < len(names):
            unexamined = tuple([n for n in names if n not in verdicts])
            return FilterResult(tuple(feasible), reasons, verdicts, unexamined)
        return FilterResult(tuple(feasible), reasons, verdicts)

    def rank(self, pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None) -> Ranking:
        """Score the nodes the pod fits on and pick the best (ties: first in `node_names` order)."""
        entries = self._entries(pod)
        allocs = snapshot.allocs
        prod = pod.band.is_prod
        domains = snapshot.job_domains(pod.owner)
        uniform = domains.max_zone == 0  # no pod of the job runs yet: every node spreads it equally
        spreads: dict[tuple[str, str], float] = {}  # the spread depends on the node's zone and rack only
        nodes = snapshot.nodes
        scores: dict[str, float] = {}
        best: str | None = None
        best_score = -1.0
        hits = misses = 0
        for name in nodes if node_names is None else node_names:
            node = nodes.get(name)
            if node is None:
                continue
            entry = entries.get(name)
            if entry is not None and entry.node is node and entry.allocs is allocs:
                hits += 1
            else:
                misses += 1
                entry = entries[name] = _evaluate(pod, snapshot, node)
            if not entry.verdict.fits:
                continue
            if uniform:
                spread = float(MAX_SCORE)
            else:
                domain = (node.zone, node.rack)
                spread = spreads.get(domain, -1.0)
                if spread < 0:
                    spread = spreads[domain] = spread_score(domains, node)
            score = scores[name] = combine(entry.resource, spread, prod)
            if score > best_score:
                best, best_score = name, score
        self._count(hits, misses)
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


class _Reasons(Mapping[str, str]):
    """`FilterResult.failed` rendered on demand: most callers never read a failed node's message."""

    def __init__(self, verdicts: Mapping[str, Verdict], failed: list[str]) -> None:
        self._verdicts = verdicts
        self._failed = failed

    def __getitem__(self, name: str) -> str:
        verdict = self._verdicts[name]
        if verdict.fits:
            raise KeyError(name)
        return verdict.message

    def __iter__(self) -> Iterator[str]:
        return iter(self._failed)

    def __len__(self) -> int:
        return len(self._failed)

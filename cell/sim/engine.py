"""The Fauxmaster's pass: admit, reserve, schedule and preempt, with the policy core's own code.

Order of events, as in Borg (§2.5, §3.1):
1. Alloc sets are admitted against quota (A4) and placed with `allocs.place_alloc`.
2. Jobs are admitted whole against quota (`quota.admit_charge` on the Job's `workloads.charge_of`,
   Q1); members of an alloc are charged through it (A4). A refused job submits no task.
3. Pending tasks are scanned from high to low priority (submission order within a priority). Each
   is placed by the extender's `Scheduler` (feasibility, scoring, the §3.4 techniques); if it fits
   nowhere, `preemption.preempt` may evict lower-priority pods (R1-R3), which go back to the queue.

The only thing added here is a memo of failures: feasibility can only shrink while pods are bound
(never evicted) and allocs do not change, so once a task of one equivalence class and priority fits
nowhere and cannot preempt, the next task of that class and priority cannot either. The memo is
cleared on every eviction or alloc change, and keyed by the scheduler's classes, so it is part of
the equivalence-class technique and off when that is off.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from cell.errors import CellError
from cell.sim.snapshot import SimCell
from cell.sim.workload import Workload
from scheduler_ext.policy.allocs import place_alloc, preempted
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.incremental import CellState, IncrementalScheduler
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.preemption import PreemptionDecision, preempt
from scheduler_ext.policy.quota import BandQuota, admit_charge
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.scheduler import EquivalenceClass, PolicyCache
from scheduler_ext.policy.usage import CellUsage, cell_usage
from scheduler_ext.policy.workloads import Charge, charge_of

# The extender's default (`python -m scheduler_ext.extender --enough-feasible`), so that a simulation
# examines nodes the way the live cell does.
ENOUGH_FEASIBLE = 100
CACHE_CLASSES = 1024


@dataclass(frozen=True)
class Techniques:
    """Borg §3.4's scalability techniques, each switchable (for `make bench-sim`)."""

    equivalence_classes: bool = True
    score_caching: bool = True
    relaxed_randomization: bool = True

    def describe(self) -> str:
        off = [name for name, on in (("equivalence classes", self.equivalence_classes),
                                     ("score caching", self.score_caching),
                                     ("relaxed randomization", self.relaxed_randomization)) if not on]
        return "all techniques on" if not off else "without " + ", ".join(off)


@dataclass(frozen=True)
class SimOptions:
    seed: int = 0
    enough_feasible: int = ENOUGH_FEASIBLE
    techniques: Techniques = field(default_factory=Techniques)
    preemption: bool = True


@dataclass(frozen=True)
class Placement:
    task: str
    job: str
    band: Band
    node: str


@dataclass(frozen=True)
class PendingTask:
    task: str
    job: str
    band: Band
    reason: str


@dataclass(frozen=True)
class Preemption:
    """One eviction: `victim` made room for `preemptor` on `node`."""

    victim: str
    victim_priority: int
    preemptor: str
    preemptor_priority: int
    node: str
    reason: str

    @property
    def victim_band(self) -> Band:
        return Band.of_priority(self.victim_priority)

    @property
    def preemptor_band(self) -> Band:
        return Band.of_priority(self.preemptor_priority)


@dataclass(frozen=True)
class Rejection:
    """A job or alloc refused at submission (quota, Q1/Q2)."""

    ref: str
    band: Band
    reason: str


@dataclass(frozen=True)
class AllocOutcome:
    key: str
    band: Band
    phase: str
    nodes: tuple[str, ...]
    message: str


@dataclass
class SimStats:
    seconds: float = 0.0
    nodes: int = 0
    tasks_submitted: int = 0
    requeued: int = 0  # evicted pods put back in the queue
    decisions: int = 0
    nodes_examined: int = 0
    preemption_searches: int = 0
    memo_hits: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass
class SimResult:
    options: SimOptions
    placements: dict[str, Placement]  # task key -> where it ended up (tasks the simulation placed)
    pending: list[PendingTask]
    preemptions: list[Preemption]
    rejections: list[Rejection]
    allocs: list[AllocOutcome]
    final: CellSnapshot
    quotas: dict[str, BandQuota | None]
    quota_use: dict[str, dict[Band, Resources]]
    stats: SimStats
    _usage: CellUsage | None = None

    @property
    def usage(self) -> CellUsage:
        if self._usage is None:
            self._usage = cell_usage(self.final)
        return self._usage


def _summary(reasons: Counter[str], shown: int = 3) -> str:
    """"5 node(s): reason; 2 node(s): other", most common first; the long tail is counted, not listed."""
    common = reasons.most_common()
    text = "; ".join(f"{n} node(s): {reason}" for reason, n in common[:shown])
    rest = common[shown:]
    if rest:
        text += f"; {sum(n for _, n in rest)} node(s): {len(rest)} other reason(s)"
    return text


def _preemption_reason(pod: PodInfo, victim: PodInfo, node: str) -> str:
    rule = "R1: prod may preempt non-prod" if pod.band.is_prod else "R2: strictly lower priority"
    return (f"{victim.band.label} priority {victim.priority} evicted on {node} for {pod.band.label} "
            f"{pod.key} (priority {pod.priority}; {rule}; R3: fewest, lowest victims)")


class Simulation:
    """One pass over a cell and a workload; `run()` returns the result."""

    def __init__(self, cell: SimCell, workload: Workload, options: SimOptions | None = None) -> None:
        self.cell = cell
        self.workload = workload
        self.options = options or SimOptions()
        techniques = self.options.techniques
        self.cache = PolicyCache(CACHE_CLASSES) if techniques.score_caching else None
        self.scheduler = IncrementalScheduler(
            self.cache,
            # 0 means "examine every node", as the extender's --enough-feasible 0 does.
            enough_feasible=(self.options.enough_feasible or None) if techniques.relaxed_randomization else None,
            rng=random.Random(self.options.seed),
            equivalence_classes=techniques.equivalence_classes,
        )
        self.state = CellState(cell.snapshot())
        self.used = cell.quota_use()
        self.stats = SimStats(nodes=len(self.state.nodes))
        self.placements: dict[str, Placement] = {}
        self.pending: dict[str, PendingTask] = {}
        self.preemptions: list[Preemption] = []
        self.rejections: list[Rejection] = []
        self.alloc_outcomes: list[AllocOutcome] = []
        self._queue: list[tuple[int, int, PodInfo]] = []
        self._seq = 0
        self._failed: dict[tuple[EquivalenceClass, int], str] = {}

    # --- submission -------------------------------------------------------------------------------

    def _admit(self, namespace: str, charge: Charge | None) -> str | None:
        """None if admitted (and charged), else the refusal (Q1/Q2)."""
        if charge is None or namespace not in self.cell.quotas:
            return None
        used = self.used.setdefault(namespace, {})
        decision = admit_charge(namespace, charge, self.cell.quotas[namespace], used)
        if not decision.allowed:
            return decision.message
        used[charge.band] = used.get(charge.band, Resources()) + charge.demand
        return None

    def _submit_allocs(self) -> None:
        for spec in self.workload.allocs:
            if spec.key in self.state.allocs:
                raise CellError(f"workload alloc {spec.key} already exists in the cell")
            band = Band.from_label(spec.band)
            try:
                refusal = self._admit(spec.namespace, charge_of(spec.manifest()))
            except ValueError as exc:
                raise CellError(f"alloc {spec.key}: {exc}") from None
            if refusal is not None:
                self.rejections.append(Rejection(f"Alloc {spec.key}", band, refusal))
                continue
            info = spec.info()
            placement = place_alloc(info, self.state)
            self.state.put_alloc(info.with_instances(placement.instances))
            self._failed.clear()
            self.alloc_outcomes.append(AllocOutcome(spec.key, band, placement.phase, placement.nodes,
                                                    placement.message))

    def _submit_jobs(self) -> None:
        for job in self.workload.jobs:
            try:
                refusal = self._admit(job.namespace, charge_of(job.job_manifest()))
            except ValueError as exc:
                raise CellError(f"job {job.key}: {exc}") from None
            if refusal is not None:
                self.rejections.append(Rejection(f"Job {job.key}", Band.from_label(job.band), refusal))
                continue
            for task in job.task_infos():
                self._push(task)
            self.stats.tasks_submitted += job.tasks

    def _push(self, pod: PodInfo) -> None:
        heapq.heappush(self._queue, (-pod.priority, self._seq, pod))
        self._seq += 1

    # --- scheduling -------------------------------------------------------------------------------

    def _place(self, pod: PodInfo, node: str) -> None:
        self.state.bind(pod, node)
        self.placements[pod.key] = Placement(pod.key, pod.owner, pod.band, node)
        self.pending.pop(pod.key, None)
        if pod.alloc is None and self.state.allocs_on(node):
            self._give_back_preempted(node)

    def _give_back_preempted(self, node: str) -> None:
        """A7, as the operator does: an instance whose room a higher band's pod took is given back,
        and its members there are evicted (and queued again, to land in the alloc's other instances)."""
        for alloc in self.state.allocs_on(node):
            lost = preempted(alloc, self.state)
            if not lost:
                continue
            self.state.put_alloc(alloc.with_instances(i for i in alloc.instances if i not in lost))
            self._failed.clear()
            members = [p.uid for p in self.state.nodes[node].pods if p.alloc == alloc.key]
            for victim in self.state.evict(members):
                self.placements.pop(victim.key, None)
                self.stats.requeued += 1
                self._push(PodInfo(victim.namespace, victim.name, victim.uid, victim.priority, victim.requests,
                                   victim.labels, victim.owner, None, victim.node_selector))

    def _try_preempt(self, pod: PodInfo) -> PreemptionDecision | None:
        if not self.options.preemption:
            return None
        self.stats.preemption_searches += 1
        choice = preempt(pod, self.state)
        if choice.node is None or choice.victims is None:
            return choice
        victims = self.state.evict(p.uid for p in choice.victims.pods)
        self._failed.clear()  # capacity was freed: earlier failures may no longer hold
        for victim in victims:
            self.preemptions.append(Preemption(victim.key, victim.priority, pod.key, pod.priority, choice.node,
                                               _preemption_reason(pod, victim, choice.node)))
            self.placements.pop(victim.key, None)
            self.stats.requeued += 1
            self._push(PodInfo(victim.namespace, victim.name, victim.uid, victim.priority, victim.requests,
                               victim.labels, victim.owner, None, victim.node_selector))
        return choice

    def _schedule_one(self, pod: PodInfo) -> None:
        memo_key = (self.scheduler.class_of(pod), pod.priority)
        known = self._failed.get(memo_key)
        if known is not None:
            self.stats.memo_hits += 1
            self.pending[pod.key] = PendingTask(pod.key, pod.owner, pod.band, known)
            return
        # Each task's random examination order follows from (seed, task) alone, so that skipping a
        # decision (the memo) or adding a job does not reshuffle every later task's order.
        self.scheduler.rng.seed(f"{self.options.seed}/{pod.uid}")
        decision = self.scheduler.schedule(pod, self.state)
        self.stats.decisions += 1
        self.stats.nodes_examined += len(decision.verdicts)
        if decision.node is not None:
            self._place(pod, decision.node)
            return
        fits_nowhere = _summary(Counter(v.message for v in decision.verdicts.values() if not v.fits))
        choice = self._try_preempt(pod)
        if choice is not None and choice.node is not None:
            self._place(pod, choice.node)
            return
        reason = f"fits no node: {fits_nowhere or 'no nodes'}"
        if choice is not None:
            preemption = Counter("; ".join(r) for r in choice.reasons.values())
            reason += f" | preemption impossible: {_summary(preemption) or 'no nodes'}"
        self._failed[memo_key] = reason
        self.pending[pod.key] = PendingTask(pod.key, pod.owner, pod.band, reason)

    def run(self) -> SimResult:
        started = time.perf_counter()
        self._submit_allocs()
        self._submit_jobs()
        while self._queue:
            _, _, pod = heapq.heappop(self._queue)
            self._schedule_one(pod)
        self.stats.seconds = time.perf_counter() - started
        if self.cache is not None:
            self.stats.cache_hits, self.stats.cache_misses = self.cache.hits, self.cache.misses
        return SimResult(
            options=self.options,
            placements=self.placements,
            pending=list(self.pending.values()),
            preemptions=self.preemptions,
            rejections=self.rejections,
            allocs=self.alloc_outcomes,
            final=self.state.freeze(),
            quotas=dict(self.cell.quotas),
            quota_use=self.used,
            stats=self.stats,
        )


def simulate(cell: SimCell, workload: Workload, options: SimOptions | None = None) -> SimResult:
    return Simulation(cell, workload, options).run()

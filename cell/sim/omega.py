"""Omega's shared-state scheduling (Schwarzkopf et al., EuroSys 2013) in the Fauxmaster.

A discrete-event simulation in simulated seconds (nothing sleeps; the same seed gives the same run):

- The **shared cell state** (`SharedCell`) is the only central component. It holds every machine
  and its pods, and per machine a sequence number counting the transactions committed to it.
- Each **scheduler** (`Agent`) takes a job from its own queue, copies the shared state (its private
  snapshot), places the job's tasks on that copy with the policy core's `IncrementalScheduler`
  (feasibility, Borg scoring, relaxed randomization: the Fauxmaster's and the extender's code), and
  after its decision time (`t_job + t_task * tasks`, the Omega paper's model) commits the placements
  to the shared state as one **transaction**.
- The shared state **accepts or refuses** each claim: fine-grained conflict detection re-checks the
  task against the machine as it is now (the policy core's `check_node`); coarse-grained refuses a
  claim on any machine whose sequence number moved since the snapshot, even if the task would still
  fit. An incremental transaction keeps the claims that passed; an all-or-nothing (gang) one keeps
  nothing if any claim failed. Refused tasks go back to the scheduler's queue and are placed again
  (work redone).
- The **monolithic** baseline is the same machinery with one scheduler that takes every job in
  turn: nobody else commits between its snapshot and its commit, so it never conflicts.

Tasks run for their job's duration from the commit that placed them, then free their machine
(which does not move its sequence number: freeing resources cannot invalidate a placement).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import cast

from cell.sim.generate import PROFILES, cell_document
from cell.sim.snapshot import compact_cell
from cell.sim.workload import JobSpec
from scheduler_ext.policy.feasibility import check_node
from scheduler_ext.policy.incremental import CellState, IncrementalScheduler
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.scheduler import PolicyCache

BATCH, SERVICE = "batch", "service"
KINDS = (BATCH, SERVICE)
BAND_OF_KIND = {BATCH: "batch", SERVICE: "production"}


class Conflicts(StrEnum):
    """How the shared state decides that a claim conflicts (Omega §3.4, §5.2)."""

    FINE = "fine"  # the task no longer fits on the machine as it is now
    COARSE = "coarse"  # the machine changed at all since the snapshot (its sequence number moved)


class Commit(StrEnum):
    INCREMENTAL = "incremental"  # keep the claims that passed, retry the rest
    GANG = "gang"  # all-or-nothing: one refused claim refuses the whole transaction


class Architecture(StrEnum):
    MONOLITHIC = "monolithic"  # one scheduler, every job in turn (multi-path: each kind's decision time)
    SHARED_STATE = "shared-state"  # Omega: a batch and a service scheduler (or several batch ones)


@dataclass(frozen=True)
class DecisionTime:
    """A scheduling attempt costs t_job + t_task per task attempted (simulated seconds)."""

    t_job: float
    t_task: float

    def of(self, tasks: int) -> float:
        return self.t_job + self.t_task * tasks


@dataclass(frozen=True)
class WorkloadShape:
    """Poisson job arrivals of each kind; job sizes log-normal; one duration per job (exponential).

    The defaults commit about 55-60 % of a 50-machine cell of `generate`'s shapes in steady state:
    many short batch jobs and fewer, longer, larger service tasks (the shape of Omega §2 and Fig. 2;
    the numbers are made up, as the paper's simulator's example inputs are).
    """

    batch_interarrival: float = 15.0
    service_interarrival: float = 60.0
    batch_median_tasks: float = 8.0
    service_median_tasks: float = 3.0
    sigma: float = 1.0
    batch_max_tasks: int = 200
    service_max_tasks: int = 50
    batch_duration: float = 300.0
    service_duration: float = 1200.0

    def scaled(self, load: float) -> WorkloadShape:
        """The same shape with `load` times the batch arrival rate."""
        return replace(self, batch_interarrival=self.batch_interarrival / load)


@dataclass(frozen=True)
class OmegaOptions:
    architecture: Architecture = Architecture.SHARED_STATE
    conflicts: Conflicts = Conflicts.FINE
    commit: Commit = Commit.INCREMENTAL
    machines: int = 50
    hours: float = 1.0
    seed: int = 0
    batch_schedulers: int = 1
    batch_time: DecisionTime = DecisionTime(0.1, 0.005)
    service_time: DecisionTime = DecisionTime(1.0, 0.005)
    shape: WorkloadShape = field(default_factory=WorkloadShape)
    load: float = 1.0  # multiplier of the batch arrival rate
    enough_feasible: int = 10  # relaxed randomization: machines examined after this many feasible ones stop
    max_attempts: int = 100  # a job refused this often is abandoned
    retry_delay: float = 10.0  # a job that fits nowhere waits this long before its next attempt
    check_invariants: bool = False  # verify after every commit that no machine is overcommitted

    @property
    def horizon(self) -> float:
        return self.hours * 3600.0

    def label(self) -> str:
        if self.architecture is Architecture.MONOLITHIC:
            return "monolithic"
        return f"shared-state {self.conflicts.value}/{self.commit.value}"


@dataclass(frozen=True)
class OmegaJob:
    name: str
    kind: str
    submitted: float
    duration: float
    tasks: tuple[PodInfo, ...]


WARMUP_DURATIONS = 3  # jobs are drawn from this many mean durations before t=0, to start from a busy cell


def omega_workload(options: OmegaOptions) -> list[OmegaJob]:
    """The jobs submitted before the horizon, by submission time; drawn from `random.Random(seed)`.

    Jobs with a negative submission time are the cell's starting state (Omega's simulator starts from a
    cluster snapshot too): those still running at t=0 are placed before the clock starts."""
    shape = options.shape.scaled(options.load)
    profiles = {p.band: p for p in PROFILES}
    jobs: list[OmegaJob] = []
    for kind, interarrival, median, cap, duration in (
            (BATCH, shape.batch_interarrival, shape.batch_median_tasks, shape.batch_max_tasks, shape.batch_duration),
            (SERVICE, shape.service_interarrival, shape.service_median_tasks, shape.service_max_tasks,
             shape.service_duration)):
        # One stream per kind, so that more batch load does not reshuffle the service jobs.
        rng = random.Random(f"{options.seed}/{kind}")
        profile = profiles[BAND_OF_KIND[kind]]
        now, index = -WARMUP_DURATIONS * duration, 0
        while True:
            now += rng.expovariate(1.0 / interarrival)
            if now >= options.horizon:
                break
            index += 1
            size = max(1, min(cap, round(rng.lognormvariate(math.log(median), shape.sigma))))
            requests = {"cpu": _pick(rng, profile.cpus), "memory": _pick(rng, profile.memories)}
            spec = JobSpec(f"{kind[0]}{index}", kind, BAND_OF_KIND[kind], size, requests)
            jobs.append(OmegaJob(spec.key, kind, now, rng.expovariate(1.0 / duration), tuple(spec.task_infos())))
    jobs.sort(key=lambda job: (job.submitted, job.name))
    return jobs


def _pick(rng: random.Random, menu: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([value for value, _ in menu], weights=[weight for _, weight in menu])[0]


def omega_cell(machines: int) -> CellSnapshot:
    """`cell sim generate`'s heterogeneous machines, empty (no quotas: Omega schedules, it does not admit)."""
    return compact_cell(cell_document(machines), f"generated cell of {machines} machines").snapshot()


# --- the shared state ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """A scheduler's private copy: the cell as it was, and each machine's sequence number then."""

    cell: CellSnapshot
    seen: dict[str, int]


@dataclass(frozen=True)
class Outcome:
    """What the shared state did with a transaction."""

    accepted: tuple[tuple[PodInfo, str], ...]
    conflicted: tuple[PodInfo, ...]  # claims refused for a conflict
    discarded: tuple[PodInfo, ...] = ()  # claims that passed but went down with a gang transaction

    @property
    def conflict(self) -> bool:
        return bool(self.conflicted)


class OvercommitError(AssertionError):
    """The shared state holds more on a machine than it has (never expected: a test's tripwire)."""


class SharedCell:
    """The cell state every scheduler commits to (Omega's only central component)."""

    def __init__(self, start: CellSnapshot) -> None:
        self.state = CellState(start)
        self.seq = dict.fromkeys(self.state.nodes, 0)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.state.freeze(), dict(self.seq))

    def _refused(self, pod: PodInfo, node: str, seen: dict[str, int], conflicts: Conflicts) -> bool:
        if conflicts is Conflicts.COARSE and self.seq[node] != seen[node]:
            return True
        # Either way the claim must still fit: coarse detection is stricter, never looser.
        return not check_node(pod, self.state, self.state.nodes[node]).fits

    def commit(self, claims: Sequence[tuple[PodInfo, str]], seen: dict[str, int], conflicts: Conflicts,
               commit: Commit) -> Outcome:
        """Apply a transaction: claims are checked in order against the state as earlier ones left it."""
        accepted: list[tuple[PodInfo, str]] = []
        conflicted: list[PodInfo] = []
        for pod, node in claims:
            if self._refused(pod, node, seen, conflicts):
                conflicted.append(pod)
                continue
            self.state.bind(pod, node)
            accepted.append((pod, node))
        if commit is Commit.GANG and conflicted:
            self.state.evict(pod.uid for pod, _ in accepted)
            return Outcome((), tuple(conflicted), tuple(pod for pod, _ in accepted))
        for node in {node for _, node in accepted}:
            self.seq[node] += 1
        return Outcome(tuple(accepted), tuple(conflicted))

    def release(self, uids: Iterable[str]) -> None:
        """Tasks ended: their resources are free (no sequence number moves)."""
        self.state.evict(uids)

    def check(self) -> None:
        for node in self.state.nodes.values():
            if not node.requested.fits_in(node.allocatable) or len(node.pods) > node.max_pods:
                raise OvercommitError(f"machine {node.name} holds {node.requested} of {node.allocatable}, "
                                      f"{len(node.pods)} pods of {node.max_pods}")


# --- schedulers ------------------------------------------------------------------------------------

@dataclass
class JobRun:
    job: OmegaJob
    remaining: list[PodInfo]
    attempts: int = 0
    first_attempt: float | None = None
    scheduled: float | None = None  # when its last task was committed
    abandoned: bool = False


@dataclass
class AgentStats:
    busy: float = 0.0  # decision seconds inside the horizon
    transactions: int = 0  # commits of at least one claim
    conflicted: int = 0  # transactions with at least one refused claim
    claims: int = 0
    tasks_redone: int = 0  # claims refused or discarded: placed again later
    seconds_redone: float = 0.0  # the share of decision time spent on those claims
    attempts: int = 0
    no_room: int = 0  # attempts that left tasks unplaced because nothing fit in the snapshot


@dataclass(frozen=True)
class Plan:
    run: JobRun
    claims: tuple[tuple[PodInfo, str], ...]
    seen: dict[str, int]
    attempted: int
    seconds: float


class Agent:
    """One scheduler: its queue, its policy (the policy core), its decision times."""

    def __init__(self, name: str, kinds: frozenset[str], times: dict[str, DecisionTime], seed: int,
                 enough_feasible: int) -> None:
        self.name = name
        self.kinds = kinds
        self.times = times
        self.seed = seed
        self.queue: deque[JobRun] = deque()
        self.busy = False
        self.stats = AgentStats()
        self.scheduler = IncrementalScheduler(PolicyCache(256), enough_feasible=enough_feasible or None,
                                              rng=random.Random(seed))

    def plan(self, run: JobRun, snapshot: Snapshot) -> Plan:
        """Place the job's remaining tasks on a private copy of the snapshot."""
        private = CellState(snapshot.cell)
        claims: list[tuple[PodInfo, str]] = []
        for pod in run.remaining:
            # Each attempt's random order follows from (seed, task, attempt) alone: deterministic.
            self.scheduler.rng.seed(f"{self.seed}/{pod.uid}/{run.attempts}")
            decision = self.scheduler.schedule(pod, private)
            if decision.node is None:
                break  # a job's tasks are alike: the rest fit nowhere either
            private.bind(pod, decision.node)
            claims.append((pod, decision.node))
        attempted = len(run.remaining)
        return Plan(run, tuple(claims), snapshot.seen, attempted, self.times[run.job.kind].of(attempted))


# --- the simulation --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KindResult:
    """Jobs of one kind: wait until the first attempt (Omega's job wait time) and until fully placed."""

    jobs: int
    mean_wait: float
    p90_wait: float
    mean_time_to_schedule: float
    unscheduled: int  # still waiting or partly placed at the horizon
    abandoned: int


@dataclass(frozen=True)
class AgentResult:
    name: str
    kinds: tuple[str, ...]
    busyness: float
    transactions: int
    conflicted: int
    conflict_fraction: float
    claims: int
    tasks_redone: int
    seconds_redone: float
    attempts: int
    no_room: int


@dataclass(frozen=True)
class OmegaResult:
    options: OmegaOptions
    agents: tuple[AgentResult, ...]
    kinds: dict[str, KindResult]
    tasks_placed: int
    cpu_utilisation: float  # mean committed cpu share, sampled at every commit

    def agent_for(self, kind: str) -> AgentResult:
        """The (first) scheduler that handles `kind`."""
        return next(a for a in self.agents if kind in a.kinds)


_ARRIVE, _COMMIT, _END, _RETRY = range(4)


class OmegaSimulation:
    def __init__(self, options: OmegaOptions, start: CellSnapshot | None = None,
                 jobs: Sequence[OmegaJob] | None = None) -> None:
        self.options = options
        self.cell = SharedCell(start if start is not None else omega_cell(options.machines))
        self.jobs = list(jobs) if jobs is not None else omega_workload(options)
        times = {BATCH: options.batch_time, SERVICE: options.service_time}
        if options.architecture is Architecture.MONOLITHIC:
            self.agents = [Agent("monolithic", frozenset(KINDS), times, options.seed, options.enough_feasible)]
        else:
            count = max(1, options.batch_schedulers)
            self.agents = [Agent(f"batch-{i + 1}" if count > 1 else "batch", frozenset({BATCH}), times,
                                 options.seed * 101 + i, options.enough_feasible) for i in range(count)]
            self.agents.append(Agent("service", frozenset({SERVICE}), times, options.seed * 101 + count,
                                     options.enough_feasible))
        self.runs: list[JobRun] = []
        self._events: list[tuple[float, int, int, object]] = []
        self._order = 0
        self._dealt = 0
        self._cpu_samples: list[float] = []
        self._capacity = sum(n.allocatable.cpu for n in self.cell.state.nodes.values()) or 1

    def _push(self, time: float, kind: int, payload: object) -> None:
        heapq.heappush(self._events, (time, self._order, kind, payload))
        self._order += 1

    def _agent_of(self, job: OmegaJob) -> Agent:
        candidates = [a for a in self.agents if job.kind in a.kinds]
        if len(candidates) == 1:
            return candidates[0]
        self._dealt += 1  # several batch schedulers: jobs dealt round-robin (Omega §4.3's load balancing)
        return candidates[self._dealt % len(candidates)]

    def _start(self, agent: Agent, now: float) -> None:
        if agent.busy or not agent.queue:
            return
        run = agent.queue.popleft()
        if run.first_attempt is None:
            run.first_attempt = now
        plan = agent.plan(run, self.cell.snapshot())
        run.attempts += 1
        agent.busy = True
        agent.stats.attempts += 1
        agent.stats.busy += max(0.0, min(now + plan.seconds, self.options.horizon) - min(now, self.options.horizon))
        self._push(now + plan.seconds, _COMMIT, (agent, plan))

    def _commit(self, agent: Agent, plan: Plan, now: float) -> None:
        options = self.options
        run, stats = plan.run, agent.stats
        agent.busy = False
        claims = plan.claims
        if options.commit is Commit.GANG and len(claims) < plan.attempted:
            claims = ()  # all-or-nothing: a job that does not fit whole in the snapshot claims nothing
        outcome = self.cell.commit(claims, plan.seen, options.conflicts, options.commit)
        if options.check_invariants:
            self.cell.check()
        if claims:
            stats.transactions += 1
            stats.claims += len(claims)
            if outcome.conflict:
                stats.conflicted += 1
                redone = len(outcome.conflicted) + len(outcome.discarded)
                stats.tasks_redone += redone
                stats.seconds_redone += plan.seconds * redone / plan.attempted
        if outcome.accepted:
            placed = {pod.uid for pod, _ in outcome.accepted}
            run.remaining = [pod for pod in run.remaining if pod.uid not in placed]
            self._push(now + run.job.duration, _END, tuple(placed))
            self._cpu_samples.append(
                sum(n.requested.cpu for n in self.cell.state.nodes.values()) / self._capacity)
        if not run.remaining:
            run.scheduled = now
        elif run.attempts >= options.max_attempts:
            run.abandoned = True
        elif outcome.conflict:
            agent.queue.append(run)  # back of the queue, placed again from a fresh snapshot
        else:
            stats.no_room += 1
            self._push(now + options.retry_delay, _RETRY, (agent, run))
        self._start(agent, now)

    def _prefill(self, jobs: Iterable[OmegaJob]) -> None:
        """Place the jobs still running at t=0 straight into the shared state (not measured)."""
        setup = IncrementalScheduler(PolicyCache(64), enough_feasible=self.options.enough_feasible or None,
                                     rng=random.Random(f"{self.options.seed}/prefill"))
        state = self.cell.state
        for job in jobs:
            if job.submitted + job.duration <= 0:
                continue
            placed = []
            for pod in job.tasks:
                decision = setup.schedule(pod, state)
                if decision.node is None:
                    break
                placed.append(state.bind(pod, decision.node).uid)
            if placed:
                self._push(job.submitted + job.duration, _END, tuple(placed))

    def run(self) -> OmegaResult:
        self._prefill(job for job in self.jobs if job.submitted < 0)
        for job in self.jobs:
            if job.submitted >= 0:
                self._push(job.submitted, _ARRIVE, job)
        horizon = self.options.horizon
        while self._events:
            now, _, kind, payload = heapq.heappop(self._events)
            if now > horizon:
                break
            if kind == _ARRIVE:
                assert isinstance(payload, OmegaJob)
                agent = self._agent_of(payload)
                run = JobRun(payload, list(payload.tasks))
                self.runs.append(run)
                agent.queue.append(run)
                self._start(agent, now)
            elif kind == _COMMIT:
                committer, plan = cast(tuple[Agent, Plan], payload)
                self._commit(committer, plan, now)
            elif kind == _END:
                self.cell.release(cast(tuple[str, ...], payload))
            else:
                waiter, retried = cast(tuple[Agent, JobRun], payload)
                waiter.queue.append(retried)
                self._start(waiter, now)
        return self._result()

    def _result(self) -> OmegaResult:
        horizon = self.options.horizon
        kinds: dict[str, KindResult] = {}
        for kind in KINDS:
            runs = [r for r in self.runs if r.job.kind == kind]
            # A job still waiting at the horizon has waited at least until then (censored, not dropped:
            # a saturated scheduler's queue is what the wait time must show).
            waits = [(r.first_attempt if r.first_attempt is not None else horizon) - r.job.submitted for r in runs]
            done = [r.scheduled - r.job.submitted for r in runs if r.scheduled is not None]
            kinds[kind] = KindResult(
                jobs=len(runs),
                mean_wait=statistics.fmean(waits) if waits else 0.0,
                p90_wait=_percentile(waits, 90),
                mean_time_to_schedule=statistics.fmean(done) if done else 0.0,
                unscheduled=sum(1 for r in runs if r.scheduled is None and not r.abandoned),
                abandoned=sum(1 for r in runs if r.abandoned),
            )
        agents = tuple(AgentResult(
            name=a.name, kinds=tuple(sorted(a.kinds)), busyness=a.stats.busy / horizon if horizon else 0.0,
            transactions=a.stats.transactions, conflicted=a.stats.conflicted,
            conflict_fraction=a.stats.conflicted / a.stats.transactions if a.stats.transactions else 0.0,
            claims=a.stats.claims, tasks_redone=a.stats.tasks_redone, seconds_redone=a.stats.seconds_redone,
            attempts=a.stats.attempts, no_room=a.stats.no_room) for a in self.agents)
        placed = sum(len(r.job.tasks) - len(r.remaining) for r in self.runs)
        utilisation = statistics.fmean(self._cpu_samples) if self._cpu_samples else 0.0
        return OmegaResult(self.options, agents, kinds, placed, utilisation)


def _percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def simulate_omega(options: OmegaOptions, start: CellSnapshot | None = None,
                   jobs: Sequence[OmegaJob] | None = None) -> OmegaResult:
    return OmegaSimulation(options, start, jobs).run()

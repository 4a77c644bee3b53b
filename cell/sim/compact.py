"""Borg §5's cell compaction (Verma et al., EuroSys 2015) in the Fauxmaster.

How many machines does a workload need? Borg's answer: take a cell, remove machines until the
workload no longer fits, re-packing it from scratch every time (so an unlucky packing does not stick),
over several random trials; report the 90th percentile. A policy's cost is then the difference in
compacted cell size between the workload under that policy and without it.

Here a trial is one seed: it fixes the order machines are removed in, the order jobs are submitted
in (within a band; the engine schedules higher bands first), and relaxed randomization's order. A
workload **fits** a set of machines when the Fauxmaster (`engine.simulate`, the extender's scheduler
with preemption; quota is not applied) leaves no task pending and every alloc set fully reserved.

The search is a binary search for the smallest number of machines that fits (kept machines: the
first k of the trial's keep order). It is monotone in the predicate: if workload A fits wherever
workload B does (A's tasks are placed exactly as within B's run, e.g. B is A plus best-effort jobs),
A is never reported to need more machines than B; and a workload that fits on all N machines is
never reported to need more than N. Sizes below what the machines' total capacity could hold are
answered without simulating.

The experiments (§5.1-5.5): segregating prod and non-prod into their own cells; one cell per large
user; requests rounded up to powers of two; requests bucketed into a few machine-like shapes.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cell.errors import CellError
from cell.sim.engine import ENOUGH_FEASIBLE, SimOptions, simulate
from cell.sim.generate import ZONES, cell_document, demand, generate
from cell.sim.snapshot import Manifest, SimCell, compact_cell
from cell.sim.workload import AllocSpec, JobSpec, Workload
from scheduler_ext.policy.allocs import RESERVED
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.model import RACK_LABEL, ZONE_LABEL
from scheduler_ext.policy.resources import Resources, format_cpu, format_memory, parse_cpu, parse_memory

DEFAULT_TRIALS = 11  # Borg §5.1: 11 trials
PERCENTILE = 90
MIB = 2**20


@dataclass(frozen=True)
class Pool:
    """The machines compaction may use, as Node objects (the cell to shrink)."""

    nodes: tuple[Manifest, ...]

    @property
    def names(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.nodes]

    def capacity(self, names: Sequence[str]) -> Resources:
        total = Resources()
        by_name = {n["metadata"]["name"]: n for n in self.nodes}
        for name in names:
            allocatable = (by_name[name].get("status") or {}).get("allocatable") or {}
            total = total + Resources(parse_cpu(allocatable.get("cpu", 0)), parse_memory(allocatable.get("memory", 0)))
        return total


MACHINES_PER_RACK = 4  # small racks, so that a compacted cell still has enough for alloc sets spread by rack


def generated_pool(machines: int) -> Pool:
    """`cell sim generate`'s machine mix, racks of `MACHINES_PER_RACK` dealt round-robin over the zones."""
    nodes = compact_cell(cell_document(machines), f"generated pool of {machines} machines").nodes
    for index, node in enumerate(nodes):
        rack = index // MACHINES_PER_RACK
        node["metadata"]["labels"][RACK_LABEL] = f"rack-{rack + 1}"
        node["metadata"]["labels"][ZONE_LABEL] = ZONES[rack % len(ZONES)]
    return Pool(tuple(nodes))


def _key(*parts: object) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


def keep_order(pool: Pool, seed: int, trial: int) -> list[str]:
    """Machines in the order compaction keeps them: the last removed first (a seeded permutation)."""
    names = pool.names
    random.Random(f"{seed}/{trial}/machines").shuffle(names)
    return names


def permuted(load: Workload, seed: int, trial: int) -> Workload:
    """The workload's jobs and allocs in a seeded order that depends on each job alone: a sub-workload's
    order is the restriction of its superset's."""
    def order(item: JobSpec | AllocSpec) -> str:
        return _key(seed, trial, item.key)

    return Workload(tuple(sorted(load.allocs, key=order)), tuple(sorted(load.jobs, key=order)))


@dataclass
class Fitter:
    """Does a workload fit a set of machines? The Fauxmaster's pass, counted."""

    enough_feasible: int = ENOUGH_FEASIBLE
    simulations: int = 0

    def fits(self, pool: Pool, names: Sequence[str], load: Workload, seed: int) -> bool:
        kept = set(names)
        cell = SimCell("compaction", nodes=[n for n in pool.nodes if n["metadata"]["name"] in kept])
        self.simulations += 1
        result = simulate(cell, load, SimOptions(seed=seed, enough_feasible=self.enough_feasible))
        return not result.pending and all(a.phase == RESERVED for a in result.allocs)


def compact_once(pool: Pool, load: Workload, seed: int, trial: int, fitter: Fitter) -> int | None:
    """The fewest machines (of this trial's keep order) the workload fits on; None if not even all."""
    if not load.jobs and not load.allocs:
        return 0
    order = keep_order(pool, seed, trial)
    trial_load = permuted(load, seed, trial)
    engine_seed = seed * 1000 + trial
    asked = demand(load)
    cache: dict[int, bool] = {}

    def fits(k: int) -> bool:
        if k not in cache:
            capacity = pool.capacity(order[:k])
            # Below the total capacity nothing can fit: answered without simulating (the answer the
            # simulation would give, so the search stays monotone in the workload).
            cache[k] = asked.fits_in(capacity) and fitter.fits(pool, order[:k], trial_load, engine_seed)
        return cache[k]

    if not fits(len(order)):
        return None
    lo, hi = 1, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def percentile(values: Sequence[int], pct: float = PERCENTILE) -> int:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


@dataclass(frozen=True)
class Compaction:
    """One workload's compacted sizes, trial by trial, and their 90th percentile."""

    label: str
    sizes: tuple[int, ...]
    tasks: int
    demand: Resources

    @property
    def p90(self) -> int:
        return percentile(self.sizes)


def compact(pool: Pool, load: Workload, label: str, trials: int, seed: int, fitter: Fitter) -> Compaction:
    sizes = []
    for trial in range(trials):
        size = compact_once(pool, load, seed, trial, fitter)
        if size is None:
            raise CellError(f"{label}: the workload does not fit even on all {len(pool.nodes)} machines of the "
                            "pool; give a bigger --pool or fewer --tasks")
        sizes.append(size)
    return Compaction(label, tuple(sizes), load.task_count, demand(load))


# --- workload transformations (the policies compared) ----------------------------------------------

def only_bands(load: Workload, prod: bool) -> Workload:
    """The prod (monitoring, production) or the non-prod part of a workload."""
    return Workload(tuple(a for a in load.allocs if Band.from_label(a.band).is_prod == prod),
                    tuple(j for j in load.jobs if Band.from_label(j.band).is_prod == prod))


def by_namespace(load: Workload, namespaces: set[str], inside: bool) -> Workload:
    return Workload(tuple(a for a in load.allocs if (a.namespace in namespaces) == inside),
                    tuple(j for j in load.jobs if (j.namespace in namespaces) == inside))


def large_users(load: Workload, count: int) -> list[str]:
    """The `count` namespaces asking for most (cpu share + memory share, over the whole workload)."""
    total = demand(load)
    per: dict[str, float] = {}
    for namespace in {j.namespace for j in load.jobs} | {a.namespace for a in load.allocs}:
        asked = demand(by_namespace(load, {namespace}, True))
        per[namespace] = asked.cpu / max(total.cpu, 1) + asked.memory / max(total.memory, 1)
    return sorted(per, key=lambda ns: (-per[ns], ns))[:count]


def _map_requests(load: Workload, change: Callable[[Resources, str], Resources]) -> Workload:
    """Every job's and alloc's requests changed; a member's request and its alloc change alike."""
    def mapped(requests: Mapping[str, str], key: str) -> dict[str, str]:
        new = change(Resources.parse(dict(requests)), key)
        return {"cpu": format_cpu(new.cpu), "memory": format_memory(new.memory) if new.memory % MIB == 0
                else str(new.memory)}

    allocs = tuple(replace(a, resources=mapped(a.resources, a.key)) for a in load.allocs)
    jobs = tuple(replace(j, requests=mapped(j.requests, f"{j.namespace}/{j.alloc}" if j.alloc else j.key))
                 for j in load.jobs)
    return Workload(allocs, jobs)


def fine_grained(load: Workload, spread: float, seed: int) -> Workload:
    """Requests as users really ask (Borg Fig. 7: no obvious sizes): each job's cpu and memory scaled
    by its own factor in [e^-spread, e^spread] (log-uniform), cpu to the milli-core, memory to the MiB."""
    if spread <= 0:
        return load

    def change(requests: Resources, key: str) -> Resources:
        rng = random.Random(f"{seed}/{key}/jitter")
        cpu = max(1, round(requests.cpu * math.exp(rng.uniform(-spread, spread))))
        memory = max(1, round(requests.memory * math.exp(rng.uniform(-spread, spread)) / MIB)) * MIB
        return Resources(cpu, memory)

    return _map_requests(load, change)


def _next_power_of_two(value: int, base: int) -> int:
    if value <= base:
        return base
    return base * 2 ** math.ceil(math.log2(value / base))


def powers_of_two(load: Workload, cpu_base: int = 1, memory_base: int = MIB) -> Workload:
    """Every request rounded up to the next power of two times a base (default 1 millicore, 1 MiB)."""
    return _map_requests(load, lambda r, _: Resources(_next_power_of_two(r.cpu, cpu_base),
                                                      _next_power_of_two(r.memory, memory_base)))


# Machine-like shapes (cpu milli, memory bytes), 1 core : 4 GiB, as cloud instance types come.
BUCKETS: tuple[Resources, ...] = tuple(Resources(cpu, cpu * 4 * MIB * 1024 // 1000)
                                       for cpu in (250, 500, 1000, 2000, 4000, 8000, 16000))


def bucketed(load: Workload, buckets: Sequence[Resources] = BUCKETS) -> Workload:
    """Every request replaced by the smallest bucket holding it in both dimensions (a few t-shirt
    sizes instead of fine-grained requests); a request bigger than every bucket keeps its size."""
    def change(requests: Resources, _: str) -> Resources:
        return next((b for b in buckets if requests.fits_in(b)), requests)

    return _map_requests(load, change)


# --- the experiments -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Experiment:
    """A baseline and an alternative; the alternative may be several cells (summed per trial)."""

    name: str
    question: str
    baseline: Compaction
    parts: tuple[Compaction, ...]  # the alternative's cells
    borg: str  # what Borg §5 reports

    @property
    def totals(self) -> tuple[int, ...]:
        return tuple(sum(p.sizes[i] for p in self.parts) for i in range(len(self.baseline.sizes)))

    @property
    def alternative_p90(self) -> int:
        return percentile(self.totals)

    @property
    def overhead(self) -> float:
        """Extra machines of the alternative over the baseline, in percent (both at the 90th percentile)."""
        base = self.baseline.p90
        return 100.0 * (self.alternative_p90 - base) / base if base else 0.0

    @property
    def per_trial_overheads(self) -> tuple[float, ...]:
        return tuple(100.0 * (t - b) / b if b else 0.0 for t, b in zip(self.totals, self.baseline.sizes,
                                                                         strict=True))


EXPERIMENTS = ("segregate", "users", "powers-of-two", "buckets")
BORG_RANGES = {
    "segregate": "segregating prod and non-prod: 20-30% more machines in the median cell (§5.1, Fig. 5)",
    "users": "users with their own cells: 20-150% more machines (§5.2, Fig. 6)",
    "powers-of-two": "requests rounded up to powers of two: 30-50% more resources in the median case (§5.4, Fig. 8)",
    "buckets": "bucketed instead of fine-grained requests: 30-50% more resources in the median case (§5.4, Fig. 8)",
}


@dataclass(frozen=True)
class CompactOptions:
    trials: int = DEFAULT_TRIALS
    seed: int = 0
    users: int = 3  # large users given their own cells
    enough_feasible: int = ENOUGH_FEASIBLE


def run_experiment(name: str, pool: Pool, load: Workload, options: CompactOptions, fitter: Fitter,
                   baseline: Compaction | None = None) -> Experiment:
    trials, seed = options.trials, options.seed

    def run(part: Workload, label: str) -> Compaction:
        return compact(pool, part, label, trials, seed, fitter)

    base = baseline or run(load, "one shared cell")
    parts: tuple[Compaction, ...]
    if name == "segregate":
        parts = (run(only_bands(load, True), "prod cell"), run(only_bands(load, False), "non-prod cell"))
        question = "prod and non-prod in separate cells vs one shared cell"
    elif name == "users":
        users = large_users(load, options.users)
        parts = tuple(run(by_namespace(load, {u}, True), f"cell of {u}") for u in users)
        rest = by_namespace(load, set(users), False)
        if rest.jobs or rest.allocs:
            parts += (run(rest, "cell of everyone else"),)
        question = f"the {len(users)} largest users in cells of their own vs one shared cell"
    elif name == "powers-of-two":
        parts = (run(powers_of_two(load), "requests rounded up to powers of two"),)
        question = "requests rounded up to powers of two vs exact"
    elif name == "buckets":
        parts = (run(bucketed(load), "requests bucketed into 1:4 shapes"),)
        question = "requests bucketed into a few machine-like shapes vs fine-grained"
    else:
        raise CellError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return Experiment(name, question, base, parts, BORG_RANGES[name])


def experiment_summary(experiment: Experiment) -> dict[str, Any]:
    def part(c: Compaction) -> dict[str, Any]:
        return {"label": c.label, "tasks": c.tasks, "demand": c.demand.to_dict(), "sizes": list(c.sizes),
                "p90": c.p90}

    return {"experiment": experiment.name, "question": experiment.question, "baseline": part(experiment.baseline),
            "parts": [part(p) for p in experiment.parts], "totals": list(experiment.totals),
            "alternativeP90": experiment.alternative_p90, "overheadPercent": round(experiment.overhead, 1),
            "perTrialOverheadPercent": [round(o, 1) for o in experiment.per_trial_overheads],
            "borg": experiment.borg}


@dataclass(frozen=True)
class Study:
    """One `cell sim compact`: the plain compaction and the experiments asked for."""

    baseline: Compaction
    experiments: tuple[Experiment, ...]
    simulations: int

    def experiment(self, name: str) -> Experiment:
        return next(e for e in self.experiments if e.name == name)


def study(pool: Pool, load: Workload, experiments: Sequence[str], options: CompactOptions,
          progress: Callable[[str], None] = lambda name: None) -> Study:
    fitter = Fitter(options.enough_feasible)
    baseline = compact(pool, load, "one shared cell", options.trials, options.seed, fitter)
    results = []
    for name in experiments:
        progress(name)
        results.append(run_experiment(name, pool, load, options, fitter, baseline))
    return Study(baseline, tuple(results), fitter.simulations)


def generated_study(machines: int, tasks: int, teams: int, jitter: float, workload_seed: int,
                    experiments: Sequence[str], options: CompactOptions,
                    progress: Callable[[str], None] = lambda name: None) -> Study:
    """`cell sim compact --machines M --tasks T --teams U --jitter J --workload-seed W` (what exp5 grades)."""
    _, load = generate(machines, tasks, workload_seed, teams)
    return study(generated_pool(machines), fine_grained(load, jitter, workload_seed), experiments, options, progress)

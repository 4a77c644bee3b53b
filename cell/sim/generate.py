"""Synthetic cells and workloads with the shapes Borg reports (§2, §5): heterogeneous machines; many
small batch tasks in large jobs, fewer and larger prod tasks; a few prod jobs in alloc sets; job sizes
heavy-tailed (most jobs are small, a few are huge); requests quantized to a small menu of sizes (so a
cell's tasks fall into few equivalence classes, as Borg's do).

Everything is drawn from one `random.Random(seed)`: the same seed gives the same files.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from cell.sim.snapshot import SIM_API_VERSION
from cell.sim.workload import AllocSpec, JobSpec, Workload
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.model import RACK_LABEL
from scheduler_ext.policy.quota import bands_manifest
from scheduler_ext.policy.resources import Resources, parse_cpu, parse_memory

MACHINES_PER_RACK = 40
ZONES = ("zone-a", "zone-b", "zone-c")

# (cpu, memory, share of the cell): several platforms, as in a real cell.
MACHINE_SHAPES: tuple[tuple[str, str, float], ...] = (
    ("4", "16Gi", 0.25),
    ("8", "32Gi", 0.40),
    ("16", "64Gi", 0.25),
    ("16", "128Gi", 0.05),  # high-memory
    ("32", "128Gi", 0.05),
)


@dataclass(frozen=True)
class BandProfile:
    """How one band's jobs look: share of all tasks, job size (log-normal), request menus."""

    band: str
    task_share: float
    median_tasks: float
    sigma: float
    max_tasks: int
    cpus: tuple[tuple[str, float], ...]
    memories: tuple[tuple[str, float], ...]


PROFILES: tuple[BandProfile, ...] = (
    BandProfile("monitoring", 0.02, 3, 0.8, 50, (("100m", 0.6), ("250m", 0.4)), (("128Mi", 0.5), ("256Mi", 0.5))),
    BandProfile("production", 0.20, 8, 1.2, 500, (("500m", 0.2), ("1", 0.35), ("2", 0.3), ("4", 0.15)),
                (("2Gi", 0.3), ("4Gi", 0.4), ("8Gi", 0.3))),
    BandProfile("batch", 0.60, 20, 1.5, 2000,
                (("100m", 0.15), ("250m", 0.3), ("500m", 0.3), ("1", 0.2), ("2", 0.05)),
                (("256Mi", 0.2), ("512Mi", 0.3), ("1Gi", 0.3), ("2Gi", 0.15), ("4Gi", 0.05))),
    BandProfile("best-effort", 0.18, 10, 1.2, 500, (("100m", 0.4), ("250m", 0.4), ("500m", 0.2)),
                (("128Mi", 0.3), ("256Mi", 0.3), ("512Mi", 0.3), ("1Gi", 0.1))),
)
ALLOC_SHARE = 0.05  # of small production jobs, which run in an alloc set of their own
ALLOC_MAX_TASKS = 12
QUOTA_HEADROOM = {"monitoring": 1.1, "production": 1.1, "batch": 1.25}


def _pick(rng: random.Random, menu: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([value for value, _ in menu], weights=[weight for _, weight in menu])[0]


def machine_counts(machines: int) -> list[int]:
    """How many machines of each shape (largest remainders, so the counts sum to `machines`)."""
    exact = [machines * share for _, _, share in MACHINE_SHAPES]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
    for i in order[: machines - sum(counts)]:
        counts[i] += 1
    return counts


def cell_document(machines: int, quotas: dict[str, dict[str, dict[str, str]]] | None = None) -> dict[str, Any]:
    """A compact `kind: Cell` document (see cell.sim.snapshot) of `machines` machines.

    A rack holds one platform (machines are bought and installed a rack at a time); racks are dealt
    round-robin over the zones, and the platforms' racks are interleaved in machine order, as a cell
    grown over several hardware generations is.
    """
    racks: list[tuple[float, dict[str, Any]]] = []
    for (cpu, memory, _), count in zip(MACHINE_SHAPES, machine_counts(machines), strict=True):
        full, rest = divmod(count, MACHINES_PER_RACK)
        sizes = [MACHINES_PER_RACK] * full + ([rest] if rest else [])
        for i, size in enumerate(sizes):
            racks.append(((i + 0.5) / len(sizes), {"count": size, "cpu": cpu, "memory": memory, "pods": 110,
                                                   "labels": {"cell.distos.dev/platform": f"{cpu}c-{memory}"}}))
    racks.sort(key=lambda item: item[0])
    shapes = [{**rack, "zones": [ZONES[i % len(ZONES)]]} for i, (_, rack) in enumerate(racks)]
    document: dict[str, Any] = {"apiVersion": SIM_API_VERSION, "kind": "Cell", "machines": shapes}
    if quotas:
        document["quotas"] = quotas
    return document


def cell_capacity(machines: int) -> Resources:
    total = Resources()
    for (cpu, memory, _), count in zip(MACHINE_SHAPES, machine_counts(machines), strict=True):
        total = total + Resources(parse_cpu(cpu), parse_memory(memory)).scale(count)
    return total


def workload(tasks: int, rng: random.Random, teams: int) -> Workload:
    """Jobs until `tasks` tasks, each band getting its share; teams weighted Zipf-like."""
    team_names = [f"team-{i + 1}" for i in range(teams)]
    team_weights = [1 / (i + 1) for i in range(teams)]
    jobs: list[JobSpec] = []
    allocs: list[AllocSpec] = []
    for profile in PROFILES:
        budget = round(tasks * profile.task_share)
        if profile is PROFILES[-1]:
            budget = tasks - sum(job.tasks for job in jobs)  # the last band takes the rounding
        made = 0
        while made < budget:
            size = max(1, min(profile.max_tasks, round(rng.lognormvariate(math.log(profile.median_tasks),
                                                                         profile.sigma))))
            size = min(size, budget - made)
            namespace = rng.choices(team_names, weights=team_weights)[0]
            name = f"{profile.band[:4]}-{len(jobs) + 1}"
            requests = {"cpu": _pick(rng, profile.cpus), "memory": _pick(rng, profile.memories)}
            alloc = None
            if profile.band == "production" and size <= ALLOC_MAX_TASKS and rng.random() < ALLOC_SHARE:
                alloc = name
                allocs.append(AllocSpec(name, namespace, profile.band, size, dict(requests), RACK_LABEL))
            jobs.append(JobSpec(name, namespace, profile.band, size, requests, {}, alloc))
            made += size
    return Workload(tuple(allocs), tuple(jobs))


def team_quotas(load: Workload, capacity: Resources) -> dict[str, dict[str, dict[str, str]]]:
    """Each team's demand per band with headroom; prod scaled down if it would oversell the cell (Q6).

    Best-effort stays unlimited (Borg's free quota)."""
    charged: list[tuple[str, str, Resources]] = [
        (a.namespace, a.band, Resources.parse(dict(a.resources)).scale(a.count)) for a in load.allocs]
    charged += [(j.namespace, j.band, Resources.parse(dict(j.requests)).scale(j.tasks))
                for j in load.jobs if not j.alloc]  # members are charged through their alloc (A4)
    demand: dict[str, dict[Band, Resources]] = {}
    for namespace, label, amount in charged:
        if label in QUOTA_HEADROOM:
            team = demand.setdefault(namespace, {})
            band = Band.from_label(label)
            team[band] = team.get(band, Resources()) + amount

    def rounded(amount: Resources, factor: float, up: bool) -> Resources:
        step = math.ceil if up else math.floor
        return Resources(step(amount.cpu * factor / 1000) * 1000, step(amount.memory * factor / 2**30) * 2**30)

    limits = {team: {band: rounded(r, QUOTA_HEADROOM[band.label], True) for band, r in bands.items()}
              for team, bands in demand.items()}
    prod = Resources()
    for bands in limits.values():
        for band, r in bands.items():
            if band.is_prod:
                prod = prod + r
    # Q6: prod quota may not exceed what the cell can deliver; scale every team's prod quota down alike.
    factor = min(1.0, capacity.cpu / prod.cpu if prod.cpu else 1.0,
                 capacity.memory / prod.memory if prod.memory else 1.0)
    if factor < 1.0:
        for bands in limits.values():
            for band in [b for b in bands if b.is_prod]:
                bands[band] = rounded(bands[band], factor, False)
    return {team: bands_manifest(bands) for team, bands in sorted(limits.items())}


def generate(machines: int, tasks: int, seed: int = 0, teams: int | None = None) -> tuple[dict[str, Any], Workload]:
    """A cell document (machines + team quotas) and a workload of `tasks` tasks."""
    if machines < 1 or tasks < 1:
        raise ValueError("machines and tasks must be positive")
    rng = random.Random(seed)
    load = workload(tasks, rng, teams or max(3, min(50, tasks // 500)))
    quotas = team_quotas(load, cell_capacity(machines))
    return cell_document(machines, quotas), load


def demand(load: Workload) -> Resources:
    """Everything the workload asks for: tasks outside allocs, plus alloc reservations."""
    total = Resources()
    for job in load.jobs:
        if not job.alloc:
            total = total + Resources.parse(dict(job.requests)).scale(job.tasks)
    for alloc in load.allocs:
        total = total + Resources.parse(dict(alloc.resources)).scale(alloc.count)
    return total

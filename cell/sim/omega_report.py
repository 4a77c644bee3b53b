"""`cell sim omega`'s experiments: sweeps of the Omega simulation, their CSV, charts and console table.

The charts are the shapes of the Omega paper's (EuroSys 2013) figures; docs/sim/omega.md puts each
beside the figure it corresponds to.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cell.sim.omega import (
    BATCH,
    KINDS,
    SERVICE,
    Architecture,
    Commit,
    Conflicts,
    DecisionTime,
    OmegaOptions,
    OmegaResult,
    simulate_omega,
)

DEFAULT_T_JOBS = (0.1, 1.0, 10.0, 30.0, 100.0)
DEFAULT_LOADS = (0.5, 1.0, 1.5, 2.0)
DEFAULT_LOAD_T_JOB = 10.0
VARIANTS = tuple((c, m) for m in Commit for c in Conflicts)  # fine/incremental first: Omega's default


def parse_variant(text: str) -> tuple[Conflicts, Commit]:
    """"fine/incremental", "coarse/gang", ...: conflict detection / commit mode."""
    conflicts, _, commit = text.partition("/")
    try:
        return Conflicts(conflicts.strip()), Commit(commit.strip())
    except ValueError:
        raise ValueError(f"variant {text!r}: expected CONFLICTS/COMMIT with CONFLICTS fine or coarse and "
                         "COMMIT incremental or gang (e.g. fine/incremental)") from None


def variant_name(conflicts: Conflicts, commit: Commit) -> str:
    return f"{conflicts.value}/{commit.value}"


@dataclass(frozen=True)
class Sweep:
    """Every run of one `cell sim omega`: monolithic and shared-state variants over t_job(service),
    then the main shared-state variant over batch load."""

    base: OmegaOptions
    t_jobs: tuple[float, ...]
    variants: tuple[tuple[Conflicts, Commit], ...]
    loads: tuple[float, ...]
    load_t_job: float
    results: tuple[OmegaResult, ...] = ()

    def with_service_time(self, t_job: float, **changes: Any) -> OmegaOptions:
        return replace(self.base, service_time=DecisionTime(t_job, self.base.service_time.t_task), **changes)

    def runs(self) -> list[OmegaOptions]:
        runs = []
        for t_job in self.t_jobs:
            runs.append(self.with_service_time(t_job, architecture=Architecture.MONOLITHIC))
            for conflicts, commit in self.variants:
                runs.append(self.with_service_time(t_job, architecture=Architecture.SHARED_STATE,
                                                   conflicts=conflicts, commit=commit))
        main = self.variants[0] if self.variants else (Conflicts.FINE, Commit.INCREMENTAL)
        for load in self.loads:
            runs.append(self.with_service_time(self.load_t_job, architecture=Architecture.SHARED_STATE,
                                               conflicts=main[0], commit=main[1], load=load))
        return runs

    def run(self, progress: Callable[[int, int, OmegaOptions], None] = lambda i, n, o: None) -> Sweep:
        runs = self.runs()
        results = []
        for i, options in enumerate(runs):
            progress(i, len(runs), options)
            results.append(simulate_omega(options))
        return replace(self, results=tuple(results))

    # --- views of the results

    def over_t_job(self, architecture: Architecture, variant: tuple[Conflicts, Commit] | None = None,
                   load: float = 1.0) -> list[OmegaResult]:
        """The runs of one architecture (and variant) at the base load, by t_job(service)."""
        picked = [r for r in self.results if r.options.architecture is architecture and r.options.load == load
                  and (variant is None or (r.options.conflicts, r.options.commit) == variant)]
        seen: dict[float, OmegaResult] = {}
        for result in picked:
            seen.setdefault(result.options.service_time.t_job, result)
        return [seen[t] for t in sorted(seen) if t in self.t_jobs]

    def over_load(self) -> list[OmegaResult]:
        main = self.variants[0] if self.variants else (Conflicts.FINE, Commit.INCREMENTAL)
        found = {r.options.load: r for r in self.results
                 if r.options.architecture is Architecture.SHARED_STATE and (r.options.conflicts, r.options.commit)
                 == main and r.options.service_time.t_job == self.load_t_job}
        return [found[load] for load in sorted(found) if load in self.loads]


# --- files ---------------------------------------------------------------------------------------

CSV_HEADER = ["architecture", "conflicts", "commit", "load", "t_job_service", "t_task_service", "t_job_batch",
              "t_task_batch", "scheduler", "kinds", "busyness", "transactions", "conflicted", "conflict_fraction",
              "claims", "tasks_redone", "seconds_redone", "attempts", "no_room_attempts",
              *(f"{k}_{m}" for k in KINDS for m in ("jobs", "mean_wait_s", "p90_wait_s", "mean_time_to_schedule_s",
                                                      "unscheduled", "abandoned")),
              "tasks_placed", "cpu_utilisation"]


def csv_rows(results: Sequence[OmegaResult]) -> list[list[Any]]:
    rows = []
    for result in results:
        o = result.options
        per_kind = [v for k in KINDS for v in (
            result.kinds[k].jobs, round(result.kinds[k].mean_wait, 3), round(result.kinds[k].p90_wait, 3),
            round(result.kinds[k].mean_time_to_schedule, 3), result.kinds[k].unscheduled, result.kinds[k].abandoned)]
        for agent in result.agents:
            rows.append([o.architecture.value, o.conflicts.value if o.architecture is Architecture.SHARED_STATE else "",
                         o.commit.value if o.architecture is Architecture.SHARED_STATE else "", o.load,
                         o.service_time.t_job, o.service_time.t_task, o.batch_time.t_job, o.batch_time.t_task,
                         agent.name, "+".join(agent.kinds), round(agent.busyness, 4), agent.transactions,
                         agent.conflicted, round(agent.conflict_fraction, 4), agent.claims, agent.tasks_redone,
                         round(agent.seconds_redone, 2), agent.attempts, agent.no_room, *per_kind,
                         result.tasks_placed, round(result.cpu_utilisation, 4)])
    return rows


def summary(sweep: Sweep) -> dict[str, Any]:
    """The JSON summary: per t_job(service), what each chart plots."""
    def point(result: OmegaResult) -> dict[str, Any]:
        return {"tJobService": result.options.service_time.t_job, "load": result.options.load,
                "waitSeconds": {k: round(result.kinds[k].mean_wait, 3) for k in KINDS},
                "busyness": {a.name: round(a.busyness, 4) for a in result.agents},
                "conflictFraction": {a.name: round(a.conflict_fraction, 4) for a in result.agents},
                "tasksRedone": {a.name: a.tasks_redone for a in result.agents},
                "cpuUtilisation": round(result.cpu_utilisation, 4)}

    return {
        "seed": sweep.base.seed, "machines": sweep.base.machines, "hours": sweep.base.hours,
        "monolithic": [point(r) for r in sweep.over_t_job(Architecture.MONOLITHIC)],
        "sharedState": {variant_name(*v): [point(r) for r in sweep.over_t_job(Architecture.SHARED_STATE, v)]
                        for v in sweep.variants},
        "load": [point(r) for r in sweep.over_load()],
    }


def write_outputs(sweep: Sweep, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = out / "omega.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerows(csv_rows(sweep.results))
    summary_path = out / "omega-summary.json"
    summary_path.write_text(json.dumps(summary(sweep), indent=2) + "\n")
    return [table, summary_path, *write_charts(sweep, out)]


# --- charts --------------------------------------------------------------------------------------

COLOURS = {BATCH: "#2c7bb6", SERVICE: "#d7191c", "monolithic": "#636363"}
VARIANT_STYLES = {"fine/incremental": ("#1a9641", "o"), "coarse/incremental": ("#fdae61", "s"),
                  "fine/gang": ("#7b3294", "^"), "coarse/gang": ("#d7191c", "D")}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _t_job_axis(ax: Any, title: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("t_job(service) [s] (service scheduler's decision time per job)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def write_charts(sweep: Sweep, out: Path) -> list[Path]:
    plt = _pyplot()
    written: list[Path] = []
    mono = sweep.over_t_job(Architecture.MONOLITHIC)
    main = sweep.variants[0] if sweep.variants else None
    shared = sweep.over_t_job(Architecture.SHARED_STATE, main) if main else []
    label = variant_name(*main) if main else ""
    if mono or shared:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for results, name, style in ((mono, "monolithic", "--"), (shared, f"shared-state ({label})", "-")):
            xs = [r.options.service_time.t_job for r in results]
            for kind in KINDS:
                if results:
                    ax.plot(xs, [r.kinds[kind].mean_wait for r in results], style, marker="o", color=COLOURS[kind],
                            label=f"{name}: {kind} jobs")
        ax.set_yscale("symlog", linthresh=0.1)
        _t_job_axis(ax, "Mean job wait time (submission to first attempt)", "wait [s] (symlog)")
        written.append(_save(fig, out / "omega-wait.png"))

        fig, ax = plt.subplots(figsize=(7, 4.5))
        if mono:
            ax.plot([r.options.service_time.t_job for r in mono], [r.agents[0].busyness for r in mono], "--",
                    marker="o", color=COLOURS["monolithic"], label="monolithic scheduler")
        for kind in KINDS:
            if shared:
                ax.plot([r.options.service_time.t_job for r in shared], [r.agent_for(kind).busyness for r in shared],
                        "-", marker="o", color=COLOURS[kind], label=f"shared-state ({label}): {kind} scheduler")
        ax.set_ylim(0, 1.05)
        _t_job_axis(ax, "Scheduler busyness (share of time spent deciding)", "busyness")
        written.append(_save(fig, out / "omega-busyness.png"))

    if sweep.variants:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        for variant in sweep.variants:
            name = variant_name(*variant)
            results = sweep.over_t_job(Architecture.SHARED_STATE, variant)
            colour, marker = VARIANT_STYLES[name]
            xs = [r.options.service_time.t_job for r in results]
            left.plot(xs, [r.agent_for(SERVICE).conflict_fraction for r in results], marker=marker, color=colour,
                      label=f"{name}: service")
            left.plot(xs, [r.agent_for(BATCH).conflict_fraction for r in results], ":", marker=marker, color=colour,
                      label=f"{name}: batch", alpha=0.6)
            right.plot(xs, [sum(a.tasks_redone for a in r.agents) for r in results], marker=marker, color=colour,
                       label=name)
        _t_job_axis(left, "Conflict fraction (transactions refused at least in part)", "conflict fraction")
        _t_job_axis(right, "Work redone (task placements refused or discarded)", "tasks placed again")
        written.append(_save(fig, out / "omega-conflicts.png"))

    loads = sweep.over_load()
    if loads:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [r.options.load for r in loads]
        for kind in KINDS:
            ax.plot(xs, [r.agent_for(kind).conflict_fraction for r in loads], marker="o", color=COLOURS[kind],
                    label=f"{kind} scheduler: conflict fraction")
            ax.plot(xs, [r.agent_for(kind).busyness for r in loads], "--", marker="x", color=COLOURS[kind],
                    label=f"{kind} scheduler: busyness")
        ax.set_xlabel(f"batch job arrival rate (x default); t_job(service) = {sweep.load_t_job:g} s")
        ax.set_title("Conflicts grow with load", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out / "omega-load.png"))
    return written


# --- console -------------------------------------------------------------------------------------

def render(sweep: Sweep, console: Console) -> None:
    mono = {r.options.service_time.t_job: r for r in sweep.over_t_job(Architecture.MONOLITHIC)}
    main = sweep.variants[0] if sweep.variants else None
    shared = {r.options.service_time.t_job: r for r in sweep.over_t_job(Architecture.SHARED_STATE, main)} if main \
        else {}
    by_variant = {v: {r.options.service_time.t_job: r for r in sweep.over_t_job(Architecture.SHARED_STATE, v)}
                  for v in sweep.variants}
    table = Table(title=f"Omega: monolithic vs shared state ({sweep.base.machines} machines, "
                        f"{sweep.base.hours:g} h, seed {sweep.base.seed}); waits batch / service")
    table.add_column("t_job(svc)", justify="right")
    table.add_column("monolithic wait", justify="right")
    table.add_column("busy", justify="right")
    if main:
        table.add_column(f"{variant_name(*main)} wait", justify="right")
        table.add_column("busy b / s", justify="right")
    names = " / ".join(variant_name(*v) for v in sweep.variants)
    if sweep.variants:
        table.add_column(f"service conflict fraction\n{names}", justify="right")
        table.add_column("tasks redone", justify="right")
    for t_job in sweep.t_jobs:
        row = [f"{t_job:g} s"]
        m = mono.get(t_job)
        row += [f"{m.kinds[BATCH].mean_wait:.1f} / {m.kinds[SERVICE].mean_wait:.1f} s", f"{m.agents[0].busyness:.2f}"] \
            if m else ["-", "-"]
        if main:
            s = shared.get(t_job)
            row += [f"{s.kinds[BATCH].mean_wait:.1f} / {s.kinds[SERVICE].mean_wait:.1f} s",
                    f"{s.agent_for(BATCH).busyness:.2f} / {s.agent_for(SERVICE).busyness:.2f}"] if s else ["-", "-"]
        if sweep.variants:
            found = [by_variant[v].get(t_job) for v in sweep.variants]
            row.append(" / ".join(f"{r.agent_for(SERVICE).conflict_fraction:.2f}" if r else "-" for r in found))
            row.append(" / ".join(str(sum(a.tasks_redone for a in r.agents)) if r else "-" for r in found))
        table.add_row(*row)
    console.print(table)
    loads = sweep.over_load()
    if loads:
        console.print("conflict fraction of the service scheduler by batch load (t_job(service) "
                      f"{sweep.load_t_job:g} s): " + ", ".join(
                          f"x{r.options.load:g}: {r.agent_for(SERVICE).conflict_fraction:.2f}" for r in loads),
                      highlight=False, soft_wrap=True)

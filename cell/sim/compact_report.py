"""`cell sim compact`'s files, charts and console table (docs/sim/compact.md shows them beside Borg §5)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cell.sim.compact import Compaction, Experiment, experiment_summary, percentile

# Borg §5's reported ranges, in percent more machines (drawn as a band on the overview chart).
BORG_BANDS = {"segregate": (20.0, 30.0), "users": (20.0, 150.0), "powers-of-two": (30.0, 50.0),
              "buckets": (30.0, 50.0)}


def summary(baseline: Compaction, experiments: Sequence[Experiment], meta: dict[str, Any]) -> dict[str, Any]:
    return {**meta, "baseline": {"label": baseline.label, "sizes": list(baseline.sizes), "p90": baseline.p90,
                                 "tasks": baseline.tasks, "demand": baseline.demand.to_dict()},
            "experiments": [experiment_summary(e) for e in experiments]}


def write_outputs(baseline: Compaction, experiments: Sequence[Experiment], meta: dict[str, Any],
                  out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = out / "compact.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "cell", "trial", "machines", "tasks", "cpu_m", "memory_bytes"])
        rows: list[tuple[str, Compaction]] = [("compaction", baseline)]
        rows += [(e.name, part) for e in experiments for part in e.parts]
        for name, c in rows:
            for trial, size in enumerate(c.sizes):
                writer.writerow([name, c.label, trial, size, c.tasks, c.demand.cpu, c.demand.memory])
    summary_path = out / "compact-summary.json"
    summary_path.write_text(json.dumps(summary(baseline, experiments, meta), indent=2) + "\n")
    return [table, summary_path, *write_charts(baseline, experiments, out)]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_charts(baseline: Compaction, experiments: Sequence[Experiment], out: Path) -> list[Path]:
    plt = _pyplot()
    written = []
    # Each experiment: the shared cell's compacted size per trial beside the alternative's cells (stacked).
    for e in experiments:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        trials = range(len(baseline.sizes))
        width = 0.4
        ax.bar([t - width / 2 for t in trials], baseline.sizes, width, color="#636363", label=baseline.label)
        bottom = [0] * len(baseline.sizes)
        colours = ["#2c7bb6", "#d7191c", "#1a9641", "#fdae61", "#7b3294", "#abd9e9", "#a6611a"]
        for i, part in enumerate(e.parts):
            ax.bar([t + width / 2 for t in trials], part.sizes, width, bottom=bottom, color=colours[i % len(colours)],
                   label=part.label)
            bottom = [b + s for b, s in zip(bottom, part.sizes, strict=True)]
        ax.axhline(baseline.p90, color="#636363", linestyle="--", linewidth=1,
                   label=f"90th percentile: {baseline.p90}")
        ax.axhline(e.alternative_p90, color="#d7191c", linestyle="--", linewidth=1,
                   label=f"90th percentile: {e.alternative_p90} ({e.overhead:+.0f}%)")
        ax.set_xlabel("trial (seed: machine removal order, job order, relaxed randomization)")
        ax.set_ylabel("machines after compaction")
        ax.set_title(e.question, fontsize=10)
        ax.set_xticks(list(trials))
        ax.set_ylim(0, max(max(baseline.sizes), max(bottom)) * 1.45)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        fig.tight_layout()
        path = out / f"compact-{e.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if experiments:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = list(range(len(experiments)))
        for x, e in zip(xs, experiments, strict=True):
            low, high = BORG_BANDS[e.name]
            ax.add_patch(plt.Rectangle((x - 0.35, low), 0.7, high - low, color="#fdae61", alpha=0.35,
                                       label="Borg §5's reported range" if x == 0 else None))
            overheads = e.per_trial_overheads
            ax.scatter([x] * len(overheads), overheads, color="#2c7bb6", s=12, alpha=0.6,
                       label="Cell, per trial" if x == 0 else None)
            ax.scatter([x], [e.overhead], color="#d7191c", marker="D", s=40,
                       label="Cell, 90th percentiles" if x == 0 else None)
        ax.set_xticks(xs, [e.name for e in experiments])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel("% more machines than one shared cell / exact requests")
        ax.set_title("Cell compaction: each policy's cost, beside Borg's", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "compact-overheads.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def render(baseline: Compaction, experiments: Sequence[Experiment], console: Console) -> None:
    trials = len(baseline.sizes)
    console.print(f"compaction of {baseline.tasks} tasks (asking {baseline.demand}), {trials} trials: "
                  f"{', '.join(map(str, baseline.sizes))} machines; 90th percentile {baseline.p90} "
                  f"(median {percentile(baseline.sizes, 50)})", highlight=False, soft_wrap=True)
    if not experiments:
        return
    table = Table(title="Borg §5 experiments (90th percentile of the trials)")
    table.add_column("experiment")
    table.add_column("baseline", justify="right")
    table.add_column("alternative", justify="right")
    table.add_column("cells")
    table.add_column("more machines", justify="right")
    table.add_column("Borg §5")
    for e in experiments:
        table.add_row(e.question, str(e.baseline.p90), str(e.alternative_p90),
                      ", ".join(f"{p.label}: {p.p90}" for p in e.parts), f"{e.overhead:+.0f}%", e.borg)
    console.print(table)

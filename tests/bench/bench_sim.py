"""`make bench-sim`: Borg's scheduling-at-scale claim (§3.4) reproduced with the Fauxmaster.

1. The full run: a synthetic 10,000-machine cell (`cell sim generate` shapes) and 100,000 tasks
   scheduled from scratch by `cell sim`'s pass (quota admission, alloc sets, the policy core's
   scheduler, preemption), all three techniques on. Target: under 60 s on the course machine.
2. Each technique off in turn (equivalence classes, score caching, relaxed randomization), and all
   three off, on smaller cells of the same shape (10 tasks per machine, same generator and seed),
   where the full run would take too long. Each variant runs at two sizes; the growth between them
   gives its exponent, which projects the variant to the full cell. Projections are labelled as
   such: only the all-on full run is measured at full size.

Equivalence classes and score caching must not change a single placement (they are pure
speed-ups): the bench checks that their runs place every task exactly where the all-on run did.
`--record` writes the table into docs/benchmarks.md (section "Fauxmaster (make bench-sim)").
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from cell.sim.engine import ENOUGH_FEASIBLE, SimOptions, SimResult, Techniques, simulate  # noqa: E402
from cell.sim.generate import cell_capacity, demand, generate  # noqa: E402
from cell.sim.snapshot import compact_cell  # noqa: E402

BENCHMARKS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench-sim: begin -->", "<!-- bench-sim: end -->"
TARGET_SECONDS = 60.0
TASKS_PER_MACHINE = 10

VARIANTS: dict[str, Techniques] = {
    "all techniques on": Techniques(),
    "without equivalence classes": Techniques(equivalence_classes=False),
    "without score caching": Techniques(score_caching=False),
    "without relaxed randomization": Techniques(relaxed_randomization=False),
    "all three off": Techniques(False, False, False),
}

console = Console()


@dataclass
class Run:
    variant: str
    machines: int
    tasks: int
    seconds: float
    result: SimResult

    @property
    def examined_per_decision(self) -> float:
        stats = self.result.stats
        return stats.nodes_examined / stats.decisions if stats.decisions else 0.0

    @property
    def hit_rate(self) -> float:
        stats = self.result.stats
        lookups = stats.cache_hits + stats.cache_misses
        return stats.cache_hits / lookups if lookups else 0.0


def run(machines: int, tasks: int, techniques: Techniques, seed: int, variant: str, repeats: int = 1) -> Run:
    """The pass, `repeats` times on the same input; the fastest counts (the machine is shared)."""
    cell_doc, load = generate(machines, tasks, seed)
    cell = compact_cell(cell_doc, f"generated {machines}-machine cell")
    best: Run | None = None
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        result = simulate(cell, load, SimOptions(seed=seed, techniques=techniques))
        seconds = time.perf_counter() - started  # the pass itself, snapshot and cache set-up included
        if best is None or seconds < best.seconds:
            best = Run(variant, machines, tasks, seconds, result)
    assert best is not None
    console.print(f"  {variant:<30} {machines:>6} machines {tasks:>7} tasks: {best.seconds:8.2f} s  "
                  f"({len(best.result.placements)} placed, {len(best.result.pending)} pending, "
                  f"{best.examined_per_decision:.0f} nodes examined per decision)", highlight=False)
    return best


def same_placements(a: Run, b: Run) -> bool:
    return {k: p.node for k, p in a.result.placements.items()} == {k: p.node for k, p in b.result.placements.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--small", type=int, nargs=2, default=[250, 500], metavar=("M1", "M2"),
                        help="machines of the two ablation cells (tasks: 10 per machine)")
    parser.add_argument("--all-off", type=int, nargs=2, default=[150, 250], metavar=("M1", "M2"),
                        help="machines of the two cells for all three techniques off (slowest)")
    parser.add_argument("--repeats", type=int, default=2, help="ablation runs per measurement (fastest kept)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-full", action="store_true", help="only the ablation")
    parser.add_argument("--skip-ablation", action="store_true", help="only the full run")
    parser.add_argument("--record", action="store_true", help=f"write the table into {BENCHMARKS}")
    args = parser.parse_args()

    cell_doc, load = generate(args.machines, args.tasks, args.seed)
    capacity, asked = cell_capacity(args.machines), demand(load)
    shape = (f"{len(load.jobs)} jobs, {len(load.allocs)} alloc sets; the workload asks "
             f"{100 * asked.cpu / capacity.cpu:.0f}% of the cell's cpu and {100 * asked.memory / capacity.memory:.0f}% "
             "of its memory")
    console.print(f"[bold]Fauxmaster benchmark[/] ({platform.machine()}, {os.cpu_count()} cores, load average "
                  f"{os.getloadavg()[0]:.1f}); full cell: {args.machines} machines, {args.tasks} tasks, {shape}",
                  highlight=False)
    del cell_doc, load

    full: Run | None = None
    if not args.skip_full:
        console.print("[bold]Full run[/]")
        full = run(args.machines, args.tasks, VARIANTS["all techniques on"], args.seed, "all techniques on")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows: list[list[str]] = []
    ok = True
    if not args.skip_ablation:
        rows, ok = ablation(args, full)
    if full is not None:
        verdict = "meets" if full.seconds < TARGET_SECONDS else "MISSES"
        ok = ok and full.seconds < TARGET_SECONDS
        console.print(f"full run: {full.seconds:.1f} s for {args.tasks} tasks on {args.machines} machines "
                      f"({args.tasks / full.seconds:.0f} tasks/s), target {TARGET_SECONDS:.0f} s: {verdict}; "
                      f"{len(full.result.placements)} placed, {len(full.result.pending)} pending, "
                      f"{len(full.result.rejections)} jobs refused by quota; peak memory {peak_mib:.0f} MiB",
                      highlight=False)
    if args.record:
        record(args, shape, full, rows, peak_mib)
        console.print(f"recorded in {BENCHMARKS.relative_to(ROOT)}")
    return 0 if ok else 1


HEADER = ["variant", "measured (machines: time)", "growth", "speed-up of all-on", "full cell",
          "nodes examined / decision", "cache hits", "same placements"]


def ablation(args: argparse.Namespace, full: Run | None) -> tuple[list[list[str]], bool]:
    """Every variant at two sizes; growth, projection to the full cell, and the speed-up of all-on."""
    console.print(f"[bold]Ablation[/] ({TASKS_PER_MACHINE} tasks per machine, fastest of {args.repeats})")
    sizes = {variant: (args.all_off if variant == "all three off" else args.small) for variant in VARIANTS}
    measured: dict[str, list[Run]] = {}
    on_sizes = sorted({m for pair in sizes.values() for m in pair})
    measured["all techniques on"] = [run(m, m * TASKS_PER_MACHINE, Techniques(), args.seed, "all techniques on",
                                         args.repeats) for m in on_sizes]
    for variant, techniques in VARIANTS.items():
        if variant != "all techniques on":
            measured[variant] = [run(m, m * TASKS_PER_MACHINE, techniques, args.seed, variant, args.repeats)
                                 for m in sizes[variant]]
    on = {r.machines: r for r in measured["all techniques on"]}

    table = Table(title="Fauxmaster: scheduling a cell from scratch (Borg §3.4)", title_justify="left")
    for column in HEADER:
        table.add_column(column, justify="left" if column in ("variant", "measured (machines: time)") else "right")
    rows: list[list[str]] = []
    ok = True
    for variant in VARIANTS:
        runs = [r for r in measured[variant] if r.machines in sizes[variant]]
        small, large = runs
        exponent = math.log(max(large.seconds, 1e-9) / max(small.seconds, 1e-9)) / math.log(large.machines /
                                                                                           small.machines)
        projected = large.seconds * (args.machines / large.machines) ** exponent
        speedup = large.seconds / on[large.machines].seconds
        if variant in ("without equivalence classes", "without score caching"):
            same = "yes" if all(same_placements(r, on[r.machines]) for r in runs) else "NO"
            ok = ok and same == "yes"
        else:
            same = "-"  # another examination order: other, equally valid, placements
        full_cell = (f"{full.seconds:.1f} s measured" if full is not None and variant == "all techniques on"
                     else f"~{_duration(projected)} projected")
        row = [variant, ", ".join(f"{r.machines}: {r.seconds:.2f} s" for r in runs), f"x{exponent:.1f}",
               f"{speedup:.1f}x", full_cell, f"{large.examined_per_decision:.0f}", f"{100 * large.hit_rate:.0f}%", same]
        rows.append(row)
        table.add_row(*row)
    console.print(table)
    if not ok:
        console.print("[red]a pure speed-up changed placements[/]")
    return rows, ok


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def record(args: argparse.Namespace, shape: str, full: Run | None, rows: list[list[str]], peak_mib: float) -> None:
    header = HEADER
    lines = [BEGIN, "## Fauxmaster (make bench-sim)", ""]
    lines.append(
        "`make bench-sim` (tests/bench/bench_sim.py) schedules a synthetic cell from scratch with `cell sim`'s "
        "pass: quota admission per job, alloc sets placed first, then every task, highest band first, through "
        "the policy core's `Scheduler` (the extender's code; `IncrementalScheduler` only skips listing unexamined "
        "nodes) and `preempt`. The cell and workload come from `cell sim generate` (seed "
        f"{args.seed}): {args.machines} machines on five platforms, {args.tasks} tasks; {shape}. Relaxed "
        f"randomization stops after {ENOUGH_FEASIBLE} feasible nodes, the extender's default.")
    lines.append("")
    if full is not None:
        verdict = "meets" if full.seconds < TARGET_SECONDS else "misses"
        lines.append(
            f"**Full run, all techniques on: {full.seconds:.1f} s** for {args.tasks} tasks on {args.machines} "
            f"machines ({args.tasks / full.seconds:.0f} tasks/s; target {TARGET_SECONDS:.0f} s: {verdict}); "
            f"{len(full.result.placements)} placed, {len(full.result.pending)} pending, "
            f"{len(full.result.preemptions)} preemptions; peak memory {peak_mib:.0f} MiB. Measured "
            f"{datetime.now(UTC).date()} on {platform.machine()}, {os.cpu_count()} cores, shared with other work "
            f"(load average {os.getloadavg()[0]:.1f} at the end).")
        lines.append("")
    lines.append(
        f"Each technique off in turn, on cells of {args.small[0]} and {args.small[1]} machines (same generator, "
        f"same seed, {TASKS_PER_MACHINE} tasks per machine). \"growth\" is the exponent of time against cell "
        f"size between the two; the {args.machines}-machine column projects each variant with it (marked ~, "
        "not measured). \"same placements\": equivalence classes and score caching are pure speed-ups, so "
        "every task must land where the all-on run put it.")
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    lines.append("")
    lines.append(
        "Reading it: without relaxed randomization every task examines every machine, so the pass grows with "
        "machines x tasks (growth near 2 here, where tasks grow with the cell) instead of with tasks alone; that is "
        "the technique that turns Borg's \"did not finish in 3 days\" into minutes. Without equivalence classes "
        "(each task its own class) the cache can no longer share a machine's feasibility and score between the "
        "tasks of a job, and the failure memo is gone; without score caching every examined machine is "
        "evaluated afresh. Both cost a constant factor per examined machine, not a change of growth.")
    lines.append(END)
    section = "\n".join(lines)
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

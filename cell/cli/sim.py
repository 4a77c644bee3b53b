"""`cell sim`: the Fauxmaster's command line.

    cell sim --cell SNAPSHOT|live --workload FILE [--out DIR] [--seed N]     (same as `cell sim run`)
    cell sim generate --machines N --tasks N [--seed N] [--out DIR]
    cell sim checkpoint --out FILE                                            (save the live cell)
    cell sim omega [--t-job-service 0.1,1,10,30,100] [--out DIR]              (Omega's shared state)
    cell sim compact [--experiment segregate|users|powers-of-two|buckets|all] (Borg §5's compaction)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from typer.core import TyperGroup

from cell.cli.options import KubeconfigOption, StateDirOption
from cell.errors import CellError
from cell.sim.compact import EXPERIMENTS, CompactOptions, Pool, fine_grained, generated_pool, study
from cell.sim.compact_report import render as render_compact
from cell.sim.compact_report import summary as compact_summary
from cell.sim.compact_report import write_outputs as write_compact
from cell.sim.engine import ENOUGH_FEASIBLE, SimOptions, SimResult, simulate
from cell.sim.generate import cell_capacity, demand, generate
from cell.sim.omega import DecisionTime, OmegaOptions
from cell.sim.omega_report import DEFAULT_LOAD_T_JOB, Sweep, parse_variant
from cell.sim.omega_report import render as render_omega
from cell.sim.omega_report import summary as omega_summary
from cell.sim.omega_report import write_outputs as write_omega
from cell.sim.report import render, summary, write_outputs
from cell.sim.snapshot import SimCell, checkpoint_documents, load_live, load_snapshot_file
from cell.sim.workload import load_workload
from cell.state import admin_kubeconfig
from scheduler_ext.policy.resources import format_cpu, format_memory

console = Console()
err_console = Console(stderr=True)

LIVE = "live"
CellOption = Annotated[str | None, typer.Option(
    "--cell", help="Snapshot to start from: a YAML file (Kubernetes objects or kind: Cell), or `live`.")]
WorkloadOption = Annotated[Path | None, typer.Option(
    "--workload", help="Workload YAML (kind: Workload): jobs and alloc sets to submit.")]
OutOption = Annotated[Path, typer.Option(
    "--out", help="Directory for placements.csv, pending.csv, preemptions.csv, nodes.csv, summary.json, "
                  "utilisation.png.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of relaxed randomization (same seed, same run).")]
EnoughOption = Annotated[int, typer.Option(
    "--enough-feasible", min=0,
    help="Relaxed randomization: stop after N feasible nodes (0: examine all); the extender's default.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of tables.")]
PreemptOption = Annotated[bool, typer.Option("--preemption/--no-preemption", help="Let pods preempt (R1-R3).")]

sim_app = typer.Typer(
    help="Fauxmaster (Borg §3.4): the policy core run offline over a cell snapshot and a workload.",
    no_args_is_help=False,
)


def load_cell(cell: str, kubeconfig: Path | None, state_dir: Path | None) -> SimCell:
    if cell == LIVE:
        return load_live(admin_kubeconfig(kubeconfig, state_dir))
    return load_snapshot_file(Path(cell))


def known_allocs(cell: SimCell) -> set[str]:
    return {f"{(a.get('metadata') or {}).get('namespace') or 'default'}/{(a.get('metadata') or {}).get('name')}"
            for a in cell.allocs}


def run_simulation(cell: str, workload: Path, out: Path, seed: int = 0, enough_feasible: int = ENOUGH_FEASIBLE,
                   kubeconfig: Path | None = None, state_dir: Path | None = None, as_json: bool = False,
                   preemption: bool = True, out_console: Console | None = None) -> SimResult:
    """Load, simulate, report; every input is read and checked before anything is written."""
    target = out_console or console
    start = load_cell(cell, kubeconfig, state_dir)
    load = load_workload(workload, known_allocs(start))
    result = simulate(start, load, SimOptions(seed=seed, enough_feasible=enough_feasible, preemption=preemption))
    publish(out, lambda: write_outputs(result, out), lambda: summary(result), lambda c: render(result, c),
            as_json, target)
    return result


def publish(out: Path, write: Callable[[], Sequence[Path]], summarize: Callable[[], object],
            show: Callable[[Console], None], as_json: bool, target: Console, note: str = "") -> None:
    """What every `cell sim` run ends with: its files written to `out`, then its summary as JSON, or its
    tables and the files' names (after `note`)."""
    try:
        written = write()
    except OSError as exc:
        raise CellError(f"cannot write results to {out}: {exc.strerror or exc}") from None
    if as_json:
        target.print_json(json.dumps(summarize()))
    else:
        show(target)
        target.print(f"{note}results: {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)


def _require(cell: str | None, workload: Path | None) -> tuple[str, Path]:
    missing = [flag for flag, value in (("--cell SNAPSHOT|live", cell), ("--workload FILE", workload)) if not value]
    if missing:
        raise CellError(f"cell sim needs {' and '.join(missing)} (or a subcommand: run, generate, checkpoint, "
                        "omega, compact; see cell sim --help)")
    assert cell is not None and workload is not None
    return cell, workload


def simulate_cmd(
    ctx: typer.Context,
    cell: CellOption = None,
    workload: WorkloadOption = None,
    out: OutOption = Path("sim-out"),
    seed: SeedOption = 0,
    enough_feasible: EnoughOption = ENOUGH_FEASIBLE,
    preemption: PreemptOption = True,
    as_json: JsonOption = False,
    kubeconfig: KubeconfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Both `cell sim` (the group's callback) and `cell sim run`: one signature, so the two take the same options."""
    if ctx.invoked_subcommand is not None:  # the group's callback, on its way to another subcommand
        if cell or workload:
            raise CellError(f"give --cell and --workload after `{ctx.invoked_subcommand}`, not before it")
        return
    if cell is None and workload is None and isinstance(ctx.command, TyperGroup):  # a bare `cell sim`
        console.print(ctx.get_help())
        raise typer.Exit(0)
    cell, workload = _require(cell, workload)
    run_simulation(cell, workload, out, seed, enough_feasible, kubeconfig, state_dir, as_json, preemption)


sim_app.callback(invoke_without_command=True)(simulate_cmd)  # its help is sim_app's
sim_app.command("run", help="Admit, reserve, schedule and preempt a workload on a snapshot; report placements "
                            "and utilisation.")(simulate_cmd)


@sim_app.command("generate")
def generate_cmd(
    machines: Annotated[int, typer.Option("--machines", min=1, max=100_000, help="Machines in the cell.")] = 100,
    tasks: Annotated[int, typer.Option("--tasks", min=1, max=10_000_000, help="Tasks in the workload.")] = 1000,
    seed: SeedOption = 0,
    teams: Annotated[int | None, typer.Option("--teams", min=1, help="Namespaces (default: tasks/500, 3..50).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for cell.yaml and workload.yaml.")] = Path("."),
) -> None:
    """A synthetic cell (heterogeneous machines, team quotas) and workload (Borg-like shapes)."""
    cell_doc, load = generate(machines, tasks, seed, teams)
    cell_path, workload_path = out / "cell.yaml", out / "workload.yaml"
    try:
        out.mkdir(parents=True, exist_ok=True)
        cell_path.write_text(yaml.safe_dump(cell_doc, sort_keys=False))
        workload_path.write_text(yaml.safe_dump(load.to_document(), sort_keys=False))
    except OSError as exc:
        raise CellError(f"cannot write to {out}: {exc.strerror or exc}") from None
    capacity, asked = cell_capacity(machines), demand(load)
    console.print(f"{cell_path}: {machines} machines, cpu {format_cpu(capacity.cpu)}, memory "
                  f"{format_memory(capacity.memory)}; {workload_path}: {len(load.jobs)} jobs, {load.task_count} "
                  f"tasks, {len(load.allocs)} alloc sets, asking cpu {100 * asked.cpu / capacity.cpu:.0f}% / memory "
                  f"{100 * asked.memory / capacity.memory:.0f}% of the cell", highlight=False, soft_wrap=True)


@sim_app.command("checkpoint")
def checkpoint_cmd(
    out: Annotated[Path, typer.Option("--out", help="YAML file to write the snapshot to.")],
    kubeconfig: KubeconfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Save the live cell (nodes, bound pods, allocs, quotas) as a snapshot file for `cell sim --cell FILE`."""
    cell = load_live(admin_kubeconfig(kubeconfig, state_dir))
    document = checkpoint_documents(cell)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(document, sort_keys=False))
    except OSError as exc:
        raise CellError(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"{out}: {len(cell.nodes)} node(s), {len(document['items']) - len(cell.nodes)} other object(s)",
                  highlight=False, soft_wrap=True)


def _floats(text: str, flag: str, positive: bool = True) -> tuple[float, ...]:
    """"0.1,1,10" -> (0.1, 1.0, 10.0), or a one-line CellError naming the flag."""
    if not text.strip():
        return ()
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise CellError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if any(v < 0 or (positive and v == 0) or v != v or v == float("inf") for v in values):
        raise CellError(f"{flag}: every value must be a {'positive' if positive else 'non-negative'} number, "
                        f"got {text!r}")
    return values


@sim_app.command("omega")
def omega_cmd(
    t_job_service: Annotated[str, typer.Option(
        "--t-job-service", help="Service scheduler's per-job decision times to sweep, seconds (comma-separated).")]
        = "0.1,1,10,30,100",
    t_task_service: Annotated[float, typer.Option("--t-task-service", min=0, help="Service: seconds per task.")]
        = 0.005,
    t_job_batch: Annotated[float, typer.Option("--t-job-batch", min=0, help="Batch: seconds per job.")] = 0.1,
    t_task_batch: Annotated[float, typer.Option("--t-task-batch", min=0, help="Batch: seconds per task.")] = 0.005,
    variants: Annotated[str, typer.Option(
        "--variants", help="Shared-state variants CONFLICTS/COMMIT (fine|coarse / incremental|gang), "
                           "comma-separated; the first is the one compared with monolithic.")]
        = "fine/incremental,coarse/incremental,fine/gang,coarse/gang",
    loads: Annotated[str, typer.Option(
        "--loads", help="Batch arrival rates (x default) for the conflicts-vs-load chart; '' skips it.")]
        = "0.5,1,1.5,2",
    load_t_job: Annotated[float, typer.Option("--load-t-job", min=0, help="t_job(service) of the load runs.")]
        = 10.0,
    machines: Annotated[int, typer.Option("--machines", min=1, max=10_000, help="Machines in the cell.")] = 50,
    hours: Annotated[float, typer.Option("--hours", min=0.01, max=48, help="Simulated hours per run.")] = 1.0,
    batch_schedulers: Annotated[int, typer.Option(
        "--batch-schedulers", min=1, max=32, help="Parallel batch schedulers (jobs dealt round-robin).")] = 1,
    enough_feasible: Annotated[int, typer.Option(
        "--enough-feasible", min=0, help="Relaxed randomization: machines examined after N feasible (0: all).")]
        = 10,
    seed: SeedOption = 0,
    out: Annotated[Path, typer.Option("--out", help="Directory for omega.csv, omega-summary.json and the charts.")]
        = Path("sim-omega"),
    as_json: JsonOption = False,
) -> None:
    """Omega (EuroSys 2013): monolithic vs shared-state scheduling over t_job(service); CSV and charts.

    Wait time, busyness, conflict fraction and work redone, in simulated time (deterministic per seed);
    see docs/sim/omega.md."""
    t_jobs = _floats(t_job_service, "--t-job-service", positive=False)
    load_values = _floats(loads, "--loads")
    try:
        chosen = tuple(parse_variant(v) for v in variants.split(",") if v.strip())
    except ValueError as exc:
        raise CellError(f"--variants: {exc}") from None
    if not t_jobs and not load_values:
        raise CellError("nothing to run: give --t-job-service values or --loads")
    base = OmegaOptions(machines=machines, hours=hours, seed=seed, batch_schedulers=batch_schedulers,
                        batch_time=DecisionTime(t_job_batch, t_task_batch),
                        service_time=DecisionTime(1.0, t_task_service), enough_feasible=enough_feasible)
    sweep = Sweep(base, t_jobs, chosen, load_values, load_t_job if load_t_job is not None else DEFAULT_LOAD_T_JOB)
    quiet = as_json
    sweep = sweep.run(lambda i, n, o: None if quiet else err_console.print(
        f"[{i + 1}/{n}] {o.label()}, t_job(service) {o.service_time.t_job:g} s, load x{o.load:g}",
        highlight=False))
    publish(out, lambda: write_omega(sweep, out), lambda: omega_summary(sweep), lambda c: render_omega(sweep, c),
            as_json, console)


@sim_app.command("compact")
def compact_cmd(
    experiment: Annotated[list[str] | None, typer.Option(
        "--experiment", "-e", help="Borg §5 experiment to run beside the plain compaction (repeatable): "
                                   "segregate, users, powers-of-two, buckets, or all.")] = None,
    machines: Annotated[int, typer.Option(
        "--machines", min=1, max=2000, help="Machines of the generated cell that compaction shrinks.")] = 80,
    tasks: Annotated[int, typer.Option("--tasks", min=1, max=20_000, help="Tasks of the generated workload.")] = 400,
    teams: Annotated[int, typer.Option("--teams", min=1, max=100, help="Users (namespaces) of the workload.")] = 8,
    jitter: Annotated[float, typer.Option(
        "--jitter", min=0, max=2, help="Fine-grained requests: each job's cpu and memory scaled by e^U(-J,J) "
                                       "(0: the generator's menu of sizes).")] = 0.3,
    workload_seed: Annotated[int, typer.Option("--workload-seed", help="Seed of the generated workload.")] = 0,
    cell: Annotated[Path | None, typer.Option(
        "--cell", help="Instead of a generated cell: a snapshot file whose nodes are the machines (bound pods "
                       "and quotas are ignored).")] = None,
    workload: Annotated[Path | None, typer.Option("--workload", help="Instead of a generated workload.")] = None,
    trials: Annotated[int, typer.Option("--trials", min=1, max=101, help="Random trials (Borg: 11).")] = 11,
    users: Annotated[int, typer.Option("--users", min=1, max=50, help="`users`: the N largest get own cells.")]
        = 3,
    seed: SeedOption = 0,
    out: Annotated[Path, typer.Option("--out", help="Directory for compact.csv, compact-summary.json and charts.")]
        = Path("sim-compact"),
    as_json: JsonOption = False,
) -> None:
    """Borg §5 (EuroSys 2015): cell compaction and what segregation, own cells, rounding cost; CSV, charts.

    Shrinks a cell until the workload no longer fits (90th percentile of the trials); see docs/sim/compact.md."""
    chosen: list[str] = []
    for name in experiment or []:
        if name == "all":
            chosen.extend(e for e in EXPERIMENTS if e not in chosen)
        elif name not in EXPERIMENTS:
            raise CellError(f"--experiment: unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}, all")
        elif name not in chosen:
            chosen.append(name)
    if cell is not None:
        start = load_snapshot_file(cell)
        if not start.nodes:
            raise CellError(f"{cell}: no machines (Node objects or kind: Cell machines) to compact")
        pool = Pool(tuple(start.nodes))
        source = f"{cell} ({len(pool.nodes)} machines)"
    else:
        pool = generated_pool(machines)
        source = f"generated cell of {machines} machines"
    if workload is not None:
        load = load_workload(workload)
        what = str(workload)
    else:
        _, load = generate(machines, tasks, workload_seed, teams)
        what = f"generated workload of {tasks} tasks, {teams} users, seed {workload_seed}"
    load = fine_grained(load, jitter, workload_seed)
    options = CompactOptions(trials=trials, seed=seed, users=users)
    if not as_json:
        err_console.print(f"compacting {what} (jitter {jitter:g}) from a {source}, {trials} trials",
                          highlight=False, soft_wrap=True)
    done = study(pool, load, chosen, options, lambda name: None if as_json else err_console.print(
        f"experiment {name} ...", highlight=False))
    baseline, results = done.baseline, list(done.experiments)
    meta = {"source": source, "workload": what, "jitter": jitter, "trials": trials, "seed": seed,
            "simulations": done.simulations}
    publish(out, lambda: write_compact(baseline, results, meta, out), lambda: compact_summary(baseline, results, meta),
            lambda c: render_compact(baseline, results, c), as_json, console, f"{done.simulations} Fauxmaster passes; ")

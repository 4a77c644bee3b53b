"""`cell sim`: the Fauxmaster's command line.

    cell sim --cell SNAPSHOT|live --workload FILE [--out DIR] [--seed N]     (same as `cell sim run`)
    cell sim generate --machines N --tasks N [--seed N] [--out DIR]
    cell sim checkpoint --out FILE                                            (save the live cell)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from cell.cli.options import KubeconfigOption, StateDirOption
from cell.errors import CellError
from cell.sim.engine import ENOUGH_FEASIBLE, SimOptions, SimResult, simulate
from cell.sim.generate import cell_capacity, demand, generate
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
    try:
        written = write_outputs(result, out)
    except OSError as exc:
        raise CellError(f"cannot write results to {out}: {exc.strerror or exc}") from None
    if as_json:
        target.print_json(json.dumps(summary(result)))
    else:
        render(result, target)
        target.print(f"results: {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    return result


def _require(cell: str | None, workload: Path | None) -> tuple[str, Path]:
    missing = [flag for flag, value in (("--cell SNAPSHOT|live", cell), ("--workload FILE", workload)) if not value]
    if missing:
        raise CellError(f"cell sim needs {' and '.join(missing)} (or a subcommand: run, generate, checkpoint; "
                        "see cell sim --help)")
    assert cell is not None and workload is not None
    return cell, workload


@sim_app.callback(invoke_without_command=True)
def sim_main(
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
    """Simulate a workload on a cell: `cell sim --cell SNAPSHOT|live --workload FILE` (as `cell sim run`)."""
    if ctx.invoked_subcommand is not None:
        if cell or workload:
            raise CellError(f"give --cell and --workload after `{ctx.invoked_subcommand}`, not before it")
        return
    if cell is None and workload is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)
    cell, workload = _require(cell, workload)
    run_simulation(cell, workload, out, seed, enough_feasible, kubeconfig, state_dir, as_json, preemption)


@sim_app.command("run")
def run_cmd(
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
    """Admit, reserve, schedule and preempt a workload on a snapshot; report placements and utilisation."""
    cell, workload = _require(cell, workload)
    run_simulation(cell, workload, out, seed, enough_feasible, kubeconfig, state_dir, as_json, preemption)


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

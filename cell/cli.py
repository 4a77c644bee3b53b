"""`cell`: the command line of Cell (SPEC §6).

Each command is a thin shell over a module of this package; errors surface as one line and a
non-zero exit (CellError), never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from cell.errors import CellError

console = Console()
err_console = Console(stderr=True)


class _CellGroup(TyperGroup):
    """Every command's CellError becomes one line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's vendored click.Context, which it does not export
        try:
            return super().invoke(ctx)
        except CellError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_CellGroup,
    name="cell",
    help="Cell: a Kubernetes cell with Google Borg's ideas, for teaching distributed operating systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="CELL_STATE_DIR",
                 help="Directory holding the local cell's state and logs (default ~/.local/state/cell/default)."),
]


# --- the local cell (cell/localcell.py) ----------------------------------------------------------

@app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=5000, help="Number of simulated (KWOK) nodes.")] = 12,
    state_dir: StateDirOption = None,
    real_node: Annotated[bool, typer.Option(
        "--real-node", help="Also make this machine a real node (containerd, kubelet, kube-proxy; needs root).",
    )] = False,
) -> None:
    """Stand up the local cell: etcd, control plane, scheduler with the extender, KWOK nodes, extensions."""
    from cell import localcell

    kubeconfig = localcell.up(nodes=nodes, state_dir=state_dir, console=err_console, real_node=real_node)
    console.print(str(kubeconfig), highlight=False, soft_wrap=True)


@app.command()
def down(state_dir: StateDirOption = None) -> None:
    """Stop every process of the local cell and remove its state."""
    from cell import localcell

    localcell.down(state_dir=state_dir, console=err_console)


@app.command()
def status(state_dir: StateDirOption = None) -> None:
    """Report the health of every component of the local cell and its node count."""
    from cell import localcell

    healthy = localcell.status(state_dir=state_dir, console=console)
    raise typer.Exit(0 if healthy else 1)


@app.command()
def kubeconfig(
    student: Annotated[
        str | None, typer.Option("--student", help="A student's kubeconfig instead of the admin's.")
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Print the path of the admin (or a student's) kubeconfig."""
    from cell import localcell

    console.print(str(localcell.kubeconfig_path(state_dir=state_dir, student=student)), highlight=False,
                  soft_wrap=True)


@app.command()
def build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when cached binaries are present.")] = False,
) -> None:
    """Build (once) and cache the upstream binaries: Kubernetes, etcd, KWOK."""
    from cell import upstream

    bin_dir = upstream.ensure_binaries(force=force, console=err_console)
    console.print(str(bin_dir), highlight=False, soft_wrap=True)


# --- further command groups register below (one line each) ---------------------------------------
from cell.experiences import experience_app  # noqa: E402

app.add_typer(experience_app, name="experience")
from cell.grading import grade_command  # noqa: E402

app.command("grade")(grade_command)
from cell.cloud import cloud_app  # noqa: E402

app.add_typer(cloud_app, name="cloud")
from cell.students import students_app  # noqa: E402

app.add_typer(students_app, name="students")
from cell.why import why_cmd  # noqa: E402

app.command("why")(why_cmd)
from cell.top import top_cmd  # noqa: E402

app.command("top")(top_cmd)
from cell.sim.cli import sim_app  # noqa: E402

app.add_typer(sim_app, name="sim")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

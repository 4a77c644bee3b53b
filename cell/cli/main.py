"""The `cell` app: every command group mounted on one typer app.

Each command is a thin shell (cell/cli/<group>.py) over a domain module of cell/; errors surface
as one line and a non-zero exit (CellError), never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from cell.cli import cloud, experience, grade, localcell, omega, sim, students, top, why
from cell.cli.options import err
from cell.errors import CellError


class _CellGroup(TyperGroup):
    """Every command's CellError becomes one line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's vendored click.Context, which it does not export
        try:
            return super().invoke(ctx)
        except CellError as exc:
            err().print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_CellGroup,
    name="cell",
    help="Cell: a Kubernetes cell with Google Borg's ideas, for teaching distributed operating systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# The local cell's commands first (`cell --help` lists them in this order), then one group a line.
localcell.register(app)
app.add_typer(experience.experience_app, name="experience")
grade.register(app)
app.add_typer(cloud.cloud_app, name="cloud")
app.add_typer(students.students_app, name="students")
why.register(app)
top.register(app)
app.add_typer(sim.sim_app, name="sim")
omega.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err().print("interrupted")
        sys.exit(130)

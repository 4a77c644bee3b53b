"""`cell students add|list|remove|manifests`: onboarding students (cell/students.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cell.cli.options import StateDirOption, err, out
from cell.errors import CellError
from cell.state import CellPaths
from cell.students import (
    ROSTER_FORMAT,
    StudentRow,
    add_students,
    list_students,
    parse_roster,
    remove_students,
    specs_from_names,
    student_manifests,
)
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.resources import ZERO, format_cpu, format_memory

students_app = typer.Typer(help="Onboard students: namespace, BandQuota, RBAC and a kubeconfig each.",
                           no_args_is_help=True)


@students_app.command("add", help="Add students by NAME... or from a --roster file (not both).\n\n" + ROSTER_FORMAT)
def add_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="Student names (DNS-1123 labels).", show_default=False)]
    = None,
    roster: Annotated[Path | None, typer.Option("--roster", help="YAML or CSV roster (format below).")] = None,
    state_dir: StateDirOption = None,
) -> None:
    if bool(names) == bool(roster):
        raise CellError("give student NAMEs or --roster FILE (exactly one of the two)")
    specs = parse_roster(roster) if roster else specs_from_names(names or [])
    for path in add_students(specs, CellPaths(state_dir), err()):
        typer.echo(path)


def _quota_cell(row: StudentRow, band: Band) -> str:
    """used/limit per resource, e.g. "cpu 1/2 mem 512Mi/2Gi"; best-effort unlisted is unlimited."""
    limit = row.limits.get(band)
    used = row.used.get(band, ZERO)
    if limit is None and band is not Band.BEST_EFFORT:
        return "-"
    cap_cpu = format_cpu(limit.cpu) if limit else "∞"
    cap_mem = format_memory(limit.memory) if limit else "∞"
    return f"cpu {format_cpu(used.cpu)}/{cap_cpu} mem {format_memory(used.memory)}/{cap_mem}"


@students_app.command("list")
def list_cmd(state_dir: StateDirOption = None) -> None:
    """List the students with their quota (limit / used per band) and kubeconfig."""
    rows = list_students(CellPaths(state_dir))
    bands = sorted(Band, reverse=True)
    table = Table("student", *(band.label for band in bands), "kubeconfig")
    for row in rows:
        table.add_row(row.name + (" (removing)" if row.terminating else ""),
                      *(_quota_cell(row, band) for band in bands),
                      str(row.kubeconfig) if row.kubeconfig else "(none)")
    out().print(table)
    if not rows:
        err().print("no students yet (add them with `cell students add NAME...`)")


@students_app.command("remove")
def remove_cmd(
    names: Annotated[list[str], typer.Argument(help="Students to remove, with everything in their namespace.")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Return once the namespaces are gone.")] = True,
    state_dir: StateDirOption = None,
) -> None:
    """Remove students: their namespace (and all it holds) and their kubeconfig."""
    remove_students(names, CellPaths(state_dir), wait=120.0 if wait else None)
    for name in names:
        typer.echo(f"student {name} removed")


@students_app.command("manifests")
def manifests_cmd(
    names: Annotated[list[str], typer.Argument(help="Student names (DNS-1123 labels).", show_default=False)],
) -> None:
    """Print the students' namespaces, BandQuotas and RoleBindings as one kubectl List (JSON), without
    applying them: what `add` applies, and what the OpenStack students role applies."""
    typer.echo(json.dumps(student_manifests(specs_from_names(names)), indent=2, sort_keys=True))

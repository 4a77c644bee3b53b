"""`cell grade`: an experience's grading checks for the class, and the reports (cell/grading/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cell.catalog import find_experience
from cell.cli.options import KubeconfigOption, StateDirOption, StudentOption, err, out
from cell.grading.plugin import grade
from cell.grading.render import ReportFormat, print_table, to_json, write_reports
from cell.kube import connect
from cell.state import admin_kubeconfig


def grade_command(
    name: Annotated[str, typer.Argument(help="Experience to grade, e.g. exp1-orchestration.")],
    student: StudentOption = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="Report on stdout (table, json) or as files "
                                              "in --output (junit, html).")] = ReportFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", help="Directory for the class summary CSV and report files (default ./reports/NAME).")] = None,
    kubeconfig: KubeconfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Run an experience's grading checks: points per task, the reason for every lost point, grades."""
    find_experience(name)  # an unknown name fails before the cluster is contacted
    report = grade(name, api=connect(admin_kubeconfig(kubeconfig, state_dir)), student=student)
    written = write_reports(report, output or Path("reports") / name, fmt)
    if fmt is ReportFormat.json:
        typer.echo(to_json(report))
    else:
        print_table(report, out())
    for path in written:
        err().print(f"wrote {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("grade")(grade_command)

"""`cell experience apply|list`: the course's labs in the students' namespaces (cell/experiences.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from cell.catalog import find_experience, list_experiences
from cell.cli.options import KubeconfigOption, StateDirOption, StudentOption, err
from cell.experiences import apply_experience
from cell.kube import connect, find_kubectl
from cell.state import admin_kubeconfig

experience_app = typer.Typer(help="Apply the course's experiences (labs) to students' namespaces.",
                             no_args_is_help=True)


@experience_app.command("apply")
def apply_command(
    name: Annotated[str, typer.Argument(help="Experience, e.g. exp1-orchestration.")],
    student: StudentOption = None,
    kubeconfig: KubeconfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Apply cluster/experiences/NAME into every student's namespace (idempotent)."""
    kubeconfig = admin_kubeconfig(kubeconfig, state_dir)
    find_experience(name)  # an unknown name fails before the cluster is contacted
    apply_experience(name, kubeconfig=kubeconfig, kubectl=find_kubectl(state_dir), api=connect(kubeconfig),
                     student=student, console=err())


@experience_app.command("list")
def list_command() -> None:
    """List the experiences of the course."""
    for name in list_experiences():
        typer.echo(name)

"""`cell cloud check`: can this OpenStack project hold the course before `pulumi up` tries (cell/cloud.py)?

The stack file is read with the Pulumi program's own validation (infra.config): the CLI is the one
layer of cell/ that may import infra/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cell.cli.options import out
from cell.cloud import checked, connect, report
from cell.errors import CellError
from infra.config import ConfigError, from_stack_file

cloud_app = typer.Typer(name="cloud", help="OpenStack: check a cloud can hold the course before `pulumi up`.",
                        no_args_is_help=True)


@cloud_app.command("check")
def check_cmd(
    stack_file: Annotated[Path, typer.Option("--stack-file", help="The Pulumi stack file with the cell:* keys.")]
    = Path("Pulumi.course.yaml"),
    cloud: Annotated[str | None, typer.Option("--cloud", envvar="OS_CLOUD",
                                              help="The cloud's name in clouds.yaml.")] = None,
    clouds_file: Annotated[Path | None, typer.Option("--clouds-file", envvar="OS_CLIENT_CONFIG_FILE",
                                                     help="clouds.yaml (default: openstacksdk's locations).")] = None,
) -> None:
    """Check credentials, image, flavors, external network and quota against the stack's clusters."""
    try:
        stack = from_stack_file(stack_file)
    except ConfigError as exc:
        raise CellError(str(exc)) from None
    findings = checked(connect(cloud, clouds_file), stack)
    report(findings, out())
    if any(not finding.ok for finding in findings):
        raise typer.Exit(1)

"""`cell why NAMESPACE/POD`: why a pod is (or was) not placed, node by node (cell/why.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from cell.cli.options import KubeconfigOption, StateDirOption
from cell.state import admin_kubeconfig
from cell.why import WhyFormat, parse_target, why


def why_cmd(
    target: Annotated[str, typer.Argument(metavar="NAMESPACE/POD", help="The pod to explain.")],
    kubeconfig: KubeconfigOption = None,
    state_dir: StateDirOption = None,
    output: Annotated[WhyFormat, typer.Option("--format", help="text (a table) or json (the record)")] = WhyFormat.text,
) -> None:
    """Why a pod is pending (or where it went), node by node."""
    namespace, name = parse_target(target)
    why(namespace, name, admin_kubeconfig(kubeconfig, state_dir), state_dir, output=output)


def register(app: typer.Typer) -> None:
    app.command("why")(why_cmd)

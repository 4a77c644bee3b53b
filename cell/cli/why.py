"""`cell why NAMESPACE/POD` and `cell why -f MANIFEST` (cell/why.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cell.cli.options import KubeconfigOption, StateDirOption
from cell.errors import CellError
from cell.state import admin_kubeconfig
from cell.why import WhyFormat, parse_target, why, why_manifest


def why_cmd(
    target: Annotated[str | None, typer.Argument(metavar="NAMESPACE/POD", help="The pod to explain.")] = None,
    filename: Annotated[Path | None, typer.Option(
        "--filename", "-f", help="A manifest: would its jobs be admitted and placed; what would let them in.")] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="For -f: the namespace of objects that name none (default: default).")] = None,
    kubeconfig: KubeconfigOption = None,
    state_dir: StateDirOption = None,
    output: Annotated[WhyFormat, typer.Option("--format", help="text (a table) or json (the record)")] = WhyFormat.text,
) -> None:
    """Why a pod is pending (or where it went), node by node; or, with -f, whether a job would get in."""
    if (target is None) == (filename is None):
        raise CellError("give either NAMESPACE/POD or -f MANIFEST")
    if filename is not None:
        why_manifest(filename, admin_kubeconfig(kubeconfig, state_dir), namespace, output=output)
        return
    assert target is not None
    pod_namespace, name = parse_target(target)
    why(pod_namespace, name, admin_kubeconfig(kubeconfig, state_dir), state_dir, output=output)


def register(app: typer.Typer) -> None:
    app.command("why")(why_cmd)

"""`cell top`: the cell's capacity, alloc reservations and use, by band and by node (cell/top.py)."""

from __future__ import annotations

import typer

from cell.cli.options import KubeconfigOption, StateDirOption
from cell.state import admin_kubeconfig
from cell.top import top


def top_cmd(kubeconfig: KubeconfigOption = None, state_dir: StateDirOption = None) -> None:
    """The cell's capacity, alloc reservations and use, by band and by node."""
    top(admin_kubeconfig(kubeconfig, state_dir))


def register(app: typer.Typer) -> None:
    app.command("top")(top_cmd)

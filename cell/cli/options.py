"""What every command group shares: the options naming the local cell and the cluster, and the consoles.

Options carry no `envvar`: their default (None) means "as cell.settings says", so each `CELL_*`
variable is read in one place (cell/settings.py) whether a command or a library call asks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def out() -> Console:
    """The console for results (stdout), made when needed: it reads COLUMNS as the command runs."""
    return Console()


def err() -> Console:
    """The console for progress and errors (stderr)."""
    return Console(stderr=True)


StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", show_default=False,
                 help="Directory holding the local cell's state and logs (default: $CELL_STATE_DIR, else "
                      "~/.local/state/cell/default)."),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option("--kubeconfig", show_default=False,
                 help="Admin kubeconfig of the cell (default: the local cell's)."),
]
StudentOption = Annotated[str | None, typer.Option("--student", help="Only this student.", show_default=False)]


def echo_path(path: Path) -> None:
    """A path on stdout, whole (never wrapped), for scripts to read."""
    out().print(str(path), highlight=False, soft_wrap=True)

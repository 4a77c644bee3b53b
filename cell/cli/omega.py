"""`cell omega --scheduler-name NAME`: run one of Cell's live Omega schedulers against the cell until
Ctrl-C (docs/omega.md; exp4-omega's handout). The scheduler itself is `python -m scheduler_ext.omega`;
this only finds the cell's admin kubeconfig for it."""

from __future__ import annotations

from typing import Annotated

import typer

from cell.cli.options import KubeconfigOption, StateDirOption
from cell.state import admin_kubeconfig
from scheduler_ext.omega.__main__ import main as run_omega


def omega_cmd(
    scheduler_name: Annotated[str, typer.Option("--scheduler-name", help="The schedulerName whose pods it places.")],
    decision_time: Annotated[float, typer.Option("--decision-time", help="Seconds between its copy and its commit.")]
    = 0.0,
    conflicts: Annotated[str, typer.Option("--conflicts", help="fine (retry on the node if it still fits) or coarse.")]
    = "fine",
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Serve Prometheus /metrics here (0: off).")] = 0,
    kubeconfig: KubeconfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Run a live Omega scheduler beside kube-scheduler until interrupted."""
    raise typer.Exit(run_omega([
        "--kubeconfig", str(admin_kubeconfig(kubeconfig, state_dir)), "--scheduler-name", scheduler_name,
        "--decision-time", str(decision_time), "--conflicts", conflicts, "--metrics-port", str(metrics_port)]))


def register(app: typer.Typer) -> None:
    app.command("omega")(omega_cmd)

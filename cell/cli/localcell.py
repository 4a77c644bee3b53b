"""The local cell's commands: `cell up`, `down`, `status`, `kubeconfig` and `build`."""

from __future__ import annotations

from typing import Annotated

import typer

from cell import upstream
from cell.cli.options import StateDirOption, echo_path, err
from cell.localcell import lifecycle
from cell.realnode.node import RealNode


def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=5000, help="Number of simulated (KWOK) nodes.")] = 12,
    state_dir: StateDirOption = None,
    real_node: Annotated[bool, typer.Option(
        "--real-node", help="Also make this machine a real node (containerd, kubelet, kube-proxy; needs root).",
    )] = False,
) -> None:
    """Stand up the local cell: etcd, control plane, scheduler with the extender, KWOK nodes, extensions."""
    echo_path(lifecycle.up(nodes=nodes, state_dir=state_dir, console=err(), real_node=real_node,
                           node=RealNode()))


def down(state_dir: StateDirOption = None) -> None:
    """Stop every process of the local cell and remove its state."""
    lifecycle.down(state_dir=state_dir, console=err(), node=RealNode())


def status(state_dir: StateDirOption = None) -> None:
    """Report the health of every component of the local cell and its node count."""
    raise typer.Exit(0 if lifecycle.status(state_dir=state_dir) else 1)


def kubeconfig(
    student: Annotated[
        str | None, typer.Option("--student", help="A student's kubeconfig instead of the admin's.")
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Print the path of the admin (or a student's) kubeconfig."""
    echo_path(lifecycle.kubeconfig_path(state_dir=state_dir, student=student))


def build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when cached binaries are present.")] = False,
    e2e: Annotated[bool, typer.Option(
        "--e2e", help="Also build upstream's e2e.test, for `make conformance` (about 6 more minutes, at low priority).",
    )] = False,
) -> None:
    """Build (once) and cache the upstream binaries: Kubernetes, etcd, KWOK (and on request e2e.test)."""
    directory = upstream.ensure_binaries(force=force, console=err())
    if e2e:
        upstream.ensure_e2e(force=force, console=err())
    echo_path(directory)


def register(app: typer.Typer) -> None:
    for command in (up, down, status, kubeconfig, build):
        app.command()(command)

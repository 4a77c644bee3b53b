"""Shared fixtures: one local cell per test session, started only if a cluster test needs it.

Set CELL_TEST_STATE_DIR to reuse an already running cell (e.g. the one `make up` made) while
developing; otherwise the session stands up its own cell in a temporary state directory and takes
it down at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from rich.console import Console

from cell.localcell import lifecycle
from cell.localcell.supervisor import LocalCell

TEST_NODES = int(os.environ.get("CELL_TEST_NODES", "12"))


@pytest.fixture(scope="session")
def local_cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCell]:
    reuse = os.environ.get("CELL_TEST_STATE_DIR")
    if reuse:
        cell = LocalCell(Path(reuse))
        if not cell.exists():
            lifecycle.up(nodes=TEST_NODES, state_dir=Path(reuse), console=Console(stderr=True))
        yield LocalCell(Path(reuse))
        return
    state_dir = tmp_path_factory.mktemp("cell") / "state"
    lifecycle.up(nodes=TEST_NODES, state_dir=state_dir, console=Console(stderr=True))
    cell = LocalCell(state_dir)
    try:
        yield cell
    finally:
        lifecycle.down(state_dir=state_dir, console=Console(stderr=True))


@pytest.fixture(scope="session")
def kube_api(local_cell: LocalCell) -> client.ApiClient:
    return local_cell.api()


@pytest.fixture(scope="session", autouse=True)
def _kubectl_first_on_path(request: pytest.FixtureRequest) -> None:
    """Tests that shell out to kubectl get the 1.34 client that matches the cell's server."""
    from cell import upstream

    bins = upstream.bin_dir()
    if (bins / "kubectl").exists():
        os.environ["PATH"] = f"{bins}{os.pathsep}{os.environ.get('PATH', '')}"

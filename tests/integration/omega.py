"""Cell's live Omega schedulers as the tests run them: `python -m scheduler_ext.omega` subprocesses
against the cell, started and stopped by the test (nothing in the local cell supervises them)."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from scheduler_ext.omega.ledger import LEDGER_LABEL, LEDGER_NAMESPACE, Ledger
from tests.integration.helpers import wait_for


@dataclass
class OmegaProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def metric(self, family: str) -> float:
        """The sum of one counter's samples over all its labels (0 if none yet)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(family + "{") or line.startswith(family + " "))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def omega_schedulers(kubeconfig: Path, names: list[str], log_dir: Path, decision_time: float = 2.0,
                     extra: tuple[str, ...] = ()) -> Iterator[dict[str, OmegaProcess]]:
    """Start one scheduler per name, wait until each has synced its watches, stop them at the end."""
    started: dict[str, OmegaProcess] = {}
    try:
        for name in names:
            log = log_dir / f"{name}.log"
            port = _free_port()
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "scheduler_ext.omega", "--kubeconfig", str(kubeconfig),
                     "--scheduler-name", name, "--decision-time", str(decision_time), "--metrics-port", str(port),
                     *extra], stdout=out, stderr=subprocess.STDOUT)
            started[name] = OmegaProcess(name, process, log, port)

        def synced() -> bool:
            for one in started.values():
                if one.process.poll() is not None:
                    raise AssertionError(f"{one.name} exited {one.process.returncode}: {one.log.read_text()[-2000:]}")
            return all("synced" in one.log.read_text() for one in started.values())

        wait_for(synced, 60, what="the Omega schedulers synced")
        yield started
    finally:
        for one in started.values():
            one.process.terminate()
        for one in started.values():
            try:
                one.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                one.process.kill()
                one.process.wait(timeout=10)


def remove_ledgers(api: client.ApiClient, made_by: Callable[[str], bool]) -> None:
    """Delete the ledgers whose every claim is of a pod in a namespace `made_by` accepts (a test's), each
    under its resourceVersion, so a commit that lands meanwhile keeps its ledger."""
    core = client.CoreV1Api(api)
    listed = core.list_namespaced_config_map(LEDGER_NAMESPACE, label_selector=f"{LEDGER_LABEL}=true")
    for item in listed.items:
        ledger = Ledger.from_manifest(api.sanitize_for_serialization(item))
        if all(made_by(claim.pod.partition("/")[0]) for claim in ledger.claims.values()):
            try:
                core.delete_namespaced_config_map(item.metadata.name, LEDGER_NAMESPACE, body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(resource_version=item.metadata.resource_version)))
            except client.ApiException as exc:
                if exc.status not in (404, 409):
                    raise

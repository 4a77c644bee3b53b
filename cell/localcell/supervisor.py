"""One local cell, identified by its state directory: its record, the processes of its components
(started, watched and stopped by the PIDs the record keeps), and its nodes as the API has them.

Each component runs in a process group of its own with its log in the state directory; every
process's argv names the state directory, so a PID the kernel reused is never mistaken for one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client

from cell.errors import CellError
from cell.kube import api_client, node_is_ready
from cell.localcell import topology
from cell.pki import extender_client_context
from cell.state import CellPaths, CellRecord, Component, RealNodeRecord, load_record, save_record
from cell.wait import wait_until


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, ...), or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None


def pid_alive(pid: int, marker: str) -> bool:
    """True if pid runs and its command line mentions marker (guards against PID reuse).

    Callers pass a directory with its trailing separator, so /tmp/cell never matches /tmp/cell-2's processes.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = _proc_state(pid)
    return state is not None and state != "Z" and marker in cmdline  # a zombie has exited


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM the process's group, SIGKILL it if it outlives timeout; reap it if it is our child."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return _proc_state(pid) in (None, "Z")

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if wait_until(gone, wait, interval=0.1):
            return


class LocalCell:
    """One local cell, identified by its state directory."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.paths = CellPaths(state_dir)
        self._record: CellRecord | None = None

    # --- the record -------------------------------------------------------------------------------

    @property
    def record(self) -> CellRecord:
        if self._record is None:
            self._record = load_record(self.paths.record)
        return self._record

    def create(self, record: CellRecord) -> None:
        """A new cell's record."""
        self._record = record
        self.save()

    def save(self) -> None:
        save_record(self.paths.record, self.record)

    def set_real_node(self, real_node: RealNodeRecord | None) -> None:
        self.record.real_node = real_node
        self.save()

    def exists(self) -> bool:
        return self.paths.record.is_file()

    @property
    def bin_dir(self) -> Path:
        return Path(self.record.bin_dir)

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def state_dir(self) -> Path:
        return self.paths.root

    def port(self, name: str) -> int:
        return int(self.record.ports[name])

    def enabled_extensions(self) -> list[str]:
        return topology.enabled_extensions(self.record)

    # --- components -------------------------------------------------------------------------------

    def components(self) -> list[Component]:
        """Every component in start order: the cell's own, then its real node's (if it has one)."""
        real = self.record.real_node
        return topology.components(self.paths, self.record) + (list(real.components) if real else [])

    def component(self, name: str) -> Component:
        for comp in self.components():
            if comp.name == name:
                return comp
        raise CellError(f"unknown component {name!r}; the cell has {', '.join(self.component_names())}")

    def component_names(self) -> list[str]:
        return [c.name for c in self.components()]

    def pid(self, name: str) -> int | None:
        return self.record.pids.get(name)

    def alive(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and pid_alive(pid, self.paths.marker)

    def _ssl_context(self, mode: str) -> ssl.SSLContext | None:
        if mode == "none":
            return None
        if mode == "extender-client":
            return extender_client_context(self.paths.pki_dir)
        if mode == "insecure":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        ctx = ssl.create_default_context(cafile=str(self.paths.pki_dir / "ca.crt"))
        if mode == "client":
            ctx.load_cert_chain(str(self.paths.pki_dir / "admin.crt"), str(self.paths.pki_dir / "admin.key"))
        return ctx

    def healthy(self, name: str) -> bool:
        comp = self.component(name)
        if not self.alive(name):
            return False
        if comp.health_url is None:
            return True
        try:
            with urllib.request.urlopen(comp.health_url, timeout=3, context=self._ssl_context(comp.health_tls)) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError, CellError):
            return False

    def start(self, name: str, timeout: float = 90.0) -> None:
        """Start one component and wait until its health endpoint answers."""
        comp = self.component(name)
        if self.alive(name):
            return
        log_path = self.paths.log(name)
        with log_path.open("ab") as log:
            log.write(f"\n--- started {time.strftime('%H:%M:%S')}: {' '.join(comp.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(comp.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=topology.REPO_ROOT, env={**os.environ, **comp.env})
        self.record.pids[name] = proc.pid
        self.save()
        if not wait_until(lambda: proc.poll() is not None or self.healthy(name), timeout, interval=0.3):
            raise CellError(f"{name} did not become healthy within {timeout:.0f} s; log: {log_path}")
        if proc.returncode is not None:
            raise CellError(f"{name} exited at start (code {proc.returncode}): "
                            f"{tail(log_path, 1)[:200]}; log: {log_path}")

    def stop(self, name: str, timeout: float = 15.0) -> None:
        """Stop one component (its whole process group) by the PID the cell recorded."""
        pid = self.pid(name)
        if pid is not None and pid_alive(pid, self.paths.marker):
            terminate(pid, timeout)
        self.record.pids.pop(name, None)
        self.save()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def stop_all(self) -> None:
        try:
            names = self.component_names()
        except CellError:  # a record an older Cell wrote: what it started is in its PIDs, in start order
            names = list(self.record.pids)
        for name in reversed(names):
            self.stop(name)
        # Belt and braces: anything else still running out of this state dir (e.g. orphaned children).
        marker = self.paths.marker
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid() and pid_alive(int(proc.name), marker):
                terminate(int(proc.name), 5.0)

    # --- nodes ------------------------------------------------------------------------------------

    def api(self) -> client.ApiClient:
        return api_client(self.paths.kubeconfig)

    def create_nodes(self, count: int, first: int = 1) -> list[str]:
        core = client.CoreV1Api(self.api())
        names = [f"node-{i}" for i in range(first, first + count)]

        def create(index_name: tuple[int, str]) -> None:
            index, name = index_name
            try:
                core.create_node(topology.kwok_node_manifest(name, index))  # type: ignore[arg-type]  # a manifest will do
            except client.ApiException as exc:
                if exc.status != 409:  # an existing node is fine (idempotent up)
                    raise CellError(f"cannot create node {name}: {exc.reason}") from None

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(create, zip(range(first, first + count), names, strict=True)))
        return names

    def ready_nodes(self) -> tuple[int, int]:
        nodes = client.CoreV1Api(self.api()).list_node().items
        ready = sum(1 for n in nodes if node_is_ready(n))
        return ready, len(nodes)

    def wait_nodes_ready(self, expected: int, timeout: float = 180.0) -> None:
        if not wait_until(lambda: self.ready_nodes()[0] >= expected, timeout):
            raise CellError(f"only {self.ready_nodes()[0]} of {expected} nodes became Ready in {timeout:.0f} s; "
                            f"log: {self.paths.log('kwok')}")

"""The local cell: a real Kubernetes control plane on this machine, with KWOK nodes and Cell's extensions.

Every component is a plain host process started from the cached upstream binaries (cell.upstream),
with its PID, argv and log in the cell's state directory, so `cell down` stops exactly what it
started and `cell status` can name a component that died. Ports are picked free at `cell up`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from string import Template

from kubernetes import client
from rich.console import Console
from rich.table import Table

from cell import upstream
from cell.errors import CellError
from cell.kube import api_client, node_is_ready, server_url_of, write_kubeconfig
from cell.pki import CertificateAuthority, write_service_account_keys

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = REPO_ROOT / "cluster"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
ZONES = ("zone-a", "zone-b", "zone-c")
RACKS_PER_ZONE = 2
NODE_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
# Components whose absence a developer may ask for (CELL_WITHOUT=extender,webhook,operator), e.g. to
# run a stock cell; the scheduler then runs without the extender.
EXTENSIONS = ("extender", "webhook", "operator")
# The user each extension acts as: cluster/base/rbac-extensions.yaml grants each what it needs.
EXTENSION_USERS = {name: f"cell-{name}" for name in EXTENSIONS}


def default_state_dir() -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "cell" / "default"


class CellPaths:
    """Where a cell keeps its state: PKI, kubeconfigs, logs, etcd data, the component record."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.root = Path(state_dir or os.environ.get("CELL_STATE_DIR") or default_state_dir()).resolve()
        self.pki_dir = self.root / "pki"
        self.logs_dir = self.root / "logs"
        self.students_dir = self.root / "students"
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.record = self.root / "cell.json"
        self.etcd_data = self.root / "etcd-data"
        self.extender_url_file = self.root / "extender.url"
        # What every process of this cell carries in its argv; the separator keeps sibling dirs apart.
        self.marker = str(self.root) + os.sep

    def server_url(self) -> str:
        return server_url_of(self.kubeconfig)

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port below the ephemeral range: a port the kernel hands out for port 0 can be taken as
    the source port of any outgoing connection before the component that should listen on it starts."""
    low, _ = _ephemeral_range()
    below = range(10000, low) if low > 11000 else range(0)
    for port in random.sample(below, min(200, len(below))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _pid_alive(pid: int, marker: str) -> bool:
    """True if pid runs and its command line mentions marker (guards against PID reuse).

    Callers pass a directory with its trailing separator, so /tmp/cell never matches /tmp/cell-2's processes.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has exited
        return False
    return marker in cmdline


@dataclass
class Component:
    name: str
    argv: list[str]
    health_url: str | None
    # which TLS context its health endpoint needs: "none" (http), "ca" (verify with cell CA),
    # "client" (CA + admin client cert), "insecure" (self-signed serving cert of the component)
    health_tls: str = "none"
    env: dict[str, str] = field(default_factory=dict)


class LocalCell:
    """One local cell, identified by its state directory."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.paths = CellPaths(state_dir)
        self._record: dict | None = None

    # --- the record of what runs ----------------------------------------------------------------

    @property
    def record(self) -> dict:
        if self._record is None:
            try:
                self._record = json.loads(self.paths.record.read_text())
            except FileNotFoundError:
                raise CellError(f"no local cell at {self.paths.root} (run `cell up`)") from None
            except json.JSONDecodeError as exc:
                raise CellError(f"{self.paths.record} is corrupt ({exc}); run `cell down` then `cell up`") from None
        return self._record

    def exists(self) -> bool:
        return self.paths.record.is_file()

    def _save(self) -> None:
        tmp = self.paths.record.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record, indent=2))
        tmp.replace(self.paths.record)

    @property
    def bin_dir(self) -> Path:
        return Path(self.record["bin_dir"])

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
        return int(self.record["ports"][name])

    def enabled_extensions(self) -> list[str]:
        return [name for name in EXTENSIONS if name not in self.record.get("without", [])]

    # --- components -----------------------------------------------------------------------------

    def components(self) -> list[Component]:
        """Every component in start order."""
        p, ports, bins = self.paths, self.record["ports"], self.bin_dir
        pki = p.pki_dir
        py = sys.executable
        comps = [
            Component("etcd", [
                str(bins / "etcd"), "--name=cell", f"--data-dir={p.etcd_data}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=cell=http://127.0.0.1:{ports['etcd_peer']}",
                "--listen-metrics-urls=", "--log-level=warn", "--quota-backend-bytes=4294967296",
                # A test cell is disposable: skip fsync-heavy durability for speed.
                "--unsafe-no-fsync=true",
            ], f"http://127.0.0.1:{ports['etcd']}/health"),
            Component("kube-apiserver", [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # A real node's name (real-1) resolves nowhere; its InternalIP does (logs, exec).
                "--kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                # 127.0.0.1 may not appear in Endpoints; the cell's API is reached by its URL anyway.
                "--endpoint-reconciler-type=none",
                # Borg reschedules tasks of a lost machine quickly; 300 s defaults make labs drag.
                "--default-not-ready-toleration-seconds=30", "--default-unreachable-toleration-seconds=30",
                "--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
                "--profiling=false", "--v=1",
            ], f"https://127.0.0.1:{ports['apiserver']}/readyz", "client"),
            Component("kube-controller-manager", [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={p.component_kubeconfig('kube-controller-manager')}",
                f"--authentication-kubeconfig={p.component_kubeconfig('kube-controller-manager')}",
                f"--authorization-kubeconfig={p.component_kubeconfig('kube-controller-manager')}",
                "--bind-address=127.0.0.1", f"--secure-port={ports['controller_manager']}",
                f"--cert-dir={p.root / 'kcm-certs'}",
                f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--use-service-account-credentials=true", "--leader-elect=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--allocate-node-cidrs=false",
                "--kube-api-qps=200", "--kube-api-burst=400",
                "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10", "--v=1",
            ], f"https://127.0.0.1:{ports['controller_manager']}/healthz", "insecure"),
        ]
        extensions = self.enabled_extensions()
        admin = str(p.kubeconfig)
        if "extender" in extensions:
            comps.append(Component("extender", [
                py, "-m", "scheduler_ext.extender", "--kubeconfig", str(p.component_kubeconfig("extender")),
                "--host", "127.0.0.1", "--port", str(ports["extender"]),
            ], f"http://127.0.0.1:{ports['extender']}/healthz"))
        comps.append(Component("kube-scheduler", [
            str(bins / "kube-scheduler"), f"--config={p.root / 'kube-scheduler.yaml'}",
            f"--authentication-kubeconfig={p.component_kubeconfig('kube-scheduler')}",
            f"--authorization-kubeconfig={p.component_kubeconfig('kube-scheduler')}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}",
            f"--cert-dir={p.root / 'scheduler-certs'}", "--v=1",
        ], f"https://127.0.0.1:{ports['scheduler']}/healthz", "insecure"))
        comps.append(Component("kwok", [
            str(bins / "kwok"), f"--kubeconfig={admin}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--config={bins / upstream.KWOK_STAGES_FILE}", "--node-lease-duration-seconds=40",
            f"--cidr={POD_CIDR}", "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{ports['kwok']}", "--v=WARN",
        ], f"http://127.0.0.1:{ports['kwok']}/healthz"))
        if "webhook" in extensions:
            comps.append(Component("webhook", [
                py, "-m", "scheduler_ext.webhook", "--kubeconfig", str(p.component_kubeconfig("webhook")),
                "--host", "127.0.0.1",
                "--port", str(ports["webhook"]), "--tls-cert", str(pki / "webhook.crt"),
                "--tls-key", str(pki / "webhook.key"),
            ], f"https://127.0.0.1:{ports['webhook']}/healthz", "ca"))
        if "operator" in extensions:
            comps.append(Component("operator", [
                py, "-m", "scheduler_ext.operator", "--kubeconfig", str(p.component_kubeconfig("operator")),
                "--health-port", str(ports["operator"]),
            ], f"http://127.0.0.1:{ports['operator']}/healthz"))
        if self.record.get("real_node"):  # `cell up --real-node`: containerd, kubelet, kube-proxy (cell/realnode.py)
            from cell import realnode

            comps += realnode.components(self)
        return comps

    def component(self, name: str) -> Component:
        for comp in self.components():
            if comp.name == name:
                return comp
        raise CellError(f"unknown component {name!r}; the cell has {', '.join(self.component_names())}")

    def component_names(self) -> list[str]:
        return [c.name for c in self.components()]

    def pid(self, name: str) -> int | None:
        entry = self.record.get("pids", {}).get(name)
        return int(entry) if entry else None

    def alive(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and _pid_alive(pid, self.paths.marker)

    def _ssl_context(self, mode: str) -> ssl.SSLContext | None:
        if mode == "none":
            return None
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
        except (urllib.error.URLError, OSError, ssl.SSLError):
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
                                    start_new_session=True, cwd=REPO_ROOT, env={**os.environ, **comp.env})
        self.record.setdefault("pids", {})[name] = proc.pid
        self._save()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CellError(f"{name} exited at start (code {proc.returncode}): "
                                f"{_tail(log_path, 1)[:200]}; log: {log_path}")
            if self.healthy(name):
                return
            time.sleep(0.3)
        raise CellError(f"{name} did not become healthy within {timeout:.0f} s; log: {log_path}")

    def stop(self, name: str, timeout: float = 15.0) -> None:
        """Stop one component (its whole process group) by the PID the cell recorded."""
        pid = self.pid(name)
        if pid is not None and _pid_alive(pid, self.paths.marker):
            _terminate(pid, timeout)
        self.record.setdefault("pids", {}).pop(name, None)
        self._save()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    # --- nodes ------------------------------------------------------------------------------------

    def api(self) -> client.ApiClient:
        return api_client(self.paths.kubeconfig)

    def create_nodes(self, count: int, first: int = 1) -> list[str]:
        core = client.CoreV1Api(self.api())
        names = [f"node-{i}" for i in range(first, first + count)]

        def create(index_name: tuple[int, str]) -> None:
            index, name = index_name
            try:
                core.create_node(kwok_node_manifest(name, index))  # type: ignore[arg-type]  # a manifest will do
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
        deadline = time.monotonic() + timeout
        ready = 0
        while time.monotonic() < deadline:
            ready, _total = self.ready_nodes()
            if ready >= expected:
                return
            time.sleep(0.5)
        raise CellError(f"only {ready} of {expected} nodes became Ready in {timeout:.0f} s; "
                        f"log: {self.paths.log('kwok')}")

    # --- manifests --------------------------------------------------------------------------------

    def kubectl_run(self, *args: str, stdin: str | None = None) -> str:
        cmd = [str(self.kubectl), f"--kubeconfig={self.paths.kubeconfig}", *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise CellError(f"kubectl {' '.join(args)} failed: {result.stderr.strip().splitlines()[-1:]}")
        return result.stdout

    def apply_base(self) -> None:
        self.kubectl_run("apply", "--server-side", "--force-conflicts", "-k", str(CLUSTER_DIR / "base"))

    def register_webhook(self) -> None:
        template = (CLUSTER_DIR / "webhook" / "validating-webhook.yaml").read_text()
        ca_bundle = base64.b64encode((self.paths.pki_dir / "ca.crt").read_bytes()).decode()
        manifest = Template(template).safe_substitute(
            CA_BUNDLE=ca_bundle, WEBHOOK_URL=f"https://127.0.0.1:{self.port('webhook')}/validate")
        self.kubectl_run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest)


def _terminate(pid: int, timeout: float) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return
            time.sleep(0.1)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def kwok_node_manifest(name: str, index: int) -> dict:
    """A simulated node: KWOK keeps it Ready; zone and rack labels give Borg failure domains."""
    zone_index = (index - 1) % len(ZONES)
    rack = zone_index * RACKS_PER_ZONE + ((index - 1) // len(ZONES)) % RACKS_PER_ZONE + 1
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                "type": "kwok", "topology.kubernetes.io/zone": ZONES[zone_index],
                "cell.distos.dev/rack": f"rack-{rack}",
            },
        },
        "spec": {},
        "status": {
            "allocatable": dict(NODE_CAPACITY),
            "capacity": dict(NODE_CAPACITY),
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "kubeletVersion": f"v{upstream.KUBERNETES_VERSION}",
                         "kubeProxyVersion": f"v{upstream.KUBERNETES_VERSION}",
                         "containerRuntimeVersion": "kwok", "kernelVersion": "", "osImage": "", "machineID": "",
                         "systemUUID": "", "bootID": ""},
            "phase": "Running",
        },
    }


# --- the commands -------------------------------------------------------------------------------

def _write_pki(paths: CellPaths) -> None:
    ca = CertificateAuthority.create(paths.pki_dir)
    write_service_account_keys(paths.pki_dir)
    ca.write_serving_cert(paths.pki_dir, "apiserver",
                          ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                           "kubernetes.default.svc.cluster.local"], ["127.0.0.1", "10.96.0.1"])
    ca.write_serving_cert(paths.pki_dir, "webhook", ["localhost"], ["127.0.0.1"])
    ca.write_client_cert(paths.pki_dir, "admin", "cell-admin", ["system:masters"])
    ca.write_client_cert(paths.pki_dir, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                         ["system:masters"])


def _write_kubeconfigs(paths: CellPaths, server: str) -> None:
    ca = CertificateAuthority.load(paths.pki_dir)
    admin_cert = (paths.pki_dir / "admin.crt").read_bytes()
    admin_key = (paths.pki_dir / "admin.key").read_bytes()
    write_kubeconfig(paths.kubeconfig, server, ca.cert_pem, admin_cert, admin_key, "cell-admin")
    for component, user in (("kube-controller-manager", "system:kube-controller-manager"),
                            ("kube-scheduler", "system:kube-scheduler")):
        cert, key = ca.issue_client_cert(user, [])
        write_kubeconfig(paths.component_kubeconfig(component), server, ca.cert_pem, cert, key, user)
    _write_extension_kubeconfigs(paths, server)


def _write_extension_kubeconfigs(paths: CellPaths, server: str) -> None:
    """Each extension's own identity (missing ones only: a cell made before they existed gets them
    when it is recovered)."""
    ca = CertificateAuthority.load(paths.pki_dir)
    for extension, user in EXTENSION_USERS.items():
        path = paths.component_kubeconfig(extension)
        if not path.exists():
            cert, key = ca.issue_client_cert(user, [])
            write_kubeconfig(path, server, ca.cert_pem, cert, key, user)


def _write_scheduler_config(cell: LocalCell) -> None:
    paths = cell.paths
    with_extender = "extender" in cell.enabled_extensions()
    name = "kube-scheduler-config.yaml" if with_extender else "kube-scheduler-stock.yaml"
    text = (CLUSTER_DIR / "scheduler" / name).read_text()
    if not with_extender:
        text = text.replace("schedulerName: stock-scheduler", "schedulerName: default-scheduler")
    extender_url = f"http://127.0.0.1:{cell.port('extender')}"
    config_text = Template(text).safe_substitute(
        KUBECONFIG=str(paths.component_kubeconfig("kube-scheduler")), EXTENDER_URL=extender_url)
    (paths.root / "kube-scheduler.yaml").write_text(config_text)
    if with_extender:
        paths.extender_url_file.write_text(extender_url + "\n")


def up(nodes: int = 12, state_dir: Path | None = None, console: Console | None = None,
       real_node: bool = False) -> Path:
    """Stand up (or recover) the local cell, with a real node if asked; returns the admin kubeconfig path."""
    console = console or Console(stderr=True)
    cell = LocalCell(state_dir)
    if cell.exists():
        kubeconfig = _recover(cell, console)
        if real_node:  # an existing cell gains (or recovers) its real node
            from cell import realnode

            realnode.add(cell, console)
        return kubeconfig
    if real_node:  # refuse before starting anything (not root, another real node on the machine)
        from cell import realnode

        realnode.check_machine(cell)
    bins = upstream.ensure_binaries(console=console)
    paths = cell.paths
    if paths.root.exists():
        if (paths.root / "realnode").exists():  # its real node's mounts and processes go first
            from cell import realnode

            realnode.clean_leftovers(paths.root, console)
        shutil.rmtree(paths.root)  # leftovers of a failed `cell up`
    for directory in (paths.root, paths.logs_dir, paths.students_dir, paths.root / "kubeconfigs"):
        directory.mkdir(parents=True, exist_ok=True)
    without = [n.strip() for n in os.environ.get("CELL_WITHOUT", "").split(",") if n.strip()]
    unknown = sorted(set(without) - set(EXTENSIONS))
    if unknown:
        raise CellError(f"CELL_WITHOUT names unknown extensions {unknown}; known: {', '.join(EXTENSIONS)}")
    ports: dict[str, int] = {}
    for name in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok", "extender",
                 "webhook", "operator"):
        port = free_port()
        for _ in range(20):  # each pick is free now, but two picks may be the same port
            if port not in ports.values():
                break
            port = free_port()
        ports[name] = port
    cell._record = {"bin_dir": str(bins), "nodes": nodes, "ports": ports, "pids": {}, "without": without,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    cell._save()
    try:
        _write_pki(paths)
        _write_kubeconfigs(paths, f"https://127.0.0.1:{ports['apiserver']}")
        _write_scheduler_config(cell)
        _start_all(cell, console, nodes)
        if real_node:
            from cell import realnode

            realnode.add(cell, console)
    except BaseException:
        console.print("[red]cell up failed; stopping what it started[/]")
        _stop_all(cell)
        _remove_state_keep_logs(paths)
        raise
    console.print(f"[green]cell is up[/]: {nodes} nodes Ready; state in {paths.root}")
    return paths.kubeconfig


def _start_all(cell: LocalCell, console: Console, nodes: int) -> None:
    steps: list[tuple[str, Callable[[], object]]] = []
    for comp in cell.components():
        steps.append((f"starting {comp.name}", partial(cell.start, comp.name)))
        if comp.name == "kube-apiserver":
            steps.append(("applying cluster/base (bands, CRDs, RBAC)", cell.apply_base))
        if comp.name == "kwok":
            steps.append((f"creating {nodes} KWOK nodes", lambda: _create_kwok_nodes(cell, nodes)))
        if comp.name == "webhook":
            steps.append(("registering the quota webhook", cell.register_webhook))
    with console.status("") as status:
        for description, step in steps:
            status.update(description)
            step()
            console.print(f"  [green]✓[/] {description}")


def _create_kwok_nodes(cell: LocalCell, nodes: int) -> None:
    cell.create_nodes(nodes)
    cell.wait_nodes_ready(nodes)


def _recover(cell: LocalCell, console: Console) -> Path:
    """A second `cell up`: report the running cell, restarting any component that died."""
    dead = [name for name in cell.component_names() if not cell.healthy(name)]
    if not dead:
        ready, total = cell.ready_nodes()
        console.print(f"cell already running at {cell.paths.root} ({ready}/{total} nodes Ready)")
        return cell.paths.kubeconfig
    if set(dead) & set(EXTENSIONS):
        # A cell made by an older Cell lacks the extensions' identities and their RBAC: add both.
        _write_extension_kubeconfigs(cell.paths, cell.paths.server_url())
        if "kube-apiserver" not in dead:
            cell.apply_base()
    for name in dead:
        console.print(f"restarting {name} (it had stopped; log: {cell.paths.log(name)})")
        cell.stop(name)
        cell.start(name)
    if "webhook" in dead:
        cell.register_webhook()
    return cell.paths.kubeconfig


def _stop_all(cell: LocalCell) -> None:
    for name in reversed(cell.component_names()):
        cell.stop(name)
    # Belt and braces: anything else still running out of this state dir (e.g. orphaned children).
    marker = cell.paths.marker
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid() and _pid_alive(int(proc.name), marker):
            _terminate(int(proc.name), 5.0)


def _remove_state_keep_logs(paths: CellPaths) -> None:
    for child in paths.root.iterdir():
        if child != paths.logs_dir:
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def down(state_dir: Path | None = None, console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    cell = LocalCell(state_dir)
    if not cell.paths.root.exists():
        console.print(f"no local cell at {cell.paths.root}; nothing to stop")
        return
    if cell.exists() and cell.record.get("real_node"):
        # Before the rest: its containers, mounts, bridge, iptables rules and cgroups go first.
        from cell import realnode

        realnode.remove(cell, console, keep_cell=False)
    if cell.exists():
        _stop_all(cell)
    if (cell.paths.root / "realnode").exists():  # a real node that crashed with its cell: nothing may stay
        from cell import realnode

        realnode.clean_leftovers(cell.paths.root, console)
    shutil.rmtree(cell.paths.root)
    console.print(f"cell down: stopped its processes and removed {cell.paths.root}")


def status(state_dir: Path | None = None, console: Console | None = None) -> bool:
    console = console or Console()
    cell = LocalCell(state_dir)
    table = Table(title=f"cell at {cell.paths.root}")
    for column in ("component", "pid", "health", "endpoint"):
        table.add_column(column)
    all_healthy = True
    dead_logs: list[tuple[str, str]] = []
    for comp in cell.components():
        healthy = cell.healthy(comp.name)
        alive = cell.alive(comp.name)
        state = "[green]healthy[/]" if healthy else ("[yellow]unhealthy[/]" if alive else "[red]dead[/]")
        all_healthy &= healthy
        table.add_row(comp.name, str(cell.pid(comp.name) or "-"), state, comp.health_url or "-")
        if not healthy:
            dead_logs.append((comp.name, str(cell.paths.log(comp.name))))
    console.print(table)
    try:
        ready, total = cell.ready_nodes()
        console.print(f"nodes: {ready}/{total} Ready")
    except Exception as exc:  # the API itself may be what is down
        console.print(f"nodes: unknown (API unreachable: {str(exc).splitlines()[0][:100]})")
        all_healthy = False
    for name, log in dead_logs:
        console.print(f"[red]{name}[/] is not healthy; last lines of {log}:")
        console.print(_tail(Path(log)), highlight=False, markup=False)
    return all_healthy


def kubeconfig_path(state_dir: Path | None = None, student: str | None = None) -> Path:
    paths = CellPaths(state_dir)
    path = paths.students_dir / f"{student}.kubeconfig" if student else paths.kubeconfig
    if not path.is_file():
        who = f"student {student!r}" if student else "the cell"
        raise CellError(f"no kubeconfig for {who} at {path}"
                        + (" (add the student with `cell students add`)" if student else " (run `cell up`)"))
    return path

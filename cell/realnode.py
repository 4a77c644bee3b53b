"""A real worker node on this machine, next to the local cell's KWOK nodes: containers really run.

`cell up --real-node` (add) runs the same Ansible node role that prepares the OpenStack VMs
(playbooks/node.yml with playbooks/inventory/local.yml, connection local, cell_service_manager
none): Debian's containerd, runc and CNI plugins, the locally built kubelet and kube-proxy. Then,
as kubeadm would in the cloud, it writes the node's certificates (from the cell's CA), kubeconfigs
and configuration into the cell's state directory, builds the pause and course images
(cell/images.py) and imports them, and starts containerd, kubelet and kube-proxy as components of
the local cell, so `cell status` reports them and `cell down` stops them.

A real node changes the machine (processes, mounts, network namespaces, the bridge, iptables
rules, cgroups, a few sysctls and files), so before it starts, `add` records the machine's state
(the baseline) beside a machine-wide claim in /run/cell/realnode; `remove` (called by `cell down`)
puts every one of those back. Only one real node fits on a machine (bridge, pod network, iptables):
the claim refuses a second one.

The node is tainted `cell.distos.dev/real=true:NoSchedule` and labelled `cell.distos.dev/real=true`:
the cell's other workloads (KWOK-only images) never land on it by accident; pods meant for it select
and tolerate it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from rich.console import Console

from cell import images, playbooks
from cell.errors import CellError
from cell.kube import node_is_ready, write_kubeconfig
from cell.localcell import RACKS_PER_ZONE, ZONES, Component, LocalCell, free_port
from cell.pki import CertificateAuthority
from cell.upstream import bin_dir

NODE_NAME = "real-1"
REAL_LABEL = "cell.distos.dev/real"
TAINT = f"{REAL_LABEL}=true:NoSchedule"
POD_CIDR = "10.245.0.0/24"  # beside the KWOK nodes' 10.244.0.0/16, which is never routed
BRIDGE = "cell0"
CNI_NETWORK = "cell"
COMPONENTS = ("containerd", "kubelet", "kube-proxy")
NODE_PLAYBOOK = "node.yml"
LOCAL_INVENTORY = playbooks.PLAYBOOK_DIR / "inventory" / "local.yml"
CLAIM_DIR = Path(os.environ.get("CELL_REALNODE_CLAIM_DIR", "/run/cell/realnode"))
# A unix socket path must fit sockaddr_un (108 bytes with its terminator).
MAX_SOCKET_PATH = 100

# What a kubelet and kube-proxy may change in /proc/sys (kubelet's kernel tunables, the bridge
# plugin's forwarding, kube-proxy's conntrack and localnet settings): restored by `remove`.
SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established", "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
)
# Host directories a kubelet, containerd or the CNI plugins write to whatever they are told: new
# entries are removed by `remove` (parents first; a directory that did not exist goes entirely).
HOST_PATHS = (
    "/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/var/lib/cni/results",
    "/var/lib/cni/networks", "/run/containerd", "/run/containerd/s", "/etc/cni", "/opt/cni",
)
IPTABLES = ("iptables", "ip6tables")


# --- where the node keeps its state ---------------------------------------------------------------

class RealNodePaths:
    """The node's files, all inside the cell's state directory (the kubelet's root-dir too)."""

    def __init__(self, cell: LocalCell) -> None:
        self.cell_paths = cell.paths
        self.root = cell.paths.root / "realnode"
        self.containerd_config = self.root / "containerd" / "config.toml"
        self.containerd_root = self.root / "containerd" / "root"
        self.containerd_state = self.root / "containerd" / "state"
        self.containerd_socket = self.root / "containerd.sock"
        self.runc_root = self.root / "runc"
        self.cni_conf_dir = self.root / "cni" / "net.d"
        self.cni_ipam_dir = self.root / "cni" / "ipam"
        self.kubelet_root = self.root / "kubelet"
        self.kubelet_config = self.root / "kubelet.yaml"
        self.kube_proxy_config = self.root / "kube-proxy.yaml"
        self.pod_logs = self.root / "pod-logs"
        self.pki = self.root / "pki"
        self.images = self.root / "images"
        self.crictl_config = self.root / "crictl.yaml"
        self.kubelet_kubeconfig = cell.paths.component_kubeconfig("kubelet")
        self.kube_proxy_kubeconfig = cell.paths.component_kubeconfig("kube-proxy")
        self.ansible_dir = cell.paths.logs_dir / "realnode-ansible"
        self.images_log = cell.paths.log("realnode-images")


# --- the machine-wide claim and the baseline --------------------------------------------------------

@dataclass
class HostState:
    """What a real node changes on the machine, in a form that compares equal when nothing changed."""

    iptables: dict[str, str] = field(default_factory=dict)  # iptables/ip6tables -> iptables-save, counters cut
    nft_tables: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)  # kubepods trees, per hierarchy
    sysctls: dict[str, str] = field(default_factory=dict)
    host_paths: dict[str, list[str] | None] = field(default_factory=dict)  # listing, None if absent

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostState:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def differences(self, other: HostState) -> list[str]:
        """Human-readable differences from `other` (the state before), empty when the machine is as it was."""
        out = []
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine == theirs:
                continue
            if isinstance(mine, dict):
                for key in sorted(set(mine) | set(theirs)):
                    if mine.get(key) != theirs.get(key):
                        out.append(f"{name}[{key}]: {_short(theirs.get(key))} -> {_short(mine.get(key))}")
            else:
                added = sorted(set(mine) - set(theirs))
                gone = sorted(set(theirs) - set(mine))
                out.append(f"{name}: new {_few(added)}, gone {_few(gone)}")
        return out


def _few(items: list[str], limit: int = 4) -> str:
    return repr(items) if len(items) <= limit else f"{items[:limit]!r} and {len(items) - limit} more"


def _short(value: object) -> str:
    if isinstance(value, str) and "\n" in value:
        return f"<{len(value.splitlines())} lines>"
    return repr(value)


def _run(cmd: list[str], timeout: float = 30, check: bool = False, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    except FileNotFoundError:
        if check:
            raise CellError(f"{cmd[0]} is not installed (the node role installs it: cell up --real-node)") from None
        return ""
    except subprocess.TimeoutExpired:
        raise CellError(f"{' '.join(cmd[:4])} did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise CellError(f"{' '.join(cmd[:4])} failed: {(result.stderr or result.stdout).strip()[:200]}")
    return result.stdout


def _normalise_iptables(text: str) -> str:
    lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(lines)


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point))
    return points


def _cgroup_roots() -> list[Path]:
    roots = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            roots.append(Path(left.split()[4]))
    return roots


def _kubepods_cgroups() -> list[Path]:
    return [root / "kubepods" for root in _cgroup_roots() if (root / "kubepods").is_dir()]


def _listing(path: str) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def capture_host_state() -> HostState:
    state = HostState()
    for tool in IPTABLES:
        state.iptables[tool] = _normalise_iptables(_run([f"{tool}-save"]))
    state.nft_tables = sorted(line.strip() for line in _run(["nft", "list", "tables"]).splitlines() if line.strip())
    state.links = sorted(link["ifname"] for link in json.loads(_run(["ip", "-j", "link", "show"]) or "[]"))
    state.netns = sorted(ns["name"] for ns in json.loads(_run(["ip", "-j", "netns", "list"]) or "[]"))
    state.mounts = sorted(_mount_points())
    state.cgroups = sorted(str(p) for tree in _kubepods_cgroups() for p in [tree, *tree.rglob("*")] if p.is_dir())
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            state.sysctls[name] = Path("/proc/sys", name).read_text().strip()
    state.host_paths = {path: _listing(path) for path in HOST_PATHS}
    return state


@dataclass
class Claim:
    """The machine-wide record that a real node exists, whose it is, and the machine before it."""

    state_dir: str
    pid: int  # the `cell up` making the node, with its start time (PIDs are reused)
    pid_start: str
    created: str

    @staticmethod
    def load() -> Claim | None:
        try:
            data = json.loads((CLAIM_DIR / "owner.json").read_text())
            return Claim(str(data["state_dir"]), int(data["pid"]), str(data["pid_start"]), str(data["created"]))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise CellError(f"{CLAIM_DIR / 'owner.json'} is corrupt; remove {CLAIM_DIR} once no real node "
                            f"runs on this machine") from None

    def owner_active(self) -> bool:
        """True if a cell still has this real node, or a `cell up` is still making it."""
        if self.pid != os.getpid() and _start_time(self.pid) == self.pid_start:
            return True
        try:
            record = json.loads((Path(self.state_dir) / "cell.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return bool(record.get("real_node"))


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def load_baseline() -> HostState | None:
    try:
        return HostState.from_json(json.loads((CLAIM_DIR / "baseline.json").read_text()))
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    CLAIM_DIR.parent.mkdir(parents=True, exist_ok=True)
    with (CLAIM_DIR.parent / "realnode.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _claim(cell: LocalCell, console: Console) -> None:
    """Take the machine's one real-node slot, or refuse naming the cell that holds it."""
    with _machine_lock():
        claim = Claim.load()
        if claim is not None and Path(claim.state_dir) != cell.paths.root:
            _refuse_if_taken(claim)
            console.print(f"cleaning up after the real node of the vanished cell at {claim.state_dir}")
            restore_machine(Path(claim.state_dir) / "realnode", load_baseline(), console)
            shutil.rmtree(CLAIM_DIR, ignore_errors=True)
        if claim is None and (Path("/sys/class/net") / BRIDGE).exists():
            raise CellError(f"bridge {BRIDGE} exists but no cell claims it: another real node (or its leftovers) is "
                            f"on this machine; remove it first (ip link del {BRIDGE})")
        CLAIM_DIR.mkdir(parents=True, exist_ok=True)
        owner = {"state_dir": str(cell.paths.root), "pid": os.getpid(), "pid_start": _start_time(os.getpid()),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (CLAIM_DIR / "owner.json").write_text(json.dumps(owner, indent=2))


def _refuse_if_taken(claim: Claim) -> None:
    if claim.owner_active():
        raise CellError(f"a real node already runs on this machine, in the cell at {claim.state_dir}; only one "
                        f"fits (bridge {BRIDGE}, pod network, iptables): run `cell down --state-dir "
                        f"{claim.state_dir}` first")


def _release_claim(cell: LocalCell) -> None:
    with _machine_lock():
        claim = Claim.load()
        if claim is not None and Path(claim.state_dir) == cell.paths.root:
            shutil.rmtree(CLAIM_DIR, ignore_errors=True)


def _save_baseline(state: HostState) -> None:
    path = CLAIM_DIR / "baseline.json"
    if path.exists():  # a retried add keeps the state from before the first attempt
        return
    for tool, text in state.iptables.items():
        # The raw save too: `restore` feeds it back to iptables-restore.
        (CLAIM_DIR / f"{tool}.save").write_text(_run([f"{tool}-save"]) if text else "")
    path.write_text(json.dumps(asdict(state), indent=2))


# --- the node role ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoleRun:
    changed: int
    ok: int
    artifacts: Path
    changed_tasks: tuple[str, ...] = ()  # "host: task" of every task that changed something


def role_extravars(cell: LocalCell) -> dict[str, Any]:
    """Where this cell's node keeps containerd's and the CNI's files; the rest is in the local inventory."""
    rp = RealNodePaths(cell)
    real = cell.record.get("real_node") or {}
    metrics_port = (real.get("ports") or {}).get("containerd_metrics")
    return {
        "cell_containerd_socket": f"unix://{rp.containerd_socket}",
        "container_runtime_config_path": str(rp.containerd_config),
        "container_runtime_root_dir": str(rp.containerd_root),
        "container_runtime_state_dir": str(rp.containerd_state),
        "container_runtime_runc_root": str(rp.runc_root),
        "container_runtime_metrics_address": f"127.0.0.1:{metrics_port}" if metrics_port else "",
        "cell_cni_conf_dir": str(rp.cni_conf_dir),
        "node_crictl_config_path": str(rp.crictl_config),
        "node_local_bin_dir": str(bin_dir()),
    }


def run_node_role(cell: LocalCell, inventory: Path = LOCAL_INVENTORY) -> RoleRun:
    """Run playbooks/node.yml against this machine; logs under the cell's logs."""
    return run_playbook(inventory, role_extravars(cell), RealNodePaths(cell).ansible_dir)


def run_playbook(inventory: Path, extravars: Mapping[str, Any], private_dir: Path,
                 playbook: str = NODE_PLAYBOOK) -> RoleRun:
    """Run one of playbooks/ (the local inventory, or the cloud's), counting changes."""
    result = playbooks.run(playbook, inventory, extravars, private_dir)
    artifacts = Path(result.config.artifact_dir)
    if not playbooks.succeeded(result):
        raise CellError(f"{playbook} failed {playbooks.failure(result)} (log: {artifacts / 'stdout'})")
    stats = result.stats or {}
    return RoleRun(changed=sum((stats.get("changed") or {}).values()), ok=sum((stats.get("ok") or {}).values()),
                   artifacts=artifacts, changed_tasks=playbooks.changed_tasks(result))


# --- configuration, as kubeadm would write it ----------------------------------------------------------

def _node_ip() -> str:
    """The IPv4 address of the default route's interface: the node's InternalIP."""
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "default"], check=True) or "[]")
    if not routes:
        raise CellError("this machine has no IPv4 default route: the real node needs a node IP")
    device = routes[0]["dev"]
    addresses = json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", device], check=True) or "[]")
    for link in addresses:
        for address in link.get("addr_info", []):
            if address.get("family") == "inet":
                return str(address["local"])
    raise CellError(f"interface {device} (the default route's) has no IPv4 address")


def _real_node_record() -> dict[str, Any]:
    zone = ZONES[0]
    return {
        "node": NODE_NAME,
        "node_ip": _node_ip(),
        "zone": zone,
        # Past the KWOK racks: a machine of its own.
        "rack": f"rack-{len(ZONES) * RACKS_PER_ZONE + 1}",
        "ports": {name: free_port() for name in ("kubelet", "kubelet_healthz", "containerd_metrics",
                                                 "kube_proxy_healthz", "kube_proxy_metrics")},
    }


def kubelet_config(cell: LocalCell) -> dict[str, Any]:
    rp, real = RealNodePaths(cell), cell.record["real_node"]
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",  # containerd 1.6 on cgroup v1 without systemd (SystemdCgroup = false)
        "containerRuntimeEndpoint": f"unix://{rp.containerd_socket}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(cell.paths.pki_dir / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "failSwapOn": False,
        # On the node IP: the apiserver reaches the kubelet there for logs, exec and port-forward.
        "address": real["node_ip"],
        "port": real["ports"]["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": real["ports"]["kubelet_healthz"],
        "tlsCertFile": str(rp.pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(rp.pki / "kubelet.key"),
        # Root here may not lower oom_score_adj (no CAP_SYS_RESOURCE).
        "oomScoreAdj": 0,
        "podLogsDir": str(rp.pod_logs),
        "registerWithTaints": [{"key": REAL_LABEL, "value": "true", "effect": "NoSchedule"}],
        # A shared development machine: evict only when truly short, never collect the local images.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "maxPods": 110,
    }


def kube_proxy_config(cell: LocalCell) -> dict[str, Any]:
    rp, real = RealNodePaths(cell), cell.record["real_node"]
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(rp.kube_proxy_kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{real['ports']['kube_proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{real['ports']['kube_proxy_metrics']}",
        "oomScoreAdj": 0,
        # Leave the machine's conntrack table and route_localnet as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def cni_config(cell: LocalCell) -> dict[str, Any]:
    rp = RealNodePaths(cell)
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(rp.cni_ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def write_node_config(cell: LocalCell) -> None:
    """Certificates from the cell's CA, kubeconfigs, kubelet, kube-proxy and CNI configuration."""
    rp, real = RealNodePaths(cell), cell.record["real_node"]
    ca = CertificateAuthority.load(cell.paths.pki_dir)
    server = cell.paths.server_url()
    rp.pki.mkdir(parents=True, exist_ok=True)
    # The Node authorizer and NodeRestriction know a kubelet by this name and group.
    cert, key = ca.issue_client_cert(f"system:node:{NODE_NAME}", ["system:nodes"])
    write_kubeconfig(rp.kubelet_kubeconfig, server, ca.cert_pem, cert, key, f"system:node:{NODE_NAME}")
    cert, key = ca.issue_client_cert("system:kube-proxy", [])
    write_kubeconfig(rp.kube_proxy_kubeconfig, server, ca.cert_pem, cert, key, "system:kube-proxy")
    cert, key = ca.issue_serving_cert(NODE_NAME, [NODE_NAME, "localhost"], [real["node_ip"], "127.0.0.1"])
    (rp.pki / "kubelet.crt").write_bytes(cert)
    (rp.pki / "kubelet.key").write_bytes(key)
    (rp.pki / "kubelet.key").chmod(0o600)
    for directory in (rp.kubelet_root, rp.pod_logs, rp.cni_conf_dir, rp.cni_ipam_dir, rp.runc_root):
        directory.mkdir(parents=True, exist_ok=True)
    rp.kubelet_config.write_text(yaml.safe_dump(kubelet_config(cell), sort_keys=False))
    rp.kube_proxy_config.write_text(yaml.safe_dump(kube_proxy_config(cell), sort_keys=False))
    (rp.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps(cni_config(cell), indent=2) + "\n")


# --- the components, as the local cell runs them -----------------------------------------------------------

def components(cell: LocalCell) -> list[Component]:
    """containerd, kubelet and kube-proxy: appended to the cell's components when it has a real node."""
    rp, real = RealNodePaths(cell), cell.record["real_node"]
    ports, bins = real["ports"], bin_dir()
    labels = {REAL_LABEL: "true", "topology.kubernetes.io/zone": real["zone"], "cell.distos.dev/rack": real["rack"]}
    return [
        Component("containerd", ["containerd", "--config", str(rp.containerd_config)],
                  f"http://127.0.0.1:{ports['containerd_metrics']}/v1/metrics"),
        Component("kubelet", [
            str(bins / "kubelet"), f"--config={rp.kubelet_config}", f"--kubeconfig={rp.kubelet_kubeconfig}",
            f"--root-dir={rp.kubelet_root}", f"--cert-dir={rp.pki}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={real['node_ip']}", "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "--v=1",
        ], f"http://127.0.0.1:{ports['kubelet_healthz']}/healthz"),
        Component("kube-proxy", [str(bins / "kube-proxy"), f"--config={rp.kube_proxy_config}", "--v=1"],
                  f"http://127.0.0.1:{ports['kube_proxy_healthz']}/livez"),
    ]


# --- add and remove ----------------------------------------------------------------------------------

def check_machine(cell: LocalCell) -> None:
    """What `add` would refuse, checked before a new cell starts for it: nothing is started in vain."""
    _check_host(cell)
    claim = Claim.load()
    if claim is not None and Path(claim.state_dir) != cell.paths.root:
        _refuse_if_taken(claim)


def _preflight(cell: LocalCell) -> None:
    _check_host(cell)
    missing = [name for name in ("kubelet", "kube-proxy") if not (bin_dir() / name).is_file()]
    if missing:
        raise CellError(f"{', '.join(missing)} not built in {bin_dir()}: run `cell build`")


def _check_host(cell: LocalCell) -> None:
    if sys.platform != "linux":
        raise CellError("a real node needs Linux (namespaces, cgroups, overlayfs)")
    if os.geteuid() != 0:
        raise CellError("a real node needs root: it runs containerd and the kubelet, mounts, and sets iptables rules")
    rp = RealNodePaths(cell)
    if len(str(rp.containerd_socket)) > MAX_SOCKET_PATH:
        raise CellError(f"the state directory {cell.paths.root} is too deep for containerd's socket "
                        f"({len(str(rp.containerd_socket))} > {MAX_SOCKET_PATH} characters); use a shorter --state-dir")


def node_ready(cell: LocalCell) -> bool:
    try:
        return node_is_ready(client.CoreV1Api(cell.api()).read_node(NODE_NAME))
    except client.ApiException:
        return False


def _wait_node_ready(cell: LocalCell, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_ready(cell):
            return
        if not cell.alive("kubelet"):
            break
        time.sleep(1)
    raise CellError(f"node {NODE_NAME} did not become Ready and untainted within {timeout:.0f} s; "
                    f"log: {cell.paths.log('kubelet')}")


def add(cell: LocalCell, console: Console | None = None) -> None:
    """Make this machine a real node of the cell (idempotent: restarts what died of an existing one)."""
    console = console or Console(stderr=True)
    if cell.record.get("real_node") and not cell.record["real_node"].get("preparing"):
        for name in COMPONENTS:
            if not cell.healthy(name):
                console.print(f"restarting {name} of the real node (log: {cell.paths.log(name)})")
                cell.stop(name)
                cell.start(name)
        return
    _preflight(cell)
    _claim(cell, console)
    try:
        _add(cell, console)
    except BaseException:
        console.print("[red]the real node could not be added; undoing what was done[/]")
        try:
            remove(cell, console=console, keep_cell=True)
        except Exception as exc:  # the first failure is the one to report; this one must not hide it
            console.print(f"[red]undoing it failed too ({exc}); `cell down` tries again[/]", highlight=False)
        raise


def _add(cell: LocalCell, console: Console) -> None:
    rp = RealNodePaths(cell)
    steps = [
        ("running the node role (playbooks/node.yml, connection local)", lambda: _role_step(cell)),
        ("recording the machine's state (restored by cell down)", lambda: _save_baseline(capture_host_state())),
        ("writing the node's certificates and configuration", lambda: write_node_config(cell)),
        ("starting containerd", lambda: cell.start("containerd")),
        ("importing the pause and course images", lambda: _import_images(rp)),
        ("starting the kubelet", lambda: _start_kubelet(cell)),
        ("starting kube-proxy", lambda: cell.start("kube-proxy")),
    ]
    with console.status("") as status:
        for description, step in steps:
            status.update(description)
            step()
            console.print(f"  [green]✓[/] {description}")
    console.print(f"[green]real node {NODE_NAME} is Ready[/] (taint {TAINT}; state in {rp.root})")


def _start_kubelet(cell: LocalCell) -> None:
    cell.start("kubelet")
    _wait_node_ready(cell)


def _role_step(cell: LocalCell) -> None:
    # Ports first: the role writes containerd's metrics address into its configuration.
    cell.record["real_node"] = {**_real_node_record(), "preparing": True}
    cell._save()
    run_node_role(cell)
    cell.record["real_node"].pop("preparing")
    cell._save()


def _import_images(rp: RealNodePaths) -> None:
    archives = images.build_archives(images.course_image_specs(images.image_refs()), rp.images)
    images.import_archives(archives, rp.containerd_socket, rp.images_log)


def remove(cell: LocalCell, console: Console | None = None, keep_cell: bool = True) -> None:
    """Take the real node away and put the machine back as it was; the cell keeps running if keep_cell.

    Best effort and idempotent: every step runs even if an earlier one failed; failures are
    reported together at the end.
    """
    console = console or Console(stderr=True)
    rp = RealNodePaths(cell)
    api_up = keep_cell and _api_reachable(cell)
    if api_up and cell.alive("kubelet"):
        _drain(cell)
    for name in ("kube-proxy", "kubelet"):
        cell.stop(name)
    problems = _kill_containers(rp)
    cell.stop("containerd")
    with _machine_lock():
        claim = Claim.load()
        ours = claim is not None and Path(claim.state_dir) == cell.paths.root
        problems += restore_machine(rp.root, load_baseline() if ours else None, console)
    if problems:
        # The record and the claim stay, so that the next `cell down` tries again.
        raise CellError("the real node left things behind: " + "; ".join(problems))
    if api_up:
        with contextlib.suppress(client.ApiException):
            client.CoreV1Api(cell.api()).delete_node(NODE_NAME)
    # Nothing is mounted under it any more (restore_machine checked), so its files can go.
    shutil.rmtree(rp.root, ignore_errors=True)
    for kubeconfig in (rp.kubelet_kubeconfig, rp.kube_proxy_kubeconfig):
        kubeconfig.unlink(missing_ok=True)
    if cell.exists():
        cell.record.pop("real_node", None)
        cell._save()
    _release_claim(cell)


def clean_leftovers(state_dir: Path, console: Console) -> None:
    """Before a cell's state directory is deleted: undo a real node whose cell left no record (a crash).

    Deleting a directory with mounts beneath would reach through them (a pod's hostPath, say), so
    this refuses, in one line, when anything stays mounted.
    """
    state_dir = state_dir.resolve()
    node_root = state_dir / "realnode"
    with _machine_lock():
        claim = Claim.load()
        ours = claim is not None and Path(claim.state_dir) == state_dir
        if not ours and not node_root.exists():
            return
        problems = restore_machine(node_root, load_baseline() if ours else None, console)
        if problems:
            raise CellError(f"{state_dir} keeps a real node's leftovers: " + "; ".join(problems))
        if ours:
            shutil.rmtree(CLAIM_DIR, ignore_errors=True)
    mounted = [p for p in _mount_points() if p.startswith(str(state_dir) + "/")]
    if mounted:
        raise CellError(f"{state_dir} still has mounts beneath it ({mounted[0]}, ...): not deleting it")


def _api_reachable(cell: LocalCell) -> bool:
    try:
        client.VersionApi(cell.api()).get_code(_request_timeout=5)
        return True
    except Exception:  # any failure means: do not rely on the API
        return False


def _drain(cell: LocalCell, timeout: float = 60.0) -> None:
    """Delete the node's pods through the API so the kubelet tears them down (CNI DEL included)."""
    core = client.CoreV1Api(cell.api())
    with contextlib.suppress(client.ApiException):
        core.patch_node(NODE_NAME, {"spec": {"unschedulable": True}})
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}").items:
            meta = pod.metadata
            if meta is not None and meta.name and meta.namespace:
                with contextlib.suppress(client.ApiException):
                    core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=0)
    deadline = time.monotonic() + timeout
    socket_path = RealNodePaths(cell).containerd_socket
    while time.monotonic() < deadline and _running_tasks(socket_path):
        time.sleep(1)


def _ctr(socket_path: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", str(socket_path), "--namespace", images.CRI_NAMESPACE, *args],
                          capture_output=True, text=True, timeout=timeout)


def _running_tasks(socket_path: Path) -> list[str]:
    if not socket_path.exists():
        return []
    try:
        out = _ctr(socket_path, "tasks", "list")
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.stdout.splitlines()[1:] if line.split()[-1:] == ["RUNNING"]]


def _kill_containers(rp: RealNodePaths) -> list[str]:
    """Whatever the kubelet left running: kill every task, delete tasks and containers."""
    if not rp.containerd_socket.exists():
        return []
    problems = []
    try:
        tasks = [line.split()[0] for line in _ctr(rp.containerd_socket, "tasks", "list").stdout.splitlines()[1:]]
        for task in tasks:
            _ctr(rp.containerd_socket, "tasks", "kill", "--all", "--signal", "SIGKILL", task)
        for task in tasks:
            _ctr(rp.containerd_socket, "tasks", "delete", "--force", task)
        for container in _ctr(rp.containerd_socket, "containers", "list", "--quiet").stdout.split():
            _ctr(rp.containerd_socket, "containers", "delete", container)
    except (OSError, subprocess.TimeoutExpired) as exc:
        problems.append(f"containers: {exc}")
    return problems


def restore_machine(node_root: Path, baseline: HostState | None, console: Console) -> list[str]:
    """Undo what a real node did to the machine; `baseline` is the state from before it started."""
    problems: list[str] = []

    def attempt(what: str, action: Any) -> None:
        try:
            action()
        except (OSError, CellError, subprocess.SubprocessError) as exc:
            problems.append(f"{what}: {exc}")

    # The kubepods cgroups are the claim holder's: without its baseline, only processes of this node's files.
    attempt("processes", lambda: _kill_leftover_processes(node_root, in_cgroups=baseline is not None))
    attempt("mounts", lambda: _unmount_under(node_root))
    if baseline is None:
        if node_root.exists():
            console.print("[yellow]no record of the machine before the real node: only its own files are cleaned[/]")
        return problems
    attempt("network namespaces", lambda: _delete_new_netns(baseline))
    attempt("links", lambda: _delete_new_links(baseline))
    attempt("iptables", lambda: _restore_iptables(baseline))
    attempt("sysctls", lambda: _restore_sysctls(baseline))
    attempt("cgroups", lambda: _remove_new_cgroups(baseline))
    attempt("host files", lambda: _remove_new_host_paths(baseline, node_root))
    return problems


def _pids_in_cgroups() -> set[int]:
    pids: set[int] = set()
    for tree in _kubepods_cgroups():
        for procs in tree.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _pids_mentioning(marker: str) -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.add(int(proc.name))
    return pids


def _kill_leftover_processes(node_root: Path, in_cgroups: bool) -> None:
    """Containers whose shim died and shims whose containerd died: nothing of the node may survive."""
    marker = str(node_root) + os.sep  # with the separator: a sibling directory's processes never match
    for _ in range(50):
        pids = (_pids_in_cgroups() if in_cgroups else set()) | _pids_mentioning(marker)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
    raise CellError(f"processes {sorted(_pids_in_cgroups() | _pids_mentioning(marker))} survive SIGKILL")


def _unmount_under(root: Path) -> None:
    prefix = str(root).rstrip("/") + "/"
    for _ in range(5):  # a shared mount may reappear once its propagation peer goes
        points = sorted({p for p in _mount_points() if p == str(root) or p.startswith(prefix)},
                        key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True)
    remaining = [p for p in _mount_points() if p.startswith(prefix)]
    if remaining:
        raise CellError(f"still mounted: {remaining[:3]}")


def _delete_new_netns(baseline: HostState) -> None:
    current = json.loads(_run(["ip", "-j", "netns", "list"]) or "[]")
    for ns in current:
        name = ns["name"]
        if name.startswith("cni-") and name not in baseline.netns:
            _run(["ip", "netns", "delete", name], check=True)


def _delete_new_links(baseline: HostState) -> None:
    for link in json.loads(_run(["ip", "-j", "link", "show"]) or "[]"):
        name = link["ifname"]
        if name not in baseline.links and (name == BRIDGE or link.get("master") == BRIDGE):
            # A pod's veth goes by itself a moment after its network namespace: gone is fine.
            result = subprocess.run(["ip", "link", "delete", name], capture_output=True, text=True, timeout=30)
            if result.returncode != 0 and (Path("/sys/class/net") / name).exists():
                raise CellError(f"ip link delete {name} failed: {result.stderr.strip()[:200]}")


def _restore_iptables(baseline: HostState) -> None:
    for tool in IPTABLES:
        saved = (CLAIM_DIR / f"{tool}.save").read_text() if (CLAIM_DIR / f"{tool}.save").exists() else ""
        if _normalise_iptables(_run([f"{tool}-save"])) == baseline.iptables.get(tool, ""):
            continue
        saved_tables = set(re.findall(r"^\*(\S+)", saved, flags=re.MULTILINE))
        current_tables = set(re.findall(r"^\*(\S+)", _run([f"{tool}-save"]), flags=re.MULTILINE))
        # Tables the node brought into being: flushed and emptied of chains (restore covers the rest).
        for table in sorted(current_tables - saved_tables):
            _run([tool, "-t", table, "-F"], check=True)
            _run([tool, "-t", table, "-X"], check=True)
        if saved.strip():
            _run([f"{tool}-restore"], check=True, stdin=saved)
    if baseline.nft_tables:
        # iptables-nft leaves a table it created even when emptied.
        for line in _run(["nft", "list", "tables"]).splitlines():
            entry = line.strip()
            parts = entry.split()
            if entry and entry not in baseline.nft_tables and len(parts) == 3 and parts[1] in ("ip", "ip6"):
                _run(["nft", "delete", "table", parts[1], parts[2]], check=True)


def _restore_sysctls(baseline: HostState) -> None:
    for name, value in baseline.sysctls.items():
        path = Path("/proc/sys", name)
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")


def _remove_new_cgroups(baseline: HostState) -> None:
    before = set(baseline.cgroups)
    for tree in _kubepods_cgroups():
        for directory in sorted([tree, *[p for p in tree.rglob("*") if p.is_dir()]],
                                key=lambda p: len(p.parts), reverse=True):
            if str(directory) not in before:
                for _ in range(20):  # a cgroup empties a moment after its last process died
                    try:
                        directory.rmdir()
                        break
                    except OSError:
                        time.sleep(0.1)
                else:
                    directory.rmdir()


def _remove_new_host_paths(baseline: HostState, node_root: Path) -> None:
    handled: list[str] = []
    for path in HOST_PATHS:
        if any(path.startswith(parent + "/") for parent in handled):
            continue
        before = baseline.host_paths.get(path)
        now = _listing(path)
        if now is None:
            continue
        if before is None:
            shutil.rmtree(path)
            handled.append(path)
            continue
        for entry in sorted(set(now) - set(before)):
            target = Path(path, entry)
            if path == "/run/containerd/s" and _socket_in_use(target):
                continue  # another containerd's shim
            if path == "/var/log/containers" and not _points_into(target, node_root):
                continue
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()


def _socket_in_use(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


def _points_into(link: Path, root: Path) -> bool:
    try:
        target = os.readlink(link)
    except OSError:
        return False
    return target.startswith(str(root) + "/") or not Path(target).exists()

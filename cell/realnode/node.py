"""A real worker node on this machine, next to the local cell's KWOK nodes: containers really run.

`cell up --real-node` (add) runs the same Ansible node role that prepares the OpenStack VMs
(playbooks/node.yml with playbooks/inventory/local.yml, connection local, cell_service_manager
none): Debian's containerd, runc and CNI plugins, the locally built kubelet and kube-proxy. Then,
as kubeadm would in the cloud, it writes the node's certificates (from the cell's CA), kubeconfigs
and configuration (cell/realnode/config.py) into the cell's state directory, builds the pause and
course images (cell/images.py) and imports them, and starts containerd, kubelet and kube-proxy as
components of the local cell, so `cell status` reports them and `cell down` stops them.

A real node changes the machine, so before it starts, `add` records the machine's state (the
baseline, cell/realnode/host.py) beside the machine-wide claim (cell/realnode/claim.py); `remove`
(called by `cell down`) puts every one of those back.

The node is tainted `cell.distos.dev/real=true:NoSchedule` and labelled `cell.distos.dev/real=true`:
the cell's other workloads (KWOK-only images) never land on it by accident; pods meant for it select
and tolerate it. `RealNode` is the local cell's `NodeAgent` for it (cell/localcell/lifecycle.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from rich.console import Console

from cell import images, upstream
from cell.errors import CellError
from cell.kube import node_is_ready, reachable
from cell.kubeconfig import write_kubeconfig
from cell.localcell.supervisor import LocalCell
from cell.pki import CertificateAuthority
from cell.realnode import claim
from cell.realnode.config import (
    CNI_NETWORK,
    COMPONENTS,
    MAX_SOCKET_PATH,
    NODE_NAME,
    PORTS,
    TAINT,
    RealNodePaths,
    cni_config,
    kube_proxy_config,
    kubelet_config,
    node_record,
    role_extravars,
)
from cell.realnode.host import capture_host_state, mount_points, run
from cell.state import free_ports
from cell.wait import wait_until
from playbooks import PLAYBOOK_DIR, runner

NODE_PLAYBOOK = "node.yml"
LOCAL_INVENTORY = PLAYBOOK_DIR / "inventory" / "local.yml"


class RealNode:
    """This machine as a node of the local cell: the `NodeAgent` the CLI plugs into `cell up`/`down`."""

    def check(self, cell: LocalCell) -> None:
        check_machine(cell)

    def add(self, cell: LocalCell, console: Console) -> None:
        add(cell, console)

    def remove(self, cell: LocalCell, console: Console, keep_cell: bool) -> None:
        remove(cell, console, keep_cell=keep_cell)

    def clean_leftovers(self, state_dir: Path, console: Console) -> None:
        clean_leftovers(state_dir, console)


# --- the node role -----------------------------------------------------------------------------------

def run_node_role(cell: LocalCell, inventory: Path = LOCAL_INVENTORY) -> runner.Outcome:
    """Run playbooks/node.yml against this machine; logs under the cell's logs."""
    rp = RealNodePaths(cell.paths)
    return run_playbook(inventory, role_extravars(rp, cell.record.real_node, upstream.bin_dir()), rp.ansible_dir)


def run_playbook(inventory: Path, extravars: Mapping[str, Any], private_dir: Path,
                 playbook: str = NODE_PLAYBOOK) -> runner.Outcome:
    """Run one of playbooks/ (the local inventory, or the cloud's), counting changes."""
    result = runner.run(playbook, inventory, extravars, private_dir)
    if not runner.succeeded(result):
        artifacts = Path(result.config.artifact_dir)
        raise CellError(f"{playbook} failed {runner.failure(result)} (log: {artifacts / 'stdout'})")
    return runner.outcome(result)


# --- checks ------------------------------------------------------------------------------------------

def check_machine(cell: LocalCell) -> None:
    """What `add` would refuse, checked before a new cell starts for it: nothing is started in vain."""
    _check_host(cell)
    held = claim.Claim.load()
    if held is not None and not held.is_of(cell.paths.root):
        claim.refuse_if_taken(held)


def _preflight(cell: LocalCell) -> None:
    _check_host(cell)
    missing = [name for name in ("kubelet", "kube-proxy") if not (upstream.bin_dir() / name).is_file()]
    if missing:
        raise CellError(f"{', '.join(missing)} not built in {upstream.bin_dir()}: run `cell build`")


def _check_host(cell: LocalCell) -> None:
    if sys.platform != "linux":
        raise CellError("a real node needs Linux (namespaces, cgroups, overlayfs)")
    if os.geteuid() != 0:
        raise CellError("a real node needs root: it runs containerd and the kubelet, mounts, and sets iptables rules")
    socket_path = RealNodePaths(cell.paths).containerd_socket
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise CellError(f"the state directory {cell.paths.root} is too deep for containerd's socket "
                        f"({len(str(socket_path))} > {MAX_SOCKET_PATH} characters); use a shorter --state-dir")


def _node_ip() -> str:
    """The IPv4 address of the default route's interface: the node's InternalIP."""
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "default"], check=True) or "[]")
    if not routes:
        raise CellError("this machine has no IPv4 default route: the real node needs a node IP")
    device = routes[0]["dev"]
    addresses = json.loads(run(["ip", "-j", "-4", "addr", "show", "dev", device], check=True) or "[]")
    for link in addresses:
        for address in link.get("addr_info", []):
            if address.get("family") == "inet":
                return str(address["local"])
    raise CellError(f"interface {device} (the default route's) has no IPv4 address")


# --- add ---------------------------------------------------------------------------------------------

def add(cell: LocalCell, console: Console | None = None) -> None:
    """Make this machine a real node of the cell (idempotent: restarts what died of an existing one)."""
    console = console or Console(stderr=True)
    real = cell.record.real_node
    if real is not None and not real.preparing:
        for name in COMPONENTS:
            if not cell.healthy(name):
                console.print(f"restarting {name} of the real node (log: {cell.paths.log(name)})")
                cell.restart(name)
        return
    _preflight(cell)
    claim.take(cell.paths.root, console)
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
    rp = RealNodePaths(cell.paths)
    steps = [
        ("running the node role (playbooks/node.yml, connection local)", lambda: _role_step(cell)),
        ("recording the machine's state (restored by cell down)", lambda: claim.save_baseline(capture_host_state())),
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


def _role_step(cell: LocalCell) -> None:
    # Ports first: the role writes containerd's metrics address into its configuration.
    real = node_record(_node_ip(), free_ports(PORTS), cell.paths, upstream.bin_dir())
    real.preparing = True
    cell.set_real_node(real)
    run_node_role(cell)
    real.preparing = False
    cell.save()


def write_node_config(cell: LocalCell) -> None:
    """Certificates from the cell's CA, kubeconfigs, kubelet, kube-proxy and CNI configuration."""
    rp, real = RealNodePaths(cell.paths), cell.record.real_node
    assert real is not None  # recorded by the role step
    ca = CertificateAuthority.load(cell.paths.pki_dir)
    server = cell.paths.server_url()
    rp.pki.mkdir(parents=True, exist_ok=True)
    # The Node authorizer and NodeRestriction know a kubelet by this name and group.
    cert, key = ca.issue_client_cert(f"system:node:{NODE_NAME}", ["system:nodes"])
    write_kubeconfig(rp.kubelet_kubeconfig, server, ca.cert_pem, cert, key, f"system:node:{NODE_NAME}")
    cert, key = ca.issue_client_cert("system:kube-proxy", [])
    write_kubeconfig(rp.kube_proxy_kubeconfig, server, ca.cert_pem, cert, key, "system:kube-proxy")
    cert, key = ca.issue_serving_cert(NODE_NAME, [NODE_NAME, "localhost"], [real.node_ip, "127.0.0.1"])
    (rp.pki / "kubelet.crt").write_bytes(cert)
    (rp.pki / "kubelet.key").write_bytes(key)
    (rp.pki / "kubelet.key").chmod(0o600)
    for directory in (rp.kubelet_root, rp.pod_logs, rp.cni_conf_dir, rp.cni_ipam_dir, rp.runc_root):
        directory.mkdir(parents=True, exist_ok=True)
    rp.kubelet_config.write_text(yaml.safe_dump(kubelet_config(rp, real), sort_keys=False))
    rp.kube_proxy_config.write_text(yaml.safe_dump(kube_proxy_config(rp, real), sort_keys=False))
    (rp.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps(cni_config(rp), indent=2) + "\n")


def _import_images(rp: RealNodePaths) -> None:
    archives = images.build_archives(images.course_image_specs(images.image_refs()), rp.images)
    images.import_archives(archives, rp.containerd_socket, rp.images_log)


def node_ready(cell: LocalCell) -> bool:
    try:
        return node_is_ready(client.CoreV1Api(cell.api()).read_node(NODE_NAME))
    except client.ApiException:
        return False


def _start_kubelet(cell: LocalCell, timeout: float = 120.0) -> None:
    cell.start("kubelet")
    # Ready, or the kubelet died trying: either ends the wait.
    wait_until(lambda: node_ready(cell) or not cell.alive("kubelet"), timeout, interval=1.0)
    if not node_ready(cell):
        raise CellError(f"node {NODE_NAME} did not become Ready and untainted within {timeout:.0f} s; "
                        f"log: {cell.paths.log('kubelet')}")


# --- remove ------------------------------------------------------------------------------------------

def remove(cell: LocalCell, console: Console | None = None, keep_cell: bool = True) -> None:
    """Take the real node away and put the machine back as it was; the cell keeps running if keep_cell.

    Best effort and idempotent: every step runs even if an earlier one failed; failures are
    reported together at the end.
    """
    console = console or Console(stderr=True)
    rp = RealNodePaths(cell.paths)
    api_up = keep_cell and _api_up(cell)
    if api_up and cell.alive("kubelet"):
        _drain(cell)
    for name in ("kube-proxy", "kubelet"):
        cell.stop(name)
    problems = _kill_containers(rp)
    cell.stop("containerd")
    with claim.machine_lock():
        held = claim.Claim.load()
        problems += claim.restore(rp.root, held is not None and held.is_of(cell.paths.root), console)
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
        cell.set_real_node(None)
    claim.release(cell.paths.root)


def _api_up(cell: LocalCell) -> bool:
    try:
        return reachable(cell.api())
    except CellError:  # no kubeconfig left
        return False


def clean_leftovers(state_dir: Path, console: Console) -> None:
    """Before a cell's state directory is deleted: undo a real node whose cell left no record (a crash).

    Deleting a directory with mounts beneath would reach through them (a pod's hostPath, say), so
    this refuses, in one line, when anything stays mounted.
    """
    state_dir = state_dir.resolve()
    node_root = RealNodePaths(LocalCell(state_dir).paths).root
    held = claim.Claim.load()
    if not node_root.exists() and not (held is not None and held.is_of(state_dir)):
        return  # no real node was ever here: the machine lock is not even taken
    with claim.machine_lock():
        held = claim.Claim.load()
        ours = held is not None and held.is_of(state_dir)
        if not ours and not node_root.exists():
            return
        problems = claim.restore(node_root, ours, console)
        if problems:
            raise CellError(f"{state_dir} keeps a real node's leftovers: " + "; ".join(problems))
        if ours:
            shutil.rmtree(claim.claim_dir(), ignore_errors=True)
    mounted = [p for p in mount_points() if p.startswith(str(state_dir) + "/")]
    if mounted:
        raise CellError(f"{state_dir} still has mounts beneath it ({mounted[0]}, ...): not deleting it")


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
    socket_path = RealNodePaths(cell.paths).containerd_socket
    wait_until(lambda: not _running_tasks(socket_path), timeout, interval=1.0)  # what is left is killed next


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

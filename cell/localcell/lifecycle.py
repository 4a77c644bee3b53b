"""`cell up`, `cell down` and `cell status` of the local cell.

A real node (this machine running containerd, a kubelet and kube-proxy beside the KWOK nodes) is
not part of the local cell's code: it joins through the `NodeAgent` interface, which the CLI plugs
in (cell/realnode/ implements it). The agent records its components in the cell's record, so once
added they are supervised, reported and stopped like the cell's own.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

import yaml
from rich.console import Console
from rich.table import Table

from cell import pki, upstream
from cell.errors import CellError
from cell.kubeconfig import write_kubeconfig
from cell.localcell import topology
from cell.localcell.supervisor import LocalCell, tail
from cell.pki import CertificateAuthority, write_service_account_keys
from cell.settings import settings
from cell.state import CellPaths, CellRecord, free_ports
from scheduler_ext.kube.dynamic import Objects
from scheduler_ext.kube.errors import APIError

FIELD_MANAGER = "cell"


class NodeAgent(Protocol):
    """A machine that joins the local cell as a node of its own, beside the KWOK nodes."""

    def check(self, cell: LocalCell) -> None:
        """Refuse (CellError) what `add` would refuse, before a new cell starts for it."""

    def add(self, cell: LocalCell, console: Console) -> None:
        """Join the cell (or restart what died of an earlier join); its components go into the record."""

    def remove(self, cell: LocalCell, console: Console, keep_cell: bool) -> None:
        """Leave the cell, putting the machine back as it was."""

    def clean_leftovers(self, state_dir: Path, console: Console) -> None:
        """Before a state directory is deleted: undo what a crashed node left (it may not be deleted)."""


# --- up ---------------------------------------------------------------------------------------------

def up(nodes: int = 12, state_dir: Path | None = None, console: Console | None = None,
       real_node: bool = False, node: NodeAgent | None = None) -> Path:
    """Stand up (or recover) the local cell; returns the admin kubeconfig.

    `node` is this machine's node agent: with `real_node` it joins the cell; in any case it cleans
    up what a crashed node of an earlier cell in the same state directory left."""
    if real_node and node is None:
        raise ValueError("a real node needs its agent")
    console = console or Console(stderr=True)
    cell = LocalCell(state_dir)
    if cell.exists():
        kubeconfig = _recover(cell, console)
        if real_node and node is not None:  # an existing cell gains (or recovers) its node
            node.add(cell, console)
        return kubeconfig
    if real_node and node is not None:  # refuse before starting anything (not root, another real node)
        node.check(cell)
    without = topology.check_without(settings().without)
    bins = upstream.ensure_binaries(console=console)
    paths = cell.paths
    if paths.root.exists():
        if node is not None:  # a crashed node's mounts and processes go before its directory
            node.clean_leftovers(paths.root, console)
        shutil.rmtree(paths.root)  # leftovers of a failed `cell up`
    for directory in (paths.root, paths.logs_dir, paths.students_dir, paths.root / "kubeconfigs"):
        directory.mkdir(parents=True, exist_ok=True)
    cell.create(CellRecord(bin_dir=str(bins), nodes=nodes, ports=free_ports(topology.PORTS), without=without,
                           created=time.strftime("%Y-%m-%dT%H:%M:%S")))
    try:
        _write_pki(paths)
        _write_kubeconfigs(paths, f"https://127.0.0.1:{cell.port('apiserver')}")
        _write_scheduler_config(cell)
        _start_all(cell, console, nodes)
        if real_node and node is not None:
            node.add(cell, console)
    except BaseException:
        console.print("[red]cell up failed; stopping what it started[/]")
        cell.stop_all()
        _remove_state_keep_logs(paths)
        raise
    console.print(f"[green]cell is up[/]: {nodes} nodes Ready; state in {paths.root}")
    return paths.kubeconfig


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
    # etcd trusts its own CA only (kubeadm's pki/etcd/): no API user's certificate opens it.
    etcd_dir = paths.pki_dir / pki.ETCD_DIR
    etcd_ca = CertificateAuthority.create(etcd_dir, "etcd-ca")
    etcd_ca.write_member_cert(etcd_dir, "server", ["localhost"], ["127.0.0.1"])
    etcd_ca.write_member_cert(etcd_dir, "peer", ["localhost"], ["127.0.0.1"])
    etcd_ca.write_client_cert(paths.pki_dir, pki.APISERVER_ETCD_CLIENT, "kube-apiserver-etcd-client", [])
    # The extender answers kube-scheduler and the cell's own tools only: their certificates come
    # from a CA of the extender's, so a student's (from the cell CA) is refused at the handshake.
    ca.write_serving_cert(paths.pki_dir, pki.EXTENDER_SERVING, ["localhost"], ["127.0.0.1"])
    client_ca = CertificateAuthority.create(paths.pki_dir, "cell-extender-client-ca", pki.EXTENDER_CLIENT_CA)
    client_ca.write_client_cert(paths.pki_dir, pki.SCHEDULER_EXTENDER_CLIENT, "system:kube-scheduler", [])
    client_ca.write_client_cert(paths.pki_dir, pki.CELL_EXTENDER_CLIENT, "cell-admin", [])


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
    for extension, user in topology.EXTENSION_USERS.items():
        path = paths.component_kubeconfig(extension)
        if not path.exists():
            cert, key = ca.issue_client_cert(user, [])
            write_kubeconfig(path, server, ca.cert_pem, cert, key, user)


def _write_scheduler_config(cell: LocalCell) -> None:
    text, extender_url = topology.scheduler_config(cell.paths, cell.record)
    cell.paths.scheduler_config.write_text(text)
    if extender_url:
        cell.paths.extender_url_file.write_text(extender_url + "\n")


def apply_base(cell: LocalCell) -> None:
    """cluster/base, a kustomization: kubectl renders it (kustomize) and applies it server-side."""
    base = topology.CLUSTER_DIR / "base"
    cmd = [str(cell.kubectl), f"--kubeconfig={cell.paths.kubeconfig}", "apply", "--server-side",
           "--force-conflicts", "-k", str(base)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise CellError(f"kubectl apply -k {base} failed: {result.stderr.strip().splitlines()[-1:]}")


def register_webhook(cell: LocalCell) -> None:
    ca_bundle = base64.b64encode((cell.paths.pki_dir / "ca.crt").read_bytes()).decode()
    manifest = yaml.safe_load(topology.webhook_registration(cell.record, ca_bundle))
    try:
        Objects(cell.api()).apply(manifest, FIELD_MANAGER)
    except APIError as exc:
        raise CellError(f"registering the quota webhook failed: {exc}") from None


def _start_all(cell: LocalCell, console: Console, nodes: int) -> None:
    steps: list[tuple[str, Callable[[], object]]] = []
    for comp in cell.components():
        steps.append((f"starting {comp.name}", partial(cell.start, comp.name)))
        if comp.name == "kube-apiserver":
            steps.append(("applying cluster/base (bands, CRDs, RBAC)", partial(apply_base, cell)))
        if comp.name == "kwok":
            steps.append((f"creating {nodes} KWOK nodes", partial(_create_kwok_nodes, cell, nodes)))
        if comp.name == "webhook":
            steps.append(("registering the quota webhook", partial(register_webhook, cell)))
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
    if set(dead) & set(topology.EXTENSIONS):
        # A cell made by an older Cell lacks the extensions' identities and their RBAC: add both.
        _write_extension_kubeconfigs(cell.paths, cell.paths.server_url())
        if "kube-apiserver" not in dead:
            apply_base(cell)
    for name in dead:
        console.print(f"restarting {name} (it had stopped; log: {cell.paths.log(name)})")
        cell.restart(name)
    if "webhook" in dead:
        register_webhook(cell)
    return cell.paths.kubeconfig


def _remove_state_keep_logs(paths: CellPaths) -> None:
    for child in paths.root.iterdir():
        if child != paths.logs_dir:
            shutil.rmtree(child) if child.is_dir() else child.unlink()


# --- down and status -----------------------------------------------------------------------------------

def down(state_dir: Path | None = None, console: Console | None = None, node: NodeAgent | None = None) -> None:
    """Stop every process of the local cell and remove its state; `node` first, if the cell has one."""
    console = console or Console(stderr=True)
    cell = LocalCell(state_dir)
    if not cell.paths.root.exists():
        console.print(f"no local cell at {cell.paths.root}; nothing to stop")
        return
    if cell.exists() and cell.record.real_node is not None:
        if node is None:
            raise CellError(f"the cell at {cell.paths.root} has a real node: take it down with `cell down`")
        # Before the rest: its containers, mounts, bridge, iptables rules and cgroups go first.
        node.remove(cell, console, keep_cell=False)
    if cell.exists():
        cell.stop_all()
    if node is not None:  # a node that crashed with its cell: nothing of it may stay
        node.clean_leftovers(cell.paths.root, console)
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
        console.print(tail(Path(log)), highlight=False, markup=False)
    return all_healthy


def kubeconfig_path(state_dir: Path | None = None, student: str | None = None) -> Path:
    paths = CellPaths(state_dir)
    path = paths.student_kubeconfig(student) if student else paths.kubeconfig
    if not path.is_file():
        who = f"student {student!r}" if student else "the cell"
        raise CellError(f"no kubeconfig for {who} at {path}"
                        + (" (add the student with `cell students add`)" if student else " (run `cell up`)"))
    return path

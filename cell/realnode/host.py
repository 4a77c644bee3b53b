"""What a real node changes on this machine, recorded before it starts and put back by `remove`:
processes, mounts, network namespaces, the bridge and its veths, iptables and nftables rules,
kubepods cgroups, a few sysctls and host directories. `HostState` compares equal when nothing
changed, which is how the tests prove `cell down` leaves the machine as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from cell.errors import CellError
from cell.realnode.config import BRIDGE
from cell.wait import wait_until

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


def run(cmd: list[str], timeout: float = 30, check: bool = False, stdin: str | None = None) -> str:
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


def normalise_iptables(text: str) -> str:
    lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(lines)


def mount_points() -> list[str]:
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
        state.iptables[tool] = normalise_iptables(run([f"{tool}-save"]))
    state.nft_tables = sorted(line.strip() for line in run(["nft", "list", "tables"]).splitlines() if line.strip())
    state.links = sorted(link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]) or "[]"))
    state.netns = sorted(ns["name"] for ns in json.loads(run(["ip", "-j", "netns", "list"]) or "[]"))
    state.mounts = sorted(mount_points())
    state.cgroups = sorted(str(p) for tree in _kubepods_cgroups() for p in [tree, *tree.rglob("*")] if p.is_dir())
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            state.sysctls[name] = Path("/proc/sys", name).read_text().strip()
    state.host_paths = {path: _listing(path) for path in HOST_PATHS}
    return state


def restore_machine(node_root: Path, baseline: HostState | None, console: Console,
                    iptables_saves: Mapping[str, str] | None = None) -> list[str]:
    """Undo what a real node did to the machine; `baseline` is the state from before it started and
    `iptables_saves` the raw iptables-save (and ip6tables-save) output of then, fed back to restore."""
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
    attempt("iptables", lambda: _restore_iptables(baseline, iptables_saves or {}))
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

    def leftovers() -> set[int]:
        return (_pids_in_cgroups() if in_cgroups else set()) | _pids_mentioning(marker)

    def all_killed() -> bool:
        pids = leftovers()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        return not pids

    if not wait_until(all_killed, timeout=5.0, interval=0.1):
        raise CellError(f"processes {sorted(leftovers())} survive SIGKILL")


def _unmount_under(root: Path) -> None:
    prefix = str(root).rstrip("/") + "/"
    for _ in range(5):  # a shared mount may reappear once its propagation peer goes
        points = sorted({p for p in mount_points() if p == str(root) or p.startswith(prefix)},
                        key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True)
    remaining = [p for p in mount_points() if p.startswith(prefix)]
    if remaining:
        raise CellError(f"still mounted: {remaining[:3]}")


def _delete_new_netns(baseline: HostState) -> None:
    current = json.loads(run(["ip", "-j", "netns", "list"]) or "[]")
    for ns in current:
        name = ns["name"]
        if name.startswith("cni-") and name not in baseline.netns:
            run(["ip", "netns", "delete", name], check=True)


def _delete_new_links(baseline: HostState) -> None:
    for link in json.loads(run(["ip", "-j", "link", "show"]) or "[]"):
        name = link["ifname"]
        if name not in baseline.links and (name == BRIDGE or link.get("master") == BRIDGE):
            # A pod's veth goes by itself a moment after its network namespace: gone is fine.
            result = subprocess.run(["ip", "link", "delete", name], capture_output=True, text=True, timeout=30)
            if result.returncode != 0 and (Path("/sys/class/net") / name).exists():
                raise CellError(f"ip link delete {name} failed: {result.stderr.strip()[:200]}")


def _restore_iptables(baseline: HostState, saves: Mapping[str, str]) -> None:
    for tool in IPTABLES:
        saved = saves.get(tool, "")
        if normalise_iptables(run([f"{tool}-save"])) == baseline.iptables.get(tool, ""):
            continue
        saved_tables = set(re.findall(r"^\*(\S+)", saved, flags=re.MULTILINE))
        current_tables = set(re.findall(r"^\*(\S+)", run([f"{tool}-save"]), flags=re.MULTILINE))
        # Tables the node brought into being: flushed and emptied of chains (restore covers the rest).
        for table in sorted(current_tables - saved_tables):
            run([tool, "-t", table, "-F"], check=True)
            run([tool, "-t", table, "-X"], check=True)
        if saved.strip():
            run([f"{tool}-restore"], check=True, stdin=saved)
    # iptables-nft leaves a table it created even when emptied. (A machine that had none before, as
    # a fresh one, has an empty baseline: every ip/ip6 table is then the node's.)
    for line in run(["nft", "list", "tables"]).splitlines():
        entry = line.strip()
        parts = entry.split()
        if entry and entry not in baseline.nft_tables and len(parts) == 3 and parts[1] in ("ip", "ip6"):
            run(["nft", "delete", "table", parts[1], parts[2]], check=True)


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
            # A cgroup empties a moment after its last process died; if it never does, rmdir's own error.
            if str(directory) not in before and not wait_until(partial(_rmdir, directory), 2.0, interval=0.1):
                directory.rmdir()


def _rmdir(directory: Path) -> bool:
    try:
        directory.rmdir()
        return True
    except OSError:
        return False


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

"""The machine-wide claim: only one real node fits on a machine (bridge, pod network, iptables), so
the `cell up` that adds one takes the claim in CELL_REALNODE_CLAIM_DIR (/run/cell/realnode), beside
the machine's state from before (the baseline, cell/realnode/host.py), and `remove` gives it back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from cell.errors import CellError
from cell.realnode.config import BRIDGE
from cell.realnode.host import IPTABLES, HostState, restore_machine, run
from cell.settings import settings
from cell.state import has_real_node


def claim_dir() -> Path:
    return settings().realnode_claim_dir


@dataclass
class Claim:
    """The machine-wide record that a real node exists, whose it is, and the machine before it."""

    state_dir: str
    pid: int  # the `cell up` making the node, with its start time (PIDs are reused)
    pid_start: str
    created: str

    @staticmethod
    def load() -> Claim | None:
        path = claim_dir() / "owner.json"
        try:
            data = json.loads(path.read_text())
            return Claim(str(data["state_dir"]), int(data["pid"]), str(data["pid_start"]), str(data["created"]))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise CellError(f"{path} is corrupt; remove {claim_dir()} once no real node runs on this machine") from None

    def owner_active(self) -> bool:
        """True if a cell still has this real node, or a `cell up` is still making it."""
        if self.pid != os.getpid() and _start_time(self.pid) == self.pid_start:
            return True
        return has_real_node(Path(self.state_dir))

    def is_of(self, state_root: Path) -> bool:
        return Path(self.state_dir) == state_root


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    directory = claim_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / "realnode.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def take(state_root: Path, console: Console) -> None:
    """Take the machine's one real-node slot for the cell at state_root, or refuse naming the cell that holds it."""
    with machine_lock():
        claim = Claim.load()
        if claim is not None and not claim.is_of(state_root):
            refuse_if_taken(claim)
            console.print(f"cleaning up after the real node of the vanished cell at {claim.state_dir}")
            restore(Path(claim.state_dir) / "realnode", True, console)
            shutil.rmtree(claim_dir(), ignore_errors=True)
        if claim is None and (Path("/sys/class/net") / BRIDGE).exists():
            raise CellError(f"bridge {BRIDGE} exists but no cell claims it: another real node (or its leftovers) is "
                            f"on this machine; remove it first (ip link del {BRIDGE})")
        claim_dir().mkdir(parents=True, exist_ok=True)
        owner = {"state_dir": str(state_root), "pid": os.getpid(), "pid_start": _start_time(os.getpid()),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (claim_dir() / "owner.json").write_text(json.dumps(owner, indent=2))


def refuse_if_taken(claim: Claim) -> None:
    if claim.owner_active():
        raise CellError(f"a real node already runs on this machine, in the cell at {claim.state_dir}; only one "
                        f"fits (bridge {BRIDGE}, pod network, iptables): run `cell down --state-dir "
                        f"{claim.state_dir}` first")


def release(state_root: Path) -> None:
    with machine_lock():
        claim = Claim.load()
        if claim is not None and claim.is_of(state_root):
            shutil.rmtree(claim_dir(), ignore_errors=True)


def save_baseline(state: HostState) -> None:
    path = claim_dir() / "baseline.json"
    if path.exists():  # a retried add keeps the state from before the first attempt
        return
    for tool, text in state.iptables.items():
        # The raw save too: `restore` feeds it back to iptables-restore.
        (claim_dir() / f"{tool}.save").write_text(run([f"{tool}-save"]) if text else "")
    path.write_text(json.dumps(asdict(state), indent=2))


def load_baseline() -> HostState | None:
    try:
        return HostState.from_json(json.loads((claim_dir() / "baseline.json").read_text()))
    except FileNotFoundError:
        return None


def restore(node_root: Path, ours: bool, console: Console) -> list[str]:
    """Undo a real node: with the claim's baseline when the claim is the node's cell's (`ours`),
    else only what lies under its own files (the baseline belongs to the claim's holder)."""
    if not ours:
        return restore_machine(node_root, None, console)
    saves = {tool: (claim_dir() / f"{tool}.save").read_text() for tool in IPTABLES
             if (claim_dir() / f"{tool}.save").exists()}
    return restore_machine(node_root, load_baseline(), console, saves)

"""A local cell's state directory, its ports, and its record (cell.json), which this module alone
reads and writes: everything else asks for a `CellRecord` and hands it back to `save_record`.

The record says what the cell is made of (binaries, node count, ports, the extensions it leaves
out, a real node if it has one) and what runs (each component's PID), so `cell down` stops exactly
what `cell up` started and `cell status` can name a component that died.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import msgspec

from cell.errors import CellError
from cell.kubeconfig import server_url_of
from cell.settings import settings


class CellPaths:
    """Where a cell keeps its state: PKI, kubeconfigs, logs, etcd data, the record."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.root = Path(state_dir or settings().state_dir).resolve()
        self.pki_dir = self.root / "pki"
        self.logs_dir = self.root / "logs"
        self.students_dir = self.root / "students"
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.record = self.root / "cell.json"
        self.etcd_data = self.root / "etcd-data"
        self.extender_url_file = self.root / "extender.url"
        self.scheduler_config = self.root / "kube-scheduler.yaml"
        # What every process of this cell carries in its argv; the separator keeps sibling dirs apart.
        self.marker = str(self.root) + os.sep

    def server_url(self) -> str:
        return server_url_of(self.kubeconfig)

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.kubeconfig"

    def student_kubeconfig(self, student: str) -> Path:
        return self.students_dir / f"{student}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"


def admin_kubeconfig(kubeconfig: Path | None = None, state_dir: Path | None = None) -> Path:
    """The admin kubeconfig a command uses: the one given, else the local cell's."""
    return kubeconfig if kubeconfig is not None else CellPaths(state_dir).kubeconfig


# --- ports ----------------------------------------------------------------------------------------

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


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A distinct free port for each name."""
    ports: dict[str, int] = {}
    for name in names:
        port = free_port()
        for _ in range(20):  # each pick is free now, but two picks may be the same port
            if port not in ports.values():
                break
            port = free_port()
        ports[name] = port
    return ports


# --- the record -----------------------------------------------------------------------------------

class Component(msgspec.Struct, omit_defaults=True):
    """A process of the cell: how to start it, and where it answers when healthy."""

    name: str
    argv: list[str]
    health_url: str | None
    # which TLS context its health endpoint needs: "none" (http), "ca" (verify with cell CA),
    # "client" (CA + admin client cert), "insecure" (self-signed serving cert of the component),
    # "extender-client" (CA + the cell's client cert of the extender's own client CA)
    health_tls: str = "none"
    env: dict[str, str] = msgspec.field(default_factory=dict)


class RealNodeRecord(msgspec.Struct, omit_defaults=True):
    """This machine as a real node of the cell (cell/realnode/): where it sits and what it runs."""

    node: str
    node_ip: str
    zone: str
    rack: str
    ports: dict[str, int]
    components: list[Component] = msgspec.field(default_factory=list)  # run by the cell after its own
    preparing: bool = False  # set while `add` runs the node role: the node is not there yet


class CellRecord(msgspec.Struct, omit_defaults=True):
    bin_dir: str
    ports: dict[str, int] = msgspec.field(default_factory=dict)
    pids: dict[str, int] = msgspec.field(default_factory=dict)
    without: list[str] = msgspec.field(default_factory=list)  # extensions left out (CELL_WITHOUT)
    nodes: int = 0
    created: str = ""
    real_node: RealNodeRecord | None = None


def load_record(path: Path) -> CellRecord:
    try:
        return msgspec.json.decode(path.read_bytes(), type=CellRecord)
    except FileNotFoundError:
        raise CellError(f"no local cell at {path.parent} (run `cell up`)") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CellError(f"{path} is corrupt ({exc}); run `cell down` then `cell up`") from None


def save_record(path: Path, record: CellRecord) -> None:
    """Atomically: a reader never sees half a record."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(record), indent=2))
    tmp.replace(path)


def has_real_node(state_dir: Path) -> bool:
    """Whether the cell at state_dir (if any, and readable) has a real node."""
    try:
        return load_record(state_dir / "cell.json").real_node is not None
    except CellError:
        return False

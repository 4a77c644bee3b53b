"""`cell why NAMESPACE/POD`: why a pod is (or was) not placed, node by node (Borg §8).

First asks the extender for its last filter decision on the pod (`GET <url>/why/NS/POD`, the URL
in `<state_dir>/extender.url`, shown the cell's client certificate of the extender); if the
extender is not running or never saw the pod, computes the per-node reasons now with the policy
core over a snapshot read from the API.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cell.errors import CellError
from cell.kube import api_client
from cell.pki import extender_client_context
from cell.state import CellPaths
from cell.top import load_snapshot
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APIError, APINotFoundError
from scheduler_ext.kube.names import PODS
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.why import WhyRecord, explain

EXTENDER_TIMEOUT = 3.0


def parse_target(target: str) -> tuple[str, str]:
    namespace, _, name = target.partition("/")
    if not namespace or not name or "/" in name:
        raise CellError(f"expected NAMESPACE/POD, got {target!r}")
    return namespace, name


def fetch_extender_why(url: str, namespace: str, pod: str, timeout: float = EXTENDER_TIMEOUT,
                       context: ssl.SSLContext | None = None) -> dict[str, Any] | None:
    """The extender's record for the pod, or None if it has none or cannot be reached."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/why/{namespace}/{pod}", timeout=timeout,
                                    context=context) as response:
            record: dict[str, Any] = json.loads(response.read())
            return record
    except (urllib.error.URLError, OSError, ValueError):
        return None


def compute_why(snapshot: CellSnapshot, pod: PodInfo) -> dict[str, Any]:
    """Per-node reasons computed now, as the extender's record (policy.why's shape)."""
    return explain(snapshot, pod).to_json()


def render_why(record: dict[str, Any], pod: PodInfo, status: dict[str, Any], source: str, console: Console) -> None:
    phase = status.get("phase") or "Unknown"
    where = f" on {pod.node_name}" if pod.node_name else ""
    console.print(f"[bold]{pod.key}[/]: {phase}{where}; band {pod.band.label} (priority {pod.priority}); "
                  f"requests {pod.requests}" + (f"; member of alloc {pod.alloc}" if pod.alloc else ""),
                  highlight=False)
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") != "True":
            console.print(f"scheduler: {condition.get('reason', '')}: {condition.get('message', '')}",
                          highlight=False)
    console.print(f"reasons: {source}", highlight=False)

    why_record = WhyRecord.from_json(record)
    table = Table(show_lines=False)
    table.add_column("node")
    table.add_column("fits")
    table.add_column("reasons")
    for name, fits, reasons in why_record.rows():
        mark = "[green]yes[/]" if fits else ("[dim]-[/]" if fits is None else "[red]no[/]")
        table.add_row(name, mark, reasons)
    console.print(table)
    console.print(why_record.summary(), highlight=False)
    for line in why_record.notes():  # suggestions and refusals, when the record has any
        console.print(line, highlight=False)


class WhyFormat(StrEnum):
    text = "text"
    json = "json"


def why(namespace: str, pod: str, kubeconfig: Path, state_dir: Path | None = None,
        console: Console | None = None, output: WhyFormat = WhyFormat.text) -> dict[str, Any]:
    """Print why NAMESPACE/POD is where it is (or nowhere); return the record printed."""
    console = console or Console()
    api = api_client(kubeconfig)
    try:
        manifest = RawClient(api).get(PODS.object_path(namespace, pod), timeout=30)
    except APINotFoundError:
        raise CellError(f"pod {namespace}/{pod} not found") from None
    except APIError as exc:
        raise CellError(f"cannot read pod {namespace}/{pod}: {exc.status} {exc.reason}") from None
    except Exception as exc:
        raise CellError(f"cluster unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    try:
        info = PodInfo.from_manifest(manifest)
    except ValueError as exc:
        raise CellError(f"pod {namespace}/{pod} is unreadable: {exc}") from None

    record = None
    paths = CellPaths(state_dir)
    if paths.extender_url_file.is_file():
        url = paths.extender_url_file.read_text().strip()
        # The extender answers only its client CA's certificates: the cell's own is in its state directory.
        try:
            context = extender_client_context(paths.pki_dir) if url.startswith("https:") else None
        except CellError:
            context = None  # not ours to read (another user's cell): the policy core answers instead
        record = fetch_extender_why(url, namespace, pod, context=context)
        if record is not None and record.get("uid") not in ("", None, info.uid):
            record = None  # a previous pod of the same name
    if record is not None:
        source = f"the extender's last filter decision ({record.get('decidedAt')})"
    else:
        record = compute_why(load_snapshot(api), info)
        source = "computed now by the policy core from the API (the extender has no record)"
    if output == WhyFormat.json:
        console.out(json.dumps(record, indent=2), highlight=False)
    else:
        render_why(record, info, manifest.get("status") or {}, source, console)
    return record

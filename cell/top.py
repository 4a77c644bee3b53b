"""`cell top`: the cell's capacity, alloc reservations and use, by band and by node.

Also home of `load_snapshot`, the API -> policy snapshot builder that `cell why` shares: it reads
plain API dicts and hands them to the policy's `from_manifest` converters, so no rule is copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rich.console import Console
from rich.table import Table

from cell.errors import CellError
from cell.kube import api_client
from scheduler_ext.policy.model import CellSnapshot
from scheduler_ext.policy.resources import Resources, format_cpu, format_memory
from scheduler_ext.policy.usage import CellUsage, cell_usage

ALLOC_GROUP, ALLOC_VERSION, ALLOC_PLURAL = "cell.distos.dev", "v1alpha1", "allocs"


def _items(response: Any) -> list[dict[str, Any]]:
    try:
        return list(json.loads(response.data).get("items") or [])
    finally:
        response.release_conn()


def list_objects(api: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Nodes, active pods and Allocs as plain API dicts (no Alloc CRD: no allocs)."""
    core = client.CoreV1Api(api)
    try:
        nodes = _items(core.list_node(_preload_content=False, _request_timeout=30))
        pods = _items(core.list_pod_for_all_namespaces(
            field_selector="status.phase!=Succeeded,status.phase!=Failed", _preload_content=False,
            _request_timeout=30))
    except ApiException as exc:
        raise CellError(f"cannot list nodes and pods: {exc.status} {exc.reason}") from None
    except Exception as exc:  # connection refused, TLS, DNS: the cell is not reachable
        raise CellError(f"cluster unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    try:
        allocs = _items(client.CustomObjectsApi(api).list_cluster_custom_object(
            ALLOC_GROUP, ALLOC_VERSION, ALLOC_PLURAL, _preload_content=False, _request_timeout=30))
    except ApiException as exc:
        if exc.status != 404:
            raise CellError(f"cannot list allocs: {exc.status} {exc.reason}") from None
        allocs = []
    return nodes, pods, allocs


def load_snapshot(api: Any) -> CellSnapshot:
    """The policy's snapshot of the cell as the API has it now."""
    nodes, pods, allocs = list_objects(api)
    try:
        return CellSnapshot.from_manifests(nodes, pods, allocs)
    except ValueError as exc:
        raise CellError(f"cannot read the cell's objects: {exc}") from None


def _res(value: Resources) -> str:
    return f"{format_cpu(value.cpu)} / {format_memory(value.memory)}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def render_usage(usage: CellUsage, console: Console) -> None:
    cap = usage.capacity
    console.print(f"Cell capacity: cpu {format_cpu(cap.cpu)}, memory {format_memory(cap.memory)} on "
                  f"{len(usage.nodes)} node(s); free for new pods: {_res(usage.free)}", highlight=False)

    bands = Table(title="By band", title_justify="left")
    for column in ("band", "prod", "pods", "requested (cpu / mem)", "alloc reserved", "used in allocs", "cpu share"):
        bands.add_column(column, justify="right" if column not in ("band", "prod") else "left")
    for band in usage.bands:
        committed = band.requested + band.reserved
        bands.add_row(band.band.label, "yes" if band.band.is_prod else "no", str(band.pods), _res(band.requested),
                      _res(band.reserved), _res(band.in_allocs), _pct(committed.cpu, cap.cpu))
    console.print(bands)

    nodes = Table(title="By node", title_justify="left")
    for column in ("node", "zone", "rack", "pods", "allocatable", "requested", "alloc reserved", "free", "cpu used"):
        nodes.add_column(column, justify="left" if column in ("node", "zone", "rack") else "right")
    for node in usage.nodes:
        used_cpu = node.allocatable.cpu - node.free.cpu
        nodes.add_row(node.name, node.zone or "-", node.rack or "-", f"{node.pods}/{node.max_pods}",
                      _res(node.allocatable), _res(node.requested), _res(node.reserved), _res(node.free),
                      _pct(used_cpu, node.allocatable.cpu))
    console.print(nodes)


def top(kubeconfig: Path, console: Console | None = None) -> CellUsage:
    """Print the cell's books and return them."""
    usage = cell_usage(load_snapshot(api_client(kubeconfig)))
    render_usage(usage, console or Console())
    return usage

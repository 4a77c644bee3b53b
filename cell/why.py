"""`cell why NAMESPACE/POD` and `cell why -f MANIFEST`: why a pod is (or was) not placed, node by node
(Borg §8), and what would let a job or a pod in.

For a pod, first asks the extender for its last filter decision (`GET <url>/why/NS/POD`, the URL in
`<state_dir>/extender.url`, shown the cell's client certificate of the extender); if the extender is
not running or never saw the pod, computes the per-node reasons now with the policy core over a
snapshot read from the API. A pod still pending gets suggestions (`policy.suggest.suggest_pod`).

For a manifest, `policy.suggest.suggest` judges each job in it: would quota admit it, where would
its pods go, and the smallest single changes that would let it in. The inputs are gathered the way
the extensions gather theirs, from one listing of the API: the snapshot through the extender's
`ClusterCache`, the namespace's workloads and BandQuotas through the webhook's `QuotaCache`.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from rich.console import Console
from rich.table import Table

from cell.errors import CellError
from cell.kube import api_client
from cell.pki import extender_client_context
from cell.state import CellPaths
from cell.top import list_objects
from scheduler_ext.extender.cache import ALLOCS, NODES, PODS, ClusterCache
from scheduler_ext.kube import names
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APIError, APINotFoundError
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.suggest import QuotaView, pod_spec, suggest, suggest_pod
from scheduler_ext.policy.why import WhyRecord, explain
from scheduler_ext.webhook.cache import QuotaCache

EXTENDER_TIMEOUT = 3.0


class WhyFormat(StrEnum):
    text = "text"
    json = "json"


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


def extender_snapshot(nodes: list[dict[str, Any]], pods: list[dict[str, Any]],
                      allocs: list[dict[str, Any]]) -> CellSnapshot:
    """The snapshot the extender would decide on, given what its watches list: its own cache fed once."""
    cache = ClusterCache()
    try:
        cache.replace(NODES, nodes)
        cache.replace(PODS, pods)
        cache.replace(ALLOCS, allocs)
        return cache.snapshot()
    except ValueError as exc:
        raise CellError(f"cannot read the cell's objects: {exc}") from None


def load_snapshot(api: client.ApiClient) -> CellSnapshot:
    return extender_snapshot(*list_objects(api))


_HARD_EFFECTS = ("NoSchedule", "NoExecute")


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Kubernetes' rule (ToleratesTaint): an empty key with Exists tolerates every taint."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    if toleration.get("operator") == "Exists":
        return True
    return bool(toleration.get("key")) and toleration.get("value", "") == taint.get("value", "")


def untolerated_nodes(nodes: list[dict[str, Any]], pod_spec: Any) -> list[str]:
    """Nodes with a NoSchedule or NoExecute taint the pods do not tolerate: kube-scheduler's own filter
    (TaintToleration) leaves them out before it asks the extender, so the policy never judges them."""
    tolerations = [t for t in (pod_spec.get("tolerations") or ()) if isinstance(t, dict)]
    left_out = []
    for node in nodes:
        taints = [t for t in ((node.get("spec") or {}).get("taints") or ()) if t.get("effect") in _HARD_EFFECTS]
        if any(not any(_tolerates(t, taint) for t in tolerations) for taint in taints):
            left_out.append(str((node.get("metadata") or {}).get("name", "")))
    return left_out


def _without(snapshot: CellSnapshot, names: list[str]) -> CellSnapshot:
    if not names:
        return snapshot
    gone = set(names)
    return CellSnapshot({name: node for name, node in snapshot.nodes.items() if name not in gone}, snapshot.allocs)


def _get(raw: RawClient, path: str, what: str, missing: str | None) -> dict[str, Any] | None:
    """GET `path`; None when it does not exist and `missing` is None, else CellError(`missing`).
    Every other failure is one line naming `what` (e.g. "read pod ns/p")."""
    try:
        return raw.get(path, timeout=30)
    except APINotFoundError:
        if missing is None:
            return None
        raise CellError(missing) from None
    except APIError as exc:
        raise CellError(f"cannot {what}: {exc.status} {exc.reason}") from None
    except Exception as exc:
        raise CellError(f"cluster unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def _list(raw: RawClient, resource: names.Resource, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every object of a resource (in one namespace, if given), as plain dicts; none if not served."""
    listed = _get(raw, resource.object_path(namespace) if namespace else resource.path, f"list {resource.plural}",
                  None)  # None: the CRD is not installed
    if listed is None:
        return []
    items: list[dict[str, Any]] = listed.get("items") or []
    # A list's items carry neither kind nor apiVersion: the caches read both.
    return [{"apiVersion": resource.api_version, "kind": resource.kind, **item} for item in items]


def quota_view(api: client.ApiClient, namespace: str) -> QuotaView:
    """The namespace as the webhook sees it: its workloads, its BandQuota, the cell's other BandQuotas,
    the PriorityClasses and the largest node, through the webhook's own cache fed with one listing."""
    raw = RawClient(api)
    found = _get(raw, names.NAMESPACES.object_path(name=namespace), f"read namespace {namespace}",
                 f"namespace {namespace} does not exist") or {}
    labels = (found.get("metadata") or {}).get("labels") or {}
    cache = QuotaCache()
    for resource in (names.PRIORITY_CLASSES, names.NODES, names.BANDQUOTAS):
        cache.replace(resource, _list(raw, resource))
    for resource in names.CHARGED:
        cache.replace(resource, _list(raw, resource, namespace))
    quota = cache.quota_of(namespace)
    others = cache.band_quotas_except(namespace, quota.name if quota is not None else "")
    return QuotaView(namespace, cache.namespace_view(namespace), quota, tuple(others), cache.priority_classes(),
                     cache.largest_node(), managed=labels.get(names.MANAGED_LABEL) == "true")


def read_manifests(path: Path) -> list[dict[str, Any]]:
    """The YAML (or JSON) documents of a file, or a one-line CellError."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as exc:
        raise CellError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CellError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not documents or not all(isinstance(d, dict) for d in documents):
        raise CellError(f"{path}: expected one or more Kubernetes objects")
    return documents


def why_manifest(path: Path, kubeconfig: Path, namespace: str | None = None, console: Console | None = None,
                 output: WhyFormat | None = None) -> list[dict[str, Any]]:
    """Print, for each job in the file, whether it would be admitted and placed, and what would let it in;
    return the records printed."""
    console = console or Console()
    documents = read_manifests(path)
    api = api_client(kubeconfig)
    listed = list_objects(api)
    snapshot = extender_snapshot(*listed)
    views: dict[str, QuotaView] = {}
    records = []
    for document in documents:
        meta = document.get("metadata") or {}
        where = str(meta.get("namespace") or namespace or "default")
        if where not in views:
            views[where] = quota_view(api, where)
        left_out = untolerated_nodes(listed[0], pod_spec(document))
        if left_out and output != WhyFormat.json:
            console.print(f"{len(left_out)} node(s) left out: taints its pods do not tolerate "
                          f"({', '.join(left_out)})", highlight=False)
        try:
            records.append(suggest(document, views[where], _without(snapshot, left_out)))
        except ValueError as exc:
            raise CellError(f"{path}: {exc}") from None
    if output == WhyFormat.json:
        payload: Any = records[0].to_json() if len(records) == 1 else [r.to_json() for r in records]
        console.out(json.dumps(payload, indent=2), highlight=False)
    else:
        for record in records:
            render_job(record, console)
    return [r.to_json() for r in records]


def render_job(record: WhyRecord, console: Console) -> None:
    fits = record.admitted and all(p.node for p in record.placement)
    console.print(f"[bold]{record.job}[/]: " + ("would be admitted and placed" if fits else "would not get in whole"),
                  highlight=False)
    console.print(f"reasons of pod {record.pod}, node by node (computed now by the policy core):", highlight=False)
    _render_record(record, console)


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
    _render_record(WhyRecord.from_json(record), console)


def _render_record(why_record: WhyRecord, console: Console) -> None:
    table = Table(show_lines=False)
    table.add_column("node")
    table.add_column("fits")
    table.add_column("reasons")
    for name, fits, reasons in why_record.rows():
        mark = "[green]yes[/]" if fits else ("[dim]-[/]" if fits is None else "[red]no[/]")
        table.add_row(name, mark, reasons)
    console.print(table)
    console.print(why_record.summary(), highlight=False)
    for line in why_record.notes():  # admission, placement, refusals and suggestions, when it has any
        console.print(line, highlight=False)


def why(namespace: str, pod: str, kubeconfig: Path, state_dir: Path | None = None,
        console: Console | None = None, output: WhyFormat = WhyFormat.text) -> dict[str, Any]:
    """Print why NAMESPACE/POD is where it is (or nowhere); return the record printed."""
    console = console or Console()
    api = api_client(kubeconfig)
    manifest = _get(RawClient(api), names.PODS.object_path(namespace, pod), f"read pod {namespace}/{pod}",
                    f"pod {namespace}/{pod} not found") or {}
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
    snapshot = None
    if record is None or not info.node_name:
        nodes, pods, allocs = list_objects(api)
        # As kube-scheduler would: nodes whose taints the pod does not tolerate are not the extender's to judge.
        left_out = untolerated_nodes(nodes, manifest.get("spec") or {})
        snapshot = _without(extender_snapshot(nodes, pods, allocs), left_out)
    if record is not None:
        source = f"the extender's last filter decision ({record.get('decidedAt')})"
    else:
        assert snapshot is not None
        record = compute_why(snapshot, info)
        source = "computed now by the policy core from the API (the extender has no record)"
    if not info.node_name:  # still pending: what would place it, checked on the cell as it is now
        assert snapshot is not None
        suggestions = suggest_pod(info, snapshot)
        record = {**record, "suggestions": [s.to_json() for s in suggestions]}
    if output == WhyFormat.json:
        console.out(json.dumps(record, indent=2), highlight=False)
    else:
        render_why(record, info, manifest.get("status") or {}, source, console)
    return record

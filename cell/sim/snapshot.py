"""The cell a simulation starts from: a YAML file, or `live` (read from a running cell).

Two file shapes, both read into Kubernetes-shaped objects and handed to the policy's
`CellSnapshot.from_manifests`, so the conversion rules are the ones the extender uses:

- A checkpoint: Kubernetes objects, as `kubectl get nodes,pods,allocs,bandquotas,namespaces -A -o yaml`
  (a `kind: List`) or `cell sim checkpoint` write them, or a multi-document stream of them. Kinds:
  Node, Pod, Alloc, BandQuota, Namespace (only its labels are read).
- A compact cell (`kind: Cell`), for hand-written and generated cells: machine shapes with counts,
  zones and racks, optional per-namespace quotas (the `spec.bands` of a BandQuota).

Quota (SPEC §3): a namespace with a BandQuota, or a Namespace labelled `cell.distos.dev/managed: "true"`,
is limited (a managed namespace without a BandQuota gets zero, Q4); any other namespace is not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cell.errors import CellError
from cell.kube import api_client
from cell.top import list_objects
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.model import RACK_LABEL, ZONE_LABEL, CellSnapshot
from scheduler_ext.policy.quota import BandQuota, band_quota_of, bands_manifest, parse_bands, used_status
from scheduler_ext.policy.resources import QuantityError, Resources, parse_cpu, parse_memory
from scheduler_ext.policy.workloads import charge_of, usage_by_band

SIM_API_VERSION = "sim.cell.distos.dev/v1alpha1"
MANAGED_LABEL = "cell.distos.dev/managed"
HOSTNAME_LABEL = "kubernetes.io/hostname"
SNAPSHOT_KINDS = ("Node", "Pod", "Alloc", "BandQuota", "Namespace")
DEFAULT_ZONES = ("zone-a", "zone-b", "zone-c")
MAX_ERRORS_SHOWN = 5

Manifest = dict[str, Any]


@dataclass
class SimCell:
    """Everything a simulation reads about the starting cell."""

    source: str
    nodes: list[Manifest] = field(default_factory=list)
    pods: list[Manifest] = field(default_factory=list)
    allocs: list[Manifest] = field(default_factory=list)
    quotas: dict[str, BandQuota | None] = field(default_factory=dict)  # None: managed, no BandQuota (Q4)
    used: dict[str, dict[Band, Resources]] = field(default_factory=dict)  # status.used where it was given

    def snapshot(self) -> CellSnapshot:
        try:
            return CellSnapshot.from_manifests(self.nodes, self.pods, self.allocs)
        except (ValueError, KeyError, TypeError) as exc:
            raise CellError(f"{self.source}: cannot read the cell's objects: {exc}") from None

    def quota_use(self) -> dict[str, dict[Band, Resources]]:
        """What each limited namespace already uses, per band: status.used when known (Q7, what the
        webhook compares against), else the charges of its bound pods and its allocs (A4). The latter
        misses a controller's pods that are not bound yet; a live cell's BandQuotas carry status.used."""
        charges: dict[str, list[Any]] = {}
        for obj in (*self.pods, *self.allocs):
            namespace = (obj.get("metadata") or {}).get("namespace") or "default"
            if namespace not in self.quotas or namespace in self.used:
                continue
            if obj.get("kind") == "Pod" and not (obj.get("spec") or {}).get("nodeName"):
                continue  # a pending pod's workload is charged through its controller, unknown here
            if obj.get("kind") == "Pod":
                # The pod's controller is not in a snapshot: each running pod stands for its share of
                # the controller's charge (Q3 would otherwise exempt it). Alloc members stay exempt (A4).
                obj = {**obj, "metadata": {k: v for k, v in (obj.get("metadata") or {}).items()
                                           if k != "ownerReferences"}}
            try:
                charge = charge_of(obj)
            except ValueError as exc:
                raise CellError(f"{self.source}: {exc}") from None
            if charge is not None:
                charges.setdefault(namespace, []).append(charge)
        use = {namespace: usage_by_band(charges.get(namespace, ())) for namespace in self.quotas}
        use.update({namespace: dict(used) for namespace, used in self.used.items()})
        return use


def _fail(source: str, errors: list[str]) -> CellError:
    shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
    more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
    return CellError(f"{source}: {shown}{more}")


def read_yaml_documents(path: Path) -> list[Any]:
    """Every document of a YAML file, or a one-line CellError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CellError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise CellError(f"{path}: cannot read: {exc}") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CellError(f"{path}: not valid YAML{where}: {problem}") from None


def load_snapshot_file(path: Path) -> SimCell:
    """A checkpoint or a compact cell, validated in full (every error found is reported)."""
    documents = read_yaml_documents(path)
    source = str(path)
    if not documents:
        raise CellError(f"{source}: empty; expected Kubernetes objects or a kind: Cell document")
    if len(documents) == 1 and isinstance(documents[0], dict) and documents[0].get("kind") == "Cell":
        return compact_cell(documents[0], source)
    objects: list[tuple[str, Any]] = []
    for number, document in enumerate(documents, 1):
        where = f"document {number}" if len(documents) > 1 else "document"
        if isinstance(document, dict) and document.get("kind") == "List":
            items = document.get("items")
            if not isinstance(items, list):
                raise CellError(f"{source}: {where}: a List needs an items list")
            objects.extend((f"items[{i}]", item) for i, item in enumerate(items))
        elif isinstance(document, dict) and document.get("kind") == "Cell":
            raise CellError(f"{source}: {where}: a kind: Cell document must be the file's only document")
        else:
            objects.append((where, document))
    return objects_cell(objects, source)


def objects_cell(objects: Iterable[tuple[str, Any]], source: str) -> SimCell:
    """A cell from (where, Kubernetes object) pairs; `where` names the object in error messages."""
    cell = SimCell(source)
    errors: list[str] = []
    managed: set[str] = set()
    quotas: dict[str, BandQuota] = {}
    node_names: set[str] = set()
    for where, obj in objects:
        if not isinstance(obj, dict):
            errors.append(f"{where}: expected a Kubernetes object (a mapping), got {type(obj).__name__}")
            continue
        kind = obj.get("kind")
        meta = obj.get("metadata")
        if kind not in SNAPSHOT_KINDS:
            errors.append(f"{where}: kind {kind!r} is not part of a cell snapshot "
                          f"(expected one of {', '.join(SNAPSHOT_KINDS)})")
            continue
        if not isinstance(meta, dict) or not meta.get("name"):
            errors.append(f"{where}: {kind} needs metadata.name")
            continue
        name = meta["name"]
        namespace = meta.get("namespace") or "default"
        if kind == "Node":
            if name in node_names:
                errors.append(f"{where}: Node {name} appears twice")
            node_names.add(name)
            allocatable = (obj.get("status") or {}).get("allocatable") or (obj.get("status") or {}).get("capacity")
            if not isinstance(allocatable, dict) or allocatable.get("cpu") is None:
                errors.append(f"{where}: Node {name} needs status.allocatable with cpu and memory")
                continue
            errors.extend(f"{where}: Node {name}: {e}" for e in _quantity_errors(allocatable, "status.allocatable"))
            cell.nodes.append(obj)
        elif kind == "Pod":
            spec = obj.get("spec")
            if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list):
                errors.append(f"{where}: Pod {namespace}/{name} needs spec.containers")
                continue
            for i, container in enumerate(spec["containers"]):
                requests = ((container or {}).get("resources") or {}).get("requests") or {}
                errors.extend(f"{where}: Pod {namespace}/{name}: {e}"
                              for e in _quantity_errors(requests, f"spec.containers[{i}].resources.requests"))
            cell.pods.append(obj)
        elif kind == "Alloc":
            spec = obj.get("spec") or {}
            errors.extend(f"{where}: Alloc {namespace}/{name}: {e}"
                          for e in _quantity_errors(spec.get("resources") or {}, "spec.resources"))
            cell.allocs.append(obj)
        elif kind == "BandQuota":
            quota, quota_errors = band_quota_of(obj)
            errors.extend(f"{where}: BandQuota {namespace}/{name}: {e}" for e in quota_errors)
            if namespace in quotas:
                errors.append(f"{where}: namespace {namespace} has a second BandQuota (at most one per namespace)")
            quotas[namespace] = quota
            used = (obj.get("status") or {}).get("used")
            if used:
                limits, used_errors = parse_bands({"bands": used}, "status.used")
                errors.extend(f"{where}: BandQuota {namespace}/{name}: {e}" for e in used_errors)
                cell.used[namespace] = limits
        elif kind == "Namespace" and str((meta.get("labels") or {}).get(MANAGED_LABEL)) == "true":
            managed.add(name)
    if errors:
        raise _fail(source, errors)
    if not cell.nodes:
        raise CellError(f"{source}: no Node objects: a cell needs machines")
    for namespace in sorted(managed - quotas.keys()):
        cell.quotas[namespace] = None
    cell.quotas.update(quotas)
    return cell


def _quantity_errors(resources: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    for key, parse in (("cpu", parse_cpu), ("memory", parse_memory)):
        value = resources.get(key)
        if value is None:
            continue
        try:
            if parse(value) < 0:
                errors.append(f"{path}.{key}: must not be negative, got {value!r}")
        except (QuantityError, ArithmeticError, ValueError):
            errors.append(f"{path}.{key}: must be a quantity, got {value!r}")
    return errors


# --- the compact format --------------------------------------------------------------------------

_MACHINE_KEYS = {"count", "cpu", "memory", "pods", "namePrefix", "zones", "racksPerZone", "labels"}


def node_manifest(name: str, cpu: str, memory: str, pods: int, zone: str, rack: str,
                  labels: Mapping[str, str] | None = None) -> Manifest:
    """A Node object as the API serves it, shaped like a local cell's KWOK node."""
    allocatable = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {HOSTNAME_LABEL: name, ZONE_LABEL: zone, RACK_LABEL: rack,
                                              **(labels or {})}},
        "spec": {},
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }


def compact_cell(document: Mapping[str, Any], source: str) -> SimCell:
    """`kind: Cell`: machine shapes expanded into Node objects, named <namePrefix>-1, -2, ... in order.

    Machines of a shape are dealt round-robin over its zones; each zone has `racksPerZone` racks,
    also dealt round-robin (rack names are unique across the cell: rack-1, rack-2, ...).
    """
    errors: list[str] = []
    for key in document:
        if key not in ("apiVersion", "kind", "metadata", "machines", "quotas"):
            errors.append(f"{key}: unknown field; expected machines, quotas")
    if document.get("apiVersion") not in (None, SIM_API_VERSION):
        errors.append(f"apiVersion: expected {SIM_API_VERSION}, got {document.get('apiVersion')!r}")
    machines = document.get("machines")
    if not isinstance(machines, list) or not machines:
        errors.append("machines: required, a non-empty list of machine shapes")
        machines = []
    cell = SimCell(source)
    counters: dict[str, int] = {}
    rack_ids: dict[tuple[str, str, int], str] = {}
    for i, shape in enumerate(machines):
        path = f"machines[{i}]"
        if not isinstance(shape, dict):
            errors.append(f"{path}: must be a mapping with count, cpu, memory")
            continue
        errors.extend(f"{path}.{key}: unknown field; expected one of {', '.join(sorted(_MACHINE_KEYS))}"
                      for key in shape if key not in _MACHINE_KEYS)
        count, pods, racks = shape.get("count"), shape.get("pods", 110), shape.get("racksPerZone", 1)
        for key, value in (("count", count), ("pods", pods), ("racksPerZone", racks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                errors.append(f"{path}.{key}: must be a positive integer, got {value!r}")
        for key in ("cpu", "memory"):
            if shape.get(key) is None:
                errors.append(f"{path}.{key}: required")
        errors.extend(_quantity_errors(shape, path))
        zones = shape.get("zones", list(DEFAULT_ZONES))
        if not isinstance(zones, list) or not zones or not all(isinstance(z, str) and z for z in zones):
            errors.append(f"{path}.zones: must be a non-empty list of zone names")
        labels = shape.get("labels") or {}
        if not isinstance(labels, dict):
            errors.append(f"{path}.labels: must be a mapping")
        prefix = shape.get("namePrefix", "node")
        if not isinstance(prefix, str) or not prefix:
            errors.append(f"{path}.namePrefix: must be a non-empty string")
        if errors:
            continue
        assert isinstance(count, int) and isinstance(pods, int) and isinstance(racks, int)
        for n in range(count):
            counters[prefix] = counters.get(prefix, 0) + 1
            name = f"{prefix}-{counters[prefix]}"
            zone = zones[n % len(zones)]
            rack_key = (zone, str(i), (n // len(zones)) % racks)
            rack = rack_ids.setdefault(rack_key, f"rack-{len(rack_ids) + 1}")
            cell.nodes.append(node_manifest(name, str(shape["cpu"]), str(shape["memory"]), pods, zone, rack,
                                            {str(k): str(v) for k, v in labels.items()}))
    quotas = document.get("quotas") or {}
    if not isinstance(quotas, dict):
        errors.append("quotas: must map namespace -> bands (as a BandQuota's spec.bands)")
        quotas = {}
    for namespace, bands in quotas.items():
        limits, quota_errors = parse_bands({"bands": bands}, f"quotas.{namespace}")
        errors.extend(e.replace(f"quotas.{namespace}.bands", f"quotas.{namespace}") for e in quota_errors)
        cell.quotas[str(namespace)] = BandQuota(str(namespace), "quota", limits)
    if errors:
        raise _fail(source, errors)
    return cell


# --- a running cell ------------------------------------------------------------------------------

def load_live(kubeconfig: Path) -> SimCell:
    """Nodes, pods, Allocs, BandQuotas and managed namespaces of a running cell, read now."""
    api = api_client(kubeconfig)
    nodes, pods, allocs = list_objects(api)
    quotas, namespaces = _list_quota_objects(api)
    objects: list[tuple[str, Any]] = []
    for kind, items in (("Node", nodes), ("Pod", pods), ("Alloc", allocs), ("BandQuota", quotas),
                        ("Namespace", namespaces)):
        objects.extend((f"live {kind} {i}", {**item, "kind": kind}) for i, item in enumerate(items))
    return objects_cell(objects, f"live cell ({kubeconfig})")


def _list_quota_objects(api: Any) -> tuple[list[Manifest], list[Manifest]]:
    def items(response: Any) -> list[Manifest]:
        try:
            return list(json.loads(response.data).get("items") or [])
        finally:
            response.release_conn()

    try:
        namespaces = items(client.CoreV1Api(api).list_namespace(
            label_selector=f"{MANAGED_LABEL}=true", _preload_content=False, _request_timeout=30))
    except ApiException as exc:
        raise CellError(f"cannot list namespaces: {exc.status} {exc.reason}") from None
    try:
        quotas = items(client.CustomObjectsApi(api).list_cluster_custom_object(
            "cell.distos.dev", "v1alpha1", "bandquotas", _preload_content=False, _request_timeout=30))
    except ApiException as exc:
        if exc.status != 404:
            raise CellError(f"cannot list bandquotas: {exc.status} {exc.reason}") from None
        quotas = []
    return quotas, namespaces


def checkpoint_documents(cell: SimCell) -> dict[str, Any]:
    """A `kind: List` of the cell's objects, readable back with `load_snapshot_file`."""
    keep = ("apiVersion", "kind", "metadata", "spec", "status")
    meta_keep = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences")

    def slim(obj: Manifest) -> Manifest:
        out = {k: obj[k] for k in keep if k in obj}
        out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k in meta_keep}
        return out

    items: list[Manifest] = [slim(n) for n in cell.nodes]
    items += [slim(p) for p in cell.pods if (p.get("spec") or {}).get("nodeName")]
    items += [slim(a) for a in cell.allocs]
    for namespace, quota in sorted(cell.quotas.items()):
        items.append({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": namespace, "labels": {MANAGED_LABEL: "true"}}})
        if quota is not None:
            obj: Manifest = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "BandQuota",
                             "metadata": {"name": quota.name, "namespace": namespace},
                             "spec": {"bands": bands_manifest(quota.limits)}}
            if namespace in cell.used:
                obj["status"] = {"used": used_status(cell.used[namespace])}
            items.append(obj)
    return {"apiVersion": "v1", "kind": "List", "items": items}

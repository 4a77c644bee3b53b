"""Students (issue 4): a namespace each, its BandQuota, RBAC and a kubeconfig.

A student is a namespace named after the student, labelled managed (so quota admission applies)
and with the student's name. Adding is idempotent (server-side apply), checked in full before
anything is created (names, roster, prod quota against the cell's capacity, Q6), and undone if a
step fails half-way, so a failed `cell students add` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rich.console import Console

from cell.errors import CellError
from cell.kube import api_client, api_message
from cell.kubeconfig import write_kubeconfig
from cell.names import MANAGED_LABEL, STUDENT_GROUP, STUDENT_LABEL, STUDENT_ROLE, student_name_error
from cell.pki import CertificateAuthority
from cell.state import CellPaths
from cell.wait import wait_until
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.dynamic import Objects
from scheduler_ext.kube.errors import APIError, APINotFoundError
from scheduler_ext.kube.names import BANDQUOTAS
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import (
    DEFAULT_STUDENT_BANDS,
    QUOTA_RESOURCES,
    BandQuota,
    admit_band_quota,
    band_quota_of,
    parse_bands,
)
from scheduler_ext.policy.resources import ZERO, Resources

QUOTA_NAME = "quota"
FIELD_MANAGER = "cell-students"


# --- what a student is ---------------------------------------------------------------------------

@dataclass(frozen=True)
class StudentSpec:
    """A student to onboard: the name, and spec.bands of the student's BandQuota (Q8 unless overridden)."""

    name: str
    bands: dict[str, dict[str, str]] = field(default_factory=lambda: {b: dict(r) for b, r in
                                                                       DEFAULT_STUDENT_BANDS.items()})


def name_error(name: str) -> str | None:
    """Why name cannot be a student (a namespace and a user), or None if it can (playbooks/names.py)."""
    return student_name_error(name)


def bands_with_overrides(overrides: Mapping[str, Any] | None, where: str) -> dict[str, dict[str, str]]:
    """Q8's defaults with a roster's per-band overrides: a band given replaces the default's values it
    names (so `production: {cpu: 4}` keeps the default memory); a band set to null is removed."""
    bands: dict[str, dict[str, str]] = {b: dict(r) for b, r in DEFAULT_STUDENT_BANDS.items()}
    if overrides is None:
        return bands
    if not isinstance(overrides, Mapping):
        raise CellError(f"{where}: quota must map band names to {{cpu, memory}}")
    for band, values in overrides.items():
        if values is None:
            bands.pop(str(band), None)
        elif isinstance(values, Mapping):
            bands[str(band)] = {**bands.get(str(band), {}), **{str(k): str(v) for k, v in values.items()}}
        else:
            raise CellError(f"{where}: quota.{band} must be {{cpu, memory}} or null")
    _, errors = parse_bands({"bands": bands}, f"{where}: quota")
    if errors:
        raise CellError("; ".join(errors))
    return bands


def _check_unique(specs: list[StudentSpec]) -> list[StudentSpec]:
    seen: set[str] = set()
    for spec in specs:
        error = name_error(spec.name)
        if error:
            raise CellError(error)
        if spec.name in seen:
            raise CellError(f"student {spec.name!r} is listed twice")
        seen.add(spec.name)
    return specs


def specs_from_names(names: Iterable[str]) -> list[StudentSpec]:
    return _check_unique([StudentSpec(name) for name in names])


ROSTER_FORMAT = (
    "Roster file: YAML or CSV (chosen by the extension: .yaml, .yml or .csv).\n\n"
    "YAML: a list (or a mapping with key `students`) whose entries are a name, or a mapping with `name` and "
    "an optional `quota` overriding the default per band (a band set to null is removed), e.g.\n\n"
    "  students:\n"
    "    - alice\n"
    "    - name: bob\n"
    "      quota:\n"
    "        production: {cpu: \"4\", memory: 4Gi}\n"
    "        monitoring: {cpu: 500m, memory: 512Mi}\n"
    "        batch: null\n\n"
    "CSV: a header row with `name` and optional columns `<band>.<resource>` (bands monitoring, production, "
    "batch, best-effort; resources cpu, memory); an empty cell keeps the default, e.g.\n\n"
    "  name,production.cpu,production.memory\n"
    "  alice,,\n"
    "  bob,4,4Gi\n\n"
    "The default quota (Q8): production cpu 2 / memory 2Gi, batch cpu 4 / memory 4Gi, no monitoring, "
    "best-effort unlimited."
)


def parse_roster(path: Path) -> list[StudentSpec]:
    """A roster file -> students with their quotas; any problem is one CellError naming the entry."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CellError(f"roster not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CellError(f"cannot read roster {path}: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        specs = _roster_csv(text, path)
    elif suffix in (".yaml", ".yml"):
        specs = _roster_yaml(text, path)
    else:
        raise CellError(f"roster {path}: unknown format {suffix or '(no extension)'}; use .yaml, .yml or .csv")
    if not specs:
        raise CellError(f"roster {path} lists no students")
    return _check_unique(specs)


def _roster_yaml(text: str, path: Path) -> list[StudentSpec]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CellError(f"roster {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    entries = document.get("students") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise CellError(f"roster {path}: expected a list of students (or a mapping with key `students`)")
    specs = []
    for i, entry in enumerate(entries):
        where = f"roster {path} entry {i + 1}"
        if isinstance(entry, str):
            specs.append(StudentSpec(entry))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            unknown = sorted(set(entry) - {"name", "quota"})
            if unknown:
                raise CellError(f"{where} ({entry['name']}): unknown key(s) {', '.join(unknown)}; expected name, quota")
            specs.append(StudentSpec(entry["name"], bands_with_overrides(entry.get("quota"),
                                                                         f"{where} ({entry['name']})")))
        else:
            raise CellError(f"{where}: expected a name or a mapping with `name`")
    return specs


def _roster_csv(text: str, path: Path) -> list[StudentSpec]:
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    if "name" not in columns:
        raise CellError(f"roster {path}: the CSV header needs a `name` column")
    valid = {f"{band.label}.{resource}" for band in Band for resource in QUOTA_RESOURCES}
    unknown = [c for c in columns if c != "name" and c not in valid]
    if unknown:
        raise CellError(f"roster {path}: unknown column(s) {', '.join(unknown)}; expected name and "
                        "<band>.<resource> such as production.cpu")
    specs = []
    for row in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        where = f"roster {path} line {reader.line_num}"
        if not row.get("name"):
            raise CellError(f"{where}: no name")
        overrides: dict[str, dict[str, str]] = {}
        for column, value in row.items():
            if column != "name" and value:
                band, resource = column.split(".", 1)
                overrides.setdefault(band, {})[resource] = value
        specs.append(StudentSpec(row["name"], bands_with_overrides(overrides, f"{where} ({row['name']})")))
    return specs


# --- manifests -----------------------------------------------------------------------------------

# SPEC §9: Pod Security Admission "restricted" in every student namespace (enforced, and warned and
# audited too, so that a Deployment's pods that would be refused are named when the Deployment is
# created). Pinned to the cell's Kubernetes minor, so a cell upgrade does not tighten a lab mid-term.
POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{mode}{suffix}": value
                       for mode in ("enforce", "warn", "audit")
                       for suffix, value in (("", "restricted"), ("-version", "v1.34"))}


def namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {MANAGED_LABEL: "true", STUDENT_LABEL: name,
                                                  **POD_SECURITY_LABELS}}}


def band_quota_manifest(spec: StudentSpec) -> dict[str, Any]:
    return {"apiVersion": BANDQUOTAS.api_version, "kind": BANDQUOTAS.kind,
            "metadata": {"name": QUOTA_NAME, "namespace": spec.name, "labels": {STUDENT_LABEL: spec.name}},
            "spec": {"bands": spec.bands}}


def role_binding_manifest(name: str) -> dict[str, Any]:
    """The student manages workloads in their own namespace only (cluster/base/rbac-students.yaml)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": STUDENT_ROLE, "namespace": name, "labels": {STUDENT_LABEL: name}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": STUDENT_ROLE},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}]}


def student_manifests(specs: Iterable[StudentSpec]) -> dict[str, Any]:
    """Every student's namespace, Q8 BandQuota and cell:student RoleBinding, as one kubectl `List`:
    what `add_students` applies, and what the OpenStack students role applies (`cell students manifests`)."""
    items: list[dict[str, Any]] = []
    for spec in specs:
        items += [namespace_manifest(spec.name), band_quota_manifest(spec), role_binding_manifest(spec.name)]
    return {"apiVersion": "v1", "kind": "List", "items": items}


# --- talking to the cell -------------------------------------------------------------------------

def _connect(paths: CellPaths) -> client.ApiClient:
    return api_client(paths.kubeconfig)


def _existing_quotas(api: client.ApiClient) -> list[tuple[BandQuota, dict[str, Any]]]:
    try:
        listing = RawClient(api).get(BANDQUOTAS.path, timeout=15)
    except APINotFoundError:
        raise CellError("the cell has no BandQuota CRD (cluster/base is not applied; run `cell up`)") from None
    except APIError as exc:
        raise CellError(f"cannot list BandQuotas: {api_message(exc)}") from None
    items: list[dict[str, Any]] = listing.get("items", []) if isinstance(listing, dict) else []
    return [(band_quota_of(item)[0], item) for item in items]


def _capacity(api: client.ApiClient) -> Resources:
    total = ZERO
    for node in client.CoreV1Api(api).list_node(_request_timeout=15).items:
        allocatable: dict[str, Any] = (node.status.allocatable if node.status else None) or {}
        total = total + Resources.parse(allocatable)
    return total


def check_prod_quota(specs: list[StudentSpec], existing: list[BandQuota], capacity: Resources) -> None:
    """Q6 for the whole batch before anything is created, with the policy core's own rule."""
    others = {(q.namespace, q.name): q for q in existing}
    for spec in specs:
        limits, _ = parse_bands({"bands": spec.bands})
        new = BandQuota(spec.name, QUOTA_NAME, limits)
        old = others.pop((spec.name, QUOTA_NAME), None)
        decision = admit_band_quota(new, others.values(), capacity, old)
        if not decision.allowed:
            raise CellError(f"student {spec.name}: {decision.message}; nobody was added")
        others[(spec.name, QUOTA_NAME)] = new


def _namespaces(api: client.ApiClient, paths: CellPaths) -> dict[str, Any]:
    """Every namespace by name: the first call each command makes, so it says when the cell does not answer."""
    try:
        listing = client.CoreV1Api(api).list_namespace(_request_timeout=15)
    except Exception as exc:
        raise CellError(f"cannot reach the cell at {paths.server_url()}: {api_message(exc)}") from None
    return {str(ns.metadata.name): ns for ns in listing.items if ns.metadata is not None}


def kubeconfig_of(paths: CellPaths, name: str) -> Path:
    return paths.student_kubeconfig(name)


def add_students(specs: list[StudentSpec], paths: CellPaths, console: Console | None = None) -> list[Path]:
    """Onboard students; returns their kubeconfig paths. All-or-nothing for namespaces this call creates."""
    console = console or Console(stderr=True)
    ca = CertificateAuthority.load(paths.pki_dir)
    server = paths.server_url()
    api = _connect(paths)
    namespaces = _namespaces(api, paths)
    for spec in specs:
        ns = namespaces.get(spec.name)
        if ns is not None:
            labels = ns.metadata.labels or {}
            if labels.get(STUDENT_LABEL) != spec.name:
                raise CellError(f"namespace {spec.name} already exists and is not a student's; nobody was added")
            if ns.metadata.deletion_timestamp is not None:
                raise CellError(f"student {spec.name} is still being removed; try again in a moment")
    check_prod_quota(specs, [q for q, _ in _existing_quotas(api)], _capacity(api))

    created: list[str] = []
    written: list[Path] = []
    objects = Objects(api)
    try:
        for spec in specs:
            if spec.name not in namespaces:
                created.append(spec.name)
            # Server-side apply with one field manager: adding a student again changes nothing.
            for manifest in (namespace_manifest(spec.name), band_quota_manifest(spec),
                             role_binding_manifest(spec.name)):
                objects.apply(manifest, FIELD_MANAGER)
            cert, key = ca.issue_client_cert(spec.name, [STUDENT_GROUP])
            path = write_kubeconfig(kubeconfig_of(paths, spec.name), server, ca.cert_pem, cert, key,
                                    user=spec.name, namespace=spec.name)
            written.append(path)
            _wait_service_account(api, spec.name)
            console.print(f"student {spec.name}: namespace, BandQuota {spec.name}/{QUOTA_NAME}, RBAC, kubeconfig",
                          highlight=False)
    except (APIError, ApiException, OSError) as exc:
        _undo(api, created, [p for p in written if p.stem in created])
        raise CellError(f"adding student {spec.name} failed: {api_message(exc)}; "
                        + ("removed what this run created" if created else "nothing new was created")) from None
    return written


def _wait_service_account(api: client.ApiClient, namespace: str, timeout: float = 30.0) -> None:
    """Pods are refused until the controller-manager made the namespace's default ServiceAccount:
    wait for it, so the namespace is usable the moment `add` returns."""
    core = client.CoreV1Api(api)
    if not wait_until(lambda: core.list_namespaced_service_account(namespace, _request_timeout=15).items,
                      timeout, interval=0.1):
        raise CellError(f"namespace {namespace} has no default ServiceAccount after {timeout:.0f} s "
                        "(is kube-controller-manager running? see `cell status`)")


def _undo(api: client.ApiClient, namespaces: list[str], kubeconfigs: list[Path]) -> None:
    for name in namespaces:
        # Best effort: the error being reported is the first one.
        with contextlib.suppress(Exception):
            client.CoreV1Api(api).delete_namespace(name, _request_timeout=15)
    for path in kubeconfigs:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StudentRow:
    name: str
    limits: dict[Band, Resources]
    used: dict[Band, Resources]
    kubeconfig: Path | None
    terminating: bool


def list_students(paths: CellPaths) -> list[StudentRow]:
    api = _connect(paths)
    namespaces = [ns for ns in _namespaces(api, paths).values() if (ns.metadata.labels or {}).get(STUDENT_LABEL)]
    quotas = {q.namespace: (q, item) for q, item in _existing_quotas(api)}
    rows = []
    for ns in sorted(namespaces, key=lambda n: n.metadata.name):
        name = ns.metadata.name
        quota, item = quotas.get(name, (None, {}))
        used_raw = (item.get("status") or {}).get("used") or {}
        used = {}
        for label, amounts in used_raw.items():
            try:
                used[Band.from_label(label)] = Resources.parse(amounts)
            except ValueError:
                continue
        kubeconfig = kubeconfig_of(paths, name)
        rows.append(StudentRow(name, dict(quota.limits) if quota else {}, used,
                               kubeconfig if kubeconfig.is_file() else None,
                               ns.metadata.deletion_timestamp is not None))
    return rows


def remove_students(names: list[str], paths: CellPaths, wait: float | None = 120.0) -> None:
    """Delete the students' namespaces (with everything in them) and their kubeconfigs.

    With wait (seconds), return only once the namespaces are gone: until then their BandQuotas still
    count towards the cell's prod quota (Q6), so a student added right after might not fit.
    """
    for name in names:
        error = name_error(name)
        if error:
            raise CellError(error)
    api = _connect(paths)
    namespaces = _namespaces(api, paths)
    for name in names:
        ns = namespaces.get(name)
        if ns is None or (ns.metadata.labels or {}).get(STUDENT_LABEL) != name:
            raise CellError(f"no student named {name!r} (no namespace labelled {STUDENT_LABEL}={name}); "
                            "nobody was removed")
    for name in names:
        try:
            client.CoreV1Api(api).delete_namespace(name, _request_timeout=15)
        except ApiException as exc:
            if exc.status != 404:
                raise CellError(f"removing student {name} failed: {api_message(exc)}") from None
        kubeconfig_of(paths, name).unlink(missing_ok=True)
    if wait:
        _wait_gone(api, names, wait)


def _wait_gone(api: client.ApiClient, names: list[str], timeout: float) -> None:
    core = client.CoreV1Api(api)

    def gone(name: str) -> bool:
        try:
            core.read_namespace(name, _request_timeout=15)
        except ApiException as exc:
            if exc.status != 404:
                raise CellError(f"removing student {name}: {api_message(exc)}") from None
            return True
        return False

    pending = list(names)

    def all_gone() -> bool:
        while pending and gone(pending[0]):
            pending.pop(0)
        return not pending

    if not wait_until(all_gone, timeout):
        raise CellError(f"namespace {pending[0]} is still terminating after {timeout:.0f} s; "
                        f"see `kubectl get namespace {pending[0]} -o yaml`")

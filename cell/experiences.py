"""Applying an experience (a weekly lab, cell/catalog.py) into every student's namespace (SPEC §6, §8).

Applying renders the kustomization once with kubectl's built-in kustomize, then
server-side applies it into each student's namespace: first as a dry run for everyone, so a bad
manifest or a missing namespace stops the command before anything changed, then for real.
Applying twice changes nothing (server-side apply with a fixed field manager).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from rich.console import Console

from cell.catalog import Experience, find_experience
from cell.errors import CellError
from cell.names import STUDENT_LABEL, student_name_error

FIELD_MANAGER = "cell-experience"
# Objects an experience may not carry: they are cluster-wide, and an experience is per namespace.
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "Node", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "APIService",
})
_PARALLEL_APPLIES = 4  # kubectl processes at once; the machine has few cores


@dataclass(frozen=True, slots=True, order=True)
class Student:
    """A student is a namespace labelled cell.distos.dev/student=<name>."""

    name: str
    namespace: str


# --- students ------------------------------------------------------------------------------------

def discover_students(api: client.ApiClient, only: str | None = None) -> list[Student]:
    """Every student of the cell (sorted by name), or just `only`, which must exist."""
    selector = f"{STUDENT_LABEL}={only}" if only else STUDENT_LABEL
    error = student_name_error(only) if only is not None else None
    if error:
        raise CellError(error)
    namespaces = client.CoreV1Api(api).list_namespace(label_selector=selector, _request_timeout=15).items
    students = []
    for ns in namespaces:
        meta = ns.metadata
        if meta is None or meta.deletion_timestamp is not None or not meta.name:
            continue  # a namespace being deleted is no longer a student's
        students.append(Student((meta.labels or {}).get(STUDENT_LABEL) or meta.name, meta.name))
    students.sort()
    if only is not None and not students:
        raise CellError(f"no student named {only!r} (no namespace labelled {STUDENT_LABEL}={only})")
    return students


# --- kustomize rendering and server-side apply through kubectl ------------------------------------

def _run(cmd: Sequence[str], stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CellError(f"{Path(cmd[0]).name} {cmd[1]} timed out after {timeout:.0f} s") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def render(experience: Experience, kubectl: Path) -> list[dict[str, Any]]:
    """The experience's manifests, rendered by kustomize, checked to be namespaced and unnamespaced."""
    result = _run([str(kubectl), "kustomize", str(experience.path)])
    if result.returncode != 0:
        raise CellError(f"experience {experience.name}: kustomize failed: {_last_line(result.stderr)}")
    try:
        documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    except yaml.YAMLError as exc:
        raise CellError(f"experience {experience.name}: rendered manifests are not YAML: {exc}") from None
    return validate_manifests(experience.name, documents)


def validate_manifests(name: str, documents: Iterable[Any]) -> list[dict[str, Any]]:
    """Every problem of an experience's manifests at once, as one line; they are applied per namespace."""
    documents = list(documents)
    problems: list[str] = []
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            problems.append(f"document {index + 1} has no apiVersion/kind")
            continue
        meta = doc.get("metadata") or {}
        where = f"{doc['kind']} {meta.get('name', '?')}"
        if not meta.get("name"):
            problems.append(f"document {index + 1} ({doc['kind']}) has no metadata.name")
        if doc["kind"] in CLUSTER_SCOPED_KINDS:
            problems.append(f"{where} is cluster-scoped; an experience holds per-student objects only")
        if meta.get("namespace"):
            problems.append(f"{where} sets metadata.namespace; the namespace is each student's")
    if not documents:
        problems.append("renders no objects")
    if problems:
        raise CellError(f"experience {name}: {'; '.join(problems)}")
    return documents


def for_namespace(documents: Iterable[dict[str, Any]], namespace: str) -> str:
    """The manifests as one YAML stream, placed in namespace."""
    placed = []
    for doc in documents:
        meta = dict(doc.get("metadata") or {})
        meta["namespace"] = namespace
        placed.append({**doc, "metadata": meta})
    return yaml.safe_dump_all(placed, sort_keys=False)


def kubectl_apply(kubectl: Path, kubeconfig: Path, manifest: str, *, dry_run: bool = False,
                  field_manager: str = FIELD_MANAGER) -> str:
    """Server-side apply of a YAML stream; returns kubectl's output or raises with its last error line."""
    cmd = [str(kubectl), f"--kubeconfig={kubeconfig}", "apply", "--server-side", "--force-conflicts",
           f"--field-manager={field_manager}", "-f", "-"]
    if dry_run:
        cmd.append("--dry-run=server")
    result = _run(cmd, stdin=manifest)
    if result.returncode != 0:
        raise CellError(_last_line(result.stderr))
    return result.stdout


def apply_experience(
    name: str,
    *,
    kubeconfig: Path,
    kubectl: Path,
    api: client.ApiClient,
    student: str | None = None,
    console: Console | None = None,
) -> list[Student]:
    """Apply experience `name` into every student's namespace (or one); all-or-nothing up front."""
    experience = find_experience(name)
    documents = render(experience, kubectl)
    students = discover_students(api, student)
    if not students:
        raise CellError("no students in the cell yet (add them with `cell students add NAME...`)")
    manifests = {s: for_namespace(documents, s.namespace) for s in students}

    def attempt(item: tuple[Student, str], dry_run: bool) -> tuple[Student, str | None]:
        target, manifest = item
        try:
            kubectl_apply(kubectl, kubeconfig, manifest, dry_run=dry_run)
        except CellError as exc:
            return target, str(exc)
        return target, None

    # Dry run for everyone first: a manifest the API refuses stops us before any namespace changed.
    for dry_run in (True, False):
        with ThreadPoolExecutor(max_workers=_PARALLEL_APPLIES) as pool:
            outcomes = list(pool.map(lambda item, d=dry_run: attempt(item, d), manifests.items()))
        failed = [(s, error) for s, error in outcomes if error]
        if failed:
            first, error = failed[0]
            more = f" (and {len(failed) - 1} more students)" if len(failed) > 1 else ""
            stage = "nothing applied" if dry_run else "some namespaces were updated; run it again"
            raise CellError(f"experience {name} for student {first.name}{more}: {error} ({stage})")
    if console is not None:
        names = ", ".join(s.name for s in students[:10]) + (", ..." if len(students) > 10 else "")
        console.print(f"experience {name} applied for {len(students)} student(s): {names}", highlight=False,
                      soft_wrap=True)
    return students

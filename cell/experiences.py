"""Experiences: the weekly labs of the course, applied into every student's namespace (SPEC §6, §8).

An experience is a directory `cluster/experiences/<name>/` with a handout (README.md), a
kustomization of the manifests each student gets, and grading tests (`grading/`, run by
cell.grading). Applying renders the kustomization once with kubectl's built-in kustomize, then
server-side applies it into each student's namespace: first as a dry run for everyone, so a bad
manifest or a missing namespace stops the command before anything changed, then for real.
Applying twice changes nothing (server-side apply with a fixed field manager).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from cell.errors import CellError
from cell.students import STUDENT_LABEL

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIENCE_LABEL = "cell.distos.dev/experience"
FIELD_MANAGER = "cell-experience"
# Shared by every experience (a kustomize base each one includes): the course's image names.
COURSE_BASE = "course"
IMAGES_FILE = "images.yaml"
# Objects an experience may not carry: they are cluster-wide, and an experience is per namespace.
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "Node", "PriorityClass", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "APIService",
})
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PARALLEL_APPLIES = 4  # kubectl processes at once; the machine has few cores


def experiences_dir() -> Path:
    """Where experiences live; CELL_EXPERIENCES_DIR points elsewhere (tests, a course of one's own)."""
    return Path(os.environ.get("CELL_EXPERIENCES_DIR") or REPO_ROOT / "cluster" / "experiences").resolve()


@dataclass(frozen=True, slots=True)
class Experience:
    name: str
    path: Path

    @property
    def handout(self) -> Path:
        return self.path / "README.md"

    @property
    def grading_dir(self) -> Path:
        return self.path / "grading"


@dataclass(frozen=True, slots=True, order=True)
class Student:
    """A student is a namespace labelled cell.distos.dev/student=<name>."""

    name: str
    namespace: str


def list_experiences(root: Path | None = None) -> list[str]:
    root = root or experiences_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / "kustomization.yaml").is_file() and (p / "grading").is_dir())


def find_experience(name: str, root: Path | None = None) -> Experience:
    """The experience called name, or a one-line CellError naming the ones that exist."""
    root = root or experiences_dir()
    known = list_experiences(root)
    if name not in known:
        raise CellError(f"unknown experience {name!r}; known: {', '.join(known) or f'none in {root}'}")
    return Experience(name, root / name)


def course_images(root: Path | None = None) -> dict[str, str]:
    """Role -> image reference (web, shell, ...), from the ConfigMap every experience applies."""
    path = (root or experiences_dir()) / COURSE_BASE / IMAGES_FILE
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CellError(f"course images not configured: {path} is missing") from None
    except yaml.YAMLError as exc:
        raise CellError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    data = (document or {}).get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CellError(f"{path}: expected a ConfigMap whose data maps roles to image references")
    return dict(data)


# --- students ------------------------------------------------------------------------------------

def discover_students(api: ApiClient, only: str | None = None) -> list[Student]:
    """Every student of the cell (sorted by name), or just `only`, which must exist."""
    from kubernetes import client

    selector = f"{STUDENT_LABEL}={only}" if only else STUDENT_LABEL
    if only is not None and not _NAME.match(only):
        raise CellError(f"{only!r} is not a valid student name (lowercase letters, digits and '-')")
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


def connect(kubeconfig: Path) -> ApiClient:
    """An admin API client that has answered once, or one line saying why the cluster is unreachable."""

    from cell.kube import api_client

    api = api_client(kubeconfig)
    api.configuration.retries = 1  # fail in seconds, not after urllib3's default back-off
    probe(api, f"the admin credentials of {kubeconfig}")
    return api


def probe(api: ApiClient, credentials: str = "the credentials") -> None:
    """One cheap request; a one-line CellError if the cluster does not answer or refuses us."""
    from kubernetes import client

    try:
        client.VersionApi(api).get_code(_request_timeout=(5, 10))
    except client.ApiException as exc:
        raise CellError(f"the cluster at {api.configuration.host} refused {credentials}: "
                        f"{exc.status} {exc.reason}") from None
    except Exception as exc:  # urllib3 wraps refusals, timeouts and TLS failures in many types
        raise CellError(f"cannot reach the cluster at {api.configuration.host}: {_root_cause(exc)}") from None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or getattr(exc, "reason", None) is not None:
        nxt = exc.__cause__ or getattr(exc, "reason", None)
        if not isinstance(nxt, BaseException) or nxt is exc:
            break
        exc = nxt
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^<[^>]+>:\s*", "", text)


# --- cluster access through kubectl (kustomize rendering, server-side apply) ----------------------

def find_kubectl(state_dir: Path | None = None) -> Path:
    """kubectl matching the cell: CELL_KUBECTL, the local cell's build, the cached build, then PATH."""
    explicit = os.environ.get("CELL_KUBECTL")
    if explicit:
        return Path(explicit)
    candidates: list[Path] = []
    try:
        from cell.localcell import LocalCell

        cell = LocalCell(state_dir)
        if cell.exists():
            candidates.append(cell.kubectl)
    except (ImportError, CellError, KeyError):
        pass
    try:
        from cell import upstream

        candidates.append(upstream.bin_dir() / "kubectl")
    except ImportError:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("kubectl")
    if not found:
        raise CellError("kubectl not found (run `cell build`, or set CELL_KUBECTL)")
    return Path(found)


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
    api: ApiClient,
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


# --- the command line: `cell experience ...` -----------------------------------------------------

experience_app = typer.Typer(help="Apply the course's experiences (labs) to students' namespaces.",
                             no_args_is_help=True)


@experience_app.command("apply")
def apply_command(
    name: Annotated[str, typer.Argument(help="Experience, e.g. exp1-orchestration.")],
    student: Annotated[str | None, typer.Option("--student", help="Only this student.")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="Admin kubeconfig of the cell (default: the local cell's).")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="CELL_STATE_DIR", help="State directory of the local cell.")] = None,
) -> None:
    """Apply cluster/experiences/NAME into every student's namespace (idempotent)."""
    from rich.console import Console

    kubeconfig = kubeconfig or admin_kubeconfig(state_dir)
    find_experience(name)  # an unknown name fails before the cluster is contacted
    api = connect(kubeconfig)
    apply_experience(name, kubeconfig=kubeconfig, kubectl=find_kubectl(state_dir), api=api,
                     student=student, console=Console(stderr=True))


@experience_app.command("list")
def list_command() -> None:
    """List the experiences of the course."""
    for name in list_experiences():
        typer.echo(name)


def admin_kubeconfig(state_dir: Path | None = None) -> Path:
    from cell.localcell import CellPaths

    return CellPaths(state_dir).kubeconfig

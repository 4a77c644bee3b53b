"""Grading: run an experience's checks against every student's namespace, and report (SPEC §6, §8).

The checks are plain pytest tests in `cluster/experiences/<name>/grading/test_*.py`:

    WEB = pytest.mark.task(1, "Deployment web", points=2)

    @WEB
    def test_web_replicas(cluster: ClusterView) -> None:
        web = cluster.require("Deployment", "web")
        replicas = web["spec"].get("replicas")
        assert replicas == 3, f"Deployment web asks for {replicas} replicas, expected 3"

One pytest session grades the whole class: every check is parametrized over the students, so
there is no process per student or per check. A task earns its points only when every check
marked with it passes, so one mistake costs exactly its task's points; the assertion message is
the reason the student reads. Checks only read the cluster (ClusterView has no write method); the
one declared exception is `self_healing`, which deletes a pod and waits for its replacement. Those
checks run last, for all students at once, so no read check sees a pod that is being replaced.

Fixtures a check may ask for: `student` and `namespace` (str), `cluster` (ClusterView of the
student's namespace), `course_images` (role -> image), `api_client` (admin ApiClient, read-only
use), `self_healing` (callable, see check_self_healing).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pytest
import typer

from cell.errors import CellError
from cell.experiences import Experience, Student, course_images, discover_students, find_experience, probe
from scheduler_ext.policy.resources import Resources

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from rich.console import Console

# Letter grades by percentage of the experience's points (a 10-point lab: 9 or 10 is an A).
GRADE_SCALE: tuple[tuple[float, str], ...] = ((90.0, "A"), (80.0, "B"), (70.0, "C"), (60.0, "D"), (0.0, "F"))
SELF_HEALING_TIMEOUT = 60.0
_REQUEST_TIMEOUT = (5, 20)  # (connect, read) seconds for every API call a check makes


def letter_grade(earned: int, possible: int) -> str:
    percent = 100.0 * earned / possible if possible else 100.0
    return next(letter for threshold, letter in GRADE_SCALE if percent >= threshold)


# --- the report model ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, order=True)
class Task:
    """One task of an experience's handout: what a group of checks is worth."""

    number: int
    title: str
    points: int


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str  # the check's function name, e.g. "test_web_deployment"
    task: int
    passed: bool
    reason: str = ""  # why it failed, written for the student; empty when passed
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskGrade:
    task: Task
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def earned(self) -> int:
        return self.task.points if self.passed else 0

    @property
    def lost(self) -> int:
        return self.task.points - self.earned

    @property
    def reasons(self) -> tuple[str, ...]:
        if not self.checks:
            return ("no check of this task ran",)
        # Two checks may fail for one cause (e.g. a missing Deployment); say it once.
        return tuple(dict.fromkeys(c.reason for c in self.checks if not c.passed))


@dataclass(frozen=True, slots=True)
class StudentGrade:
    student: str
    namespace: str
    tasks: tuple[TaskGrade, ...]

    @property
    def total(self) -> int:
        return sum(t.earned for t in self.tasks)

    @property
    def possible(self) -> int:
        return sum(t.task.points for t in self.tasks)

    @property
    def percent(self) -> float:
        return round(100.0 * self.total / self.possible, 1) if self.possible else 100.0

    @property
    def letter(self) -> str:
        return letter_grade(self.total, self.possible)

    def task(self, number: int) -> TaskGrade:
        return next(t for t in self.tasks if t.task.number == number)


@dataclass(frozen=True, slots=True)
class ClassReport:
    experience: str
    tasks: tuple[Task, ...]
    students: tuple[StudentGrade, ...]
    graded_at: str = ""
    seconds: float = 0.0

    @property
    def possible(self) -> int:
        return sum(t.points for t in self.tasks)

    @property
    def mean(self) -> float:
        return round(sum(s.total for s in self.students) / len(self.students), 2) if self.students else 0.0

    @property
    def distribution(self) -> dict[str, int]:
        counts = Counter(s.letter for s in self.students)
        return {letter: counts.get(letter, 0) for _, letter in GRADE_SCALE}

    def student(self, name: str) -> StudentGrade:
        return next(s for s in self.students if s.student == name)

    def outcome(self) -> dict[str, dict[int, tuple[int, tuple[str, ...]]]]:
        """student -> task -> (earned, reasons): what two gradings must agree on (no timings)."""
        return {s.student: {t.task.number: (t.earned, t.reasons) for t in s.tasks} for s in self.students}


def build_report(experience: str, tasks: Iterable[Task], students: Sequence[Student],
                 results: Mapping[str, Sequence[CheckResult]], *, seconds: float = 0.0,
                 graded_at: str = "") -> ClassReport:
    """Check results per student -> grades: a task earns its points when all its checks passed."""
    ordered = tuple(sorted(tasks))
    grades = []
    for student in sorted(students):
        mine = results.get(student.name, ())
        grades.append(StudentGrade(student.name, student.namespace, tuple(
            TaskGrade(task, tuple(c for c in mine if c.task == task.number)) for task in ordered)))
    return ClassReport(experience, ordered, tuple(grades), graded_at, round(seconds, 2))


# --- what checks may read ------------------------------------------------------------------------

# kind -> (API path prefix, resource, namespaced). Plain JSON keeps checks close to the YAML students write.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Pod": ("/api/v1", "pods", True),
    "Service": ("/api/v1", "services", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Event": ("/api/v1", "events", True),
    "Node": ("/api/v1", "nodes", False),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "CronJob": ("/apis/batch/v1", "cronjobs", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "Alloc": ("/apis/cell.distos.dev/v1alpha1", "allocs", True),
    "BandQuota": ("/apis/cell.distos.dev/v1alpha1", "bandquotas", True),
}


Objects = list[dict[str, Any]]  # (ClusterView.list shadows the builtin inside the class)


class GradingError(Exception):
    """The grader could not read what it needed (not the student's fault)."""


def _request(api: ApiClient, method: str, path: str, query: Sequence[tuple[str, str]] = (),
             body: Any = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    verb, url, header_params, payload, _ = api.param_serialize(
        method, path, query_params=list(query) or None, header_params=headers, body=body,
        auth_settings=["BearerToken"])
    response = api.call_api(verb, url, header_params=header_params, body=payload,
                            _request_timeout=_REQUEST_TIMEOUT)
    raw = response.read() or b""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:  # e.g. "404 page not found" for a kind the cell does not serve
        data = {"message": raw.decode(errors="replace").strip()}
    return response.status, data


def _path(kind: str, namespace: str | None, name: str | None = None) -> str:
    try:
        prefix, resource, namespaced = RESOURCES[kind]
    except KeyError:
        raise GradingError(f"the grader cannot read kind {kind!r}; known: {', '.join(RESOURCES)}") from None
    path = f"{prefix}/namespaces/{namespace}/{resource}" if namespaced else f"{prefix}/{resource}"
    return f"{path}/{name}" if name else path


class ClusterView:
    """A read-only view of one student's namespace (and the nodes): all a grading check may look at."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._api = api
        self.namespace = namespace

    def _get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any] | None:
        status, data = _request(self._api, "GET", path, query)
        if status == 404:
            return None
        if not 200 <= status < 300:
            message = (data or {}).get("message", "") if isinstance(data, dict) else ""
            raise GradingError(f"GET {path} answered {status} {message}".strip())
        return data

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as the API serves it, or None if it does not exist."""
        return self._get(_path(kind, self.namespace, name))

    def require(self, kind: str, name: str) -> dict[str, Any]:
        """The object, or a failed check telling the student it is missing."""
        obj = self.get(kind, name)
        assert obj is not None, f"{kind} {name} not found in namespace {self.namespace}"
        return obj

    def list(self, kind: str, selector: str | None = None) -> Objects:
        """Objects of kind (in the namespace, or cluster-wide for nodes), sorted by name."""
        query = [("labelSelector", selector)] if selector else []
        data = self._get(_path(kind, self.namespace), query)
        # Items of a list carry no kind/apiVersion; add them so each reads like a single GET.
        api_version = RESOURCES[kind][0].removeprefix("/api/").removeprefix("/apis/")
        items = [{"kind": kind, "apiVersion": api_version, **item} for item in (data or {}).get("items") or []]
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def pods(self, selector: str | None = None) -> Objects:
        """Pods that are not being deleted."""
        return [p for p in self.list("Pod", selector) if not p["metadata"].get("deletionTimestamp")]

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: n for n in self.list("Node")}


# --- helpers for checks --------------------------------------------------------------------------

def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod, or of the pod template of a Deployment/ReplicaSet/Job/StatefulSet."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return dict(spec)
    return dict((spec.get("template") or {}).get("spec") or {})


def template_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})


def containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec(obj).get("containers") or [])


def requests_of(container: Mapping[str, Any]) -> Resources:
    return Resources.parse(((container.get("resources") or {}).get("requests")) or {})


def is_ready(pod: Mapping[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def container_port(value: Any, pod_containers: Iterable[Mapping[str, Any]]) -> int | None:
    """A port given as a number or as the name of a container port -> its number."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        for container in pod_containers:
            for port in container.get("ports") or []:
                if port.get("name") == value:
                    return int(port["containerPort"])
    return None


def owned_by_deployment(pod: Mapping[str, Any], deployment: str) -> bool:
    """A pod of Deployment `deployment`: owned by its ReplicaSet `<deployment>-<pod-template-hash>`."""
    template_hash = (pod["metadata"].get("labels") or {}).get("pod-template-hash")
    return any(ref.get("kind") == "ReplicaSet" and ref.get("name") == f"{deployment}-{template_hash}"
               for ref in pod["metadata"].get("ownerReferences") or [])


def ready_endpoints(endpoint_slices: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Service name -> the addresses its EndpointSlices list as ready (the API defines a missing
    ready condition as ready)."""
    ready: dict[str, set[str]] = {}
    for endpoint_slice in endpoint_slices:
        service = (endpoint_slice["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if not service:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                ready.setdefault(service, set()).update(endpoint.get("addresses") or [])
    return ready


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- the one declared change: self-healing -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SelfHealing:
    passed: bool
    reason: str = ""
    deleted: str | None = None
    replacement: str | None = None
    seconds: float = 0.0


def check_self_healing(api: ApiClient, namespace: str, deployment: str, selector: str,
                       timeout: float = SELF_HEALING_TIMEOUT, poll: float = 0.5) -> SelfHealing:
    """Delete one ready pod of the Deployment; passed if a new pod of it is ready within timeout.

    Before returning it also waits (within the same timeout) until the Deployment has as many
    available replicas, and its Services as many ready endpoints, as before, so the namespace is
    left as it was found and a second grading run reads the same state.
    """
    view = ClusterView(api, namespace)
    started = time.monotonic()
    owner = view.get("Deployment", deployment)
    if owner is None:
        return SelfHealing(False, f"Deployment {deployment} not found, so self-healing could not be checked")
    pods = [p for p in view.pods(selector) if owned_by_deployment(p, deployment)]
    ready = [p for p in pods if is_ready(p)]
    if not ready:
        return SelfHealing(False, f"Deployment {deployment} has no ready pod labelled {selector} to delete, "
                                  "so self-healing could not be checked")
    available_before = int((owner.get("status") or {}).get("availableReplicas") or 0)
    victim_ip = (ready[0].get("status") or {}).get("podIP")
    endpoints_before = {service: len(ips) for service, ips in ready_endpoints(view.list("EndpointSlice")).items()
                        if victim_ip in ips}
    known = {p["metadata"]["uid"] for p in pods}
    victim = ready[0]["metadata"]
    status, data = _request(api, "DELETE", _path("Pod", namespace, victim["name"]),
                            body={"preconditions": {"uid": victim["uid"]}})
    if status not in (200, 202, 404, 409):
        message = data.get("message", "") if isinstance(data, dict) else ""
        raise GradingError(f"could not delete pod {victim['name']}: {status} {message}".strip())
    deadline = started + timeout
    replacement = None
    while replacement is None:
        fresh = [p for p in view.pods(selector) if p["metadata"]["uid"] not in known
                 and owned_by_deployment(p, deployment) and is_ready(p)]
        if fresh:
            replacement = fresh[0]["metadata"]["name"]
            break
        if time.monotonic() >= deadline:
            return SelfHealing(False, f"deleted pod {victim['name']} of Deployment {deployment}: no replacement "
                                      f"became ready within {timeout:.0f} s", victim["name"], None,
                               round(time.monotonic() - started, 1))
        time.sleep(poll)
    seconds = round(time.monotonic() - started, 1)
    while time.monotonic() < deadline:
        current = view.get("Deployment", deployment) or {}
        if int((current.get("status") or {}).get("availableReplicas") or 0) >= available_before:
            endpoints = ready_endpoints(view.list("EndpointSlice"))
            if all(len(endpoints.get(service, ())) >= count for service, count in endpoints_before.items()):
                break
        time.sleep(poll)
    return SelfHealing(True, "", victim["name"], replacement, seconds)


class _SelfHealingPool:
    """Runs a self-healing check for every student at once, the first time any student's is asked.

    Deleting a pod and waiting for its replacement takes seconds; done one student after another
    it would dominate the grading time of a class.
    """

    def __init__(self, api: ApiClient, students: Sequence[Student]) -> None:
        self._api = api
        self._students = list(students)
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str, float], dict[str, Future[SelfHealing]]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def check(self, student: Student, deployment: str, selector: str, timeout: float) -> SelfHealing:
        key = (deployment, selector, timeout)
        with self._lock:
            if key not in self._runs:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(self._students))),
                                                    thread_name_prefix="self-healing")
                self._runs[key] = {s.name: self._pool.submit(check_self_healing, self._api, s.namespace,
                                                             deployment, selector, timeout)
                                   for s in self._students}
            future = self._runs[key][student.name]
        return future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# --- the pytest plugin ---------------------------------------------------------------------------

def _reason(excinfo: pytest.ExceptionInfo[BaseException], check: str) -> str:
    """The student-facing reason of a failed check: its assertion message, else what went wrong."""
    exc = excinfo.value
    if isinstance(exc, AssertionError):
        # An assertion rewritten by an enclosing pytest (grading inside a test run) carries its
        # explanation: after the message as "\nassert ...", or alone when there is no message.
        text = str(exc).split("\nassert ", 1)[0].strip()
        return f"check {check} failed" if not text or text.startswith("assert ") else text
    if isinstance(exc, pytest.skip.Exception):
        return f"not checked: {exc.msg}"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"could not be checked ({type(exc).__name__}{': ' + detail if detail else ''})"


class GradingPlugin:
    """Parametrizes the checks over the students and collects one CheckResult per (student, check)."""

    def __init__(self, students: Sequence[Student], api: ApiClient, images: Mapping[str, str]) -> None:
        self.students = list(students)
        self.api = api
        self.images = dict(images)
        self.tasks: dict[int, Task] = {}
        self.results: dict[str, list[CheckResult]] = {s.name: [] for s in self.students}
        self.errors: list[str] = []
        self.healing = _SelfHealingPool(api, self.students)

    # hooks
    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "task(number, title, points): the handout task a check belongs to")

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "_student" in metafunc.fixturenames:
            metafunc.parametrize("_student", self.students, ids=[s.name for s in self.students], scope="session")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            lines = [line for line in str(report.longrepr).splitlines() if line.strip()]
            self.errors.append(f"{report.nodeid or 'collection'}: {lines[-1] if lines else 'failed'}")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self._register_task(item)
        if self.errors:
            raise pytest.UsageError(self.errors[0])
        # Checks that change the cluster run after every check that only reads it.
        items.sort(key=lambda item: "self_healing" in getattr(item, "fixturenames", ()))

    def _register_task(self, item: pytest.Item) -> None:
        markers = list(item.iter_markers("task"))
        if len(markers) != 1:
            self.errors.append(f"{item.nodeid}: needs exactly one @pytest.mark.task(number, title, points=N)")
            return
        callspec = getattr(item, "callspec", None)
        if callspec is None or "_student" not in callspec.params:
            self.errors.append(f"{item.nodeid}: a check must use a student fixture "
                               "(student, namespace, cluster or self_healing)")
            return
        marker = markers[0]
        try:
            task = Task(int(marker.args[0]), str(marker.args[1]), int(marker.kwargs["points"]))
        except (IndexError, KeyError, TypeError, ValueError):
            self.errors.append(f"{item.nodeid}: write the marker as @pytest.mark.task(number, title, points=N)")
            return
        known = self.tasks.setdefault(task.number, task)
        if known != task:
            self.errors.append(f"{item.nodeid}: task {task.number} is declared as {known} elsewhere, "
                               f"here as {task}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]
                                  ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "call" or (report.when == "setup" and not report.passed):
            student: Student = item.callspec.params["_student"]  # type: ignore[attr-defined]
            marker = item.get_closest_marker("task")
            assert marker is not None  # checked at collection
            check = getattr(item, "originalname", item.name)
            reason = "" if report.passed or call.excinfo is None else _reason(call.excinfo, check)
            self.results[student.name].append(
                CheckResult(check, int(marker.args[0]), report.passed, reason, round(report.duration, 3)))
        return report

    # fixtures
    @pytest.fixture(scope="session")
    def student(self, _student: Student) -> str:
        return _student.name

    @pytest.fixture(scope="session")
    def namespace(self, _student: Student) -> str:
        return _student.namespace

    @pytest.fixture(scope="session")
    def cluster(self, _student: Student) -> ClusterView:
        return ClusterView(self.api, _student.namespace)

    @pytest.fixture(scope="session")
    def api_client(self) -> ApiClient:
        return self.api

    @pytest.fixture(scope="session")
    def course_images(self) -> dict[str, str]:
        return dict(self.images)

    @pytest.fixture(scope="session")
    def self_healing(self, _student: Student) -> Callable[..., SelfHealing]:
        def run(deployment: str, selector: str, timeout: float = SELF_HEALING_TIMEOUT) -> SelfHealing:
            return self.healing.check(_student, deployment, selector, timeout)
        return run


def _forget_modules(grading_dir: Path) -> None:
    """Drop grading modules from sys.modules, so each run imports the checks as they are on disk.

    pytest's importlib mode reuses a module already imported under the same name, which would be
    a stale copy (or another experience's module of the same file name).
    """
    grading_dir = grading_dir.resolve()
    stems = {path.stem for path in grading_dir.glob("test_*.py")}  # never "conftest": the project has one
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.rsplit(".", 1)[-1] in stems or (file and Path(file).resolve().parent == grading_dir):
            del sys.modules[name]


def run_checks(experience: Experience, students: Sequence[Student], api: ApiClient,
               images: Mapping[str, str] | None = None) -> ClassReport:
    """Run the experience's checks for students in one in-process pytest session -> the class report."""
    if not experience.grading_dir.is_dir():
        raise CellError(f"experience {experience.name} has no grading checks ({experience.grading_dir} is missing)")
    plugin = GradingPlugin(students, api, course_images() if images is None else images)
    args = [
        str(experience.grading_dir),
        "-c", os.devnull, f"--rootdir={experience.path}",  # not the project's own pytest config
        "-q", "-p", "no:cacheprovider", "-p", "no:timeout", "-p", "no:randomly",
        "--assert=plain",            # the assertion message is the reason, as written
        "--import-mode=importlib",   # grading modules never shadow each other or the project's tests
        "--capture=sys",
    ]
    started = time.monotonic()
    output = io.StringIO()
    _forget_modules(experience.grading_dir)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            exit_code = pytest.main(args, plugins=[plugin])
    finally:
        plugin.healing.close()
        _forget_modules(experience.grading_dir)
    seconds = time.monotonic() - started
    if plugin.errors:
        raise CellError(f"grading checks of {experience.name} are broken: {plugin.errors[0]}")
    if exit_code == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise CellError(f"experience {experience.name} has no grading checks in {experience.grading_dir}")
    if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        lines = [line for line in output.getvalue().splitlines() if line.strip()]
        raise CellError(f"grading {experience.name} stopped (pytest exit {int(exit_code)}): "
                        f"{lines[-1] if lines else 'no output'}")
    return build_report(experience.name, plugin.tasks.values(), students, plugin.results, seconds=seconds,
                        graded_at=datetime.now(UTC).replace(microsecond=0).isoformat())


def grade(name: str, *, api: ApiClient, student: str | None = None) -> ClassReport:
    """Grade experience `name` for every student of the cell (or one)."""
    experience = find_experience(name)
    students = discover_students(api, student)
    if not students:
        raise CellError("no students in the cell yet (add them with `cell students add NAME...`)")
    report = run_checks(experience, students, api)
    if any(reason.startswith("could not be checked") for s in report.students for t in s.tasks
           for reason in t.reasons):
        probe(api)  # a cluster lost half-way is one clear error, not a class of failed checks
    return report


# --- reports -------------------------------------------------------------------------------------

def to_dict(report: ClassReport) -> dict[str, Any]:
    return {
        "experience": report.experience,
        "graded_at": report.graded_at,
        "seconds": report.seconds,
        "possible": report.possible,
        "tasks": [{"number": t.number, "title": t.title, "points": t.points} for t in report.tasks],
        "summary": {"students": len(report.students), "mean": report.mean, "grades": report.distribution},
        "students": [{
            "student": s.student, "namespace": s.namespace, "total": s.total, "possible": s.possible,
            "percent": s.percent, "grade": s.letter,
            "tasks": [{
                "number": t.task.number, "title": t.task.title, "points": t.task.points, "earned": t.earned,
                "reasons": list(t.reasons),
                "checks": [{"check": c.check, "passed": c.passed, "reason": c.reason, "seconds": c.seconds}
                           for c in t.checks],
            } for t in s.tasks],
        } for s in report.students],
    }


def to_json(report: ClassReport) -> str:
    return json.dumps(to_dict(report), indent=2)


def summary_csv(report: ClassReport) -> str:
    """The class summary: one row per student, points per task, total, percent and letter grade."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "namespace", *(f"task{t.number}" for t in report.tasks), "total", "possible",
                     "percent", "grade"])
    for s in report.students:
        writer.writerow([s.student, s.namespace, *(t.earned for t in s.tasks), s.total, s.possible,
                         f"{s.percent:.1f}", s.letter])
    return buffer.getvalue()


def to_junit(report: ClassReport) -> str:
    """JUnit XML: a testsuite per student, a testcase per task, a failure carrying the reasons."""
    failed = sum(1 for s in report.students for t in s.tasks if not t.passed)
    root = ET.Element("testsuites", name=report.experience, tests=str(len(report.tasks) * len(report.students)),
                      failures=str(failed), time=f"{report.seconds:.2f}")
    for s in report.students:
        suite = ET.SubElement(root, "testsuite", name=s.student, tests=str(len(s.tasks)),
                              failures=str(sum(1 for t in s.tasks if not t.passed)), errors="0",
                              timestamp=report.graded_at,
                              time=f"{sum(c.seconds for t in s.tasks for c in t.checks):.2f}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("namespace", s.namespace), ("total", s.total), ("possible", s.possible),
                           ("grade", s.letter)):
            ET.SubElement(props, "property", name=key, value=str(value))
        for t in s.tasks:
            case = ET.SubElement(suite, "testcase", classname=f"{report.experience}.{s.student}",
                                 name=f"task {t.task.number}: {t.task.title} ({t.earned}/{t.task.points})",
                                 time=f"{sum(c.seconds for c in t.checks):.2f}")
            if not t.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(t.reasons),
                                        type=f"lost {t.lost} point{'s' if t.lost != 1 else ''}")
                failure.text = "\n".join(t.reasons)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


_HTML_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{border:1px solid #ccc;padding:.35rem .6rem;
text-align:left;vertical-align:top}th{background:#f3f3f3}.ok{color:#176f2c}.lost{color:#a4161a}
.grade{font-weight:bold;font-size:1.1em}
"""

_CLASS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ r.experience }}: class report</title>
<style>{{ style }}</style></head><body>
<h1>{{ r.experience }}: class report</h1>
<p>{{ r.students|length }} students, mean {{ r.mean }} of {{ r.possible }} points; graded {{ r.graded_at }}
in {{ r.seconds }} s. Grades:
{% for letter, n in r.distribution.items() %}{{ letter }} {{ n }}{{ ", " if not loop.last }}{% endfor %}.</p>
<table><tr><th>Student</th>
{% for t in r.tasks %}<th title="{{ t.title }}">Task {{ t.number }} ({{ t.points }})</th>{% endfor %}
<th>Total</th><th>Grade</th></tr>
{% for s in r.students %}<tr><td><a href="students/{{ s.student }}.html">{{ s.student }}</a></td>
{% for t in s.tasks %}<td class="{{ 'ok' if t.passed else 'lost' }}">{{ t.earned }}</td>{% endfor %}
<td>{{ s.total }}/{{ s.possible }}</td><td class="grade">{{ s.letter }}</td></tr>
{% endfor %}</table></body></html>
"""

_STUDENT_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ r.experience }}: {{ s.student }}</title>
<style>{{ style }}</style></head><body>
<h1>{{ r.experience }}: {{ s.student }}</h1>
<p class="grade">{{ s.total }} of {{ s.possible }} points ({{ s.percent }} %): grade {{ s.letter }}</p>
<table><tr><th>Task</th><th>Points</th><th>Why points were lost</th></tr>
{% for t in s.tasks %}<tr><td>{{ t.task.number }}. {{ t.task.title }}</td>
<td class="{{ 'ok' if t.passed else 'lost' }}">{{ t.earned }}/{{ t.task.points }}</td>
<td>{% if t.passed %}all checks passed{% else %}<ul>
{% for reason in t.reasons %}<li>{{ reason }}</li>{% endfor %}</ul>{% endif %}</td></tr>
{% endfor %}</table><p>Graded {{ r.graded_at }}. The handout lists what each check looks for.</p></body></html>
"""


def to_html(report: ClassReport) -> dict[str, str]:
    """Relative path -> page: the class index and one page per student, to hand back."""
    from jinja2 import Environment

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    pages = {"index.html": env.from_string(_CLASS_HTML).render(r=report, style=_HTML_STYLE)}
    student_page = env.from_string(_STUDENT_HTML)
    for s in report.students:
        pages[f"students/{s.student}.html"] = student_page.render(r=report, s=s, style=_HTML_STYLE)
    return pages


def print_table(report: ClassReport, console: Console) -> None:
    from rich.table import Table

    legend = "; ".join(f"{t.number}: {t.title} ({t.points})" for t in report.tasks)
    table = Table(title=f"{report.experience}: {len(report.students)} student(s)", title_justify="left",
                  caption=f"tasks: {legend}", caption_justify="left")
    table.add_column("student")
    for t in report.tasks:
        table.add_column(f"task {t.number}", justify="right")
    table.add_column("total", justify="right")
    table.add_column("grade", justify="center")
    for s in report.students:
        cells = [f"[green]{t.earned}[/]/{t.task.points}" if t.passed else f"[red]{t.earned}[/]/{t.task.points}"
                 for t in s.tasks]
        table.add_row(s.student, *cells, f"{s.total}/{s.possible}", s.letter)
    console.print(table)
    for s in report.students:
        lost = [graded for graded in s.tasks if not graded.passed]
        if not lost:
            continue
        console.print(f"[bold]{s.student}[/] lost {s.possible - s.total} point(s):", highlight=False)
        for graded in lost:
            # A task's points are lost once, whatever number of its checks failed: one line per task.
            console.print(f"  task {graded.task.number} (-{graded.lost}): {'; '.join(graded.reasons)}",
                          highlight=False, markup=False, soft_wrap=True)
    grades = ", ".join(f"{letter} {n}" for letter, n in report.distribution.items())
    console.print(f"mean {report.mean}/{report.possible}; grades: {grades}; graded in {report.seconds} s",
                  highlight=False)


def write_reports(report: ClassReport, output: Path, fmt: ReportFormat) -> list[Path]:
    """Write the class summary CSV, plus the report in fmt when it is a file format; returns the paths."""
    output.mkdir(parents=True, exist_ok=True)
    written = [output / "summary.csv"]
    written[0].write_text(summary_csv(report))
    if fmt is ReportFormat.json:
        written.append(output / "report.json")
        written[-1].write_text(to_json(report) + "\n")
    elif fmt is ReportFormat.junit:
        written.append(output / "junit.xml")
        written[-1].write_text(to_junit(report))
    elif fmt is ReportFormat.html:
        for relative, page in to_html(report).items():
            path = output / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(page)
            written.append(path)
    return written


# --- the command line: `cell grade` --------------------------------------------------------------

class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    junit = "junit"
    html = "html"


def grade_command(
    name: Annotated[str, typer.Argument(help="Experience to grade, e.g. exp1-orchestration.")],
    student: Annotated[str | None, typer.Option("--student", help="Grade only this student.")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="Report on stdout (table, json) or as files "
                                              "in --output (junit, html).")] = ReportFormat.table,
    output: Annotated[Path | None, typer.Option(
        "--output", help="Directory for the class summary CSV and report files (default ./reports/NAME).")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="Admin kubeconfig of the cell (default: the local cell's).")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", envvar="CELL_STATE_DIR", help="State directory of the local cell.")] = None,
) -> None:
    """Run an experience's grading checks: points per task, the reason for every lost point, grades."""
    from rich.console import Console

    from cell.experiences import admin_kubeconfig, connect

    find_experience(name)  # an unknown name fails before the cluster is contacted
    api = connect(kubeconfig or admin_kubeconfig(state_dir))
    report = grade(name, api=api, student=student)
    written = write_reports(report, output or Path("reports") / name, fmt)
    out, err = Console(), Console(stderr=True)
    if fmt is ReportFormat.json:
        typer.echo(to_json(report))
    else:
        print_table(report, out)
    for path in written:
        err.print(f"wrote {path}", highlight=False, soft_wrap=True)

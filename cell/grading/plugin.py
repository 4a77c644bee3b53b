"""Running an experience's checks: one in-process pytest session grades the whole class.

Every check is parametrized over the students (no process per student or per check); this plugin
collects one CheckResult per (student, check) and hands them to the report model.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from cell.catalog import Experience, course_images, find_experience
from cell.errors import CellError
from cell.experiences import Student, discover_students
from cell.grading.healing import SELF_HEALING_TIMEOUT, SelfHealing, SelfHealingPool
from cell.grading.report import CheckResult, ClassReport, Task, build_report
from cell.grading.view import ClusterView, ReadCache
from cell.kube import probe


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
        self.healing = SelfHealingPool(api, self.students)
        self.reads = ReadCache()

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
        return ClusterView(self.api, _student.namespace, self.reads)

    @pytest.fixture(scope="session")
    def api_client(self) -> ApiClient:
        return self.api

    @pytest.fixture(scope="session")
    def course_images(self) -> dict[str, str]:
        return dict(self.images)

    @pytest.fixture(scope="session")
    def self_healing(self, _student: Student) -> Callable[..., SelfHealing]:
        def run(deployment: str, selector: str, timeout: float = SELF_HEALING_TIMEOUT) -> SelfHealing:
            self.reads.stop()  # from here on pods are deleted and replaced: read checks read afresh
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


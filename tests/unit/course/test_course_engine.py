"""The grading engine (cell.grading.run_checks) on small made-up experiences: how checks become
points and reasons, what an author's mistake in a grading module gives, and the one declared
change (self-healing) running last and for all students at once. No cluster needed.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from cell.catalog import Experience, find_experience
from cell.errors import CellError
from cell.experiences import Student
from cell.grading import ClusterView, healing, plugin
from cell.grading.healing import check_self_healing
from cell.grading.plugin import run_checks
from cell.grading.report import CheckResult, ClassReport, Task, build_report
from cell.grading.view import GradingError, ReadCache
from cell.grading.view import ready_endpoints as view_ready_endpoints
from tests.reference import catalog
from tests.unit.course.fakecell import FakeBackend, FakeCell

IMAGES = {"web": "cell.local/web:1.0", "shell": "cell.local/shell:1.0"}
STUDENTS = [Student("alice", "alice"), Student("bob", "bob")]


def make_experience(root: Path, checks: str, name: str = "exp-test") -> Experience:
    grading_dir = root / name / "grading"
    grading_dir.mkdir(parents=True)
    (root / name / "kustomization.yaml").write_text("resources: []\n")
    (grading_dir / f"test_{name.replace('-', '_')}.py").write_text(textwrap.dedent(checks))
    return Experience(name, root / name)


def run(tmp_path: Path, checks: str, students: list[Student] | None = None) -> ClassReport:
    return run_checks(make_experience(tmp_path, checks), students or STUDENTS, api=None,  # type: ignore[arg-type]
                      images=IMAGES)


def test_a_task_earns_its_points_only_when_all_its_checks_pass(tmp_path: Path) -> None:
    report = run(tmp_path, """
        import pytest
        ONE = pytest.mark.task(1, "Greeting", points=3)
        TWO = pytest.mark.task(2, "Farewell", points=2)

        @ONE
        def test_hello(student):
            assert True

        @ONE
        def test_name(student):
            assert student == "alice", f"{student} is not alice"

        @TWO
        def test_bye(namespace, course_images):
            assert course_images["web"] == "cell.local/web:1.0"
    """)
    assert [t.number for t in report.tasks] == [1, 2]
    alice, bob = report.student("alice"), report.student("bob")
    assert (alice.total, alice.possible, alice.letter) == (5, 5, "A")
    assert (bob.total, bob.letter) == (2, "F")
    assert bob.task(1).reasons == ("bob is not alice",)
    assert bob.task(1).lost == 3 and bob.task(2).passed
    assert [c.check for c in bob.task(1).checks] == ["test_hello", "test_name"]


def test_reasons_the_student_reads(tmp_path: Path) -> None:
    report = run(tmp_path, """
        import pytest
        T = pytest.mark.task(1, "T", points=1)

        @T
        def test_bare(student):
            assert student == "nobody"

        @T
        def test_crash(student):
            raise ValueError("the grader tripped")

        @T
        def test_skip(student):
            pytest.skip("not today")
    """, [STUDENTS[0]])
    assert report.student("alice").task(1).reasons == (
        "check test_bare failed",
        "could not be checked (ValueError: the grader tripped)",
        "not checked: not today",
    )


def test_identical_reasons_are_given_once(tmp_path: Path) -> None:
    report = run(tmp_path, """
        import pytest
        T = pytest.mark.task(1, "T", points=1)

        @T
        def test_a(student):
            assert False, "Deployment web not found"

        @T
        def test_b(student):
            assert False, "Deployment web not found"
    """, [STUDENTS[0]])
    assert report.student("alice").task(1).reasons == ("Deployment web not found",)


@pytest.mark.parametrize(("checks", "message"), [
    ("""
        def test_unmarked(student):
            pass
     """, "needs exactly one @pytest.mark.task"),
    ("""
        import pytest
        @pytest.mark.task(1, "A", points=2)
        def test_a(student):
            pass
        @pytest.mark.task(1, "A", points=3)
        def test_b(student):
            pass
     """, "task 1 is declared as"),
    ("""
        import pytest
        @pytest.mark.task(1, "A")
        def test_a(student):
            pass
     """, "write the marker as"),
    ("""
        import pytest
        @pytest.mark.task(1, "A", points=1)
        def test_a():
            pass
     """, "must use a student fixture"),
    ("def test_broken(:\n", "are broken"),
    ("X = 1\n", "has no grading checks"),
])
def test_a_broken_grading_module_is_one_clear_error(tmp_path: Path, checks: str, message: str) -> None:
    with pytest.raises(CellError, match=message):
        run(tmp_path, checks)


def test_missing_grading_directory(tmp_path: Path) -> None:
    (tmp_path / "exp-none").mkdir()
    with pytest.raises(CellError, match="has no grading checks"):
        run_checks(Experience("exp-none", tmp_path / "exp-none"), STUDENTS, api=None, images=IMAGES)  # type: ignore[arg-type]


def test_grading_in_the_same_process_twice_reloads_nothing_stale(tmp_path: Path) -> None:
    checks = """
        import pytest
        @pytest.mark.task(1, "A", points=1)
        def test_a(student):
            assert student == "alice", "not alice"
    """
    first = run(tmp_path / "one", checks)
    second = run(tmp_path / "two", checks)
    assert first.outcome() == second.outcome()


# --- self-healing ---------------------------------------------------------------------------------

def _exp1_class(*students: str) -> FakeCell:
    cell = FakeCell()
    for student in students:
        cell.add_student(student)
        catalog.apply_solution("exp1-orchestration", FakeBackend(cell, student))
    return cell


def test_self_healing_passes_when_a_replacement_becomes_ready() -> None:
    cell = _exp1_class("ann")
    result = check_self_healing(cell, "ann", "web", "app=web", timeout=5)  # type: ignore[arg-type]
    assert result.passed and result.deleted and result.replacement
    assert result.deleted != result.replacement
    assert cell.deleted_pods == [result.deleted]


def test_self_healing_waits_until_the_services_endpoints_are_back(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = _exp1_class("ann")
    reads: list[int] = []
    ready_endpoints = view_ready_endpoints

    def lagging(endpoint_slices: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
        """The EndpointSlice controller two reads behind the Deployment's availability."""
        endpoints = ready_endpoints(endpoint_slices)
        if 1 <= len(reads) <= 2:
            endpoints["web"] = set(sorted(endpoints["web"])[1:])
        reads.append(len(endpoints.get("web", ())))
        return endpoints

    monkeypatch.setattr(healing, "ready_endpoints", lagging)
    result = check_self_healing(cell, "ann", "web", "app=web", timeout=5, poll=0.01)  # type: ignore[arg-type]
    assert result.passed
    assert reads == [3, 2, 2, 3]  # it returned once Service web had its 3 ready endpoints again


def test_self_healing_fails_with_a_reason_when_nothing_replaces_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = _exp1_class("ann")
    monkeypatch.setattr(cell, "reconcile", lambda: None)  # a Deployment controller that is asleep
    result = check_self_healing(cell, "ann", "web", "app=web", timeout=1, poll=0.1)  # type: ignore[arg-type]
    assert not result.passed
    assert result.reason == (f"deleted pod {result.deleted} of Deployment web: no replacement became ready "
                             "within 1 s")


def test_self_healing_without_a_deployment_deletes_nothing() -> None:
    cell = FakeCell()
    cell.add_student("ann")
    result = check_self_healing(cell, "ann", "web", "app=web", timeout=1)  # type: ignore[arg-type]
    assert not result.passed
    assert result.reason == "Deployment web not found, so self-healing could not be checked"
    assert cell.deleted_pods == []


def test_self_healing_runs_after_every_read_check() -> None:
    cell = _exp1_class("ann", "ben")
    run_checks(find_experience("exp1-orchestration"), [Student("ann", "ann"), Student("ben", "ben")],
               cell)  # type: ignore[arg-type]
    first_delete = next(i for i, r in enumerate(cell.requests) if r.startswith("DELETE"))
    # exp1's endpoints check reads Service web's slices; the self-healing check's own reads (what it
    # must restore) list them all, unfiltered.
    last_check_read = max(i for i, r in enumerate(cell.requests) if "endpointslices?labelSelector" in r)
    assert last_check_read < first_delete
    assert len(cell.deleted_pods) == 2


def test_self_healing_of_a_class_runs_concurrently(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[str] = set()

    def slow_check(api: object, namespace: str, deployment: str, selector: str,
                   timeout: float, poll: float = 0.5) -> healing.SelfHealing:
        threads.add(threading.current_thread().name)
        time.sleep(0.5)
        return healing.SelfHealing(True)

    monkeypatch.setattr(healing, "check_self_healing", slow_check)
    students = [Student(f"s{i}", f"s{i}") for i in range(6)]
    pool = healing.SelfHealingPool(api=None, students=students)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        assert all(pool.check(s, "web", "app=web", 60).passed for s in students)
    finally:
        pool.close()
    assert time.monotonic() - started < 2.0  # 6 x 0.5 s one after another would take 3 s
    assert len(threads) == 6


# --- the read-only view ---------------------------------------------------------------------------

def test_cluster_view_reads_and_names_what_is_missing() -> None:
    cell = _exp1_class("ann")
    view = ClusterView(cell, "ann")  # type: ignore[arg-type]
    assert view.get("Deployment", "web")["spec"]["replicas"] == 3  # type: ignore[index]
    assert view.get("Deployment", "nope") is None
    pods = view.list("Pod", "app=web")
    assert len(pods) == 3 and all(p["kind"] == "Pod" and p["apiVersion"] == "v1" for p in pods)
    assert set(view.nodes()) == {f"node-{i}" for i in range(1, 13)}
    with pytest.raises(AssertionError, match=r"^Job nope not found in namespace ann$"):
        view.require("Job", "nope")
    with pytest.raises(GradingError, match="cannot read kind 'Gadget'"):
        view.get("Gadget", "x")


def test_read_checks_share_what_they_read_until_a_check_changes_the_cluster() -> None:
    cell = _exp1_class("ann")
    cell.requests.clear()  # those of handing in the reference
    cache = ReadCache()
    first, second = ClusterView(cell, "ann", cache), ClusterView(cell, "ann", cache)  # type: ignore[arg-type]
    web = first.get("Deployment", "web")
    assert web is not None
    web["spec"]["replicas"] = 99  # what a check does with its copy stays its own
    assert second.get("Deployment", "web")["spec"]["replicas"] == 3  # type: ignore[index]
    assert second.get("Deployment", "nope") is None and first.get("Deployment", "nope") is None
    assert len([r for r in cell.requests if "/deployments/" in r]) == 2  # web and nope, once each
    cache.stop()
    first.get("Deployment", "web")
    assert len([r for r in cell.requests if "/deployments/web" in r]) == 2  # read afresh after stop


def test_a_cluster_lost_during_grading_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    unreadable = build_report("exp1-orchestration", [Task(1, "T", 2)], STUDENTS, {
        s.name: [CheckResult("test_t", 1, False, "could not be checked (MaxRetryError: refused)")]
        for s in STUDENTS})
    monkeypatch.setattr(plugin, "discover_students", lambda api, only=None: STUDENTS)
    monkeypatch.setattr(plugin, "run_checks", lambda experience, students, api: unreadable)

    def unreachable(api: object) -> None:
        raise CellError("cannot reach the cluster at https://127.0.0.1:6443: [Errno 111] Connection refused")

    monkeypatch.setattr(plugin, "probe", unreachable)
    with pytest.raises(CellError, match=r"^cannot reach the cluster"):
        plugin.grade("exp1-orchestration", api=None)  # type: ignore[arg-type]
    monkeypatch.setattr(plugin, "probe", lambda api: None)  # reachable: the reasons stand
    assert plugin.grade("exp1-orchestration", api=None) is unreadable  # type: ignore[arg-type]

"""The real grading checks of every experience against reference solutions and typical mistakes,
on an in-memory cell (fakecell.FakeCell). The same claims run on a real local cell in
tests/integration/test_course.py; here they need no cluster and run in seconds.
"""

from __future__ import annotations

import functools

import pytest

from cell.catalog import find_experience
from cell.experiences import Student
from cell.grading.plugin import run_checks
from cell.grading.report import ClassReport
from tests.reference import catalog
from tests.unit.course.fakecell import FakeBackend, FakeCell


def _grade(cell: FakeCell, experience: str, students: list[str]) -> ClassReport:
    return run_checks(find_experience(experience), [Student(s, s) for s in students], cell)  # type: ignore[arg-type]


def _class(experience: str) -> tuple[FakeCell, list[str]]:
    """One cell: a student with the reference, one per typical mistake, one who submitted nothing."""
    cell = FakeCell()
    students = ["reference", "nothing", *(f"mistake-{m.name}" for m in catalog.mistakes(experience))]
    for student in students:
        cell.add_student(student)
        cell.apply_experience(student, experience)
        if student == "nothing":
            continue
        catalog.apply_solution(experience, FakeBackend(cell, student),
                               mistake_name=student.removeprefix("mistake-") if student != "reference" else None)
    return cell, students


@functools.cache
def graded(experience: str) -> tuple[FakeCell, ClassReport]:
    """Each experience's class is set up and graded once per test session."""
    cell, students = _class(experience)
    return cell, _grade(cell, experience, students)


@pytest.mark.parametrize("experience", catalog.EXPERIENCES)
def test_reference_scores_full_marks(experience: str) -> None:
    reference = graded(experience)[1].student("reference")
    lost = {t.task.number: t.reasons for t in reference.tasks if not t.passed}
    assert lost == {}
    assert (reference.total, reference.possible, reference.letter) == (10, 10, "A")


@pytest.mark.parametrize("mistake", catalog.MISTAKES, ids=lambda m: f"{m.experience}:{m.name}")
def test_each_mistake_costs_exactly_its_task(mistake: catalog.Mistake) -> None:
    grade = graded(mistake.experience)[1].student(f"mistake-{mistake.name}")
    lost = {t.task.number for t in grade.tasks if not t.passed}
    assert lost == {mistake.task}, {t.task.number: t.reasons for t in grade.tasks if not t.passed}
    task = grade.task(mistake.task)
    assert grade.total == grade.possible - task.task.points
    assert task.reasons and all(task.reasons), "every lost point has a reason"


@pytest.mark.parametrize("experience", catalog.EXPERIENCES)
def test_nothing_submitted_scores_zero_with_reasons(experience: str) -> None:
    nothing = graded(experience)[1].student("nothing")
    assert (nothing.total, nothing.letter) == (0, "F")
    for task in nothing.tasks:
        assert task.reasons, f"task {task.task.number} lost without a reason"
        assert not any(r.startswith("could not be checked") for r in task.reasons), task.reasons


@pytest.mark.parametrize("experience", catalog.EXPERIENCES)
def test_grading_twice_gives_the_same_result(experience: str) -> None:
    cell, report = graded(experience)
    again = _grade(cell, experience, [s.student for s in report.students])
    assert again.outcome() == report.outcome()


def test_every_experience_has_mistakes_for_every_task_type() -> None:
    for experience in catalog.EXPERIENCES:
        tasks = {t.number for t in graded(experience)[1].tasks}
        assert {m.task for m in catalog.mistakes(experience)} <= tasks
        assert len(catalog.mistakes(experience)) >= 4


def test_exp1_self_healing_deletes_one_web_pod_per_student() -> None:
    cell = FakeCell()
    for student in ("ann", "ben"):
        cell.add_student(student)
        catalog.apply_solution("exp1-orchestration", FakeBackend(cell, student))
    report = _grade(cell, "exp1-orchestration", ["ann", "ben"])
    assert [s.total for s in report.students] == [10, 10]
    assert sorted(name.rsplit("-", 2)[0] for name in cell.deleted_pods) == ["web", "web"]
    # Only the declared check changed anything: every other object is as the students left it.
    for student in ("ann", "ben"):
        assert len([k for k in cell.objects if k[0] == "Pod" and k[1] == student]) == 3


def test_reasons_are_written_for_the_student() -> None:
    cell = FakeCell()
    cell.add_student("cy")
    catalog.apply_solution("exp1-orchestration", FakeBackend(cell, "cy"), mistake_name="wrong-replica-count")
    report = _grade(cell, "exp1-orchestration", ["cy"])
    assert report.student("cy").task(1).reasons == (
        "Deployment web: it asks for 4 replicas, expected 3",)


def test_exp2_api_count_follows_the_students_quota() -> None:
    """A student with a bigger production quota must run more api replicas, and is graded on that."""
    cell = FakeCell()
    cell.add_student("big", {"production": {"cpu": "4", "memory": "4Gi"}, "batch": {"cpu": "4", "memory": "4Gi"}})
    applied = catalog.apply_solution("exp2-borg", FakeBackend(cell, "big"))
    # 4 CPU - alloc cache's 2 x 500m = 3 CPU left: 6 pods of 500m.
    assert catalog.find(applied, "Deployment", "api")["spec"]["replicas"] == 6
    assert _grade(cell, "exp2-borg", ["big"]).student("big").total == 10

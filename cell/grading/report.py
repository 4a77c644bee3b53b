"""The grade report's model: tasks, check results, and the grades they add up to.

A task earns its points only when every check marked with it passes, so one mistake costs exactly
its task's points; the reasons are the failed checks' messages, written for the student.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cell.experiences import Student

# Letter grades by percentage of the experience's points (a 10-point lab: 9 or 10 is an A).
GRADE_SCALE: tuple[tuple[float, str], ...] = ((90.0, "A"), (80.0, "B"), (70.0, "C"), (60.0, "D"), (0.0, "F"))


def letter_grade(earned: int, possible: int) -> str:
    percent = 100.0 * earned / possible if possible else 100.0
    return next(letter for threshold, letter in GRADE_SCALE if percent >= threshold)



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


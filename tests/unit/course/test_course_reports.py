"""Grades and reports: letter grades, the class summary CSV, JSON, JUnit XML, HTML and the table."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from cell.experiences import Student
from cell.grading.render import ReportFormat, print_table, summary_csv, to_html, to_json, to_junit, write_reports
from cell.grading.report import CheckResult, ClassReport, Task, build_report, letter_grade

TASKS = (Task(1, "Deployment web", 6), Task(2, "Service <web>", 4))


def sample_report() -> ClassReport:
    results = {
        "ada": [CheckResult("test_web", 1, True, seconds=0.2), CheckResult("test_svc", 2, True, seconds=0.1)],
        "bo": [CheckResult("test_web", 1, True),
               CheckResult("test_svc", 2, False, "Service web has <script>x</script>")],
        "cy": [CheckResult("test_web", 1, False, "Deployment web not found in namespace cy"),
               CheckResult("test_heal", 1, False, "Deployment web not found, so self-healing could not be checked"),
               CheckResult("test_svc", 2, False, "Service web not found in namespace cy")],
    }
    students = [Student("cy", "cy"), Student("ada", "ada"), Student("bo", "bo")]
    return build_report("exp-demo", reversed(TASKS), students, results, seconds=1.234,
                        graded_at="2025-01-01T00:00:00+00:00")


@pytest.mark.parametrize(("earned", "possible", "letter"), [
    (10, 10, "A"), (9, 10, "A"), (8, 10, "B"), (7, 10, "C"), (6, 10, "D"), (5, 10, "F"), (0, 10, "F"),
    (17, 20, "B"), (179, 200, "B"), (180, 200, "A"),
])
def test_letter_grades(earned: int, possible: int, letter: str) -> None:
    assert letter_grade(earned, possible) == letter


def test_report_model_orders_and_totals() -> None:
    report = sample_report()
    assert [t.number for t in report.tasks] == [1, 2]
    assert [s.student for s in report.students] == ["ada", "bo", "cy"]
    assert [(s.total, s.percent, s.letter) for s in report.students] == [(10, 100.0, "A"), (6, 60.0, "D"),
                                                                         (0, 0.0, "F")]
    assert report.mean == pytest.approx(5.33)
    assert report.distribution == {"A": 1, "B": 0, "C": 0, "D": 1, "F": 1}
    assert report.student("cy").task(1).reasons == ("Deployment web not found in namespace cy",
                                                    "Deployment web not found, so self-healing could not be checked")


def test_a_task_without_checks_is_lost_with_a_reason() -> None:
    report = build_report("x", TASKS, [Student("dee", "dee")], {"dee": [CheckResult("test_web", 1, True)]})
    dee = report.student("dee")
    assert dee.total == 6 and dee.task(2).reasons == ("no check of this task ran",)


def test_summary_csv() -> None:
    rows = list(csv.DictReader(io.StringIO(summary_csv(sample_report()))))
    assert list(rows[0]) == ["student", "namespace", "task1", "task2", "total", "possible", "percent", "grade"]
    assert [(r["student"], r["task1"], r["task2"], r["total"], r["grade"]) for r in rows] == [
        ("ada", "6", "4", "10", "A"), ("bo", "6", "0", "6", "D"), ("cy", "0", "0", "0", "F")]


def test_json_report() -> None:
    document = json.loads(to_json(sample_report()))
    assert document["experience"] == "exp-demo" and document["possible"] == 10
    assert document["summary"] == {"students": 3, "mean": 5.33, "grades": {"A": 1, "B": 0, "C": 0, "D": 1, "F": 1}}
    bo = document["students"][1]
    assert (bo["student"], bo["total"], bo["grade"]) == ("bo", 6, "D")
    assert bo["tasks"][1]["reasons"] == ["Service web has <script>x</script>"]
    assert bo["tasks"][1]["checks"][0] == {"check": "test_svc", "passed": False,
                                           "reason": "Service web has <script>x</script>", "seconds": 0.0}


def test_junit_report() -> None:
    root = ET.fromstring(to_junit(sample_report()))
    assert root.tag == "testsuites" and root.get("tests") == "6" and root.get("failures") == "3"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"ada", "bo", "cy"}
    assert suites["cy"].get("failures") == "2"
    failure = suites["cy"].find("testcase/failure")
    assert failure is not None and failure.get("type") == "lost 6 points"
    assert failure.get("message") == ("Deployment web not found in namespace cy; "
                                      "Deployment web not found, so self-healing could not be checked")
    grade = {p.get("name"): p.get("value") for p in suites["bo"].iter("property")}
    assert grade["grade"] == "D" and grade["total"] == "6"


def test_html_report_escapes_what_students_control() -> None:
    pages = to_html(sample_report())
    assert set(pages) == {"index.html", "students/ada.html", "students/bo.html", "students/cy.html"}
    assert "<script>x</script>" not in pages["students/bo.html"]
    assert "&lt;script&gt;x&lt;/script&gt;" in pages["students/bo.html"]
    assert "Service &lt;web&gt;" in pages["index.html"]
    assert 'href="students/cy.html"' in pages["index.html"]
    assert "6 of 10 points (60.0 %): grade D" in pages["students/bo.html"]


def test_table_lists_every_reason() -> None:
    console = Console(record=True, width=160)
    print_table(sample_report(), console)
    text = console.export_text()
    assert "cy lost 10 point(s):" in text
    assert "task 2 (-4): Service web not found in namespace cy" in text
    assert "ada lost" not in text
    assert "mean 5.33/10; grades: A 1, B 0, C 0, D 1, F 1" in text


@pytest.mark.parametrize(("fmt", "files"), [
    (ReportFormat.table, {"summary.csv"}),
    (ReportFormat.json, {"summary.csv", "report.json"}),
    (ReportFormat.junit, {"summary.csv", "junit.xml"}),
    (ReportFormat.html, {"summary.csv", "index.html", "students/ada.html", "students/bo.html", "students/cy.html"}),
])
def test_write_reports(tmp_path: Path, fmt: ReportFormat, files: set[str]) -> None:
    written = write_reports(sample_report(), tmp_path / "out", fmt)
    assert {p.relative_to(tmp_path / "out").as_posix() for p in written} == files
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)


def test_outcome_ignores_timings() -> None:
    first = sample_report()
    second = build_report("exp-demo", TASKS, [Student(s.student, s.namespace) for s in first.students],
                          {s.student: [CheckResult(c.check, c.task, c.passed, c.reason, 9.9)
                                       for t in s.tasks for c in t.checks] for s in first.students}, seconds=99)
    assert first.outcome() == second.outcome()

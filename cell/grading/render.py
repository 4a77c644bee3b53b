"""The grade report rendered: JSON, the class summary CSV, JUnit XML (junit-xml), HTML pages to hand
back (jinja2), and the console table.
"""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from jinja2 import Environment
from junit_xml import TestCase, TestSuite, to_xml_report_string  # type: ignore[import-untyped]
from rich.console import Console
from rich.table import Table

from cell.grading.report import ClassReport


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    junit = "junit"
    html = "html"


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
    suites = []
    for s in report.students:
        cases = []
        for t in s.tasks:
            case = TestCase(f"task {t.task.number}: {t.task.title} ({t.earned}/{t.task.points})",
                            classname=f"{report.experience}.{s.student}",
                            elapsed_sec=round(sum(c.seconds for c in t.checks), 3))
            if not t.passed:
                case.add_failure_info(message="; ".join(t.reasons), output="\n".join(t.reasons),
                                      failure_type=f"lost {t.lost} point{'s' if t.lost != 1 else ''}")
            cases.append(case)
        suites.append(TestSuite(s.student, cases, timestamp=report.graded_at or None, properties={
            "namespace": s.namespace, "total": str(s.total), "possible": str(s.possible), "grade": s.letter}))
    return str(to_xml_report_string(suites, prettyprint=True, encoding="utf-8"))


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
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    pages = {"index.html": env.from_string(_CLASS_HTML).render(r=report, style=_HTML_STYLE)}
    student_page = env.from_string(_STUDENT_HTML)
    for s in report.students:
        pages[f"students/{s.student}.html"] = student_page.render(r=report, s=s, style=_HTML_STYLE)
    return pages


def print_table(report: ClassReport, console: Console) -> None:
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


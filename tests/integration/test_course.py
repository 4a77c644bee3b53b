"""The course on a real local cell: experiences applied per student, reference solutions graded
full marks, each typical mistake costing exactly its task, nothing submitted scoring 0 with reasons,
grading repeatable and changing nothing but the declared self-healing check.

Each experience gets its own students (prefixed c1 ... c5), onboarded with `cell students add` and
given the experience with `--student`, so the shared cell's other students are not touched.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cell.catalog import find_experience
from cell.experiences import Student, apply_experience
from cell.grading import ClusterView
from cell.grading.plugin import run_checks
from cell.grading.report import ClassReport
from cell.kube import find_kubectl
from cell.localcell.supervisor import LocalCell
from tests.integration.omega import omega_schedulers, remove_ledgers
from tests.reference import catalog
from tests.reference.apply import apply_reference

pytestmark = pytest.mark.cluster

PREFIX = {"exp1-orchestration": "c1", "exp2-borg": "c2", "exp3-failures": "c3", "exp4-omega": "c4",
          "exp5-borg-evaluation": "c5"}


def cell_cli(local_cell: LocalCell, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cell.cli", *args, "--state-dir", str(local_cell.state_dir)],
                          capture_output=True, text=True, timeout=300, check=False)


def students_of(experience: str) -> dict[str, str | None]:
    """student -> what they hand in: None (reference), "" (nothing), or a mistake's name."""
    prefix = PREFIX[experience]
    students: dict[str, str | None] = {f"{prefix}-reference": None, f"{prefix}-nothing": ""}
    for index, mistake in enumerate(catalog.mistakes(experience)):
        students[f"{prefix}-m{index}"] = mistake.name
    return students


@functools.cache
def _setup(experience: str, state_dir: Path) -> tuple[list[Student], ClassReport]:
    cell = LocalCell(state_dir)
    api = cell.api()
    students = students_of(experience)
    added = cell_cli(cell, "students", "add", *students)
    assert added.returncode == 0, added.stderr
    kubectl = find_kubectl(state_dir)

    def hand_in(item: tuple[str, str | None]) -> None:
        student, work = item
        if work == "":
            apply_experience(experience, kubeconfig=cell.kubeconfig, kubectl=kubectl, api=api, student=student)
        else:
            apply_reference(experience, student, admin_kubeconfig=cell.kubeconfig, kubectl=kubectl, api=api,
                            state_dir=state_dir, mistake=work)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(hand_in, students.items()))
    roster = [Student(name, name) for name in students]
    return roster, run_checks(find_experience(experience), roster, api)


@pytest.fixture(scope="module", autouse=True)
def _omega_schedulers(local_cell: LocalCell, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """exp4-omega's two schedulers, run as the handout has the instructor run them (idle otherwise); the
    ledgers that only this module's students used leave with them."""
    with omega_schedulers(local_cell.kubeconfig, ["omega-a", "omega-b"], tmp_path_factory.mktemp("omega")):
        yield
    remove_ledgers(local_cell.api(), lambda namespace: namespace.startswith(f"{PREFIX['exp4-omega']}-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_course_students(local_cell: LocalCell) -> Iterator[None]:
    """The shared cell's prod quota is finite (Q6): the students made here leave with the module."""
    yield
    made = [student for experience in catalog.EXPERIENCES for student in students_of(experience)]
    _setup.cache_clear()
    existing = {ns.metadata.name for ns in client.CoreV1Api(local_cell.api()).list_namespace().items}
    leftover = [name for name in made if name in existing]
    if leftover:
        removed = cell_cli(local_cell, "students", "remove", *leftover)
        assert removed.returncode == 0, removed.stderr


@pytest.fixture(params=catalog.EXPERIENCES)
def experience(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def graded(experience: str, local_cell: LocalCell) -> tuple[list[Student], ClassReport]:
    return _setup(experience, local_cell.state_dir)


def test_reference_solution_scores_full_marks(experience: str, graded: tuple[list[Student], ClassReport]) -> None:
    reference = graded[1].student(f"{PREFIX[experience]}-reference")
    assert {t.task.number: t.reasons for t in reference.tasks if not t.passed} == {}
    assert (reference.total, reference.letter) == (10, "A")


def test_each_typical_mistake_costs_exactly_its_task(experience: str,
                                                     graded: tuple[list[Student], ClassReport]) -> None:
    report = graded[1]
    for student, work in students_of(experience).items():
        if not work:
            continue
        mistake = catalog.mistake(experience, work)
        grade = report.student(student)
        lost = {t.task.number: t.reasons for t in grade.tasks if not t.passed}
        assert set(lost) == {mistake.task}, f"{mistake.name}: {lost}"
        assert grade.total == 10 - grade.task(mistake.task).task.points
        assert all(lost[mistake.task])


def test_nothing_submitted_scores_zero_with_reasons(experience: str,
                                                    graded: tuple[list[Student], ClassReport]) -> None:
    nothing = graded[1].student(f"{PREFIX[experience]}-nothing")
    assert (nothing.total, nothing.letter) == (0, "F")
    assert all(t.reasons and not any(r.startswith("could not be checked") for r in t.reasons) for t in nothing.tasks)


def _state(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    """What grading must not change: every object's resourceVersion, except what self-healing touches."""
    view = ClusterView(api, namespace)
    state = {}
    for kind in ("ConfigMap", "Service", "Job", "PodDisruptionBudget", "Alloc", "Deployment", "Pod"):
        for obj in view.list(kind):
            if kind == "Pod" and obj["metadata"]["name"].startswith("web-"):
                continue  # self-healing replaces one web pod
            if kind in ("Deployment", "PodDisruptionBudget", "Alloc"):
                state[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"].get("generation")
            else:
                state[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return state


def test_grading_twice_gives_the_same_result_and_changes_nothing(
        experience: str, graded: tuple[list[Student], ClassReport], kube_api: client.ApiClient) -> None:
    roster, first = graded
    reference = f"{PREFIX[experience]}-reference"
    before = _state(kube_api, reference)
    again = run_checks(find_experience(experience), roster, kube_api)
    assert again.outcome() == first.outcome()
    assert _state(kube_api, reference) == before


def test_cell_grade_cli_reports_and_writes_the_class_summary(local_cell: LocalCell, tmp_path: Path) -> None:
    _setup("exp1-orchestration", local_cell.state_dir)
    result = cell_cli(local_cell, "grade", "exp1-orchestration", "--student", "c1-reference", "--format", "json",
                      "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [(s["student"], s["total"], s["grade"]) for s in document["students"]] == [("c1-reference", 10, "A")]
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(r["student"], r["total"], r["grade"]) for r in rows] == [("c1-reference", "10", "A")]
    table = cell_cli(local_cell, "grade", "exp1-orchestration", "--student", "c1-nothing",
                     "--output", str(tmp_path / "t"))
    assert table.returncode == 0, table.stderr
    assert "c1-nothing lost 10 point(s):" in table.stdout
    assert "Deployment web not found in namespace c1-nothing" in table.stdout


def test_experience_apply_is_idempotent(local_cell: LocalCell, kube_api: client.ApiClient) -> None:
    _setup("exp3-failures", local_cell.state_dir)
    view = ClusterView(kube_api, "c3-nothing")

    def versions() -> dict[str, str]:
        return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
                for kind in ("ConfigMap", "Deployment") for o in view.list(kind)}

    before = versions()
    assert {"ConfigMap/course-images", "ConfigMap/exp3-failures", "Deployment/ledger"} <= set(before)
    result = cell_cli(local_cell, "experience", "apply", "exp3-failures", "--student", "c3-nothing")
    assert result.returncode == 0, result.stderr
    assert versions() == before


def test_experience_apply_for_an_unknown_student_changes_nothing(local_cell: LocalCell) -> None:
    result = cell_cli(local_cell, "experience", "apply", "exp1-orchestration", "--student", "nobody-here")
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: no student named 'nobody-here' "
                                     "(no namespace labelled cell.distos.dev/student=nobody-here)")


def test_a_manifest_the_cluster_refuses_leaves_every_namespace_untouched(
        local_cell: LocalCell, kube_api: client.ApiClient, tmp_path: Path) -> None:
    _setup("exp1-orchestration", local_cell.state_dir)
    bad = tmp_path / "exp-bad"
    (bad / "grading").mkdir(parents=True)
    (bad / "kustomization.yaml").write_text("resources: [objects.yaml]\n")
    (bad / "objects.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: exp-bad-first}\ndata: {a: b}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: exp-bad}\n"
        "spec: {replicas: 1, selector: {matchLabels: {app: x}}, template: {metadata: {labels: {app: y}}, "
        "spec: {containers: [{name: c, image: cell.local/web:1.0}]}}}\n")
    result = subprocess.run([sys.executable, "-m", "cell.cli", "experience", "apply", "exp-bad",
                             "--state-dir", str(local_cell.state_dir)], capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, "CELL_EXPERIENCES_DIR": str(tmp_path)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: experience exp-bad for student ")
    assert lines[0].endswith("(nothing applied)")
    for student in students_of("exp1-orchestration"):
        assert ClusterView(kube_api, student).get("ConfigMap", "exp-bad-first") is None

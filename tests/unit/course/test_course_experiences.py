"""The experiences as files: handouts agree with the grading checks, manifests are per-namespace,
grading modules only read, and the CLI fails with one line on bad input. No cluster needed.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cell.catalog import course_images, experiences_dir, find_experience, list_experiences
from cell.errors import CellError
from cell.experiences import for_namespace, render, validate_manifests
from cell.kube import find_kubectl
from cell.names import EXPERIENCE_LABEL
from tests.reference import catalog

EXPERIENCES = ["exp1-orchestration", "exp2-borg", "exp3-failures", "exp4-omega", "exp5-borg-evaluation"]
# SPEC §8: tasks and points of exp1 and exp2 are part of the contract.
SPEC_POINTS = {"exp1-orchestration": {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}, "exp2-borg": {1: 3, 2: 3, 3: 2, 4: 2}}


def grading_source(experience: str) -> ast.Module:
    path = next((experiences_dir() / experience / "grading").glob("test_*.py"))
    return ast.parse(path.read_text())


def declared_tasks(tree: ast.Module) -> dict[int, int]:
    """number -> points of every `pytest.mark.task(number, title, points=N)` in the module."""
    tasks = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "task":
            points = next(k.value for k in node.keywords if k.arg == "points")
            tasks[ast.literal_eval(node.args[0])] = ast.literal_eval(points)
    return tasks


def test_the_course_has_its_experiences() -> None:
    assert list_experiences() == EXPERIENCES
    assert set(catalog.EXPERIENCES) == set(EXPERIENCES)


def test_an_unknown_experience_names_the_known_ones() -> None:
    with pytest.raises(CellError, match=r"^unknown experience 'exp9'; known: exp1-orchestration, exp2-borg, "):
        find_experience("exp9")


@pytest.mark.parametrize("experience", EXPERIENCES)
def test_handout_lists_the_graded_tasks_and_points(experience: str) -> None:
    handout = (experiences_dir() / experience / "README.md").read_text()
    tree = grading_source(experience)
    tasks = declared_tasks(tree)
    table = {int(n): int(p) for n, p in re.findall(r"^\| (\d+) \| [^|]+ \| (\d+) \|$", handout, re.M)}
    headings = {int(n): int(p) for n, p in re.findall(r"^### Task (\d+): .* \((\d+) points?\)$", handout, re.M)}
    assert table == tasks == headings
    assert sum(tasks.values()) == 10
    assert f"({sum(tasks.values())} points)" in handout.splitlines()[0]
    if experience in SPEC_POINTS:
        assert tasks == SPEC_POINTS[experience]
    checks = [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    missing = [name for name in checks if f"`{name}`" not in handout]
    assert not missing, f"the handout does not say what these checks look for: {missing}"
    assert "How to reach an A" in handout


@pytest.mark.parametrize("experience", EXPERIENCES)
def test_grading_modules_only_read(experience: str) -> None:
    """Grading changes nothing but the declared self-healing check: no client, no writes."""
    path = next((experiences_dir() / experience / "grading").glob("test_*.py"))
    tree = ast.parse(path.read_text())
    imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imports |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith(("kubernetes", "subprocess", "requests", "urllib")) for name in imports)
    arguments = {a.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for a in node.args.args}
    assert "api_client" not in arguments
    calls = {node.func.attr for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert not {c for c in calls if c.startswith(("delete", "patch", "create", "replace", "_request"))}


def test_course_images() -> None:
    assert course_images() == {"web": "cell.local/web:1.0", "shell": "cell.local/shell:1.0"}


@pytest.mark.parametrize(("content", "message"), [
    (None, "is missing"),
    ("data: [unclosed", "not valid YAML"),
    ("kind: ConfigMap\ndata: {web: 3}\n", "expected a ConfigMap"),
])
def test_course_images_misconfigured(tmp_path: Path, content: str | None, message: str) -> None:
    (tmp_path / "course").mkdir()
    if content is not None:
        (tmp_path / "course" / "images.yaml").write_text(content)
    with pytest.raises(CellError, match=message):
        course_images(tmp_path)


def test_manifests_are_validated_all_at_once() -> None:
    with pytest.raises(CellError) as raised:
        validate_manifests("exp-x", [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "bob"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
            "junk",
        ])
    message = str(raised.value)
    assert "\n" not in message
    assert message == ("experience exp-x: ConfigMap a sets metadata.namespace; the namespace is each student's; "
                       "Namespace n is cluster-scoped; an experience holds per-student objects only; "
                       "document 3 (ConfigMap) has no metadata.name; document 4 has no apiVersion/kind")
    with pytest.raises(CellError, match="renders no objects"):
        validate_manifests("exp-x", [])


def test_for_namespace_places_without_touching_the_input() -> None:
    documents = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}]
    placed = list(yaml.safe_load_all(for_namespace(documents, "alice")))
    assert placed == [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "alice"}}]
    assert "namespace" not in documents[0]["metadata"]


@pytest.fixture(scope="module")
def kubectl() -> Path:
    try:
        return find_kubectl()
    except CellError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("experience", EXPERIENCES)
def test_experiences_render_per_student_objects(kubectl: Path, experience: str) -> None:
    documents = render(find_experience(experience), kubectl)
    names = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("ConfigMap", "course-images"), ("ConfigMap", experience)} <= names
    assert all(d["metadata"]["labels"][EXPERIENCE_LABEL] == experience for d in documents)
    if experience == "exp3-failures":
        assert ("Deployment", "ledger") in names


def test_a_broken_kustomization_is_one_line(tmp_path: Path, kubectl: Path) -> None:
    (tmp_path / "exp-bad" / "grading").mkdir(parents=True)
    (tmp_path / "exp-bad" / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(CellError, match=r"^experience exp-bad: kustomize failed: .*missing\.yaml"):
        render(find_experience("exp-bad", tmp_path), kubectl)


# --- the command line ----------------------------------------------------------------------------

def cell_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cell.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def unreachable_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "unreachable.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


@pytest.mark.parametrize("command", [["grade"], ["experience", "apply"]])
def test_cli_unknown_experience(command: list[str], unreachable_kubeconfig: Path) -> None:
    result = cell_cli(*command, "exp9", "--kubeconfig", str(unreachable_kubeconfig))
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: unknown experience 'exp9'")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


@pytest.mark.parametrize("command", [["grade"], ["experience", "apply"]])
def test_cli_unreachable_cluster(command: list[str], unreachable_kubeconfig: Path) -> None:
    result = cell_cli(*command, "exp1-orchestration", "--kubeconfig", str(unreachable_kubeconfig))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: cannot reach the cluster at https://127.0.0.1:1: [Errno 111] Connection refused"]


def test_cli_missing_kubeconfig(tmp_path: Path) -> None:
    result = cell_cli("grade", "exp1-orchestration", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: kubeconfig not found: {tmp_path.resolve()}/admin.kubeconfig "
                                     "(is the cell up? run `cell up`)")

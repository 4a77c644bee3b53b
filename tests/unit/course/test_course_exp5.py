"""exp5-borg-evaluation: the command students are given is the one the grader recomputes."""

from __future__ import annotations

import importlib.util
import shlex
from types import ModuleType

from cell.catalog import experiences_dir
from tests.reference import catalog


def grader() -> ModuleType:
    path = experiences_dir() / "exp5-borg-evaluation" / "grading" / "test_exp5_borg_evaluation.py"
    spec = importlib.util.spec_from_file_location("exp5_grader", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lab_command_is_the_graders() -> None:
    module = grader()
    assert catalog.lab_command() == shlex.split(module.LAB_COMMAND)
    handout = (experiences_dir() / "exp5-borg-evaluation" / "README.md").read_text()
    assert f".venv/bin/{module.LAB_COMMAND}" in handout


def test_the_interpretation_answers_are_offered_in_the_handout() -> None:
    handout = (experiences_dir() / "exp5-borg-evaluation" / "README.md").read_text()
    for key, right in grader().ANSWERS.items():
        assert f"`{key}`" in handout and f"`{right}`" in handout

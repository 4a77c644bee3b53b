"""Students as the escapes were tried: each with only their own kubeconfig, on the shared local cell."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cell.localcell.supervisor import LocalCell
from cell.students import StudentSpec, add_students, kubeconfig_of, remove_students
from scheduler_ext.policy.quota import DEFAULT_STUDENT_BANDS
from tests.integration.test_quota import Kubectl, Student


def _student(cell: LocalCell, prefix: str) -> Iterator[Student]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    add_students([StudentSpec(name, DEFAULT_STUDENT_BANDS)], cell.paths)  # Q8: the course's default quota
    yield Student(name, Kubectl(cell, name, kubeconfig_of(cell.paths, name)),
                  Kubectl(cell, name, cell.paths.kubeconfig))
    remove_students([name], cell.paths)


@pytest.fixture
def student(local_cell: LocalCell) -> Iterator[Student]:
    yield from _student(local_cell, "s")


@pytest.fixture
def other_student(local_cell: LocalCell) -> Iterator[Student]:
    yield from _student(local_cell, "o")


# The integration suite's dedicated nodes and plain namespace (their conftest is not in scope here).
from tests.integration.conftest import namespace, test_nodes  # noqa: E402, F401

"""A7 on the real cell: an Alloc in a band without quota cannot hold the cell hostage (issue 13).

A best-effort Alloc (unlimited: Borg's free quota) of 7500m per instance on every node of its
pool was Reserved everywhere, and another student's in-quota production pod stayed Pending. A
reservation is held at its band: the production pod runs, and the Alloc gives that instance back.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import NodeFactory
from tests.integration.helpers import pin_to_test_nodes, wait_for
from tests.integration.test_quota import Student, pod

pytestmark = pytest.mark.cluster


def _alloc_status(student: Student, name: str) -> dict:
    result = student.kubectl("get", "alloc", name, "-o", "jsonpath={.status}")
    return json.loads(result.stdout or "{}")


def test_a_best_effort_alloc_does_not_keep_a_production_pod_out(student: Student, other_student: Student,
                                                                namespace: str, test_nodes: NodeFactory) -> None:
    nodes = test_nodes(2)
    hog = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc", "metadata": {"name": "hog"},
           "spec": {"priorityClassName": "best-effort", "count": 2, "resources": {"cpu": "7500m", "memory": "1Gi"},
                    "nodeSelector": {"cell.distos.dev/test": namespace}}}
    assert student.create(hog).returncode == 0
    wait_for(lambda: _alloc_status(student, "hog").get("phase") == "Reserved", 60, what="hog Reserved on both nodes")

    prod = pod("web", "production", cpu="1", memory="256Mi")
    pin_to_test_nodes(prod["spec"], namespace)
    created = other_student.create(prod)
    assert created.returncode == 0, created.stderr

    def bound() -> str:
        result = other_student.kubectl("get", "pod", "web", "-o", "jsonpath={.spec.nodeName}")
        return result.stdout

    node = wait_for(bound, 60, what="the production pod bound despite the best-effort reservations")
    assert node in nodes
    # The instance it took is given back, with a message; the other one is still held.
    status = wait_for(lambda: (s := _alloc_status(student, "hog")).get("phase") == "PartiallyReserved" and s,
                      90, what="hog PartiallyReserved after the preemption")
    assert [i["node"] for i in status.get("instances", [])] == [n for n in nodes if n != node]
    # The status says where the instance can go now; the Event says why it moved.
    def preempted() -> str:
        listed = student.kubectl("get", "events", "--field-selector",
                                 "involvedObject.kind=Alloc,involvedObject.name=hog,reason=Preempted",
                                 "-o", "jsonpath={.items[*].message}")
        return listed.stdout
    message = wait_for(preempted, 30, what="a Preempted event on hog")
    assert "preempted by pods of a higher band" in message and f"on {node}" in message, message

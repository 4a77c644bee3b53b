"""Q9: a student cannot dodge their quota by claiming an exemption (issue 13), nor bind pods themselves.

Each test is one escape as a curious student tried it with their own kubeconfig (production cpu 2,
batch cpu 4: the course's default quota). Before the fix each of these was admitted uncharged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.helpers import wait_for
from tests.integration.test_quota import WEBHOOK, Student, deployment, pod, pod_spec

pytestmark = pytest.mark.cluster


def _uid(student: Student, kind: str, name: str) -> str:
    result = student.kubectl("get", kind, name, "-o", "jsonpath={.metadata.uid}")
    assert result.returncode == 0 and result.stdout, result.stderr
    return result.stdout


def _controller(api_version: str, kind: str, name: str, uid: str) -> list[dict[str, Any]]:
    return [{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}]


def test_an_alloc_label_naming_no_alloc_is_charged(student: Student) -> None:
    ghost = deployment("ghost", 10, labels={"cell.distos.dev/alloc": "ghost"})
    result = student.create(ghost)
    assert result.returncode != 0
    assert (f"{WEBHOOK}: BandQuota {student.name}/quota: band production needs cpu 10, 0 in use, limit 2"
            in result.stderr)
    assert f"Alloc ghost does not exist in namespace {student.name}" in result.stderr


def test_a_job_naming_a_suspended_cronjob_is_charged(student: Student) -> None:
    small = {**pod_spec("batch", "100m"), "restartPolicy": "Never"}
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
               "spec": {"schedule": "0 0 1 1 *", "suspend": True,
                        "jobTemplate": {"spec": {"template": {"spec": small}}}}}
    assert student.create(cronjob).returncode == 0
    uid = _uid(student, "cronjob", "nightly")
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "forged", "ownerReferences": _controller("batch/v1", "CronJob", "nightly", uid)},
           "spec": {"parallelism": 10, "completions": 10,
                    "template": {"spec": {**pod_spec("batch", "1"), "restartPolicy": "Never"}}}}
    result = student.create(job)
    assert result.returncode != 0
    assert f"BandQuota {student.name}/quota: band batch needs cpu 10, 100m in use, limit 4" in result.stderr
    assert "larger than CronJob" in result.stderr


def test_a_pod_naming_a_replicaset_it_does_not_match_is_charged(student: Student) -> None:
    rs = {**deployment("small", 1, cpu="100m"), "kind": "ReplicaSet"}
    assert student.create(rs).returncode == 0
    uid = _uid(student, "replicaset", "small")
    forged = pod("forged", "production", cpu="3")
    forged["metadata"].update(labels={"app": "other"},
                              ownerReferences=_controller("apps/v1", "ReplicaSet", "small", uid))
    result = student.create(forged)
    assert result.returncode != 0
    assert f"BandQuota {student.name}/quota: band production needs cpu 3, 100m in use, limit 2" in result.stderr
    assert f"do not match the selector of ReplicaSet {student.name}/small" in result.stderr


def test_a_pod_naming_an_owner_that_does_not_exist_is_charged(student: Student) -> None:
    forged = pod("forged", "production", cpu="3")
    forged["metadata"]["ownerReferences"] = _controller("apps/v1", "ReplicaSet", "nothing", "0000")
    result = student.create(forged)
    assert result.returncode != 0 and "band production needs cpu 3" in result.stderr
    assert "its controller ReplicaSet nothing does not exist" in result.stderr


def test_relabelling_a_pod_out_of_its_replicaset_is_charged(student: Student) -> None:
    assert student.create(deployment("web", 2)).returncode == 0
    pods = wait_for(lambda: _pod_names(student, "app=web") if len(_pod_names(student, "app=web")) == 2 else None,
                    60, what="web's 2 pods")
    # Taken out of its ReplicaSet, the pod would be charged itself beside the 2 CPU web holds.
    result = student.kubectl("label", "pod", pods[0], "app=escaped", "--overwrite")
    assert result.returncode != 0
    assert "band production needs cpu 1, 2 in use, limit 2" in result.stderr


def test_pods_cannot_be_bound_by_the_user(student: Student) -> None:
    bound = pod("bound", "production", cpu="100m", memory="64Mi")
    bound["spec"]["nodeName"] = "node-1"
    result = student.create(bound)
    assert result.returncode != 0
    assert "spec.nodeName (node-1) may not be set in a managed namespace" in result.stderr
    # Also for pods exempt in every other respect (best-effort needs no quota).
    bound["spec"]["priorityClassName"] = "best-effort"
    assert "spec.nodeName" in student.create(bound).stderr


def test_a_completed_job_stops_counting_at_once(student: Student) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
           "spec": {"parallelism": 2, "completions": 2,
                    "template": {"spec": {**pod_spec("batch", "1"), "restartPolicy": "Never"}}}}
    assert student.create(job).returncode == 0
    wait_for(lambda: student.used()["batch"].get("cpu") == "2", 30, what="the Job charged: batch cpu 2")

    def complete() -> bool:
        result = student.kubectl("get", "job", "once", "-o", "jsonpath={.status.conditions}")
        return any(c.get("type") == "Complete" and c.get("status") == "True"
                   for c in json.loads(result.stdout or "[]"))

    wait_for(complete, 90, what="KWOK completing the Job")
    # The operator drops it from status.used on the Job's own event, not at its next restart.
    wait_for(lambda: student.used()["batch"].get("cpu") == "0", 10, what="batch use back to 0")


def _pod_names(student: Student, selector: str) -> list[str]:
    result = student.kubectl("get", "pods", "-l", selector, "-o", "jsonpath={.items[*].metadata.name}")
    return result.stdout.split()

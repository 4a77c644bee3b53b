"""Quota admission at job submission on a real cell (issue 4): the webhook, the operator, the CRD.

Each test gets its own student (a managed namespace with a BandQuota of production cpu 4 / memory
8Gi and batch cpu 4 / memory 4Gi) and talks to the cell as that student would, through kubectl with
the student's kubeconfig, so the messages checked are the ones a student reads.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cell.localcell.supervisor import LocalCell
from cell.students import StudentSpec, add_students, kubeconfig_of, remove_students
from scheduler_ext.policy.quota import band_quota_of
from scheduler_ext.policy.resources import ZERO, Resources
from tests.integration.helpers import restricted, wait_for

pytestmark = pytest.mark.cluster

QUOTA = {"production": {"cpu": "4", "memory": "8Gi"}, "batch": {"cpu": "4", "memory": "4Gi"}}
WEBHOOK = 'admission webhook "workloads.quota.cell.distos.dev" denied the request'


class Kubectl:
    """kubectl against the cell, in one namespace, as one user (a student's or the admin's kubeconfig)."""

    def __init__(self, cell: LocalCell, namespace: str, kubeconfig: Path) -> None:
        self.cell, self.namespace, self.kubeconfig = cell, namespace, kubeconfig

    def __call__(self, *args: str, manifest: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.cell.kubectl), f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, *args],
                              input=json.dumps(manifest) if manifest else None, capture_output=True, text=True,
                              timeout=60)

    def create(self, manifest: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        return self("create", "-f", "-", *extra, manifest=manifest)


@dataclass
class Student:
    name: str
    kubectl: Kubectl  # as the student
    admin: Kubectl  # as the cell's admin, in the student's namespace

    def create(self, manifest: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl.create(manifest, *extra)

    def used(self) -> dict[str, dict[str, str]]:
        """status.used of the production and batch bands."""
        result = self.kubectl("get", "bandquota", "quota", "-o", "jsonpath={.status.used}")
        used = json.loads(result.stdout or "{}")
        return {band: used.get(band, {}) for band in ("production", "batch")}


@pytest.fixture
def student(local_cell: LocalCell) -> Iterator[Student]:
    name = f"q-{uuid.uuid4().hex[:6]}"
    add_students([StudentSpec(name, QUOTA)], local_cell.paths)
    yield Student(name, Kubectl(local_cell, name, kubeconfig_of(local_cell.paths, name)),
                  Kubectl(local_cell, name, local_cell.paths.kubeconfig))
    remove_students([name], local_cell.paths)


@pytest.fixture
def plain(local_cell: LocalCell, kube_api: client.ApiClient) -> Iterator[Kubectl]:
    """The admin in an unmanaged namespace (no cell.distos.dev/managed label)."""
    name = f"plain-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    yield Kubectl(local_cell, name, local_cell.paths.kubeconfig)
    core.delete_namespace(name)


def pod_spec(band: str | None, cpu: str | None = "1", memory: str | None = "256Mi") -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "cell.local/web:1.0",
                                            "resources": {"requests": requests} if requests else {}}]}
    if band:
        spec["priorityClassName"] = band
    return restricted(spec)


def deployment(name: str, replicas: int, band: str | None = "production", cpu: str | None = "1",
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, **(labels or {})}},
                                  "spec": pod_spec(band, cpu)}}}


def job(name: str, parallelism: int, cpu: str = "1") -> dict[str, Any]:
    """A suspended Job: charged at submission like any job, but KWOK cannot complete it (which would free
    its quota) while a test is still counting on it."""
    spec = {**pod_spec("batch", cpu), "restartPolicy": "Never"}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"parallelism": parallelism, "completions": parallelism, "suspend": True,
                     "template": {"spec": spec}}}


def pod(name: str, band: str | None, cpu: str | None = "1", memory: str | None = "256Mi") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec(band, cpu, memory)}


# --- Q1/Q2: whole jobs ---------------------------------------------------------------------------

def test_deployment_over_quota_is_refused_whole_with_the_q2_message(student: Student,
                                                                      kube_api: client.ApiClient) -> None:
    result = student.create(deployment("web", 5))
    assert result.returncode != 0
    assert f"{WEBHOOK}: BandQuota {student.name}/quota: band production needs cpu 5, 0 in use, limit 4" in result.stderr
    # Refused outright: nothing was created, not 4 of 5 pods.
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(student.name).items == []
    assert client.AppsV1Api(kube_api).list_namespaced_replica_set(student.name).items == []
    assert client.CoreV1Api(kube_api).list_namespaced_pod(student.name).items == []


def test_deployment_within_quota_is_admitted_and_scaling_past_it_is_refused(student: Student,
                                                                             kube_api: client.ApiClient) -> None:
    assert student.create(deployment("web", 4)).returncode == 0
    apps = client.AppsV1Api(kube_api)
    wait_for(lambda: (apps.read_namespaced_deployment("web", student.name).status.available_replicas or 0) == 4,
             90, what="4 available replicas of web (its pods are not charged again, Q3)")
    result = student.kubectl("scale", "deployment/web", "--replicas=5")
    assert result.returncode != 0
    assert f"BandQuota {student.name}/quota: band production needs cpu 5, 0 in use, limit 4" in result.stderr
    assert apps.read_namespaced_deployment("web", student.name).spec.replicas == 4
    # Editing the object itself goes through the same check as the scale subresource.
    result = student.kubectl("patch", "deployment/web", "--type=merge", "-p", '{"spec":{"replicas":6}}')
    assert "band production needs cpu 6, 0 in use, limit 4" in result.stderr
    assert student.kubectl("scale", "deployment/web", "--replicas=2").returncode == 0
    # Two other jobs now share what is left.
    assert student.create(deployment("api", 2)).returncode == 0
    result = student.create(deployment("extra", 1))
    assert "band production needs cpu 1, 4 in use, limit 4" in result.stderr


def test_a_jobs_parallelism_is_its_size(student: Student) -> None:
    result = student.create(job("crunch", 5))
    assert f"BandQuota {student.name}/quota: band batch needs cpu 5, 0 in use, limit 4" in result.stderr
    assert student.create(job("crunch", 4)).returncode == 0
    result = student.create(job("more", 1, cpu="100m"))
    assert "band batch needs cpu 100m, 4 in use, limit 4" in result.stderr


def test_best_effort_is_unlimited(student: Student) -> None:
    # Far beyond every listed band, checked without running it (server-side dry run still admits).
    for band in ("best-effort", None):
        result = student.create(deployment("huge", 500, band=band, cpu="1"), "--dry-run=server")
        assert result.returncode == 0, result.stderr
    # Best-effort pods need no requests either.
    assert student.create(pod("free", "best-effort", cpu=None, memory=None)).returncode == 0


def test_missing_band_has_zero_quota(student: Student) -> None:
    result = student.create(pod("watcher", "monitoring", cpu="100m"))
    assert "band monitoring needs cpu 100m, 0 in use, limit 0 (monitoring is not in spec.bands)" in result.stderr


def test_pod_without_requests_in_a_limited_band_is_refused(student: Student) -> None:
    result = student.create(pod("bare", "batch", cpu=None, memory=None))
    assert result.returncode != 0
    assert (f"Pod {student.name}/bare: pods in band batch (limited by BandQuota {student.name}/quota) must request "
            'cpu and memory; container "main" has no cpu or memory request') in result.stderr
    result = student.create(deployment("half", 1, cpu=None))
    assert 'container "main" has no cpu request' in result.stderr


# --- Q6 and the CRD ------------------------------------------------------------------------------

def _granted_prod_and_capacity(kube_api: client.ApiClient) -> tuple[Resources, Resources]:
    items = client.CustomObjectsApi(kube_api).list_cluster_custom_object("cell.distos.dev", "v1alpha1",
                                                                        "bandquotas")["items"]
    granted = ZERO
    for item in items:
        granted = granted + band_quota_of(item)[0].prod
    capacity = ZERO
    for node in client.CoreV1Api(kube_api).list_node().items:
        capacity = capacity + Resources.parse(node.status.allocatable)
    return granted, capacity


def _band_quota(name: str, cpu_milli: int) -> dict[str, Any]:
    return {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "BandQuota", "metadata": {"name": name},
            "spec": {"bands": {"production": {"cpu": f"{cpu_milli}m", "memory": "1Gi"}}}}


def test_band_quota_overselling_prod_is_refused(kube_api: client.ApiClient, plain: Kubectl) -> None:
    granted, capacity = _granted_prod_and_capacity(kube_api)
    remaining = capacity.cpu - granted.cpu
    assert remaining > 0
    result = plain.create(_band_quota("greedy", remaining + 1))
    assert result.returncode != 0
    assert 'admission webhook "bandquotas.quota.cell.distos.dev" denied the request' in result.stderr
    assert "prod quota (monitoring + production) would oversell the cell" in result.stderr
    # Exactly what is left is fine (dry run: the rest of the suite still needs prod quota).
    result = plain.create(_band_quota("fair", remaining), "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_at_most_one_band_quota_per_namespace(student: Student) -> None:
    result = student.admin.create(_band_quota("second", 100))
    assert f"namespace {student.name} already has BandQuota {student.name}/quota" in result.stderr


@pytest.mark.parametrize(
    ("bands", "error"),
    [
        ({"prod": {"cpu": "1", "memory": "1Gi"}}, "unknown band; expected monitoring, production, batch"),
        ({"batch": {"cpu": "-1", "memory": "1Gi"}}, "spec.bands.batch.cpu in body should match"),
        ({"batch": {"cpu": -1, "memory": "1Gi"}}, "should be greater than or equal to 0"),
        ({"batch": {"cpu": "lots", "memory": "1Gi"}}, "spec.bands.batch.cpu in body should match"),
        ({"batch": {"cpu": "1"}}, "spec.bands.batch.memory: Required value"),
    ],
    ids=["unknown-band", "negative-string", "negative-int", "garbage", "missing-memory"],
)
def test_crd_schema_rejects_malformed_band_quotas(plain: Kubectl, bands: dict[str, Any], error: str) -> None:
    manifest = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "BandQuota", "metadata": {"name": "bad"},
                "spec": {"bands": bands}}
    result = plain.create(manifest)
    assert result.returncode != 0
    assert error in result.stderr


def test_unmanaged_namespaces_are_untouched(plain: Kubectl) -> None:
    result = plain.create(deployment("huge", 500), "--dry-run=server")
    assert result.returncode == 0, result.stderr
    result = plain.create(pod("bare", "production", cpu=None, memory=None))
    assert result.returncode == 0, result.stderr


# --- Q7: status.used -------------------------------------------------------------------------------

def test_status_used_follows_churn_and_survives_an_operator_restart(local_cell: LocalCell, student: Student) -> None:
    assert student.create(deployment("web", 3, cpu="500m")).returncode == 0
    assert student.create(job("crunch", 2, cpu="1")).returncode == 0
    assert student.create(pod("solo", "batch", cpu="250m", memory="128Mi")).returncode == 0
    assert student.kubectl("scale", "deployment/web", "--replicas=2").returncode == 0
    assert student.kubectl("delete", "pod", "solo", "--wait=false").returncode == 0
    expected = {"production": {"cpu": "1", "memory": "512Mi"}, "batch": {"cpu": "2", "memory": "512Mi"}}
    wait_for(lambda: student.used() == expected, 30, what=f"status.used == {expected}")

    # Changes made while the operator is down are picked up when it comes back (level-triggered).
    local_cell.stop("operator")
    try:
        assert student.kubectl("delete", "job", "crunch", "--wait=false").returncode == 0
        assert student.kubectl("scale", "deployment/web", "--replicas=4").returncode == 0
    finally:
        local_cell.start("operator")
    expected = {"production": {"cpu": "2", "memory": "1Gi"}, "batch": {"cpu": "0", "memory": "0"}}
    # The operator re-lists every watched kind cluster-wide before it patches: generous on 2 loaded cores.
    wait_for(lambda: student.used() == expected, 90, what=f"status.used == {expected} after the restart")
    local_cell.restart("operator")
    assert student.kubectl("scale", "deployment/web", "--replicas=1").returncode == 0
    expected = {"production": {"cpu": "500m", "memory": "256Mi"}, "batch": {"cpu": "0", "memory": "0"}}
    wait_for(lambda: student.used() == expected, 90, what=f"status.used == {expected} after a plain restart")


# --- the webhook down --------------------------------------------------------------------------------

def test_with_the_webhook_down_managed_namespaces_refuse_new_work(local_cell: LocalCell, student: Student,
                                                                  plain: Kubectl) -> None:
    local_cell.stop("webhook")
    try:
        result = student.create(pod("blocked", "batch", cpu="100m"))
        assert result.returncode != 0
        assert 'failed calling webhook "workloads.quota.cell.distos.dev"' in result.stderr
        # Unmanaged namespaces do not depend on the webhook.
        assert plain.create(pod("fine", "batch")).returncode == 0
    finally:
        local_cell.start("webhook")
    assert student.create(pod("after", "batch", cpu="100m")).returncode == 0


# --- A4: allocs --------------------------------------------------------------------------------------

def test_an_alloc_is_charged_once_and_its_members_are_not(kube_api: client.ApiClient, student: Student) -> None:
    alloc = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc", "metadata": {"name": "cache"},
             "spec": {"priorityClassName": "production", "count": 2, "resources": {"cpu": "1", "memory": "1Gi"}}}
    assert student.create(alloc).returncode == 0
    members = deployment("cache", 2, cpu="500m", labels={"cell.distos.dev/alloc": "cache"})
    assert student.create(members).returncode == 0
    result = student.create(deployment("api", 3))
    assert f"BandQuota {student.name}/quota: band production needs cpu 3, 2 in use, limit 4" in result.stderr
    wait_for(lambda: student.used()["production"] == {"cpu": "2", "memory": "2Gi"}, 30,
             what="status.used charging the alloc (2 x 1 CPU) and not its members")

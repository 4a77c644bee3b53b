"""`cell why -f` on a live cell (issue 16): every suggestion, applied, really admits the job and places its pods.

One student of its own (production cpu 2 / memory 2Gi, batch cpu 12 / memory 12Gi) and one dedicated KWOK
node (8 cpu / 32Gi, tainted and labelled for this test only, so whatever else the shared cell runs does not
move the numbers). Two jobs: one quota refuses, one quota admits but the node cannot hold whole. For each,
`cell why -f --format json` is asked first; then each suggestion's JSON patch is applied (to the manifest,
or with `kubectl patch` to the BandQuota), the job is created as the student, and all its pods must be
bound, on the nodes the suggestion named; the job is deleted again before the next suggestion.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from typer.testing import CliRunner

from cell.cli.main import app
from cell.kube import node_is_ready
from cell.localcell.supervisor import LocalCell
from cell.students import StudentSpec, add_students, kubeconfig_of, remove_students
from scheduler_ext.policy.suggest import apply_patch
from tests.integration.helpers import dedicated_node_manifests, deployment, pin_to_test_nodes, wait_for

pytestmark = pytest.mark.cluster

QUOTA = {"production": {"cpu": "2", "memory": "2Gi"}, "batch": {"cpu": "12", "memory": "12Gi"}}


class Student:
    def __init__(self, cell: LocalCell, name: str) -> None:
        self.cell, self.name = cell, name
        self.kubeconfig = kubeconfig_of(cell.paths, name)

    def kubectl(self, *args: str, admin: bool = False, manifest: dict[str, Any] | None = None,
                ) -> subprocess.CompletedProcess[str]:
        kubeconfig = self.cell.paths.kubeconfig if admin else self.kubeconfig
        return subprocess.run([str(self.cell.kubectl), f"--kubeconfig={kubeconfig}", "-n", self.name, *args],
                              input=json.dumps(manifest) if manifest else None, capture_output=True, text=True,
                              timeout=60)


@pytest.fixture
def student(local_cell: LocalCell, kube_api: client.ApiClient) -> Iterator[Student]:
    name = f"h11-why-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    add_students([StudentSpec(name, QUOTA)], local_cell.paths)
    nodes = dedicated_node_manifests(name, 1)
    try:
        for node in nodes:
            core.create_node(node)
        wait_for(lambda: all(node_is_ready(core.read_node(n["metadata"]["name"])) for n in nodes), 60,
                 what="the test node Ready")
        yield Student(local_cell, name)
    finally:
        for node in nodes:
            core.delete_node(node["metadata"]["name"])
        remove_students([name], local_cell.paths)


def job(student: Student, name: str, replicas: int, cpu: str, priority_class: str) -> dict[str, Any]:
    manifest = deployment(name, replicas, cpu=cpu, memory="512Mi", priority_class=priority_class)
    pin_to_test_nodes(manifest["spec"]["template"]["spec"], student.name)
    manifest["metadata"]["namespace"] = student.name
    return manifest


def why(local_cell: LocalCell, manifest: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(json.dumps(manifest))  # JSON is YAML
    result = CliRunner().invoke(app, ["why", "-f", str(path), "--format", "json",
                                      "--state-dir", str(local_cell.state_dir)])
    assert result.exit_code == 0, result.output
    record: dict[str, Any] = json.loads(result.stdout)
    return record


def pod_nodes(kube_api: client.ApiClient, namespace: str, app_label: str) -> list[str]:
    """The node of every pod of the job ("" for one not bound yet), terminating ones included."""
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=f"app={app_label}").items
    return [(p.spec.node_name if p.spec else None) or "" for p in pods]


def admits_and_places(student: Student, kube_api: client.ApiClient, manifest: dict[str, Any],
                      suggestion: dict[str, Any]) -> None:
    """Create the job as the student; it must be admitted and every pod bound where the suggestion said."""
    name, replicas = manifest["metadata"]["name"], manifest["spec"]["replicas"]
    created = student.kubectl("create", "-f", "-", manifest=manifest)
    assert created.returncode == 0, f"{suggestion['text']}: not admitted: {created.stderr}"

    def all_bound() -> list[str] | None:
        nodes = pod_nodes(kube_api, student.name, name)
        return nodes if len(nodes) == replicas and all(nodes) else None

    try:
        nodes = wait_for(all_bound, 60, what=f"{replicas} pod(s) of {name} bound ({suggestion['text']})") or []
        assert set(nodes) <= set(suggestion["nodes"]), (suggestion["text"], nodes)
    finally:
        # Foreground: the Deployment (and its charge) goes only after its ReplicaSet and pods, so the next
        # suggestion is judged against an empty namespace, as `cell why` judged it.
        student.kubectl("delete", "deployment", name, "--cascade=foreground", "--wait=true", "--timeout=60s")
        wait_for(lambda: not pod_nodes(kube_api, student.name, name), 60, what=f"the pods of {name} gone")


def test_every_suggestion_for_a_job_quota_refuses_admits_and_places_it(
        local_cell: LocalCell, kube_api: client.ApiClient, student: Student, tmp_path: Path) -> None:
    manifest = job(student, "web", 3, "1", "production")
    refused = student.kubectl("create", "-f", "-", manifest=manifest)
    assert refused.returncode != 0 and "band production needs cpu 3, 0 in use, limit 2" in refused.stderr

    record = why(local_cell, manifest, tmp_path)  # after it was refused
    assert record["admitted"] is False and record["refusals"]
    kinds = [s["kind"] for s in record["suggestions"]]
    assert {"replicas", "requests", "band"} <= set(kinds), kinds
    for suggestion in record["suggestions"]:
        if suggestion["kind"] == "quota":
            assert suggestion["target"] == f"BandQuota {student.name}/quota"
            patched = student.kubectl("patch", "bandquota", "quota", "--type", "json",
                                      "-p", json.dumps(suggestion["patch"]), admin=True)
            assert patched.returncode == 0, patched.stderr
            try:
                admits_and_places(student, kube_api, manifest, suggestion)
            finally:
                restore = [{"op": "replace", "path": "/spec/bands", "value": QUOTA}]
                student.kubectl("patch", "bandquota", "quota", "--type", "json", "-p", json.dumps(restore),
                                admin=True)
        else:
            admits_and_places(student, kube_api, apply_patch(manifest, suggestion["patch"]), suggestion)


def test_every_suggestion_for_a_job_the_cell_cannot_hold_places_it(
        local_cell: LocalCell, kube_api: client.ApiClient, student: Student, tmp_path: Path) -> None:
    manifest = job(student, "big", 3, "3", "batch")  # 9 cpu on one 8 cpu node; 12 of batch quota
    record = why(local_cell, manifest, tmp_path)  # before it is created
    assert record["admitted"] is True
    assert [p["node"] is not None for p in record["placement"]] == [True, True, False]
    changes = {s["kind"]: s["change"] for s in record["suggestions"]}
    assert changes["replicas"] == {"replicas": 2} and changes["requests"] == {"requests": {"cpu": "2666m"}}
    for suggestion in record["suggestions"]:
        admits_and_places(student, kube_api, apply_patch(manifest, suggestion["patch"]), suggestion)

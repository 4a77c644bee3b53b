"""Student onboarding on a real cell (issue 4): `cell students add | list | remove`, RBAC, kubeconfigs."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from cell.cli import app
from cell.localcell.supervisor import LocalCell
from cell.students import kubeconfig_of, remove_students

pytestmark = pytest.mark.cluster

DEFAULT_BANDS = {"production": {"cpu": "2", "memory": "2Gi"}, "batch": {"cpu": "4", "memory": "4Gi"}}


def cli(local_cell: LocalCell, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--state-dir", str(local_cell.state_dir)])
    return result.exit_code, result.output


def names(count: int) -> list[str]:
    return [f"s-{uuid.uuid4().hex[:6]}" for _ in range(count)]


@pytest.fixture
def cleanup(local_cell: LocalCell, kube_api: client.ApiClient) -> Iterator[list[str]]:
    """Students a test added; removed afterwards whatever happened."""
    added: list[str] = []
    yield added
    existing = {ns.metadata.name for ns in client.CoreV1Api(kube_api).list_namespace().items}
    remove_students([n for n in added if n in existing], local_cell.paths)


def band_quota(kube_api: client.ApiClient, namespace: str) -> dict:
    return client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "cell.distos.dev", "v1alpha1", namespace, "bandquotas", "quota")


def test_add_creates_namespace_quota_rbac_and_kubeconfig(local_cell: LocalCell, kube_api: client.ApiClient,
                                                         cleanup: list[str]) -> None:
    alice, bob = cleanup[:] = names(2)
    code, output = cli(local_cell, "students", "add", alice, bob)
    assert code == 0, output
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    for name in (alice, bob):
        labels = core.read_namespace(name).metadata.labels
        assert labels["cell.distos.dev/managed"] == "true"
        assert labels["cell.distos.dev/student"] == name
        assert band_quota(kube_api, name)["spec"]["bands"] == DEFAULT_BANDS  # Q8
        binding = rbac.read_namespaced_role_binding("cell:student", name)
        assert binding.role_ref.name == "cell:student"
        assert [(s.kind, s.name) for s in binding.subjects] == [("User", name)]
        path = kubeconfig_of(local_cell.paths, name)
        assert str(path) in output
        config = yaml.safe_load(path.read_text())
        assert config["contexts"][0]["context"]["namespace"] == name
        cert = x509.load_pem_x509_certificate(base64.b64decode(config["users"][0]["user"]["client-certificate-data"]))
        subject = {attr.oid: attr.value for attr in cert.subject}
        assert subject == {x509.NameOID.COMMON_NAME: name, x509.NameOID.ORGANIZATION_NAME: "cell:students"}
    # The lead's `cell kubeconfig --student` finds it.
    code, output = cli(local_cell, "kubeconfig", "--student", alice)
    assert code == 0
    assert output.strip() == str(kubeconfig_of(local_cell.paths, alice))


def test_add_is_idempotent(local_cell: LocalCell, kube_api: client.ApiClient, cleanup: list[str]) -> None:
    (carol,) = cleanup[:] = names(1)
    assert cli(local_cell, "students", "add", carol)[0] == 0
    uid = client.CoreV1Api(kube_api).read_namespace(carol).metadata.uid
    code, output = cli(local_cell, "students", "add", carol)
    assert code == 0, output
    assert client.CoreV1Api(kube_api).read_namespace(carol).metadata.uid == uid
    assert band_quota(kube_api, carol)["spec"]["bands"] == DEFAULT_BANDS


def test_roster_with_quota_overrides(local_cell: LocalCell, kube_api: client.ApiClient, tmp_path: Path,
                                     cleanup: list[str]) -> None:
    dave, erin = cleanup[:] = names(2)
    roster = tmp_path / "class.yaml"
    roster.write_text(yaml.safe_dump({"students": [dave, {"name": erin, "quota": {
        "production": {"cpu": "3"}, "monitoring": {"cpu": "500m", "memory": "512Mi"}, "batch": None}}]}))
    code, output = cli(local_cell, "students", "add", "--roster", str(roster))
    assert code == 0, output
    assert band_quota(kube_api, dave)["spec"]["bands"] == DEFAULT_BANDS
    assert band_quota(kube_api, erin)["spec"]["bands"] == {"production": {"cpu": "3", "memory": "2Gi"},
                                                           "monitoring": {"cpu": "500m", "memory": "512Mi"}}
    csv_roster = tmp_path / "class.csv"
    csv_roster.write_text(f"name,batch.cpu,batch.memory\n{dave},6,6Gi\n")
    assert cli(local_cell, "students", "add", "--roster", str(csv_roster))[0] == 0
    assert band_quota(kube_api, dave)["spec"]["bands"]["batch"] == {"cpu": "6", "memory": "6Gi"}


def test_bad_input_creates_nothing(local_cell: LocalCell, kube_api: client.ApiClient, tmp_path: Path,
                                   cleanup: list[str]) -> None:
    good, taken = names(2)
    cleanup[:] = [good]
    core = client.CoreV1Api(kube_api)

    def exists(name: str) -> bool:
        try:
            core.read_namespace(name)
            return True
        except ApiException as exc:
            assert exc.status == 404
            return False

    code, output = cli(local_cell, "students", "add", good, "Not_Valid")
    assert code == 1
    assert "'Not_Valid' is not a valid student name" in output
    assert not exists(good)
    assert not kubeconfig_of(local_cell.paths, good).exists()
    # A roster whose prod quota would oversell the cell (Q6) is refused before anything is created.
    roster = tmp_path / "greedy.yaml"
    roster.write_text(yaml.safe_dump([good, {"name": f"{good}-x", "quota": {"production": {"cpu": "100000"}}}]))
    code, output = cli(local_cell, "students", "add", "--roster", str(roster))
    assert code == 1
    assert "would oversell the cell" in output
    assert "nobody was added" in output
    assert not exists(good)
    code, output = cli(local_cell, "students", "add", "kube-public")
    assert code == 1
    assert "reserved" in output
    # An existing namespace that is not a student's is not taken over.
    core.create_namespace({"metadata": {"name": taken}})
    try:
        code, output = cli(local_cell, "students", "add", taken)
        assert code == 1
        assert f"namespace {taken} already exists and is not a student's" in output
        assert "cell.distos.dev/managed" not in (core.read_namespace(taken).metadata.labels or {})
    finally:
        core.delete_namespace(taken)


RBAC_CHECKS = [
    # (verb, resource, own namespace?, allowed)
    ("create", "deployments.apps", True, "yes"),
    ("update", "deployments.apps", True, "yes"),
    ("patch", "deployments.apps/scale", True, "yes"),
    ("delete", "replicasets.apps", True, "yes"),
    ("create", "statefulsets.apps", True, "yes"),
    ("create", "pods", True, "yes"),
    ("delete", "pods", True, "yes"),
    ("get", "pods/log", True, "yes"),
    ("create", "pods/exec", True, "yes"),
    ("create", "jobs.batch", True, "yes"),
    ("create", "cronjobs.batch", True, "yes"),
    ("create", "services", True, "yes"),
    ("create", "configmaps", True, "yes"),
    ("create", "poddisruptionbudgets.policy", True, "yes"),
    ("create", "allocs.cell.distos.dev", True, "yes"),
    ("get", "bandquotas.cell.distos.dev", True, "yes"),
    ("list", "bandquotas.cell.distos.dev", True, "yes"),
    ("update", "bandquotas.cell.distos.dev", True, "no"),
    ("patch", "bandquotas.cell.distos.dev", True, "no"),
    ("delete", "bandquotas.cell.distos.dev", True, "no"),
    ("create", "bandquotas.cell.distos.dev", True, "no"),
    ("get", "secrets", True, "no"),
    ("create", "rolebindings.rbac.authorization.k8s.io", True, "no"),
    ("list", "pods", False, "no"),
    ("get", "configmaps", False, "no"),
    ("create", "deployments.apps", False, "no"),
    ("get", "bandquotas.cell.distos.dev", False, "no"),
]


@pytest.mark.parametrize(("verb", "resource", "own", "expected"), RBAC_CHECKS,
                         ids=[f"{v}-{r}-{'own' if o else 'other'}" for v, r, o, _ in RBAC_CHECKS])
def test_rbac_of_a_student(local_cell: LocalCell, rbac_students: tuple[str, str], verb: str, resource: str,
                           own: bool, expected: str) -> None:
    me, other = rbac_students
    result = subprocess.run(
        [str(local_cell.kubectl), f"--kubeconfig={kubeconfig_of(local_cell.paths, me)}", "auth", "can-i", verb,
         resource, "-n", me if own else other], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == expected, result.stderr


def test_kubectl_get_all_works_for_a_student(local_cell: LocalCell, rbac_students: tuple[str, str]) -> None:
    """A student's first command: `kubectl get all` lists kinds beyond what they manage (RCs, DaemonSets, HPAs)."""
    me, other = rbac_students
    mine = subprocess.run([str(local_cell.kubectl), f"--kubeconfig={kubeconfig_of(local_cell.paths, me)}", "get", "all",
                           "-n", me], capture_output=True, text=True, timeout=30)
    assert mine.returncode == 0, mine.stderr
    theirs = subprocess.run([str(local_cell.kubectl), f"--kubeconfig={kubeconfig_of(local_cell.paths, me)}", "get",
                             "all", "-n", other], capture_output=True, text=True, timeout=30)
    assert theirs.returncode != 0 and "forbidden" in theirs.stderr


def test_rbac_cluster_reads(local_cell: LocalCell, rbac_students: tuple[str, str]) -> None:
    me, _ = rbac_students
    for verb, resource, expected in [("list", "nodes", "yes"), ("get", "priorityclasses.scheduling.k8s.io", "yes"),
                                     ("delete", "nodes", "no"), ("list", "namespaces", "no")]:
        result = subprocess.run(
            [str(local_cell.kubectl), f"--kubeconfig={kubeconfig_of(local_cell.paths, me)}", "auth", "can-i", verb,
             resource], capture_output=True, text=True, timeout=30)
        assert result.stdout.strip() == expected, (verb, resource, result.stderr)


@pytest.fixture(scope="module")
def rbac_students(local_cell: LocalCell) -> Iterator[tuple[str, str]]:
    pair = names(2)
    code, output = cli(local_cell, "students", "add", *pair)
    assert code == 0, output
    yield pair[0], pair[1]
    remove_students(pair, local_cell.paths)


def test_list_and_remove(local_cell: LocalCell, kube_api: client.ApiClient, cleanup: list[str]) -> None:
    (frank,) = cleanup[:] = names(1)
    assert cli(local_cell, "students", "add", frank)[0] == 0
    code, output = cli(local_cell, "students", "list")
    assert code == 0
    assert frank in output
    code, output = cli(local_cell, "students", "remove", frank)
    assert code == 0, output
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(kube_api).read_namespace(frank)
    assert info.value.status == 404
    assert not kubeconfig_of(local_cell.paths, frank).exists()
    code, output = cli(local_cell, "students", "remove", frank)
    assert code == 1
    assert f"no student named '{frank}'" in output
    # Only students' namespaces can be removed this way.
    code, output = cli(local_cell, "students", "remove", "default")
    assert code == 1
    assert "'default' is reserved" in output
    plain = f"p-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube_api).create_namespace({"metadata": {"name": plain}})
    try:
        code, output = cli(local_cell, "students", "remove", plain)
        assert code == 1
        assert f"no student named '{plain}'" in output
        assert client.CoreV1Api(kube_api).read_namespace(plain).metadata.deletion_timestamp is None
    finally:
        client.CoreV1Api(kube_api).delete_namespace(plain)

"""`cell why -f MANIFEST` without a cluster: the inputs gathered through the extensions' own caches from
one (fake) listing of the API, the record printed as text and as JSON, bad input as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import cell.why as why_module
from cell.cli.main import app
from cell.errors import CellError
from cell.why import WhyFormat, read_manifests, why_manifest
from scheduler_ext.kube import names
from scheduler_ext.kube.errors import APINotFoundError
from tests.unit.extender.extender_fixtures import node_manifest, pod_manifest

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: alice}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      priorityClassName: production
      containers:
      - {name: main, image: web, resources: {requests: {cpu: "1", memory: 512Mi}}}
"""

BAND_QUOTA = {"metadata": {"name": "quota", "namespace": "alice"},
              "spec": {"bands": {"production": {"cpu": "2", "memory": "2Gi"}, "batch": {"cpu": "4", "memory": "4Gi"}}}}
RUNNING = {"metadata": {"name": "api", "namespace": "alice", "uid": "u-api"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                    "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
                        "priorityClassName": "production",
                        "containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}}}}


class FakeRaw:
    """RawClient's get over fixed lists, by path (list items carry no kind, as the API serves them)."""

    def __init__(self, _: object) -> None:
        self.lists = {names.BANDQUOTAS.path: [BAND_QUOTA], names.DEPLOYMENTS.object_path("alice"): [RUNNING],
                      names.NODES.path: [node_manifest("node-1", cpu="4", memory="8Gi")]}
        self.namespaces = {"alice": {names.MANAGED_LABEL: "true"}, "default": {}}

    def get(self, path: str, params: Any = None, timeout: float = 0) -> dict[str, Any]:
        if path.startswith(names.NAMESPACES.path + "/"):
            name = path.rsplit("/", 1)[1]
            if name not in self.namespaces:
                raise APINotFoundError(404, "Not Found")
            return {"metadata": {"name": name, "labels": self.namespaces[name]}}
        return {"items": self.lists.get(path, [])}


@pytest.fixture
def fake_cell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(why_module, "RawClient", FakeRaw)
    monkeypatch.setattr(why_module, "api_client", lambda _: object())
    nodes = [node_manifest("node-1", cpu="4", memory="8Gi"), node_manifest("node-2", cpu="4", memory="8Gi")]
    pods = [pod_manifest("filler", namespace="bob", node="node-2", cpu="3", priority=500000, phase="Running"),
            pod_manifest("waiting", namespace="bob", cpu="1")]  # pending: holds nothing
    monkeypatch.setattr(why_module, "list_objects", lambda _: (nodes, pods, []))
    path = tmp_path / "web.yaml"
    path.write_text(DEPLOYMENT)
    return path


def test_the_namespace_is_seen_as_the_webhook_sees_it(fake_cell: Path) -> None:
    view = why_module.quota_view(object(), "alice")  # type: ignore[arg-type]
    assert view.quota is not None and view.quota.ref == "alice/quota"
    assert [str(ref) for ref in view.workloads] == ["Deployment alice/api"]
    assert view.largest is not None and view.largest.cpu == 4000


def test_why_manifest_prints_admission_placement_and_checked_suggestions(fake_cell: Path) -> None:
    console = Console(record=True, width=200)
    [record] = why_manifest(fake_cell, Path("kubeconfig"), console=console)
    text = console.export_text()
    assert "Deployment alice/web: would not get in whole" in text
    assert "refused at admission: BandQuota alice/quota: band production needs cpu 3, 500m in use, limit 2" in text
    assert "placement: 3 of 3 pod(s) placed: node-1 x3" in text  # node-2's batch pod leaves 1 cpu there
    kinds = {s["kind"]: s["change"] for s in record["suggestions"]}
    # Over in cpu (3 + 500m of 2) and memory (1.5Gi + 1Gi of 2Gi): requests scale both together.
    assert kinds["replicas"] == {"replicas": 1}
    assert kinds["requests"] == {"requests": {"cpu": "500m", "memory": "256Mi"}}
    assert kinds["quota"] == {"bandQuota": {"band": "production", "cpu": "3500m", "memory": "2560Mi"}}


def test_why_manifest_json_is_the_record(fake_cell: Path) -> None:
    console = Console(record=True, width=200)
    why_manifest(fake_cell, Path("kubeconfig"), console=console, output=WhyFormat.json)
    data = json.loads(console.export_text())
    assert data["job"] == "Deployment alice/web" and data["admitted"] is False
    assert {s["kind"] for s in data["suggestions"]} >= {"replicas", "requests", "band", "quota"}


def test_the_command_takes_a_pod_or_a_manifest_not_both(fake_cell: Path) -> None:
    for args in (["why"], ["why", "alice/web-1", "-f", str(fake_cell)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and "either NAMESPACE/POD or -f MANIFEST" in result.output


@pytest.mark.parametrize(("content", "message"), [
    ("kind: [unclosed", "is not valid YAML"),
    ("- just\n- a list\n", "expected one or more Kubernetes objects"),
    ("", "expected one or more Kubernetes objects"),
])
def test_bad_manifests_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(CellError, match=message):
        read_manifests(path)


def test_a_missing_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CellError, match="cannot read"):
        read_manifests(tmp_path / "absent.yaml")


def test_an_unmanaged_namespace_has_no_quota_to_refuse_with(fake_cell: Path, tmp_path: Path) -> None:
    assert why_module.quota_view(object(), "default").managed is False  # type: ignore[arg-type]
    path = tmp_path / "anywhere.yaml"
    path.write_text(DEPLOYMENT.replace("namespace: alice", "labels: {}"))
    [record] = why_manifest(path, Path("kubeconfig"), namespace="default", console=Console(record=True))
    assert record["job"] == "Deployment default/web" and record["admitted"] is True
    with pytest.raises(CellError, match="namespace nowhere does not exist"):
        why_module.quota_view(object(), "nowhere")  # type: ignore[arg-type]


def test_an_object_that_is_not_a_job_is_named(fake_cell: Path, tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: answers}\n")
    with pytest.raises(CellError, match="ConfigMap default/answers: not a job"):
        why_manifest(path, Path("kubeconfig"), console=Console(record=True))


def test_a_pending_pods_record_gets_suggestions(fake_cell: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    big = pod_manifest("big", namespace="bob", cpu="4500m", priority=500000)

    class PodRaw(FakeRaw):
        def get(self, path: str, params: Any = None, timeout: float = 0) -> dict[str, Any]:
            return big if path == names.PODS.object_path("bob", "big") else super().get(path, params, timeout)

    monkeypatch.setattr(why_module, "RawClient", PodRaw)
    console = Console(record=True, width=200)
    record = why_module.why("bob", "big", Path("kubeconfig"), tmp_path, console=console)  # no extender.url
    kinds = {s["kind"]: s["change"] for s in record["suggestions"]}
    assert kinds == {"requests": {"requests": {"cpu": "4"}}}  # node-1's 4 cpu; no band or preemption helps
    assert "would let it in: request cpu 4 per pod (from 4500m) (on node-1)" in console.export_text()


def test_nodes_whose_taints_the_pods_do_not_tolerate_are_left_out_as_kube_scheduler_would() -> None:
    def tainted(name: str, *taints: dict[str, str]) -> dict[str, Any]:
        return {**node_manifest(name), "spec": {"taints": list(taints)}}

    nodes = [node_manifest("plain"), tainted("gpu", {"key": "gpu", "value": "yes", "effect": "NoSchedule"}),
             tainted("soft", {"key": "x", "effect": "PreferNoSchedule"}),
             tainted("drain", {"key": "maint", "effect": "NoExecute"})]
    assert why_module.untolerated_nodes(nodes, {}) == ["gpu", "drain"]
    equal = {"tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]}
    assert why_module.untolerated_nodes(nodes, equal) == ["drain"]
    wrong_value = {"tolerations": [{"key": "gpu", "value": "no"}]}
    assert why_module.untolerated_nodes(nodes, wrong_value) == ["gpu", "drain"]
    assert why_module.untolerated_nodes(nodes, {"tolerations": [{"operator": "Exists"}]}) == []


def test_why_manifest_judges_only_the_nodes_its_pods_tolerate(fake_cell: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tainted = {**node_manifest("node-1", cpu="4", memory="8Gi"),
               "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}
    nodes = [tainted, node_manifest("node-2", cpu="4", memory="8Gi")]
    monkeypatch.setattr(why_module, "list_objects", lambda _: (nodes, [], []))
    console = Console(record=True, width=200)
    [record] = why_manifest(fake_cell, Path("kubeconfig"), console=console)
    assert "1 node(s) left out: taints its pods do not tolerate (node-1)" in console.export_text()
    assert set(record["nodes"]) == {"node-2"}
    assert {p["node"] for p in record["placement"]} == {"node-2"}

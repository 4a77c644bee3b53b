"""Snapshot and workload files: what they mean, and one-line errors naming the field for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cell.errors import CellError
from cell.sim.snapshot import checkpoint_documents, load_snapshot_file
from cell.sim.workload import load_workload
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.resources import Resources
from tests.unit.sim.sim_builders import band_quota, nodes, running_pod

ROOT = Path(__file__).resolve().parents[3]
GiB = 2**30


def _write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_compact_cell_expands_machine_shapes_into_nodes() -> None:
    cell = load_snapshot_file(ROOT / "docs/sim/cell.yaml")
    snapshot = cell.snapshot()
    assert sorted(snapshot.nodes) == [f"node-{i}" for i in range(1, 7)]
    assert snapshot.nodes["node-1"].allocatable == Resources(8000, 32 * GiB)
    assert snapshot.nodes["node-5"].allocatable == Resources(16000, 64 * GiB)
    assert snapshot.nodes["node-5"].labels["cell.distos.dev/platform"] == "big"
    assert [snapshot.nodes[f"node-{i}"].zone for i in range(1, 7)] == ["zone-a", "zone-b", "zone-c", "zone-a",
                                                                        "zone-a", "zone-b"]
    assert snapshot.nodes["node-1"].rack != snapshot.nodes["node-5"].rack  # racks differ per platform
    assert cell.quotas["bob"] is not None
    assert cell.quotas["bob"].limit(Band.PRODUCTION) == Resources(4000, 8 * GiB)
    assert cell.quotas["bob"].limit(Band.BEST_EFFORT) is None  # Q4: unlimited unless listed
    assert cell.quotas["bob"].limit(Band.MONITORING) == Resources()


def test_checkpoint_reads_kubernetes_objects_and_quota_use() -> None:
    cell = load_snapshot_file(ROOT / "docs/sim/checkpoint.yaml")
    snapshot = cell.snapshot()
    assert len(snapshot.nodes) == 3 and sum(len(n.pods) for n in snapshot.nodes.values()) == 12
    assert set(cell.quotas) == {"alice", "bob"}
    # Nothing of alice's runs yet: her use is zero in every band.
    assert all(r == Resources() for r in cell.quota_use()["alice"].values())


def test_quota_use_prefers_status_used_and_else_charges_running_pods(tmp_path: Path) -> None:
    objects = [*nodes(1), running_pod("a", "node-1", band="production", namespace="alice", cpu="2", memory="2Gi"),
               running_pod("b", "node-1", band="batch", namespace="bob", cpu="1", memory="1Gi"),
               band_quota("alice", {"production": {"cpu": "4", "memory": "4Gi"}}),
               band_quota("bob", {"batch": {"cpu": "4", "memory": "4Gi"}},
                          used={"batch": {"cpu": "3", "memory": "3Gi"}})]
    cell = load_snapshot_file(_write(tmp_path, "c.yaml", {"apiVersion": "v1", "kind": "List", "items": objects}))
    use = cell.quota_use()
    assert use["alice"][Band.PRODUCTION] == Resources(2000, 2 * GiB)
    assert use["bob"][Band.BATCH] == Resources(3000, 3 * GiB)  # the operator's status.used wins (Q7)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    cell = load_snapshot_file(ROOT / "docs/sim/checkpoint.yaml")
    path = _write(tmp_path, "again.yaml", checkpoint_documents(cell))
    again = load_snapshot_file(path)
    assert {n: [p.uid for p in v.pods] for n, v in again.snapshot().nodes.items()} == \
           {n: [p.uid for p in v.pods] for n, v in cell.snapshot().nodes.items()}
    assert again.quotas == cell.quotas


def test_multi_document_stream_and_managed_namespace_without_quota(tmp_path: Path) -> None:
    text = "\n---\n".join(yaml.safe_dump(o) for o in [
        *nodes(2), {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "carol", "labels": {"cell.distos.dev/managed": "true"}}}])
    cell = load_snapshot_file(_write(tmp_path, "s.yaml", text))
    assert len(cell.nodes) == 2
    assert cell.quotas == {"carol": None}  # managed, no BandQuota: zero quota but best-effort (Q4)


@pytest.mark.parametrize(("content", "message"), [
    ("nodes: [\n", "not valid YAML at line"),
    ("", "empty"),
    ({"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "x"}}]},
     "items[0]: kind 'Service' is not part of a cell snapshot"),
    ({"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"}, "spec": {}}]}, "needs spec.containers"),
    ({"kind": "List", "items": [{"kind": "Node", "metadata": {"name": "n"},
                                 "status": {"allocatable": {"cpu": "lots", "memory": "1Gi"}}}]},
     "status.allocatable.cpu: must be a quantity, got 'lots'"),
    ({"kind": "List", "items": [band_quota("alice", {"production": {"cpu": "1"}})]}, "production.memory: required"),
    ({"kind": "List", "items": [band_quota("alice", {"production": {"cpu": "1", "memory": "1Gi"}})]},
     "no Node objects"),
    ({"kind": "Cell", "machines": [{"count": 0, "cpu": "8", "memory": "1Gi"}]}, "machines[0].count: must be a "
                                                                                  "positive integer"),
    ({"kind": "Cell", "machines": [{"count": 2, "cpu": "8", "memory": "x"}]}, "machines[0].memory: must be a quantity"),
    ({"kind": "Cell", "machines": [{"count": 2, "cpu": "8", "memory": "1Gi", "gpu": 1}]}, "machines[0].gpu: unknown"),
    ({"kind": "Cell", "machines": []}, "machines: required"),
    ({"kind": "Cell", "machines": [{"count": 1, "cpu": "1", "memory": "1Gi"}], "quotas": {"a": {"prod": {}}}},
     "quotas.a.prod: unknown band"),
])
def test_bad_snapshots_are_one_line_errors(tmp_path: Path, content: object, message: str) -> None:
    path = _write(tmp_path, "bad.yaml", content)
    with pytest.raises(CellError) as error:
        load_snapshot_file(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_missing_snapshot_file(tmp_path: Path) -> None:
    with pytest.raises(CellError, match="no such file"):
        load_snapshot_file(tmp_path / "nope.yaml")


def test_workload_example_parses_into_jobs_allocs_and_tasks() -> None:
    load = load_workload(ROOT / "docs/sim/workload.yaml")
    assert [a.key for a in load.allocs] == ["alice/cache"]
    assert load.allocs[0].spread_by == "topology.kubernetes.io/zone"
    web = next(j for j in load.jobs if j.name == "web")
    tasks = web.task_infos()
    assert [t.key for t in tasks][:2] == ["alice/web-0", "alice/web-1"] and len(tasks) == 6
    assert {t.owner for t in tasks} == {"alice/Job/web"}
    assert tasks[3].band is Band.PRODUCTION and tasks[3].requests == Resources(1000, 2 * GiB)
    members = next(j for j in load.jobs if j.name == "cache").task_infos()
    assert {t.alloc for t in members} == {"alice/cache"}
    assert load.task_count == 6 + 2 + 24 + 5 + 8 + 40


def test_inline_alloc_is_an_alloc_set_of_the_jobs_own(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.yaml", {"kind": "Workload", "jobs": [
        {"name": "db", "namespace": "alice", "band": "production", "tasks": 3,
         "requests": {"cpu": "1", "memory": "1Gi"},
         "alloc": {"spreadBy": "cell.distos.dev/rack", "resources": {"cpu": "2", "memory": "2Gi"}}}]})
    load = load_workload(path)
    assert load.jobs[0].alloc == "db"
    assert load.allocs[0].key == "alice/db" and load.allocs[0].count == 3
    assert load.allocs[0].info().resources == Resources(2000, 2 * GiB)


@pytest.mark.parametrize(("content", "message"), [
    ({"kind": "Workload"}, "jobs: required"),
    ({"kind": "Workload", "jobs": [{"name": "a", "band": "prod", "tasks": 1, "requests": {"cpu": "1"}}]},
     "jobs[0].band: unknown band 'prod'"),
    ({"kind": "Workload", "jobs": [{"name": "a", "band": "batch", "tasks": 0, "requests": {"cpu": "1"}}]},
     "jobs[0].tasks: must be a positive integer"),
    ({"kind": "Workload", "jobs": [{"name": "a", "band": "batch", "tasks": 1, "requests": {"cpu": "-1"}}]},
     "jobs[0].requests.cpu: must be a non-negative quantity"),
    ({"kind": "Workload", "jobs": [{"name": "a", "band": "batch", "tasks": 1, "requests": {"gpu": "1"}}]},
     "jobs[0].requests.gpu: unknown resource"),
    ({"kind": "Workload", "jobs": [{"name": "a", "band": "batch", "tasks": 1, "requests": {"cpu": "1"},
                                    "alloc": "nope"}]}, "jobs[0].alloc: no alloc default/nope"),
    ({"kind": "Workload", "jobs": [{"name": "a", "band": "batch", "tasks": 1, "requests": {"cpu": "1"}},
                                   {"name": "a", "band": "batch", "tasks": 1, "requests": {"cpu": "1"}}]},
     "job default/a is defined twice"),
    ({"kind": "Workload", "jobs": [{"name": "a", "band": "batch", "tasks": 1, "requests": {"cpu": "1"},
                                    "replicas": 3}]}, "jobs[0].replicas: unknown field"),
    ({"kind": "Deployment", "jobs": []}, "kind: expected Workload"),
])
def test_bad_workloads_are_one_line_errors_naming_every_field(tmp_path: Path, content: dict, message: str) -> None:
    path = _write(tmp_path, "w.yaml", content)
    with pytest.raises(CellError) as error:
        load_workload(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_workload_errors_are_collected_not_stopped_at_the_first(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.yaml", {"kind": "Workload", "jobs": [
        {"name": "a", "band": "nope", "tasks": -1, "requests": {"cpu": "x"}}]})
    with pytest.raises(CellError) as error:
        load_workload(path)
    for field in ("jobs[0].band", "jobs[0].tasks", "jobs[0].requests.cpu"):
        assert field in str(error.value)


def test_alloc_known_in_the_cell_may_be_referenced(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.yaml", {"kind": "Workload", "jobs": [
        {"name": "m", "namespace": "alice", "band": "production", "tasks": 1, "requests": {"cpu": "1"},
         "alloc": "cache"}]})
    assert load_workload(path, {"alice/cache"}).jobs[0].alloc == "cache"

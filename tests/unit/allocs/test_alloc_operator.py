"""The operator's Alloc reconciler against an in-memory API with resourceVersion semantics: the
status is the record, stale writes lose, placement is serialised, deletion evicts then lets go.
No cluster: the module's I/O functions are replaced by a fake that behaves like the API server.
The finalizer is kopf's (it adds and removes it): here, what the operator asks of kopf is checked."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest

from scheduler_ext.operator import allocs as operator
from scheduler_ext.operator import bandquota, charges  # noqa: F401  (every handler registered, as in the operator)
from scheduler_ext.operator.settings import configure
from scheduler_ext.policy.model import ALLOC_LABEL, ZONE_LABEL

Manifest = dict[str, Any]


def node_manifest(name: str, zone: str = "zone-a", cpu: str = "8") -> Manifest:
    return {"metadata": {"name": name, "labels": {ZONE_LABEL: zone}},
            "status": {"allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"}}}


def pod_manifest(name: str, node: str | None, cpu: str, alloc: str | None = None, namespace: str = "alice") -> Manifest:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "labels": {ALLOC_LABEL: alloc} if alloc else {}},
            "spec": {"nodeName": node, "priority": 800000,
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]},
            "status": {"phase": "Running" if node else "Pending"}}


def alloc_manifest(name: str, count: int = 1, cpu: str = "2", spread_by: str | None = None) -> Manifest:
    spec: Manifest = {"priorityClassName": "production", "count": count, "resources": {"cpu": cpu, "memory": "1Gi"}}
    if spread_by:
        spec["spreadBy"] = spread_by
    return {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc",
            "metadata": {"name": name, "namespace": "alice", "generation": 1}, "spec": spec}


class FakeAPI:
    """Nodes, pods and Allocs, with the API server's optimistic concurrency on Allocs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodes: dict[str, Manifest] = {}
        self.pods: dict[str, Manifest] = {}
        self.allocs: dict[str, Manifest] = {}
        self.version = 0
        self.status_writes: list[tuple[str, Manifest]] = []
        self.evicted: list[str] = []
        self.conflicts = 0
        self.budget_blocks: set[str] = set()
        self.after_list_allocs: Callable[[], None] | None = None
        self.bound_while_placing: dict[str, Manifest] = {}

    # --- set-up ----------------------------------------------------------------------------------
    def add_node(self, manifest: Manifest) -> None:
        self.nodes[manifest["metadata"]["name"]] = manifest

    def add_pod(self, manifest: Manifest) -> None:
        self.pods[manifest["metadata"]["name"]] = manifest

    def add_alloc(self, manifest: Manifest) -> str:
        with self.lock:
            self.version += 1
            manifest = copy.deepcopy(manifest)
            manifest["metadata"]["resourceVersion"] = str(self.version)
            key = f"{manifest['metadata']['namespace']}/{manifest['metadata']['name']}"
            self.allocs[key] = manifest
            return key

    def delete_alloc(self, key: str) -> None:
        with self.lock:
            obj = self.allocs[key]
            if obj["metadata"].get("finalizers"):
                obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                self.version += 1
                obj["metadata"]["resourceVersion"] = str(self.version)
            else:
                del self.allocs[key]

    def status(self, key: str) -> Manifest:
        return dict(self.allocs[key].get("status") or {})

    # --- what the operator calls -----------------------------------------------------------------
    def get_alloc(self, _api: Any, namespace: str, name: str) -> Manifest | None:
        with self.lock:
            obj = self.allocs.get(f"{namespace}/{name}")
            return copy.deepcopy(obj) if obj else None

    def list_allocs(self, _api: Any) -> list[Manifest]:
        with self.lock:
            listed = copy.deepcopy(list(self.allocs.values()))
        if self.after_list_allocs:  # someone writes after this read, before the operator's write
            hook, self.after_list_allocs = self.after_list_allocs, None
            hook()
        return listed

    def list_node_names(self, _api: Any) -> set[str]:
        return set(self.nodes)

    def list_nodes(self, _api: Any) -> list[Manifest]:
        time.sleep(0.01)  # let concurrent reconciles interleave if nothing serialised them
        return copy.deepcopy(list(self.nodes.values()))

    def list_bound_pods(self, _api: Any, node: str | None = None) -> list[Manifest]:
        if node and node in self.bound_while_placing:
            self.add_pod(self.bound_while_placing.pop(node))
        return [copy.deepcopy(p) for p in self.pods.values()
                if p["spec"].get("nodeName") and (node is None or p["spec"]["nodeName"] == node)]

    def list_members(self, _api: Any, namespace: str, name: str) -> list[Manifest]:
        return [copy.deepcopy(p) for p in self.pods.values() if p["metadata"]["namespace"] == namespace
                and p["metadata"]["labels"].get(ALLOC_LABEL) == name]

    def _write(self, obj: Manifest, change: Callable[[Manifest], None]) -> Manifest:
        with self.lock:
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            stored = self.allocs.get(key)
            if stored is None or stored["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                self.conflicts += 1
                raise operator.Conflict("409 Conflict")
            change(stored)
            self.version += 1
            stored["metadata"]["resourceVersion"] = str(self.version)
            if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get("finalizers"):
                del self.allocs[key]
            return copy.deepcopy(stored)

    def write_status(self, _api: Any, obj: Manifest, status: Manifest) -> Manifest:
        self.status_writes.append((obj["metadata"]["name"], copy.deepcopy(status)))
        return self._write(obj, lambda stored: stored.__setitem__("status", copy.deepcopy(status)))

    def evict(self, _api: Any, namespace: str, name: str) -> bool:
        if name in self.budget_blocks:
            return False
        self.evicted.append(name)
        self.pods.pop(name, None)
        return True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAPI]:
    api = FakeAPI()
    for name in ("get_alloc", "list_allocs", "list_node_names", "list_nodes", "list_bound_pods", "list_members",
                 "write_status", "evict"):
        monkeypatch.setattr(operator, name, getattr(api, name))
    yield api


def reconcile(*keys: str) -> None:
    """Request the keys on one reconciler (one operator) and wait until it is idle."""
    async def main() -> None:
        rec = operator.AllocReconciler(api=None)  # type: ignore[arg-type]
        for key in keys:
            rec.request(key)
        await rec.idle()

    asyncio.run(main())


def release(key: str) -> bool:
    """kopf's deletion handler's work: True once the finalizer may go."""
    return asyncio.run(operator.AllocReconciler(api=None).release(key))  # type: ignore[arg-type]


def protected(manifest: Manifest) -> Manifest:
    """As kopf leaves an Alloc it has seen: its finalizer on."""
    return {**manifest, "metadata": {**manifest["metadata"], "finalizers": [operator.FINALIZER]}}


def nodes_of(status: Manifest) -> list[str]:
    return [i["node"] for i in status.get("instances") or []]


def test_places_protects_and_records(fake: FakeAPI) -> None:
    for i, zone in enumerate(("zone-a", "zone-a", "zone-b")):
        fake.add_node(node_manifest(f"n{i}", zone))
    key = fake.add_alloc(alloc_manifest("cache", count=2, spread_by=ZONE_LABEL))
    reconcile(key)
    status = fake.status(key)
    assert status["phase"] == "Reserved" and status["message"] == "" and status["observedGeneration"] == 1
    assert sorted(nodes_of(status)) in (["n0", "n2"], ["n1", "n2"])


def test_kopf_protects_allocs_and_only_allocs_with_the_alloc_finalizer() -> None:
    """kopf adds its finalizer to objects with a deletion handler or a timer and removes it once the
    deletion handler succeeded: named as before (Allocs protected earlier stay protected), and on
    Allocs alone (a BandQuota or a pod must never wait for the operator to be deleted)."""
    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.persistence.finalizer == operator.FINALIZER == "cell.distos.dev/alloc-protection"
    registry = kopf.get_default_registry()
    protecting = [h for reg in (registry._changing, registry._spawning) for h in reg._handlers if h.requires_finalizer]
    assert {h.id for h in protecting} == {"alloc-release", "alloc-retry", "alloc-resync"}
    assert {(h.selector.group, h.selector.version, h.selector.any_name) for h in protecting} == {
        ("cell.distos.dev", "v1alpha1", "allocs")}


def test_a_restarted_operator_writes_nothing_new(fake: FakeAPI) -> None:
    fake.add_node(node_manifest("n0"))
    fake.add_node(node_manifest("n1"))
    key = fake.add_alloc(alloc_manifest("cache", count=2))
    reconcile(key)
    recorded, writes = fake.status(key), len(fake.status_writes)
    reconcile(key)  # a fresh reconciler: what a restart starts with
    assert fake.status(key) == recorded and len(fake.status_writes) == writes


def test_members_use_is_recorded_per_instance(fake: FakeAPI) -> None:
    fake.add_node(node_manifest("n0"))
    key = fake.add_alloc(alloc_manifest("cache", cpu="2"))
    reconcile(key)
    fake.add_pod(pod_manifest("m1", "n0", "500m", alloc="cache"))
    fake.add_pod(pod_manifest("m2", "n0", "1", alloc="cache"))
    fake.add_pod(pod_manifest("m3", None, "1", alloc="cache"))  # not bound: uses nothing yet
    reconcile(key)
    assert fake.status(key)["instances"] == [{"index": 0, "node": "n0", "used": {"cpu": "1500m", "memory": "512Mi"}}]


def test_two_allocs_racing_for_the_last_node_never_both_get_it(fake: FakeAPI) -> None:
    fake.add_node(node_manifest("n0"))
    left = fake.add_alloc(alloc_manifest("left", cpu="5"))
    right = fake.add_alloc(alloc_manifest("right", cpu="5"))
    reconcile(left, right)
    phases = sorted(fake.status(k)["phase"] for k in (left, right))
    assert phases == ["Pending", "Reserved"]
    loser = next(k for k in (left, right) if fake.status(k)["phase"] == "Pending")
    assert "instance needs cpu 5" in fake.status(loser)["message"]


def test_a_stale_decision_is_never_written(fake: FakeAPI) -> None:
    """Another writer records a placement between our read and our write: ours is refused (409),
    the reconcile starts again from the record and keeps the other placement."""
    fake.add_node(node_manifest("n0"))
    fake.add_node(node_manifest("n1"))
    key = fake.add_alloc(alloc_manifest("cache"))

    def rival() -> None:
        stored = fake.get_alloc(None, "alice", "cache")
        assert stored is not None
        fake.write_status(None, stored, {"phase": "Reserved", "instances": [{"index": 0, "node": "n1"}],
                                         "message": "", "observedGeneration": 1})

    fake.add_alloc(fake.allocs[key] | {"metadata": {**fake.allocs[key]["metadata"],
                                                     "finalizers": [operator.FINALIZER]}})
    fake.after_list_allocs = rival
    reconcile(key)
    assert fake.after_list_allocs is None, "the rival never wrote"
    assert fake.conflicts == 1, "the operator's decision on the stale read was not refused"
    assert nodes_of(fake.status(key)) == ["n1"]
    assert fake.status(key)["instances"][0]["used"] == {"cpu": "0", "memory": "0"}


def test_an_instance_squeezed_out_while_placing_goes_elsewhere(fake: FakeAPI) -> None:
    fake.add_node(node_manifest("n0", cpu="8"))
    fake.add_node(node_manifest("n1", cpu="4"))
    key = fake.add_alloc(alloc_manifest("cache", cpu="4"))
    # A prod alloc spreads: n0 (least allocated) is chosen; a 6 CPU pod is bound there meanwhile.
    fake.bound_while_placing["n0"] = pod_manifest("intruder", "n0", "6")
    reconcile(key)
    status = fake.status(key)
    assert status["phase"] == "Reserved" and nodes_of(status) == ["n1"]
    squeezed = [s for _, s in fake.status_writes if "filled up while placing" in s.get("message", "")]
    assert len(squeezed) == 1, "the instance was given back once, then placed on a fresh reading"


def test_deletion_releases_evicts_then_lets_go(fake: FakeAPI) -> None:
    fake.add_node(node_manifest("n0"))
    key = fake.add_alloc(protected(alloc_manifest("cache")))
    reconcile(key)
    fake.add_pod(pod_manifest("m1", "n0", "1", alloc="cache"))
    fake.add_pod(pod_manifest("m2", "n0", "1", alloc="cache"))
    fake.add_pod(pod_manifest("waiting", None, "1", alloc="cache"))
    fake.budget_blocks = {"m2"}
    fake.delete_alloc(key)
    reconcile(key)  # an event of the deleting Alloc: the deletion handler's, nothing is placed again
    assert release(key) is False, "let go with a member still running"
    assert fake.evicted == ["m1"]
    status = fake.status(key)
    assert status["instances"] == [] and "PodDisruptionBudget" in status["message"], status
    assert operator.FINALIZER in fake.allocs[key]["metadata"]["finalizers"]

    fake.budget_blocks = set()
    assert release(key) is False  # kopf retries the deletion handler
    assert fake.evicted == ["m1", "m2"]
    assert release(key) is True  # nothing bound is left: kopf takes its finalizer off
    assert "waiting" in fake.pods, "an unbound member holds nothing and is not evicted"


def test_an_unreadable_spec_is_reported_not_placed(fake: FakeAPI) -> None:
    fake.add_node(node_manifest("n0"))
    manifest = alloc_manifest("odd")
    manifest["spec"]["resources"]["cpu"] = "lots"
    key = fake.add_alloc(manifest)
    reconcile(key)
    status = fake.status(key)
    assert status["phase"] == "Pending" and status["instances"] == []
    assert "spec cannot be read" in status["message"] and "lots" in status["message"]


@pytest.mark.parametrize(("change", "expected"), [
    ({}, False),
    ({"status": {"phase": "Pending"}}, True),
    ({"status": {"observedGeneration": 0}}, True),
    ({"status": {"instances": [{"index": 0, "node": "n0"}]}}, True),
    ({"metadata": {"finalizers": []}}, True),
    ({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}, True),
])
def test_the_sweep_retries_what_is_not_settled(change: Manifest, expected: bool) -> None:
    obj: Manifest = {"metadata": {"generation": 1, "finalizers": [operator.FINALIZER]}, "spec": {"count": 2},
                     "status": {"phase": "Reserved", "observedGeneration": 1,
                                "instances": [{"index": 0, "node": "n0"}, {"index": 1, "node": "n1"}]}}
    for part, fields in change.items():
        obj[part] = {**obj[part], **fields}
    assert operator.unsettled(obj) is expected

"""Conversion of API objects (plain dicts) into the policy model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.model import (
    AllocInfo,
    AllocInstance,
    CellSnapshot,
    NodeInfo,
    PodInfo,
    ServiceInfo,
    effective_requests,
    job_key,
)
from tests.unit.policy.policy_builders import BATCH, PROD, res


def _pod(**spec: object) -> dict:
    return {"metadata": {"name": "web-1", "namespace": "alice", "uid": "u1"}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                         {"resources": {"requests": {"cpu": "250m"}}}]}, res("500m", "64Mi")),
        ({"containers": [{"name": "no-requests"}]}, res()),
        # A regular init container larger than the sum of containers sets the request.
        ({"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}}],
          "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "10Mi"}}}]}, res("2", "1Gi")),
        # A sidecar (restartPolicy Always) keeps running: it adds to the containers.
        ({"containers": [{"resources": {"requests": {"cpu": "1"}}}],
          "initContainers": [{"restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}}]},
         res("1500m", "0")),
        ({"containers": [{"resources": {"requests": {"cpu": "1"}}}], "overhead": {"cpu": "100m", "memory": "1Mi"}},
         res("1100m", "1Mi")),
    ],
    ids=["sum", "none", "init-peak", "sidecar", "overhead"],
)
def test_effective_requests(spec: dict, expected: object) -> None:
    assert effective_requests(spec) == expected


@pytest.mark.parametrize(
    ("spec", "priority", "band"),
    [
        ({"priority": 800000, "priorityClassName": "batch"}, 800000, Band.PRODUCTION),  # admission wins
        ({"priorityClassName": "batch"}, BATCH, Band.BATCH),
        ({"priorityClassName": "unknown"}, 0, Band.BEST_EFFORT),
        ({}, 0, Band.BEST_EFFORT),
    ],
)
def test_pod_priority_and_band(spec: dict, priority: int, band: Band) -> None:
    info = PodInfo.from_manifest(_pod(containers=[], **spec))
    assert (info.priority, info.band) == (priority, band)


def test_pod_job_is_its_controller_or_itself() -> None:
    owned = _pod(containers=[])
    owned["metadata"]["ownerReferences"] = [
        {"kind": "Node", "name": "n"},
        {"kind": "ReplicaSet", "name": "web-abc", "controller": True},
    ]
    assert PodInfo.from_manifest(owned).owner == "alice/ReplicaSet/web-abc"
    assert PodInfo.from_manifest(_pod(containers=[])).owner == "alice/Pod/web-1"


def _service(name: str, namespace: str = "alice", **selector: str) -> ServiceInfo:
    return ServiceInfo.from_manifest({"metadata": {"namespace": namespace, "name": name},
                                      "spec": {"selector": selector}})


def test_a_pod_without_owners_is_one_job_with_the_service_selecting_it() -> None:
    bare = _pod(containers=[])
    bare["metadata"]["labels"] = {"service": "web", "tier": "front"}
    web, other = _service("web", service="web"), _service("db", service="db")
    assert PodInfo.from_manifest(bare, [other, web]).owner == "alice/Service/web"
    # Several select it: the first by name, whatever the order they come in.
    assert PodInfo.from_manifest(bare, [web, _service("a-front", tier="front")]).owner == "alice/Service/a-front"
    # A Service of another namespace, one without a selector, one whose selector misses: none is its job.
    assert PodInfo.from_manifest(bare, [_service("web", namespace="bob", service="web"), _service("manual"),
                                        _service("web2", service="web", tier="back"), other]).owner == "alice/Pod/web-1"
    # A controller comes first: a Deployment behind a Service keeps its own job.
    bare["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-abc", "controller": True}]
    assert PodInfo.from_manifest(bare, [web]).owner == "alice/ReplicaSet/web-abc"


def test_service_from_manifest_keeps_the_selector_as_sorted_pairs() -> None:
    service = ServiceInfo.from_manifest({"metadata": {"name": "web"}, "spec": {"selector": {"b": "2", "a": "1"}}})
    assert service == ServiceInfo("default", "web", (("a", "1"), ("b", "2")))
    assert service.selects("default", {"a": "1", "b": "2", "c": "3"})
    assert not service.selects("default", {"a": "1"})
    assert job_key("default", "p", None, {"a": "1", "b": "2"}, [service]) == "default/Service/web"


def test_pod_alloc_membership_and_binding() -> None:
    manifest = _pod(containers=[], nodeName="node-3", nodeSelector={"type": "kwok"})
    manifest["metadata"]["labels"] = {"cell.distos.dev/alloc": "cache"}
    info = PodInfo.from_manifest(manifest)
    assert info.alloc == "alice/cache"
    assert info.node_name == "node-3"
    assert dict(info.node_selector) == {"type": "kwok"}
    assert info.key == "alice/web-1"


def test_node_from_manifest() -> None:
    manifest = {
        "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "zone-b",
                                                   "cell.distos.dev/rack": "rack-2"}},
        "spec": {"unschedulable": True},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
    }
    info = NodeInfo.from_manifest(manifest)
    assert (info.name, info.allocatable, info.max_pods, info.unschedulable) == ("node-1", res("8", "32Gi"), 110, True)
    assert (info.zone, info.rack) == ("zone-b", "rack-2")


def test_node_derives_requested_and_job_counts() -> None:
    pods = tuple(PodInfo("a", f"p{i}", f"u{i}", PROD, res("1", "1Gi"), owner="a/ReplicaSet/web") for i in range(3))
    info = NodeInfo("n", res("8", "8Gi"), pods=pods)
    assert info.requested == res("3", "3Gi")
    assert info.job_counts == {"a/ReplicaSet/web": 3}
    assert info.without_pods({"u0"}).requested == res("2", "2Gi")


def test_alloc_from_manifest() -> None:
    manifest = {
        "metadata": {"name": "cache", "namespace": "alice"},
        "spec": {"priorityClassName": "batch", "count": 2, "resources": {"cpu": "500m", "memory": "256Mi"},
                 "spreadBy": "topology.kubernetes.io/zone", "nodeSelector": {"type": "kwok"}},
        "status": {"instances": [{"index": 0, "node": "node-3"}, {"index": 1}]},
    }
    info = AllocInfo.from_manifest(manifest)
    assert info.key == "alice/cache"
    assert (info.count, info.priority, info.resources) == (2, BATCH, res("500m", "256Mi"))
    assert info.spread_by == "topology.kubernetes.io/zone"
    assert info.instances == (AllocInstance(0, "node-3"),)  # an instance without a node is not placed


def test_snapshot_from_manifests_keeps_only_bound_active_pods() -> None:
    nodes = [{"metadata": {"name": "node-1"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi"}}}]
    running = _pod(containers=[{"resources": {"requests": {"cpu": "1"}}}], nodeName="node-1")
    done = _pod(containers=[{"resources": {"requests": {"cpu": "1"}}}], nodeName="node-1")
    done["metadata"]["name"], done["status"] = "done", {"phase": "Succeeded"}
    pending = _pod(containers=[{"resources": {"requests": {"cpu": "1"}}}])
    pending["metadata"]["name"] = "pending"
    alloc = {"metadata": {"name": "c", "namespace": "alice"}, "spec": {"resources": {"cpu": "1"}},
             "status": {"instances": [{"index": 0, "node": "node-1"}]}}
    snapshot = CellSnapshot.from_manifests(nodes, [running, done, pending], [alloc])
    assert [p.name for p in snapshot.nodes["node-1"].pods] == ["web-1"]
    assert [a.key for a in snapshot.allocs_on("node-1")] == ["alice/c"]
    assert snapshot.allocs_on("node-2") == ()


def test_snapshot_is_immutable_and_with_pod_bound_returns_a_new_one() -> None:
    snapshot = CellSnapshot([NodeInfo("n", res("4", "4Gi"))])
    with pytest.raises(AttributeError):
        snapshot.nodes = {}  # type: ignore[misc]
    bound = snapshot.with_pod_bound(PodInfo("a", "p", "u", requests=res("1", "1Gi")), "n")
    assert snapshot.nodes["n"].requested == res()
    assert bound.nodes["n"].requested == res("1", "1Gi")
    assert bound.nodes["n"].pods[0].node_name == "n"
    assert bound.allocs is snapshot.allocs


_labels = st.dictionaries(st.sampled_from("abc"), st.sampled_from("xy"), max_size=3)


@given(labels=_labels, services=st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3"]), _labels), max_size=4),
       seed=st.randoms())
def test_a_pods_service_job_is_a_selecting_service_whatever_their_order(
        labels: dict[str, str], services: list[tuple[str, dict[str, str]]], seed: random.Random) -> None:
    infos = [_service(name, **selector) for name, selector in services]
    key = job_key("alice", "p", None, labels, infos)
    seed.shuffle(infos)
    assert job_key("alice", "p", None, labels, infos) == key
    selecting = sorted(s.name for s in infos if s.selector and all(labels.get(k) == v for k, v in s.selector))
    assert key == (f"alice/Service/{selecting[0]}" if selecting else "alice/Pod/p")

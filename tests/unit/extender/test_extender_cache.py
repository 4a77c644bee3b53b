"""The extender's cache: list and watch events fed by hand (no cluster)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler_ext.extender.cache import ALLOCS, NODES, PODS, SERVICES, ClusterCache, WatchExpired, reflector
from scheduler_ext.kube.errors import APINotFoundError
from scheduler_ext.policy.model import PodInfo, ServiceInfo
from scheduler_ext.policy.resources import Resources
from tests.unit.extender.extender_fixtures import alloc_manifest, node_manifest, pod_manifest, watch_line


def _synced_cache() -> ClusterCache:
    cache = ClusterCache()
    cache.replace(NODES, [node_manifest("node-1"), node_manifest("node-2", zone="zone-b")])
    cache.replace(PODS, [pod_manifest("web-1", node="node-1", phase="Running")])
    cache.mark_absent(ALLOCS)
    cache.replace(SERVICES, [])
    return cache


def test_synced_only_after_every_kind_is_listed() -> None:
    cache = ClusterCache()
    cache.replace(NODES, [node_manifest("node-1")])
    cache.replace(PODS, [])
    assert not cache.synced
    cache.mark_absent(ALLOCS)
    assert not cache.synced  # Services decide which pods spread together
    cache.replace(SERVICES, [])
    assert cache.synced
    assert cache.allocs_available is False


def test_list_builds_the_snapshot() -> None:
    snapshot = _synced_cache().snapshot()
    assert set(snapshot.nodes) == {"node-1", "node-2"}
    assert snapshot.nodes["node-1"].requested == Resources(500, 256 * 2**20)
    assert snapshot.nodes["node-2"].pods == ()


def test_pod_events_move_capacity_between_nodes() -> None:
    cache = _synced_cache()
    cache.apply(PODS, "ADDED", pod_manifest("web-2", node="node-2", cpu="2"))
    assert cache.snapshot().nodes["node-2"].requested.cpu == 2000
    cache.apply(PODS, "MODIFIED", pod_manifest("web-2", node="node-2", cpu="2", phase="Succeeded"))
    assert cache.snapshot().nodes["node-2"].requested.cpu == 0  # finished pods free their node
    cache.apply(PODS, "DELETED", pod_manifest("web-1", node="node-1"))
    assert cache.snapshot().nodes["node-1"].pods == ()
    assert cache.counts() == {NODES: 2, PODS: 0, ALLOCS: 0, SERVICES: 0}


def test_unchanged_nodes_are_shared_between_snapshots() -> None:
    cache = _synced_cache()
    before = cache.snapshot()
    assert cache.snapshot() is before  # nothing changed: the same snapshot
    # A status-only update (pod turns Running/Ready, node heartbeat) changes nothing the policy reads.
    cache.apply(PODS, "MODIFIED", pod_manifest("web-1", node="node-1", phase="Running", resource_version="11"))
    cache.apply(NODES, "MODIFIED", node_manifest("node-2", zone="zone-b", resource_version="99"))
    assert cache.snapshot() is before
    cache.apply(PODS, "ADDED", pod_manifest("web-2", node="node-2"))
    after = cache.snapshot()
    assert after is not before
    assert after.nodes["node-1"] is before.nodes["node-1"]
    assert after.nodes["node-2"] is not before.nodes["node-2"]
    assert after.allocs is before.allocs


def test_node_label_change_and_deletion() -> None:
    cache = _synced_cache()
    cache.apply(NODES, "MODIFIED", node_manifest("node-2", zone="zone-c"))
    assert cache.snapshot().nodes["node-2"].zone == "zone-c"
    cache.apply(NODES, "DELETED", node_manifest("node-2"))
    assert set(cache.snapshot().nodes) == {"node-1"}


def test_pods_arriving_before_their_node_are_kept() -> None:
    cache = _synced_cache()
    cache.apply(PODS, "ADDED", pod_manifest("early", node="node-9"))
    assert "node-9" not in cache.snapshot().nodes
    cache.apply(NODES, "ADDED", node_manifest("node-9"))
    assert [p.name for p in cache.snapshot().nodes["node-9"].pods] == ["early"]


def test_relist_drops_what_is_gone() -> None:
    cache = _synced_cache()
    cache.replace(NODES, [node_manifest("node-2", zone="zone-b")])
    cache.replace(PODS, [])
    snapshot = cache.snapshot()
    assert set(snapshot.nodes) == {"node-2"}
    assert cache.counts()[PODS] == 0


def test_alloc_events_change_the_allocs_mapping_object() -> None:
    cache = _synced_cache()
    before = cache.snapshot()
    cache.apply(ALLOCS, "ADDED", alloc_manifest("cache", ["node-1"]))
    after = cache.snapshot()
    assert after.allocs is not before.allocs  # tells the score cache reservations changed
    assert [a.key for a in after.allocs_on("node-1")] == ["alice/cache"]
    assert cache.allocs_available is True
    cache.apply(ALLOCS, "MODIFIED", alloc_manifest("cache", ["node-1"]))  # same content
    assert cache.snapshot().allocs is after.allocs
    cache.apply(ALLOCS, "DELETED", alloc_manifest("cache", ["node-1"]))
    assert cache.snapshot().allocs_on("node-1") == ()


def test_raw_list_and_watch_lines() -> None:
    cache = ClusterCache()
    body = json.dumps({"kind": "NodeList", "metadata": {"resourceVersion": "42"},
                       "items": [node_manifest("node-1")]}).encode()
    assert cache.handle_list(NODES, body) == "42"
    pods = json.dumps({"kind": "PodList", "metadata": {"resourceVersion": "43"}, "items": None}).encode()
    assert cache.handle_list(PODS, pods) == "43"
    rv = cache.handle_watch_line(PODS, watch_line("ADDED", pod_manifest("w", node="node-1", resource_version="44")))
    assert rv == "44"
    assert [p.name for p in cache.snapshot().nodes["node-1"].pods] == ["w"]
    bookmark = watch_line("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "50"}})
    assert cache.handle_watch_line(PODS, bookmark) == "50"
    assert cache.handle_watch_line(PODS, "") is None
    allocs = json.dumps({"metadata": {"resourceVersion": "7"}, "items": [alloc_manifest("c", ["node-1"])]}).encode()
    assert cache.handle_list(ALLOCS, allocs) == "7"
    services = json.dumps({"metadata": {"resourceVersion": "8"}, "items": [
        {"metadata": {"namespace": "alice", "name": "web"}, "spec": {"selector": {"app": "web"}}}]}).encode()
    assert cache.handle_list(SERVICES, services) == "8"
    assert cache.synced
    assert cache.services("alice") == (ServiceInfo("alice", "web", (("app", "web"),)),)


def test_status_noise_in_the_watch_is_skipped_and_real_changes_are_not() -> None:
    cache = _synced_cache()
    cache.handle_watch_line(PODS, watch_line("ADDED", pod_manifest("w", node="node-2", resource_version="20")))
    before = cache.snapshot()
    ready = pod_manifest("w", node="node-2", phase="Running", resource_version="21")
    ready["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert cache.handle_watch_line(PODS, watch_line("MODIFIED", ready)) == "21"
    assert cache.snapshot() is before
    relabelled = pod_manifest("w", node="node-2", phase="Running", resource_version="22",
                              labels={"cell.distos.dev/alloc": "cache"})
    cache.handle_watch_line(PODS, watch_line("MODIFIED", relabelled))
    assert cache.snapshot().nodes["node-2"].pods[0].alloc == "alice/cache"
    done = pod_manifest("w", node="node-2", phase="Succeeded", resource_version="23")
    cache.handle_watch_line(PODS, watch_line("MODIFIED", done))
    assert cache.snapshot().nodes["node-2"].pods == ()
    heartbeat = node_manifest("node-2", zone="zone-b", resource_version="9")
    cache.handle_watch_line(NODES, watch_line("MODIFIED", heartbeat))
    cordoned = {**heartbeat, "spec": {"unschedulable": True}}
    cache.handle_watch_line(NODES, watch_line("MODIFIED", cordoned))
    assert cache.snapshot().nodes["node-2"].unschedulable
    # A relist forgets what the watch said: the next update is applied in full, even an identical one.
    cache.handle_watch_line(PODS, watch_line("MODIFIED", ready))
    assert [p.name for p in cache.snapshot().nodes["node-2"].pods] == ["w"]
    cache.replace(PODS, [])
    assert cache.snapshot().nodes["node-2"].pods == ()
    cache.handle_watch_line(PODS, watch_line("MODIFIED", ready))
    assert [p.name for p in cache.snapshot().nodes["node-2"].pods] == ["w"]


def test_watch_410_means_list_again() -> None:
    cache = _synced_cache()
    gone = watch_line("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410})
    with pytest.raises(WatchExpired, match="too old"):
        cache.handle_watch_line(PODS, gone)


def test_a_bad_object_is_dropped_not_fatal() -> None:
    cache = _synced_cache()
    cache.apply(ALLOCS, "ADDED", alloc_manifest("good", ["node-1"]))
    cache.apply(ALLOCS, "ADDED", alloc_manifest("bad", ["node-2"], cpu="a lot"))
    assert [a.key for a in cache.snapshot().allocs.values()] == ["alice/good"]
    cache.apply(ALLOCS, "MODIFIED", alloc_manifest("good", ["node-1"], cpu="x"))  # broken later: dropped too
    assert cache.snapshot().allocs_on("node-1") == ()


class _FakeTransport:
    """Stands in for the raw client: each list or watch records its call and calls `respond`."""

    def __init__(self, respond: Any) -> None:
        self.respond = respond

    def request(self, method: str, path: str, query: Any = (), **_: Any) -> bytes:
        return bytes(self.respond(**dict(query)))

    def lines(self, path: str, query: Any = (), **_: Any) -> Iterator[str]:
        args = dict(query)
        body = self.respond(watch=True, resource_version=args["resourceVersion"])
        yield from bytes(body).decode().splitlines()


def _node_list(rv: str, *names: str) -> bytes:
    return json.dumps({"metadata": {"resourceVersion": rv}, "items": [node_manifest(n) for n in names]}).encode()


def test_reflector_lists_watches_and_relists_after_410() -> None:
    cache = ClusterCache()
    stop = threading.Event()
    calls: list[dict[str, Any]] = []
    gone = watch_line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})
    added = watch_line("ADDED", node_manifest("node-2", resource_version="2"))
    script = [
        _node_list("1", "node-1"),
        f"{added}\n{gone}\n".encode(),
        _node_list("7", "node-2"),  # the relist: node-1 went away meanwhile
    ]

    def call(**kwargs: Any) -> bytes:
        calls.append(kwargs)
        if not script:
            stop.set()
            return b""
        return script.pop(0)

    reflector(cache, NODES, _FakeTransport(call), stop).run()  # returns once the script is used up and stop is set
    assert [c.get("watch", False) for c in calls[:4]] == [False, True, False, True]
    assert calls[1]["resource_version"] == "1"
    assert calls[3]["resource_version"] == "7"
    assert set(cache.snapshot().nodes) == {"node-2"}


def test_reflector_treats_a_missing_alloc_crd_as_no_allocs() -> None:
    cache = ClusterCache()
    stop = threading.Event()

    def call(**kwargs: Any) -> bytes:
        stop.set()
        raise APINotFoundError(404, reason="Not Found")

    reflector(cache, ALLOCS, _FakeTransport(call), stop, absent_retry=0.01).run()
    assert cache.allocs_available is False
    assert cache._synced[ALLOCS]


def test_a_node_that_comes_and_goes_between_two_snapshots_changes_nothing() -> None:
    # CI of stop 18: a test's node added and deleted between two snapshots left its name among the
    # changed ones; deriving the node columns then raised KeyError on every later filter (500s).
    cache = _synced_cache()
    first = cache.snapshot()
    columns = first.arrays()
    cache.apply(NODES, "ADDED", node_manifest("t-brief-1"))
    cache.apply(NODES, "DELETED", node_manifest("t-brief-1"))
    cache.apply(PODS, "ADDED", pod_manifest("web-2", node="node-2", phase="Running"))
    second = cache.snapshot()
    assert set(second.nodes) == {"node-1", "node-2"}
    derived = second.arrays()
    assert derived is not columns
    assert list(derived.used_cpu) == [500, 500]


def _bare_pod(name: str, node: str | None = None, **labels: str) -> dict[str, Any]:
    manifest = pod_manifest(name, node=node, phase="Running", labels=labels)
    del manifest["metadata"]["ownerReferences"]
    return manifest


def _service(name: str, **selector: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "alice", "name": name, "resourceVersion": "1"}, "spec": {"selector": selector}}


def _owners(cache: ClusterCache) -> dict[str, str]:
    return {p.name: p.owner for n in cache.snapshot().nodes.values() for p in n.pods}


def test_services_re_key_the_bound_pods_without_owners_of_their_namespace() -> None:
    cache = _synced_cache()  # web-1 is a ReplicaSet's pod (and labelled app=web)
    cache.apply(PODS, "ADDED", _bare_pod("lone-1", node="node-1", role="cache"))
    cache.apply(PODS, "ADDED", _bare_pod("lone-2", node="node-2", role="cache"))
    assert _owners(cache) == {"web-1": "alice/ReplicaSet/web-7d4b9c", "lone-1": "alice/Pod/lone-1",
                              "lone-2": "alice/Pod/lone-2"}
    cache.apply(SERVICES, "ADDED", _service("cache", role="cache"))
    cache.apply(SERVICES, "ADDED", _service("web", app="web"))  # selects all three: the controller still wins
    assert _owners(cache) == {"web-1": "alice/ReplicaSet/web-7d4b9c", "lone-1": "alice/Service/cache",
                              "lone-2": "alice/Service/cache"}
    # A pod bound later is keyed with the Services already known.
    cache.apply(PODS, "ADDED", _bare_pod("lone-3", node="node-1", role="cache"))
    assert _owners(cache)["lone-3"] == "alice/Service/cache"
    assert cache.snapshot().nodes["node-1"].job_counts["alice/Service/cache"] == 2
    # The selector moves off them: "web" (app=web) is left, which they carry too.
    cache.apply(SERVICES, "MODIFIED", _service("cache", role="db"))
    assert _owners(cache)["lone-1"] == "alice/Service/web"
    cache.apply(SERVICES, "DELETED", _service("web", app="web"))
    cache.replace(SERVICES, [])  # a relist without "cache"
    assert cache.services("alice") == ()
    assert _owners(cache) == {"web-1": "alice/ReplicaSet/web-7d4b9c", "lone-1": "alice/Pod/lone-1",
                              "lone-2": "alice/Pod/lone-2", "lone-3": "alice/Pod/lone-3"}


def test_an_assumed_pod_without_owners_is_re_keyed_once_the_watch_confirms_it() -> None:
    cache = _synced_cache()
    pending = _bare_pod("lone", role="cache")
    pod = PodInfo.from_manifest(pending)
    cache.assume(pod, "node-2")
    confirmed = _bare_pod("lone", node="node-2", role="cache")
    cache.apply(PODS, "MODIFIED", confirmed)  # the same as the booking: nothing changes but ownerlessness
    cache.apply(SERVICES, "ADDED", _service("cache", role="cache"))
    assert _owners(cache)["lone"] == "alice/Service/cache"

"""Just enough of an API server for the live Omega scheduler's commits: ConfigMaps with
resourceVersion preconditions (a stale PUT or a second POST is a 409), pods listed by node,
bindings and Events. Shared by several schedulers, as one cell is."""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any

from scheduler_ext.kube.errors import APIConflictError, APINotFoundError
from scheduler_ext.omega.scheduler import OmegaScheduler

NODE_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110"}


def node(name: str, cpu: str = "8", taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "topology.kubernetes.io/zone": "zone-a"}},
            "spec": {"taints": taints or []},
            "status": {"allocatable": {**NODE_CAPACITY, "cpu": cpu}}}


def pod(name: str, cpu: str, scheduler: str = "omega-a", node_name: str = "", namespace: str = "ns",
        priority_class: str = "batch", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "creationTimestamp": "2026-12-02T10:00:00Z"},
            "spec": {"schedulerName": scheduler, "priorityClassName": priority_class,
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
                     **({"nodeName": node_name} if node_name else {}), **spec},
            "status": {"phase": "Running" if node_name else "Pending"}}


class FakeAPI:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions = itertools.count(100)
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}  # uid -> pod
        self.events: list[dict[str, Any]] = []
        self.puts: list[tuple[str, int]] = []  # (path, status) of every ledger write

    def add_pod(self, manifest: dict[str, Any]) -> None:
        self.pods[manifest["metadata"]["uid"]] = copy.deepcopy(manifest)

    def bound(self, node_name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods.values() if p["spec"].get("nodeName") == node_name]

    # --- RawClient's surface -------------------------------------------------------------------------
    def get(self, path: str, query: Any = (), timeout: Any = None) -> Any:
        found = self.get_or_none(path, query, timeout)
        if found is None:
            raise APINotFoundError(404, "not found")
        return found

    def get_or_none(self, path: str, query: Any = (), timeout: Any = None) -> Any:
        with self.lock:
            if path == "/api/v1/pods":
                wanted = dict(query)["fieldSelector"].removeprefix("spec.nodeName=")
                return {"items": copy.deepcopy(self.bound(wanted))}
            if "/configmaps/" in path:
                return copy.deepcopy(self.configmaps.get(path.rsplit("/", 1)[1]))
            return {"metadata": {"name": path.rsplit("/", 1)[1]}}

    def json(self, method: str, path: str, query: Any = (), body: Any = None, content_type: Any = None,
             timeout: Any = None) -> Any:
        with self.lock:
            if path.endswith("/events"):
                self.events.append(copy.deepcopy(body))
                return body
            if path.endswith("/binding"):
                uid = body["metadata"]["uid"]
                target = self.pods[uid]
                if target["spec"].get("nodeName"):
                    raise APIConflictError(409, "pod is already assigned")
                target["spec"]["nodeName"] = body["target"]["name"]
                target["status"]["phase"] = "Running"
                return {"status": "Success"}
            if "/configmaps" in path:
                return self._write(method, path, body)
            raise AssertionError(f"{method} {path} not served")

    def _write(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        current = self.configmaps.get(name)
        stale = (current is not None) if method == "POST" else (
            current is None or current["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"))
        if stale:
            self.puts.append((path, 409))
            raise APIConflictError(409, f"the object has been modified: {name}")
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(next(self.versions))
        self.configmaps[name] = stored
        self.puts.append((path, 200))
        return copy.deepcopy(stored)


def feed(scheduler: OmegaScheduler, api: FakeAPI, nodes: list[dict[str, Any]]) -> None:
    """Give the scheduler's private copy what the API holds now (as its reflectors would)."""
    view = scheduler.view
    view.replace("nodes", nodes)
    view.replace("bound", [p for p in api.pods.values() if p["spec"].get("nodeName")])
    view.replace("pending", [p for p in api.pods.values() if not p["spec"].get("nodeName")
                             and p["spec"].get("schedulerName") == scheduler.name])
    view.replace("ledgers", list(api.configmaps.values()))
    view.replace("allocs", [])

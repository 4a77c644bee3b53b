"""What a grading check may look at: a read-only view of one student's namespace (and the nodes),
and small helpers for reading the objects the way students write them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient

from scheduler_ext.policy.resources import Resources

_REQUEST_TIMEOUT = (5, 20)  # (connect, read) seconds for every API call a check makes

# kind -> (API path prefix, resource, namespaced). Plain JSON keeps checks close to the YAML students write.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Pod": ("/api/v1", "pods", True),
    "Service": ("/api/v1", "services", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Event": ("/api/v1", "events", True),
    "Node": ("/api/v1", "nodes", False),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "CronJob": ("/apis/batch/v1", "cronjobs", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "Alloc": ("/apis/cell.distos.dev/v1alpha1", "allocs", True),
    "BandQuota": ("/apis/cell.distos.dev/v1alpha1", "bandquotas", True),
}


Objects = list[dict[str, Any]]  # (ClusterView.list shadows the builtin inside the class)


class GradingError(Exception):
    """The grader could not read what it needed (not the student's fault)."""


def request(api: ApiClient, method: str, path: str, query: Sequence[tuple[str, str]] = (),
             body: Any = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    verb, url, header_params, payload, _ = api.param_serialize(
        method, path, query_params=list(query) or None, header_params=headers, body=body,
        auth_settings=["BearerToken"])
    response = api.call_api(verb, url, header_params=header_params, body=payload,
                            _request_timeout=_REQUEST_TIMEOUT)
    raw = response.read() or b""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:  # e.g. "404 page not found" for a kind the cell does not serve
        data = {"message": raw.decode(errors="replace").strip()}
    return response.status, data


def path_of(kind: str, namespace: str | None, name: str | None = None) -> str:
    try:
        prefix, resource, namespaced = RESOURCES[kind]
    except KeyError:
        raise GradingError(f"the grader cannot read kind {kind!r}; known: {', '.join(RESOURCES)}") from None
    path = f"{prefix}/namespaces/{namespace}/{resource}" if namespaced else f"{prefix}/{resource}"
    return f"{path}/{name}" if name else path


class ClusterView:
    """A read-only view of one student's namespace (and the nodes): all a grading check may look at."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self._api = api
        self.namespace = namespace

    def _get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any] | None:
        status, data = request(self._api, "GET", path, query)
        if status == 404:
            return None
        if not 200 <= status < 300:
            message = (data or {}).get("message", "") if isinstance(data, dict) else ""
            raise GradingError(f"GET {path} answered {status} {message}".strip())
        return data

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as the API serves it, or None if it does not exist."""
        return self._get(path_of(kind, self.namespace, name))

    def require(self, kind: str, name: str) -> dict[str, Any]:
        """The object, or a failed check telling the student it is missing."""
        obj = self.get(kind, name)
        assert obj is not None, f"{kind} {name} not found in namespace {self.namespace}"
        return obj

    def list(self, kind: str, selector: str | None = None) -> Objects:
        """Objects of kind (in the namespace, or cluster-wide for nodes), sorted by name."""
        query = [("labelSelector", selector)] if selector else []
        data = self._get(path_of(kind, self.namespace), query)
        # Items of a list carry no kind/apiVersion; add them so each reads like a single GET.
        api_version = RESOURCES[kind][0].removeprefix("/api/").removeprefix("/apis/")
        items = [{"kind": kind, "apiVersion": api_version, **item} for item in (data or {}).get("items") or []]
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def pods(self, selector: str | None = None) -> Objects:
        """Pods that are not being deleted."""
        return [p for p in self.list("Pod", selector) if not p["metadata"].get("deletionTimestamp")]

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: n for n in self.list("Node")}


# --- helpers for checks --------------------------------------------------------------------------

def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod, or of the pod template of a Deployment/ReplicaSet/Job/StatefulSet."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return dict(spec)
    return dict((spec.get("template") or {}).get("spec") or {})


def template_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})


def containers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec(obj).get("containers") or [])


def requests_of(container: Mapping[str, Any]) -> Resources:
    return Resources.parse(((container.get("resources") or {}).get("requests")) or {})


def is_ready(pod: Mapping[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def container_port(value: Any, pod_containers: Iterable[Mapping[str, Any]]) -> int | None:
    """A port given as a number or as the name of a container port -> its number."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        for container in pod_containers:
            for port in container.get("ports") or []:
                if port.get("name") == value:
                    return int(port["containerPort"])
    return None


def owned_by_deployment(pod: Mapping[str, Any], deployment: str) -> bool:
    """A pod of Deployment `deployment`: owned by its ReplicaSet `<deployment>-<pod-template-hash>`."""
    template_hash = (pod["metadata"].get("labels") or {}).get("pod-template-hash")
    return any(ref.get("kind") == "ReplicaSet" and ref.get("name") == f"{deployment}-{template_hash}"
               for ref in pod["metadata"].get("ownerReferences") or [])


def ready_endpoints(endpoint_slices: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Service name -> the addresses its EndpointSlices list as ready (the API defines a missing
    ready condition as ready)."""
    ready: dict[str, set[str]] = {}
    for endpoint_slice in endpoint_slices:
        service = (endpoint_slice["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if not service:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                ready.setdefault(service, set()).update(endpoint.get("addresses") or [])
    return ready


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


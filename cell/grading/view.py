"""What a grading check may look at: a read-only view of one student's namespace (and the nodes),
and small helpers for reading the objects the way students write them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client import ApiClient

from scheduler_ext.kube.client import Query, RawClient, Timeout
from scheduler_ext.kube.errors import APIError
from scheduler_ext.kube.names import (
    ALLOCS,
    BANDQUOTAS,
    CRONJOBS,
    DEPLOYMENTS,
    JOBS,
    NODES,
    PODS,
    REPLICASETS,
    STATEFULSETS,
    Resource,
)
from scheduler_ext.policy.resources import Resources

REQUEST_TIMEOUT: Timeout = (5, 20)  # (connect, read) seconds for every API call a check makes

# The kinds a check may read, with their coordinates. Plain JSON keeps checks close to the YAML
# students write.
KINDS: dict[str, Resource] = {resource.kind: resource for resource in (
    PODS, NODES, DEPLOYMENTS, REPLICASETS, STATEFULSETS, JOBS, CRONJOBS, ALLOCS, BANDQUOTAS,
    Resource("", "v1", "services", "Service"),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "events", "Event"),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
)}


Objects = list[dict[str, Any]]  # (ClusterView.list shadows the builtin inside the class)


class GradingError(Exception):
    """The grader could not read what it needed (not the student's fault)."""


def resource_of(kind: str) -> Resource:
    try:
        return KINDS[kind]
    except KeyError:
        raise GradingError(f"the grader cannot read kind {kind!r}; known: {', '.join(KINDS)}") from None


class ReadCache:
    """What the read-only checks of one grading run have read, so that the next check asking for the
    same object or list gets it without another request (exp1's checks read Deployment web four times
    per student). Nothing changes a namespace while only read checks run; `stop` is called before the
    first check that does (self-healing), and from then on every read goes to the API server."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, Query], dict[str, Any] | None] = {}
        self.enabled = True

    def stop(self) -> None:
        self.enabled = False
        self._answers.clear()

    def get(self, key: tuple[str, Query]) -> tuple[bool, dict[str, Any] | None]:
        """(found, a copy of the answer: a check may modify what it got)."""
        if not self.enabled or key not in self._answers:
            return False, None
        return True, copy.deepcopy(self._answers[key])

    def put(self, key: tuple[str, Query], answer: dict[str, Any] | None) -> None:
        if self.enabled:
            self._answers[key] = copy.deepcopy(answer)


class ClusterView:
    """A read-only view of one student's namespace (and the nodes): all a grading check may look at."""

    def __init__(self, api: ApiClient, namespace: str, cache: ReadCache | None = None) -> None:
        self._raw = RawClient(api)
        self.namespace = namespace
        self._cache = cache

    def _get(self, path: str, query: Query = ()) -> dict[str, Any] | None:
        key = (path, tuple(query))
        if self._cache is not None:
            found, answer = self._cache.get(key)
            if found:
                return answer
        try:
            data = self._raw.get_or_none(path, query, timeout=REQUEST_TIMEOUT)
        except APIError as exc:
            raise GradingError(f"GET {path} answered {exc.status} {exc.message}".strip()) from None
        answer = dict(data) if isinstance(data, dict) else None
        if self._cache is not None:
            self._cache.put(key, answer)
        return answer

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as the API serves it, or None if it does not exist."""
        return self._get(resource_of(kind).object_path(self.namespace, name))

    def require(self, kind: str, name: str) -> dict[str, Any]:
        """The object, or a failed check telling the student it is missing."""
        obj = self.get(kind, name)
        assert obj is not None, f"{kind} {name} not found in namespace {self.namespace}"
        return obj

    def list(self, kind: str, selector: str | None = None) -> Objects:
        """Objects of kind (in the namespace, or cluster-wide for nodes), sorted by name."""
        resource = resource_of(kind)
        query = [("labelSelector", selector)] if selector else []
        data = self._get(resource.object_path(self.namespace), query)
        # Items of a list carry no kind/apiVersion; add them so each reads like a single GET.
        items = [{"kind": kind, "apiVersion": resource.api_version, **item} for item in (data or {}).get("items") or []]
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


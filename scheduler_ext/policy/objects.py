"""The cell's objects as the policy sees them: pods, nodes and allocs, as frozen values.

Adapters build these from Kubernetes objects with the `from_manifest` classmethods (plain dicts
shaped as the API returns them, camelCase keys), so the conversion rules (effective requests, a
pod's job, a pod's alloc) live here once. `model` puts them together into a `CellSnapshot`;
`columnar` keeps a snapshot's nodes as columns: both import this leaf, neither the other's way back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scheduler_ext.policy.bands import PRIORITY_CLASSES, Band
from scheduler_ext.policy.resources import Resources, parse_cpu, parse_memory

ZONE_LABEL = "topology.kubernetes.io/zone"
RACK_LABEL = "cell.distos.dev/rack"
HOSTNAME_LABEL = "kubernetes.io/hostname"
ALLOC_LABEL = "cell.distos.dev/alloc"
"""A pod labelled with this key is a member of the alloc of that name in its namespace (SPEC A2)."""

DEFAULT_MAX_PODS = 110
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _frozen_map(mapping: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not mapping:
        return _EMPTY
    return MappingProxyType({str(k): str(v) for k, v in mapping.items()})


def _freeze(value: object, attribute: str) -> None:
    """Make a frozen value's map read-only once (the caller's dict could change under it)."""
    mapping = getattr(value, attribute)
    if not isinstance(mapping, MappingProxyType):
        object.__setattr__(value, attribute, _frozen_map(mapping))


def _container_requests(container: Mapping[str, Any]) -> Resources:
    resources = container.get("resources") or {}
    return Resources.parse(resources.get("requests") or {})


def effective_requests(spec: Mapping[str, Any]) -> Resources:
    """What the scheduler charges a pod: max(sum of containers, largest init container) + overhead.

    The same rule as Kubernetes' resource helpers (sidecar init containers are counted as
    regular containers, since they keep running).
    """
    total = Resources()
    for container in spec.get("containers") or ():
        total = total + _container_requests(container)
    init_peak = Resources()
    sidecars = Resources()
    for container in spec.get("initContainers") or ():
        requests = _container_requests(container)
        if container.get("restartPolicy") == "Always":
            sidecars = sidecars + requests
            continue
        # A regular init container runs beside the sidecars started before it.
        candidate = requests + sidecars
        init_peak = Resources(max(init_peak.cpu, candidate.cpu), max(init_peak.memory, candidate.memory))
    total = total + sidecars
    total = Resources(max(total.cpu, init_peak.cpu), max(total.memory, init_peak.memory))
    return total + Resources.parse(spec.get("overhead") or {})


def pod_priority(spec: Mapping[str, Any]) -> int:
    """spec.priority as admission resolved it; before that, Cell's class value; else 0."""
    priority = spec.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        return priority
    return PRIORITY_CLASSES.get(spec.get("priorityClassName") or "", 0)


def job_key(namespace: str, name: str, owner_references: Iterable[Mapping[str, Any]] | None,
            labels: Mapping[str, str] | None = None, services: Iterable[ServiceInfo] = ()) -> str:
    """A pod's job, whose pods spread together: its controlling owner ("ns/Kind/name"); for a pod
    without owners, the first (by name) Service of its namespace that selects it ("ns/Service/name");
    else the pod itself.

    Pods behind one Service serve together as much as one Deployment's do (kube-scheduler's default
    spreading counts Services too); a controller still comes first, so a Deployment behind a
    Service keeps its own job.
    """
    owners = list(owner_references or ())
    controller = next((ref for ref in owners if ref.get("controller")), owners[0] if owners else None)
    if controller is not None:
        return f"{namespace}/{controller.get('kind', '')}/{controller.get('name', '')}"
    service = min((s.name for s in services if s.selects(namespace, labels or _EMPTY)), default=None)
    if service is not None:
        return f"{namespace}/Service/{service}"
    return f"{namespace}/Pod/{name}"


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A Service as the policy sees it: which pods it selects (a job for pods without owners)."""

    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...] = ()  # sorted pairs: hashable and compared by value

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ServiceInfo:
        meta = manifest.get("metadata") or {}
        selector = (manifest.get("spec") or {}).get("selector") or {}
        return cls(meta.get("namespace") or "default", meta.get("name") or "",
                   tuple(sorted((str(k), str(v)) for k, v in selector.items())))

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether a pod of that namespace and labels is one of its endpoints. A Service without a
        selector (its endpoints managed by hand) selects no pod, as for the endpoints controller."""
        return bool(self.selector) and namespace == self.namespace and all(
            labels.get(key) == value for key, value in self.selector)


class _Owned:
    """What a pod and an alloc derive alike from their namespace, name and priority."""

    __slots__ = ()
    namespace: str
    name: str
    priority: int

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def band(self) -> Band:
        return Band.of_priority(self.priority)


@dataclass(frozen=True, slots=True)
class PodInfo(_Owned):
    """A pod as the policy sees it. `owner` is its job key (see `job_key`)."""

    namespace: str
    name: str
    uid: str = ""
    priority: int = 0
    requests: Resources = field(default_factory=Resources)
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False, compare=False)
    owner: str = ""
    node_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.owner:
            object.__setattr__(self, "owner", f"{self.namespace}/Pod/{self.name}")
        _freeze(self, "labels")
        _freeze(self, "node_selector")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], services: Iterable[ServiceInfo] = ()) -> PodInfo:
        """From a Pod object as the API returns it (a plain dict, camelCase keys); `services` are
        the Services that may select it (see `job_key`)."""
        meta = manifest.get("metadata") or {}
        spec = manifest.get("spec") or {}
        namespace = meta.get("namespace") or "default"
        name = meta.get("name") or meta.get("generateName") or ""
        labels = _frozen_map(meta.get("labels"))
        return cls(
            namespace=namespace,
            name=name,
            uid=meta.get("uid") or "",
            priority=pod_priority(spec),
            requests=effective_requests(spec),
            labels=labels,
            owner=job_key(namespace, name, meta.get("ownerReferences"), labels, services),
            node_name=spec.get("nodeName") or None,
            node_selector=_frozen_map(spec.get("nodeSelector")),
        )

    @staticmethod
    def is_active(manifest: Mapping[str, Any]) -> bool:
        """False for pods that no longer hold node resources (completed or failed)."""
        return (manifest.get("status") or {}).get("phase") not in TERMINAL_PHASES

    @property
    def alloc(self) -> str | None:
        """Key ("ns/name") of the alloc this pod is a member of, if any (SPEC A2)."""
        name = self.labels.get(ALLOC_LABEL)
        return f"{self.namespace}/{name}" if name else None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node and the pods bound to it. `requested` and `job_counts` are derived, not passed."""

    name: str
    allocatable: Resources
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False, compare=False)
    pods: tuple[PodInfo, ...] = ()
    max_pods: int = DEFAULT_MAX_PODS
    unschedulable: bool = False
    requested: Resources = field(init=False, compare=False)
    job_counts: Mapping[str, int] = field(init=False, hash=False, compare=False)
    zone: str = field(init=False, compare=False)
    rack: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        _freeze(self, "labels")
        # Read on every score of every node: kept as plain attributes.
        object.__setattr__(self, "zone", self.labels.get(ZONE_LABEL, ""))
        object.__setattr__(self, "rack", self.labels.get(RACK_LABEL, ""))
        cpu = memory = 0
        counts: dict[str, int] = {}
        for pod in self.pods:
            cpu += pod.requests.cpu
            memory += pod.requests.memory
            counts[pod.owner] = counts.get(pod.owner, 0) + 1
        object.__setattr__(self, "requested", Resources(cpu, memory))
        object.__setattr__(self, "job_counts", MappingProxyType(counts))

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], pods: Iterable[PodInfo] = ()) -> NodeInfo:
        """From a Node object as the API returns it; `pods` are the (active) pods bound to it."""
        meta = manifest.get("metadata") or {}
        status = manifest.get("status") or {}
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        max_pods = allocatable.get("pods")
        return cls(
            name=meta.get("name") or "",
            allocatable=Resources(
                parse_cpu(allocatable["cpu"]) if allocatable.get("cpu") is not None else 0,
                parse_memory(allocatable["memory"]) if allocatable.get("memory") is not None else 0,
            ),
            labels=_frozen_map(meta.get("labels")),
            pods=tuple(pods),
            max_pods=int(max_pods) if max_pods is not None else DEFAULT_MAX_PODS,
            unschedulable=bool((manifest.get("spec") or {}).get("unschedulable")),
        )

    def with_pods(self, pods: Iterable[PodInfo]) -> NodeInfo:
        return NodeInfo(self.name, self.allocatable, self.labels, tuple(pods), self.max_pods, self.unschedulable)

    def with_pod(self, pod: PodInfo) -> NodeInfo:
        """The node with one more pod: the derived fields are adjusted, not recounted over its pods
        (a pass binds 100,000 pods one at a time)."""
        node = object.__new__(NodeInfo)
        for name in ("name", "allocatable", "labels", "max_pods", "unschedulable", "zone", "rack"):
            object.__setattr__(node, name, getattr(self, name))
        object.__setattr__(node, "pods", (*self.pods, pod))
        requested, requests = self.requested, pod.requests
        object.__setattr__(node, "requested", Resources(requested.cpu + requests.cpu,
                                                        requested.memory + requests.memory))
        counts = dict(self.job_counts)
        counts[pod.owner] = counts.get(pod.owner, 0) + 1
        object.__setattr__(node, "job_counts", MappingProxyType(counts))
        return node

    def without_pods(self, uids: frozenset[str] | set[str]) -> NodeInfo:
        return self.with_pods(p for p in self.pods if p.uid not in uids)


@dataclass(frozen=True, slots=True)
class AllocInstance:
    """One placed instance of an alloc set (SPEC §4 status.instances)."""

    index: int
    node: str


@dataclass(frozen=True, slots=True)
class AllocInfo(_Owned):
    """A reservation (Borg alloc set): `count` instances of `resources`, each on a distinct node."""

    namespace: str
    name: str
    resources: Resources
    count: int = 1
    priority: int = PRIORITY_CLASSES["production"]
    spread_by: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False, compare=False)
    instances: tuple[AllocInstance, ...] = ()

    def __post_init__(self) -> None:
        _freeze(self, "node_selector")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> AllocInfo:
        """From an Alloc custom object (cell.distos.dev/v1alpha1) as the API returns it."""
        meta = manifest.get("metadata") or {}
        spec = manifest.get("spec") or {}
        status = manifest.get("status") or {}
        instances = tuple(
            AllocInstance(int(item.get("index", i)), str(item["node"]))
            for i, item in enumerate(status.get("instances") or ())
            if item.get("node")
        )
        return cls(
            namespace=meta.get("namespace") or "default",
            name=meta.get("name") or "",
            resources=Resources.parse(spec.get("resources") or {}),
            count=int(spec.get("count", 1)),
            priority=PRIORITY_CLASSES.get(spec.get("priorityClassName") or "production", 0),
            spread_by=spec.get("spreadBy") or None,
            node_selector=_frozen_map(spec.get("nodeSelector")),
            instances=instances,
        )

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(instance.node for instance in self.instances)

    def instance_on(self, node: str) -> AllocInstance | None:
        return next((instance for instance in self.instances if instance.node == node), None)

    def with_instances(self, instances: Iterable[AllocInstance]) -> AllocInfo:
        return AllocInfo(self.namespace, self.name, self.resources, self.count, self.priority,
                         self.spread_by, self.node_selector, tuple(instances))

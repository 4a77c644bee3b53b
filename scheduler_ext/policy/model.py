"""The cell state the policy decides on: nodes, pods, allocs, and an immutable snapshot of them.

Everything is a frozen value. Adapters build these from Kubernetes objects with the
`from_manifest` classmethods (plain dicts shaped as the API returns them, camelCase keys), so the
conversion rules (effective requests, a pod's job, a pod's alloc) live here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from scheduler_ext.policy.bands import PRIORITY_CLASSES, Band
from scheduler_ext.policy.columnar import Ints, NodeArrays
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


@dataclass(frozen=True, slots=True)
class DomainCounts:
    """How many pods of one job sit in each zone and rack (for spreading the job)."""

    zones: Mapping[str, int]
    racks: Mapping[str, int]
    max_zone: int
    max_rack: int

    @classmethod
    def of(cls, zones: dict[str, int], racks: dict[str, int]) -> DomainCounts:
        zones = {k: v for k, v in zones.items() if v}
        racks = {k: v for k, v in racks.items() if v}
        return cls(zones, racks, max(zones.values(), default=0), max(racks.values(), default=0))


_CARRIED_JOBS = 32  # jobs whose spread counts a derived snapshot keeps up to date


class CellSnapshot:
    """An immutable view of the cell. Derived indexes are computed once, on first use.

    `allocs` is held as given: adapters that keep the same allocs mapping object across
    snapshots let the score cache know that no reservation changed (see `scheduler.PolicyCache`).
    """

    __slots__ = ("_allocs_by_node", "_arrays", "_domains", "_pods_by_uid", "allocs", "nodes")

    nodes: Mapping[str, NodeInfo]
    allocs: Mapping[str, AllocInfo]
    _allocs_by_node: dict[str, tuple[AllocInfo, ...]] | None
    _arrays: NodeArrays | None
    _domains: dict[str, DomainCounts]
    _pods_by_uid: dict[str, PodInfo] | None

    def __init__(self, nodes: Mapping[str, NodeInfo] | Iterable[NodeInfo],
                 allocs: Mapping[str, AllocInfo] | Iterable[AllocInfo] = ()) -> None:
        node_map = dict(nodes) if isinstance(nodes, Mapping) else {n.name: n for n in nodes}
        alloc_map = allocs if isinstance(allocs, MappingProxyType) else MappingProxyType(
            dict(allocs) if isinstance(allocs, Mapping) else {a.key: a for a in allocs})
        object.__setattr__(self, "nodes", MappingProxyType(node_map))
        object.__setattr__(self, "allocs", alloc_map)
        object.__setattr__(self, "_allocs_by_node", None)
        object.__setattr__(self, "_arrays", None)
        object.__setattr__(self, "_domains", {})
        object.__setattr__(self, "_pods_by_uid", None)

    @classmethod
    def derive(cls, previous: CellSnapshot, nodes: Mapping[str, NodeInfo], allocs: Mapping[str, AllocInfo],
               changed: Iterable[str]) -> CellSnapshot:
        """A successor of `previous` where only the nodes named in `changed` differ.

        The per-job domain counts of recently used jobs are carried over and adjusted for the
        changed nodes instead of being recounted over the whole cell, and so are the node columns
        (`arrays`), with only the changed slots rewritten.
        """
        snapshot = cls(nodes, allocs)
        changed = list(changed)
        if previous._arrays is not None:
            object.__setattr__(snapshot, "_arrays", previous._arrays.derived(snapshot.nodes, changed))
        versions = [(previous.nodes.get(name), snapshot.nodes.get(name)) for name in changed]
        # Only jobs whose count changed on a changed node need new counts; the rest are shared.
        touched: set[str] = set()
        for before, after in versions:
            old_counts = before.job_counts if before is not None else {}
            new_counts = after.job_counts if after is not None else {}
            moved = (before is not None and after is not None
                     and (before.zone != after.zone or before.rack != after.rack))
            touched.update(job for job in old_counts.keys() | new_counts.keys()
                           if moved or old_counts.get(job) != new_counts.get(job))
        carried = list(previous._domains.items())[-_CARRIED_JOBS:]
        for job, counts in carried:
            if job in touched:
                zones, racks = dict(counts.zones), dict(counts.racks)
                for before, after in versions:
                    for node, sign in ((before, -1), (after, 1)):
                        count = node.job_counts.get(job) if node is not None else None
                        if count:
                            zones[node.zone] = zones.get(node.zone, 0) + sign * count  # type: ignore[union-attr]
                            racks[node.rack] = racks.get(node.rack, 0) + sign * count  # type: ignore[union-attr]
                counts = DomainCounts.of(zones, racks)
            snapshot._domains[job] = counts
        return snapshot

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CellSnapshot is immutable")

    @classmethod
    def from_manifests(cls, nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                       allocs: Iterable[Mapping[str, Any]] = ()) -> CellSnapshot:
        """From API objects: Node, Pod and Alloc dicts. Pending and terminal pods are left out."""
        by_node: dict[str, list[PodInfo]] = {}
        for manifest in pods:
            if not PodInfo.is_active(manifest):
                continue
            pod = PodInfo.from_manifest(manifest)
            if pod.node_name:
                by_node.setdefault(pod.node_name, []).append(pod)
        node_infos = [NodeInfo.from_manifest(n, by_node.get((n.get("metadata") or {}).get("name", ""), ()))
                      for n in nodes]
        return cls(node_infos, [AllocInfo.from_manifest(a) for a in allocs])

    def allocs_on(self, node: str) -> tuple[AllocInfo, ...]:
        """Allocs with an instance placed on `node`."""
        return self.allocs_index().get(node, ())

    def allocs_index(self) -> Mapping[str, tuple[AllocInfo, ...]]:
        """Node name -> allocs with an instance there (only nodes that hold one), built on first use."""
        index = self._allocs_by_node
        if index is None:
            built: dict[str, list[AllocInfo]] = {}
            for alloc in self.allocs.values():
                for instance in alloc.instances:
                    built.setdefault(instance.node, []).append(alloc)
            index = {name: tuple(allocs) for name, allocs in built.items()}
            object.__setattr__(self, "_allocs_by_node", index)
        return index

    def arrays(self) -> NodeArrays:
        """The nodes as columns (`columnar.NodeArrays`), built on first use (O(nodes) once; a derived
        snapshot copies its predecessor's instead)."""
        arrays = self._arrays
        if arrays is None:
            arrays = NodeArrays.build(self.nodes)
            object.__setattr__(self, "_arrays", arrays)
        return arrays

    def job_domains(self, job: str) -> DomainCounts:
        """Per-zone and per-rack pod counts of one job, memoized per snapshot."""
        cached = self._domains.pop(job, None)
        if cached is not None:
            self._domains[job] = cached  # most recently used last: `derive` carries the tail
            return cached
        zones: dict[str, int] = {}
        racks: dict[str, int] = {}
        for node in self.nodes.values():
            count = node.job_counts.get(job)
            if count:
                zones[node.zone] = zones.get(node.zone, 0) + count
                racks[node.rack] = racks.get(node.rack, 0) + count
        result = DomainCounts.of(zones, racks)
        self._domains[job] = result
        return result

    def job_spread(self, job: str) -> tuple[Ints, Ints, int, int]:
        """`job_domains(job)` as arrays over the node table's zone and rack ids (`arrays().table`):
        the job's pod count per zone, per rack, and the largest of each (0: no pod of the job runs)."""
        domains = self.job_domains(job)
        table = self.arrays().table
        zone_ids = [(table.zone_id(zone), count) for zone, count in domains.zones.items()]
        rack_ids = [(table.rack_id(rack), count) for rack, count in domains.racks.items()]
        zones = np.zeros(len(table.zones), dtype=np.int64)
        racks = np.zeros(len(table.racks), dtype=np.int64)
        for at, count in zone_ids:
            zones[at] = count
        for at, count in rack_ids:
            racks[at] = count
        return zones, racks, domains.max_zone, domains.max_rack

    def pods(self) -> Iterable[PodInfo]:
        for node in self.nodes.values():
            yield from node.pods

    def find_pod(self, uid: str) -> PodInfo | None:
        """A bound pod by uid (index built on first use)."""
        index = self._pods_by_uid
        if index is None:
            index = {pod.uid: pod for pod in self.pods()}
            object.__setattr__(self, "_pods_by_uid", index)
        return index.get(uid)

    def with_nodes(self, *nodes: NodeInfo) -> CellSnapshot:
        """A new snapshot with these nodes replaced (or added); allocs are shared."""
        updated = dict(self.nodes)
        for node in nodes:
            updated[node.name] = node
        return CellSnapshot.derive(self, updated, self.allocs, (node.name for node in nodes))

    def with_pod_bound(self, pod: PodInfo, node: str) -> CellSnapshot:
        """The snapshot after binding `pod` to `node` (what the simulator does after a decision)."""
        bound = PodInfo(pod.namespace, pod.name, pod.uid, pod.priority, pod.requests, pod.labels,
                        pod.owner, node, pod.node_selector)
        return self.with_nodes(self.nodes[node].with_pod(bound))

    def with_allocs(self, allocs: Iterable[AllocInfo]) -> CellSnapshot:
        snapshot = CellSnapshot(self.nodes, allocs)
        if type(self) is CellSnapshot:  # the same nodes, and a snapshot's arrays never change (a CellState's do)
            object.__setattr__(snapshot, "_arrays", self._arrays)
        return snapshot

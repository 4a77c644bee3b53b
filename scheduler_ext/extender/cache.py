"""The extender's own view of the cell (nodeCacheCapable): nodes, bound pods, Allocs and Services,
fed by list+watch, handed to the policy as immutable snapshots.

Services only say which pods belong together (policy `job_key`: a pod without owners spreads with
the other pods of the Service selecting it); a Service that comes, goes or changes its selector
re-keys the bound pods without owners of its namespace.

`ClusterCache` is the event handling (no I/O; tests feed it events). Reflector threads
(`scheduler_ext.kube.reflector`) do the list/watch and hand the raw bodies to the cache, which
decodes them with msgspec (only the fields the policy reads).

Snapshots are cheap: a changed node gets a new `NodeInfo`; unchanged ones are shared, so the
policy's score cache stays valid for them. Updates that change nothing the policy reads (a pod
turning Ready, a node heartbeat) change nothing here.

Assumed placements (what kube-scheduler's own cache does with `AssumePod`): the watch shows a
binding only after kube-scheduler has bound the pod, and the next pods of a burst are scheduled
before that. So when the extender has told kube-scheduler where a pod goes (prioritize: its pick
scores 10, see policy `Ranking`; filter: a single feasible node), it books the pod there at once.
The watch then confirms the assumption (or moves the pod where it really went); an assumption the
watch never confirms (the binding failed, the pod was deleted) expires after `assume_ttl` seconds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from scheduler_ext.extender import wire
from scheduler_ext.kube import names
from scheduler_ext.kube.errors import APIGoneError
from scheduler_ext.kube.reflector import ListWatch, Reflector, Transport, apply_line
from scheduler_ext.policy.model import TERMINAL_PHASES, AllocInfo, CellSnapshot, NodeInfo, PodInfo, ServiceInfo, job_key

log = logging.getLogger(__name__)

NODES, PODS, ALLOCS, SERVICES = "nodes", "pods", "allocs", "services"
KINDS = (NODES, PODS, ALLOCS, SERVICES)
# Only pods that hold node resources: bound and not finished. Leaving the selector is a DELETED event.
BOUND_ACTIVE_PODS = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
LIST_WATCHES = {
    NODES: ListWatch(names.NODES),
    PODS: ListWatch(names.PODS, field_selector=BOUND_ACTIVE_PODS),
    # No Alloc CRD (yet), or no right to read it: nothing is reserved; look again later.
    ALLOCS: ListWatch(names.ALLOCS, absent_on=frozenset({403, 404})),
    SERVICES: ListWatch(names.SERVICES),
}
WatchExpired = APIGoneError  # the watch's resourceVersion is too old (410 Gone): list again


def _pod_fingerprint(pod: PodInfo) -> tuple[object, ...]:
    return (pod.namespace, pod.name, pod.priority, pod.requests, pod.owner, pod.node_name,
            tuple(sorted(pod.labels.items())), tuple(sorted(pod.node_selector.items())))


def _node_fingerprint(node: NodeInfo) -> tuple[object, ...]:
    return (node.allocatable, node.max_pods, node.unschedulable, tuple(sorted(node.labels.items())))


def _alloc_fingerprint(alloc: AllocInfo) -> tuple[object, ...]:
    return (alloc.resources, alloc.count, alloc.priority, alloc.spread_by, alloc.instances,
            tuple(sorted(alloc.node_selector.items())))


_object_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    NODES: msgspec.json.Decoder(wire.Node),
    PODS: msgspec.json.Decoder(wire.Pod),
    ALLOCS: msgspec.json.Decoder(dict[str, Any]),
    SERVICES: msgspec.json.Decoder(dict[str, Any]),
}
_list_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    NODES: msgspec.json.Decoder(wire.NodeList),
    PODS: msgspec.json.Decoder(wire.PodList),
    ALLOCS: msgspec.json.Decoder(wire.CustomObjectList),
    SERVICES: msgspec.json.Decoder(wire.CustomObjectList),  # few and small: read whole, like Allocs
}


def _manifest(obj: object) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else wire.to_manifest(obj)  # type: ignore[arg-type]


ASSUME_TTL = 30.0  # seconds; a binding normally shows in the watch within milliseconds
ASSUME_OUTCOMES = ("confirmed", "moved", "gone", "expired", "no-such-pod")


class ClusterCache:
    """Nodes, bound active pods and Allocs; thread-safe; `snapshot()` for the policy."""

    def __init__(self, assume_ttl: float = ASSUME_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._bases: dict[str, NodeInfo] = {}  # nodes without their pods
        self._pods: dict[str, PodInfo] = {}  # uid -> pod
        self._pods_by_node: dict[str, dict[str, PodInfo]] = {}
        self._node_infos: dict[str, NodeInfo] = {}
        self._dirty: set[str] = set()
        self._allocs: dict[str, AllocInfo] = {}
        self._allocs_view: Mapping[str, AllocInfo] = MappingProxyType({})
        self._snapshot: CellSnapshot | None = None  # None: must be rebuilt
        self._last: CellSnapshot | None = None  # the previous one, to derive the next from
        self._synced = dict.fromkeys(KINDS, False)
        self.allocs_available: bool | None = None  # None: not known yet; False: no Alloc CRD
        self.events = 0
        # uid -> (node, deadline) of placements the watch has not shown yet; deadlines ascend with
        # insertion order (one TTL), so expiry looks at the front only.
        self._assumed: dict[str, tuple[str, float]] = {}
        # uid -> deadline of pods the watch has shown deleted: kube-scheduler's informer can lag this
        # watch, so it may still ask about such a pod, and booking it would hold phantom room.
        self._gone: dict[str, float] = {}
        self.assume_ttl = assume_ttl
        self._clock = clock
        self._outcomes = dict.fromkeys(ASSUME_OUTCOMES, 0)
        self._raw: dict[str, tuple[object, ...]] = {}  # last watch object per pod/node, in wire form
        self._services: dict[str, ServiceInfo] = {}  # "ns/name" -> Service
        self._services_by_ns: dict[str, tuple[ServiceInfo, ...]] = {}
        self._ownerless: set[str] = set()  # uids of bound pods without owners: Services decide their job

    # --- state ------------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return all(self._synced.values())

    def mark_absent(self, kind: str) -> None:
        """The resource does not exist in this cluster (no Alloc CRD): synced, and empty."""
        self.replace(kind, [])
        if kind == ALLOCS:
            self.allocs_available = False

    def snapshot(self) -> CellSnapshot:
        """The current state as an immutable snapshot (rebuilt only for what changed)."""
        with self._lock:
            if self._assumed or self._gone:
                self._expire_assumptions()
            if self._snapshot is not None and not self._dirty:
                return self._snapshot
            for name in self._dirty:
                base = self._bases.get(name)
                if base is None:
                    self._node_infos.pop(name, None)
                else:
                    self._node_infos[name] = base.with_pods(self._pods_by_node.get(name, {}).values())
            previous = self._snapshot or self._last
            if previous is None:
                snapshot = CellSnapshot(self._node_infos, self._allocs_view)
            else:
                snapshot = CellSnapshot.derive(previous, self._node_infos, self._allocs_view, self._dirty)
            self._dirty.clear()
            self._snapshot = self._last = snapshot
            return snapshot

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {NODES: len(self._bases), PODS: len(self._pods), ALLOCS: len(self._allocs),
                    SERVICES: len(self._services)}

    def services(self, namespace: str) -> tuple[ServiceInfo, ...]:
        """The Services of a namespace (what a pending pod's job is resolved against)."""
        with self._lock:
            return self._services_by_ns.get(namespace, ())

    # --- assumed placements -------------------------------------------------------------------------

    def assume(self, pod: PodInfo, node: str) -> None:
        """Book `pod` on `node` now: kube-scheduler is about to bind it there."""
        with self._lock:
            if pod.uid in self._pods and pod.uid not in self._assumed:
                return  # the watch already showed it bound: that is the truth
            if pod.uid in self._gone:
                return  # the watch already showed it deleted
            if node not in self._bases:
                return
            bound = PodInfo(pod.namespace, pod.name, pod.uid, pod.priority, pod.requests, pod.labels, pod.owner,
                            node, pod.node_selector)
            self._delete_pod(pod.uid)
            self._add_pod(bound)
            self._assumed.pop(pod.uid, None)  # re-inserted last: deadlines stay in ascending order
            self._assumed[pod.uid] = (node, self._clock() + self.assume_ttl)

    def assumed(self) -> dict[str, str]:
        """uid -> node of the placements not confirmed by the watch yet."""
        with self._lock:
            return {uid: node for uid, (node, _) in self._assumed.items()}

    @property
    def assume_outcomes(self) -> dict[str, int]:
        """How assumptions ended so far (confirmed, moved, gone, expired), and how many are pending."""
        with self._lock:
            return {**self._outcomes, "pending": len(self._assumed)}

    def _settle_assumption(self, uid: str, node: str | None) -> None:
        """The watch said where the pod is (None: gone): the assumption is over."""
        assumed = self._assumed.pop(uid, None)
        if assumed is not None:
            outcome = "gone" if node is None else "confirmed" if node == assumed[0] else "moved"
            self._outcomes[outcome] += 1

    def forget_assumed(self, uid: str) -> bool:
        """Drop the booking of a pod the API does not have (a request about a made-up pod): at once,
        not after assume_ttl. True if there was one."""
        with self._lock:
            if self._assumed.pop(uid, None) is None:
                return False
            self._delete_pod(uid)
            self._gone[uid] = self._clock() + self.assume_ttl  # a late retry about it books nothing
            self._outcomes["no-such-pod"] += 1
            return True

    def _expire_assumptions(self) -> None:
        now = self._clock()
        while self._gone and next(iter(self._gone.values())) <= now:
            del self._gone[next(iter(self._gone))]
        while self._assumed:
            uid, (_, deadline) = next(iter(self._assumed.items()))
            if deadline > now:
                return
            del self._assumed[uid]
            self._delete_pod(uid)
            self._outcomes["expired"] += 1
            log.info("assumed placement of pod %s expired: no binding seen in %.0f s", uid, self.assume_ttl)

    # --- events (plain API dicts) ------------------------------------------------------------------

    def replace(self, kind: str, manifests: Iterable[Mapping[str, Any]]) -> None:
        """A fresh list: everything not in it is gone."""
        manifests = list(manifests)
        with self._lock:
            if kind == NODES:
                present = {(m.get("metadata") or {}).get("name") for m in manifests}
                for name in [n for n in self._bases if n not in present]:
                    self._delete_node(name)
            elif kind == PODS:
                present = {(m.get("metadata") or {}).get("uid") for m in manifests}
                # Assumed pods are not bound yet, so no list shows them; they expire on their own.
                for uid in [u for u in self._pods if u not in present and u not in self._assumed]:
                    self._delete_pod(uid)
            elif kind == ALLOCS:
                present = {_object_key(m) for m in manifests}
                for key in [k for k in self._allocs if k not in present]:
                    self._delete_alloc(key)
            elif kind == SERVICES:
                present = {_object_key(m) for m in manifests}
                for key in [k for k in self._services if k not in present]:
                    self._set_service(key, None)
            else:
                raise ValueError(f"unknown kind {kind!r}")
            # The fast path for unchanged watch objects starts over with what this list says.
            prefix = {NODES: "node/", PODS: "pod/"}.get(kind)
            if prefix:
                self._raw = {key: raw for key, raw in self._raw.items() if not key.startswith(prefix)}
            for manifest in manifests:
                self._apply(kind, "ADDED", manifest)
            self._synced[kind] = True
            if kind == ALLOCS:
                self.allocs_available = True

    def apply(self, kind: str, event_type: str, manifest: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        with self._lock:
            self._apply(kind, event_type, manifest)

    def _apply(self, kind: str, event_type: str, manifest: Mapping[str, Any]) -> None:
        self.events += 1
        try:
            self._apply_one(kind, event_type, manifest)
        except (ValueError, TypeError, KeyError) as exc:
            # One bad object (say an Alloc with an unparsable quantity) must not stall the stream.
            meta = manifest.get("metadata") or {}
            log.warning("%s %s/%s ignored: %s", kind, meta.get("namespace", ""), meta.get("name", ""), exc)
            self._apply_one(kind, "DELETED", manifest)

    def _apply_one(self, kind: str, event_type: str, manifest: Mapping[str, Any]) -> None:
        meta = manifest.get("metadata") or {}
        if kind == NODES:
            if event_type == "DELETED":
                self._delete_node(meta.get("name", ""))
                return
            node = NodeInfo.from_manifest(manifest)
            old_node = self._bases.get(node.name)
            if old_node is None or _node_fingerprint(old_node) != _node_fingerprint(node):
                self._bases[node.name] = node
                self._dirty.add(node.name)
        elif kind == PODS:
            uid = meta.get("uid", "")
            if event_type == "DELETED" or not PodInfo.is_active(manifest):
                self._gone.pop(uid, None)  # re-inserted last: deadlines stay in ascending order
                self._gone[uid] = self._clock() + self.assume_ttl
                self._settle_assumption(uid, None)
                self._delete_pod(uid)
                return
            pod = PodInfo.from_manifest(manifest, self._services_by_ns.get(meta.get("namespace") or "default", ()))
            if not pod.node_name:
                if uid in self._assumed:
                    # A late event from before the binding (this watch can lag kube-scheduler's): the
                    # pod is still on its way to the assumed node. Dropping the booking here let the
                    # next pods of a burst double up on that node. If the binding failed instead, the
                    # next scheduling cycle re-books the pod, or the booking expires (assume_ttl).
                    return
                self._delete_pod(uid)
                return
            self._settle_assumption(uid, pod.node_name)
            old_pod = self._pods.get(uid)
            if old_pod is None or _pod_fingerprint(old_pod) != _pod_fingerprint(pod):
                self._delete_pod(uid)
                self._add_pod(pod)
            # Set even when nothing else changed: the booking of an assumed pod did not know it.
            if meta.get("ownerReferences"):
                self._ownerless.discard(uid)
            else:
                self._ownerless.add(uid)
        elif kind == ALLOCS:
            key = _object_key(manifest)
            if event_type == "DELETED":
                self._delete_alloc(key)
                return
            alloc = AllocInfo.from_manifest(manifest)
            old_alloc = self._allocs.get(key)
            if old_alloc is None or _alloc_fingerprint(old_alloc) != _alloc_fingerprint(alloc):
                self._allocs[key] = alloc
                self._allocs_changed()
            self.allocs_available = True
        elif kind == SERVICES:
            key = _object_key(manifest)
            self._set_service(key, None if event_type == "DELETED" else ServiceInfo.from_manifest(manifest))
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _set_service(self, key: str, service: ServiceInfo | None) -> None:
        """A Service came, changed or went (None): re-key the ownerless pods of its namespace."""
        if self._services.get(key) == service:
            return
        if service is None:
            del self._services[key]
        else:
            self._services[key] = service
        namespace = key.split("/", 1)[0]
        in_namespace = tuple(sorted((s for k, s in self._services.items() if k.startswith(namespace + "/")),
                                    key=lambda s: s.name))
        if in_namespace:
            self._services_by_ns[namespace] = in_namespace
        else:
            self._services_by_ns.pop(namespace, None)
        for uid in [u for u in self._ownerless if self._pods[u].namespace == namespace]:
            pod = self._pods[uid]
            owner = job_key(pod.namespace, pod.name, (), pod.labels, in_namespace)
            if owner != pod.owner:
                self._delete_pod(uid)
                self._add_pod(dataclasses.replace(pod, owner=owner))
                self._ownerless.add(uid)

    def _delete_node(self, name: str) -> None:
        if self._bases.pop(name, None) is not None:
            self._dirty.add(name)

    def _add_pod(self, pod: PodInfo) -> None:
        self._pods[pod.uid] = pod
        self._pods_by_node.setdefault(pod.node_name or "", {})[pod.uid] = pod
        self._dirty.add(pod.node_name or "")

    def _delete_pod(self, uid: str) -> None:
        self._ownerless.discard(uid)
        old = self._pods.pop(uid, None)
        if old is not None and old.node_name:
            on_node = self._pods_by_node.get(old.node_name, {})
            on_node.pop(uid, None)
            if not on_node:
                self._pods_by_node.pop(old.node_name, None)
            self._dirty.add(old.node_name)

    def _delete_alloc(self, key: str) -> None:
        if self._allocs.pop(key, None) is not None:
            self._allocs_changed()

    def _allocs_changed(self) -> None:
        # A new mapping object tells the score cache that reservations changed.
        self._allocs_view = MappingProxyType(dict(self._allocs))
        self._snapshot = None

    # --- raw API bodies ---------------------------------------------------------------------------

    def handle_list(self, kind: str, body: bytes) -> str:
        """A list response body; returns its resourceVersion to watch from."""
        listed = _list_decoders[kind].decode(body)
        self.replace(kind, [_manifest(item) for item in listed.items or ()])
        return str(listed.metadata.resource_version)

    def handle_watch_line(self, kind: str, line: str | bytes) -> str | None:
        """One watch stream line; returns the new resourceVersion (None for an empty line)."""
        return apply_line(self.sink(kind), line, f"watch {kind}")

    def handle_event(self, kind: str, event_type: str, raw_obj: bytes) -> str | None:
        """One watch event's object (raw JSON); returns its resourceVersion."""
        obj = _object_decoders[kind].decode(raw_obj)
        raw = _raw_key(kind, obj)
        if raw is not None and event_type == "MODIFIED":
            # Most updates are status noise (a pod turning Ready, a node heartbeat): when nothing the
            # policy reads changed, skip building the policy's view of the object again.
            with self._lock:
                if self._raw.get(raw[0]) == raw[1]:
                    self.events += 1
                    return obj.metadata.resource_version or None
        manifest = _manifest(obj)
        with self._lock:
            self._apply(kind, event_type, manifest)
            if raw is not None:
                if event_type == "DELETED":
                    self._raw.pop(raw[0], None)
                else:
                    self._raw[raw[0]] = raw[1]
        return str((manifest.get("metadata") or {}).get("resourceVersion", "")) or None

    def sink(self, kind: str) -> KindSink:
        """What a reflector of `kind` hands its bodies to."""
        return KindSink(self, kind)


class KindSink:
    """One kind of the cache as a reflector's sink (`scheduler_ext.kube.reflector.Sink`)."""

    def __init__(self, cache: ClusterCache, kind: str) -> None:
        self.cache, self.kind = cache, kind

    def replace(self, body: bytes) -> str:
        return self.cache.handle_list(self.kind, body)

    def event(self, event_type: str, obj: bytes) -> str | None:
        return self.cache.handle_event(self.kind, event_type, obj)

    def absent(self) -> None:
        self.cache.mark_absent(self.kind)


def _raw_key(kind: str, obj: object) -> tuple[str, tuple[object, ...]] | None:
    """(identity, what the policy reads) of a decoded watch object, compared as msgspec structs."""
    if isinstance(obj, wire.Pod):
        meta = obj.metadata
        terminal = obj.status is not None and obj.status.phase in TERMINAL_PHASES
        return "pod/" + meta.uid, (meta.name, meta.namespace, meta.labels, meta.owner_references, obj.spec, terminal)
    if isinstance(obj, wire.Node):
        status = obj.status
        return "node/" + obj.metadata.name, (obj.metadata.labels, obj.spec,
                                             status.allocatable if status else None,
                                             status.capacity if status else None)
    return None


def _object_key(manifest: Mapping[str, Any]) -> str:
    """The "ns/name" key of a namespaced object (an Alloc, a Service)."""
    meta = manifest.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def reflector(cache: ClusterCache, kind: str, transport: Transport, stop: threading.Event,
              absent_retry: float = 30.0) -> Reflector:
    return Reflector(transport, LIST_WATCHES[kind], cache.sink(kind), stop, absent_retry=absent_retry)


def start_reflectors(cache: ClusterCache, transport: Transport, stop: threading.Event) -> list[Reflector]:
    reflectors = [reflector(cache, kind, transport, stop) for kind in KINDS]
    for one in reflectors:
        one.start()
    return reflectors

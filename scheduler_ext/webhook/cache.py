"""What the webhook knows about the cell, kept current by list+watch (an informer per resource).

Admission must answer in milliseconds (the p99 target is < 10 ms added), so nothing is listed on
the request path: one thread per resource lists once, then watches, and turns every object into
what quota needs right away (a Charge from the policy core, a parsed BandQuota, a node's
allocatable). A request then only sums a namespace's few charges.

Between admitting a job and seeing it come back through the watch there are a few milliseconds in
which a second job could be admitted against the same quota; admitted charges are therefore
*reserved* until the watch delivers the object (or a short time passes, if it never does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from scheduler_ext.kube import names
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.names import BANDQUOTAS as BAND_QUOTAS
from scheduler_ext.kube.names import CHARGED, NODES, PRIORITY_CLASSES, Resource
from scheduler_ext.kube.reflector import ListWatch, ManifestSink, Reflector
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import BandQuota, band_quota_of
from scheduler_ext.policy.resources import ZERO, Resources
from scheduler_ext.policy.workloads import ObjectRef, Workload, namespace_charges, ref_of, usage_by_band, workload_of

log = logging.getLogger(__name__)

RESERVATION_TTL = 15.0
ABSENT_RETRY = 10.0  # seconds before looking again for a resource not served (a CRD applied later)
# Kinds whose scale subresource quota sees: the resource name in the URL -> kind.
SCALABLE = {resource.plural: resource.kind for resource in names.SCALABLE}

__all__ = ["BAND_QUOTAS", "CHARGED", "NODES", "PRIORITY_CLASSES", "SCALABLE", "QuotaCache", "Resource"]


class QuotaCache:
    """Workloads per namespace, BandQuotas, node capacity and PriorityClasses, updated by reflectors.

    Objects are kept as the policy's Workloads (what each claims and declares); who is charged is
    decided by policy.workloads.resolve over the whole namespace (Q9), once per change.
    """

    def __init__(self, api: RawClient | None = None, reservation_ttl: float = RESERVATION_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self._ttl, self._clock = reservation_ttl, clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workloads: dict[str, dict[ObjectRef, Workload]] = {}
        # Use per namespace, recomputed on the first request after a change: a burst of admissions
        # between two watch events then costs one resolution, not one per request.
        self._usage: dict[str, tuple[dict[Band, Resources], frozenset[str]]] = {}
        self._quotas: dict[tuple[str, str], BandQuota] = {}
        self._nodes: dict[str, Resources] = {}
        self._priority_classes: dict[str, int] = {}
        self._reserved: dict[str, dict[ObjectRef, tuple[Workload, float]]] = {}
        self._reserved_quotas: dict[tuple[str, str], tuple[BandQuota, float]] = {}
        self._reflectors: list[Reflector] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.api is None:
            raise RuntimeError("QuotaCache.start needs an API client")
        # PriorityClasses first: templates' bands are resolved through them when charges are computed.
        for resource in (PRIORITY_CLASSES, NODES, BAND_QUOTAS, *CHARGED):
            reflector = Reflector(self.api, ListWatch(resource), ManifestSink(resource, self.replace, self.apply),
                                  self._stop, absent_retry=ABSENT_RETRY)
            self._reflectors.append(reflector)
            reflector.start()
            if resource is PRIORITY_CLASSES:
                reflector.synced.wait(10.0)

    def stop(self) -> None:
        self._stop.set()

    def synced(self) -> bool:
        return bool(self._reflectors) and all(r.synced.is_set() for r in self._reflectors)

    def unsynced(self) -> list[str]:
        return [r.resource.kind for r in self._reflectors if not r.synced.is_set()]

    # --- updates (reflector threads) -------------------------------------------------------------

    def replace(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        with self._lock:
            if resource.kind == "BandQuota":
                self._quotas.clear()
            elif resource.kind == "Node":
                self._nodes.clear()
            elif resource.kind == "PriorityClass":
                self._priority_classes.clear()
            else:
                for workloads in self._workloads.values():
                    for ref in [ref for ref in workloads if ref.kind == resource.kind]:
                        del workloads[ref]
                self._usage.clear()
            for item in items:
                self._put(item)

    def apply(self, resource: Resource, event: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if event == "DELETED":
                self._delete(obj)
            else:
                self._put(obj)

    def _put(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind")
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        if kind == "BandQuota":
            self._quotas[(namespace, name)] = band_quota_of(obj)[0]
            self._reserved_quotas.pop((namespace, name), None)
        elif kind == "Node":
            status = obj.get("status") or {}
            try:
                self._nodes[name] = Resources.parse(status.get("allocatable") or status.get("capacity"))
            except ValueError as exc:
                log.warning("node %s: unreadable allocatable: %s", name, exc)
                self._nodes.pop(name, None)
        elif kind == "PriorityClass":
            value = obj.get("value")
            if isinstance(value, int):
                self._priority_classes[name] = value
        else:
            ref = ref_of(obj)
            try:
                workload = workload_of(obj, self._priority_classes)
            except ValueError as exc:
                log.warning("cannot charge %s: %s", ref, exc)
                workload = None
            workloads = self._workloads.setdefault(namespace, {})
            if workload is None:
                workloads.pop(ref, None)
            else:
                workloads[ref] = workload
            self._usage.pop(namespace, None)
            self._reserved.get(namespace, {}).pop(ref, None)

    def _delete(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind")
        metadata = obj.get("metadata") or {}
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        if kind == "BandQuota":
            self._quotas.pop((namespace, name), None)
            self._reserved_quotas.pop((namespace, name), None)
        elif kind == "Node":
            self._nodes.pop(name, None)
        elif kind == "PriorityClass":
            self._priority_classes.pop(name, None)
        else:
            ref = ref_of(obj)
            self._workloads.get(namespace, {}).pop(ref, None)
            self._usage.pop(namespace, None)
            self._reserved.get(namespace, {}).pop(ref, None)

    # --- reservations (admission) ----------------------------------------------------------------

    def reserve(self, workload: Workload) -> None:
        """Count an admitted object until the watch delivers it (closes the double-admission window).

        Exempt objects are reserved too: they take their owner's cover, which the next one must see.
        """
        with self._lock:
            namespace = workload.ref.namespace
            self._reserved.setdefault(namespace, {})[workload.ref] = (workload, self._clock() + self._ttl)
            self._usage.pop(namespace, None)

    def reserve_quota(self, quota: BandQuota) -> None:
        with self._lock:
            self._reserved_quotas[(quota.namespace, quota.name)] = (quota, self._clock() + self._ttl)

    # --- queries (admission) ---------------------------------------------------------------------

    def priority_classes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._priority_classes)

    def _view(self, namespace: str) -> dict[ObjectRef, Workload]:
        now = self._clock()
        view = dict(self._workloads.get(namespace, {}))
        reserved = self._reserved.get(namespace)
        if reserved:
            for key in [key for key, (_, expiry) in reserved.items() if expiry < now]:
                del reserved[key]
                self._usage.pop(namespace, None)
            # Reservations stand in for the stored version of the same object.
            view.update({key: workload for key, (workload, _) in reserved.items()})
        return view

    def namespace_view(self, namespace: str) -> dict[ObjectRef, Workload]:
        """Every workload of the namespace as admission should see it: stored, plus admitted ones."""
        with self._lock:
            return self._view(namespace)

    def resolved(self, namespace: str) -> tuple[dict[ObjectRef, Workload], dict[Band, Resources], frozenset[str]]:
        """(view, what it uses per band as policy.workloads.resolve charges it, the controller uids
        its objects claim); the use is resolved once per change of the namespace (Q7, Q9)."""
        with self._lock:
            view = self._view(namespace)
            cached = self._usage.get(namespace)
            if cached is None:
                used = usage_by_band(namespace_charges(view.values()))
                claimed = frozenset(w.controller.uid for w in view.values() if w.controller is not None)
                cached = self._usage[namespace] = (used, claimed)
            return view, dict(cached[0]), cached[1]

    def used(self, namespace: str) -> dict[Band, Resources]:
        """What the namespace uses per band, as policy.workloads.resolve charges it (Q7, Q9)."""
        return self.resolved(namespace)[1]

    def workload(self, ref: ObjectRef) -> Workload | None:
        """The stored (or just admitted) Workload of ref, or None if not seen."""
        with self._lock:
            return self._view(ref.namespace).get(ref)

    def _all_quotas(self) -> dict[tuple[str, str], BandQuota]:
        now = self._clock()
        quotas = dict(self._quotas)
        for key, (quota, expiry) in list(self._reserved_quotas.items()):
            if expiry < now:
                del self._reserved_quotas[key]
            else:
                quotas[key] = quota
        return quotas

    def quota_of(self, namespace: str) -> BandQuota | None:
        with self._lock:
            mine = sorted((name, q) for (ns, name), q in self._all_quotas().items() if ns == namespace)
        return mine[0][1] if mine else None

    def band_quotas_except(self, namespace: str, name: str) -> list[BandQuota]:
        with self._lock:
            return [q for key, q in self._all_quotas().items() if key != (namespace, name)]

    def capacity(self) -> Resources:
        with self._lock:
            total = ZERO
            for allocatable in self._nodes.values():
                total = total + allocatable
            return total

    def largest_node(self) -> Resources | None:
        """The most any one node can hold, per resource (None until nodes are known)."""
        with self._lock:
            if not self._nodes:
                return None
            return Resources(max(n.cpu for n in self._nodes.values()), max(n.memory for n in self._nodes.values()))

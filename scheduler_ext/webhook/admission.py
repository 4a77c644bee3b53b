"""One AdmissionRequest -> one quota Decision: gather the data, let scheduler_ext.policy decide.

No rule lives here. This module only knows where the numbers come from: the object in the request,
its old version on UPDATE, the parent workload behind a /scale request, and the cache's view of
the namespace (use per band, its BandQuota) and of the cell (every BandQuota, node capacity).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from scheduler_ext.policy.quota import Decision, admit_band_quota, admit_workload, band_quota_of
from scheduler_ext.policy.workloads import CELL_GROUP, CHARGED_KINDS, ObjectRef, Workload, binding_refusal, workload_of
from scheduler_ext.webhook.cache import SCALABLE, QuotaCache
from scheduler_ext.webhook.wire import AdmissionRequest

log = logging.getLogger(__name__)

# Fetches a namespaced workload manifest by (resource, namespace, name), or None if it does not exist.
Fetch = Callable[[str, str, str], dict[str, Any] | None]


def _in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The object as it will be stored: on CREATE its namespace may come from the URL only."""
    metadata = dict(obj.get("metadata") or {})
    metadata.setdefault("namespace", namespace)
    if not metadata["namespace"]:
        metadata["namespace"] = namespace
    return {**obj, "metadata": metadata}


def _replicas(value: Any) -> int | None:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class QuotaAdmission:
    def __init__(self, cache: QuotaCache, fetch: Fetch) -> None:
        self.cache = cache
        self.fetch = fetch

    async def review(self, request: AdmissionRequest) -> Decision:
        if request.operation not in ("CREATE", "UPDATE") or request.object is None:
            return Decision.allow(f"{request.operation} is not charged")
        group, kind = request.kind.group, request.kind.kind
        if (group, kind) == (CELL_GROUP, "BandQuota"):
            return self._band_quota(request)
        if request.sub_resource == "scale":
            return await self._scale(request)
        if request.sub_resource or (group, kind) not in CHARGED_KINDS:
            target = f"{kind}/{request.sub_resource}" if request.sub_resource else kind
            return Decision.allow(f"{target} is not charged")
        return self._workload(request)

    # --- jobs and allocs (Q1-Q5, A4, Q9) ---------------------------------------------------------

    def _read(self, obj: dict[str, Any], namespace: str) -> Workload | None:
        return workload_of(_in_namespace(obj, namespace), self.cache.priority_classes())

    def _decide(self, namespace: str, new: Workload, old: Workload | None, dry_run: bool) -> Decision:
        view, used, claimed = self.cache.resolved(namespace)
        decision = admit_workload(namespace, new, view, self.cache.quota_of(namespace), old, self.cache.largest_node(),
                                  used, claimed)
        if decision.allowed and not dry_run:
            self.cache.reserve(new)
        return decision

    def _workload(self, request: AdmissionRequest) -> Decision:
        assert request.object is not None
        namespace = request.namespace
        obj = _in_namespace(request.object, namespace)
        if request.operation == "CREATE":
            refusal = binding_refusal(obj)
            if refusal:
                return Decision.deny(refusal)
        try:
            new = self._read(obj, namespace)
        except ValueError as exc:
            return Decision.deny(str(exc))
        if new is None:
            return Decision.allow("not charged")
        old = None
        if request.operation == "UPDATE" and request.old_object is not None:
            try:
                old = self._read(request.old_object, namespace)
            except ValueError:
                old = None  # the stored version cannot be read: judge the update as new
        return self._decide(namespace, new, old, request.dry_run)

    async def _scale(self, request: AdmissionRequest) -> Decision:
        """kubectl scale / the HPA: the parent's pods at the Scale's new replica count."""
        kind = SCALABLE.get(request.resource.resource)
        if kind is None:
            return Decision.allow(f"scale of {request.resource.resource} is not charged")
        namespace, name = request.namespace, request.name
        ref = ObjectRef(kind, namespace, name)
        base = self.cache.workload(ref)
        if base is None:
            # Not seen by the watch yet (created a moment ago): ask the API once.
            manifest = await asyncio.to_thread(self.fetch, request.resource.resource, namespace, name)
            if manifest is None:
                return Decision.allow(f"{ref} does not exist")
            try:
                base = self._read(manifest, namespace)
            except ValueError as exc:
                return Decision.deny(str(exc))
            if base is None:
                return Decision.allow(f"{ref} is not charged")
        assert request.object is not None
        new_replicas = _replicas((request.object.get("spec") or {}).get("replicas"))
        if new_replicas is None:
            return Decision.deny(f"{ref}: spec.replicas of the Scale must be a non-negative integer")
        old = None
        if request.old_object:
            old = base.with_replicas(_replicas((request.old_object.get("spec") or {}).get("replicas")) or 0)
        return self._decide(namespace, base.with_replicas(new_replicas), old, request.dry_run)

    # --- BandQuotas (one per namespace, Q6) ------------------------------------------------------

    def _band_quota(self, request: AdmissionRequest) -> Decision:
        assert request.object is not None
        obj = _in_namespace(request.object, request.namespace)
        new, errors = band_quota_of(obj)
        if errors:
            return Decision.deny(*(f"BandQuota {new.ref}: {error}" for error in errors))
        old = None
        if request.operation == "UPDATE" and request.old_object is not None:
            old, _ = band_quota_of(_in_namespace(request.old_object, request.namespace))
        decision = admit_band_quota(new, self.cache.band_quotas_except(new.namespace, new.name),
                                    self.cache.capacity(), old)
        if decision.allowed and not request.dry_run:
            self.cache.reserve_quota(new)
        return decision

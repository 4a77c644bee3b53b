"""Quota admission by band (Borg §2.5): BandQuota parsing, the admission decision, prod overselling.

Borg checks quota when a job is submitted, for the job as a whole, and refuses it at once if it
does not fit; it never admits part of a job. Prod quota is limited by what the cell can deliver,
non-prod may be oversold. The functions here take plain data (parsed quotas, charges, usage per
band) and return a Decision with human-readable reasons; the webhook, the operator and the CLI
only gather that data and relay the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.resources import (
    ZERO,
    QuantityError,
    Resources,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)
from scheduler_ext.policy.workloads import CHARGED, Charge, ObjectRef, Workload, resolve, usage_by_band

QUOTA_RESOURCES: tuple[str, ...] = ("cpu", "memory")

# Q8: the course's default quota for a student namespace (no monitoring; best-effort unlimited).
DEFAULT_STUDENT_BANDS: dict[str, dict[str, str]] = {
    "production": {"cpu": "2", "memory": "2Gi"},
    "batch": {"cpu": "4", "memory": "4Gi"},
}

_FORMAT = {"cpu": format_cpu, "memory": format_memory}
_PARSE = {"cpu": parse_cpu, "memory": parse_memory}


@dataclass(frozen=True, slots=True)
class Decision:
    """An admission verdict and why; message is what the user reads (one line)."""

    allowed: bool
    reasons: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)

    @classmethod
    def allow(cls, *reasons: str) -> Decision:
        return cls(True, reasons)

    @classmethod
    def deny(cls, *reasons: str) -> Decision:
        return cls(False, reasons)


@dataclass(frozen=True, slots=True)
class BandQuota:
    """A parsed BandQuota: the limit per band listed in spec.bands."""

    namespace: str
    name: str
    limits: Mapping[Band, Resources] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def limit(self, band: Band) -> Resources | None:
        """Q4: a band not listed has zero quota, except best-effort, which is then unlimited (None)."""
        if band in self.limits:
            return self.limits[band]
        return None if band is Band.BEST_EFFORT else ZERO

    @property
    def prod(self) -> Resources:
        """The prod quota (monitoring + production) this object grants, which Q6 caps cell-wide."""
        total = ZERO
        for band, limit in self.limits.items():
            if band.is_prod:
                total = total + limit
        return total


# --- parsing and validation ----------------------------------------------------------------------

def parse_bands(spec: Any, path: str = "spec") -> tuple[dict[Band, Resources], list[str]]:
    """spec of a BandQuota -> (limits per band, errors). Collects every error with its field path.

    Each listed band needs both cpu and memory as non-negative quantities, so that what a band
    grants is always explicit (an omitted resource would otherwise silently mean zero).
    """
    errors: list[str] = []
    limits: dict[Band, Resources] = {}
    if not isinstance(spec, Mapping):
        return limits, [f"{path}: must be an object with a bands field"]
    for key in spec:
        if key != "bands":
            errors.append(f"{path}.{key}: unknown field; expected bands")
    bands = spec.get("bands", {})
    if bands is None:
        bands = {}
    if not isinstance(bands, Mapping):
        return limits, [*errors, f"{path}.bands: must be an object keyed by band"]
    for label, value in bands.items():
        band_path = f"{path}.bands.{label}"
        try:
            band = Band.from_label(str(label))
        except ValueError:
            errors.append(f"{band_path}: unknown band; expected one of {', '.join(b.label for b in Band)}")
            continue
        if not isinstance(value, Mapping):
            errors.append(f"{band_path}: must be an object with cpu and memory")
            continue
        amounts: dict[str, int] = {}
        for resource in value:
            if resource not in QUOTA_RESOURCES:
                errors.append(f"{band_path}.{resource}: unknown resource; expected cpu, memory")
        for resource in QUOTA_RESOURCES:
            field_path = f"{band_path}.{resource}"
            if resource not in value or value[resource] is None:
                errors.append(f"{field_path}: required")
                continue
            raw = value[resource]
            try:
                amount = _PARSE[resource](raw)
            except (QuantityError, ArithmeticError, ValueError):
                errors.append(f"{field_path}: must be a quantity, got {raw!r}")
                continue
            if amount < 0 or (isinstance(raw, str) and raw.strip().startswith("-")):
                errors.append(f"{field_path}: must not be negative, got {raw!r}")
                continue
            amounts[resource] = amount
        if len(amounts) == len(QUOTA_RESOURCES):
            limits[band] = Resources(amounts["cpu"], amounts["memory"])
    return limits, errors


def band_quota_of(obj: Mapping[str, Any]) -> tuple[BandQuota, list[str]]:
    """A BandQuota manifest -> (parsed quota, errors); the quota holds the valid bands only."""
    metadata = obj.get("metadata") or {}
    limits, errors = parse_bands(obj.get("spec"), "spec")
    return BandQuota(str(metadata.get("namespace", "")), str(metadata.get("name", "")), limits), errors


def bands_manifest(limits: Mapping[Band, Resources]) -> dict[str, dict[str, str]]:
    """Limits -> the spec.bands mapping as written in YAML (cpu "2", memory "2Gi")."""
    return {band.label: limits[band].to_dict() for band in sorted(limits, reverse=True)}


# --- usage ---------------------------------------------------------------------------------------

def used_status(used: Mapping[Band, Resources]) -> dict[str, dict[str, str]]:
    """status.used of a BandQuota: every band, highest first, zero where unused (Q7)."""
    return {band.label: used.get(band, ZERO).to_dict() for band in sorted(Band, reverse=True)}


# --- admission of workloads (Q1-Q5) --------------------------------------------------------------

def _amount(resources: Resources, resource: str) -> int:
    return int(getattr(resources, resource))


def admit_charge(
    namespace: str,
    new: Charge,
    quota: BandQuota | None,
    used: Mapping[Band, Resources],
    old: Charge | None = None,
) -> Decision:
    """Q1-Q5: may a job of this size enter its band, given what the rest of the namespace uses?

    used must exclude the object itself (its old size is in old), so that scaling 4 -> 5 asks
    whether 5 fit, not 9. Borg-style whole-job admission: the job's full declared size is checked.
    An update that does not grow a resource in its band is always admitted, so that a namespace
    above a lowered quota can still shrink, roll out or relabel what it runs.
    quota is None when the namespace has no BandQuota: every band but best-effort is then zero.
    """
    band = new.band
    limit = quota.limit(band) if quota is not None else (None if band is Band.BEST_EFFORT else ZERO)
    if limit is None:
        return Decision.allow(f"band {band.label} is unlimited (best-effort, Q4)")
    same_band = old is not None and old.band == band
    before = old.demand if old is not None and same_band else ZERO
    growing = [r for r in QUOTA_RESOURCES if _amount(new.demand, r) > _amount(before, r)]
    # Replicas count as growth even at zero requests, or Q5 could be dodged by scaling a request-less job.
    more_replicas = new.replicas > (old.replicas if old is not None and same_band else 0)
    if not growing and not more_replicas:
        return Decision.allow(f"{new.ref} does not grow in band {band.label}")
    owner = f"BandQuota {quota.ref}" if quota is not None else f"no BandQuota in namespace {namespace}"
    if new.missing_requests:
        return Decision.deny(
            f"{new.ref}: pods in band {band.label} (limited by {owner}) must request cpu and memory; "
            + "; ".join(new.missing_requests))
    in_use = used.get(band, ZERO)
    reasons = []
    for resource in growing:
        needs, current, cap = _amount(new.demand, resource), _amount(in_use, resource), _amount(limit, resource)
        if needs + current > cap:
            fmt = _FORMAT[resource]
            reason = (f"{owner}: band {band.label} needs {resource} {fmt(needs)}, "
                      f"{fmt(current)} in use, limit {fmt(cap)}")
            if quota is not None and band not in quota.limits:
                reason += f" ({band.label} is not in spec.bands)"
            reasons.append(reason)
    if reasons:
        return Decision.deny(*reasons)
    return Decision.allow(f"{new.ref} fits band {band.label}: needs {new.demand}, {in_use} in use, limit {limit}")


def larger_than_any_node(new: Workload, largest: Resources | None, old: Workload | None = None) -> str | None:
    """Why new's pods (an Alloc's instances) can never be placed, or None: each must fit one node.

    Only growth is judged, so an object admitted before the cell shrank can still be scaled down.
    largest is the most one node holds per resource (None: nodes not known yet).
    """
    if largest is None or new.own is None:
        return None
    size = new.own.per_replica
    if old is not None and old.own is not None and size.fits_in(old.own.per_replica):
        return None
    if size.fits_in(largest):
        return None
    what = "each instance" if new.ref.kind == "Alloc" else "each pod"
    over = ", ".join(f"{r} {_FORMAT[r](_amount(size, r))}" for r in QUOTA_RESOURCES
                     if _amount(size, r) > _amount(largest, r))
    return f"{new.ref}: {what} requests {over}, more than any node holds (the largest: {largest})"


def admit_workload(
    namespace: str,
    new: Workload,
    view: Mapping[ObjectRef, Workload],
    quota: BandQuota | None,
    old: Workload | None = None,
    largest: Resources | None = None,
    view_used: Mapping[Band, Resources] | None = None,
    claimed: frozenset[str] | set[str] = frozenset(),
) -> Decision:
    """Q1-Q5 with Q9: admit new (old: its stored version on an update) into a namespace holding view.

    view_used and claimed (the controller uids view's objects name), when given, are what view
    resolves to: a new object that neither claims an owner nor is claimed is then judged without
    resolving the whole namespace again (the common case of a burst of plain creates).

    Exemptions are earned: new is charged through its owner or an Alloc only if resolve() says
    so with everything else in the namespace; otherwise it is judged like any job, and a denial
    says why no exemption applied.
    """
    too_large = larger_than_any_node(new, largest, old)
    if too_large:
        return Decision.deny(too_large)
    before = None
    if view_used is not None and new.controller is None and new.ref.kind != "Alloc" and new.ref not in view \
            and new.uid not in claimed:
        # A new object nobody claims and that claims no owner changes no one else's charge: judge it
        # alone (with its Alloc, if it names one) against the namespace's use as already resolved.
        alloc = view.get(ObjectRef("Alloc", new.ref.namespace, new.alloc)) if new.alloc else None
        mine = resolve([new, *([alloc] if alloc is not None else [])])[new.ref]
        used: Mapping[Band, Resources] = view_used
    else:
        others = [w for ref, w in view.items() if ref != new.ref]
        after = resolve([*others, new])
        mine = after[new.ref]
        used = usage_by_band(r.charge for ref, r in after.items()
                             if ref != new.ref and r.state == CHARGED and r.charge is not None)
        if old is not None:
            was = resolve([*others, old])[old.ref]
            before = was.charge if was.state == CHARGED else None
    if mine.state != CHARGED or mine.charge is None:
        return Decision.allow(f"{new.ref}: {mine.reason}")
    decision = admit_charge(namespace, mine.charge, quota, used, before)
    if not decision.allowed and mine.reason != "charged itself":
        return Decision.deny(*decision.reasons, f"{new.ref} is {mine.reason}")
    return decision


# --- admission of BandQuotas (one per namespace, Q6) ---------------------------------------------

def admit_band_quota(
    new: BandQuota,
    others: Iterable[BandQuota],
    capacity: Resources,
    old: BandQuota | None = None,
) -> Decision:
    """At most one BandQuota per namespace; prod quota over all namespaces within the cell (Q6).

    others are every other BandQuota in the cell (not new's own earlier version). Only growth of
    this object's prod quota can be refused, so lowering a quota always succeeds even when the
    cell shrank below what is already granted.
    """
    others = list(others)
    clash = sorted(o.ref for o in others if o.namespace == new.namespace and o.name != new.name)
    if clash:
        return Decision.deny(
            f"BandQuota {new.ref}: namespace {new.namespace} already has BandQuota {clash[0]}; "
            "at most one BandQuota per namespace")
    granted = ZERO
    for other in others:
        granted = granted + other.prod
    total = granted + new.prod
    before = old.prod if old is not None else ZERO
    reasons = []
    for resource in QUOTA_RESOURCES:
        grows = _amount(new.prod, resource) > _amount(before, resource)
        if grows and _amount(total, resource) > _amount(capacity, resource):
            fmt = _FORMAT[resource]
            reasons.append(
                f"BandQuota {new.ref}: prod quota (monitoring + production) would oversell the cell: "
                f"{resource} {fmt(_amount(total, resource))} granted over all namespaces "
                f"({fmt(_amount(new.prod, resource))} here), allocatable {fmt(_amount(capacity, resource))}")
    if reasons:
        return Decision.deny(*reasons)
    return Decision.allow(f"BandQuota {new.ref}: prod quota {total} of allocatable {capacity}")

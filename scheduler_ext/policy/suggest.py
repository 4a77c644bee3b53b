"""What would let it in (Borg §8's "why pending?" taken one step further): for a job that quota refuses
or the cell cannot place, and for a pending pod, the smallest single changes that would admit and
place it.

Every suggestion is checked, not estimated: the changed manifest goes through the same functions the
webhook admits with (`quota.admit_workload`) and the pods through the same pass the extender places
with (`Scheduler`, then `preemption.preempt` where a pod fits nowhere, as kube-scheduler would),
over the caller's snapshot. "Smallest" is searched for: the largest replica count, the largest request
(per resource, then both scaled together), the least quota, for which that check passes; the search
keeps "passes at the answer, fails one unit above" true, so the answer is a boundary even where
placement is not monotone.

Plain data in (a manifest, the namespace as quota sees it, a snapshot), a `WhyRecord` out.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler_ext.policy.bands import PRIORITY_CLASSES, Band
from scheduler_ext.policy.feasibility import check_node
from scheduler_ext.policy.model import ALLOC_LABEL, CellSnapshot, PodInfo
from scheduler_ext.policy.preemption import preempt
from scheduler_ext.policy.quota import BandQuota, Decision, admit_band_quota, admit_workload
from scheduler_ext.policy.resources import ZERO, Resources, format_cpu, format_memory
from scheduler_ext.policy.scheduler import FilterResult, Scheduler
from scheduler_ext.policy.why import Placed, Suggestion, WhyRecord, explain, some
from scheduler_ext.policy.workloads import ObjectRef, Workload, pod_requests, ref_of, workload_of

Manifest = Mapping[str, Any]
MIB = 2**20
_HUGE = 2**62  # a limit no request reaches: "this resource does not constrain" while searching another
_SEARCH_CPU = 2**40  # milli-CPU and Mi: where the search for a quota stops
_SEARCH_MIB = 2**40
_REPLICAS_PATH = {"Deployment": "/spec/replicas", "ReplicaSet": "/spec/replicas", "StatefulSet": "/spec/replicas",
                  "Job": "/spec/parallelism", "CronJob": "/spec/jobTemplate/spec/parallelism"}
_FORMAT = {"cpu": format_cpu, "memory": format_memory}


# --- JSON Patch (RFC 6902: add, replace, remove), what a suggestion's change is written as ------------

def _pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def apply_patch(manifest: Manifest, patch: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest with JSON Patch operations applied (a copy; add, replace and remove only)."""
    result: dict[str, Any] = copy.deepcopy(dict(manifest))
    for op in patch:
        *parents, last = _parts(str(op["path"]))
        at: Any = result
        for part in parents:
            at = at[int(part)] if isinstance(at, list) else at[part]
        if op["op"] == "remove":
            del at[int(last) if isinstance(at, list) else last]
        elif isinstance(at, list):
            index = len(at) if last == "-" else int(last)
            if op["op"] == "add":
                at.insert(index, copy.deepcopy(op["value"]))
            else:
                at[index] = copy.deepcopy(op["value"])
        else:
            at[last] = copy.deepcopy(op["value"])
    return result


def _set(manifest: Manifest, parts: Sequence[str | int], value: Any) -> dict[str, Any]:
    """The one operation that sets parts to value: creating the missing objects on the way, if any."""
    at: Any = manifest
    for depth, part in enumerate(parts):
        if isinstance(at, list) and isinstance(part, int) and part < len(at):
            at = at[part]
            continue
        present = isinstance(at, Mapping) and part in at and at[part] is not None
        if not present:
            nested = value
            for key in reversed(parts[depth + 1:]):
                nested = {key: nested}
            exists = isinstance(at, Mapping) and part in at
            return {"op": "replace" if exists else "add", "path": _pointer(parts[:depth + 1]), "value": nested}
        at = at[part]
    return {"op": "replace", "path": _pointer(parts), "value": value}


# --- a job's pods ------------------------------------------------------------------------------------

def _spec_path(kind: str) -> tuple[str, ...]:
    if kind == "Pod":
        return ("spec",)
    if kind == "CronJob":
        return ("spec", "jobTemplate", "spec", "template", "spec")
    return ("spec", "template", "spec")


def _labels_path(kind: str) -> tuple[str, ...]:
    return ("metadata", "labels") if kind == "Pod" else (*_spec_path(kind)[:-1], "metadata", "labels")


def _get(manifest: Manifest, parts: Iterable[str]) -> Any:
    at: Any = manifest
    for part in parts:
        at = at.get(part) if isinstance(at, Mapping) else None
    return at if at is not None else {}


def pod_spec(manifest: Manifest) -> Mapping[str, Any]:
    """The spec of the pods a job's manifest makes (a Pod's own spec)."""
    spec: Mapping[str, Any] = _get(manifest, _spec_path(str(manifest.get("kind", ""))))
    return spec


def job_pods(manifest: Manifest, count: int, priority_classes: Mapping[str, int] | None = None) -> list[PodInfo]:
    """`count` pods as the job's template makes them (requests defaulted from limits, as the API does)."""
    kind = str(manifest.get("kind", ""))
    meta = manifest.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or meta.get("generateName") or "")
    spec = _get(manifest, _spec_path(kind))
    priority = spec.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool):
        priority = {**PRIORITY_CLASSES, **(priority_classes or {})}.get(spec.get("priorityClassName") or "", 0)
    requests = pod_requests(spec)
    labels = {str(k): str(v) for k, v in _get(manifest, _labels_path(kind)).items()}
    selector = {str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()}
    owner = f"{namespace}/{kind}/{name}"
    if kind == "Pod":  # its own name, one at most
        return [PodInfo(namespace, name, f"why:{namespace}/{name}", priority, requests, labels, owner, None,
                        selector)][:count]
    return [PodInfo(namespace, f"{name}-{i}", f"why:{namespace}/{name}-{i}", priority, requests, labels, owner, None,
                    selector) for i in range(count)]


def without_job(snapshot: CellSnapshot, workload: Workload) -> CellSnapshot:
    """The snapshot without the pods the job already runs (its own selector's, in its namespace), so that
    judging it does not count them twice."""
    namespace = workload.ref.namespace

    def mine(pod: PodInfo) -> bool:
        if pod.namespace != namespace:
            return False
        if workload.ref.kind == "Pod":
            return pod.name == workload.ref.name
        return workload.selector is not None and workload.selector.matches(pod.labels)

    changed = [node.without_pods({p.uid for p in node.pods if mine(p)})
               for node in snapshot.nodes.values() if any(mine(p) for p in node.pods)]
    return snapshot.with_nodes(*changed) if changed else snapshot


@dataclass(frozen=True, slots=True)
class Placement:
    """Where each pod went, and the first pod that went nowhere with every node's reasons."""

    placed: tuple[Placed, ...]
    stuck: PodInfo | None = None
    stuck_result: FilterResult | None = None

    @property
    def complete(self) -> bool:
        return self.stuck is None

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.node for p in self.placed if p.node))

    @property
    def victims(self) -> tuple[str, ...]:
        return tuple(v for p in self.placed for v in p.victims)


def place(pods: Sequence[PodInfo], snapshot: CellSnapshot) -> Placement:
    """The pods placed one by one as the cell would: the scheduler's pick, else preemption (R1-R3)
    of the node with the fewest and lowest victims. Stops at the first pod that fits nowhere: the
    job's other pods are the same, and would not fit either."""
    scheduler = Scheduler()  # every node examined, ties to the first: deterministic
    placed: list[Placed] = []
    for at, pod in enumerate(pods):
        decision = scheduler.schedule(pod, snapshot)
        if decision.node is not None:
            snapshot = snapshot.with_pod_bound(pod, decision.node)
            placed.append(Placed(pod.key, decision.node))
            continue
        chosen = preempt(pod, snapshot).victims
        if chosen is None:
            unplaced = tuple(Placed(p.key, None) for p in pods[at:])
            return Placement((*placed, *unplaced), pod, scheduler.filter(pod, snapshot))
        node = snapshot.nodes[chosen.node].without_pods({p.uid for p in chosen.pods})
        snapshot = snapshot.with_nodes(node).with_pod_bound(pod, chosen.node)
        placed.append(Placed(pod.key, chosen.node, tuple(p.key for p in chosen.pods)))
    return Placement(tuple(placed))


# --- the namespace as quota sees it, and one verdict on a manifest -------------------------------------

@dataclass(frozen=True, slots=True)
class QuotaView:
    """What the webhook decides a namespace's jobs with: its workloads (`workloads.workload_of` of every
    object of a charged kind), its BandQuota, every other BandQuota of the cell (Q6), the cell's
    PriorityClasses and the largest node."""

    namespace: str
    workloads: Mapping[ObjectRef, Workload] = field(default_factory=dict)
    quota: BandQuota | None = None
    other_quotas: tuple[BandQuota, ...] = ()
    priority_classes: Mapping[str, int] = field(default_factory=dict)
    largest: Resources | None = None
    managed: bool = True  # quota applies only in managed namespaces (the webhook's namespaceSelector)

    def with_quota(self, quota: BandQuota) -> QuotaView:
        return replace(self, quota=quota)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Would this manifest be admitted, and where would its pods go."""

    workload: Workload
    decision: Decision
    placement: Placement

    @property
    def ok(self) -> bool:
        return self.decision.allowed and self.placement.complete


def _in_namespace(manifest: Manifest, namespace: str) -> dict[str, Any]:
    meta = dict(manifest.get("metadata") or {})
    if not meta.get("namespace"):
        meta["namespace"] = namespace
    return {**manifest, "metadata": meta}


def judge(manifest: Manifest, view: QuotaView, snapshot: CellSnapshot) -> Verdict:
    """Quota's answer (as the webhook gives it: an existing object of that name is judged as updated)
    and the placement of every pod of the job (the pods it already runs left out first).

    Raises ValueError for a manifest that is not a job quota charges, or whose numbers cannot be read.
    """
    manifest = _in_namespace(manifest, view.namespace)
    workload = workload_of(manifest, view.priority_classes)
    if workload is None or workload.ref.kind == "Alloc":
        raise ValueError(f"{ref_of(manifest)}: not a job (Pod, Deployment, ReplicaSet, StatefulSet, Job, CronJob)")
    old = view.workloads.get(workload.ref)
    if view.managed:
        decision = admit_workload(view.namespace, workload, view.workloads, view.quota, old, view.largest)
    else:
        decision = Decision.allow(f"namespace {view.namespace} is not managed: quota does not apply")
    count = workload.own.replicas if workload.own is not None else 0
    pods = job_pods(manifest, count, view.priority_classes)
    return Verdict(workload, decision, place(pods, without_job(snapshot, workload)))


# --- the search -----------------------------------------------------------------------------------------

def largest_passing(lo: int, hi: int, passes: Callable[[int], bool]) -> int | None:
    """The largest n in [lo, hi) with passes(n), given that hi fails: None if lo fails. Binary search that
    keeps passes(answer) and not passes(answer + 1) true whatever the predicate's shape."""
    if lo >= hi or not passes(lo):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return lo


def smallest_passing(lo: int, hi: int, passes: Callable[[int], bool]) -> int | None:
    """The smallest n in (lo, hi] with passes(n), given that lo fails: None if hi fails."""
    if lo >= hi or not passes(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _nodes_text(verdict: Verdict) -> str:
    victims = verdict.placement.victims
    return f" (preempts {len(victims)} pod(s): {some(victims)})" if victims else ""


def _suggestion(kind: str, text: str, change: Mapping[str, Any], target: str, patch: Sequence[Mapping[str, Any]],
                verdict: Verdict) -> Suggestion:
    return Suggestion(text + _nodes_text(verdict), verdict.placement.nodes, kind, dict(change), target,
                      tuple(patch), verdict.placement.victims)


def _replicas(manifest: Manifest, current: Verdict, check: Callable[[Manifest], Verdict]) -> list[Suggestion]:
    kind = str(manifest.get("kind", ""))
    path = _REPLICAS_PATH.get(kind)
    own = current.workload.own
    if path is None or own is None or own.replicas <= 1:
        return []
    verdicts: dict[int, Verdict] = {}

    def patch(n: int) -> list[dict[str, Any]]:
        return [_set(manifest, _parts(path), n)]

    def passes(n: int) -> bool:
        verdicts[n] = check(apply_patch(manifest, patch(n)))
        return verdicts[n].ok

    best = largest_passing(1, own.replicas, passes)
    if best is None:
        return []
    field_name = _parts(path)[-1]
    return [_suggestion("replicas", f"{field_name} {best} (from {own.replicas})", {field_name: best},
                        str(current.workload.ref), patch(best), verdicts[best])]


def _containers(manifest: Manifest) -> list[tuple[tuple[str | int, ...], Mapping[str, Any]]]:
    """(path, container) of every container and init container of the job's pods."""
    spec_path = _spec_path(str(manifest.get("kind", "")))
    spec = _get(manifest, spec_path)
    return [((*spec_path, group, i), c) for group in ("containers", "initContainers")
            for i, c in enumerate(spec.get(group) or ()) if isinstance(c, Mapping)]


def _scaled_requests(manifest: Manifest, targets: Mapping[str, int], totals: Resources) -> list[dict[str, Any]]:
    """The operations that bring each container's request of each resource in `targets` down in
    proportion, so that the pod asks for about targets[resource] (memory rounded down to Mi)."""
    ops: list[dict[str, Any]] = []
    working: Manifest = manifest  # each operation is written against the manifest the earlier ones made

    def put(parts: Sequence[str | int], value: str) -> None:
        nonlocal working
        op = _set(working, parts, value)
        ops.append(op)
        working = apply_patch(working, [op])

    spec_path = _spec_path(str(manifest.get("kind", "")))
    pod_level = _get(manifest, (*spec_path, "resources", "requests"))
    for resource, target in targets.items():
        total = getattr(totals, resource)
        if pod_level.get(resource) is not None:  # pod-level requests take precedence over containers'
            put((*spec_path, "resources", "requests", resource), _FORMAT[resource](target))
            continue
        for path, container in _containers(manifest):
            resources = container.get("resources") or {}
            declared = (resources.get("requests") or {}).get(resource, (resources.get("limits") or {}).get(resource))
            if declared is None:
                continue
            amount = Resources.parse({resource: declared})
            value = getattr(amount, resource) * target // total
            if resource == "memory":  # in whole Mi (Ki below 1Mi), as people write memory
                unit = MIB if value >= MIB else 1024 if value >= 1024 else 1
                value = value // unit * unit
            put((*path, "resources", "requests", resource), _FORMAT[resource](max(value, 1)))
    return ops


def _requests(manifest: Manifest, current: Verdict, check: Callable[[Manifest], Verdict]) -> list[Suggestion]:
    own = current.workload.own
    if own is None:
        return []
    totals = own.per_replica
    target = str(current.workload.ref)
    found: list[Suggestion] = []

    def attempt(targets: Callable[[int], dict[str, int]], hi: int, text: Callable[[Resources], str]) -> bool:
        verdicts: dict[int, tuple[Verdict, list[dict[str, Any]]]] = {}

        def passes(n: int) -> bool:
            ops = _scaled_requests(manifest, targets(n), totals)
            verdicts[n] = (check(apply_patch(manifest, ops)), ops)
            return verdicts[n][0].ok

        best = largest_passing(1, hi, passes)
        if best is None:
            return False
        verdict, ops = verdicts[best]
        asked = verdict.workload.own.per_replica if verdict.workload.own is not None else ZERO
        change = {"requests": {r: _FORMAT[r](getattr(asked, r)) for r in targets(best)}}
        found.append(_suggestion("requests", text(asked), change, target, ops, verdict))
        return True

    single = False
    if totals.cpu > 1:
        single |= attempt(lambda n: {"cpu": n}, totals.cpu,
                          lambda r: f"request cpu {format_cpu(r.cpu)} per pod (from {format_cpu(totals.cpu)})")
    if totals.memory > MIB:
        single |= attempt(lambda n: {"memory": n * MIB}, -(-totals.memory // MIB),
                          lambda r: f"request memory {format_memory(r.memory)} per pod "
                                    f"(from {format_memory(totals.memory)})")
    if not single and totals.cpu > 1 and totals.memory > MIB:
        # Neither alone is enough: both, scaled by the same factor (in thousandths).
        attempt(lambda n: {"cpu": max(totals.cpu * n // 1000, 1), "memory": max(totals.memory * n // 1000, 1)}, 1000,
                lambda r: f"request cpu {format_cpu(r.cpu)} / memory {format_memory(r.memory)} per pod "
                          f"(from {totals})")
    return found


def _bands(manifest: Manifest, current: Verdict, check: Callable[[Manifest], Verdict]) -> list[Suggestion]:
    own = current.workload.own
    if own is None:
        return []
    kind = str(manifest.get("kind", ""))
    spec_path = _spec_path(kind)
    spec = _get(manifest, spec_path)
    found = []
    # Nearest band first: the least different behaviour.
    for name, value in sorted(PRIORITY_CLASSES.items(), key=lambda item: abs(Band.of_priority(item[1]) - own.band)):
        band = Band.of_priority(value)
        if band == own.band:
            continue
        ops = [_set(manifest, (*spec_path, "priorityClassName"), name)]
        if "priority" in spec:  # a resolved priority would win over the class
            ops.append({"op": "remove", "path": _pointer((*spec_path, "priority"))})
        verdict = check(apply_patch(manifest, ops))
        if verdict.ok:
            note = " (no quota limit, but every other band may preempt it)" if band is Band.BEST_EFFORT else ""
            found.append(_suggestion("band", f"priorityClassName {name}{note}", {"priorityClassName": name},
                                     str(current.workload.ref), ops, verdict))
    return found


def _quota(manifest: Manifest, current: Verdict, view: QuotaView, snapshot: CellSnapshot) -> list[Suggestion]:
    """The least BandQuota of the job's band that admits it (each resource searched with the other
    unbounded; quota checks them independently), if the cell may grant it (Q6) and the pods then fit."""
    own = current.workload.own
    if own is None or current.decision.allowed or not current.placement.complete:
        return []
    band = own.band
    quota = view.quota or BandQuota(view.namespace, "quota")
    limit = quota.limit(band)
    if limit is None:
        return []
    workload = current.workload
    old = view.workloads.get(workload.ref)

    def admits(cpu: int, memory: int) -> bool:
        limits = {**quota.limits, band: Resources(cpu, memory)}
        trial = BandQuota(quota.namespace, quota.name, limits)
        return admit_workload(view.namespace, workload, view.workloads, trial, old, view.largest).allowed

    # Up to far more than any cell holds: what the namespace already uses may be above its limit.
    cpu = limit.cpu if admits(limit.cpu, _HUGE) else smallest_passing(
        limit.cpu, limit.cpu + _SEARCH_CPU, lambda n: admits(n, _HUGE))
    memory = limit.memory if admits(_HUGE, limit.memory) else smallest_passing(
        limit.memory // MIB, limit.memory // MIB + _SEARCH_MIB, lambda n: admits(_HUGE, n * MIB))
    if cpu is None or memory is None:
        return []  # quota is not what refuses it (a pod larger than any node, requests missing)
    memory = memory if memory == limit.memory else memory * MIB
    new = BandQuota(quota.namespace, quota.name, {**quota.limits, band: Resources(cpu, memory)})
    if not admits(cpu, memory):
        return []
    capacity = ZERO
    for node in snapshot.nodes.values():
        capacity = capacity + node.allocatable
    if not admit_band_quota(new, view.other_quotas, capacity, view.quota).allowed:
        return []  # more prod quota than the cell can deliver
    more = Resources(cpu, memory) - limit
    value = new.limits[band].to_dict()
    if view.quota is None:
        patch = [{"op": "add", "path": "/spec", "value": {"bands": {band.label: value}}}]
    elif not view.quota.limits:  # spec.bands may be absent: write it whole (it lists nothing to keep)
        patch = [{"op": "add", "path": "/spec/bands", "value": {band.label: value}}]
    else:
        patch = [{"op": "add", "path": _pointer(("spec", "bands", band.label)), "value": value}]
    text = (f"BandQuota {quota.ref} band {band.label}: cpu {value['cpu']} / memory {value['memory']} "
            f"(cpu {format_cpu(more.cpu)} / memory {format_memory(more.memory)} more)")
    verdict = Verdict(workload, Decision.allow(), current.placement)
    return [_suggestion("quota", text, {"bandQuota": {"band": band.label, **value}}, f"BandQuota {quota.ref}",
                        patch, verdict)]


def _allocs(manifest: Manifest, current: Verdict, view: QuotaView,
            check: Callable[[Manifest], Verdict]) -> list[Suggestion]:
    if current.workload.alloc:
        return []
    labels_path = _labels_path(str(manifest.get("kind", "")))
    found = []
    for ref in sorted(ref for ref in view.workloads if ref.kind == "Alloc"):
        ops = [_set(manifest, (*labels_path, ALLOC_LABEL), ref.name)]
        verdict = check(apply_patch(manifest, ops))
        if verdict.ok:
            found.append(_suggestion("alloc", f"label its pods {ALLOC_LABEL}={ref.name} (Alloc {ref.name} has room; "
                                     "members are charged to the Alloc, A4)", {"alloc": ref.name},
                                     str(current.workload.ref), ops, verdict))
    return found


def suggest(manifest: Manifest, view: QuotaView, snapshot: CellSnapshot) -> WhyRecord:
    """`cell why -f`: would the job be admitted, where would its pods go, and if it would not get in
    whole, the smallest single changes that would let it in, each checked (`judge`)."""
    manifest = _in_namespace(manifest, view.namespace)
    current = judge(manifest, view, snapshot)

    def check(changed: Manifest) -> Verdict:
        return judge(changed, view, snapshot)

    suggestions: list[Suggestion] = []
    if not current.ok:
        suggestions += _replicas(manifest, current, check)
        suggestions += _requests(manifest, current, check)
        suggestions += _bands(manifest, current, check)
        suggestions += _quota(manifest, current, view, snapshot)
        suggestions += _allocs(manifest, current, view, check)
    placement = current.placement
    if placement.stuck is not None and placement.stuck_result is not None:
        record = WhyRecord.of(placement.stuck, placement.stuck_result)
    else:  # every pod placed: the first one's reasons, on the cell as it is
        record = explain(without_job(snapshot, current.workload), job_pods(manifest, 1, view.priority_classes)[0])
    return replace(record, uid="", suggestions=tuple(suggestions), job=str(current.workload.ref),
                   admitted=current.decision.allowed,
                   refusals=() if current.decision.allowed else current.decision.reasons,
                   placement=placement.placed)


# --- a pending pod ------------------------------------------------------------------------------------------

def _fits_somewhere(pod: PodInfo, snapshot: CellSnapshot) -> tuple[str, ...]:
    return Scheduler().filter(pod, snapshot).feasible


def suggest_pod(pod: PodInfo, snapshot: CellSnapshot) -> tuple[Suggestion, ...]:
    """`cell why NS/POD`: what would place this pod, each checked on the snapshot: preemption its band
    may do (R1/R2), a smaller request, another band, an alloc of its namespace with room. A changed
    request or band is a change of its job's template: `cell why -f` checks that against quota too."""
    if pod.node_name and pod.node_name in snapshot.nodes:
        snapshot = snapshot.with_nodes(snapshot.nodes[pod.node_name].without_pods({pod.uid}))
    if _fits_somewhere(pod, snapshot):
        return ()
    return (*_pod_preemption(pod, snapshot), *_pod_requests(pod, snapshot), *_pod_bands(pod, snapshot),
            *_pod_allocs(pod, snapshot))


def _pod_preemption(pod: PodInfo, snapshot: CellSnapshot) -> list[Suggestion]:
    chosen = preempt(pod, snapshot).victims
    if chosen is None:
        return []
    victims = tuple(p.key for p in chosen.pods)
    return [Suggestion(f"preempting {chosen.describe()} on {chosen.node} (its band {pod.band.label} may preempt "
                       "them, R1/R2); kube-scheduler does so unless the pod says preemptionPolicy: Never",
                       (chosen.node,), "preempt", {"preempt": list(victims)}, victims=victims)]


def _pod_requests(pod: PodInfo, snapshot: CellSnapshot) -> list[Suggestion]:
    found = []
    for resource, unit in (("cpu", 1), ("memory", MIB)):
        total = getattr(pod.requests, resource)
        if total <= unit:
            continue

        def asking(n: int, resource: str = resource, unit: int = unit) -> PodInfo:
            return replace(pod, requests=replace(pod.requests, **{resource: n * unit}))

        best = largest_passing(1, math.ceil(total / unit), lambda n: bool(_fits_somewhere(asking(n), snapshot)))
        if best is not None:
            value = _FORMAT[resource](best * unit)
            found.append(Suggestion(f"request {resource} {value} per pod (from {_FORMAT[resource](total)})",
                                    _fits_somewhere(asking(best), snapshot), "requests",
                                    {"requests": {resource: value}}))
    return found


def _pod_bands(pod: PodInfo, snapshot: CellSnapshot) -> list[Suggestion]:
    found = []
    for name, priority in sorted(PRIORITY_CLASSES.items(), key=lambda item: abs(Band.of_priority(item[1]) - pod.band)):
        if Band.of_priority(priority) == pod.band:
            continue
        moved = replace(pod, priority=priority)
        nodes = _fits_somewhere(moved, snapshot)
        victims: tuple[str, ...] = ()
        if not nodes:
            chosen = preempt(moved, snapshot).victims  # R1/R2 decided there, for the new band
            if chosen is None:
                continue
            nodes, victims = (chosen.node,), tuple(p.key for p in chosen.pods)
        note = f" (preempts {some(victims)})" if victims else ""
        found.append(Suggestion(f"priorityClassName {name}{note}", nodes, "band", {"priorityClassName": name},
                                victims=victims))
    return found


def _pod_allocs(pod: PodInfo, snapshot: CellSnapshot) -> list[Suggestion]:
    if pod.alloc is not None:
        return []
    found = []
    for alloc in sorted(snapshot.allocs.values(), key=lambda a: a.key):
        if alloc.namespace != pod.namespace:
            continue
        member = replace(pod, labels={**pod.labels, ALLOC_LABEL: alloc.name})
        nodes = tuple(n for n in alloc.nodes if n in snapshot.nodes
                      and check_node(member, snapshot, snapshot.nodes[n]).fits)
        if nodes:
            found.append(Suggestion(f"label it {ALLOC_LABEL}={alloc.name} (Alloc {alloc.name} has room)", nodes,
                                    "alloc", {"alloc": alloc.name}))
    return found

"""What a workload declares: a manifest (plain dict, camelCase as the API serves it) -> its charge.

Borg charges quota per job at submission (§2.5): a job's whole declared size, replicas x the
resources of one task. Kubernetes spreads that idea over several kinds, so this module maps each
kind to (band, per-replica requests, replicas), and says which objects are *not* charged because
something else already is (Q3: pods of a ReplicaSet, ReplicaSets of a Deployment, Jobs of a
CronJob; A4: members of an Alloc, whose Alloc is charged instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from scheduler_ext.policy.bands import PRIORITY_CLASSES, Band
from scheduler_ext.policy.model import ALLOC_LABEL, TERMINAL_PHASES, effective_requests
from scheduler_ext.policy.resources import ZERO, QuantityError, Resources, parse_cpu, parse_memory

CELL_GROUP = "cell.distos.dev"

Manifest = Mapping[str, Any]

# (API group, kind) of the objects quota is charged for; "" is the core group.
CHARGED_KINDS: frozenset[tuple[str, str]] = frozenset({
    ("", "Pod"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    (CELL_GROUP, "Alloc"),
})

# Q3: an object controlled by one of these is charged through its controller, not again itself.
# kind of the dependent -> controller (group, kind) pairs that already carry its charge.
_CHARGED_THROUGH: dict[str, frozenset[tuple[str, str]]] = {
    "Pod": frozenset({("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("batch", "Job")}),
    "ReplicaSet": frozenset({("apps", "Deployment")}),
    "Job": frozenset({("batch", "CronJob")}),
}


def api_group(api_version: str) -> str:
    """"apps/v1" -> "apps"; "v1" -> "" (the core group)."""
    return api_version.split("/", 1)[0] if "/" in api_version else ""


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """Identifies a charged object within the cell; str() reads "Deployment alice/web"."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Charge:
    """What one object charges to its namespace's BandQuota: replicas x per_replica in band.

    missing_requests lists the containers that lack a cpu or memory request (Q5), e.g.
    ('container "web" has no memory request',); the quota decision refuses them in a limited band.
    """

    ref: ObjectRef
    band: Band
    per_replica: Resources
    replicas: int
    missing_requests: tuple[str, ...] = ()

    @property
    def demand(self) -> Resources:
        return self.per_replica.scale(self.replicas)

    def with_replicas(self, replicas: int) -> Charge:
        """The same job at another size (the scale subresource only changes replicas)."""
        return replace(self, replicas=max(replicas, 0))


# --- pod requests --------------------------------------------------------------------------------

def _declared(container: Manifest) -> dict[str, Any]:
    """A container's cpu/memory requests, defaulted from its limits as the API server does for pods.

    Kubernetes copies a limit into a missing request (SetDefaults_Pod) but not in templates, so a
    template is read here the way its pods will be.
    """
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    return {name: requests.get(name, limits.get(name)) for name in ("cpu", "memory")
            if requests.get(name, limits.get(name)) is not None}


def _defaulted(pod_spec: Manifest) -> dict[str, Any]:
    """pod_spec with every container's requests defaulted from its limits."""
    def fix(containers: Any) -> list[dict[str, Any]]:
        return [{**c, "resources": {"requests": _declared(c)}} for c in containers or []]
    return {**pod_spec, "containers": fix(pod_spec.get("containers")),
            "initContainers": fix(pod_spec.get("initContainers"))}


def pod_requests(pod_spec: Manifest) -> Resources:
    """Effective requests of one pod: the scheduler's rule (model.effective_requests) applied to the
    requests the pod will have, with pod-level requests (spec.resources), when set, taking precedence.
    """
    total = effective_requests(_defaulted(pod_spec))
    pod_level = (pod_spec.get("resources") or {}).get("requests") or {}
    if pod_level.get("cpu") is not None:
        total = Resources(parse_cpu(pod_level["cpu"]), total.memory)
    if pod_level.get("memory") is not None:
        total = Resources(total.cpu, parse_memory(pod_level["memory"]))
    return total


def missing_requests(pod_spec: Manifest) -> tuple[str, ...]:
    """Q5: one line per long-running container that does not request both cpu and memory.

    Plain init containers run to completion before the pod starts and may omit requests;
    pod-level requests (spec.resources) cover every container.
    """
    pod_level = (pod_spec.get("resources") or {}).get("requests") or {}
    covered = {name for name in ("cpu", "memory") if pod_level.get(name) is not None}
    problems = []
    long_running = [c for c in pod_spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    long_running += list(pod_spec.get("containers") or [])
    for container in long_running:
        declared = Resources.parse(_declared(container))
        # A zero request declares nothing: it would let any number of replicas through a limited band.
        missing = [name for name in ("cpu", "memory") if getattr(declared, name) <= 0 and name not in covered]
        if missing:
            problems.append(f'container "{container.get("name", "?")}" has no {" or ".join(missing)} request')
    return tuple(problems)


# --- bands ---------------------------------------------------------------------------------------

def band_of(pod_spec: Manifest, priority_classes: Mapping[str, int] | None = None) -> Band:
    """The band of the pods a spec describes (SPEC §2).

    A created Pod carries spec.priority (the Priority admission plugin resolved it); a template
    only names its class, resolved through priority_classes (the cell's PriorityClasses; Cell's own
    four are always known). A pod without a class, or naming a class that does not exist (the API
    server will refuse such pods anyway), is best-effort.
    """
    priority = pod_spec.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        return Band.of_priority(priority)
    class_name = pod_spec.get("priorityClassName")
    if not class_name:
        return Band.BEST_EFFORT
    known = {**PRIORITY_CLASSES, **(priority_classes or {})}
    return Band.of_priority(known.get(class_name))


# --- exemptions (Q3, A4) -------------------------------------------------------------------------

def _template_labels(obj: Manifest) -> Mapping[str, str]:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return (obj.get("metadata") or {}).get("labels") or {}
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}


def exemption(obj: Manifest) -> str | None:
    """Why this object charges nothing itself, or None when it is charged.

    Q3: its controller (an owner reference with controller: true) is a charged workload.
    A4: its pods are members of an Alloc, which is charged instead.
    Terminal objects (finished pods and Jobs) hold no resources.
    """
    kind = str(obj.get("kind", ""))
    metadata = obj.get("metadata") or {}
    if kind in _CHARGED_THROUGH:
        for owner in metadata.get("ownerReferences") or []:
            if not owner.get("controller"):
                continue
            key = (api_group(str(owner.get("apiVersion", ""))), str(owner.get("kind", "")))
            if key in _CHARGED_THROUGH[kind]:
                return f"charged to its controller {owner.get('kind')} {owner.get('name')} (Q3)"
    if kind != "Alloc":
        alloc = _template_labels(obj).get(ALLOC_LABEL)
        if alloc:
            return f"its pods are members of Alloc {alloc}, which is charged instead (A4)"
    status = obj.get("status") or {}
    if kind == "Pod" and status.get("phase") in TERMINAL_PHASES:
        return f"pod has finished ({status['phase']})"
    if kind == "Job":
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
                return f"job has finished ({condition['type']})"
    return None


# --- charges -------------------------------------------------------------------------------------

def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return max(value, 0)


def _job_replicas(job_spec: Manifest) -> int:
    """A Job runs parallelism pods at once, never more than its completions."""
    parallelism = _int(job_spec.get("parallelism"), 1)
    completions = job_spec.get("completions")
    return parallelism if completions is None else min(parallelism, _int(completions, 1))


def ref_of(obj: Manifest) -> ObjectRef:
    metadata = obj.get("metadata") or {}
    return ObjectRef(str(obj.get("kind", "")), str(metadata.get("namespace", "")), str(metadata.get("name", "")))


def _pod_charge(ref: ObjectRef, pod_spec: Manifest, replicas: int,
                priority_classes: Mapping[str, int] | None) -> Charge:
    return Charge(ref=ref, band=band_of(pod_spec, priority_classes), per_replica=pod_requests(pod_spec),
                  replicas=replicas, missing_requests=missing_requests(pod_spec))


def _alloc_charge(ref: ObjectRef, spec: Manifest, priority_classes: Mapping[str, int] | None) -> Charge:
    """A4: count x resources, in the band of spec.priorityClassName."""
    band = band_of({"priorityClassName": spec.get("priorityClassName")}, priority_classes)
    resources = spec.get("resources") or {}
    per_instance = Resources.parse(resources)
    missing = tuple(f"spec.resources has no {name}" for name in ("cpu", "memory")
                    if getattr(per_instance, name) <= 0)
    return Charge(ref=ref, band=band, per_replica=per_instance, replicas=_int(spec.get("count"), 1),
                  missing_requests=missing)


def charge_of(obj: Manifest, priority_classes: Mapping[str, int] | None = None) -> Charge | None:
    """The charge of one manifest, or None if it charges nothing (see exemption(), or not a charged kind).

    Raises ValueError (QuantityError included) when the manifest's numbers cannot be read.
    """
    group = api_group(str(obj.get("apiVersion", "")))
    kind = str(obj.get("kind", ""))
    if (group, kind) not in CHARGED_KINDS or exemption(obj) is not None:
        return None
    ref = ref_of(obj)
    spec = obj.get("spec") or {}
    try:
        if kind == "Pod":
            return _pod_charge(ref, spec, 1, priority_classes)
        if kind == "Alloc":
            return _alloc_charge(ref, spec, priority_classes)
        if kind == "Job":
            return _pod_charge(ref, (spec.get("template") or {}).get("spec") or {}, _job_replicas(spec),
                               priority_classes)
        if kind == "CronJob":
            job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
            return _pod_charge(ref, (job_spec.get("template") or {}).get("spec") or {},
                               _job_replicas(job_spec), priority_classes)
        # Deployment, ReplicaSet, StatefulSet: replicas default to 1.
        return _pod_charge(ref, (spec.get("template") or {}).get("spec") or {},
                           _int(spec.get("replicas"), 1), priority_classes)
    except QuantityError as exc:
        raise ValueError(f"{ref}: {exc}") from None


def usage_by_band(charges: Iterable[Charge]) -> dict[Band, Resources]:
    """Q7: what a namespace uses, per band: the sum of its charges (every band present, zero if unused)."""
    used = dict.fromkeys(Band, ZERO)
    for charge in charges:
        used[charge.band] = used[charge.band] + charge.demand
    return used

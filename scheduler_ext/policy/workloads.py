"""What a workload declares: a manifest (plain dict, camelCase as the API serves it) -> its charge.

Borg charges quota per job at submission (§2.5): a job's whole declared size, replicas x the
resources of one task. Kubernetes spreads that idea over several kinds, so this module maps each
kind to (band, per-replica requests, replicas), and says which objects are *not* charged because
something else already is (Q3: pods of a ReplicaSet, ReplicaSets of a Deployment, Jobs of a
CronJob; A4: members of an Alloc, whose Alloc is charged instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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
    return _finished(obj)


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
    # Plain integers per band: this runs over every charge of a namespace on each admission burst.
    totals = {band: [0, 0] for band in Band}
    for charge in charges:
        total = totals[charge.band]
        total[0] += charge.per_replica.cpu * charge.replicas
        total[1] += charge.per_replica.memory * charge.replicas
    return {band: Resources(cpu, memory) for band, (cpu, memory) in totals.items()}


# --- earned exemptions (Q9) ----------------------------------------------------------------------
#
# charge_of() above reads one object alone and trusts what it claims (an owner reference, an alloc
# label). Quota admission and status.used must not: an exemption is earned only when the owner or
# the Alloc really exists in the namespace and really covers the object. The adapters turn every
# object of a namespace into a Workload, and resolve() decides, for the whole namespace at once,
# who is charged. Kubernetes' own controllers enforce the same limits a moment later (a
# ReplicaSet deletes the pods it has too many of), so what is honest never hits a rule here.

CHARGED = "charged"  # charged itself
COVERED = "covered"  # charged through its controller (Q3)
MEMBER = "member"  # an alloc member, charged through the Alloc (A4)
IDLE = "idle"  # holds nothing (finished), or is not a charged kind


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpressions term of a label selector."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        return False  # an operator the API server would have refused: matches nothing


@dataclass(frozen=True, slots=True)
class Selector:
    """A metav1.LabelSelector. An empty selector matches nothing here: an owner must say what it owns."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    @classmethod
    def of(cls, selector: Any) -> Selector | None:
        if not isinstance(selector, Mapping):
            return None
        labels = selector.get("matchLabels") or {}
        expressions = selector.get("matchExpressions") or []
        if not isinstance(labels, Mapping) or not isinstance(expressions, list):
            return None
        terms = tuple(Requirement(str(e.get("key", "")), str(e.get("operator", "")),
                                  tuple(str(v) for v in e.get("values") or ()))
                      for e in expressions if isinstance(e, Mapping))
        return cls(tuple(sorted((str(k), str(v)) for k, v in labels.items())), terms)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if not self.match_labels and not self.expressions:
            return False
        return (all(labels.get(k) == v for k, v in self.match_labels)
                and all(term.matches(labels) for term in self.expressions))


@dataclass(frozen=True, slots=True)
class Controller:
    """The controller owner reference of an object (controller: true)."""

    kind: str
    group: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class Workload:
    """What quota knows about one object of a namespace, to charge it or the objects it owns.

    own: its charge if charged itself (None: a kind quota does not charge, or it holds nothing).
    covers: for an owner, how much of its dependents its charge covers (pods for a ReplicaSet,
    StatefulSet or Job; replicas of ReplicaSets, surge included, for a Deployment; active Jobs for
    a CronJob). slots: what this object takes of its controller's cover (1, or a ReplicaSet's
    replicas). labels: what its controller's selector is matched against.
    """

    ref: ObjectRef
    uid: str = ""
    created: str = ""
    own: Charge | None = None
    idle: str | None = None
    terminating: bool = False
    controller: Controller | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    selector: Selector | None = None
    covers: int = 0
    slots: int = 1
    alloc: str | None = None
    node: str | None = None
    instance_nodes: tuple[str, ...] = ()

    @property
    def order(self) -> tuple[str, str]:
        """Older first: when an owner covers fewer objects than claim it, the newest are charged."""
        return (self.created, self.ref.name)

    def with_replicas(self, replicas: int) -> Workload:
        """The same workload scaled (the scale subresource): its charge and what it covers follow."""
        if self.own is None:
            return self
        own = self.own.with_replicas(replicas)
        covers = self.covers - self.own.replicas + own.replicas if self.ref.kind == "Deployment" else own.replicas
        slots = own.replicas if self.ref.kind == "ReplicaSet" else self.slots
        return replace(self, own=own, covers=max(covers, 0), slots=slots)


@dataclass(frozen=True, slots=True)
class Resolution:
    """How one workload is charged (CHARGED, COVERED, MEMBER or IDLE) and why, in words."""

    state: str
    reason: str
    charge: Charge | None = None

    @property
    def carries_charge(self) -> bool:
        """Whether what it owns may be charged through it: it is charged itself or through its owner."""
        return self.state in (CHARGED, COVERED)


_DEPENDENT_KINDS: dict[str, frozenset[str]] = {
    "Pod": frozenset({"ReplicaSet", "StatefulSet", "Job"}),
    "ReplicaSet": frozenset({"Deployment"}),
    "Job": frozenset({"CronJob"}),
}
_CONTROLLER_GROUP = {"ReplicaSet": "apps", "StatefulSet": "apps", "Job": "batch", "Deployment": "apps",
                     "CronJob": "batch"}


def _controller_of(metadata: Mapping[str, Any]) -> Controller | None:
    for ref in metadata.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return Controller(str(ref.get("kind", "")), api_group(str(ref.get("apiVersion", ""))),
                              str(ref.get("name", "")), str(ref.get("uid", "")))
    return None


def _surge(spec: Mapping[str, Any], replicas: int) -> int:
    """A Deployment's maxSurge in pods (default 25%, rounded up, as the deployment controller does)."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(surge, int) and not isinstance(surge, bool):
        return max(surge, 0)
    text = str(surge)
    if text.endswith("%") and text[:-1].isdigit() and len(text) <= 5:
        return -(-replicas * int(text[:-1]) // 100)
    return 0


def _finished(obj: Manifest) -> str | None:
    kind = obj.get("kind")
    status = obj.get("status") or {}
    if kind == "Pod" and status.get("phase") in TERMINAL_PHASES:
        return f"pod has finished ({status['phase']})"
    if kind == "Job":
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
                return f"job has finished ({condition['type']})"
    return None


def _charge_itself(obj: Manifest, priority_classes: Mapping[str, int] | None) -> Charge | None:
    """The object's charge as if nothing exempted it (its claims are judged by resolve())."""
    metadata = dict(obj.get("metadata") or {})
    metadata.pop("ownerReferences", None)
    plain: dict[str, Any] = {**obj, "metadata": metadata, "status": {}}
    kind = obj.get("kind")
    if kind == "Pod":
        labels = {k: v for k, v in (metadata.get("labels") or {}).items() if k != ALLOC_LABEL}
        plain["metadata"] = {**metadata, "labels": labels}
    elif kind != "Alloc":
        spec = dict(obj.get("spec") or {})
        if kind == "CronJob":
            job_template = dict(spec.get("jobTemplate") or {})
            job_spec = dict(job_template.get("spec") or {})
            job_spec["template"] = _without_alloc_label(job_spec.get("template"))
            spec["jobTemplate"] = {**job_template, "spec": job_spec}
        else:
            spec["template"] = _without_alloc_label(spec.get("template"))
        plain["spec"] = spec
    return charge_of(plain, priority_classes)


def _without_alloc_label(template: Any) -> dict[str, Any]:
    template = dict(template or {})
    metadata = dict(template.get("metadata") or {})
    metadata["labels"] = {k: v for k, v in (metadata.get("labels") or {}).items() if k != ALLOC_LABEL}
    template["metadata"] = metadata
    return template


def workload_of(obj: Manifest, priority_classes: Mapping[str, int] | None = None) -> Workload | None:
    """The Workload of one manifest of a charged kind, or None for other kinds.

    Raises ValueError (QuantityError included) when its numbers cannot be read.
    """
    group = api_group(str(obj.get("apiVersion", "")))
    kind = str(obj.get("kind", ""))
    if (group, kind) not in CHARGED_KINDS:
        return None
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    idle = _finished(obj)
    own = None if idle else _charge_itself(obj, priority_classes)
    labels = _template_labels(obj)
    selector = None
    covers = 0
    slots = 1
    if kind in ("ReplicaSet", "StatefulSet", "Deployment", "Job"):
        selector = Selector.of(spec.get("selector"))
    if own is not None:
        covers = own.replicas
        if kind == "Deployment":
            covers = own.replicas + _surge(spec, own.replicas)
        elif kind == "CronJob":
            covers = 1  # one Job at a time; a second concurrent one (concurrencyPolicy Allow) is charged itself
        if kind == "ReplicaSet":
            slots = own.replicas
    instance_nodes: tuple[str, ...] = ()
    if kind == "Alloc":
        instance_nodes = tuple(str(i.get("node")) for i in (obj.get("status") or {}).get("instances") or ()
                               if isinstance(i, Mapping) and i.get("node"))
    return Workload(
        ref=ref_of(obj),
        uid=str(metadata.get("uid", "")),
        created=str(metadata.get("creationTimestamp") or ""),
        own=own,
        idle=idle,
        terminating=bool(metadata.get("deletionTimestamp")),
        controller=_controller_of(metadata) if kind in _DEPENDENT_KINDS else None,
        labels=dict(labels),
        selector=selector,
        covers=covers,
        slots=slots,
        alloc=(labels.get(ALLOC_LABEL) or None) if kind != "Alloc" else None,
        node=str(spec.get("nodeName") or "") or None if kind == "Pod" else None,
        instance_nodes=instance_nodes,
    )


def _template_covers(owner: Workload, dependent: Workload) -> str | None:
    """Why owner's template does not cover dependent (same band, no larger pods, no more of them), or None."""
    assert owner.own is not None and dependent.own is not None
    # A CronJob has no selector: its Jobs are judged by their template alone.
    if owner.ref.kind != "CronJob" and (owner.selector is None or not owner.selector.matches(dependent.labels)):
        return f"its labels do not match the selector of {owner.ref}"
    mine, theirs = dependent.own, owner.own
    if mine.band != theirs.band:
        return f"band {mine.band.label} differs from {owner.ref}'s {theirs.band.label}"
    if not mine.per_replica.fits_in(theirs.per_replica):
        return f"its pods ({mine.per_replica}) are larger than {owner.ref}'s template ({theirs.per_replica})"
    if dependent.ref.kind == "Job" and mine.replicas > theirs.replicas:
        return f"it runs {mine.replicas} pods at once, {owner.ref}'s template {theirs.replicas}"
    return None


def resolve(workloads: Iterable[Workload]) -> dict[ObjectRef, Resolution]:
    """Q9 for one namespace: how each workload is charged.

    An object is charged through its controller (COVERED) only if that owner exists here with the
    uid the reference names, is itself charged (or covered), its template covers the object, and
    it has cover left (oldest dependents first); through an Alloc (MEMBER) only if the Alloc exists
    here and the pods fit its instance (a bound pod: on a node holding an instance, within what the
    instance holds). Anything else is charged itself.
    """
    by_ref = {w.ref: w for w in workloads}
    # Owners looked up by (kind, name): plain tuples hash in C, ObjectRef's dataclass hash does not.
    by_name = {(w.ref.kind, w.ref.name): w for w in by_ref.values()}
    allocs = {w.ref.name: w for w in by_ref.values() if w.ref.kind == "Alloc"}
    resolved: dict[tuple[str, str], Resolution] = {}
    # Dependents per owner uid, oldest first, for the cover each owner has left.
    dependents: dict[str, list[Workload]] = {}
    for workload in by_ref.values():
        if workload.controller is not None and workload.own is not None and not workload.terminating:
            dependents.setdefault(workload.controller.uid, []).append(workload)
    for group in dependents.values():
        group.sort(key=lambda w: w.order)
    # Alloc members bound to a node, oldest first, for what each instance holds.
    members_on: dict[tuple[str, str], list[Workload]] = {}
    for workload in by_ref.values():
        if workload.alloc and workload.node and workload.own is not None:
            members_on.setdefault((workload.alloc, workload.node), []).append(workload)
    for group in members_on.values():
        group.sort(key=lambda w: w.order)

    # Which claimants each owner's cover reaches, and which members each instance holds: computed
    # once per owner and per (alloc, node), oldest first, so a namespace resolves in linear time.
    within_cover: dict[str, set[ObjectRef]] = {}
    within_instance: dict[tuple[str, str], set[ObjectRef]] = {}

    def covered_by(owner: Workload) -> set[ObjectRef]:
        done = within_cover.get(owner.uid)
        if done is None:
            done = within_cover[owner.uid] = set()
            used = 0
            for sibling in dependents.get(owner.uid, []):
                if sibling.ref.kind not in _DEPENDENT_KINDS or _template_covers(owner, sibling) is not None:
                    continue
                used += sibling.slots
                if used <= owner.covers:
                    done.add(sibling.ref)
        return done

    def held_by(alloc: Workload, node: str) -> set[ObjectRef]:
        key = (alloc.ref.name, node)
        done = within_instance.get(key)
        if done is None:
            done = within_instance[key] = set()
            assert alloc.own is not None
            total = ZERO
            for member in members_on.get(key, []):
                assert member.own is not None
                total = total + member.own.per_replica
                if total.fits_in(alloc.own.per_replica):
                    done.add(member.ref)
        return done

    def through_owner(workload: Workload) -> str | None:
        """None if covered by its controller, else why not."""
        link = workload.controller
        assert link is not None and workload.own is not None
        if link.kind not in _DEPENDENT_KINDS[workload.ref.kind] or link.group != _CONTROLLER_GROUP[link.kind]:
            return f"its controller {link.kind} {link.name} is not a workload quota charges"
        owner = by_name.get((link.kind, link.name))
        if owner is None:
            return f"its controller {link.kind} {link.name} does not exist"
        if not link.uid or owner.uid != link.uid:
            return f"its controller reference names uid {link.uid or '(none)'}, {owner.ref} has {owner.uid}"
        if not of(owner).carries_charge or owner.own is None:
            return f"{owner.ref} is not charged itself"
        mismatch = _template_covers(owner, workload)
        if mismatch:
            return mismatch
        if workload.terminating:
            return None  # on its way out: covered, taking none of the cover a replacement needs
        if workload.ref not in covered_by(owner):
            return f"{owner.ref} covers {owner.covers}, and older objects it owns use that"
        return None

    def as_member(workload: Workload) -> str | None:
        """None if the Alloc covers it, else why not."""
        assert workload.alloc is not None and workload.own is not None
        alloc = allocs.get(workload.alloc)
        if alloc is None or alloc.own is None:
            return f"Alloc {workload.alloc} does not exist in namespace {workload.ref.namespace}"
        size = alloc.own.per_replica
        if not workload.own.per_replica.fits_in(size):
            return f"its pods ({workload.own.per_replica}) do not fit an instance of Alloc {alloc.ref.name} ({size})"
        if workload.node is None:
            return None
        if workload.node not in alloc.instance_nodes:
            return f"it runs on {workload.node}, where Alloc {alloc.ref.name} holds no instance"
        if workload.ref not in held_by(alloc, workload.node):
            return f"the members on {workload.node} use more than the instance holds ({size})"
        return None

    def of(workload: Workload) -> Resolution:
        key = (workload.ref.kind, workload.ref.name)
        done = resolved.get(key)
        if done is not None:
            return done
        # Placeholder against forged reference cycles: an object in its own chain of owners is charged.
        resolved[key] = Resolution(CHARGED, "charged itself", workload.own)
        result = decide(workload)
        resolved[key] = result
        return result

    def decide(workload: Workload) -> Resolution:
        if workload.own is None:
            return Resolution(IDLE, workload.idle or "not charged")
        notes = []
        if workload.controller is not None:
            why = through_owner(workload)
            if why is None:
                link = workload.controller
                return Resolution(COVERED, f"charged to its controller {link.kind} {link.name} (Q3)")
            notes.append(why)
        if workload.alloc:
            why = as_member(workload)
            if why is None:
                return Resolution(MEMBER, f"its pods are members of Alloc {workload.alloc}, which is charged (A4)")
            notes.append(why)
        reason = "charged itself" + (f" ({'; '.join(notes)})" if notes else "")
        return Resolution(CHARGED, reason, workload.own)

    result: dict[ObjectRef, Resolution] = {}
    for ref, workload in by_ref.items():
        if workload.controller is None and not workload.alloc:
            # The common case, decided without the machinery above.
            result[ref] = (Resolution(CHARGED, "charged itself", workload.own) if workload.own is not None
                           else Resolution(IDLE, workload.idle or "not charged"))
        else:
            result[ref] = of(workload)
    return result


def namespace_charges(workloads: Iterable[Workload]) -> list[Charge]:
    """Q7 with Q9: the charges a namespace really carries."""
    return [r.charge for r in resolve(workloads).values() if r.state == CHARGED and r.charge is not None]


# --- binding (Q9) ----------------------------------------------------------------------------------

def binding_refusal(obj: Manifest) -> str | None:
    """Why a Pod may not be created as it is in a managed namespace, or None.

    Users do not bind pods themselves: a pod created with spec.nodeName skips kube-scheduler, so
    the extender (allocs A1, bands) never sees it. Everything goes through the scheduler, as in Borg.
    """
    if obj.get("kind") != "Pod":
        return None
    node = (obj.get("spec") or {}).get("nodeName")
    if node:
        meta = obj.get("metadata") or {}
        return (f"Pod {meta.get('namespace', '')}/{meta.get('name') or meta.get('generateName', '')}: "
                f"spec.nodeName ({node}) may not be set in a managed namespace; pods are placed by the "
                "scheduler (use nodeSelector or affinity to choose machines)")
    return None

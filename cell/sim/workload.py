"""What a simulation submits: jobs (Borg's unit of submission) and alloc sets.

```yaml
apiVersion: sim.cell.distos.dev/v1alpha1
kind: Workload
allocs:                        # optional: alloc sets reserved before the jobs are scheduled
- {name: cache, namespace: alice, band: production, count: 2,
   resources: {cpu: 500m, memory: 256Mi}, spreadBy: topology.kubernetes.io/zone}
jobs:
- name: web                    # unique per namespace
  namespace: alice             # default: default
  band: production             # monitoring | production | batch | best-effort
  tasks: 3
  requests: {cpu: 500m, memory: 256Mi}
  nodeSelector: {}             # optional
  alloc: cache                 # optional: an alloc above or in the cell; or a mapping
                               # {count, resources, spreadBy, nodeSelector, band}: an alloc of its own
```

Each job becomes the Kubernetes objects the live cell would see: a `batch/v1` Job (for quota
admission, `workloads.charge_of`) whose pods are `PodInfo.from_manifest` of a real Pod manifest, so
requests, band and job key follow the same rules as in the extender.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cell.errors import CellError
from cell.sim.snapshot import MAX_ERRORS_SHOWN, SIM_API_VERSION, read_yaml_documents
from scheduler_ext.policy.bands import PRIORITY_CLASSES, Band
from scheduler_ext.policy.model import ALLOC_LABEL, AllocInfo, PodInfo
from scheduler_ext.policy.resources import QuantityError, parse_cpu, parse_memory

JOB_KEYS = ("name", "namespace", "band", "tasks", "requests", "nodeSelector", "alloc")
ALLOC_KEYS = ("name", "namespace", "band", "count", "resources", "spreadBy", "nodeSelector")
INLINE_ALLOC_KEYS = ("band", "count", "resources", "spreadBy", "nodeSelector")


@dataclass(frozen=True)
class AllocSpec:
    """An alloc set to reserve: `count` instances of `resources`, each on a distinct node."""

    name: str
    namespace: str
    band: str
    count: int
    resources: Mapping[str, str]
    spread_by: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def manifest(self) -> dict[str, Any]:
        """The Alloc object (cell.distos.dev/v1alpha1) the operator would place."""
        spec: dict[str, Any] = {"priorityClassName": self.band, "count": self.count,
                                "resources": dict(self.resources)}
        if self.spread_by:
            spec["spreadBy"] = self.spread_by
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        return {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}

    def info(self) -> AllocInfo:
        return AllocInfo.from_manifest(self.manifest())


@dataclass(frozen=True)
class JobSpec:
    """A job: `tasks` identical pods in one band."""

    name: str
    namespace: str
    band: str
    tasks: int
    requests: Mapping[str, str]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    alloc: str | None = None  # name of the alloc (same namespace) its tasks are members of

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def priority(self) -> int:
        return PRIORITY_CLASSES[self.band]

    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "priorityClassName": self.band,
            "priority": self.priority,
            "containers": [{"name": "task", "image": "cell.local/shell:1.0",
                            "resources": {"requests": dict(self.requests)}}],
        }
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        return spec

    def labels(self) -> dict[str, str]:
        labels = {"job-name": self.name}
        if self.alloc:
            labels[ALLOC_LABEL] = self.alloc
        return labels

    def job_manifest(self) -> dict[str, Any]:
        """The batch/v1 Job quota admission sees (Q1: its whole size, `tasks` at once)."""
        return {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"parallelism": self.tasks, "completions": self.tasks,
                     "template": {"metadata": {"labels": self.labels()}, "spec": self.pod_spec()}},
        }

    def pod_manifest(self, index: int) -> dict[str, Any]:
        """Task `index` as the Pod the Job controller would create."""
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{self.name}-{index}", "namespace": self.namespace,
                         "uid": f"sim-{self.namespace}-{self.name}-{index}", "labels": self.labels(),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": self.name,
                                              "uid": f"sim-job-{self.namespace}-{self.name}", "controller": True}]},
            "spec": self.pod_spec(),
        }

    def task_infos(self) -> list[PodInfo]:
        """The job's tasks as the policy sees them (one manifest parsed, the rest copied from it)."""
        first = PodInfo.from_manifest(self.pod_manifest(0))
        return [first] + [
            PodInfo(first.namespace, f"{self.name}-{i}", f"sim-{self.namespace}-{self.name}-{i}", first.priority,
                    first.requests, first.labels, first.owner, None, first.node_selector)
            for i in range(1, self.tasks)
        ]


@dataclass(frozen=True)
class Workload:
    allocs: tuple[AllocSpec, ...] = ()
    jobs: tuple[JobSpec, ...] = ()

    @property
    def task_count(self) -> int:
        return sum(job.tasks for job in self.jobs)

    def to_document(self) -> dict[str, Any]:
        """The YAML document `load_workload` reads back."""
        def alloc_doc(a: AllocSpec) -> dict[str, Any]:
            doc: dict[str, Any] = {"name": a.name, "namespace": a.namespace, "band": a.band, "count": a.count,
                                   "resources": dict(a.resources)}
            if a.spread_by:
                doc["spreadBy"] = a.spread_by
            if a.node_selector:
                doc["nodeSelector"] = dict(a.node_selector)
            return doc

        def job_doc(j: JobSpec) -> dict[str, Any]:
            doc: dict[str, Any] = {"name": j.name, "namespace": j.namespace, "band": j.band, "tasks": j.tasks,
                                   "requests": dict(j.requests)}
            if j.node_selector:
                doc["nodeSelector"] = dict(j.node_selector)
            if j.alloc:
                doc["alloc"] = j.alloc
            return doc

        document: dict[str, Any] = {"apiVersion": SIM_API_VERSION, "kind": "Workload"}
        if self.allocs:
            document["allocs"] = [alloc_doc(a) for a in self.allocs]
        document["jobs"] = [job_doc(j) for j in self.jobs]
        return document


# --- parsing ---------------------------------------------------------------------------------------

def _string_map(value: Any, path: str, errors: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{path}: must be a mapping of strings")
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _resources(value: Any, path: str, errors: list[str]) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        errors.append(f"{path}: required, a mapping with cpu and memory")
        return {}
    out: dict[str, str] = {}
    for key, raw in value.items():
        parse = {"cpu": parse_cpu, "memory": parse_memory}.get(str(key))
        if parse is None:
            errors.append(f"{path}.{key}: unknown resource; expected cpu, memory")
            continue
        try:
            if parse(raw) < 0:
                raise ValueError
        except (QuantityError, ArithmeticError, ValueError):
            errors.append(f"{path}.{key}: must be a non-negative quantity, got {raw!r}")
            continue
        out[str(key)] = str(raw)
    return out


def _band(value: Any, path: str, errors: list[str]) -> str:
    try:
        return Band.from_label(str(value)).label
    except ValueError as exc:
        errors.append(f"{path}: {exc}")
        return "best-effort"


def _count(value: Any, path: str, errors: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.append(f"{path}: must be a positive integer, got {value!r}")
        return 1
    return value


def _name(value: Any, path: str, errors: list[str]) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        errors.append(f"{path}: required, a name without '/'")
        return "?"
    return value


def _unknown(entry: Mapping[str, Any], allowed: tuple[str, ...], path: str, errors: list[str]) -> None:
    errors.extend(f"{path}.{key}: unknown field; expected one of {', '.join(allowed)}"
                  for key in entry if key not in allowed)


def _alloc_spec(entry: Any, path: str, errors: list[str]) -> AllocSpec | None:
    if not isinstance(entry, dict):
        errors.append(f"{path}: must be a mapping")
        return None
    _unknown(entry, ALLOC_KEYS, path, errors)
    spread = entry.get("spreadBy")
    if spread is not None and (not isinstance(spread, str) or not spread):
        errors.append(f"{path}.spreadBy: must be a label key")
    return AllocSpec(
        name=_name(entry.get("name"), f"{path}.name", errors),
        namespace=_name(entry.get("namespace", "default"), f"{path}.namespace", errors),
        band=_band(entry.get("band", "production"), f"{path}.band", errors),
        count=_count(entry.get("count", 1), f"{path}.count", errors),
        resources=_resources(entry.get("resources"), f"{path}.resources", errors),
        spread_by=spread or None,
        node_selector=_string_map(entry.get("nodeSelector"), f"{path}.nodeSelector", errors),
    )


def parse_workload(document: Any, source: str, known_allocs: set[str] | frozenset[str] = frozenset()) -> Workload:
    """A workload document, validated in full; `known_allocs` are alloc keys ("ns/name") of the cell."""
    errors: list[str] = []
    if not isinstance(document, dict):
        raise CellError(f"{source}: expected a kind: Workload mapping")
    if document.get("kind", "Workload") != "Workload":
        errors.append(f"kind: expected Workload, got {document.get('kind')!r}")
    if document.get("apiVersion") not in (None, SIM_API_VERSION):
        errors.append(f"apiVersion: expected {SIM_API_VERSION}, got {document.get('apiVersion')!r}")
    errors.extend(f"{key}: unknown field; expected allocs, jobs" for key in document
                  if key not in ("apiVersion", "kind", "metadata", "allocs", "jobs"))
    raw_allocs = document.get("allocs") or []
    raw_jobs = document.get("jobs")
    if not isinstance(raw_allocs, list):
        errors.append("allocs: must be a list")
        raw_allocs = []
    if not isinstance(raw_jobs, list) or not raw_jobs:
        errors.append("jobs: required, a non-empty list")
        raw_jobs = []
    allocs: list[AllocSpec] = []
    for i, entry in enumerate(raw_allocs):
        spec = _alloc_spec(entry, f"allocs[{i}]", errors)
        if spec is not None:
            allocs.append(spec)
    jobs: list[JobSpec] = []
    for i, entry in enumerate(raw_jobs):
        path = f"jobs[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{path}: must be a mapping")
            continue
        _unknown(entry, JOB_KEYS, path, errors)
        name = _name(entry.get("name"), f"{path}.name", errors)
        namespace = _name(entry.get("namespace", "default"), f"{path}.namespace", errors)
        band = _band(entry.get("band"), f"{path}.band", errors)
        tasks = _count(entry.get("tasks"), f"{path}.tasks", errors)
        requests = _resources(entry.get("requests"), f"{path}.requests", errors)
        alloc = entry.get("alloc")
        alloc_name: str | None = None
        if isinstance(alloc, dict):
            _unknown(alloc, INLINE_ALLOC_KEYS, f"{path}.alloc", errors)
            given = {k: v for k, v in alloc.items() if k in INLINE_ALLOC_KEYS}
            inline = _alloc_spec({"name": name, "namespace": namespace, "band": band, "count": tasks,
                                  "resources": requests, **given}, f"{path}.alloc", errors)
            if inline is not None:
                allocs.append(inline)
                alloc_name = name
        elif isinstance(alloc, str) and alloc:
            alloc_name = alloc
        elif alloc is not None:
            errors.append(f"{path}.alloc: must be an alloc name or a mapping")
        jobs.append(JobSpec(name, namespace, band, tasks, requests,
                            _string_map(entry.get("nodeSelector"), f"{path}.nodeSelector", errors), alloc_name))
    for kind, keys in (("alloc", [a.key for a in allocs]), ("job", [j.key for j in jobs])):
        errors.extend(f"{kind} {key} is defined twice" for key, n in sorted(Counter(keys).items()) if n > 1)
    available = {a.key for a in allocs} | set(known_allocs)
    for i, job in enumerate(jobs):
        if job.alloc and f"{job.namespace}/{job.alloc}" not in available:
            errors.append(f"jobs[{i}].alloc: no alloc {job.namespace}/{job.alloc} in the workload or the cell")
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - MAX_ERRORS_SHOWN} more)" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise CellError(f"{source}: {shown}{more}")
    return Workload(tuple(allocs), tuple(jobs))


def load_workload(path: Path, known_allocs: set[str] | frozenset[str] = frozenset()) -> Workload:
    documents = read_yaml_documents(path)
    if len(documents) != 1:
        raise CellError(f"{path}: expected one kind: Workload document, found {len(documents)}")
    return parse_workload(documents[0], str(path), known_allocs)

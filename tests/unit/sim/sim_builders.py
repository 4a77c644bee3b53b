"""One-line constructors for simulation tests: nodes, running pods, quotas, jobs, as the API shapes them."""

from __future__ import annotations

from typing import Any

from cell.sim.snapshot import SimCell, node_manifest, objects_cell
from cell.sim.workload import AllocSpec, JobSpec, Workload

ZONES = ("zone-a", "zone-b", "zone-c")


def nodes(count: int, cpu: str = "8", memory: str = "32Gi", pods: int = 110, prefix: str = "node") -> list[dict]:
    return [node_manifest(f"{prefix}-{i}", cpu, memory, pods, ZONES[(i - 1) % 3], f"rack-{(i - 1) % 4 + 1}")
            for i in range(1, count + 1)]


def running_pod(name: str, node: str, band: str = "batch", cpu: str = "1", memory: str = "1Gi",
                namespace: str = "lab", job: str = "old") -> dict:
    from scheduler_ext.policy.bands import PRIORITY_CLASSES

    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "controller": True}]},
        "spec": {"nodeName": node, "priorityClassName": band, "priority": PRIORITY_CLASSES[band],
                 "containers": [{"name": "task", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
        "status": {"phase": "Running"},
    }


def band_quota(namespace: str, bands: dict[str, dict[str, str]], used: dict | None = None) -> dict:
    obj: dict[str, Any] = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "BandQuota",
                           "metadata": {"name": "quota", "namespace": namespace}, "spec": {"bands": bands}}
    if used is not None:
        obj["status"] = {"used": used}
    return obj


def sim_cell(*objects: dict) -> SimCell:
    return objects_cell(((f"object {i}", obj) for i, obj in enumerate(objects)), "test cell")


def job(name: str, band: str = "batch", tasks: int = 1, cpu: str = "1", memory: str = "1Gi",
        namespace: str = "alice", alloc: str | None = None, selector: dict[str, str] | None = None) -> JobSpec:
    return JobSpec(name, namespace, band, tasks, {"cpu": cpu, "memory": memory}, selector or {}, alloc)


def alloc(name: str, count: int = 1, cpu: str = "1", memory: str = "1Gi", band: str = "production",
          namespace: str = "alice", spread_by: str | None = None) -> AllocSpec:
    return AllocSpec(name, namespace, band, count, {"cpu": cpu, "memory": memory}, spread_by)


def workload(*jobs: JobSpec, allocs: tuple[AllocSpec, ...] = ()) -> Workload:
    return Workload(allocs, tuple(jobs))

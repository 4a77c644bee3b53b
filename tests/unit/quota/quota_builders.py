"""Manifest builders for the quota tests: plain dicts shaped as the API serves them."""

from __future__ import annotations

from typing import Any

from scheduler_ext.policy.resources import Resources, parse_cpu, parse_memory


def res(cpu: str = "0", memory: str = "0") -> Resources:
    return Resources(parse_cpu(cpu), parse_memory(memory))


def container(name: str = "app", cpu: str | None = "1", memory: str | None = "1Gi",
              limits: dict[str, str] | None = None) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return {"name": name, "image": "busybox", "resources": resources}


def pod_spec(band: str | None = "production", containers: list[dict[str, Any]] | None = None,
             **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers if containers is not None else [container()], **extra}
    if band:
        spec["priorityClassName"] = band
    return spec


def template(spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {"app": "x"}}, "spec": spec}


def metadata(name: str, namespace: str = "alice", owners: list[dict[str, Any]] | None = None,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    # The uid owner() names, so that a stored owner really is the one a reference points at (Q9).
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if owners:
        meta["ownerReferences"] = owners
    if labels:
        meta["labels"] = labels
    return meta


def owner(kind: str, name: str, api_version: str = "apps/v1", controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": controller}


def deployment(name: str = "web", replicas: int | None = 1, spec: dict[str, Any] | None = None,
               labels: dict[str, str] | None = None, kind: str = "Deployment",
               owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": "x"}},
                            "template": template(spec or pod_spec(), labels)}
    if replicas is not None:
        body["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": metadata(name, owners=owners), "spec": body}


def job(name: str = "crunch", parallelism: int | None = 1, completions: int | None = None,
        spec: dict[str, Any] | None = None, owners: list[dict[str, Any]] | None = None,
        conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"template": template(spec or pod_spec("batch", restartPolicy="Never"))}
    if parallelism is not None:
        body["parallelism"] = parallelism
    if completions is not None:
        body["completions"] = completions
    obj: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(name, owners=owners),
                           "spec": body}
    if conditions:
        obj["status"] = {"conditions": conditions}
    return obj


def cronjob(name: str = "nightly", parallelism: int | None = 1, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    job_spec: dict[str, Any] = {"template": template(spec or pod_spec("batch", restartPolicy="Never"))}
    if parallelism is not None:
        job_spec["parallelism"] = parallelism
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata(name),
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job_spec}}}


def pod(name: str = "solo", spec: dict[str, Any] | None = None, owners: list[dict[str, Any]] | None = None,
        labels: dict[str, str] | None = None, phase: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata(name, owners=owners, labels=labels),
                           "spec": spec or pod_spec()}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def alloc(name: str = "cache", band: str = "production", count: int | None = 2,
          resources: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"priorityClassName": band,
                            "resources": resources if resources is not None else {"cpu": "500m", "memory": "256Mi"}}
    if count is not None:
        spec["count"] = count
    return {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc", "metadata": metadata(name), "spec": spec}


def band_quota(bands: dict[str, Any] | None, name: str = "quota", namespace: str = "alice") -> dict[str, Any]:
    return {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "BandQuota",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"bands": bands}}

"""Grading checks of exp1-orchestration (SPEC §8); README.md says what each one looks for.

Every assertion message is what the student reads when the check fails, so it says what was found
and what was expected. Checks only read the namespace, except test_web_heals (declared: it deletes
one web pod and expects a replacement ready within 60 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cell.grading import (
    ClusterView,
    SelfHealing,
    container_port,
    containers,
    plural,
    pod_spec,
    ready_endpoints,
    requests_of,
    template_labels,
)
from scheduler_ext.policy.resources import Resources

WEB = pytest.mark.task(1, "Deployment web", points=2)
SERVICE = pytest.mark.task(2, "Service web", points=2)
PROBE = pytest.mark.task(3, "Readiness probe", points=2)
CRUNCH = pytest.mark.task(4, "Job crunch", points=2)
PDB = pytest.mark.task(5, "PodDisruptionBudget web", points=2)

WEB_PORT = 8080
WEB_REPLICAS = 3
WEB_REQUESTS = Resources.parse({"cpu": "100m", "memory": "64Mi"})


def web_container(web: dict[str, Any]) -> dict[str, Any] | None:
    """The container that serves port 8080 (a student may add a sidecar), else the first one."""
    pod_containers = containers(web)
    for container in pod_containers:
        if any(p.get("containerPort") == WEB_PORT for p in container.get("ports") or []):
            return container
    return pod_containers[0] if pod_containers else None


@WEB
def test_web_deployment(cluster: ClusterView, course_images: dict[str, str]) -> None:
    web = cluster.require("Deployment", "web")
    spec = web.get("spec") or {}
    problems = []
    if template_labels(web).get("app") != "web":
        problems.append("its pod template is not labelled app=web")
    if ((spec.get("selector") or {}).get("matchLabels") or {}).get("app") != "web":
        problems.append("its selector does not match app=web")
    replicas = spec.get("replicas", 1)
    if replicas != WEB_REPLICAS:
        problems.append(f"it asks for {plural(replicas, 'replica')}, expected {WEB_REPLICAS}")
    container = web_container(web)
    if container is None:
        problems.append("it has no container")
    else:
        if container.get("image") != course_images["web"]:
            problems.append(f"container {container.get('name')} runs image {container.get('image')}, "
                            f"expected the course web image {course_images['web']}")
        if not any(p.get("containerPort") == WEB_PORT for p in container.get("ports") or []):
            problems.append(f"container {container.get('name')} does not declare containerPort {WEB_PORT}")
        if requests_of(container) != WEB_REQUESTS:
            problems.append(f"container {container.get('name')} requests {requests_of(container)}, "
                            f"expected {WEB_REQUESTS}")
    band = pod_spec(web).get("priorityClassName")
    if band != "production":
        problems.append(f"its priorityClassName is {band or 'not set'}, expected production")
    assert not problems, "Deployment web: " + "; ".join(problems)


@WEB
def test_web_available(cluster: ClusterView) -> None:
    web = cluster.require("Deployment", "web")
    available = int((web.get("status") or {}).get("availableReplicas") or 0)
    assert available >= WEB_REPLICAS, (f"Deployment web has {plural(available, 'replica')} available, "
                                       f"expected {WEB_REPLICAS}")


@WEB
def test_web_heals(self_healing: Callable[..., SelfHealing]) -> None:
    result = self_healing("web", "app=web", timeout=60)
    assert result.passed, result.reason


@SERVICE
def test_web_service(cluster: ClusterView) -> None:
    service = cluster.require("Service", "web")
    spec = service.get("spec") or {}
    problems = []
    selector = spec.get("selector") or {}
    if selector.get("app") != "web":
        problems.append(f"its selector is {_labels(selector)}, expected app=web")
    web = cluster.get("Deployment", "web")
    pod_containers = containers(web) if web else []
    ports = spec.get("ports") or []
    if not any(p.get("port") == 80 and container_port(p.get("targetPort", 80), pod_containers) == WEB_PORT
               for p in ports):
        found = ", ".join(f"{p.get('port')} -> {p.get('targetPort', p.get('port'))}" for p in ports) or "none"
        problems.append(f"its ports are {found}, expected port 80 -> targetPort {WEB_PORT}")
    assert not problems, "Service web: " + "; ".join(problems)


@SERVICE
def test_web_endpoints(cluster: ClusterView) -> None:
    cluster.require("Service", "web")
    ready = ready_endpoints(cluster.list("EndpointSlice", "kubernetes.io/service-name=web")).get("web", set())
    assert len(ready) >= WEB_REPLICAS, (f"Service web has {plural(len(ready), 'ready endpoint')}, "
                                        f"expected {WEB_REPLICAS}")


@PROBE
def test_web_readiness_probe(cluster: ClusterView) -> None:
    web = cluster.require("Deployment", "web")
    container = web_container(web)
    assert container is not None, "Deployment web has no container"
    probe = container.get("readinessProbe")
    assert probe, f"container {container.get('name')} of Deployment web has no readinessProbe"
    http = probe.get("httpGet")
    assert http, (f"the readinessProbe of container {container.get('name')} is not an HTTP GET "
                  f"(it uses {', '.join(k for k in probe if k in ('exec', 'tcpSocket', 'grpc')) or 'nothing'})")
    port = container_port(http.get("port"), containers(web))
    assert http.get("path") == "/healthz" and port == WEB_PORT, (
        f"the readinessProbe of container {container.get('name')} gets {http.get('path') or '/'} on port "
        f"{http.get('port')}, expected HTTP GET /healthz on port {WEB_PORT}")


@CRUNCH
def test_crunch_job(cluster: ClusterView) -> None:
    job = cluster.require("Job", "crunch")
    spec = job.get("spec") or {}
    problems = []
    band = pod_spec(job).get("priorityClassName")
    if band != "batch":
        problems.append(f"its priorityClassName is {band or 'not set'}, expected batch")
    if spec.get("completions") != 4:
        problems.append(f"completions is {spec.get('completions')}, expected 4")
    if spec.get("parallelism", 1) != 2:
        problems.append(f"parallelism is {spec.get('parallelism', 1)}, expected 2")
    assert not problems, "Job crunch: " + "; ".join(problems)


@CRUNCH
def test_crunch_completed(cluster: ClusterView) -> None:
    job = cluster.require("Job", "crunch")
    status = job.get("status") or {}
    complete = any(c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or [])
    succeeded = int(status.get("succeeded") or 0)
    assert complete, (f"Job crunch has not completed ({succeeded} of "
                      f"{(job.get('spec') or {}).get('completions', 1)} pods succeeded)")


@PDB
def test_web_pdb(cluster: ClusterView) -> None:
    pdb = cluster.require("PodDisruptionBudget", "web")
    spec = pdb.get("spec") or {}
    problems = []
    if spec.get("minAvailable") != 2:
        found = (f"minAvailable {spec['minAvailable']}" if "minAvailable" in spec
                 else f"maxUnavailable {spec.get('maxUnavailable')}" if "maxUnavailable" in spec else "no budget")
        problems.append(f"it sets {found}, expected minAvailable 2")
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if labels.get("app") != "web":
        problems.append(f"its selector is {_labels(labels)}, expected app=web")
    assert not problems, "PodDisruptionBudget web: " + "; ".join(problems)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "empty"

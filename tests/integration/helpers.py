"""Small waiting and manifest helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Pod Security "restricted" (SPEC §9), enforced in every student namespace: what each pod and each
# container must say. Set on every test pod, so that the same specs work in any namespace.
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def restricted(pod_spec: dict) -> dict:
    """pod_spec with the securityContext Pod Security "restricted" asks for (added where missing)."""
    pod_spec.setdefault("securityContext", dict(RESTRICTED_POD))
    for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
        container.setdefault("securityContext", dict(RESTRICTED_CONTAINER))
    return pod_spec


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.5, what: str = "condition") -> T:
    """Poll until predicate returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")


def deployment(name: str, replicas: int, cpu: str = "100m", memory: str = "64Mi",
               priority_class: str | None = None, labels: dict[str, str] | None = None,
               node_selector: dict[str, str] | None = None,
               tolerations: list[dict] | None = None) -> dict:
    pod_labels = {"app": name, **(labels or {})}
    spec: dict = {
        "containers": [{"name": "main", "image": "cell.local/web:1.0",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    restricted(spec)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": pod_labels}, "spec": spec}},
    }


def dedicated_node_manifests(prefix: str, count: int) -> list[dict]:
    """KWOK nodes reserved for one test: labelled and tainted with `cell.distos.dev/test=<prefix>`, so
    only that test's pods (which tolerate and select it) land there, whatever else the shared cell runs.
    Zones rotate a, b, c like the cell's own nodes."""
    from cell.localcell.topology import kwok_node_manifest

    nodes = []
    for index in range(1, count + 1):
        node = kwok_node_manifest(f"{prefix}-{index}", index)
        node["metadata"]["labels"]["cell.distos.dev/test"] = prefix
        node["spec"] = {"taints": [{"key": "cell.distos.dev/test", "value": prefix, "effect": "NoSchedule"}]}
        nodes.append(node)
    return nodes


def pin_to_test_nodes(pod_spec: dict, prefix: str) -> dict:
    """Make a pod spec select and tolerate the nodes of dedicated_node_manifests(prefix, ...)."""
    pod_spec.setdefault("nodeSelector", {})["cell.distos.dev/test"] = prefix
    pod_spec.setdefault("tolerations", []).append(
        {"key": "cell.distos.dev/test", "operator": "Equal", "value": prefix, "effect": "NoSchedule"})
    return pod_spec

"""Grading checks of exp3-failures; README.md says what each one looks for.

Failures cannot be injected while grading (grading changes nothing), so the checks verify what
makes a service survive them: replicas spread over failure domains, a fast failover when a node is
lost, a liveness probe, disruption budgets, and the student's record of a drain refused by a budget.
Every check only reads.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from cell.grading import (
    ClusterView,
    container_port,
    containers,
    is_ready,
    owned_by_deployment,
    plural,
    pod_spec,
    requests_of,
    template_labels,
)
from scheduler_ext.policy.resources import Resources

SPREAD = pytest.mark.task(1, "Deployment store spread over zones", points=2)
FAILOVER = pytest.mark.task(2, "Fast failover from a lost node", points=2)
LIVENESS = pytest.mark.task(3, "Liveness probe", points=2)
BUDGET = pytest.mark.task(4, "PodDisruptionBudget store", points=2)
DRAIN = pytest.mark.task(5, "A drain refused by a budget", points=2)

ZONE = "topology.kubernetes.io/zone"
STORE_REPLICAS = 4
STORE_REQUESTS = Resources.parse({"cpu": "100m", "memory": "64Mi"})
FAILOVER_SECONDS = 30
NODE_LOSS_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


def store_container(store: dict[str, Any]) -> dict[str, Any] | None:
    pod_containers = containers(store)
    for container in pod_containers:
        if any(p.get("containerPort") == 8080 for p in container.get("ports") or []):
            return container
    return pod_containers[0] if pod_containers else None


@SPREAD
def test_store_deployment(cluster: ClusterView, course_images: dict[str, str]) -> None:
    store = cluster.require("Deployment", "store")
    spec = store.get("spec") or {}
    problems = []
    if template_labels(store).get("app") != "store":
        problems.append("its pod template is not labelled app=store")
    replicas = spec.get("replicas", 1)
    if replicas != STORE_REPLICAS:
        problems.append(f"it asks for {plural(replicas, 'replica')}, expected {STORE_REPLICAS}")
    band = pod_spec(store).get("priorityClassName")
    if band != "production":
        problems.append(f"its priorityClassName is {band or 'not set'}, expected production")
    container = store_container(store)
    if container is None:
        problems.append("it has no container")
    else:
        if container.get("image") != course_images["web"]:
            problems.append(f"container {container.get('name')} runs {container.get('image')}, "
                            f"expected {course_images['web']}")
        if requests_of(container) != STORE_REQUESTS:
            problems.append(f"container {container.get('name')} requests {requests_of(container)}, "
                            f"expected {STORE_REQUESTS}")
    constraints = pod_spec(store).get("topologySpreadConstraints") or []
    if not any(c.get("topologyKey") == ZONE and c.get("maxSkew") == 1
               and c.get("whenUnsatisfiable") == "DoNotSchedule"
               and ((c.get("labelSelector") or {}).get("matchLabels") or {}).get("app") == "store"
               for c in constraints):
        problems.append(f"no topologySpreadConstraint with topologyKey {ZONE}, maxSkew 1, "
                        "whenUnsatisfiable DoNotSchedule and labelSelector app=store")
    assert not problems, "Deployment store: " + "; ".join(problems)


@SPREAD
def test_store_spread(cluster: ClusterView) -> None:
    cluster.require("Deployment", "store")
    pods = [p for p in cluster.pods("app=store") if owned_by_deployment(p, "store") and is_ready(p)]
    assert len(pods) >= STORE_REPLICAS, (f"Deployment store has {plural(len(pods), 'ready pod')}, "
                                         f"expected {STORE_REPLICAS}")
    nodes = cluster.nodes()
    zones = sorted({n["metadata"].get("labels", {}).get(ZONE) for n in nodes.values()} - {None})
    per_zone = Counter((nodes.get(p["spec"].get("nodeName")) or {}).get("metadata", {}).get("labels", {}).get(ZONE)
                       for p in pods)
    counts = [per_zone.get(zone, 0) for zone in zones]
    found = ", ".join(f"{zone}: {per_zone.get(zone, 0)}" for zone in zones)
    assert counts and max(counts) - min(counts) <= 1, (
        f"the ready store pods are spread {found}; losing one zone would take more than its share")


@FAILOVER
def test_store_tolerations(cluster: ClusterView) -> None:
    store = cluster.require("Deployment", "store")
    tolerations = pod_spec(store).get("tolerations") or []
    problems = []
    for taint in NODE_LOSS_TAINTS:
        matching = [t for t in tolerations if t.get("key") == taint and t.get("effect") == "NoExecute"
                    and t.get("operator", "Equal") == "Exists"]
        if not matching:
            problems.append(f"no toleration for {taint} (operator Exists, effect NoExecute)")
            continue
        seconds = matching[0].get("tolerationSeconds")
        if seconds is None or not 0 <= int(seconds) <= FAILOVER_SECONDS:
            shown = "unbounded" if seconds is None else f"{seconds} s"
            problems.append(f"pods stay on a node with {taint} for {shown}, expected at most {FAILOVER_SECONDS} s")
    assert not problems, "Deployment store: " + "; ".join(problems)


@LIVENESS
def test_store_liveness_probe(cluster: ClusterView) -> None:
    store = cluster.require("Deployment", "store")
    container = store_container(store)
    assert container is not None, "Deployment store has no container"
    probe = container.get("livenessProbe")
    assert probe, f"container {container.get('name')} of Deployment store has no livenessProbe"
    http = probe.get("httpGet") or {}
    port = container_port(http.get("port"), containers(store))
    assert http.get("path") == "/healthz" and port == 8080, (
        f"the livenessProbe of container {container.get('name')} is not an HTTP GET of /healthz on port 8080")


@BUDGET
def test_store_pdb(cluster: ClusterView) -> None:
    pdb = cluster.require("PodDisruptionBudget", "store")
    spec = pdb.get("spec") or {}
    problems = []
    if spec.get("maxUnavailable") != 1:
        found = (f"maxUnavailable {spec['maxUnavailable']}" if "maxUnavailable" in spec
                 else f"minAvailable {spec.get('minAvailable')}" if "minAvailable" in spec else "no budget")
        problems.append(f"it sets {found}, expected maxUnavailable 1")
    if ((spec.get("selector") or {}).get("matchLabels") or {}).get("app") != "store":
        problems.append("its selector does not match app=store")
    expected = int((pdb.get("status") or {}).get("expectedPods") or 0)
    if not problems and expected != STORE_REPLICAS:
        problems.append(f"it covers {plural(expected, 'pod')}, expected the {STORE_REPLICAS} store pods")
    assert not problems, "PodDisruptionBudget store: " + "; ".join(problems)


@DRAIN
def test_ledger_pdb(cluster: ClusterView) -> None:
    pdb = cluster.require("PodDisruptionBudget", "ledger")
    spec = pdb.get("spec") or {}
    status = pdb.get("status") or {}
    problems = []
    if spec.get("minAvailable") != 1:
        found = f"minAvailable {spec['minAvailable']}" if "minAvailable" in spec else "no minAvailable"
        problems.append(f"it sets {found}, expected minAvailable 1")
    if ((spec.get("selector") or {}).get("matchLabels") or {}).get("app") != "ledger":
        problems.append("its selector does not match app=ledger")
    if not problems and (int(status.get("expectedPods") or 0) != 1 or status.get("disruptionsAllowed") != 0):
        problems.append(f"it covers {plural(int(status.get('expectedPods') or 0), 'pod')} and allows "
                        f"{status.get('disruptionsAllowed')} disruption(s), expected 1 ledger pod and 0")
    assert not problems, "PodDisruptionBudget ledger: " + "; ".join(problems)


@DRAIN
def test_eviction_refused_answer(cluster: ClusterView) -> None:
    answers = cluster.require("ConfigMap", "answers")
    answer = ((answers.get("data") or {}).get("eviction-refused") or "").strip()
    assert answer, "ConfigMap answers has no key eviction-refused"
    assert "disruption budget" in answer.lower(), (
        f"eviction-refused is {answer!r}: that is not the API server's refusal of an eviction")
    ledger = cluster.require("Deployment", "ledger")
    available = int((ledger.get("status") or {}).get("availableReplicas") or 0)
    assert available >= 1, "Deployment ledger has no available replica: the budget should have kept it"

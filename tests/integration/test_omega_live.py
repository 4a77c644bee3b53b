"""Cell's live Omega scheduler on a real cell: two schedulers racing for the last room on a node
(one commit gets the ledger's 409, is retried, and the node is never overcommitted), and
kube-scheduler filling a node behind the ledger's back (caught on the node before binding).

Each test has its own KWOK nodes (8 CPU) and its own scheduler names, restricted to its namespace.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cell.localcell.supervisor import LocalCell
from scheduler_ext.omega import records
from scheduler_ext.omega.ledger import LEDGER_NAMESPACE, Ledger, ledger_name
from scheduler_ext.policy.model import PodInfo
from scheduler_ext.policy.resources import parse_cpu
from tests.integration.conftest import NodeFactory
from tests.integration.helpers import pin_to_test_nodes, restricted, wait_for
from tests.integration.omega import omega_schedulers

pytestmark = pytest.mark.cluster


def pod(name: str, cpu: str, namespace: str, scheduler: str | None = None, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"priorityClassName": "batch",
                            "containers": [{"name": "main", "image": "cell.local/web:1.0",
                                            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    pin_to_test_nodes(spec, namespace)
    if node:
        spec["nodeSelector"]["kubernetes.io/hostname"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": restricted(spec)}


def bound(core: client.CoreV1Api, namespace: str, *names: str) -> dict[str, str] | None:
    nodes = {name: core.read_namespaced_pod(name, namespace).spec.node_name for name in names}
    return nodes if all(nodes.values()) else None


def placed_by_omega(core: client.CoreV1Api, namespace: str, *names: str) -> dict[str, str] | None:
    """Where the pods are, once each is bound and its Scheduled Event is recorded."""
    nodes = bound(core, namespace, *names)
    return nodes if nodes and all(events(core, namespace, n, records.SCHEDULED) for n in names) else None


def events(core: client.CoreV1Api, namespace: str, name: str, reason: str) -> list[str]:
    found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},reason={reason}")
    return [e.message for e in found.items]


def cpu_on(api: client.ApiClient, node: str) -> tuple[int, int]:
    """(milli-CPU the node's active pods request, the node's allocatable milli-CPU), from the API."""
    core = client.CoreV1Api(api)
    pods = api.sanitize_for_serialization(core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}"))
    requested = sum(PodInfo.from_manifest(p).requests.cpu for p in pods["items"] if PodInfo.is_active(p))
    return requested, parse_cpu(core.read_node(node).status.allocatable["cpu"])


@pytest.fixture
def ledgers(kube_api: client.ApiClient) -> Iterator[list[str]]:
    """The ledgers of the test's nodes, removed with them."""
    nodes: list[str] = []
    yield nodes
    core = client.CoreV1Api(kube_api)
    for node in nodes:
        try:
            core.delete_namespaced_config_map(ledger_name(node), LEDGER_NAMESPACE)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def test_two_schedulers_race_for_the_last_room_and_the_loser_is_retried(
        local_cell: LocalCell, kube_api: client.ApiClient, namespace: str, test_nodes: NodeFactory,
        ledgers: list[str], tmp_path: Path) -> None:
    core = client.CoreV1Api(kube_api)
    full, spare = test_nodes(2)
    ledgers.extend([full, spare])
    # 3 of full's 8 CPU taken (by kube-scheduler): 5 left, room for one of the two 4 CPU pods. Batch
    # packs, so both schedulers choose full.
    core.create_namespaced_pod(namespace, pod("filler", "3", namespace, node=full))
    wait_for(lambda: bound(core, namespace, "filler"), 60, what="filler bound")
    names = [f"{namespace}-a", f"{namespace}-b"]
    with omega_schedulers(local_cell.kubeconfig, names, tmp_path, decision_time=2.0,
                          extra=("--namespace", namespace)) as schedulers:
        for scheduler, name in zip(names, ("a", "b"), strict=True):
            core.create_namespaced_pod(namespace, pod(name, "4", namespace, scheduler))
        placed = wait_for(lambda: placed_by_omega(core, namespace, "a", "b"), 60, what="a and b placed")
        conflicts = sum(one.metric("cell_omega_conflicts_total") for one in schedulers.values())
        retries = sum(one.metric("cell_omega_retries_total") for one in schedulers.values())
    assert sorted(placed.values()) == sorted([full, spare]), placed
    winner, loser = sorted(placed, key=lambda name: placed[name] != full)
    refused = events(core, namespace, loser, records.CONFLICT)
    assert len(refused) == 1, refused
    assert "409 Conflict" in refused[0] and "no longer fits" in refused[0], refused[0]
    assert events(core, namespace, winner, records.CONFLICT) == []
    assert events(core, namespace, loser, records.SCHEDULED) == [
        f"Successfully assigned {namespace}/{loser} to {spare} ({namespace}-{loser}, attempt 2, 1 conflict)"]
    assert (conflicts, retries) == (1, 1)
    for node in (full, spare):
        requested, allocatable = cpu_on(kube_api, node)
        assert requested <= allocatable, f"{node} overcommitted: {requested}m of {allocatable}m"
    ledger = Ledger.from_manifest(kube_api.sanitize_for_serialization(
        core.read_namespaced_config_map(ledger_name(full), LEDGER_NAMESPACE)))
    assert [c.pod for c in ledger.claims.values()] == [f"{namespace}/{winner}"]


def test_a_pod_kube_scheduler_binds_behind_the_ledger_is_caught_before_binding(
        local_cell: LocalCell, kube_api: client.ApiClient, namespace: str, test_nodes: NodeFactory,
        ledgers: list[str], tmp_path: Path) -> None:
    core = client.CoreV1Api(kube_api)
    full, spare = test_nodes(2)
    ledgers.extend([full, spare])
    core.create_namespaced_pod(namespace, pod("filler", "3", namespace, node=full))
    wait_for(lambda: bound(core, namespace, "filler"), 60, what="filler bound")
    name = f"{namespace}-o"
    with omega_schedulers(local_cell.kubeconfig, [name], tmp_path, decision_time=3.0,
                          extra=("--namespace", namespace)) as schedulers:
        core.create_namespaced_pod(namespace, pod("o", "4", namespace, name))
        log = schedulers[name].log
        wait_for(lambda: f"{namespace}/o planned on {full}" in log.read_text(), 30, what="o planned on full")
        # While omega decides (3 s), kube-scheduler takes full's last room: no ledger hears of it.
        core.create_namespaced_pod(namespace, pod("k", "4", namespace, node=full))
        wait_for(lambda: bound(core, namespace, "k"), 30, what="k bound by kube-scheduler")
        placed = wait_for(lambda: placed_by_omega(core, namespace, "o"), 60, what="o placed")
        unledgered = schedulers[name].metric("cell_omega_conflicts_total")
    assert placed == {"o": spare}
    refused = events(core, namespace, "o", records.CONFLICT)
    assert len(refused) == 1 and "filled behind the ledger" in refused[0] and f"{namespace}/k" in refused[0], refused
    assert unledgered == 1
    for node in (full, spare):
        requested, allocatable = cpu_on(kube_api, node)
        assert requested <= allocatable, f"{node} overcommitted: {requested}m of {allocatable}m"

"""The local cell itself: a real control plane scheduling onto KWOK nodes (issue 2)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client
from typer.testing import CliRunner

import cell.state as cell_state
from cell.cli import app
from cell.localcell.supervisor import LocalCell
from scheduler_ext.policy.resources import Resources
from tests.integration.conftest import NodeFactory
from tests.integration.helpers import deployment, pin_to_test_nodes, wait_for

pytestmark = pytest.mark.cluster


def _pods(kube_api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    """The pods not being deleted (a pod evicted from a node that missed a heartbeat lingers a while)."""
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_every_component_is_healthy_and_all_nodes_ready(local_cell: LocalCell) -> None:
    for name in local_cell.component_names():
        assert local_cell.healthy(name), f"{name} is not healthy; log: {local_cell.paths.log(name)}"
    def all_ready() -> bool:
        ready, total = local_cell.ready_nodes()
        return ready == total >= 12

    # A loaded machine can delay a KWOK heartbeat and get a node tainted for a moment: give it time.
    wait_for(all_ready, 60, what="every node Ready and untainted")
    nodes = client.CoreV1Api(local_cell.api()).list_node().items
    zones = {n.metadata.labels["topology.kubernetes.io/zone"] for n in nodes}
    racks = {n.metadata.labels["cell.distos.dev/rack"] for n in nodes}
    assert zones == {"zone-a", "zone-b", "zone-c"}
    assert len(racks) == 6


def test_deployment_of_three_becomes_available_on_kwok_nodes(kube_api: client.ApiClient, namespace: str) -> None:
    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, deployment("web", 3))

    def available() -> bool:
        dep = client.AppsV1Api(kube_api).read_namespaced_deployment("web", namespace)
        return (dep.status.available_replicas or 0) == 3

    wait_for(available, 90, what="3 available replicas of web")
    pods = _pods(kube_api, namespace, "app=web")
    assert len(pods) == 3
    assert all(p.spec.node_name and p.spec.node_name.startswith("node-") for p in pods)


def test_pods_of_a_deleted_node_are_recreated_elsewhere(local_cell: LocalCell, kube_api: client.ApiClient,
                                                        namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("svc", 6))
    wait_for(lambda: (apps.read_namespaced_deployment("svc", namespace).status.available_replicas or 0) == 6,
             90, what="6 available replicas")
    victim_node = _pods(kube_api, namespace, "app=svc")[0].spec.node_name
    lost = {p.metadata.name for p in _pods(kube_api, namespace, "app=svc") if p.spec.node_name == victim_node}
    index = int(victim_node.split("-")[1])
    core.delete_node(victim_node)
    try:
        def rescheduled() -> bool:
            pods = _pods(kube_api, namespace, "app=svc")
            running = [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
            return (len(running) == 6 and not lost & {p.metadata.name for p in running}
                    and all(p.spec.node_name != victim_node for p in running))

        # The pod garbage collector removes pods bound to a vanished node after ~40 s; the ReplicaSet
        # then recreates them on the remaining nodes.
        wait_for(rescheduled, 150, interval=2, what=f"pods of {victim_node} recreated on other nodes")
    finally:
        local_cell.create_nodes(1, first=index)
        local_cell.wait_nodes_ready(local_cell.record.nodes)


def test_pods_are_placed_only_where_they_fit(kube_api: client.ApiClient, namespace: str,
                                             test_nodes: NodeFactory) -> None:
    """Two dedicated, tainted nodes of 8 CPU; three 5-CPU pods: two run (one per node), one waits."""
    core = client.CoreV1Api(kube_api)
    names = test_nodes(2)
    big = deployment("big", 3, cpu="5", memory="1Gi")
    pin_to_test_nodes(big["spec"]["template"]["spec"], namespace)
    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, big)

    def two_bound_one_pending() -> bool:
        pods = _pods(kube_api, namespace, "app=big")
        bound = [p for p in pods if p.spec.node_name]
        return len(pods) == 3 and len(bound) == 2

    wait_for(two_bound_one_pending, 60, what="2 of 3 big pods bound")
    pods = _pods(kube_api, namespace, "app=big")
    assert sorted(p.spec.node_name for p in pods if p.spec.node_name) == sorted(names)
    pending = next(p for p in pods if not p.spec.node_name)
    reason = wait_for(lambda: next((c for c in (core.read_namespaced_pod(pending.metadata.name, namespace)
                                                .status.conditions or []) if c.type == "PodScheduled"), None),
                      30, what="PodScheduled condition")
    assert reason.status == "False" and "Insufficient cpu" in (reason.message or "")
    for name in names:
        used = _node_requests(kube_api, name)
        assert used.cpu <= 8000, f"{name} overcommitted: {used}"


def _node_requests(kube_api: client.ApiClient, node: str) -> Resources:
    pods = client.CoreV1Api(kube_api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    total = Resources()
    for pod in pods:
        for container in pod.spec.containers:
            total = total + Resources.parse((container.resources.requests if container.resources else None) or {})
    return total


def test_second_cell_up_reports_the_running_cell_and_changes_nothing(local_cell: LocalCell) -> None:
    before = dict(local_cell.record.pids)
    result = CliRunner().invoke(app, ["up", "--state-dir", str(local_cell.state_dir)])
    assert result.exit_code == 0, result.output
    assert "already running" in result.output
    assert result.stdout.strip().endswith(str(local_cell.kubeconfig))
    assert LocalCell(local_cell.state_dir).record.pids == before


def test_dead_component_is_named_by_status_and_restarted_by_up(local_cell: LocalCell) -> None:
    pid = local_cell.pid("kube-controller-manager")
    assert pid is not None
    os.kill(pid, 9)
    wait_for(lambda: not local_cell.alive("kube-controller-manager"), 10, what="controller-manager to die")
    status = CliRunner().invoke(app, ["status", "--state-dir", str(local_cell.state_dir)])
    assert status.exit_code == 1
    assert "kube-controller-manager" in status.output and "dead" in status.output
    assert "kube-controller-manager.log" in status.output
    up = CliRunner().invoke(app, ["up", "--state-dir", str(local_cell.state_dir)])
    assert up.exit_code == 0, up.output
    assert "restarting kube-controller-manager" in up.output
    fresh = LocalCell(local_cell.state_dir)
    assert fresh.healthy("kube-controller-manager")
    local_cell._record = None  # the session's object re-reads the record with the new PID


def _cell_processes(state_dir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(state_dir) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_a_small_cell_comes_up_and_down_leaving_no_process(tmp_path: Path) -> None:
    """A cell of its own (stock scheduler, 2 nodes), driven through the real CLI as a user would."""
    state = tmp_path / "small"
    env = {**os.environ, "CELL_WITHOUT": "extender,webhook,operator"}
    cell_cli = [sys.executable, "-m", "cell.cli"]
    up = subprocess.run([*cell_cli, "up", "--nodes", "2", "--state-dir", str(state)], env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip())
    assert kubeconfig.is_file()
    small = LocalCell(state)
    assert small.ready_nodes() == (2, 2)
    assert _cell_processes(state), "the small cell runs no process?"
    down = subprocess.run([*cell_cli, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert _cell_processes(state) == []
    assert not state.exists()


def test_port_in_use_fails_with_one_line_naming_component_and_log(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    monkeypatch.setattr(cell_state, "free_port", lambda: taken)
    monkeypatch.setenv("CELL_WITHOUT", "extender,webhook,operator")
    state = tmp_path / "clash"
    try:
        result = CliRunner().invoke(app, ["up", "--nodes", "1", "--state-dir", str(state)])
    finally:
        busy.close()
    assert result.exit_code != 0
    assert "etcd" in result.output and "etcd.log" in result.output
    assert _cell_processes(state) == []

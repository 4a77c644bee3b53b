"""A real worker node, verified end to end with testinfra as the course's grading does on real VMs.

Locally the node is this machine (added to the session's local cell by `real_node`); with
CELL_TESTINFRA_HOSTS the same checks run over SSH against the cloud's workers (see conftest.py).
The last tests take the local node away (directly, then a whole cell of its own through `cell up
--real-node` and `cell down` after its agents crashed) and check that the machine is as it was before.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import testinfra
from kubernetes import client
from kubernetes.stream import stream
from rich.console import Console

from cell import images
from cell.catalog import course_images
from cell.errors import CellError
from cell.localcell import lifecycle, topology
from cell.localcell.supervisor import LocalCell
from cell.names import REAL_LABEL
from cell.realnode import claim, host
from cell.realnode import node as realnode
from cell.realnode.config import COMPONENTS, NODE_NAME, RealNodePaths
from tests.integration.helpers import wait_for
from tests.realnode.conftest import NodeTarget, RealNode, is_local

pytestmark = pytest.mark.realnode

_names = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 10000}-{next(_names)}"


def _pod(target: NodeTarget, name: str, image: str, command: list[str] | None = None,
         labels: dict[str, str] | None = None, probe: bool = False) -> dict[str, Any]:
    """A pod pinned to the node under test (it tolerates the local real node's taint)."""
    container: dict[str, Any] = {"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}
    if command:
        container["command"] = command
    if probe:
        container["ports"] = [{"containerPort": 8080}]
        container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": target.node},
            "tolerations": [{"key": REAL_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [container],
        },
    }


def _create_running(target: NodeTarget, namespace: str, manifest: dict[str, Any],
                    ready: bool = False) -> client.V1Pod:
    core = client.CoreV1Api(target.api)
    core.create_namespaced_pod(namespace, manifest)
    name = manifest["metadata"]["name"]

    def running() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        statuses = pod.status.container_statuses or []
        if not statuses or not statuses[0].state.running:
            return None
        if ready and not statuses[0].ready:
            return None
        return pod

    return wait_for(running, timeout=90, interval=0.5, what=f"pod {namespace}/{name} running on {target.node}")


def _delete(target: NodeTarget, namespace: str, name: str) -> None:
    try:
        client.CoreV1Api(target.api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def _container_id(pod: client.V1Pod) -> str:
    return str(pod.status.container_statuses[0].container_id).split("://", 1)[1]


def _pids_in_cgroup_of(target: NodeTarget, needle: str) -> list[int]:
    """PIDs of the host whose cgroup path names `needle` (a container ID or a pod UID)."""
    out = target.privileged(f"grep -ls -- {needle} /proc/[0-9]*/cgroup || true")
    return sorted(int(path.split("/")[2]) for path in out.split() if path.startswith("/proc/"))


def _pod_uid_forms(pod: client.V1Pod) -> tuple[str, str]:
    # cgroupfs paths carry the UID as is (pod<uid>), systemd slices with underscores.
    uid = str(pod.metadata.uid)
    return uid, uid.replace("-", "_")


# --- the node and its daemons --------------------------------------------------------------------

def _service_rules(target: NodeTarget, namespace: str, service: str) -> bool:
    """kube-proxy has programmed this Service's endpoints (a KUBE-SVC jump commented with its name)."""
    return any(f"{namespace}/{service}" in line and "-j KUBE-SVC-" in line
               for line in target.privileged("iptables-save -t nat").splitlines())


def test_the_node_is_ready_beside_the_kwok_nodes(target: NodeTarget) -> None:
    nodes = {node.metadata.name: node for node in client.CoreV1Api(target.api).list_node().items}
    node = nodes[target.node]
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True", node.status.conditions
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version.startswith("v1.")
    if target.real_node is not None:
        labels = node.metadata.labels
        assert labels[REAL_LABEL] == "true"
        assert labels["topology.kubernetes.io/zone"] in topology.ZONES
        assert labels["cell.distos.dev/rack"].startswith("rack-")
        # Cell's own taint, and no other but the kubelet's condition taints (node.kubernetes.io/...).
        taints = [(t.key, t.effect) for t in node.spec.taints]
        assert (REAL_LABEL, "NoSchedule") in taints, taints
        assert all(key == REAL_LABEL or key.startswith("node.kubernetes.io/") for key, _ in taints), taints
        kwok = [n for n in nodes.values() if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"]
        assert kwok and all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
                            for n in kwok)


def test_containerd_runs_and_serves_the_cri(target: NodeTarget) -> None:
    processes = target.host.process.filter(comm="containerd")
    assert processes, "no containerd process on the node"
    assert target.host.socket(f"unix://{target.containerd_socket}").is_listening
    if target.real_node is not None:
        config = str(RealNodePaths(target.real_node.cell.paths).containerd_config)
        assert any(config in process.args for process in processes), [p.args for p in processes]
        # Configured for this kernel: cgroupfs, and no lowering of oom_score_adj.
        text = target.host.file(config).content_string
        assert "SystemdCgroup = false" in text and "restrict_oom_score_adj = true" in text


def test_the_kubelet_runs_and_listens_on_its_port(target: NodeTarget) -> None:
    assert target.host.process.filter(comm="kubelet"), "no kubelet process on the node"
    node = client.CoreV1Api(target.api).read_node(target.node)
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    assert target.host.socket(f"tcp://{address}:{port}").is_listening, f"kubelet not listening on {address}:{port}"
    if target.real_node is None:
        assert target.host.service("kubelet").is_running


def test_the_course_images_are_imported_into_containerd(target: NodeTarget) -> None:
    if target.real_node is None:
        pytest.skip("cloud nodes pull the course's public images on demand")
    listed = target.privileged(f"ctr --address {target.containerd_socket} --namespace k8s.io images list --quiet")
    assert set(images.image_refs().values()) <= set(listed.split())


# --- pods really run ------------------------------------------------------------------------------

def test_a_pod_on_the_node_is_a_process_of_the_host_inside_the_pods_cgroup(target: NodeTarget,
                                                                            namespace: str) -> None:
    name, marker = _name("sleeper"), str(900000 + os.getpid() % 10000)
    pod = _create_running(target, namespace, _pod(target, name, course_images()["shell"], ["sleep", marker]))
    try:
        processes = target.host.process.filter(args=f"sleep {marker}")
        assert len(processes) == 1, processes
        pid = processes[0].pid
        assert _pids_in_cgroup_of(target, _container_id(pod)) == [pid]
        cgroups = target.host.file(f"/proc/{pid}/cgroup").content_string
        uid, uid_systemd = _pod_uid_forms(pod)
        assert "kubepods" in cgroups and (uid in cgroups or uid_systemd in cgroups), cgroups
        # The sandbox (pause) process shares the pod's cgroup, not the container's.
        assert len(_pids_in_cgroup_of(target, uid if uid in cgroups else uid_systemd)) == 2
    finally:
        _delete(target, namespace, name)


def test_a_web_pod_answers_from_the_node_and_through_its_service(target: NodeTarget, namespace: str) -> None:
    name = _name("web")
    core = client.CoreV1Api(target.api)
    pod = _create_running(target, namespace, _pod(target, name, course_images()["web"], probe=True), ready=True)
    core.create_namespaced_service(namespace, {
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
    try:
        assert target.host.check_output(f"curl -fsS -m 5 http://{pod.status.pod_ip}:8080/healthz") == "ok"
        cluster_ip = core.read_namespaced_service(name, namespace).spec.cluster_ip

        def answers() -> str | None:
            result = target.host.run(f"curl -fsS -m 3 http://{cluster_ip}/healthz")
            return result.stdout.strip() if result.rc == 0 else None

        # kube-proxy programs the Service's rules a moment after its endpoints appear.
        assert wait_for(answers, timeout=60, interval=1, what=f"ClusterIP {cluster_ip} answering") == "ok"
    finally:
        core.delete_namespaced_service(name, namespace)
        _delete(target, namespace, name)


def test_logs_and_exec_reach_the_kubelet(target: NodeTarget, namespace: str) -> None:
    name = _name("web")
    core = client.CoreV1Api(target.api)
    _create_running(target, namespace, _pod(target, name, course_images()["web"], probe=True), ready=True)
    try:
        # The readiness probe's requests, logged by busybox httpd -v: the apiserver read them from the kubelet.
        wait_for(lambda: "response:200" in core.read_namespaced_pod_log(name, namespace), timeout=15,
                 what="a probe's request in the container's log")
        out = stream(core.connect_get_namespaced_pod_exec, name, namespace, command=["cat", "/www/healthz"],
                     stderr=True, stdin=False, stdout=True, tty=False)
        assert out.strip() == "ok"
    finally:
        _delete(target, namespace, name)


def test_killing_a_container_makes_the_kubelet_restart_it(target: NodeTarget, namespace: str) -> None:
    name, marker = _name("phoenix"), str(910000 + os.getpid() % 10000)
    core = client.CoreV1Api(target.api)
    pod = _create_running(target, namespace, _pod(target, name, course_images()["shell"], ["sleep", marker]))
    try:
        (old,) = target.host.process.filter(args=f"sleep {marker}")
        target.privileged(f"kill -9 {old.pid}")

        def restarted() -> client.V1Pod | None:
            current = core.read_namespaced_pod(name, namespace)
            status = current.status.container_statuses[0]
            return current if status.restart_count >= 1 and status.state.running else None

        pod = wait_for(restarted, timeout=60, interval=0.5, what=f"{name} restarted by the kubelet")
        (new,) = wait_for(lambda: target.host.process.filter(args=f"sleep {marker}"), timeout=30,
                          what="the restarted container's process")
        assert new.pid != old.pid
        assert _pids_in_cgroup_of(target, _container_id(pod)) == [new.pid]
    finally:
        _delete(target, namespace, name)


def test_deleting_the_pod_removes_its_processes(target: NodeTarget, namespace: str) -> None:
    name, marker = _name("mayfly"), str(920000 + os.getpid() % 10000)
    pod = _create_running(target, namespace, _pod(target, name, course_images()["shell"], ["sleep", marker]))
    uid, uid_systemd = _pod_uid_forms(pod)
    assert target.host.process.filter(args=f"sleep {marker}")
    assert len(_pids_in_cgroup_of(target, uid) or _pids_in_cgroup_of(target, uid_systemd)) == 2  # pause + sleep
    _delete(target, namespace, name)
    wait_for(lambda: not target.host.process.filter(args=f"sleep {marker}"), timeout=60,
             what=f"the process of deleted pod {name} to exit")
    wait_for(lambda: not _pids_in_cgroup_of(target, uid) and not _pids_in_cgroup_of(target, uid_systemd),
             timeout=60, what=f"no process left in the cgroup of deleted pod {name}")


# --- the node role ----------------------------------------------------------------------------------

@pytest.mark.timeout(900)
def test_a_second_run_of_the_node_role_changes_nothing(target: NodeTarget) -> None:
    run = target.run_node_role()
    assert run.ok > 0  # it did run its tasks
    assert run.changed == 0, f"not idempotent: {list(run.changed_tasks)} (log: {run.artifacts / 'stdout'})"


# --- the local cell's view -----------------------------------------------------------------------------

def _local(target: NodeTarget) -> RealNode:
    if target.real_node is None:
        pytest.skip("the local cell's real node only")
    return target.real_node


def test_cell_status_reports_the_real_nodes_components(target: NodeTarget) -> None:
    node = _local(target)
    out = io.StringIO()
    healthy = lifecycle.status(state_dir=node.cell.state_dir, console=Console(file=out, width=200))
    table = out.getvalue()
    for name in COMPONENTS:
        line = next(line for line in table.splitlines() if f" {name} " in line)
        assert "healthy" in line and "unhealthy" not in line, line
    assert healthy, table


def test_a_second_real_node_on_the_machine_is_refused(target: NodeTarget, tmp_path: Path) -> None:
    node = _local(target)
    other = tmp_path / "other"
    other.mkdir()
    record = {"bin_dir": node.cell.record.bin_dir, "ports": {}, "pids": {}, "without": []}
    (other / "cell.json").write_text(json.dumps(record))
    with pytest.raises(CellError, match=rf"already runs on this machine, in the cell at {node.cell.state_dir}"):
        realnode.add(LocalCell(other), Console(file=io.StringIO()))
    assert claim.Claim.load().state_dir == str(node.cell.state_dir)  # the claim stays where it was
    assert "real_node" not in json.loads((other / "cell.json").read_text())
    assert not (other / "realnode").exists()
    # `cell up --real-node` for a new cell refuses before starting anything.
    fresh = tmp_path / "fresh"
    with pytest.raises(CellError, match="already runs on this machine"):
        lifecycle.up(nodes=1, state_dir=fresh, console=Console(file=io.StringIO()), real_node=True,
                     node=realnode.RealNode())
    assert not fresh.exists()


def test_cell_up_restarts_a_component_of_the_real_node_that_died(target: NodeTarget) -> None:
    node = _local(target)
    old_pid = node.cell.pid("kube-proxy")
    assert old_pid is not None
    target.privileged(f"kill -9 {old_pid}")
    wait_for(lambda: not LocalCell(node.cell.state_dir).alive("kube-proxy"), timeout=10, what="kube-proxy to die")
    lifecycle.up(state_dir=node.cell.state_dir, console=Console(file=io.StringIO()), real_node=True,
                 node=realnode.RealNode())
    fresh = LocalCell(node.cell.state_dir)
    assert fresh.healthy("kube-proxy") and fresh.pid("kube-proxy") != old_pid
    node.cell._record = None  # the fixture's view re-reads the record the restart changed


# Last: it takes the session's real node away.
@pytest.mark.timeout(300)
def test_removing_the_node_leaves_the_machine_as_it_was(target: NodeTarget, namespace: str) -> None:
    node = _local(target)
    cell = node.cell
    name = _name("web")
    core = client.CoreV1Api(target.api)
    # Something to clean up: a pod with its netns, veth, mounts and cgroups, a Service with its rules.
    _create_running(target, namespace, _pod(target, name, course_images()["web"], probe=True), ready=True)
    core.create_namespaced_service(namespace, {
        "metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
    wait_for(lambda: _service_rules(target, namespace, name), timeout=60, what=f"kube-proxy's rules for {name}")
    changed = host.capture_host_state().differences(node.before)
    assert any(d.startswith("links") for d in changed) and any(d.startswith("iptables") for d in changed), changed

    node_root = str(RealNodePaths(cell.paths).root)
    realnode.remove(cell, Console(stderr=True), keep_cell=True)

    assert host.capture_host_state().differences(node.before) == []
    assert not [p for p in target.host.process.filter() if node_root in p.args]
    assert claim.Claim.load() is None
    assert LocalCell(cell.state_dir).record.real_node is None
    with pytest.raises(client.ApiException) as missing:
        core.read_node(NODE_NAME)
    assert missing.value.status == 404
    assert all(LocalCell(cell.state_dir).healthy(c) for c in LocalCell(cell.state_dir).component_names())
    core.delete_namespaced_service(name, namespace)
    assert not Path(node_root).exists()
    # Removing again finds nothing to do and changes nothing.
    realnode.remove(LocalCell(cell.state_dir), Console(stderr=True), keep_cell=True)
    assert host.capture_host_state().differences(node.before) == []


# After the session's node is gone: the whole cycle through the CLI, with the node's agents crashed.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cell_down_after_a_crash_leaves_the_machine_as_it_was(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if not is_local():
        pytest.skip("the local cell's real node only")
    real_node: RealNode = request.getfixturevalue("real_node")
    if real_node.present:  # run on its own: the machine's one real-node slot is needed here
        realnode.remove(real_node.cell, Console(stderr=True), keep_cell=True)
    before = host.capture_host_state()
    state = tmp_path / "s"
    cell_cli = str(Path(sys.executable).parent / "cell")
    up = subprocess.run([cell_cli, "up", "--nodes", "1", "--state-dir", str(state), "--real-node"],
                        capture_output=True, text=True, timeout=800)
    assert up.returncode == 0, up.stderr[-2000:]
    cell = LocalCell(state)
    api = cell.api()
    target = NodeTarget(testinfra.get_host("local://"), NODE_NAME, api,
                        str(RealNodePaths(cell.paths).containerd_socket), None)
    name = _name("web")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "crash"}})
    _create_running(target, "crash", _pod(target, name, course_images()["web"], probe=True), ready=True)
    client.CoreV1Api(api).create_namespaced_service("crash", {
        "metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
    wait_for(lambda: _service_rules(target, "crash", name), timeout=60, what=f"kube-proxy's rules for {name}")
    # The node's agents crash; the pod's containers keep running under their shims.
    for component in ("kubelet", "containerd"):
        os.kill(cell.pid(component) or 0, signal.SIGKILL)
    assert _pids_in_cgroup_of(target, "kubepods")

    down = subprocess.run([cell_cli, "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=300)

    assert down.returncode == 0, down.stderr[-2000:]
    assert host.capture_host_state().differences(before) == []
    assert not _pids_in_cgroup_of(target, "kubepods")
    assert not [p for p in target.host.process.filter() if str(state) in p.args]
    assert not state.exists() and claim.Claim.load() is None

"""Fixtures of the real-node tests: which node is under test, and testinfra's view of its machine.

Locally (the default) the node is this machine, added to the session's local cell by the
session fixture `real_node` and checked with testinfra's local backend. Against the cloud, the
same tests check the inventory's workers over SSH, as the course's grading does on real VMs:

    CELL_TESTINFRA_HOSTS='ansible://workers?ansible_inventory=/path/hosts.yml' \
    CELL_TESTINFRA_KUBECONFIG=/path/admin.kubeconfig \
    CELL_TESTINFRA_INVENTORY=/path/hosts.yml  .venv/bin/pytest -m realnode tests/realnode

CELL_TESTINFRA_HOSTS is a comma-separated list of testinfra host specs (`ssh://user@host`,
`ansible://group?ansible_inventory=…`); unset, it is `local://`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra
from kubernetes import client
from kubernetes import config as kube_config
from rich.console import Console
from testinfra.host import Host

from cell.localcell.supervisor import LocalCell
from cell.realnode import host
from cell.realnode import node as realnode
from cell.realnode.config import NODE_NAME, RealNodePaths
from playbooks.runner import Outcome

HOSTS_ENV = "CELL_TESTINFRA_HOSTS"
KUBECONFIG_ENV = "CELL_TESTINFRA_KUBECONFIG"
INVENTORY_ENV = "CELL_TESTINFRA_INVENTORY"
LOCAL = "local://"
TEST_NAMESPACE = "realnode-test"
# Where kubeadm-made nodes (the cloud) keep containerd's socket.
CLOUD_CONTAINERD_SOCKET = "/run/containerd/containerd.sock"


def host_specs() -> list[str]:
    specs = [spec.strip() for spec in os.environ.get(HOSTS_ENV, "").split(",") if spec.strip()]
    return specs or [LOCAL]


def is_local() -> bool:
    return host_specs() == [LOCAL]


def _hosts() -> list[Host]:
    # testinfra's ansible backend runs ansible-inventory: the project's, beside this Python.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)])
    return testinfra.get_hosts(host_specs())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per machine under test: this one, or each host of the cloud inventory."""
    if "node_host" in metafunc.fixturenames:
        hosts = _hosts()
        metafunc.parametrize("node_host", hosts, ids=[host.backend.get_pytest_id() for host in hosts],
                             indirect=True, scope="session")


@dataclass
class RealNode:
    """The session's real node: its cell, and the machine's state before the node was added."""

    cell: LocalCell
    before: host.HostState

    @property
    def present(self) -> bool:
        return self.cell.record.real_node is not None


@pytest.fixture(scope="session")
def real_node(local_cell: LocalCell) -> Iterator[RealNode]:
    """Adds this machine as a real node of the session's local cell; removes it at the end (the cell stays)."""
    if os.geteuid() != 0:
        pytest.skip("a real node needs root (containerd, kubelet, mounts, iptables)")
    cell = LocalCell(local_cell.state_dir)  # a fresh view: the record changes under it
    before = host.capture_host_state()
    realnode.add(cell, Console(stderr=True))
    node = RealNode(cell, before)
    try:
        yield node
    finally:
        fresh = LocalCell(local_cell.state_dir)
        if fresh.exists() and fresh.record.real_node is not None:
            realnode.remove(fresh, Console(stderr=True), keep_cell=True)


@dataclass
class NodeTarget:
    """One node under test: the machine (testinfra), its Kubernetes name, and the cluster's API."""

    host: Host
    node: str
    api: client.ApiClient
    containerd_socket: str
    real_node: RealNode | None  # the local node, or None in the cloud

    def privileged(self, command: str) -> str:
        """Run as root (sudo over SSH); fail the test with the command's output if it fails."""
        if self.host.user().name == "root":
            return str(self.host.check_output(command))
        with self.host.sudo():
            return str(self.host.check_output(command))

    def run_node_role(self) -> Outcome:
        if self.real_node is not None:
            return realnode.run_node_role(self.real_node.cell)
        inventory = os.environ.get(INVENTORY_ENV)
        if not inventory:
            pytest.fail(f"set {INVENTORY_ENV} to the cloud inventory to re-run the node role there")
        return realnode.run_playbook(Path(inventory), {}, Path(os.environ.get("TMPDIR", "/tmp")) / "cell-node-role")


@pytest.fixture(scope="session")
def node_host(request: pytest.FixtureRequest) -> Host:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def target(node_host: Host, request: pytest.FixtureRequest) -> NodeTarget:
    if node_host.backend.NAME == "local" and is_local():
        node: RealNode = request.getfixturevalue("real_node")
        paths = RealNodePaths(node.cell.paths)
        return NodeTarget(node_host, NODE_NAME, node.cell.api(), str(paths.containerd_socket), node)
    kubeconfig = os.environ.get(KUBECONFIG_ENV)
    if not kubeconfig:
        pytest.fail(f"{HOSTS_ENV} names remote hosts: set {KUBECONFIG_ENV} to their cluster's admin kubeconfig")
    api = kube_config.new_client_from_config(config_file=kubeconfig)
    # kubeadm names a node after its machine's hostname.
    name = str(node_host.check_output("hostname")).strip()
    return NodeTarget(node_host, name, api, CLOUD_CONTAINERD_SOCKET, None)


@pytest.fixture(scope="session")
def namespace(target: NodeTarget) -> Iterator[str]:
    core = client.CoreV1Api(target.api)
    try:
        core.create_namespace({"metadata": {"name": TEST_NAMESPACE}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    yield TEST_NAMESPACE
    try:
        core.delete_namespace(TEST_NAMESPACE)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
    # Namespace deletion is asynchronous: wait, so the node's removal finds no pods left to drain.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespace(TEST_NAMESPACE)
        except client.ApiException:
            return
        time.sleep(1)


"""The Fauxmaster agrees with the live cell (issue 9): for the same cell state and the same pod,
`cell sim` over a `live` snapshot picks the node the real kube-scheduler + Cell's extender bind it to.

The test brings its own KWOK nodes (labelled and tainted for it), loads them to distinct levels so
every probe pod has one best node, then for each probe: takes a live snapshot, asks the simulator,
creates the pod for real and compares. Probes run one after another, so each later snapshot holds
the earlier probes, as the live cell does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from cell.cli import app
from cell.localcell.supervisor import LocalCell
from cell.sim.engine import SimOptions, simulate
from cell.sim.snapshot import load_live, load_snapshot_file
from cell.sim.workload import JobSpec, Workload
from scheduler_ext.policy.bands import PRIORITY_CLASSES
from tests.integration.conftest import NodeFactory
from tests.integration.helpers import pin_to_test_nodes, wait_for

pytestmark = pytest.mark.cluster

TEST_LABEL = "cell.distos.dev/test"
# Filler CPU per dedicated node (8 CPU each): distinct levels, so packing and spreading each have one
# best node. Memory follows CPU (1Gi per CPU), so both resources rank the nodes alike.
FILL = (6, 4, 2, 0)
# (band, cpu, which node the Borg policy should choose: index into the dedicated nodes)
PROBES = (
    ("batch", "1", 0),  # non-prod packs: the fullest node that still fits
    ("production", "1", 3),  # prod spreads: the emptiest node
    ("best-effort", "2", 1),  # node 0 has 1 CPU left: the next fullest
    ("monitoring", "500m", 3),  # still the emptiest (1 of 8 CPU)
    ("batch", "1500m", 1),
)


@pytest.fixture
def probe_nodes(test_nodes: NodeFactory) -> list[str]:
    """One dedicated node per row of FILL."""
    return test_nodes(len(FILL))


def _pod(name: str, band: str, cpu: str, memory: str, prefix: str, node: str | None = None) -> dict:
    spec = pin_to_test_nodes({
        "priorityClassName": band,
        "containers": [{"name": "task", "image": "cell.local/shell:1.0",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
    }, prefix)
    if node is not None:
        spec["nodeName"] = node  # fillers are bound directly: the scheduler is not what is tested here
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec}


def _fill(kube_api: client.ApiClient, namespace: str, nodes: list[str]) -> None:
    core = client.CoreV1Api(kube_api)
    fillers = []
    for node, cpus in zip(nodes, FILL, strict=True):
        for i in range(cpus):
            name = f"fill-{node}-{i}"
            core.create_namespaced_pod(namespace, _pod(name, "batch", "1", "1Gi", namespace, node))
            fillers.append(name)

    def running() -> bool:
        return all(core.read_namespaced_pod(n, namespace).status.phase == "Running" for n in fillers)

    wait_for(running, 60, what=f"{len(fillers)} filler pods Running")


def _simulated_node(cell: LocalCell, namespace: str, name: str, band: str, cpu: str) -> str | None:
    live = load_live(cell.paths.kubeconfig)
    job = JobSpec(name, namespace, band, 1, {"cpu": cpu, "memory": "512Mi"}, {TEST_LABEL: namespace})
    result = simulate(live, Workload(jobs=(job,)), SimOptions(seed=0, preemption=False))
    placed = result.placements.get(f"{namespace}/{name}-0")
    return placed.node if placed is not None else None


def test_simulator_and_live_extender_choose_the_same_node(local_cell: LocalCell, kube_api: client.ApiClient,
                                                          namespace: str, probe_nodes: list[str]) -> None:
    _fill(kube_api, namespace, probe_nodes)
    core = client.CoreV1Api(kube_api)
    for i, (band, cpu, designed) in enumerate(PROBES):
        name = f"probe-{i}"

        def assumed_by_extender(expected: int = sum(FILL) + i) -> bool:
            # The extender's cache must hold every pod bound so far, as the live snapshot does.
            pods = core.list_namespaced_pod(namespace).items
            return len([p for p in pods if p.spec.node_name and p.status.phase == "Running"]) >= expected

        wait_for(assumed_by_extender, 60, what="earlier pods running")
        simulated = _simulated_node(local_cell, namespace, name, band, cpu)
        assert simulated == probe_nodes[designed], f"{band} {cpu}: simulator chose {simulated}"
        core.create_namespaced_pod(namespace, _pod(name, band, cpu, "512Mi", namespace))

        def bound(pod: str = name) -> str | None:
            return core.read_namespaced_pod(pod, namespace).spec.node_name

        actual = wait_for(bound, 60, what=f"{name} bound")
        assert actual == simulated, (f"{band} {cpu}: kube-scheduler + extender bound {name} to {actual}, "
                                     f"the simulator chose {simulated}")
        assert core.read_namespaced_pod(name, namespace).spec.priority == PRIORITY_CLASSES[band]


def test_cell_sim_runs_on_the_live_cell_and_its_checkpoint(local_cell: LocalCell, namespace: str,
                                                           probe_nodes: list[str], tmp_path: Path) -> None:
    workload = tmp_path / "workload.yaml"
    workload.write_text(yaml.safe_dump({"kind": "Workload", "jobs": [
        {"name": "web", "namespace": namespace, "band": "production", "tasks": 4,
         "requests": {"cpu": "1", "memory": "1Gi"}, "nodeSelector": {TEST_LABEL: namespace}}]}))
    kubeconfig = str(local_cell.paths.kubeconfig)
    runner = CliRunner()
    result = runner.invoke(app, ["sim", "--cell", "live", "--workload", str(workload), "--kubeconfig", kubeconfig,
                                 "--out", str(tmp_path / "live"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["tasks"]["placed"] == 4 and summary["cell"]["nodes"] >= len(probe_nodes)
    placed_on = {line.split(",")[3] for line in (tmp_path / "live/placements.csv").read_text().splitlines()[1:]}
    assert placed_on == set(probe_nodes)  # prod spreads: one task per dedicated node

    checkpoint = tmp_path / "checkpoint.yaml"
    saved = runner.invoke(app, ["sim", "checkpoint", "--out", str(checkpoint), "--kubeconfig", kubeconfig])
    assert saved.exit_code == 0, saved.output
    snapshot = load_snapshot_file(checkpoint).snapshot()
    assert set(probe_nodes) <= set(snapshot.nodes)
    again = runner.invoke(app, ["sim", "--cell", str(checkpoint), "--workload", str(workload),
                                "--out", str(tmp_path / "file"), "--json"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "file/placements.csv").read_text() == (tmp_path / "live/placements.csv").read_text()

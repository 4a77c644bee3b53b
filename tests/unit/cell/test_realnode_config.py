"""The real node's configuration (cell/realnode/config.py), without a cluster or root: everything it
writes stays in the cell's state directory, it is configured for this kernel, and the host-state
comparison that proves `cell down` cleans up can fail.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from cell.errors import CellError
from cell.localcell import topology
from cell.localcell.supervisor import LocalCell
from cell.realnode import claim, config, host
from cell.realnode import node as realnode
from cell.realnode.config import COMPONENTS, RealNodePaths
from cell.state import RealNodeRecord
from playbooks.runner import Outcome

REAL = RealNodeRecord(node="real-1", node_ip="192.0.2.2", zone="zone-a", rack="rack-7",
                      ports={"kubelet": 41001, "kubelet_healthz": 41002, "containerd_metrics": 41003,
                             "kube_proxy_healthz": 41004, "kube_proxy_metrics": 41005})
BIN = Path("/nonexistent/bin")


@pytest.fixture
def cell(tmp_path: Path) -> LocalCell:
    state = tmp_path / "state"
    state.mkdir()
    record = {"bin_dir": "/nonexistent", "ports": {}, "pids": {}, "without": [],
              "real_node": {"node": "real-1", "node_ip": "192.0.2.2", "zone": "zone-a", "rack": "rack-7",
                            "ports": {"kubelet": 41001, "kubelet_healthz": 41002, "containerd_metrics": 41003,
                                      "kube_proxy_healthz": 41004, "kube_proxy_metrics": 41005}}}
    (state / "cell.json").write_text(json.dumps(record))
    return LocalCell(state)


def _is_inside(path: str, root: Path) -> bool:
    return Path(path.removeprefix("unix://")).resolve().is_relative_to(root)


def test_everything_the_node_writes_is_inside_the_state_directory(cell: LocalCell) -> None:
    root = cell.state_dir
    rp = RealNodePaths(cell.paths)
    extravars = config.role_extravars(rp, cell.record.real_node, BIN)
    for key in ("cell_containerd_socket", "container_runtime_config_path", "container_runtime_root_dir",
                "container_runtime_state_dir", "container_runtime_runc_root", "cell_cni_conf_dir",
                "node_crictl_config_path"):
        assert _is_inside(extravars[key], root), key
    kubelet = config.kubelet_config(rp, REAL)
    for key in ("containerRuntimeEndpoint", "podLogsDir", "tlsCertFile", "tlsPrivateKeyFile"):
        assert _is_inside(kubelet[key], root), key
    ipam = config.cni_config(rp)["plugins"][0]["ipam"]
    assert _is_inside(ipam["dataDir"], root)
    kubelet_argv = next(c for c in config.components(rp, REAL, BIN) if c.name == "kubelet").argv
    root_dir = next(arg.split("=", 1)[1] for arg in kubelet_argv if arg.startswith("--root-dir="))
    assert _is_inside(root_dir, root)


def test_configured_for_this_kernel_and_a_root_without_cap_sys_resource(cell: LocalCell) -> None:
    rp = RealNodePaths(cell.paths)
    kubelet = config.kubelet_config(rp, REAL)
    assert kubelet["cgroupDriver"] == "cgroupfs" and kubelet["oomScoreAdj"] == 0 and kubelet["failSwapOn"] is False
    proxy = config.kube_proxy_config(rp, REAL)
    assert proxy["mode"] == "iptables" and proxy["oomScoreAdj"] == 0
    # kube-proxy leaves the machine's conntrack settings and route_localnet alone.
    assert proxy["conntrack"]["maxPerCore"] == 0 and proxy["iptables"]["localhostNodePorts"] is False
    assert config.role_extravars(rp, cell.record.real_node, BIN)["container_runtime_metrics_address"] == (
        "127.0.0.1:41003")


def test_the_node_is_tainted_and_labelled_as_real(cell: LocalCell) -> None:
    rp = RealNodePaths(cell.paths)
    assert config.kubelet_config(rp, REAL)["registerWithTaints"] == [
        {"key": "cell.distos.dev/real", "value": "true", "effect": "NoSchedule"}]
    argv = next(c for c in config.components(rp, REAL, BIN) if c.name == "kubelet").argv
    labels = next(arg for arg in argv if arg.startswith("--node-labels=")).split("=", 1)[1].split(",")
    assert sorted(labels) == ["cell.distos.dev/rack=rack-7", "cell.distos.dev/real=true",
                              "topology.kubernetes.io/zone=zone-a"]
    assert "--hostname-override=real-1" in argv and "--node-ip=192.0.2.2" in argv


def test_the_node_sits_in_the_first_zone_on_a_rack_of_its_own(cell: LocalCell) -> None:
    real = config.node_record("192.0.2.2", dict(REAL.ports), cell.paths, BIN)
    assert (real.node, real.zone, real.rack) == ("real-1", "zone-a", "rack-7")  # 3 zones x 2 KWOK racks before it
    assert [c.name for c in real.components] == list(COMPONENTS)


def test_the_local_cell_lists_the_real_nodes_components_last(cell: LocalCell) -> None:
    record = json.loads((cell.state_dir / "cell.json").read_text())
    record["ports"] = dict.fromkeys(topology.PORTS, 1)
    (cell.state_dir / "cell.json").write_text(json.dumps(record))
    with_node = LocalCell(cell.state_dir)
    with_node.set_real_node(config.node_record("192.0.2.2", dict(REAL.ports), cell.paths, BIN))
    names = LocalCell(cell.state_dir).component_names()
    # Started last, stopped first (`cell down` stops in reverse).
    assert names[-3:] == list(COMPONENTS)
    with_node.set_real_node(None)
    assert not set(COMPONENTS) & set(LocalCell(cell.state_dir).component_names())


def test_host_state_differences_name_what_changed() -> None:
    before = host.HostState(iptables={"iptables": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT"}, links=["eth0", "lo"],
                                sysctls={"vm/overcommit_memory": "0"}, host_paths={"/var/lib/kubelet": None})
    same = host.HostState.from_json(json.loads(json.dumps(before.__dict__)))
    assert same.differences(before) == []
    after = host.HostState(iptables={"iptables": "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT"},
                               links=["cell0", "eth0", "lo"], sysctls={"vm/overcommit_memory": "1"},
                               host_paths={"/var/lib/kubelet": ["device-plugins"]})
    differences = after.differences(before)
    assert "links: new ['cell0'], gone []" in differences
    assert "sysctls[vm/overcommit_memory]: '0' -> '1'" in differences
    assert "host_paths[/var/lib/kubelet]: None -> ['device-plugins']" in differences
    assert any(d.startswith("iptables[iptables]") for d in differences)


def test_iptables_comparison_ignores_counters_and_timestamps() -> None:
    first = "# Generated by iptables-save v1.8.9 on Mon\n*nat\n:PREROUTING ACCEPT [12:720]\nCOMMIT\n# Completed on Mon"
    later = "# Generated by iptables-save v1.8.9 on Tue\n*nat\n:PREROUTING ACCEPT [99:5940]\nCOMMIT\n# Completed on Tue"
    assert host.normalise_iptables(first) == host.normalise_iptables(later)
    assert host.normalise_iptables(first) != host.normalise_iptables(later.replace("ACCEPT", "DROP"))


def test_a_real_node_needs_root_and_a_short_enough_state_directory(cell: LocalCell, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 1000)
    with pytest.raises(CellError, match="needs root"):
        realnode.check_machine(cell)
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 0)
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "cell.json").write_text((cell.state_dir / "cell.json").read_text())
    with pytest.raises(CellError, match="too deep for containerd's socket"):
        realnode.check_machine(LocalCell(deep))


def test_a_failed_add_takes_back_its_claim_and_its_record(cell: LocalCell, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELL_REALNODE_CLAIM_DIR", str(tmp_path / "run" / "realnode"))
    monkeypatch.setattr(realnode, "_preflight", lambda _cell: None)
    record = json.loads((cell.state_dir / "cell.json").read_text())
    del record["real_node"]
    (cell.state_dir / "cell.json").write_text(json.dumps(record))

    def role_fails(_cell: LocalCell) -> Outcome:
        assert claim.Claim.load() is not None  # claimed while it works
        raise CellError("node.yml failed: task 'Install the container runtime packages': no network")

    monkeypatch.setattr(realnode, "run_node_role", role_fails)
    fresh = LocalCell(cell.state_dir)
    with pytest.raises(CellError, match="no network"):
        realnode.add(fresh, Console(file=io.StringIO()))
    assert claim.Claim.load() is None
    assert "real_node" not in json.loads((cell.state_dir / "cell.json").read_text())
    assert not (cell.state_dir / "realnode").exists()

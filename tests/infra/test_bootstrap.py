"""The bootstrap resource's own logic: diff, drain-before-remove, create/update, and ansible-runner."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import rpc

from infra.bootstrap import (
    DRAIN_PLAYBOOK,
    KUBECONFIG_FILE,
    SITE_PLAYBOOK,
    BootstrapError,
    BootstrapProvider,
    check_inputs,
    departed_workers,
    diff_bootstrap,
    run_playbook,
    tree_digest,
)


def inventory(workers: Mapping[str, str], cp_ip: str = "10.10.0.10", public: str = "198.51.100.10") -> dict[str, Any]:
    return {"all": {
        "vars": {"cell_cluster_name": "lab", "cell_kubernetes_version": "1.34", "cell_students": []},
        "children": {
            "control_plane": {"hosts": {"lab-control-plane": {"ansible_host": public, "node_ip": cp_ip}}},
            "workers": {"hosts": {name: {"ansible_host": ip, "node_ip": ip} for name, ip in workers.items()}},
        },
    }}


VERSIONS = {"kubernetes": "1.34", "playbooks": "p1", "cell": "c1"}
TWO_WORKERS = {"lab-worker-1": "10.10.0.11", "lab-worker-2": "10.10.0.12"}


def props(workers: Mapping[str, str] = TWO_WORKERS, **overrides: Any) -> dict[str, Any]:
    return {"cluster": "lab", "inventory": inventory(workers), "versions": dict(VERSIONS), **overrides}


class FakeRunner:
    """Records each playbook run; `site.yml` exports kubeconfigs like the real playbooks do."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.runs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.fail_on = fail_on

    def __call__(self, playbook: str, inventory: Mapping[str, Any], extravars: Mapping[str, Any]) -> None:
        self.runs.append((playbook, copy.deepcopy(dict(inventory)), dict(extravars)))
        if playbook == self.fail_on:
            raise BootstrapError(f"{playbook} failed on lab-control-plane at task 'x': boom")
        if playbook == SITE_PLAYBOOK:
            artifacts = Path(extravars["cell_artifacts_dir"])
            (artifacts / KUBECONFIG_FILE).write_text("apiVersion: v1\nkind: Config\n")
            (artifacts / "students").mkdir()
            (artifacts / "students" / "alice.kubeconfig").write_text("alice's\n")

    @property
    def playbooks(self) -> list[str]:
        return [run[0] for run in self.runs]


# --- diff ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("news", "changes", "replaces"), [
    (props(), False, []),
    (props({**TWO_WORKERS, "lab-worker-3": "10.10.0.13"}), True, []),             # a worker more
    (props({"lab-worker-1": "10.10.0.11"}), True, []),                            # a worker less
    (props(versions={**VERSIONS, "kubernetes": "1.35"}), True, []),               # a new version
    (props(versions={**VERSIONS, "playbooks": "p2"}), True, []),                  # changed playbooks
    (props(inventory=inventory(TWO_WORKERS, cp_ip="10.10.0.99")), True, ["inventory"]),  # new control plane
    (props(cluster="lab-2"), True, ["cluster"]),
], ids=["same", "worker-added", "worker-removed", "kubernetes", "playbooks", "control-plane", "renamed"])
def test_diff_updates_on_change_and_replaces_for_a_new_control_plane(
        news: dict[str, Any], changes: bool, replaces: list[str]) -> None:
    result = diff_bootstrap(props(), news)
    assert result.changes is changes
    assert result.replaces == replaces
    assert result.delete_before_replace is False


def test_a_preview_with_an_unknown_inventory_is_an_update() -> None:
    unknown = props(inventory=rpc.UNKNOWN)
    result = diff_bootstrap(props(), unknown)
    assert result.changes is True and result.replaces == []
    partly = props()
    partly["inventory"]["all"]["children"]["workers"]["hosts"]["lab-worker-3"] = {"ansible_host": rpc.UNKNOWN}
    assert diff_bootstrap(props(), partly).replaces == []
    assert check_inputs(unknown) == []


def test_a_new_floating_ip_alone_is_an_update_not_a_new_cluster() -> None:
    moved = props(inventory=inventory(TWO_WORKERS, public="198.51.100.99"))
    result = diff_bootstrap(props(), moved)
    assert result.changes is True and result.replaces == []


@pytest.mark.parametrize(("old", "new", "departed"), [
    (TWO_WORKERS, TWO_WORKERS, []),
    (TWO_WORKERS, {"lab-worker-1": "10.10.0.11"}, ["lab-worker-2"]),
    (TWO_WORKERS, {}, ["lab-worker-1", "lab-worker-2"]),
    (TWO_WORKERS, {**TWO_WORKERS, "lab-worker-2": "10.10.0.20"}, ["lab-worker-2"]),  # replaced VM
    ({"lab-worker-1": "10.10.0.11"}, TWO_WORKERS, []),
])
def test_departed_workers(old: dict[str, str], new: dict[str, str], departed: list[str]) -> None:
    assert departed_workers(inventory(old), inventory(new)) == departed


# --- create / update -----------------------------------------------------------------------------

def test_create_runs_site_and_returns_the_kubeconfigs() -> None:
    runner = FakeRunner()
    result = BootstrapProvider(runner).create(props())
    assert runner.playbooks == [SITE_PLAYBOOK]
    _, run_inventory, extravars = runner.runs[0]
    assert run_inventory == inventory(TWO_WORKERS)
    assert Path(extravars["cell_source_dir"], "pyproject.toml").is_file()
    assert not Path(extravars["cell_artifacts_dir"]).exists()  # the secret does not stay on disk
    assert result.id == "lab"
    assert result.outs is not None
    assert result.outs["kubeconfig"] == "apiVersion: v1\nkind: Config\n"
    assert result.outs["studentKubeconfigs"] == {"alice": "alice's\n"}
    assert result.outs["inventory"] == inventory(TWO_WORKERS)


def test_removing_a_worker_drains_it_before_the_main_run() -> None:
    runner = FakeRunner()
    old, new = props(), props({"lab-worker-1": "10.10.0.11"})
    result = BootstrapProvider(runner).update("lab", old, new)
    assert runner.playbooks == [DRAIN_PLAYBOOK, SITE_PLAYBOOK]
    drain_run, site_run = runner.runs
    assert drain_run[1] == old["inventory"]          # the control plane as the old inventory knows it
    assert drain_run[2] == {"drain_nodes": ["lab-worker-2"]}
    assert site_run[1] == new["inventory"]
    assert result.outs is not None and result.outs["kubeconfig"].startswith("apiVersion")


def test_an_update_without_departures_only_converges() -> None:
    runner = FakeRunner()
    BootstrapProvider(runner).update("lab", props(), props(versions={**VERSIONS, "cell": "c2"}))
    assert runner.playbooks == [SITE_PLAYBOOK]


def test_a_failed_drain_stops_the_update() -> None:
    runner = FakeRunner(fail_on=DRAIN_PLAYBOOK)
    with pytest.raises(BootstrapError, match=r"drain\.yml failed"):
        BootstrapProvider(runner).update("lab", props(), props({}))
    assert runner.playbooks == [DRAIN_PLAYBOOK]


def test_a_run_that_exports_no_kubeconfig_fails() -> None:
    def silent(_playbook: str, _inventory: Mapping[str, Any], _extravars: Mapping[str, Any]) -> None:
        return None

    with pytest.raises(BootstrapError, match="did not export the kubeconfig of cluster lab"):
        BootstrapProvider(silent).create(props())


def test_check_rejects_inputs_that_are_not_a_cluster() -> None:
    assert check_inputs(props()) == []
    no_control_plane = props()
    no_control_plane["inventory"]["all"]["children"]["control_plane"]["hosts"] = {}
    failures = check_inputs({**no_control_plane, "cluster": "", "versions": "1.34"})
    assert {(f.property, f.reason) for f in failures} == {
        ("cluster", "must name the cluster"),
        ("inventory", "group control_plane must hold exactly one host"),
        ("versions", "must be a mapping of component -> version"),
    }


def test_delete_runs_nothing() -> None:
    runner = FakeRunner()
    BootstrapProvider(runner).delete("lab", props())
    assert runner.runs == []


def test_tree_digest_follows_content_and_ignores_caches(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "main.yml").write_text("a: 1\n")
    before = tree_digest(tmp_path, ["roles"])
    (tmp_path / "roles" / "__pycache__").mkdir()
    (tmp_path / "roles" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert tree_digest(tmp_path, ["roles"]) == before
    (tmp_path / "roles" / "main.yml").write_text("a: 2\n")
    assert tree_digest(tmp_path, ["roles"]) != before


# --- the real ansible-runner, against this machine, with a play that changes nothing -------------

def _local_inventory() -> dict[str, Any]:
    return {"all": {
        "vars": {"cell_cluster_name": "runner-test"},
        "children": {"control_plane": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
            # Run as the current user: the drain play would otherwise ask for become.
            "ansible_become": False}}}},
    }}


@pytest.mark.timeout(120)
def test_run_playbook_runs_ansible_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELL_BOOTSTRAP_LOG_DIR", str(tmp_path))
    run_playbook(DRAIN_PLAYBOOK, _local_inventory(), {"drain_nodes": []})
    assert list((tmp_path / "runner-test" / "artifacts").iterdir())  # the run's logs are kept


@pytest.mark.timeout(120)
def test_a_failed_play_names_host_and_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELL_BOOTSTRAP_LOG_DIR", str(tmp_path))
    missing_kubeconfig = {"drain_nodes": ["lab-worker-9"], "cell_admin_kubeconfig": str(tmp_path / "none.conf")}
    with pytest.raises(BootstrapError) as raised:
        run_playbook(DRAIN_PLAYBOOK, _local_inventory(), missing_kubeconfig)
    message = str(raised.value)
    assert message.startswith("drain.yml failed on localhost at task 'Probe which of the nodes still exist'")
    assert "no such file" in message.lower()  # kubectl's (or the missing kubectl's) own words
    assert str(tmp_path / "runner-test") in message
    assert "\n" not in message

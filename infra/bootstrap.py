"""The Ansible bootstrap as a Pulumi resource: runs `playbooks/` through ansible-runner.

`ClusterBootstrap` is a dynamic resource whose inputs are the cluster's inventory and the versions
it was built with (Kubernetes, a digest of the playbooks, a digest of Cell's sources). Pulumi calls
the provider when either changes:

- create: run `site.yml` (prepare nodes, kubeadm init/join, CNI, Cell's extensions, students) and
  return the admin kubeconfig and the students' kubeconfigs (secret outputs);
- diff: a new control plane is a new cluster (replace); anything else re-runs the playbooks (update);
- update: workers that left the inventory (or came back at another address) are drained and their
  Node objects deleted first (`drain.yml`, against the old inventory, while the VMs still exist —
  Pulumi deletes the removed instances after this update), then `site.yml` runs again.

The decisions (`diff_bootstrap`, `departed_workers`) are plain functions; the provider takes the
playbook runner as a parameter so its create/diff/update logic is tested without Ansible.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult
from pulumi.runtime import rpc

from playbooks import PLAYBOOK_DIR, runner

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The sources the control plane installs (playbooks/roles/cell_addons copies them).
CELL_SOURCES = ("pyproject.toml", "README.md", "cell", "scheduler_ext", "playbooks", "cluster")

CONTROL_PLANE_GROUP = "control_plane"
WORKERS_GROUP = "workers"
SITE_PLAYBOOK = "site.yml"
DRAIN_PLAYBOOK = "drain.yml"
KUBECONFIG_FILE = "admin.kubeconfig"


class BootstrapError(RuntimeError):
    """A playbook failed; the message names the playbook, host, task and Ansible's own message."""


class PlaybookRunner(Protocol):
    """Runs one playbook of `playbooks/` against an inventory; raises BootstrapError on failure."""

    def __call__(self, playbook: str, inventory: Mapping[str, Any], extravars: Mapping[str, Any], /) -> None: ...


# --- pure decisions -------------------------------------------------------------------------------


def group_hosts(inventory: Mapping[str, Any], group: str) -> dict[str, Mapping[str, Any]]:
    """Hosts (name -> host vars) of one group of a YAML-style inventory (`all.children.<group>.hosts`)."""
    children = (inventory.get("all") or {}).get("children") or {}
    hosts = (children.get(group) or {}).get("hosts") or {}
    return {name: (host_vars or {}) for name, host_vars in hosts.items()}


def control_plane_host(inventory: Mapping[str, Any]) -> str | None:
    hosts = group_hosts(inventory, CONTROL_PLANE_GROUP)
    return next(iter(sorted(hosts)), None)


def departed_workers(old_inventory: Mapping[str, Any], new_inventory: Mapping[str, Any]) -> list[str]:
    """Workers to drain before the main run: gone from the inventory, or back at another address
    (a replaced VM rejoins under the same node name, so its stale Node must go first)."""
    old = group_hosts(old_inventory, WORKERS_GROUP)
    new = group_hosts(new_inventory, WORKERS_GROUP)
    return sorted(
        name for name, host_vars in old.items()
        if name not in new or new[name].get("ansible_host") != host_vars.get("ansible_host")
    )


def is_unknown(value: Any) -> bool:
    """Whether a preview has not computed `value` (or part of it) yet."""
    if isinstance(value, Mapping):
        return any(is_unknown(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(is_unknown(item) for item in value)
    return value == rpc.UNKNOWN


def diff_bootstrap(olds: Mapping[str, Any], news: Mapping[str, Any]) -> DiffResult:
    """Replace when the cluster or its control plane is new; update when inventory or versions changed.
    During a preview an inventory not yet known (a VM still to be created) is an update, not a replace."""
    new_inventory = news.get("inventory")
    replaces = [
        prop for prop, changed in (
            ("cluster", olds.get("cluster") != news.get("cluster")),
            ("inventory", not is_unknown(new_inventory) and _control_plane_identity(olds.get("inventory")) !=
             _control_plane_identity(new_inventory)),
        ) if changed
    ]
    changed = [prop for prop in ("cluster", "inventory", "versions") if olds.get(prop) != news.get(prop)]
    return DiffResult(changes=bool(changed), replaces=replaces, stables=["cluster"] if not replaces else [],
                      delete_before_replace=False)


def check_inputs(news: Mapping[str, Any]) -> list[CheckFailure]:
    failures: list[CheckFailure] = []
    if not isinstance(news.get("cluster"), str) or not news.get("cluster"):
        failures.append(CheckFailure("cluster", "must name the cluster"))
    inventory = news.get("inventory")
    if is_unknown(inventory):
        pass  # a preview: checked again once the VMs exist
    elif not isinstance(inventory, Mapping):
        failures.append(CheckFailure("inventory", "must be an inventory mapping (all.children...)"))
    elif len(group_hosts(inventory, CONTROL_PLANE_GROUP)) != 1:
        failures.append(CheckFailure("inventory", f"group {CONTROL_PLANE_GROUP} must hold exactly one host"))
    if not isinstance(news.get("versions"), Mapping):
        failures.append(CheckFailure("versions", "must be a mapping of component -> version"))
    return failures


def tree_digest(root: Path, entries: Iterable[str]) -> str:
    """A stable digest of files under `root` (paths and contents, caches skipped): re-run on change."""
    digest = hashlib.sha256()
    for entry in entries:
        base = root / entry
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _control_plane_identity(inventory: Any) -> tuple[str | None, Any]:
    if not isinstance(inventory, Mapping):
        return (None, None)
    name = control_plane_host(inventory)
    hosts = group_hosts(inventory, CONTROL_PLANE_GROUP)
    return (name, hosts[name].get("node_ip") if name else None)


# --- the Ansible side -----------------------------------------------------------------------------


def bootstrap_log_dir(cluster: str) -> Path:
    base = Path(os.environ.get("CELL_BOOTSTRAP_LOG_DIR", Path.home() / ".cache" / "cell" / "bootstrap"))
    return base / cluster


def run_playbook(playbook: str, inventory: Mapping[str, Any], extravars: Mapping[str, Any]) -> None:
    """Run `playbooks/<playbook>` with ansible-runner; keep the artifacts (logs) per cluster."""
    cluster = str((inventory.get("all") or {}).get("vars", {}).get("cell_cluster_name", "cluster"))
    private_data_dir = bootstrap_log_dir(cluster)
    # New VMs have unknown host keys; the control plane's floating IP is the only way in.
    result = runner.run(playbook, inventory, extravars, private_data_dir, {"ANSIBLE_HOST_KEY_CHECKING": "False"})
    if not runner.succeeded(result):
        raise BootstrapError(f"{playbook} failed {runner.failure(result)} (logs: {private_data_dir}/artifacts)")


class BootstrapProvider(ResourceProvider):
    """create/diff/update of a cluster's bootstrap; `runner` is injectable for tests."""

    def __init__(self, runner: PlaybookRunner | None = None) -> None:
        super().__init__()
        self._runner = runner

    def _run(self, playbook: str, inventory: Mapping[str, Any], extravars: Mapping[str, Any]) -> None:
        (self._runner or run_playbook)(playbook, inventory, extravars)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        return CheckResult(news, check_inputs(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_bootstrap(olds, news)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=str(props["cluster"]), outs=self._converge(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        departed = departed_workers(olds["inventory"], news["inventory"])
        if departed:
            # Against the old inventory: the control plane drains nodes the new one no longer lists.
            self._run(DRAIN_PLAYBOOK, olds["inventory"], {"drain_nodes": departed})
        return UpdateResult(outs=self._converge(news))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Nothing to undo here: the VMs the playbooks configured are deleted by their own resources.
        return None

    def _converge(self, props: Mapping[str, Any]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="cell-kubeconfig-") as artifacts:
            self._run(SITE_PLAYBOOK, props["inventory"], {
                "cell_artifacts_dir": artifacts,
                "cell_source_dir": str(PROJECT_ROOT),
            })
            kubeconfig_path = Path(artifacts) / KUBECONFIG_FILE
            if not kubeconfig_path.is_file():
                raise BootstrapError(f"{SITE_PLAYBOOK} did not export the kubeconfig of cluster {props['cluster']}")
            kubeconfig = kubeconfig_path.read_text()
            students = {
                path.name.removesuffix(".kubeconfig"): path.read_text()
                for path in sorted((Path(artifacts) / "students").glob("*.kubeconfig"))
            }
        return {**props, "kubeconfig": kubeconfig, "studentKubeconfigs": students}


class ClusterBootstrap(pulumi.dynamic.Resource, module="cell", name="ClusterBootstrap"):
    """Ansible's run over one cluster; `kubeconfig` and `studentKubeconfigs` are secret outputs."""

    kubeconfig: pulumi.Output[str]
    # Dynamic resources name their attributes after the property keys, as given.
    studentKubeconfigs: pulumi.Output[dict[str, str]]
    inventory: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        name: str,
        *,
        cluster: str,
        inventory: pulumi.Input[Mapping[str, Any]],
        versions: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
        provider: BootstrapProvider | None = None,
    ) -> None:
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig", "studentKubeconfigs"])
        super().__init__(
            provider or BootstrapProvider(),
            name,
            {"cluster": cluster, "inventory": inventory, "versions": dict(versions),
             "kubeconfig": None, "studentKubeconfigs": None},
            pulumi.ResourceOptions.merge(opts, secret_opts),
        )


def versions_of(kubernetes_version: str) -> dict[str, str]:
    """What a bootstrap was built with; a change in any of them re-runs the playbooks."""
    return {
        "kubernetes": kubernetes_version,
        "playbooks": tree_digest(PLAYBOOK_DIR, ["."]),
        "cell": tree_digest(PROJECT_ROOT, [entry for entry in CELL_SOURCES if (PROJECT_ROOT / entry).exists()]),
    }

"""The playbooks: syntax, ansible-lint (production profile, offline), the layering conventions, and
the templates rendered by Ansible's own templating with the role defaults.

Nothing here touches this machine's system: the node role runs for real in a later, marked test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from infra.cluster import build_inventory
from tests.infra.pulumi_harness import stack_config

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
ROLES = PLAYBOOKS / "roles"
BIN = Path(sys.executable).parent
LAYERS = ["cell", "container_runtime", "node", "control_plane", "kubeadm_join", "cni", "cell_addons", "students",
          "drain"]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def _cloud_inventory(tmp_path: Path) -> Path:
    """The inventory the Pulumi program writes, for a cluster of two workers."""
    stack = stack_config(clusters=[{"name": "lab", "workers": 2, "students": ["alice"]}],
                         sshPrivateKeyFile="~/.ssh/id_ed25519")
    inventory = build_inventory(
        stack.clusters[0], stack,
        {"public_address": "198.51.100.10", "node_ip": "10.10.0.10", "zone": "az-1"},
        {"lab-worker-1": {"node_ip": "10.10.0.11", "zone": "az-1"},
         "lab-worker-2": {"node_ip": "10.10.0.12", "zone": "az-2"}},
    )
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


PLAYBOOK_FILES = ["site.yml", "node.yml", "drain.yml"]


@pytest.mark.parametrize("inventory", ["cloud", "local"])
def test_syntax_check(inventory: str, tmp_path: Path) -> None:
    inventory_path = _cloud_inventory(tmp_path) if inventory == "cloud" else PLAYBOOKS / "inventory" / "local.yml"
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory_path), *PLAYBOOK_FILES],
        cwd=PLAYBOOKS, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(PLAYBOOK_FILES) == sorted(p.name for p in PLAYBOOKS.glob("*.yml"))  # none left unchecked


def test_syntax_check_catches_a_broken_playbook(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("- hosts: all\n  tasks:\n    - ansible.builtin.no_such_module: {}\n")
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(broken)],
        cwd=PLAYBOOKS, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0


def test_the_cloud_inventory_groups_hosts_as_the_playbooks_expect(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(_cloud_inventory(tmp_path)), "--list"],
        cwd=PLAYBOOKS, env=_env(), capture_output=True, text=True, timeout=60, check=True)
    listed = yaml.safe_load(result.stdout)
    assert listed["control_plane"]["hosts"] == ["lab-control-plane"]
    assert sorted(listed["workers"]["hosts"]) == ["lab-worker-1", "lab-worker-2"]
    host = listed["_meta"]["hostvars"]["lab-worker-2"]
    assert host["node_zone"] == "az-2" and host["ansible_host"] == "10.10.0.12"
    key = Path("~/.ssh/id_ed25519").expanduser()  # expanded once, in infra/config.py
    assert f"-i {key} cell@198.51.100.10" in host["ansible_ssh_common_args"]


@pytest.mark.timeout(300)
def test_ansible_lint_production_profile_offline() -> None:
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=PLAYBOOKS, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stderr + result.stdout


# --- layering conventions (kubespray's habits) -----------------------------------------------------

def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_roles_are_the_layers_and_depend_on_the_shared_defaults() -> None:
    assert sorted(p.name for p in ROLES.iterdir()) == sorted(LAYERS)
    for role in LAYERS[1:]:
        assert _load(ROLES / role / "meta" / "main.yml")["dependencies"] == [{"role": "cell"}], role
        assert (ROLES / role / "defaults" / "main.yml").is_file(), f"{role}: user settings belong in defaults/"


@pytest.mark.parametrize("role", [r for r in LAYERS if (ROLES / r / "tasks" / "main.yml").is_file()])
def test_tasks_main_is_an_index_of_tagged_imports(role: str) -> None:
    for task in _load(ROLES / role / "tasks" / "main.yml"):
        modules = set(task) - {"name", "tags", "vars", "when", "loop", "loop_control", "register", "changed_when",
                               "delegate_to", "become", "failed_when"}
        if modules & {"ansible.builtin.import_tasks", "ansible.builtin.include_tasks"}:
            assert task.get("tags"), f"{role}: {task['name']} has no tags"
        else:
            # Only loading OS facts, validating settings, or a small self-contained role (drain) inline.
            assert modules <= {"ansible.builtin.include_vars", "ansible.builtin.assert", "ansible.builtin.command"}, (
                role, task["name"])
            assert task.get("tags"), f"{role}: {task['name']} has no tags"


@pytest.mark.parametrize("role", [r for r in LAYERS if (ROLES / r / "handlers" / "main.yml").is_file()])
def test_handlers_restart_then_wait(role: str) -> None:
    handlers = {handler["name"]: handler for handler in _load(ROLES / role / "handlers" / "main.yml")}
    restarts = [name for name in handlers if name.startswith("Restart")]
    assert restarts, role
    for name in restarts:
        waits = handlers[name].get("notify")
        assert waits and waits.startswith("Wait for") and waits in handlers, f"{role}: {name} must notify a wait"
        wait = handlers[waits]
        # Either polls until ready, or is wait_for (which polls itself) with a timeout.
        assert (wait.get("until") and wait.get("retries")) or wait.get("ansible.builtin.wait_for", {}).get(
            "timeout"), f"{role}: {waits} must wait until ready"


def test_os_specific_names_live_in_vars() -> None:
    for role in ("container_runtime", "node"):
        assert _load(ROLES / role / "vars" / "Debian.yml"), role


def test_local_inventory_selects_the_local_sources() -> None:
    local = _load(PLAYBOOKS / "inventory" / "local.yml")["all"]
    assert local["hosts"]["localhost"]["ansible_connection"] == "local"
    assert {key: local["vars"][key] for key in ("cell_cgroup_driver", "cell_service_manager", "node_binaries_source",
                                                "node_cni_plugins_source")} == {
        "cell_cgroup_driver": "cgroupfs", "cell_service_manager": "none", "node_binaries_source": "local",
        "node_cni_plugins_source": "distribution"}
    node_defaults = _load(ROLES / "node" / "defaults" / "main.yml")
    assert node_defaults["node_binaries_source"] == "pkgs.k8s.io"       # the cloud's default
    assert node_defaults["node_local_binaries"] == ["kubelet", "kube-proxy"]
    assert "/.cache/cell/bin/" in node_defaults["node_local_bin_dir"]


def test_manifests_the_roles_fill_in_carry_their_placeholders() -> None:
    scheduler = (REPO / "cluster" / "scheduler" / "kube-scheduler-config.yaml").read_text()
    assert "${KUBECONFIG}" in scheduler and "${EXTENDER_URL}" in scheduler
    webhook = (REPO / "cluster" / "webhook" / "validating-webhook.yaml").read_text()
    assert "${CA_BUNDLE}" in webhook and "${WEBHOOK_URL}" in webhook


# --- templates, rendered as the template module would -----------------------------------------------

def _trusted(value: Any) -> Any:
    """Role defaults as Ansible's variable manager sees them: their templates may be rendered."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    return value


def _variables(*roles: str, **host_vars: Any) -> dict[str, Any]:
    variables: dict[str, Any] = {"ansible_managed": "Ansible managed", "playbook_dir": str(PLAYBOOKS),
                                 "inventory_hostname": "lab-control-plane"}
    for role in ("cell", *roles):
        variables.update(_trusted(_load(ROLES / role / "defaults" / "main.yml")))
    variables.update(host_vars)
    return variables


def _render(role: str, template: str, variables: dict[str, Any]) -> str:
    source = (ROLES / role / "templates" / template).read_text()
    rendered = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(source))
    return str(rendered)


@pytest.mark.parametrize(("driver", "systemd_cgroup"), [("systemd", True), ("cgroupfs", False)])
def test_containerd_config_follows_the_cgroup_driver(driver: str, systemd_cgroup: bool) -> None:
    config = tomllib.loads(_render("container_runtime", "config.toml.j2",
                                   _variables("container_runtime", cell_cgroup_driver=driver)))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert config["version"] == 2
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is systemd_cgroup
    assert cri["cni"] == {"bin_dir": "/opt/cni/bin", "conf_dir": "/etc/cni/net.d"}
    assert cri["sandbox_image"].startswith("registry.k8s.io/pause:")


def test_kubeadm_config_wires_the_scheduler_to_its_config_and_names_the_public_address() -> None:
    variables = _variables("control_plane", node_ip="10.10.0.10", node_zone="az-1",
                           control_plane_address="10.10.0.10", control_plane_public_address="198.51.100.10",
                           control_plane_kubeadm_version={"stdout": "v1.34.2"}, cell_cluster_name="lab")
    init, cluster, kubelet = yaml.safe_load_all(_render("control_plane", "kubeadm-config.yaml.j2", variables))
    assert init["nodeRegistration"]["name"] == "lab-control-plane"
    assert {"name": "node-ip", "value": "10.10.0.10"} in init["nodeRegistration"]["kubeletExtraArgs"]
    assert {"name": "node-labels", "value": "topology.kubernetes.io/zone=az-1"} in (
        init["nodeRegistration"]["kubeletExtraArgs"])
    assert cluster["kubernetesVersion"] == "v1.34.2"
    assert cluster["controlPlaneEndpoint"] == "10.10.0.10:6443"
    assert cluster["apiServer"]["certSANs"] == ["198.51.100.10", "10.10.0.10", "127.0.0.1"]
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"}
    (config_arg,) = cluster["scheduler"]["extraArgs"]
    (volume,) = cluster["scheduler"]["extraVolumes"]
    assert config_arg == {"name": "config", "value": "/etc/kubernetes/cell/scheduler-config.yaml"}
    assert volume["hostPath"] == volume["mountPath"] == config_arg["value"]
    assert kubelet == {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                       "cgroupDriver": "systemd"}


def test_join_configuration_comes_from_the_printed_join_command() -> None:
    printed = ("kubeadm join 10.10.0.10:6443 --token abcdef.0123456789abcdef "
               "--discovery-token-ca-cert-hash sha256:" + "ab" * 32 + " \n")
    variables = _variables("kubeadm_join", node_ip="10.10.0.12", node_zone="az-2",
                           inventory_hostname="lab-worker-2",
                           groups={"control_plane": ["lab-control-plane"]},
                           kubeadm_join_words=printed.split())
    join = yaml.safe_load(_render("kubeadm_join", "kubeadm-join.yaml.j2", variables))
    assert join["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "10.10.0.10:6443", "token": "abcdef.0123456789abcdef",
        "caCertHashes": ["sha256:" + "ab" * 32]}
    assert join["nodeRegistration"]["name"] == "lab-worker-2"
    assert {"name": "node-labels", "value": "topology.kubernetes.io/zone=az-2"} in (
        join["nodeRegistration"]["kubeletExtraArgs"])


def test_students_are_onboarded_with_cells_own_manifests() -> None:
    """The students role renders with the installed Cell package's `cell students manifests`; here,
    with the project's."""
    tasks = (ROLES / "students" / "tasks" / "namespaces.yml").read_text()
    assert "'/bin/cell', 'students', 'manifests'" in tasks
    result = subprocess.run([str(Path(sys.executable).with_name("cell")), "students", "manifests", "alice", "bob"],
                            capture_output=True, text=True, timeout=60, check=True, cwd=REPO)
    listed = json.loads(result.stdout)
    assert listed["kind"] == "List"
    documents = listed["items"]
    assert [(d["kind"], d["metadata"].get("namespace", d["metadata"]["name"])) for d in documents] == [
        ("Namespace", "alice"), ("BandQuota", "alice"), ("RoleBinding", "alice"),
        ("Namespace", "bob"), ("BandQuota", "bob"), ("RoleBinding", "bob")]
    namespace, quota, binding = documents[:3]
    # SPEC §9: Pod Security "restricted" on the OpenStack students' namespaces too.
    assert namespace["metadata"]["labels"] == {
        "cell.distos.dev/managed": "true", "cell.distos.dev/student": "alice",
        **{f"pod-security.kubernetes.io/{mode}{suffix}": value for mode in ("enforce", "warn", "audit")
           for suffix, value in (("", "restricted"), ("-version", "v1.34"))}}
    # SPEC Q8: the course's default quota; best-effort unlimited by omission.
    assert quota["spec"]["bands"] == {"production": {"cpu": "2", "memory": "2Gi"},
                                      "batch": {"cpu": "4", "memory": "4Gi"}}
    assert binding["roleRef"]["name"] == "cell:student"  # cluster/base/rbac-students.yaml
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    assert _load(ROLES / "students" / "defaults" / "main.yml")["students_org"] == "cell:students"


def test_extension_units_run_the_same_commands_as_the_local_cell() -> None:
    variables = _variables("cell_addons")
    units = {}
    for component in Templar(loader=DataLoader(), variables=variables).template(
            variables["cell_addons_components"]):
        units[component["name"]] = _render("cell_addons", "cell-extension.service.j2", {**variables, "item": component})
    exec_lines = {name: next(line for line in unit.splitlines() if line.startswith("ExecStart="))
                  for name, unit in units.items()}
    python = "ExecStart=/opt/cell/venv/bin/python -m scheduler_ext."
    kubeconfig = "--kubeconfig /etc/kubernetes/cell/{}.kubeconfig"  # each its own user (rbac-extensions.yaml)
    assert exec_lines == {
        "extender": f"{python}extender {kubeconfig.format('extender')} --host 127.0.0.1 --port 10262",
        "webhook": f"{python}webhook {kubeconfig.format('webhook')} --host 127.0.0.1 --port 10263 "
                   "--tls-cert /etc/kubernetes/cell/webhook-tls/tls.crt "
                   "--tls-key /etc/kubernetes/cell/webhook-tls/tls.key",
        "operator": f"{python}operator {kubeconfig.format('operator')} --health-port 10264",
    }
    assert all("User=cell-extensions" in unit for unit in units.values())


def test_each_extension_gets_a_kubeconfig_of_its_own_user_with_no_group() -> None:
    tasks = _load(ROLES / "cell_addons" / "tasks" / "credentials.yml")
    issue = next(t for t in tasks if t["name"] == "Issue a client certificate and kubeconfig for each extension")
    argv = issue["ansible.builtin.command"]["argv"]
    assert "--client-name=cell-{{ item.item.name }}" in argv
    assert not [arg for arg in argv if arg.startswith("--org")], "an extension must not join a group (admins)"
    rbac = list(yaml.safe_load_all((REPO / "cluster" / "base" / "rbac-extensions.yaml").read_text()))
    bound = {d["subjects"][0]["name"] for d in rbac if d["kind"] == "ClusterRoleBinding"}
    components = {c["name"] for c in _load(ROLES / "cell_addons" / "defaults" / "main.yml")["cell_addons_components"]}
    assert bound == {f"cell-{name}" for name in components}


@pytest.mark.parametrize(("version", "minor", "pin"), [
    ("1.34", "1.34", ""),
    ("1.34.2", "1.34", "=1.34.2-*"),
    ("v1.35.0", "1.35", "=1.35.0-*"),
])
def test_the_kubernetes_version_selects_repository_and_pin(version: str, minor: str, pin: str) -> None:
    variables = _variables("node", cell_kubernetes_version=version)
    templar = Templar(loader=DataLoader(), variables=variables)
    assert templar.template(trust_as_template("{{ node_kubernetes_minor }}")) == minor
    assert templar.template(trust_as_template("{{ node_package_version }}")) == pin
    packages = templar.template(trust_as_template(
        "{{ node_packages | map('regex_replace', '$', node_package_version) | list }}"))
    assert packages == [f"kubelet{pin}", f"kubeadm{pin}", f"kubectl{pin}"]


def test_the_exported_kubeconfig_names_the_public_address() -> None:
    """The control_plane role's export task, as written, rewrites admin.conf's server."""
    import base64

    tasks = _load(ROLES / "control_plane" / "tasks" / "kubeconfig.yml")
    (write,) = [task for task in tasks if "ansible.builtin.copy" in task]
    admin_conf = ("apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n"
                  "    server: https://10.10.0.10:6443\n  name: lab\nkind: Config\n")
    variables = _variables("control_plane", node_ip="10.10.0.10", control_plane_address="10.10.0.10",
                           control_plane_public_address="198.51.100.10",
                           control_plane_admin_kubeconfig={"content": base64.b64encode(admin_conf.encode()).decode()})
    rendered = Templar(loader=DataLoader(), variables=variables).template(
        trust_as_template(write["ansible.builtin.copy"]["content"]))
    assert rendered == admin_conf.replace("https://10.10.0.10:6443", "https://198.51.100.10:6443")
    assert write["no_log"] is True and write["delegate_to"] == "localhost"

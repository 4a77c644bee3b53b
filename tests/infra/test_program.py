"""The Pulumi program under mocks: what it declares, and the policies the cloud must enforce."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from typing import Any

import pulumi
import pytest

from infra import program
from infra.cluster import control_plane_name, worker_name
from tests.infra.pulumi_harness import (
    BASE_CONFIG,
    BOOTSTRAP,
    CLUSTER,
    EXTERNAL_NETWORK_ID,
    INSTANCE,
    PORT,
    SECURITY_GROUP,
    SECURITY_GROUP_RULE,
    SERVER_GROUP,
    CellMocks,
    RecordingMonitor,
    Run,
    is_secret,
    run_program,
    stack_config,
)


# Resources of one cluster with W workers and C allowed CIDRs (infra/cluster.py).
def expected_counts(workers: int, cidrs: int) -> Counter[str]:
    return Counter({
        "openstack:networking/network:Network": 1,
        "openstack:networking/subnet:Subnet": 1,
        "openstack:networking/router:Router": 1,
        "openstack:networking/routerInterface:RouterInterface": 1,
        SECURITY_GROUP: 2,
        # node-to-node, egress IPv4 and IPv6, then SSH and 6443 per allowed CIDR.
        SECURITY_GROUP_RULE: 3 + 2 * cidrs,
        "openstack:compute/keypair:Keypair": 1,
        SERVER_GROUP: 1,
        PORT: 1 + workers,
        INSTANCE: 1 + workers,
        "openstack:networking/floatingIp:FloatingIp": 1,
        "openstack:networking/floatingIpAssociate:FloatingIpAssociate": 1,
        BOOTSTRAP: 1,
    })


@pytest.mark.parametrize("clusters", [
    [{"name": "lab", "workers": 3}],
    [{"name": "lab-a", "workers": 1}, {"name": "lab-b", "workers": 2}, {"name": "lab-c", "workers": 5}],
], ids=["one-cluster", "three-clusters"])
def test_resource_counts_per_cluster(clusters: list[dict[str, Any]]) -> None:
    run = run_program(stack_config(clusters=clusters))
    cidrs = len(BASE_CONFIG["allowedCidrs"])

    total: Counter[str] = Counter()
    for cluster in clusters:
        children = Counter(r.type for r in run.monitor.registrations
                           if r.parent.endswith(f"{CLUSTER}::{cluster['name']}"))
        assert children == expected_counts(int(cluster["workers"]), cidrs), cluster["name"]
        total += children
    # Nothing is declared outside the clusters' components.
    assert Counter(r.type for r in run.mocks.resources) == total
    assert len([r for r in run.monitor.registrations if r.type == CLUSTER]) == len(clusters)


def test_children_are_parented_to_their_cluster() -> None:
    run = run_program(stack_config(clusters=[{"name": "lab-a", "workers": 1}, {"name": "lab-b", "workers": 1}]))
    for request in run.monitor.registrations:
        if request.type == CLUSTER:
            continue
        owner = "lab-a" if request.name.startswith("lab-a") else "lab-b"
        assert request.parent.endswith(f"{CLUSTER}::{owner}"), request.name


def _rules(run: Run, group_name: str) -> list[dict[str, Any]]:
    group = run.named(group_name)
    return [r.inputs for r in run.of_type(SECURITY_GROUP_RULE) if r.inputs["securityGroupId"] == group.id]


def test_security_group_rules_are_exactly_the_policy() -> None:
    run = run_program(stack_config())
    nodes, control_plane = run.named("lab-nodes-secgroup"), run.named("lab-control-plane-secgroup")
    assert nodes.inputs["deleteDefaultRules"] is True and control_plane.inputs["deleteDefaultRules"] is True

    def shape(rule: dict[str, object]) -> tuple[object, ...]:
        return (rule["direction"], rule["ethertype"], rule.get("protocol"), rule.get("portRangeMin"),
                rule.get("portRangeMax"), rule.get("remoteIpPrefix"), rule.get("remoteGroupId"))

    assert sorted(map(shape, _rules(run, "lab-nodes-secgroup")), key=str) == sorted([
        ("ingress", "IPv4", None, None, None, None, nodes.id),   # only the cluster's own nodes
        ("egress", "IPv4", None, None, None, "0.0.0.0/0", None),
        ("egress", "IPv6", None, None, None, "::/0", None),
    ], key=str)
    assert sorted(map(shape, _rules(run, "lab-control-plane-secgroup")), key=str) == sorted([
        ("ingress", "IPv4", "tcp", 22, 22, "203.0.113.0/24", None),
        ("ingress", "IPv4", "tcp", 6443, 6443, "203.0.113.0/24", None),
        ("ingress", "IPv6", "tcp", 22, 22, "2001:db8::/48", None),
        ("ingress", "IPv6", "tcp", 6443, 6443, "2001:db8::/48", None),
    ], key=str)


@pytest.mark.parametrize("allowed", [["203.0.113.0/24"], ["192.0.2.7/32", "198.51.100.0/24"], ["0.0.0.0/0"]])
def test_only_allowed_cidrs_reach_the_cluster(allowed: list[str]) -> None:
    run = run_program(stack_config(allowedCidrs=allowed))
    ingress_from_outside = [r.inputs for r in run.of_type(SECURITY_GROUP_RULE)
                            if r.inputs["direction"] == "ingress" and r.inputs.get("remoteIpPrefix")]
    assert {r["remoteIpPrefix"] for r in ingress_from_outside} == set(allowed)
    assert {(r["protocol"], r["portRangeMin"], r["portRangeMax"]) for r in ingress_from_outside} == {
        ("tcp", 22, 22), ("tcp", 6443, 6443)}
    internet = {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
    if not internet & {ipaddress.ip_network(c) for c in allowed}:
        assert all(ipaddress.ip_network(r["remoteIpPrefix"]) not in internet for r in ingress_from_outside)
    # Every ingress rule has a source: an allowed CIDR or the cluster's own group, never "anything".
    assert all(r.inputs.get("remoteIpPrefix") or r.inputs.get("remoteGroupId")
               for r in run.of_type(SECURITY_GROUP_RULE) if r.inputs["direction"] == "ingress")


def test_workers_are_not_exposed_and_node_traffic_stays_in_the_cluster() -> None:
    run = run_program(stack_config(clusters=[{"name": "lab-a", "workers": 2}, {"name": "lab-b", "workers": 1}]))
    for cluster in ("lab-a", "lab-b"):
        nodes, control_plane = run.named(f"{cluster}-nodes-secgroup"), run.named(f"{cluster}-control-plane-secgroup")
        assert run.named(f"{control_plane_name(cluster)}-port").inputs["securityGroupIds"] == [
            nodes.id, control_plane.id]
        for port in run.of_type(PORT):
            if port.name.startswith(f"{cluster}-worker-"):
                assert port.inputs["securityGroupIds"] == [nodes.id]
        (node_to_node,) = [r for r in _rules(run, f"{cluster}-nodes-secgroup") if r["direction"] == "ingress"]
        assert node_to_node["remoteGroupId"] == nodes.id
    # Only the control planes get floating IPs.
    associations = run.of_type("openstack:networking/floatingIpAssociate:FloatingIpAssociate")
    assert {a.inputs["portId"] for a in associations} == {
        run.named(f"{control_plane_name(c)}-port").id for c in ("lab-a", "lab-b")}


def test_workers_share_a_soft_anti_affinity_server_group() -> None:
    run = run_program(stack_config())
    (group,) = run.of_type(SERVER_GROUP)
    assert group.inputs["policies"] == "soft-anti-affinity"
    workers = [r for r in run.of_type(INSTANCE) if "-worker-" in r.name]
    assert len(workers) == 3
    assert all(w.inputs["schedulerHints"] == [{"group": group.id}] for w in workers)
    assert "schedulerHints" not in run.named(control_plane_name("lab")).inputs


def test_workers_spread_over_availability_zones() -> None:
    run = run_program(stack_config(clusters=[{"name": "lab", "workers": 5}], availabilityZones=["az-1", "az-2"]))
    zones = [run.named(worker_name("lab", i)).inputs["availabilityZone"] for i in range(1, 6)]
    assert zones == ["az-1", "az-2", "az-1", "az-2", "az-1"]
    without = run_program(stack_config())
    assert all("availabilityZone" not in r.inputs for r in without.of_type(INSTANCE))


def test_the_control_plane_is_protected_and_nothing_else() -> None:
    run = run_program(stack_config())
    protected = {r.name for r in run.monitor.registrations if r.protect}
    assert protected == {control_plane_name("lab")}
    unprotected = run_program(stack_config(protectControlPlane=False))
    assert not any(r.protect for r in unprotected.monitor.registrations)


def test_vms_boot_with_cloud_init_and_the_keypair() -> None:
    run = run_program(stack_config())
    keypair = run.named("lab-keypair")
    assert keypair.inputs["publicKey"] == BASE_CONFIG["sshPublicKey"]
    for vm in run.of_type(INSTANCE):
        assert vm.inputs["userData"].startswith("#cloud-config\n")
        assert f"hostname: {vm.name}" in vm.inputs["userData"]
        assert BASE_CONFIG["sshPublicKey"] in vm.inputs["userData"]
        assert vm.inputs["keyPair"] == keypair.state["name"]
        assert vm.inputs["imageName"] == "Debian 12"
    assert run.named(control_plane_name("lab")).inputs["flavorName"] == "m1.medium"
    assert run.named(worker_name("lab", 1)).inputs["flavorName"] == "m1.large"
    (router,) = run.of_type("openstack:networking/router:Router")
    assert router.inputs["externalNetworkId"] == EXTERNAL_NETWORK_ID
    assert run.mocks.calls[0].args == {"name": "public", "external": True}


def test_kubeconfigs_are_secret_outputs() -> None:
    run = run_program(stack_config())
    outputs = run.component_outputs("lab")
    assert is_secret(outputs["kubeconfig"]) and outputs["kubeconfig"]["value"] == "kubeconfig of lab"
    assert is_secret(outputs["studentKubeconfigs"])
    assert not is_secret(outputs["controlPlaneAddress"])
    # The bootstrap resource itself keeps them secret in the state, too.
    assert set(run.request("lab-bootstrap").additionalSecretOutputs) >= {"kubeconfig", "studentKubeconfigs"}


def test_the_bootstrap_gets_the_clusters_inventory() -> None:
    run = run_program(stack_config())
    (bootstrap,) = run.of_type(BOOTSTRAP)
    inventory = bootstrap.inputs["inventory"]
    floating_ip = run.named(f"{control_plane_name('lab')}-ip").state["address"]
    cp_ip = run.named(f"{control_plane_name('lab')}-port").state["allFixedIps"][0]

    cluster_vars = inventory["all"]["vars"]
    assert cluster_vars["cell_cluster_name"] == "lab"
    assert cluster_vars["cell_kubernetes_version"] == "1.34"
    assert cluster_vars["control_plane_public_address"] == floating_ip
    assert cluster_vars["control_plane_address"] == cp_ip
    assert cluster_vars["cell_students"] == ["alice", "bob"]
    assert inventory["all"]["children"]["control_plane"]["hosts"] == {
        control_plane_name("lab"): {"ansible_host": floating_ip, "node_ip": cp_ip, "node_zone": "nova"}}
    workers = inventory["all"]["children"]["workers"]
    assert workers["hosts"] == {
        worker_name("lab", i): {
            "ansible_host": run.named(f"{worker_name('lab', i)}-port").state["allFixedIps"][0],
            "node_ip": run.named(f"{worker_name('lab', i)}-port").state["allFixedIps"][0],
            "node_zone": "nova",
        } for i in (1, 2, 3)}
    # Workers have no public address: Ansible reaches them through the control plane.
    assert f"cell@{floating_ip}" in workers["vars"]["ansible_ssh_common_args"]
    assert set(bootstrap.inputs["versions"]) == {"kubernetes", "playbooks", "cell"}
    assert bootstrap.inputs["versions"]["kubernetes"] == "1.34"
    # The same inventory is the stack's output.
    assert run.values["lab"] == inventory


def test_without_bootstrap_there_is_no_ansible_and_no_kubeconfig() -> None:
    run = run_program(stack_config(bootstrap=False))
    assert not run.of_type(BOOTSTRAP)
    assert "kubeconfig" not in run.component_outputs("lab")


@pytest.mark.parametrize(("config", "message"), [
    ({"cell:clusters": '[{"name": "lab", "workers": 0}]'}, "cell:clusters[0].workers: must be an integer >= 1"),
    ({"cell:image": None}, "cell:image: missing (required)"),
    ({"cell:allowedCidrs": "203.0.113.0/24"}, "cell:allowedCidrs: must be a non-empty list"),
    ({"cell:flavour": "m1.large"}, "cell:flavour: unknown key"),
])
def test_invalid_config_stops_the_program_naming_the_key(config: dict[str, str | None], message: str) -> None:
    values: dict[str, str | None] = {f"cell:{key}": value if isinstance(value, str) else json.dumps(value)
              for key, value in BASE_CONFIG.items()}
    values.update(config)
    mocks = CellMocks()
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=RecordingMonitor(mocks))
    pulumi.runtime.set_all_config({key: str(value) for key, value in values.items() if value is not None})
    try:
        with pytest.raises(pulumi.RunError, match="invalid stack configuration") as raised:
            program.main()
    finally:
        pulumi.runtime.set_all_config({})
    assert message in str(raised.value)
    assert mocks.resources == []  # nothing half-declared

"""One Kubernetes cluster on OpenStack as a ComponentResource.

Per cluster: a network, subnet and router to the external network; two security groups (`nodes`:
traffic between the cluster's own nodes only; `control-plane`: SSH and the API server from
`cell:allowedCidrs` only); a keypair; a soft-anti-affinity server group for the workers (Borg
spreads a job's tasks over failure domains, Nova spreads the workers over hypervisors); the
control plane (protected against deletion) with a floating IP; the workers, round-robin over
`cell:availabilityZones`; and the Ansible bootstrap over the resulting inventory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_openstack as openstack
import yaml

from infra.bootstrap import ClusterBootstrap
from infra.config import ClusterSpec, StackConfig

SSH_USER = "cell"  # created by cloud-init on every image, so Ansible's user is the same everywhere
API_SERVER_PORT = 6443
SSH_PORT = 22


@dataclass(frozen=True)
class ClusterArgs:
    spec: ClusterSpec
    stack: StackConfig
    external_network_id: pulumi.Input[str]
    versions: dict[str, str]


def control_plane_name(cluster: str) -> str:
    return f"{cluster}-control-plane"


def worker_name(cluster: str, index: int) -> str:
    return f"{cluster}-worker-{index}"


def worker_zone(zones: tuple[str, ...], index: int) -> str | None:
    """Worker `index` (1-based) goes to zone index-1 modulo the zones: an even spread."""
    return zones[(index - 1) % len(zones)] if zones else None


def cloud_init(hostname: str, ssh_public_key: str) -> str:
    """User data: the host name Kubernetes will use, Ansible's user, Python for Ansible."""
    document = {
        "hostname": hostname,
        "manage_etc_hosts": True,
        "users": [
            "default",
            {
                "name": SSH_USER,
                "gecos": "Cell bootstrap (Ansible)",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [ssh_public_key],
            },
        ],
        "package_update": True,
        "packages": ["python3", "python3-apt"],
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


def build_inventory(
    spec: ClusterSpec,
    stack: StackConfig,
    control_plane: dict[str, str],
    workers: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """The Ansible inventory: the control plane by its floating IP, workers through it (ProxyCommand).

    `control_plane` holds `public_address`, `node_ip` and `zone`; `workers` maps host name to
    `node_ip` and `zone`.
    """
    key_option = f" -i {stack.ssh_private_key_file}" if stack.ssh_private_key_file else ""
    proxy = (
        '-o ProxyCommand="ssh -W %h:%p -q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'
        f'{key_option} {SSH_USER}@{control_plane["public_address"]}"'
    )
    cluster_vars: dict[str, Any] = {
        "ansible_user": SSH_USER,
        "ansible_python_interpreter": "/usr/bin/python3",
        "cell_cluster_name": spec.name,
        "cell_kubernetes_version": stack.kubernetes_version,
        "control_plane_public_address": control_plane["public_address"],
        "control_plane_address": control_plane["node_ip"],
        "cell_students": list(spec.students),
    }
    if stack.ssh_private_key_file:
        cluster_vars["ansible_ssh_private_key_file"] = stack.ssh_private_key_file
    return {
        "all": {
            "vars": cluster_vars,
            "children": {
                "control_plane": {
                    "hosts": {
                        control_plane_name(spec.name): {
                            "ansible_host": control_plane["public_address"],
                            "node_ip": control_plane["node_ip"],
                            "node_zone": control_plane["zone"],
                        },
                    },
                },
                "workers": {
                    "vars": {"ansible_ssh_common_args": proxy},
                    "hosts": {
                        name: {"ansible_host": host["node_ip"], "node_ip": host["node_ip"], "node_zone": host["zone"]}
                        for name, host in workers.items()
                    },
                },
            },
        },
    }


class Cluster(pulumi.ComponentResource):
    """Network, security, VMs and bootstrap of one cluster; children are parented to it."""

    control_plane_address: pulumi.Output[str]
    inventory: pulumi.Output[dict[str, Any]]
    kubeconfig: pulumi.Output[str] | None
    student_kubeconfigs: pulumi.Output[dict[str, str]] | None

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("cell:infra:Cluster", name, None, opts)
        spec, stack = args.spec, args.stack
        child = pulumi.ResourceOptions(parent=self)

        network = openstack.networking.Network(
            f"{name}-network", name=f"cell-{name}", admin_state_up=True, opts=child)
        subnet = openstack.networking.Subnet(
            f"{name}-subnet",
            name=f"cell-{name}",
            network_id=network.id,
            cidr=stack.node_cidr,
            ip_version=4,
            dns_nameservers=list(stack.dns_nameservers) or None,
            opts=child,
        )
        router = openstack.networking.Router(
            f"{name}-router", name=f"cell-{name}", external_network_id=args.external_network_id, opts=child)
        router_interface = openstack.networking.RouterInterface(
            f"{name}-router-interface", router_id=router.id, subnet_id=subnet.id, opts=child)

        nodes_group, control_plane_group = self._security_groups(name, stack, child)

        keypair = openstack.compute.Keypair(
            f"{name}-keypair", name=f"cell-{name}", public_key=stack.ssh_public_key, opts=child)
        # soft: Nova prefers distinct hypervisors but still boots a worker when it runs out of them.
        server_group = openstack.compute.ServerGroup(
            f"{name}-workers", name=f"cell-{name}-workers", policies="soft-anti-affinity", opts=child)

        # VMs boot only once the subnet routes out: cloud-init installs packages at first boot.
        boot_after = pulumi.ResourceOptions(parent=self, depends_on=[router_interface])

        def machine(host: str, role: str, flavor: str, groups: list[pulumi.Output[str]],
                    opts: pulumi.ResourceOptions, **placement: Any,
                    ) -> tuple[openstack.networking.Port, openstack.compute.Instance]:
            """A VM of the cluster: its port on the subnet carries its security groups."""
            port = openstack.networking.Port(
                f"{host}-port",
                name=host,
                network_id=network.id,
                fixed_ips=[openstack.networking.PortFixedIpArgs(subnet_id=subnet.id)],
                security_group_ids=groups,
                opts=child,
            )
            instance = openstack.compute.Instance(
                host,
                name=host,
                image_name=stack.image,
                flavor_name=flavor,
                key_pair=keypair.name,
                networks=[openstack.compute.InstanceNetworkArgs(port=port.id)],
                user_data=cloud_init(host, stack.ssh_public_key),
                metadata={"cell-cluster": name, "cell-role": role},
                opts=opts,
                **placement,
            )
            return port, instance

        cp_name = control_plane_name(name)
        cp_port, control_plane = machine(
            cp_name, "control-plane", stack.control_plane_flavor, [nodes_group.id, control_plane_group.id],
            pulumi.ResourceOptions.merge(boot_after, pulumi.ResourceOptions(protect=stack.protect_control_plane)))
        floating_ip = openstack.networking.FloatingIp(
            f"{cp_name}-ip", pool=stack.external_network, description=f"Cell {name} API server", opts=child)
        association = openstack.networking.FloatingIpAssociate(
            f"{cp_name}-ip-association", floating_ip=floating_ip.address, port_id=cp_port.id, opts=boot_after)

        worker_outputs: dict[str, pulumi.Output[dict[str, str]]] = {}
        for index in range(1, spec.workers + 1):
            host = worker_name(name, index)
            port, worker = machine(
                host, "worker", stack.flavor, [nodes_group.id], boot_after,
                availability_zone=worker_zone(stack.availability_zones, index),
                scheduler_hints=[openstack.compute.InstanceSchedulerHintArgs(group=server_group.id)])
            worker_outputs[host] = pulumi.Output.all(port.all_fixed_ips, worker.availability_zone).apply(
                lambda values: {"node_ip": values[0][0], "zone": values[1] or ""})

        control_plane_facts = pulumi.Output.all(
            floating_ip.address, cp_port.all_fixed_ips, control_plane.availability_zone,
        ).apply(lambda values: {"public_address": values[0], "node_ip": values[1][0], "zone": values[2] or ""})
        self.inventory = pulumi.Output.all(control_plane_facts, pulumi.Output.all(**worker_outputs)).apply(
            lambda values: build_inventory(spec, stack, values[0], values[1]))
        self.control_plane_address = floating_ip.address

        self.kubeconfig = None
        self.student_kubeconfigs = None
        outputs: dict[str, Any] = {"controlPlaneAddress": self.control_plane_address, "inventory": self.inventory}
        if stack.bootstrap:
            bootstrap = ClusterBootstrap(
                f"{name}-bootstrap",
                cluster=name,
                inventory=self.inventory,
                versions=args.versions,
                # Every VM must exist (and the control plane be reachable) before Ansible runs.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[control_plane, association]),
            )
            self.kubeconfig = pulumi.Output.secret(bootstrap.kubeconfig)
            self.student_kubeconfigs = pulumi.Output.secret(bootstrap.studentKubeconfigs)
            outputs["kubeconfig"] = self.kubeconfig
            outputs["studentKubeconfigs"] = self.student_kubeconfigs
        self.register_outputs(outputs)

    def _security_groups(
        self, name: str, stack: StackConfig, child: pulumi.ResourceOptions,
    ) -> tuple[openstack.networking.SecGroup, openstack.networking.SecGroup]:
        """`nodes`: any traffic between this cluster's nodes, egress anywhere; `control-plane`: SSH
        and 6443 from the allowed CIDRs. Neutron's default rules are deleted so these are all there is."""
        nodes = openstack.networking.SecGroup(
            f"{name}-nodes-secgroup", name=f"cell-{name}-nodes", delete_default_rules=True,
            description=f"Cell {name}: traffic between the cluster's nodes", opts=child)
        control_plane = openstack.networking.SecGroup(
            f"{name}-control-plane-secgroup", name=f"cell-{name}-control-plane", delete_default_rules=True,
            description=f"Cell {name}: SSH and the API server from the allowed CIDRs", opts=child)

        openstack.networking.SecGroupRule(
            f"{name}-nodes-from-nodes", direction="ingress", ethertype="IPv4",
            remote_group_id=nodes.id, security_group_id=nodes.id,
            description="node-to-node inside the cluster (kubelet, VXLAN, pods)", opts=child)
        # Nodes pull packages and images; only ingress is restricted.
        for ethertype, anywhere in (("IPv4", "0.0.0.0/0"), ("IPv6", "::/0")):
            openstack.networking.SecGroupRule(
                f"{name}-nodes-egress-{ethertype.lower()}", direction="egress", ethertype=ethertype,
                remote_ip_prefix=anywhere, security_group_id=nodes.id, opts=child)

        for cidr in stack.allowed_cidrs:
            ethertype = "IPv6" if ":" in cidr else "IPv4"
            slug = cidr.replace("/", "_").replace(":", "-")
            for service, port in (("ssh", SSH_PORT), ("apiserver", API_SERVER_PORT)):
                openstack.networking.SecGroupRule(
                    f"{name}-{service}-from-{slug}", direction="ingress", ethertype=ethertype, protocol="tcp",
                    port_range_min=port, port_range_max=port, remote_ip_prefix=cidr,
                    security_group_id=control_plane.id, description=f"{service} from {cidr}", opts=child)
        return nodes, control_plane

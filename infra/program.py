"""The Pulumi program: validate the stack configuration, then one `Cluster` per `cell:clusters` entry.

Stack outputs, per cluster NAME: `NAME-controlPlaneAddress` (the floating IP of the API server),
`NAME-inventory` (the Ansible inventory), and when `cell:bootstrap` is on (the default)
`NAME-kubeconfig` (the admin kubeconfig) and `NAME-studentKubeconfigs` (student -> kubeconfig), both
secret.
"""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack

from infra.bootstrap import versions_of
from infra.cluster import Cluster, ClusterArgs
from infra.config import ConfigError, StackConfig, from_pulumi


def build(stack: StackConfig) -> dict[str, Cluster]:
    """Declare every cluster of the stack and export its outputs."""
    external = openstack.networking.get_network_output(name=stack.external_network, external=True)
    versions = versions_of(stack.kubernetes_version)
    clusters: dict[str, Cluster] = {}
    for spec in stack.clusters:
        cluster = Cluster(spec.name, ClusterArgs(spec=spec, stack=stack, external_network_id=external.id,
                                                 versions=versions))
        pulumi.export(f"{spec.name}-controlPlaneAddress", cluster.control_plane_address)
        pulumi.export(f"{spec.name}-inventory", cluster.inventory)
        if cluster.kubeconfig is not None:
            pulumi.export(f"{spec.name}-kubeconfig", cluster.kubeconfig)
        if cluster.student_kubeconfigs is not None:
            pulumi.export(f"{spec.name}-studentKubeconfigs", cluster.student_kubeconfigs)
        clusters[spec.name] = cluster
    return clusters


def main() -> None:
    try:
        stack = from_pulumi()
    except ConfigError as exc:
        # RunError: Pulumi prints the message alone, without a Python traceback.
        raise pulumi.RunError(str(exc)) from None
    build(stack)

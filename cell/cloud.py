"""`cell cloud check`: can this OpenStack project hold the course before `pulumi up` tries?

Borg refuses a job its quota cannot hold; Cell refuses a course its cloud cannot hold. The check
reads the stack file (the same validation as the Pulumi program, `infra.config`), logs in with
clouds.yaml (openstacksdk), then looks for the image, the flavors, the external network and the
availability zones, and compares what the clusters need with the project's Nova and Neutron quota.
Every problem is printed with how much is missing; any problem exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console

from cell.errors import CellError

if TYPE_CHECKING:
    from openstack.connection import Connection


class ClusterShape(Protocol):
    @property
    def workers(self) -> int: ...


class CourseStack(Protocol):
    """What the check reads of the stack file: infra.config's StackConfig, which the CLI hands in
    (cell/ does not import infra/)."""

    @property
    def clusters(self) -> Sequence[ClusterShape]: ...
    @property
    def allowed_cidrs(self) -> Sequence[str]: ...
    @property
    def image(self) -> str: ...
    @property
    def flavor(self) -> str: ...
    @property
    def control_plane_flavor(self) -> str: ...
    @property
    def external_network(self) -> str: ...
    @property
    def availability_zones(self) -> Sequence[str]: ...


UNLIMITED = -1
# Neutron creates two default egress rules with every security group; Pulumi deletes them right
# away (delete_default_rules), but they count against the quota while they exist.
DEFAULT_RULES_PER_GROUP = 2
SECURITY_GROUPS_PER_CLUSTER = 2


@dataclass(frozen=True)
class Flavor:
    name: str
    vcpus: int
    ram_mib: int


@dataclass(frozen=True)
class Quota:
    """One quota of the project: `limit` (-1: unlimited) and what is already `in_use`."""

    limit: int
    in_use: int

    @property
    def available(self) -> int | None:
        return None if self.limit == UNLIMITED else max(self.limit - self.in_use, 0)


@dataclass(frozen=True)
class Finding:
    ok: bool
    subject: str
    detail: str


# Resources the course consumes, as they are named in the report, with their unit.
UNITS: dict[str, str] = {
    "instances": "",
    "cores": "",
    "RAM": " MiB",
    "server groups": "",
    "server group members": " per group",
    "key pairs": "",
    "floating IPs": "",
    "networks": "",
    "subnets": "",
    "routers": "",
    "ports": "",
    "security groups": "",
    "security group rules": "",
}


def course_demand(stack: CourseStack, flavor: Flavor | None, control_plane_flavor: Flavor | None) -> dict[str, int]:
    """What `pulumi up` creates for the stack (infra/cluster.py), per quota; without a flavor,
    its cores and RAM cannot be counted and are left out."""
    clusters = stack.clusters
    workers = sum(cluster.workers for cluster in clusters)
    demand = {
        "instances": len(clusters) + workers,
        "server groups": len(clusters),
        "server group members": max(cluster.workers for cluster in clusters),
        "key pairs": len(clusters),
        "floating IPs": len(clusters),
        "networks": len(clusters),
        "subnets": len(clusters),
        "routers": len(clusters),
        # One port per VM, the router's interface and the subnet's DHCP port.
        "ports": workers + len(clusters) * 3,
        "security groups": SECURITY_GROUPS_PER_CLUSTER * len(clusters),
        # node-to-node, two egress, SSH and 6443 per allowed CIDR (+ Neutron's transient defaults).
        "security group rules": len(clusters) * (
            3 + 2 * len(stack.allowed_cidrs) + SECURITY_GROUPS_PER_CLUSTER * DEFAULT_RULES_PER_GROUP),
    }
    if flavor is not None and control_plane_flavor is not None:
        demand["cores"] = len(clusters) * control_plane_flavor.vcpus + workers * flavor.vcpus
        demand["RAM"] = len(clusters) * control_plane_flavor.ram_mib + workers * flavor.ram_mib
    return demand


def quota_findings(demand: Mapping[str, int], quotas: Mapping[str, Quota]) -> list[Finding]:
    """One finding per quota: enough, or short by how much (with limit and use)."""
    findings: list[Finding] = []
    for resource, needed in demand.items():
        quota = quotas.get(resource)
        if quota is None:
            continue
        unit = UNITS.get(resource, "")
        available = quota.available
        # Per-group member limits are a ceiling, not a pool that fills up.
        if resource == "server group members":
            available = None if quota.limit == UNLIMITED else quota.limit
        if available is None:
            findings.append(Finding(True, f"quota {resource}", f"need {needed}{unit}, unlimited"))
        elif needed <= available:
            findings.append(Finding(True, f"quota {resource}", f"need {needed}{unit}, {available}{unit} available"))
        else:
            findings.append(Finding(False, f"quota {resource}", (
                f"need {needed}{unit}, only {available}{unit} available "
                f"(limit {quota.limit}, {quota.in_use} in use): "
                f"short by {needed - available}{unit}")))
    return findings


# --- talking to the cloud (openstacksdk) -----------------------------------------------------------


def connect(cloud: str | None, clouds_file: Path | None) -> Connection:
    """A connection from clouds.yaml (the standard locations, or `clouds_file`)."""
    # openstacksdk is heavy (a second to import): only `cell cloud` loads it.
    import openstack
    from openstack import exceptions as os_exc
    from openstack.config import loader

    try:
        config_files = [str(clouds_file)] if clouds_file else None
        if clouds_file is not None and not clouds_file.is_file():
            raise CellError(f"clouds file not found: {clouds_file}")
        region = loader.OpenStackConfig(config_files=config_files).get_one(cloud=cloud)
    except os_exc.ConfigException as exc:
        raise CellError(f"clouds.yaml: {exc}") from None
    return openstack.connection.Connection(config=region)


def check_cloud(conn: Connection, stack: CourseStack) -> list[Finding]:
    """Every check, in the order an instructor would fix them; stops early only without credentials."""
    # openstacksdk is heavy: imported by `cell cloud` only.
    from keystoneauth1 import exceptions as ks_exc
    from keystoneauth1.identity.base import BaseIdentityPlugin
    from openstack import exceptions as os_exc

    try:
        auth = conn.session.auth
        if not isinstance(auth, BaseIdentityPlugin):
            return [Finding(False, "credentials", "clouds.yaml names no credentials (auth:) for this cloud")]
        access = auth.get_access(conn.session)
        project_id = str(access.project_id)
    except (ks_exc.ClientException, os_exc.SDKException) as exc:
        return [Finding(False, "credentials", f"clouds.yaml credentials rejected: {_first_line(exc)}")]
    findings = [Finding(True, "credentials", f"user {access.username}, project {access.project_name} ({project_id})")]

    image = _find(conn.image.find_image, stack.image)
    findings.append(Finding(True, "image", f"{stack.image!r} found ({image.id})") if image else
                    Finding(False, "image", f"{stack.image!r} not found in Glance"))

    flavors: dict[str, Flavor | None] = {}
    for role, name in (("worker flavor", stack.flavor), ("control plane flavor", stack.control_plane_flavor)):
        found = _find(conn.compute.find_flavor, name)
        flavors[role] = Flavor(found.name, int(found.vcpus), int(found.ram)) if found else None
        findings.append(
            Finding(True, role, f"{name!r}: {found.vcpus} vCPU, {found.ram} MiB RAM") if found else
            Finding(False, role, f"{name!r} not found in Nova: cores and RAM quota not checked"))

    network = _find(conn.network.find_network, stack.external_network)
    if network is None:
        findings.append(Finding(False, "external network", f"{stack.external_network!r} not found in Neutron"))
    elif not network.is_router_external:
        findings.append(Finding(False, "external network",
                                f"{stack.external_network!r} exists but is not external (router:external false)"))
    else:
        findings.append(Finding(True, "external network", f"{stack.external_network!r} ({network.id})"))

    if stack.availability_zones:
        zones = {zone.name for zone in conn.compute.availability_zones() if (zone.state or {}).get("available")}
        missing = [zone for zone in stack.availability_zones if zone not in zones]
        findings.append(
            Finding(False, "availability zones", f"not available: {', '.join(missing)} "
                                                 f"(available: {', '.join(sorted(zones)) or 'none'})")
            if missing else Finding(True, "availability zones", ", ".join(stack.availability_zones)))

    demand = course_demand(stack, flavors["worker flavor"], flavors["control plane flavor"])
    findings.extend(quota_findings(demand, project_quotas(conn, project_id)))
    return findings


def project_quotas(conn: Connection, project_id: str) -> dict[str, Quota]:
    """Nova's absolute limits and Neutron's quota details, under the names of `UNITS`."""
    limits = conn.compute.get_limits().absolute
    quotas = {
        "instances": Quota(limits.instances, limits.instances_used),
        "cores": Quota(limits.total_cores, limits.total_cores_used),
        "RAM": Quota(limits.total_ram, limits.total_ram_used),
        "server groups": Quota(limits.server_groups, limits.server_groups_used),
        "server group members": Quota(limits.server_group_members, 0),
        "key pairs": Quota(limits.keypairs, len(list(conn.compute.keypairs()))),
    }
    details = conn.network.get_quota(project_id, details=True)
    for resource, body in (
        ("floating IPs", details.floating_ips),
        ("networks", details.networks),
        ("subnets", details.subnets),
        ("routers", details.routers),
        ("ports", details.ports),
        ("security groups", details.security_groups),
        ("security group rules", details.security_group_rules),
    ):
        if body:
            quotas[resource] = Quota(int(body["limit"]), int(body.get("used", 0)) + int(body.get("reserved", 0)))
    return quotas


def _find(finder: Callable[..., Any], name: str) -> Any:
    """A resource by name or ID, or None (openstacksdk's find_* raise when told not to ignore)."""
    from openstack import exceptions as os_exc  # heavy: imported by `cell cloud` only

    try:
        return finder(name, ignore_missing=False)
    except os_exc.NotFoundException:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# --- running the check ---------------------------------------------------------------------------

def checked(conn: Connection, stack: CourseStack) -> list[Finding]:
    """check_cloud, with an OpenStack API failure as one CellError."""
    # openstacksdk is heavy: imported by `cell cloud` only.
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc

    try:
        return check_cloud(conn, stack)
    except (ks_exc.ClientException, os_exc.SDKException) as exc:
        raise CellError(f"OpenStack API error: {_first_line(exc)}") from None


def report(findings: list[Finding], console: Console) -> None:
    width = max(len(finding.subject) for finding in findings)
    for finding in findings:
        mark = "[green]ok  [/]" if finding.ok else "[bold red]FAIL[/]"
        console.print(f"{mark} {finding.subject.ljust(width)}  {finding.detail}", highlight=False, soft_wrap=True)
    problems = sum(not finding.ok for finding in findings)
    if problems:
        console.print(f"[bold red]{problems} problem(s):[/] the cloud cannot hold the course as configured",
                      highlight=False)
    else:
        console.print("[green]the cloud can hold the course[/]", highlight=False)

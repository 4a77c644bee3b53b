"""The stack configuration (SPEC §7), validated as a whole before any resource is declared.

`parse_config` is pure: it takes the `cell:*` values (namespace stripped) as plain data, from
`pulumi.Config` or from a stack file, and returns a frozen `StackConfig` or raises `ConfigError`
listing every problem with its key, e.g. `cell:clusters[1].workers: must be an integer >= 1`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playbooks.names import STUDENT_NAME, student_name_error

NAMESPACE = "cell"

REQUIRED_KEYS = (
    "clusters",
    "image",
    "flavor",
    "controlPlaneFlavor",
    "externalNetwork",
    "allowedCidrs",
    "sshPublicKey",
    "kubernetesVersion",
)
OPTIONAL_KEYS = (
    "availabilityZones",
    "nodeCidr",
    "dnsNameservers",
    "sshPrivateKeyFile",
    "protectControlPlane",
    "bootstrap",
)
STRING_KEYS = ("image", "flavor", "controlPlaneFlavor", "externalNetwork", "sshPublicKey",
               "kubernetesVersion")
# Keys whose value is a list or an object: Pulumi hands these to the program as JSON text.
STRUCTURED_KEYS = frozenset({"clusters", "allowedCidrs", "availabilityZones", "dnsNameservers"})
CLUSTER_KEYS = frozenset({"name", "workers", "students"})

# Kubernetes' own defaults for kubeadm + flannel; the node network must not overlap them.
POD_CIDR = ipaddress.ip_network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
DEFAULT_NODE_CIDR = "10.10.0.0/24"
MAX_WORKERS = 200

# A cluster name becomes part of VM host names, Kubernetes node names and OpenStack resource names.
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,28}[a-z0-9])?$")
_K8S_VERSION = re.compile(r"^v?1\.(\d+)(\.\d+)?$")
_SSH_KEY = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-\S+@openssh\.com) [A-Za-z0-9+/]+=* ?"
)
# pkgs.k8s.io publishes repositories from v1.24 on; Cell needs the v1beta4 kubeadm API (1.31+).
MIN_KUBERNETES_MINOR = 31


class ConfigError(ValueError):
    """The stack configuration is invalid; `errors` holds one `cell:<key>: <problem>` per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid stack configuration: " + "; ".join(self.errors))


@dataclass(frozen=True)
class ClusterSpec:
    """One Kubernetes cluster: one control plane and `workers` worker nodes."""

    name: str
    workers: int
    students: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackConfig:
    clusters: tuple[ClusterSpec, ...]
    image: str
    flavor: str
    control_plane_flavor: str
    external_network: str
    allowed_cidrs: tuple[str, ...]
    ssh_public_key: str
    kubernetes_version: str
    availability_zones: tuple[str, ...] = ()
    node_cidr: str = DEFAULT_NODE_CIDR
    dns_nameservers: tuple[str, ...] = ()
    ssh_private_key_file: str | None = None
    protect_control_plane: bool = True
    bootstrap: bool = True

    @property
    def kubernetes_minor(self) -> str:
        """`1.34` from `1.34` or `v1.34.2`: pkgs.k8s.io publishes one repository per minor."""
        major_minor = self.kubernetes_version.lstrip("v").split(".")[:2]
        return ".".join(major_minor)


def key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def parse_config(raw: Mapping[str, Any]) -> StackConfig:
    """Validate the `cell:*` values (keys without namespace); collect every error, then raise."""
    errors: list[str] = []
    for name in raw:
        if name not in REQUIRED_KEYS and name not in OPTIONAL_KEYS:
            known = ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
            errors.append(f"{key(name)}: unknown key (expected one of {known})")
    for name in REQUIRED_KEYS:
        if raw.get(name) in (None, ""):
            errors.append(f"{key(name)}: missing (required)")

    clusters = _clusters(raw.get("clusters"), errors)
    strings = {name: _string(raw.get(name), key(name), errors) for name in STRING_KEYS}
    allowed_cidrs = _cidrs(raw.get("allowedCidrs"), errors)
    ssh_key = strings["sshPublicKey"]
    if ssh_key is not None and not _SSH_KEY.match(ssh_key.strip()):
        errors.append(f"{key('sshPublicKey')}: must be an OpenSSH public key (ssh-ed25519 AAAA... comment)")
    version = strings["kubernetesVersion"]
    if version is not None:
        match = _K8S_VERSION.match(version)
        if not match:
            errors.append(f"{key('kubernetesVersion')}: must look like 1.34 or 1.34.2, got {version!r}")
        elif int(match.group(1)) < MIN_KUBERNETES_MINOR:
            errors.append(
                f"{key('kubernetesVersion')}: must be 1.{MIN_KUBERNETES_MINOR} or newer, got {version!r}"
            )

    zones = _string_list(raw.get("availabilityZones"), key("availabilityZones"), errors)
    nameservers = _string_list(raw.get("dnsNameservers"), key("dnsNameservers"), errors)
    for index, server in enumerate(nameservers):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            errors.append(f"{key('dnsNameservers')}[{index}]: {server!r} is not an IP address")
    node_cidr = _node_cidr(raw.get("nodeCidr"), errors)
    private_key = raw.get("sshPrivateKeyFile")
    if private_key is not None and not isinstance(private_key, str):
        errors.append(f"{key('sshPrivateKeyFile')}: must be a path")
        private_key = None
    protect = _boolean(raw.get("protectControlPlane"), key("protectControlPlane"), True, errors)
    bootstrap = _boolean(raw.get("bootstrap"), key("bootstrap"), True, errors)
    # Every node, the router, the DHCP port and the gateway need an address in the node network.
    usable = ipaddress.ip_network(node_cidr).num_addresses - 5
    for index, cluster in enumerate(clusters):
        if cluster.workers + 1 > usable:
            errors.append(f"{key('clusters')}[{index}].workers: {cluster.workers} workers do not fit "
                          f"{key('nodeCidr')} {node_cidr} ({usable - 1} at most)")

    if errors:
        raise ConfigError(errors)
    return StackConfig(
        clusters=tuple(clusters),
        image=str(strings["image"]),
        flavor=str(strings["flavor"]),
        control_plane_flavor=str(strings["controlPlaneFlavor"]),
        external_network=str(strings["externalNetwork"]),
        allowed_cidrs=tuple(allowed_cidrs),
        ssh_public_key=str(ssh_key).strip(),
        kubernetes_version=str(version),
        availability_zones=tuple(zones),
        node_cidr=node_cidr,
        dns_nameservers=tuple(nameservers),
        ssh_private_key_file=str(Path(private_key).expanduser()) if private_key else None,
        protect_control_plane=protect,
        bootstrap=bootstrap,
    )


def decode_pulumi_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Pulumi passes structured config as JSON text; decode those keys, keep the rest as given."""
    decoded: dict[str, Any] = {}
    for name, value in values.items():
        if name in STRUCTURED_KEYS and isinstance(value, str):
            # Undecodable text stays text: the validator then reports "must be a list" with the key.
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        decoded[name] = value
    return decoded


def from_pulumi() -> StackConfig:
    """Read and validate every `cell:*` key of the running stack."""
    import pulumi.runtime.config as runtime_config  # only the Pulumi program needs pulumi

    values: dict[str, Any] = {}
    for full_key in {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}:
        namespace, _, name = full_key.partition(":")
        if namespace == NAMESPACE:
            values[name] = runtime_config.get_config(full_key)
    return parse_config(decode_pulumi_values(values))


def from_stack_file(path: Path) -> StackConfig:
    """Read and validate the `cell:*` keys of a `Pulumi.<stack>.yaml` file (for `cell cloud check`)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({str(exc).splitlines()[0]})"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError([f"{path}: has no 'config:' mapping"])
    values: dict[str, Any] = {}
    for full_key, value in document["config"].items():
        namespace, _, name = str(full_key).partition(":")
        if namespace != NAMESPACE:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise ConfigError([f"{key(name)}: is encrypted in {path}; Cell's keys are not secrets"])
        values[name] = value
    return parse_config(decode_pulumi_values(values))


# --- field validators: each appends `cell:<path>: <problem>` and returns a usable value ---------


def _string(value: Any, where: str, errors: list[str]) -> str | None:
    if value is None or value == "":
        return None  # reported as missing
    if not isinstance(value, str):
        errors.append(f"{where}: must be a string")
        return None
    return value


def _string_list(value: Any, where: str, errors: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"{where}: must be a list of strings")
        return []
    items: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            errors.append(f"{where}[{index}]: must be a non-empty string")
        else:
            items.append(item)
    return items


def _boolean(value: Any, where: str, default: bool, errors: list[str]) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    errors.append(f"{where}: must be true or false")
    return default


def _required_list(value: Any, where: str, of: str, errors: list[str]) -> list[Any]:
    """A required key that holds a non-empty list of `of`; [] when it is wrong or missing."""
    if value is None or value == "":
        return []  # reported as missing
    if not isinstance(value, list) or not value:
        errors.append(f"{where}: must be a non-empty list of {of}")
        return []
    return value


def _clusters(value: Any, errors: list[str]) -> list[ClusterSpec]:
    where = key("clusters")
    clusters: list[ClusterSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(_required_list(value, where, "{name, workers}", errors)):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{at}: must be a mapping with name and workers")
            continue
        for unknown in sorted(set(item) - CLUSTER_KEYS):
            errors.append(f"{at}.{unknown}: unknown key (expected name, workers, students)")
        name = item.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            errors.append(f"{at}.name: must be a DNS label of at most 30 characters (a-z, 0-9, -), "
                          f"got {name!r}")
            name = None
        elif name in seen:
            errors.append(f"{at}.name: duplicate cluster name {name!r}")
        workers = item.get("workers")
        if isinstance(workers, str) and workers.isdigit():
            workers = int(workers)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            errors.append(f"{at}.workers: must be an integer >= 1")
            workers = None
        elif workers > MAX_WORKERS:
            errors.append(f"{at}.workers: at most {MAX_WORKERS} workers per cluster, got {workers}")
            workers = None
        students = _string_list(item.get("students"), f"{at}.students", errors)
        for s_index, student in enumerate(students):
            if not STUDENT_NAME.match(student):
                errors.append(f"{at}.students[{s_index}]: {student!r} must be a DNS label "
                              "(it names a namespace)")
            elif (error := student_name_error(student)) is not None:
                errors.append(f"{at}.students[{s_index}]: {error}")
        if len(set(students)) != len(students):
            errors.append(f"{at}.students: lists a student twice")
        if name is not None and workers is not None:
            seen.add(name)
            clusters.append(ClusterSpec(name=name, workers=workers, students=tuple(students)))
    return clusters


def _cidrs(value: Any, errors: list[str]) -> list[str]:
    where = key("allowedCidrs")
    cidrs: list[str] = []
    for index, item in enumerate(_required_list(value, where, "CIDRs such as 203.0.113.0/24", errors)):
        try:
            network = ipaddress.ip_network(str(item), strict=True)
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f"; did you mean {ipaddress.ip_network(str(item), strict=False)}?"
            errors.append(f"{where}[{index}]: {item!r} is not a CIDR ({exc}){hint}")
            continue
        cidrs.append(str(network))
    return cidrs


def _node_cidr(value: Any, errors: list[str]) -> str:
    where = key("nodeCidr")
    if value is None:
        return DEFAULT_NODE_CIDR
    try:
        network = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        errors.append(f"{where}: {value!r} is not a CIDR ({exc})")
        return DEFAULT_NODE_CIDR
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > 28:
        errors.append(f"{where}: must be an IPv4 network of /28 or larger")
    elif network.overlaps(POD_CIDR) or network.overlaps(SERVICE_CIDR):
        errors.append(f"{where}: {network} overlaps the pod ({POD_CIDR}) or service ({SERVICE_CIDR}) network")
    return str(network)

"""Stack configuration (SPEC §7): validated as a whole, every error names its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import (
    DEFAULT_NODE_CIDR,
    ClusterSpec,
    ConfigError,
    decode_pulumi_values,
    from_stack_file,
    parse_config,
)
from tests.infra.pulumi_harness import BASE_CONFIG

REPO = Path(__file__).resolve().parents[2]


def test_a_valid_config_parses_with_defaults() -> None:
    stack = parse_config(BASE_CONFIG)
    assert stack.clusters == (ClusterSpec("lab", 3, ("alice", "bob")),)
    assert stack.allowed_cidrs == ("203.0.113.0/24", "2001:db8::/48")
    assert stack.kubernetes_minor == "1.34"
    assert stack.availability_zones == ()
    assert stack.node_cidr == DEFAULT_NODE_CIDR
    assert stack.protect_control_plane is True and stack.bootstrap is True
    assert stack.ssh_private_key_file is None


@pytest.mark.parametrize(("overrides", "message"), [
    ({"clusters": [{"name": "lab", "workers": 2}, {"name": "lab-b", "workers": 0}]},
     "cell:clusters[1].workers: must be an integer >= 1"),
    ({"clusters": [{"name": "lab", "workers": True}]}, "cell:clusters[0].workers: must be an integer >= 1"),
    ({"clusters": [{"name": "lab", "workers": "two"}]}, "cell:clusters[0].workers: must be an integer >= 1"),
    ({"clusters": [{"name": "lab", "workers": 500}]}, "cell:clusters[0].workers: at most 200 workers"),
    ({"clusters": [{"name": "Lab_1", "workers": 1}]}, "cell:clusters[0].name: must be a DNS label"),
    ({"clusters": [{"name": "lab", "workers": 1}, {"name": "lab", "workers": 1}]},
     "cell:clusters[1].name: duplicate cluster name 'lab'"),
    ({"clusters": [{"name": "lab", "wrokers": 1}]}, "cell:clusters[0].wrokers: unknown key"),
    ({"clusters": [{"name": "lab", "workers": 1, "students": ["Alice"]}]},
     "cell:clusters[0].students[0]: 'Alice' must be a DNS label"),
    ({"clusters": []}, "cell:clusters: must be a non-empty list"),
    ({"clusters": None}, "cell:clusters: missing (required)"),
    ({"image": ""}, "cell:image: missing (required)"),
    ({"flavor": 4}, "cell:flavor: must be a string"),
    ({"allowedCidrs": ["203.0.113.7/24"]},
     "cell:allowedCidrs[0]: '203.0.113.7/24' is not a CIDR (203.0.113.7/24 has host bits set); did you mean "
     "203.0.113.0/24?"),
    ({"allowedCidrs": ["everyone"]}, "cell:allowedCidrs[0]: 'everyone' is not a CIDR"),
    ({"allowedCidrs": []}, "cell:allowedCidrs: must be a non-empty list"),
    ({"sshPublicKey": "not a key"}, "cell:sshPublicKey: must be an OpenSSH public key"),
    ({"kubernetesVersion": "latest"}, "cell:kubernetesVersion: must look like 1.34 or 1.34.2"),
    ({"kubernetesVersion": "1.28"}, "cell:kubernetesVersion: must be 1.31 or newer"),
    ({"availabilityZones": "az-1"}, "cell:availabilityZones: must be a list of strings"),
    ({"dnsNameservers": ["dns.example"]}, "cell:dnsNameservers[0]: 'dns.example' is not an IP address"),
    ({"nodeCidr": "10.244.0.0/24"}, "cell:nodeCidr: 10.244.0.0/24 overlaps the pod"),
    ({"nodeCidr": "10.10.0.0/29"}, "cell:nodeCidr: must be an IPv4 network of /28 or larger"),
    ({"nodeCidr": "10.10.0.0/28", "clusters": [{"name": "lab", "workers": 12}]},
     "cell:clusters[0].workers: 12 workers do not fit cell:nodeCidr 10.10.0.0/28"),
    ({"protectControlPlane": "maybe"}, "cell:protectControlPlane: must be true or false"),
    ({"flavour": "m1.large"}, "cell:flavour: unknown key"),
])
def test_an_invalid_key_is_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**BASE_CONFIG, **overrides})
    assert message in str(raised.value)
    assert str(raised.value).startswith("invalid stack configuration: ")
    assert "\n" not in str(raised.value)


def test_every_problem_is_reported_at_once() -> None:
    raw = {**BASE_CONFIG, "image": None, "clusters": [{"name": "lab", "workers": 0}], "allowedCidrs": ["x"]}
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    assert [error.split(":")[1] for error in raised.value.errors] == ["image", "clusters[0].workers", "allowedCidrs[0]"]


def test_pulumi_structured_values_arrive_as_json_text() -> None:
    decoded = decode_pulumi_values({
        "clusters": '[{"name": "lab", "workers": 2}]',
        "allowedCidrs": '["192.0.2.0/24"]',
        "image": "[not json but a plain string key]",
        "protectControlPlane": "false",
    })
    assert decoded["clusters"] == [{"name": "lab", "workers": 2}]
    assert decoded["allowedCidrs"] == ["192.0.2.0/24"]
    assert decoded["image"] == "[not json but a plain string key]"
    stack = parse_config({**BASE_CONFIG, **decoded})
    assert stack.protect_control_plane is False
    # Text that is not JSON stays text, and the validator names the key.
    with pytest.raises(ConfigError, match=r"cell:allowedCidrs: must be a non-empty list"):
        parse_config({**BASE_CONFIG, **decode_pulumi_values({"allowedCidrs": "192.0.2.0/24"})})


def test_the_example_stack_file_is_valid() -> None:
    stack = from_stack_file(REPO / "Pulumi.course.yaml")
    assert [cluster.name for cluster in stack.clusters] == ["lab-a", "lab-b"]
    assert all(cluster.students for cluster in stack.clusters)
    assert stack.availability_zones == ("az-1", "az-2")


def test_stack_file_problems_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "Pulumi.none.yaml"
    with pytest.raises(ConfigError, match="cannot read"):
        from_stack_file(missing)
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        from_stack_file(broken)
    encrypted = tmp_path / "Pulumi.secret.yaml"
    encrypted.write_text("config:\n  cell:image:\n    secure: AAABAGx1\n")
    with pytest.raises(ConfigError, match="cell:image: is encrypted"):
        from_stack_file(encrypted)
    other_namespaces = tmp_path / "Pulumi.mixed.yaml"
    other_namespaces.write_text(
        "config:\n  openstack:region: RegionOne\n"
        + "".join(f"  cell:{key}: {value!r}\n" for key, value in BASE_CONFIG.items() if isinstance(value, str))
        + "  cell:clusters: [{name: lab, workers: 1}]\n  cell:allowedCidrs: [192.0.2.0/24]\n")
    assert from_stack_file(other_namespaces).clusters == (ClusterSpec("lab", 1),)

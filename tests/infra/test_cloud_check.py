"""`cell cloud check` against recorded Keystone, Nova, Glance and Neutron responses (openstack_replay)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cell.cli import app
from cell.cloud import Flavor, Quota, course_demand, quota_findings
from tests.infra.openstack_replay import Replay, replay, write_clouds_yaml
from tests.infra.pulumi_harness import stack_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_STACK = REPO / "Pulumi.course.yaml"


@pytest.fixture
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Replay, Path]]:
    scenario = getattr(request, "param", None)
    with replay(scenario) as server:
        yield server, write_clouds_yaml(tmp_path / "clouds.yaml", server.base)


def check(clouds_file: Path, *extra: str, stack_file: Path = EXAMPLE_STACK) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["cloud", "check", "--stack-file", str(stack_file), "--cloud", "course",
                                      "--clouds-file", str(clouds_file), *extra])
    return result.exit_code, result.output


def line(output: str, subject: str) -> str:
    """The report's line about `subject` (its second column), whitespace collapsed."""
    (found,) = [text for text in output.splitlines()
                if text.split(maxsplit=1)[-1].startswith(f"{subject}  ") or text.split(maxsplit=1)[-1] == subject]
    return " ".join(found.split())


def test_a_cloud_that_holds_the_course(cloud: tuple[Replay, Path]) -> None:
    server, clouds_file = cloud
    code, output = check(clouds_file)
    assert code == 0, output
    assert "the cloud can hold the course" in output
    assert line(output, "credentials") == "ok credentials user teacher, project distos-course " \
                                          "(4d5e6f708192a3b4c5d6e7f8091a2b3c)"
    assert line(output, "image").startswith("ok image 'Debian 12' found")
    assert line(output, "worker flavor") == "ok worker flavor 'm1.large': 4 vCPU, 8192 MiB RAM"
    assert line(output, "external network") == "ok external network 'public' (d4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f70)"
    # Two clusters of 1 + 3 VMs: 2 x m1.medium (2 vCPU) + 6 x m1.large (4 vCPU).
    assert line(output, "quota cores") == "ok quota cores need 28, 60 available"
    assert line(output, "quota RAM") == "ok quota RAM need 57344 MiB, 122880 MiB available"
    assert line(output, "quota floating IPs") == "ok quota floating IPs need 2, 9 available"
    # It asked the services, in Keystone's catalog, for what it reports.
    assert "POST /identity/v3/auth/tokens" in server.requests
    assert "GET /compute/v2.1/limits" in server.requests
    assert "GET /network/v2.0/quotas/4d5e6f708192a3b4c5d6e7f8091a2b3c/details" in server.requests


@pytest.mark.parametrize("cloud", ["shortfall"], indirect=True)
def test_a_quota_shortfall_says_what_is_missing_and_how_much(cloud: tuple[Replay, Path]) -> None:
    _, clouds_file = cloud
    code, output = check(clouds_file)
    assert code == 1
    assert line(output, "quota cores") == ("FAIL quota cores need 28, only 8 available (limit 20, 12 in use): "
                                     "short by 20")
    assert line(output, "quota instances") == ("FAIL quota instances need 8, only 4 available (limit 10, 6 in use): "
                                         "short by 4")
    assert line(output, "quota floating IPs") == (
        "FAIL quota floating IPs need 2, only 1 available (limit 3, 2 in use): short by 1")
    assert line(output, "quota RAM").startswith("ok ")
    assert "3 problem(s): the cloud cannot hold the course as configured" in output


@pytest.mark.parametrize("cloud", ["missing-image"], indirect=True)
def test_a_missing_image_is_reported(cloud: tuple[Replay, Path]) -> None:
    _, clouds_file = cloud
    code, output = check(clouds_file)
    assert code == 1
    assert line(output, "image") == "FAIL image 'Debian 12' not found in Glance"
    assert "1 problem(s)" in output


def test_missing_flavor_network_and_zone(cloud: tuple[Replay, Path], tmp_path: Path) -> None:
    _, clouds_file = cloud
    stack_file = tmp_path / "Pulumi.odd.yaml"
    stack_file.write_text(EXAMPLE_STACK.read_text()
                          .replace("cell:flavor: m1.large", "cell:flavor: m1.huge")
                          .replace("cell:externalNetwork: public", "cell:externalNetwork: shared-lab")
                          .replace("[az-1, az-2]", "[az-1, az-3]"))
    code, output = check(clouds_file, stack_file=stack_file)
    assert code == 1
    assert line(output, "worker flavor") == (
        "FAIL worker flavor 'm1.huge' not found in Nova: cores and RAM quota not checked")
    assert line(output, "external network") == ("FAIL external network 'shared-lab' exists but is not external "
                                       "(router:external false)")
    assert line(output, "availability zones") == "FAIL availability zones not available: az-3 (available: az-1, az-2)"
    assert " quota cores " not in output


def test_rejected_credentials(tmp_path: Path) -> None:
    with replay() as server:
        clouds_file = write_clouds_yaml(tmp_path / "clouds.yaml", server.base, password="wrong")
        code, output = check(clouds_file)
    assert code == 1
    assert line(output, "credentials") == ("FAIL credentials clouds.yaml credentials rejected: The request you "
                                           "have made requires authentication. (HTTP 401)")
    assert not [request for request in server.requests if "/compute/" in request]


def test_bad_input_is_one_line(cloud: tuple[Replay, Path], tmp_path: Path) -> None:
    _, clouds_file = cloud
    result = CliRunner().invoke(app, ["cloud", "check", "--stack-file", str(EXAMPLE_STACK), "--cloud", "nowhere",
                                      "--clouds-file", str(clouds_file)])
    assert result.exit_code == 1
    assert result.output.strip() == "error: clouds.yaml: Cloud nowhere was not found."

    bad_stack = tmp_path / "Pulumi.bad.yaml"
    bad_stack.write_text(EXAMPLE_STACK.read_text().replace("workers: 3\n      students: [alice",
                                                           "workers: 0\n      students: [alice"))
    code, output = check(clouds_file, stack_file=bad_stack)
    assert code == 1
    assert output.strip() == ("error: invalid stack configuration: cell:clusters[0].workers: "
                              "must be an integer >= 1")

    code, output = check(tmp_path / "no-clouds.yaml")
    assert code == 1
    assert output.strip() == f"error: clouds file not found: {tmp_path / 'no-clouds.yaml'}"


# --- the arithmetic, without a cloud -------------------------------------------------------------

def test_course_demand_counts_what_pulumi_creates() -> None:
    stack = stack_config(clusters=[{"name": "a", "workers": 2}, {"name": "b", "workers": 4}],
                         allowedCidrs=["192.0.2.0/24"])
    demand = course_demand(stack, Flavor("w", 4, 8192), Flavor("cp", 2, 4096))
    assert demand == {
        "instances": 8, "cores": 2 * 2 + 6 * 4, "RAM": 2 * 4096 + 6 * 8192,
        "server groups": 2, "server group members": 4, "key pairs": 2, "floating IPs": 2,
        "networks": 2, "subnets": 2, "routers": 2,
        "ports": 6 + 2 * 3,                    # VMs, router interfaces, DHCP ports
        "security groups": 4,
        "security group rules": 2 * (3 + 2 + 4),  # own rules + Neutron's transient defaults
    }
    assert "cores" not in course_demand(stack, None, Flavor("cp", 2, 4096))


def test_quota_findings_treat_unlimited_and_per_group_limits() -> None:
    findings = quota_findings(
        {"cores": 10, "server group members": 4, "ports": 3},
        {"cores": Quota(-1, 50), "server group members": Quota(3, 0), "ports": Quota(3, 0)})
    assert [(f.ok, f.subject, f.detail) for f in findings] == [
        (True, "quota cores", "need 10, unlimited"),
        (False, "quota server group members",
         "need 4 per group, only 3 per group available (limit 3, 0 in use): short by 1 per group"),
        (True, "quota ports", "need 3, 3 available"),
    ]

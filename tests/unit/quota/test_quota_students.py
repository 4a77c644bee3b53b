"""Student onboarding without a cell: names, rosters, default quota (Q8), the Q6 pre-check, the CLI's errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cell.cli import app
from cell.errors import CellError
from cell.students import (
    StudentSpec,
    band_quota_manifest,
    check_prod_quota,
    name_error,
    namespace_manifest,
    parse_roster,
    role_binding_manifest,
    specs_from_names,
)
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import BandQuota
from tests.unit.quota.quota_builders import res

DEFAULT = {"production": {"cpu": "2", "memory": "2Gi"}, "batch": {"cpu": "4", "memory": "4Gi"}}


@pytest.mark.parametrize("name", ["alice", "bob-2", "a", "x" * 63, "0day"])
def test_valid_names(name: str) -> None:
    assert name_error(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [("Alice", "DNS-1123"), ("-bob", "DNS-1123"), ("bob-", "DNS-1123"), ("b_b", "DNS-1123"), ("x" * 64, "DNS-1123"),
     ("", "DNS-1123"), ("kube-system", "reserved"), ("default", "reserved"), ("kube-alice", "reserved")],
)
def test_invalid_names(name: str, why: str) -> None:
    assert why in (name_error(name) or "")


def test_names_get_the_default_quota_q8() -> None:
    assert specs_from_names(["alice", "bob"]) == [StudentSpec("alice", DEFAULT), StudentSpec("bob", DEFAULT)]
    with pytest.raises(CellError, match="listed twice"):
        specs_from_names(["alice", "alice"])


def test_yaml_roster_with_overrides(tmp_path: Path) -> None:
    roster = tmp_path / "class.yaml"
    roster.write_text("""
students:
  - alice
  - name: bob
    quota:
      production: {cpu: "4"}
      monitoring: {cpu: 500m, memory: 512Mi}
      batch: null
""")
    alice, bob = parse_roster(roster)
    assert alice == StudentSpec("alice", DEFAULT)
    # A band given overrides only the values it names; null removes a band.
    assert bob == StudentSpec("bob", {"production": {"cpu": "4", "memory": "2Gi"},
                                      "monitoring": {"cpu": "500m", "memory": "512Mi"}})


def test_yaml_roster_may_be_a_plain_list(tmp_path: Path) -> None:
    roster = tmp_path / "class.yml"
    roster.write_text("- alice\n- name: bob\n")
    assert [s.name for s in parse_roster(roster)] == ["alice", "bob"]


def test_csv_roster(tmp_path: Path) -> None:
    roster = tmp_path / "class.csv"
    roster.write_text("name,production.cpu,production.memory,best-effort.cpu,best-effort.memory\n"
                      "alice,,,,\n"
                      "bob,4,4Gi,1,1Gi\n")
    alice, bob = parse_roster(roster)
    assert alice.bands == DEFAULT
    assert bob.bands == {"production": {"cpu": "4", "memory": "4Gi"}, "batch": {"cpu": "4", "memory": "4Gi"},
                         "best-effort": {"cpu": "1", "memory": "1Gi"}}


@pytest.mark.parametrize(
    ("filename", "content", "error"),
    [
        ("r.yaml", "students: [Alice]", "'Alice' is not a valid student name"),
        ("r.yaml", "- alice\n- alice\n", "listed twice"),
        ("r.yaml", "students: {alice: 1}", "expected a list of students"),
        ("r.yaml", "- name: bob\n  quota: {prod: {cpu: '1', memory: 1Gi}}\n", "quota.bands.prod: unknown band"),
        ("r.yaml", "- name: bob\n  quota: {batch: {cpu: lots}}\n", "quota.bands.batch.cpu: must be a quantity"),
        ("r.yaml", "- name: bob\n  quota: {monitoring: {cpu: '1'}}\n", "quota.bands.monitoring.memory: required"),
        ("r.yaml", "- name: bob\n  quotas: {}\n", "unknown key(s) quotas"),
        ("r.yaml", "- [bob]\n", "entry 1: expected a name or a mapping"),
        ("r.yaml", "students: [\n", "not valid YAML"),
        ("r.yaml", "[]", "lists no students"),
        ("r.csv", "student\nalice\n", "needs a `name` column"),
        ("r.csv", "name,prod.cpu\nalice,1\n", "unknown column(s) prod.cpu"),
        ("r.csv", "name,batch.memory\nalice,-1Gi\n", "line 2 (alice): quota.bands.batch.memory: must not be negative"),
        ("r.txt", "alice", "unknown format .txt"),
    ],
)
def test_bad_rosters_fail_with_one_line(tmp_path: Path, filename: str, content: str, error: str) -> None:
    roster = tmp_path / filename
    roster.write_text(content)
    with pytest.raises(CellError) as info:
        parse_roster(roster)
    assert error in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_roster(tmp_path: Path) -> None:
    with pytest.raises(CellError, match="roster not found"):
        parse_roster(tmp_path / "nope.yaml")


def test_manifests() -> None:
    spec = StudentSpec("alice")
    labels = namespace_manifest("alice")["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k.startswith("cell.")} == {"cell.distos.dev/managed": "true",
                                                                          "cell.distos.dev/student": "alice"}
    # SPEC §9: Pod Security "restricted", enforced (the same manifest onboards students on OpenStack).
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.34"
    quota = band_quota_manifest(spec)
    assert (quota["metadata"]["namespace"], quota["metadata"]["name"], quota["spec"]["bands"]) == (
        "alice", "quota", DEFAULT)
    binding = role_binding_manifest("alice")
    assert binding["roleRef"]["name"] == "cell:student"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]


def test_q6_precheck_covers_the_whole_batch() -> None:
    capacity = res("5", "100Gi")
    existing = [BandQuota("carol", "quota", {Band.PRODUCTION: res("2", "2Gi")})]
    check_prod_quota(specs_from_names(["dave"]), existing, capacity)  # 2 + 2 <= 5
    with pytest.raises(CellError, match=r"student eve: .*cpu 6 granted over all namespaces.*nobody was added"):
        check_prod_quota(specs_from_names(["dave", "eve"]), existing, capacity)
    # Re-adding an existing student does not count its quota twice.
    check_prod_quota(specs_from_names(["carol", "dave"]), existing, capacity)


def test_cli_errors_are_one_line_and_nothing_is_attempted(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in [
        (["students", "add"], "give student NAMEs or --roster FILE"),
        (["students", "add", "alice", "--roster", str(tmp_path / "r.yaml")], "exactly one of the two"),
        (["students", "add", "Bad_Name"], "not a valid student name"),
        (["students", "remove", "Bad_Name"], "not a valid student name"),
        (["students", "add", "--roster", str(tmp_path / "missing.csv")], "roster not found"),
    ]:
        result = runner.invoke(app, [*args, "--state-dir", str(tmp_path / "state")])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "state").exists()

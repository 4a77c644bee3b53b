"""The conformance runner's pure parts: its input, the JUnit it reads, the comparison it makes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cell.errors import CellError
from tests.conformance import run

JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" failures="1">
  <testsuite name="Kubernetes e2e suite" tests="4">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" time="1"></testcase>
    <testcase name="[sig-apps] Job should run a job" classname="Kubernetes e2e suite" time="5"></testcase>
    <testcase name="[sig-apps] Job should fail" classname="Kubernetes e2e suite" time="5">
      <failure message="timed out waiting&#xA;for the job" type="failed">stack</failure>
    </testcase>
    <testcase name="[sig-scheduling] SchedulerPredicates gpu" classname="Kubernetes e2e suite" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
  </testsuite>
</testsuites>
"""


def test_durations_and_a_clear_error_for_anything_else() -> None:
    assert [run.parse_duration(t) for t in ("90s", "75m", "2h")] == [90, 4500, 7200]
    for bad in ("75", "0m", "1d", "m"):
        with pytest.raises(CellError, match="not a duration"):
            run.parse_duration(bad)
    assert run.main(["--timeout", "soon"]) == 2


def test_junit_results_reads_passed_failed_and_skipped_specs(tmp_path: Path) -> None:
    with pytest.raises(CellError, match="no JUnit report"):
        run.junit_results(tmp_path)
    (tmp_path / "junit_01.xml").write_text(JUNIT)
    assert run.junit_results(tmp_path) == {
        "[sig-apps] Job should run a job": ("passed", ""),
        "[sig-apps] Job should fail": ("failed", "timed out waiting"),
        "[sig-scheduling] SchedulerPredicates gpu": ("skipped", ""),
    }


def test_a_spec_passing_without_the_extender_must_pass_with_it() -> None:
    without = {"a": ("passed", ""), "b": ("passed", ""), "c": ("failed", "x"), "d": ("passed", "")}
    with_extender = {"a": ("passed", ""), "b": ("failed", "y"), "c": ("passed", "")}  # d did not run at all
    assert run.regressions(with_extender, without) == ["b", "d"]
    table = run.summary_table({"with-extender": with_extender, "without-extender": without})
    assert re.search(r"with-extender\s+2\s+1\s+0", table) and "3 specs differ" in table


def test_the_focus_selects_the_issues_specs_and_the_skip_drops_the_rest() -> None:
    focus, skip = re.compile(run.FOCUS), re.compile(run.SKIP)

    def selected(name: str) -> bool:
        return bool(focus.search(name)) and not skip.search(name)

    assert selected("[sig-apps] Deployment deployment should support rollover [Conformance]")
    assert selected("[sig-api-machinery] ResourceQuota should verify ResourceQuota with terminating scopes.")
    assert selected("[sig-scheduling] Multi-AZ Clusters should spread the pods of a service across zones [Serial]")
    assert not selected("[sig-apps] StatefulSet Basic StatefulSet functionality should scale")
    assert not selected("[sig-apps] DaemonSet should run and stop simple daemon")
    assert not selected("[sig-scheduling] SchedulerPreemption [Serial] validates x [Feature:PodPriority]")
    assert not selected("[sig-apps] Deployment should not disrupt a cloud load-balancer [Flaky]")

"""`cell sim omega`: Omega's shared-state scheduling against a monolithic baseline (no cluster)."""

from __future__ import annotations

import csv
import functools
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cell.cli import app
from cell.sim.omega import (
    BATCH,
    SERVICE,
    Architecture,
    Commit,
    Conflicts,
    DecisionTime,
    OmegaJob,
    OmegaOptions,
    OmegaResult,
    OvercommitError,
    SharedCell,
    omega_workload,
    simulate_omega,
)
from scheduler_ext.policy.model import CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources

# Small enough for a unit test (about a second a run), busy enough to conflict.
BASE = OmegaOptions(hours=0.5)


@functools.cache
def run(t_job: float, architecture: Architecture = Architecture.SHARED_STATE,
        conflicts: Conflicts = Conflicts.FINE, commit: Commit = Commit.INCREMENTAL, seed: int = 0,
        load: float = 1.0) -> OmegaResult:
    return simulate_omega(replace(BASE, architecture=architecture, conflicts=conflicts, commit=commit, seed=seed,
                                  load=load, service_time=DecisionTime(t_job, 0.005), check_invariants=True))


def test_conflict_fraction_rises_with_the_service_decision_time() -> None:
    fractions = [run(t).agent_for(SERVICE).conflict_fraction for t in (0.1, 10.0, 100.0)]
    assert fractions[0] < 0.02, fractions
    assert fractions[0] < fractions[1] < fractions[2], fractions
    redone = [run(t).agent_for(SERVICE).tasks_redone for t in (0.1, 10.0, 100.0)]
    assert redone[0] < redone[1], redone


def test_conflicts_grow_with_load() -> None:
    low, high = (run(10.0, load=load).agent_for(SERVICE).conflict_fraction for load in (0.5, 2.0))
    assert low < high, (low, high)


@pytest.mark.parametrize(("conflicts", "commit"), [(c, m) for c in Conflicts for m in Commit])
def test_one_scheduler_never_conflicts(conflicts: Conflicts, commit: Commit) -> None:
    mono = run(30.0, Architecture.MONOLITHIC, conflicts, commit)
    (scheduler,) = mono.agents
    assert scheduler.transactions > 100 and scheduler.conflicted == 0 and scheduler.tasks_redone == 0
    # The shared-state machinery with only one scheduler committing (batch jobs only): no conflict either,
    # although tasks end and free machines between its snapshots and its commits.
    options = replace(BASE, conflicts=conflicts, commit=commit, check_invariants=True)
    batch_only = [job for job in omega_workload(options) if job.kind == BATCH]
    alone = simulate_omega(options, jobs=batch_only)
    assert alone.agent_for(BATCH).transactions > 100
    assert alone.agent_for(BATCH).conflicted == 0 and alone.agent_for(SERVICE).transactions == 0


def test_coarse_and_gang_conflict_at_least_as_much_as_fine_incremental() -> None:
    t_job = 30.0
    fine = run(t_job)
    coarse = run(t_job, conflicts=Conflicts.COARSE)
    gang = run(t_job, commit=Commit.GANG)
    assert coarse.agent_for(SERVICE).conflict_fraction >= fine.agent_for(SERVICE).conflict_fraction
    # A gang transaction throws away the claims that passed too: more work redone.
    assert gang.agent_for(SERVICE).tasks_redone > fine.agent_for(SERVICE).tasks_redone


def test_shared_state_keeps_batch_jobs_from_waiting_behind_slow_service_decisions() -> None:
    mono = run(30.0, Architecture.MONOLITHIC)
    shared = run(30.0)
    assert mono.kinds[BATCH].mean_wait > 5.0
    assert shared.kinds[BATCH].mean_wait < 0.5
    assert mono.agents[0].busyness > shared.agent_for(BATCH).busyness


def test_deterministic_for_a_seed() -> None:
    options = replace(BASE, hours=0.2, service_time=DecisionTime(10.0, 0.005))
    assert simulate_omega(options) == simulate_omega(options)
    assert simulate_omega(options) != simulate_omega(replace(options, seed=1))


# --- the shared state's transactions ---------------------------------------------------------------

def pod(name: str, cpu: int = 1000) -> PodInfo:
    return PodInfo("lab", name, f"uid-{name}", 300_000, Resources(cpu, 2**30), owner=f"lab/Job/{name}")


def two_machines() -> CellSnapshot:
    return CellSnapshot([NodeInfo("m1", Resources(2000, 8 * 2**30)), NodeInfo("m2", Resources(2000, 8 * 2**30))])


def test_a_claim_on_a_machine_filled_since_the_snapshot_is_refused() -> None:
    shared = SharedCell(two_machines())
    first, second = shared.snapshot(), shared.snapshot()
    assert shared.commit([(pod("a", 2000), "m1")], first.seen, Conflicts.FINE, Commit.INCREMENTAL).accepted
    outcome = shared.commit([(pod("b", 1000), "m1"), (pod("c"), "m2")], second.seen, Conflicts.FINE,
                            Commit.INCREMENTAL)
    assert [p.name for p in outcome.conflicted] == ["b"] and [n for _, n in outcome.accepted] == ["m2"]
    shared.check()
    assert shared.state.nodes["m1"].requested.cpu == 2000


def test_coarse_detection_refuses_a_claim_that_would_still_fit() -> None:
    shared = SharedCell(two_machines())
    first, second = shared.snapshot(), shared.snapshot()
    shared.commit([(pod("a", 500), "m1")], first.seen, Conflicts.COARSE, Commit.INCREMENTAL)
    fine = SharedCell(two_machines())
    fine.commit([(pod("a", 500), "m1")], fine.snapshot().seen, Conflicts.FINE, Commit.INCREMENTAL)
    claim = [(pod("b", 500), "m1")]
    assert shared.commit(claim, second.seen, Conflicts.COARSE, Commit.INCREMENTAL).conflicted
    assert fine.commit(claim, second.seen, Conflicts.FINE, Commit.INCREMENTAL).accepted


def test_a_gang_transaction_keeps_nothing_when_one_claim_conflicts() -> None:
    shared = SharedCell(two_machines())
    first, second = shared.snapshot(), shared.snapshot()
    shared.commit([(pod("a", 2000), "m1")], first.seen, Conflicts.FINE, Commit.INCREMENTAL)
    outcome = shared.commit([(pod("c"), "m2"), (pod("b"), "m1")], second.seen, Conflicts.FINE, Commit.GANG)
    assert outcome.accepted == () and [p.name for p in outcome.discarded] == ["c"]
    assert shared.state.nodes["m2"].pods == () and shared.seq["m2"] == 0


def test_the_overcommit_tripwire_fires() -> None:
    shared = SharedCell(two_machines())
    shared.state.bind(pod("a", 1500), "m1")
    shared.state.bind(pod("b", 1500), "m1")  # bypassing commit: what the check must catch
    with pytest.raises(OvercommitError, match="machine m1 holds cpu 3"):
        shared.check()


def test_the_shared_state_never_overcommits_under_heavy_load() -> None:
    for conflicts, commit in ((Conflicts.FINE, Commit.INCREMENTAL), (Conflicts.COARSE, Commit.GANG)):
        # check_invariants raises OvercommitError after any commit that overfills a machine.
        result = run(10.0, conflicts=conflicts, commit=commit, load=3.0)
        assert result.agent_for(BATCH).no_room > 0, "the cell was not full enough to test anything"
        assert result.cpu_utilisation > 0.7


# --- the command line ------------------------------------------------------------------------------

def test_cell_sim_omega_writes_csv_and_charts(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "omega", "--t-job-service", "0.1,10", "--loads", "1,2", "--hours",
                                      "0.1", "--variants", "fine/incremental,coarse/gang", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Omega: monolithic vs shared state" in result.output
    rows = list(csv.DictReader((tmp_path / "omega.csv").open()))
    # 2 t_job values x (monolithic: 1 scheduler + 2 variants x 2 schedulers) + 2 loads x 2 schedulers
    assert len(rows) == 2 * (1 + 2 * 2) + 2 * 2
    assert {r["scheduler"] for r in rows} == {"monolithic", "batch", "service"}
    for chart in ("omega-wait.png", "omega-busyness.png", "omega-conflicts.png", "omega-load.png"):
        assert (tmp_path / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart


@pytest.mark.parametrize(("args", "message"), [
    (["--variants", "fine/sometimes"], "--variants: variant 'fine/sometimes': expected CONFLICTS/COMMIT"),
    (["--t-job-service", "1,x"], "--t-job-service: expected comma-separated numbers, got '1,x'"),
    (["--loads", "0"], "--loads: every value must be a positive number"),
])
def test_cell_sim_omega_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["sim", "omega", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_a_gang_job_that_does_not_fit_whole_places_nothing() -> None:
    tasks = tuple(PodInfo("batch", f"g-{i}", f"uid-g-{i}", 500_000, Resources(1000, 2**30), owner="batch/Job/g")
                  for i in range(5))
    jobs = [OmegaJob("batch/g", BATCH, 1.0, 600.0, tasks)]
    options = replace(BASE, hours=0.05, max_attempts=3, check_invariants=True)
    gang = simulate_omega(replace(options, commit=Commit.GANG), two_machines(), jobs)
    incremental = simulate_omega(options, two_machines(), jobs)
    assert (gang.tasks_placed, gang.kinds[BATCH].abandoned) == (0, 1)
    assert gang.agent_for(BATCH).transactions == 0 and gang.agent_for(BATCH).no_room == 2
    assert incremental.tasks_placed == 4  # two machines of 2 cpu

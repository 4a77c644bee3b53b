"""`cell sim` through its command line: files and live, outputs, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cell.cli import app
from cell.sim.generate import cell_capacity, demand, generate, machine_counts
from cell.sim.snapshot import compact_cell, load_snapshot_file
from cell.sim.workload import load_workload
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import band_quota_of

ROOT = Path(__file__).resolve().parents[3]
CELL = str(ROOT / "docs/sim/cell.yaml")
CHECKPOINT = str(ROOT / "docs/sim/checkpoint.yaml")
WORKLOAD = str(ROOT / "docs/sim/workload.yaml")
OUTPUTS = ("placements.csv", "pending.csv", "preemptions.csv", "nodes.csv", "summary.json", "utilisation.png")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cell_sim_on_files_as_the_issue_writes_it(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "--cell", CELL, "--workload", WORKLOAD, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Refused at submission" in result.output and "bob/api" in result.output
    for name in OUTPUTS:
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "utilisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tasks"]["submitted"] == 80  # 85 in the file, bob/api's 5 refused whole
    assert summary["rejections"][0]["reason"] == "BandQuota bob/quota: band production needs cpu 5, 0 in use, limit 4"
    assert summary["allocs"][0]["phase"] == "Reserved"
    assert summary["tasks"]["placed"] + summary["tasks"]["pending"] == 80
    placements = (tmp_path / "placements.csv").read_text().splitlines()
    assert placements[0] == "task,job,band,node" and len(placements) == 1 + summary["tasks"]["placed"]


def test_run_subcommand_json_and_preemptions_from_a_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "run", "--cell", CHECKPOINT, "--workload", WORKLOAD, "--out", str(tmp_path),
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["preemptionsByBand"] == {"batch by production": 6}
    rows = (tmp_path / "preemptions.csv").read_text().splitlines()[1:]
    assert len(rows) == 6 and all(",batch," in row and ",production," in row for row in rows)


def test_generate_writes_files_that_simulate(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "generate", "--machines", "30", "--tasks", "300", "--seed", "4",
                                 "--out", str(tmp_path / "gen")])
    assert result.exit_code == 0, result.output
    cell = load_snapshot_file(tmp_path / "gen/cell.yaml")
    load = load_workload(tmp_path / "gen/workload.yaml")
    assert len(cell.nodes) == 30 and load.task_count == 300
    again = runner.invoke(app, ["sim", "--cell", str(tmp_path / "gen/cell.yaml"), "--workload",
                                str(tmp_path / "gen/workload.yaml"), "--out", str(tmp_path / "out")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "out/utilisation.png").exists()


def test_generated_shapes_are_borg_like() -> None:
    cell_doc, load = generate(2000, 20_000, seed=2)
    assert sum(machine_counts(2000)) == 2000 and len(cell_doc["machines"]) >= 4  # heterogeneous machines
    assert load.task_count == 20_000
    tasks_by_band = {band: sum(j.tasks for j in load.jobs if j.band == band) for band in
                     ("monitoring", "production", "batch", "best-effort")}
    jobs_by_band = {band: [j for j in load.jobs if j.band == band] for band in tasks_by_band}
    assert tasks_by_band["batch"] > 2 * tasks_by_band["production"]  # many batch tasks ...
    cpu = {band: sum(float(j.requests["cpu"].rstrip("m")) / (1000 if j.requests["cpu"].endswith("m") else 1)
                     * j.tasks for j in jobs) / max(tasks_by_band[band], 1) for band, jobs in jobs_by_band.items()}
    assert cpu["production"] > 2 * cpu["batch"]  # ... smaller than prod tasks
    sizes = sorted(j.tasks for j in load.jobs)
    assert sizes[len(sizes) // 2] * 10 < sizes[-1]  # heavy-tailed: the largest job dwarfs the median
    assert load.allocs and all(j.band == "production" for j in load.jobs if j.alloc)
    # Quotas: prod quota within the cell's capacity (Q6); the generated load fits its quotas.
    cell = compact_cell(cell_doc, "generated")
    prod_cpu = sum(q.prod.cpu for q in cell.quotas.values() if q is not None)
    assert prod_cpu <= cell_capacity(2000).cpu
    assert demand(load).cpu < cell_capacity(2000).cpu
    assert generate(2000, 20_000, seed=2) == (cell_doc, load)  # the seed decides everything
    quota, errors = band_quota_of({"metadata": {"namespace": "team-1", "name": "quota"},
                                   "spec": {"bands": cell_doc["quotas"]["team-1"]}})
    assert not errors and Band.BEST_EFFORT not in quota.limits  # best-effort stays unlimited


def test_checkpoint_of_an_unreachable_cell_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "checkpoint", "--out", str(tmp_path / "c.yaml"),
                                 "--kubeconfig", str(tmp_path / "missing.kubeconfig")])
    assert result.exit_code == 1
    assert "kubeconfig not found" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "c.yaml").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["sim", "--cell", CELL], "cell sim needs --workload FILE"),
    (["sim", "run", "--workload", WORKLOAD], "cell sim needs --cell SNAPSHOT|live"),
    (["sim", "--cell", "nope.yaml", "--workload", WORKLOAD], "nope.yaml: no such file"),
    (["sim", "--cell", CELL, "--workload", CELL], "kind: expected Workload, got 'Cell'"),
    (["sim", "--cell", WORKLOAD, "--workload", WORKLOAD], "kind 'Workload' is not part of a cell snapshot"),
    (["sim", "--cell", "live", "--workload", WORKLOAD, "--kubeconfig", "/nonexistent/kc"], "kubeconfig not found"),
    (["sim", "--cell", CELL, "run", "--workload", WORKLOAD], "after `run`"),
])
def test_bad_input_is_one_line_and_writes_nothing(runner: CliRunner, tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bare_cell_sim_prints_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sim"])
    assert result.exit_code == 0 and "generate" in result.output and "checkpoint" in result.output


def test_workload_round_trips_through_yaml(tmp_path: Path) -> None:
    _, load = generate(50, 500, seed=9)
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(load.to_document()))
    assert load_workload(path) == load

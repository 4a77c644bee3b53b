"""`cell sim compact`: Borg §5's cell compaction with the Fauxmaster's own scheduling pass (no cluster)."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cell.cli import app
from cell.errors import CellError
from cell.sim.compact import (
    BUCKETS,
    Fitter,
    Pool,
    bucketed,
    compact,
    compact_once,
    fine_grained,
    generated_pool,
    large_users,
    only_bands,
    powers_of_two,
)
from cell.sim.generate import generate
from cell.sim.workload import JobSpec, Workload
from scheduler_ext.policy.resources import Resources
from tests.unit.sim.sim_builders import job, nodes, workload

TRIALS = 3


@functools.cache
def small() -> tuple[Pool, Workload]:
    """A generated pool of 30 machines and 150 tasks: a few Fauxmaster passes per trial."""
    _, load = generate(30, 150, 4, 5)
    return generated_pool(30), fine_grained(load, 0.3, 4)


def test_compaction_is_deterministic_for_a_seed() -> None:
    pool, load = small()
    first = compact(pool, load, "w", TRIALS, 7, Fitter())
    again = compact(pool, load, "w", TRIALS, 7, Fitter())
    assert first == again
    assert all(0 < size <= len(pool.nodes) for size in first.sizes)


def test_a_workload_that_fits_on_n_machines_needs_at_most_n() -> None:
    pool = Pool(tuple(nodes(4, cpu="4", memory="16Gi")))
    exact = workload(job("fill", tasks=16, cpu="1", memory="1Gi"))  # exactly 4 machines' cpu
    for trial in range(TRIALS):
        assert compact_once(pool, exact, 0, trial, Fitter()) == 4
    # Heterogeneous machines: whatever order machines are removed in, never more than the pool.
    pool, load = small()
    fitter = Fitter()
    assert fitter.fits(pool, pool.names, load, 0)
    assert max(compact(pool, load, "w", TRIALS, 0, fitter).sizes) <= len(pool.nodes)


def test_a_workload_that_does_not_fit_says_so_in_one_line() -> None:
    pool = Pool(tuple(nodes(2, cpu="4", memory="16Gi")))
    with pytest.raises(CellError, match=r"^big: the workload does not fit even on all 2 machines of the pool"):
        compact(pool, workload(job("huge", tasks=9, cpu="1")), "big", 1, 0, Fitter())


def test_a_smaller_workload_needs_no_more_machines_than_a_superset() -> None:
    pool, load = small()
    # A superset: the same jobs plus best-effort ones (scheduled after every other task, they cannot
    # move one of them); and a subset: the prod part (scheduled before any non-prod task).
    extra = tuple(JobSpec(f"extra-{i}", "team-x", "best-effort", 6, {"cpu": "700m", "memory": "1Gi"})
                  for i in range(4))
    bigger = Workload(load.allocs, load.jobs + extra)
    prod = only_bands(load, True)
    fitter = Fitter()
    sizes = {name: compact(pool, w, name, TRIALS, 1, fitter).sizes
             for name, w in (("prod", prod), ("load", load), ("bigger", bigger))}
    for trial in range(TRIALS):
        assert sizes["prod"][trial] <= sizes["load"][trial] <= sizes["bigger"][trial], sizes


def test_request_transformations() -> None:
    load = workload(job("a", cpu="300m", memory="300Mi"), job("b", cpu="1", memory="1Gi"),
                    job("c", cpu="20", memory="1Gi"))
    rounded = {j.name: Resources.parse(dict(j.requests)) for j in powers_of_two(load).jobs}
    assert rounded["a"] == Resources(512, 512 * 2**20)
    assert rounded["b"] == Resources(1024, 2**30)
    buckets = {j.name: Resources.parse(dict(j.requests)) for j in bucketed(load).jobs}
    assert buckets["a"] == Resources(500, 2 * 2**30) == BUCKETS[1]
    assert buckets["c"] == Resources(20_000, 2**30)  # bigger than every bucket: kept
    jittered = fine_grained(load, 0.3, 1)
    assert jittered == fine_grained(load, 0.3, 1) and jittered != load
    assert fine_grained(load, 0, 1) == load


def test_large_users_are_the_biggest_askers() -> None:
    load = workload(job("a", tasks=10, namespace="ann"), job("b", tasks=2, namespace="bo"),
                    job("c", tasks=5, namespace="cy"))
    assert large_users(load, 2) == ["ann", "cy"]


# --- the command line ------------------------------------------------------------------------------

def test_cell_sim_compact_runs_an_experiment_and_writes_its_chart(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "compact", "-e", "segregate", "--machines", "20", "--tasks", "100",
                                      "--trials", "2", "--out", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "prod and non-prod in separate cells" in result.output
    rows = list(csv.DictReader((tmp_path / "compact.csv").open()))
    assert {r["cell"] for r in rows} == {"one shared cell", "prod cell", "non-prod cell"}
    assert len(rows) == 3 * 2
    for chart in ("compact-segregate.png", "compact-overheads.png"):
        assert (tmp_path / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart


def test_cell_sim_compact_on_files(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    cell = tmp_path / "cell.yaml"
    cell.write_text("apiVersion: sim.cell.distos.dev/v1alpha1\nkind: Cell\nmachines:\n"
                    "- {count: 24, cpu: '8', memory: 32Gi, zones: [zone-a, zone-b, zone-c], racksPerZone: 4}\n")
    result = CliRunner().invoke(app, ["sim", "compact", "--cell", str(cell), "--workload",
                                      str(root / "docs/sim/workload.yaml"), "--trials", "2", "--jitter", "0",
                                      "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "compact-summary.json").read_text())
    assert 0 < summary["baseline"]["p90"] <= 24 and summary["baseline"]["tasks"] == 85


def test_cell_sim_compact_unknown_experiment_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "compact", "-e", "bigger", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "--experiment: unknown experiment 'bigger'; known: segregate, users, powers-of-two, buckets, all" \
        in result.output
    assert not (tmp_path / "o").exists()

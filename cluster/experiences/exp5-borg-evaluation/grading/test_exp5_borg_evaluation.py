"""Grading checks of exp5-borg-evaluation; README.md says what each one looks for.

The students' numbers come from `cell sim compact` on their machines; the grader runs the same
deterministic compaction (`cell.sim.compact.generated_study`, the code behind the command) once per
grading session and compares. Every check only reads the student's ConfigMap `compaction`.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from cell.grading import ClusterView
from cell.sim.compact import EXPERIMENTS, CompactOptions, Study, generated_study

SHARED = pytest.mark.task(1, "Compacting the shared cell", points=2)
SEGREGATE = pytest.mark.task(2, "Prod and non-prod in separate cells", points=2)
USERS = pytest.mark.task(3, "Cells of their own for large users", points=2)
ROUNDING = pytest.mark.task(4, "Rounded and bucketed requests", points=2)
WHY = pytest.mark.task(5, "Why Cell is not Borg", points=2)

# The lab compaction (the ConfigMap exp5-borg-evaluation's lab-command; tests/unit/course holds the two
# to the same values). Teams and jitter are the command's defaults.
MACHINES, TASKS, TEAMS, TRIALS, SEED, JITTER, WORKLOAD_SEED = 40, 200, 8, 5, 0, 0.3, 0
LAB_COMMAND = f"cell sim compact --machines {MACHINES} --tasks {TASKS} --trials {TRIALS} --seed {SEED}"
BORG_SEGREGATION = (20.0, 30.0)
PERCENT_TOLERANCE = 0.6  # the table rounds to whole percent, --json to one decimal
ANSWERS = {"segregation-cost": "no-reclamation", "menu-rounding": "already-powers-of-two"}


@functools.cache
def lab(jitter: float = JITTER) -> Study:
    experiments = EXPERIMENTS if jitter == JITTER else ("powers-of-two",)
    return generated_study(MACHINES, TASKS, TEAMS, jitter, WORKLOAD_SEED, experiments,
                           CompactOptions(trials=TRIALS, seed=SEED))


def answers(cluster: ClusterView) -> dict[str, str]:
    data = cluster.require("ConfigMap", "compaction").get("data") or {}
    return {str(k): str(v).strip() for k, v in data.items()}


def answer(data: dict[str, str], key: str) -> str:
    value = data.get(key, "")
    assert value, f"ConfigMap compaction has no key {key}"
    return value


def number(data: dict[str, str], key: str) -> float:
    text = answer(data, key).strip().removesuffix("%").strip().removeprefix("+")  # "+25%" as the table prints
    try:
        return float(text)
    except ValueError:
        raise AssertionError(f"ConfigMap compaction: {key} is {data[key]!r}, not a number") from None


def check_percent(data: dict[str, str], key: str, expected: float, what: str, problems: list[str]) -> None:
    try:
        found = number(data, key)
    except AssertionError as exc:
        problems.append(str(exc))
        return
    if abs(found - expected) > PERCENT_TOLERANCE:
        problems.append(f"{key} is {data[key]}, not the percentage {what} that `{LAB_COMMAND}` gives")


def fail_on(problems: list[str]) -> None:
    assert not problems, "ConfigMap compaction: " + "; ".join(problems)


@SHARED
def test_shared_compaction(cluster: ClusterView) -> None:
    data = answers(cluster)
    baseline = lab().baseline
    problems = []
    if number(data, "shared-p90") != baseline.p90:
        problems.append(f"shared-p90 is {data['shared-p90']}, not the 90th percentile of the {TRIALS} trials "
                        f"of `{LAB_COMMAND}`")
    trials = [part.strip() for part in answer(data, "shared-trials").split(",")]
    if trials != [str(size) for size in baseline.sizes]:
        problems.append(f"shared-trials is {data['shared-trials']!r}, not the {TRIALS} trials' sizes in trial order")
    fail_on(problems)


def where(percent: float, band: tuple[float, float]) -> str:
    low, high = band
    return "below" if percent < low else "above" if percent > high else "within"


@SEGREGATE
def test_segregation(cluster: ClusterView) -> None:
    data = answers(cluster)
    segregate = lab().experiment("segregate")
    problems: list[str] = []
    if number(data, "segregate-p90") != segregate.alternative_p90:
        problems.append(f"segregate-p90 is {data['segregate-p90']}, not the 90th percentile of the prod + "
                        "non-prod cells' totals")
    check_percent(data, "segregate-overhead", segregate.overhead, "more machines with separate cells", problems)
    side = answer(data, "segregate-vs-borg").lower()
    if side not in ("below", "within", "above"):
        problems.append(f"segregate-vs-borg is {data['segregate-vs-borg']!r}; expected below, within or above")
    elif side != where(segregate.overhead, BORG_SEGREGATION):
        problems.append(f"segregate-vs-borg says {side}, which is not where Cell's segregation cost lies "
                        "against Borg's 20-30 %")
    fail_on(problems)


@USERS
def test_user_cells(cluster: ClusterView) -> None:
    data = answers(cluster)
    users = lab().experiment("users")
    problems: list[str] = []
    largest = users.parts[0].label.removeprefix("cell of ")
    if answer(data, "users-largest") != largest:
        problems.append(f"users-largest is {data['users-largest']!r}, not the user asking for most")
    check_percent(data, "users-overhead", users.overhead, "more machines with cells of their own", problems)
    fail_on(problems)


@ROUNDING
def test_request_rounding(cluster: ClusterView) -> None:
    data = answers(cluster)
    problems: list[str] = []
    check_percent(data, "powers-of-two-overhead", lab().experiment("powers-of-two").overhead,
                  "of -e powers-of-two", problems)
    check_percent(data, "buckets-overhead", lab().experiment("buckets").overhead, "of -e buckets", problems)
    check_percent(data, "powers-of-two-overhead-menu", lab(0.0).experiment("powers-of-two").overhead,
                  "of -e powers-of-two --jitter 0", problems)
    fail_on(problems)


@WHY
def test_interpretation(cluster: ClusterView) -> None:
    data = answers(cluster)
    problems: list[str] = []
    for key, right in ANSWERS.items():
        given: Any = data.get(key, "")
        if not given:
            problems.append(f"no key {key}")
        elif given.lower() != right:
            problems.append(f"{key} is {given!r}: that is not why (see docs/sim/compact.md)")
    fail_on(problems)

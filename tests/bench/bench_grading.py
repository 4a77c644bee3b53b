"""Benchmark: grading a class of 300 students with exp1-orchestration on a local cell (issue 17: < 60 s).

    .venv/bin/python tests/bench/bench_grading.py [--students 300] [--state-dir DIR] [--workers 16] [--record]

Without --state-dir it stands up a fresh local cell (a KWOK node per 3 students) in a temporary
directory and takes it down at the end. It onboards the students (`cell students add`), hands in
exp1's reference solution for each (tests/reference/apply.py, --workers at a time, without waiting),
waits once for the whole class to settle, and prints that setup time; then it times
`cell grade exp1-orchestration` end to end (process start, discovery, every check including the
self-healing one, reports) twice, and checks that every student scored 10/10 both times.
--record writes the result into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kubernetes.client import ApiClient
from rich.console import Console

from cell.grading import ready_endpoints
from cell.kube import connect, find_kubectl
from cell.localcell import lifecycle
from cell.localcell.supervisor import LocalCell
from cell.wait import wait_until
from scheduler_ext.kube.client import RawClient
from tests.bench.benchmarks_doc import BENCHMARKS, record_section
from tests.reference.apply import apply_reference

REPO = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- bench-grading: begin -->", "<!-- bench-grading: end -->"
EXPERIENCE = "exp1-orchestration"
SETTLE_TIMEOUT = 600.0
LIMIT_SECONDS = 60.0  # issue 17: 300 students in under 60 s (issue 8 had 30 in 2 min)


def cli(state_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "cell.cli", *args, "--state-dir", str(state_dir)],
                            capture_output=True, text=True, timeout=900, check=False, cwd=REPO)
    return result, time.monotonic() - started


def unsettled(api: ApiClient, students: list[str]) -> set[str]:
    """The students whose reference has not settled yet as solve_exp1 waits for it (Deployment web
    available, Job crunch complete, Service web with 3 ready endpoints), read cluster-wide: three
    lists for the class instead of three reads per student every half second."""
    raw = RawClient(api)
    web = {d["metadata"]["namespace"] for d in raw.get("/apis/apps/v1/deployments", timeout=60)["items"]
           if d["metadata"]["name"] == "web" and int((d.get("status") or {}).get("availableReplicas") or 0) >= 3}
    crunch = {j["metadata"]["namespace"] for j in raw.get("/apis/batch/v1/jobs", timeout=60)["items"]
              if j["metadata"]["name"] == "crunch" and any(
                  c.get("type") == "Complete" and c.get("status") == "True"
                  for c in (j.get("status") or {}).get("conditions") or [])}
    slices: dict[str, list[dict[str, Any]]] = {}
    for item in raw.get("/apis/discovery.k8s.io/v1/endpointslices", timeout=60)["items"]:
        slices.setdefault(item["metadata"]["namespace"], []).append(item)
    endpoints = {ns for ns, items in slices.items() if len(ready_endpoints(items).get("web", ())) >= 3}
    return set(students) - (web & crunch & endpoints)


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run(state_dir: Path, count: int, output: Path, workers: int) -> dict[str, object]:
    cell = LocalCell(state_dir)
    students = [f"bench-{i:02d}" for i in range(1, count + 1)]
    added, onboard_seconds = cli(state_dir, "students", "add", *students)
    if added.returncode:
        raise SystemExit(f"students add failed: {added.stderr.strip()}")
    api = connect(cell.kubeconfig)
    kubectl = find_kubectl(state_dir)
    started = time.monotonic()

    def hand_in(student: str) -> None:
        # timeout 0: hand in and go on; the whole class is waited for at once below, instead of each
        # worker idling while its student's pods start and its Job runs.
        apply_reference(EXPERIENCE, student, admin_kubeconfig=cell.kubeconfig, kubectl=kubectl, api=api,
                        state_dir=state_dir, timeout=0)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(hand_in, students))
    applied_seconds = time.monotonic() - started
    waiting = wait_until(lambda: not unsettled(api, students), SETTLE_TIMEOUT, interval=1.0)
    setup_seconds = time.monotonic() - started
    if not waiting:
        raise SystemExit(f"not settled after {SETTLE_TIMEOUT:.0f} s: {sorted(unsettled(api, students))[:10]}")
    print(f"setup: {count} students added in {onboard_seconds:.1f} s; {count} reference solutions applied "
          f"({workers} at a time) in {applied_seconds:.1f} s, settled (web available with 3 ready endpoints, "
          f"crunch complete) after {setup_seconds:.1f} s; load average {load()}", flush=True)
    runs = []
    loads = []
    for attempt in (1, 2):
        loads.append(load())
        result, seconds = cli(state_dir, "grade", EXPERIENCE, "--output", str(output / f"run{attempt}"))
        if result.returncode:
            raise SystemExit(f"cell grade failed: {result.stderr.strip()}")
        rows = list(csv.DictReader((output / f"run{attempt}" / "summary.csv").open()))
        mine = {r["student"]: r["total"] for r in rows if r["student"] in students}
        if sorted(mine) != sorted(students) or set(mine.values()) != {"10"}:
            raise SystemExit(f"run {attempt}: not every bench student scored 10: {mine}")
        runs.append({"seconds": round(seconds, 1), "graded": len(rows), "totals": mine})
        print(f"grading run {attempt}: {len(rows)} students in {seconds:.1f} s (load average {loads[-1]} before, "
              f"{load()} after)", flush=True)
    if runs[0]["totals"] != runs[1]["totals"]:
        raise SystemExit("the two grading runs disagree")
    return {"students": count, "graded": runs[0]["graded"], "setup_seconds": round(setup_seconds, 1),
            "onboard_seconds": round(onboard_seconds, 1), "nodes": cell.ready_nodes()[1],
            "workers": workers, "loads": loads,
            "grade_seconds": [r["seconds"] for r in runs]}


def record(result: dict[str, object], command: str) -> None:
    seconds = result["grade_seconds"]
    loads = result["loads"]
    assert isinstance(seconds, list) and isinstance(loads, list)
    verdict = "meets" if max(seconds) < LIMIT_SECONDS else "MISSES"
    record_section(BEGIN, END, [
        f"## Grading (issues 8 and 17): {result['students']} students, exp1-orchestration, local cell",
        "",
        f"Command: `{command}` ({result['nodes']} KWOK nodes). {result['students']} students onboarded with "
        "`cell students add`, exp1's reference solution applied for each, then `cell grade exp1-orchestration` "
        "timed end to end (process start, student discovery, all 9 checks per student including the "
        "self-healing one that deletes a web pod and waits for its replacement, report and summary CSV), twice.",
        "",
        "| measured | students graded | setup | run 1 | run 2 | limit |",
        "|---|---|---|---|---|---|",
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, {os.cpu_count()} cores | "
        f"{result['graded']} | {result['onboard_seconds']} s add + {result['setup_seconds']} s hand-in | "
        f"**{seconds[0]} s** (load {loads[0]}) | **{seconds[1]} s** (load {loads[1]}) | "
        f"{LIMIT_SECONDS:.0f} s ({verdict}) |",
        "",
        f"Every student scored 10/10 in both runs (same outcome). Setup is not part of the measurement: "
        f"`cell students add` of the class, then the reference solutions handed in ({result['workers']} at a "
        "time, each as its student through kubectl) and waited for together until every Deployment web is "
        "available with 3 ready endpoints and every Job crunch complete. Load averages are 1/5/15 min, "
        "taken just before each run; the machine is shared with other work.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--state-dir", type=Path, help="use this running local cell instead of a fresh one")
    parser.add_argument("--workers", type=int, default=16, help="reference solutions applied at a time (setup)")
    parser.add_argument("--record", action="store_true", help=f"write the result into {BENCHMARKS}")
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        state_dir = args.state_dir or Path(tmp) / "cell"
        if args.state_dir is None:
            # Q6: every student's 2 production CPUs must fit in the cell (8 per KWOK node), with room.
            lifecycle.up(nodes=max(12, -(-args.students // 3)), state_dir=state_dir, console=console)
        try:
            result = run(state_dir, args.students, Path(tmp) / "reports", args.workers)
        finally:
            if args.state_dir is None:
                lifecycle.down(state_dir=state_dir, console=console)
    print(f"graded {result['graded']} students ({args.students} bench students) with {EXPERIENCE}: "
          f"{result['grade_seconds'][0]} s, then {result['grade_seconds'][1]} s (limit {LIMIT_SECONDS:.0f} s); "
          f"setup {result['setup_seconds']} s")
    if args.record:
        record(result, "python tests/bench/bench_grading.py " + " ".join(sys.argv[1:]))
        print(f"recorded in {BENCHMARKS.relative_to(REPO)}")
    return 0 if max(result["grade_seconds"]) < LIMIT_SECONDS else 1  # type: ignore[type-var]


if __name__ == "__main__":
    sys.exit(main())

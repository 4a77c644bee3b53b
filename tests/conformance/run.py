"""`make conformance`: upstream's own e2e specs against the local cell, with Cell's extender and without.

    python -m tests.conformance.run [--state-dir DIR] [--report-dir DIR] [--timeout 75m] [--procs 4]
                                    [--seed N] [--subset all|serial|parallel] [--only with|without]

Builds (once) upstream's e2e.test (`cell.upstream.ensure_e2e`), brings up a local cell in --state-dir
(or reuses the running one there, or CELL_TEST_STATE_DIR's), and runs the scheduling, workload and
quota specs (FOCUS, less SKIP) twice on that same cell: with kube-scheduler calling Cell's extender,
then with kube-scheduler restarted on the stock profile (what `CELL_WITHOUT=extender cell up` runs),
then back. Everything else (nodes, webhook, operator) stays. Each run writes its JUnit file and log
to <report-dir>/<run>/; the summary table goes to stdout and <report-dir>/summary.json.

Exit status: 0 if every spec that passed without the extender passed with it, 1 if one did not, 2 on
bad input or when a run could not be made. A cell this command brought up is taken down at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec
from rich.console import Console

from cell import upstream
from cell.errors import CellError
from cell.localcell import lifecycle, topology
from cell.localcell.supervisor import LocalCell

REPO_ROOT = Path(__file__).resolve().parents[2]
# Issue 13 item 7: scheduling, the workload controllers whose pods the extender places, and quota
# (which Cell's webhook extends). Spec names read "[sig-apps] Deployment deployment should ...".
FOCUS = (r"\[sig-scheduling\]|\[sig-apps\] (Deployment|ReplicaSet|Job|DisruptionController) "
         r"|\[sig-api-machinery\] ResourceQuota ")
# Disruptive specs restart components the local cell supervises; Flaky ones prove nothing either
# way; Feature specs need features off by default or a cloud.
SKIP = r"\[Disruptive\]|\[Flaky\]|\[Feature:"
RUNS = ("with-extender", "without-extender")
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
DURATION = re.compile(r"^(\d+)([smh])$")


def parse_duration(text: str) -> int:
    """Seconds of "90s", "75m" or "2h"; CellError otherwise."""
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise CellError(f"--timeout {text!r} is not a duration like 75m, 90s or 2h")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


# --subset: ginkgo runs [Serial] specs one at a time after all others, so a timeout falls on them
# first; each subset can be run (and compared) on its own. "Serial" is the specs' ginkgo label.
SUBSETS = {"all": "", "serial": "Serial", "parallel": "!Serial"}


def in_subset(name: str, subset: str) -> bool:
    return subset == "all" or ("[Serial]" in name) == (subset == "serial")


def e2e_command(e2e: Path, kubeconfig: Path, kubectl: Path, report_dir: Path, timeout: int, procs: int,
                seed: int, subset: str = "all", focus: str = FOCUS, skip: str = SKIP) -> list[str]:
    """ginkgo's CLI running e2e.test in `procs` processes ([Serial] specs still run alone, at the end).

    Both runs take the same seed, so they run the specs in the same order: when the timeout cuts a
    run short, both have got about as far."""
    return [
        str(e2e.with_name(upstream.GINKGO_BINARY.name)), "run", f"--procs={procs}", f"--seed={seed}",
        f"--focus={focus}",
        f"--skip={skip}", *([f"--label-filter={SUBSETS[subset]}"] if SUBSETS[subset] else []),
        f"--timeout={timeout}s", "--no-color", "-v", str(e2e), "--",
        f"--kubeconfig={kubeconfig}", "--provider=skeleton", f"--kubectl-path={kubectl}",
        f"--report-dir={report_dir}", f"--e2e-output-dir={report_dir}",
        # KWOK nodes have no kubelet or SSH to collect logs from.
        "--disable-log-dump", "--dump-logs-on-failure=false",
    ]


def junit_results(report_dir: Path, subset: str = "all", focus_text: str = FOCUS) -> dict[str, tuple[str, str]]:
    """Spec name -> (passed | failed | skipped, the failure's first line) from the run's JUnit files,
    for the specs the focus, SKIP and the subset select (the file lists every spec of the suite)."""
    focus, skip = re.compile(focus_text), re.compile(SKIP)
    files = sorted(report_dir.glob("junit*.xml"))
    if not files:
        raise CellError(f"no JUnit report in {report_dir}: e2e.test did not get to run (see its e2e.log)")
    results: dict[str, tuple[str, str]] = {}
    for path in files:
        for case in ET.parse(path).getroot().iter("testcase"):
            name = case.get("name", "").removeprefix("[It] ")
            if not focus.search(name) or skip.search(name) or not in_subset(name, subset):
                continue
            if name.startswith("[SynchronizedBeforeSuite]") or name.startswith("[ReportAfterSuite]") \
                    or name.startswith("[SynchronizedAfterSuite]") or name.startswith("[ReportBeforeSuite]"):
                continue
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            if case.find("skipped") is not None:
                results[name] = (SKIPPED, "")
            elif failure is not None:
                message = (failure.get("message") or failure.text or "").strip()
                results[name] = (FAILED, message.splitlines()[0][:300] if message else "")
            else:
                results[name] = (PASSED, "")
    return results


def regressions(with_extender: Mapping[str, tuple[str, str]],
                without_extender: Mapping[str, tuple[str, str]]) -> list[str]:
    """Specs that passed without the extender and did not pass with it (the rule: none)."""
    return sorted(name for name, (status, _) in without_extender.items()
                  if status == PASSED and with_extender.get(name, (FAILED, ""))[0] != PASSED)


def summary_table(results: Mapping[str, Mapping[str, tuple[str, str]]]) -> str:
    lines = [f"{'run':<18} {'passed':>6} {'failed':>6} {'skipped':>7}"]
    for run, specs in results.items():
        counts = Counter(status for status, _ in specs.values())
        lines.append(f"{run:<18} {counts[PASSED]:>6} {counts[FAILED]:>6} {counts[SKIPPED]:>7}")
    if len(results) == 2:
        with_ext, without_ext = (results[run] for run in RUNS)
        differ = sorted(name for name in set(with_ext) | set(without_ext)
                        if with_ext.get(name, ("absent", ""))[0] != without_ext.get(name, ("absent", ""))[0])
        lines.append(f"\n{len(differ)} specs differ (with / without the extender):")
        for name in differ:
            lines.append(f"  {with_ext.get(name, ('absent', ''))[0]:>7} / {without_ext.get(name, ('absent', ''))[0]:<7}"
                         f"  {name}")
    return "\n".join(lines)


@contextlib.contextmanager
def stock_scheduler(cell: LocalCell) -> Iterator[None]:
    """kube-scheduler on the stock profile (no extender, upstream's default scoring), then back."""
    stock = msgspec.structs.replace(cell.record, without=sorted({*cell.record.without, "extender"}))
    cell.paths.scheduler_config.write_text(topology.scheduler_config(cell.paths, stock)[0])
    cell.restart("kube-scheduler")
    try:
        yield
    finally:
        cell.paths.scheduler_config.write_text(topology.scheduler_config(cell.paths, cell.record)[0])
        cell.restart("kube-scheduler")


def run_specs(e2e: Path, cell: LocalCell, report_dir: Path, timeout: int, procs: int, seed: int, subset: str,
              focus: str, console: Console) -> dict[str, tuple[str, str]]:
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in report_dir.glob("junit*.xml"):
        old.unlink()
    cmd = e2e_command(e2e, cell.kubeconfig, cell.kubectl, report_dir, timeout, procs, seed, subset, focus)
    log = report_dir / "e2e.log"
    console.print(f"[bold]{report_dir.name}[/]: e2e.test (log: {log})")
    started = time.monotonic()
    with log.open("w") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        # Some margin over ginkgo's own timeout for its reports; the cell keeps the CPU first.
        subprocess.run(["nice", "-n", "10", *cmd], stdout=handle, stderr=subprocess.STDOUT, cwd=report_dir,
                       timeout=timeout + 300, check=False)
    results = junit_results(report_dir, subset, focus)
    console.print(f"{report_dir.name}: {len(results)} specs in {time.monotonic() - started:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make conformance", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the local cell to use (default: CELL_TEST_STATE_DIR, else /tmp/cell-conformance)")
    parser.add_argument("--report-dir", type=Path, default=REPO_ROOT / "reports" / "conformance")
    parser.add_argument("--timeout", default="75m", help="ginkgo's timeout for each run (default 75m)")
    parser.add_argument("--only", choices=("with", "without"), default=None, help="make one run only")
    parser.add_argument("--focus", default=FOCUS, help="ginkgo's focus regex (default: the issue's specs)")
    parser.add_argument("--name", default="", help="names this run's report directories (default: the subset)")
    parser.add_argument("--subset", choices=sorted(SUBSETS), default="all",
                        help="all specs, the [Serial] ones only, or the others only (default all)")
    parser.add_argument("--procs", type=int, default=4, help="parallel ginkgo processes (default 4)")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000,
                        help="ginkgo's seed for the spec order, the same in both runs (default: from the clock)")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    made_here = False
    cell: LocalCell | None = None
    try:
        timeout = parse_duration(args.timeout)
        if args.procs < 1:
            raise CellError(f"--procs {args.procs}: at least 1")
        state_dir = args.state_dir or Path(os.environ.get("CELL_TEST_STATE_DIR") or "/tmp/cell-conformance")
        e2e = upstream.ensure_e2e(console=console)
        cell = LocalCell(state_dir)
        if not cell.exists():
            lifecycle.up(state_dir=state_dir, console=console)
            made_here = True
            cell = LocalCell(state_dir)
        if "extender" in cell.record.without:
            raise CellError(f"the cell at {state_dir} runs without the extender (CELL_WITHOUT): the comparison "
                            "needs a cell with it")
        results: dict[str, dict[str, tuple[str, str]]] = {}
        for run, which in zip(RUNS, ("with", "without"), strict=True):
            prefix = args.name or ("" if args.subset == "all" else args.subset)
            report_dir = args.report_dir / (f"{prefix}-{run}" if prefix else run)
            if args.only not in (None, which):
                if any(report_dir.glob("junit*.xml")):  # compared with an earlier run of the other half
                    results[run] = junit_results(report_dir, args.subset, args.focus)
                continue
            scheduler = contextlib.nullcontext() if which == "with" else stock_scheduler(cell)
            with scheduler:
                results[run] = run_specs(e2e, cell, report_dir, timeout, args.procs, args.seed, args.subset,
                                         args.focus, console)
    except (CellError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    finally:
        if made_here:
            lifecycle.down(state_dir=cell.state_dir if cell else None, console=console)
    runs = {run: {name: {"status": status, "message": message} for name, (status, message) in specs.items()}
            for run, specs in results.items()}
    summary: dict[str, object] = {"focus": FOCUS, "skip": SKIP, "seed": args.seed, "procs": args.procs,
                                  "subset": args.subset, "focus_used": args.focus, "runs": runs}
    lost = regressions(*(results[run] for run in RUNS)) if len(results) == 2 else []
    summary["regressions"] = lost
    summary_file = args.report_dir / f"summary-{args.name or args.subset}.json"
    summary_file.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(summary_table(results))
    if lost:
        print(f"\n{len(lost)} specs pass without the extender but not with it:", *lost, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

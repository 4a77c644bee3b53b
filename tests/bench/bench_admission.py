"""`make bench-admission`: what the quota webhook adds to a create, from the API server's own histograms.

    .venv/bin/python tests/bench/bench_admission.py [--state-dir DIR] [--namespaces 300] [--creates 1000] [--record]

In one run, against one cell: 300 students are onboarded with Cell's own `add_students` (managed
namespaces: the API server calls the quota webhook for every create there) and 300 plain namespaces
are made beside them (unmanaged: no webhook call); the setup time is printed. Then bursts of pod
creates from a thread pool, spread round-robin over the namespaces, 1,000 managed and 1,000 unmanaged
in all, in alternating halves. The API server's /metrics (admin kubeconfig) is scraped before and after
every half, and the bucket deltas give, like PromQL's histogram_quantile:
- `apiserver_admission_webhook_admission_duration_seconds` for Cell's webhook (CREATE, validating):
  the admission latency the API server measures around its call, target p99 < 10 ms;
- `apiserver_request_duration_seconds` for the pod POSTs of the managed halves, and of the unmanaged
  ones (the baseline: the same create without the webhook);
- the webhook's own `cell_quota_admission_seconds` (its handler, scraped from the webhook).
The API server's buckets are coarse (5, 25, 100 ms...): each figure is printed with the bucket it
falls in, and the mean (from _sum/_count) beside it.

Uses the cell in --state-dir (or $CELL_STATE_DIR, or the default) if one is up, otherwise stands
up a temporary one and takes it down afterwards.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import ssl
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from kubernetes import client
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cell.kube import api_client  # noqa: E402
from cell.localcell import lifecycle  # noqa: E402
from cell.localcell.supervisor import LocalCell  # noqa: E402
from cell.students import StudentSpec, add_students, remove_students  # noqa: E402
from scheduler_ext.kube.client import RawClient  # noqa: E402
from tests.bench.benchmarks_doc import BENCHMARKS, record_section  # noqa: E402
from tests.bench.histograms import (  # noqa: E402
    Buckets,
    bucket_delta,
    bucket_of,
    histogram_buckets,
    histogram_quantile,
    series_sum,
    total,
)
from tests.integration.helpers import restricted  # noqa: E402

console = Console(width=160)  # the table is wider than a terminal's default
# Non-prod quota may be oversold (Q6), so a generous batch band costs the cell nothing.
BENCH_BANDS = {"batch": {"cpu": "64", "memory": "64Gi"}}


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            # Gated: the scheduler, extender and KWOK leave these pods alone, so the burst measures
            # admission rather than the scheduling that would otherwise follow every create.
            "spec": restricted({"priorityClassName": "batch", "schedulingGates": [{"name": "cell.distos.dev/bench"}],
                                "containers": [{"name": "task", "image": "cell.local/shell:1.0",
                                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]})}


WEBHOOK = "workloads.quota.cell.distos.dev"  # cluster/webhook/validating-webhook.yaml
ADMISSION = "apiserver_admission_webhook_admission_duration_seconds"
REQUESTS = "apiserver_request_duration_seconds"
HANDLER = "cell_quota_admission_seconds"
TARGET_P99_MS = 10.0
BEGIN, END = "<!-- bench-admission: begin -->", "<!-- bench-admission: end -->"
WEBHOOK_CALLS = {"name": WEBHOOK, "operation": "CREATE", "type": "validating"}
T = TypeVar("T")
POD_POSTS = {"verb": "POST", "group": "", "resource": "pods", "subresource": ""}


def in_pool(work: Callable[[int], T], count: int, concurrency: int) -> list[T]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(work, range(count)))


def creates(core: client.CoreV1Api, namespaces: list[str], prefix: str, count: int, concurrency: int) -> list[float]:
    """count pod creates from `concurrency` threads, spread round-robin over the namespaces; each one's
    latency as the client saw it, in seconds."""
    def create(i: int) -> float:
        started = time.perf_counter()
        # Raw response: the client's model deserialisation would be measured (and hold the GIL) otherwise.
        response = core.create_namespaced_pod(namespaces[i % len(namespaces)], pod(f"{prefix}-{i:04d}"),
                                              _request_timeout=30, _preload_content=False)
        response.read()
        return time.perf_counter() - started

    return in_pool(create, count, concurrency)


def client_quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


@dataclass
class Histogram:
    """A histogram's observations between scrapes, added up over the bursts of one kind."""

    buckets: Buckets = field(default_factory=dict)
    seconds: float = 0.0  # the _sum delta

    def add(self, buckets: Buckets, seconds: float) -> None:
        for bound, count in buckets.items():
            self.buckets[bound] = self.buckets.get(bound, 0.0) + count
        self.seconds += seconds

    @property
    def count(self) -> int:
        return int(total(self.buckets)) if self.buckets else 0

    def row(self, label: str) -> str:
        if not self.count:
            return f"  {label:<52}{'(no observations)':>30}"
        p50, p99 = (histogram_quantile(q, self.buckets) * 1000 for q in (0.5, 0.99))
        low, high = bucket_of(0.99, self.buckets)
        return (f"  {label:<52}{self.count:>6}{p50:>9.2f}{p99:>9.2f}{self.seconds / self.count * 1000:>9.2f}"
                f"   ({low * 1000:g}, {high * 1000:g}] ms")

    def figures(self) -> dict[str, object]:
        if not self.count:
            return {"count": 0}
        return {"count": self.count, "p50_ms": round(histogram_quantile(0.5, self.buckets) * 1000, 2),
                "p99_ms": round(histogram_quantile(0.99, self.buckets) * 1000, 2),
                "mean_ms": round(self.seconds / self.count * 1000, 2),
                "p99_bucket_ms": [b * 1000 for b in bucket_of(0.99, self.buckets)]}


class Scraper:
    """The API server's /metrics (admin credentials) and the webhook's, as text."""

    def __init__(self, cell: LocalCell) -> None:
        self._raw = RawClient(api_client(cell.paths.kubeconfig))
        self._context = ssl.create_default_context(cafile=str(cell.paths.pki_dir / "ca.crt"))
        self._webhook = f"https://127.0.0.1:{cell.port('webhook')}/metrics"

    def apiserver(self) -> str:
        return self._raw.request("GET", "/metrics", accept="text/plain", timeout=30).decode()

    def webhook(self) -> str:
        with urllib.request.urlopen(self._webhook, context=self._context, timeout=10) as response:
            return str(response.read().decode())


def observed(before: str, after: str, metric: str, match: dict[str, str]) -> tuple[Buckets, float]:
    buckets = bucket_delta(histogram_buckets(before, metric, match), histogram_buckets(after, metric, match))
    return buckets, series_sum(after, metric + "_sum", match) - series_sum(before, metric + "_sum", match)


def setup(core: client.CoreV1Api, cell: LocalCell, count: int, tag: str, concurrency: int
          ) -> tuple[list[str], list[str], float, float]:
    """`count` students (Cell's onboarding) and `count` plain namespaces; the seconds each took."""
    students = [f"bench-{tag}-{i:03d}" for i in range(count)]
    plain = [f"bench-plain-{tag}-{i:03d}" for i in range(count)]
    quiet = Console(stderr=True, quiet=True)
    started = time.monotonic()
    # add_students onboards one student after another (apply, certificate, wait for the
    # ServiceAccount); batches of it side by side make 300 take seconds rather than minutes.
    batch = max(1, math.ceil(count / concurrency))
    batches = [students[i:i + batch] for i in range(0, count, batch)]

    def onboard(i: int) -> None:
        add_students([StudentSpec(name, BENCH_BANDS) for name in batches[i]], cell.paths, quiet)

    in_pool(onboard, len(batches), concurrency)
    managed_seconds = time.monotonic() - started
    started = time.monotonic()

    def make_plain(i: int) -> None:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=plain[i])), _request_timeout=30)
        wait_for_service_account(core, plain[i])

    in_pool(make_plain, count, concurrency)
    return students, plain, managed_seconds, time.monotonic() - started


def wait_for_service_account(core: client.CoreV1Api, namespace: str) -> None:
    deadline = time.monotonic() + 60
    while not core.list_namespaced_service_account(namespace).items and time.monotonic() < deadline:
        time.sleep(0.2)  # pods are refused until the controller-manager made the default ServiceAccount


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def run(cell: LocalCell, namespaces: int, count: int, concurrency: int) -> dict[str, object]:
    api = api_client(cell.paths.kubeconfig)
    api.configuration.connection_pool_maxsize = concurrency * 2
    api = client.ApiClient(api.configuration)
    core = client.CoreV1Api(api)
    scraper = Scraper(cell)
    tag = uuid.uuid4().hex[:4]
    students, plain, managed_setup, plain_setup = setup(core, cell, namespaces, tag, 8)
    console.print(f"setup: {namespaces} students onboarded with add_students in {managed_setup:.1f} s "
                  f"(8 batches side by side), {namespaces} plain namespaces in {plain_setup:.1f} s; "
                  f"load average {load()}")
    try:
        # Warm up connections and caches on both paths before measuring.
        creates(core, students, "warm", 2 * concurrency, concurrency)
        creates(core, plain, "warm", 2 * concurrency, concurrency)
        load_before = load()
        calls, managed_posts, plain_posts, handler, plain_calls = (Histogram() for _ in range(5))
        client_side: dict[str, list[float]] = {"managed": [], "unmanaged": []}
        halves = [("managed", students, count - count // 2), ("unmanaged", plain, count - count // 2),
                  ("unmanaged", plain, count // 2), ("managed", students, count // 2)]
        started = time.monotonic()
        for round_, (kind, targets, n) in enumerate(halves):
            before, hook_before = scraper.apiserver(), scraper.webhook()
            client_side[kind] += creates(core, targets, f"r{round_}", n, concurrency)
            after, hook_after = scraper.apiserver(), scraper.webhook()
            if kind == "managed":
                calls.add(*observed(before, after, ADMISSION, WEBHOOK_CALLS))
                managed_posts.add(*observed(before, after, REQUESTS, POD_POSTS))
                handler.add(*observed(hook_before, hook_after, HANDLER, {"kind": "Pod"}))
            else:
                plain_calls.add(*observed(before, after, ADMISSION, WEBHOOK_CALLS))
                plain_posts.add(*observed(before, after, REQUESTS, POD_POSTS))
        burst_seconds = time.monotonic() - started
        load_after = load()
    finally:
        remove_students(students, cell.paths, wait=None)
        for name in plain:
            core.delete_namespace(name, _request_timeout=30)
    if plain_calls.count:
        raise SystemExit(f"the webhook was called {plain_calls.count} times for unmanaged namespaces")
    bounds = sorted(b * 1000 for b in calls.buckets if b != math.inf)
    console.print(f"{count} creates in {namespaces} managed namespaces and {count} in {namespaces} unmanaged ones, "
                  f"{concurrency} concurrent, alternating halves, {burst_seconds:.1f} s in all; "
                  f"load average {load_before} before, {load_after} after, {os.cpu_count()} CPUs")
    console.print(f"  {'histogram (bucket deltas over the bursts)':<52}{'count':>6}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'mean ms':>9}   p99's bucket")
    console.print(calls.row(f"API server: {WEBHOOK} call"))
    console.print(handler.row(f"webhook: {HANDLER}{{kind=Pod}}"))
    console.print(plain_posts.row("API server: POST pods, unmanaged (baseline)"))
    console.print(managed_posts.row("API server: POST pods, managed"))
    for kind, samples in client_side.items():
        console.print(f"  {'client: create, ' + kind:<52}{len(samples):>6}{client_quantile(samples, 0.5) * 1000:>9.2f}"
                      f"{client_quantile(samples, 0.99) * 1000:>9.2f}{sum(samples) / len(samples) * 1000:>9.2f}")
    console.print(f"  the API server's admission buckets (ms): {', '.join(f'{b:g}' for b in bounds)}")
    figures = calls.figures()
    p99 = float(figures.get("p99_ms", math.nan))
    verdict = "meets" if p99 < TARGET_P99_MS else "MISSES"
    console.print(f"admission p99 {p99:.2f} ms (API server's histogram) vs target {TARGET_P99_MS:g} ms: {verdict}")
    result: dict[str, object] = {
        "namespaces": namespaces, "creates": count, "concurrency": concurrency,
        "setup_managed_s": round(managed_setup, 1), "setup_plain_s": round(plain_setup, 1),
        "burst_s": round(burst_seconds, 1), "load_before": load_before, "load_after": load_after,
        "webhook_call": figures, "handler": handler.figures(), "posts_unmanaged": plain_posts.figures(),
        "posts_managed": managed_posts.figures(), "buckets_ms": bounds, "verdict": verdict,
        "client": {k: {"p50_ms": round(client_quantile(v, 0.5) * 1000, 1),
                       "p99_ms": round(client_quantile(v, 0.99) * 1000, 1)} for k, v in client_side.items()},
    }
    if verdict == "MISSES":
        result["dominates"] = dominates(calls, handler)
        console.print(f"what dominates: {result['dominates']}")
    return result


def dominates(calls: Histogram, handler: Histogram) -> str:
    """Where the admission time goes, by the means (the buckets are too coarse to subtract quantiles)."""
    call = calls.seconds / max(calls.count, 1) * 1000
    inside = handler.seconds / max(handler.count, 1) * 1000
    outside = call - inside
    where = ("the time around the webhook's handler, not the handler: the API server encoding the "
             "AdmissionReview and calling out over TLS, the webhook process reading and decoding it, and "
             "both queueing for the 2 shared CPUs" if outside > inside else "the webhook's handler")
    return f"{where}: mean {call:.2f} ms per call, of which {inside:.2f} ms in the handler, {outside:.2f} ms around it"


def record(result: dict[str, object], command: str) -> None:
    def cells(figures: object) -> str:
        assert isinstance(figures, dict)
        if not figures.get("count"):
            return "- | - | - | -"
        low, high = figures["p99_bucket_ms"]
        return (f"{figures['count']} | {figures['p50_ms']} / **{figures['p99_ms']}** ms | {figures['mean_ms']} ms | "
                f"({low:g}, {high:g}] ms")

    client_side = result["client"]
    assert isinstance(client_side, dict)
    buckets = result["buckets_ms"]
    assert isinstance(buckets, list)
    lines = [
        "## Quota admission (issue 17 item 2, make bench-admission)",
        "",
        f"Command: `{command}` on a cell of its own; measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on "
        f"{platform.machine()}, {os.cpu_count()} cores shared with other work, load average "
        f"{result['load_before']} (1/5/15 min) before, {result['load_after']} after.",
        "",
        f"Setup: {result['namespaces']} students onboarded with Cell's `add_students` (8 batches side by side) in "
        f"**{result['setup_managed_s']} s**, {result['namespaces']} unmanaged namespaces in "
        f"{result['setup_plain_s']} s. "
        f"Then {result['creates']} pod creates spread over the managed namespaces and {result['creates']} over the "
        f"unmanaged ones, {result['concurrency']} concurrent from a thread pool, in alternating halves "
        f"({result['burst_s']} s in all); the pods carry a scheduling gate, so nothing but admission follows. "
        "The API server's /metrics is scraped before and after each half; quantiles are PromQL's "
        "histogram_quantile over the bucket deltas (linear inside the bucket), the mean is _sum/_count.",
        "",
        "| histogram | observations | p50 / p99 | mean | p99's bucket |",
        "|---|---|---|---|---|",
        f"| API server: `{ADMISSION}{{name=\"{WEBHOOK}\",operation=\"CREATE\",type=\"validating\"}}` | "
        f"{cells(result['webhook_call'])} |",
        f"| webhook: `{HANDLER}{{kind=\"Pod\"}}` (its handler) | {cells(result['handler'])} |",
        f"| API server: `{REQUESTS}` POST pods, unmanaged namespaces (baseline) | {cells(result['posts_unmanaged'])} |",
        f"| API server: `{REQUESTS}` POST pods, managed namespaces | {cells(result['posts_managed'])} |",
        f"| client: create, unmanaged / managed (p50 / p99) | {client_side['unmanaged']['p50_ms']} / "
        f"{client_side['unmanaged']['p99_ms']} ms, {client_side['managed']['p50_ms']} / "
        f"{client_side['managed']['p99_ms']} ms | | | |",
        "",
        f"The API server's admission buckets are {', '.join(f'{b:g}' for b in buckets)} ms (request durations: "
        "5, 25, 50, 100 ms ...): a p99 inside (5, 25] ms is interpolated, not measured to the millisecond.",
        "",
        f"**Target p99 < {TARGET_P99_MS:g} ms (API server's histogram): {result['verdict']}.**"
        + (f" What dominates: {result['dominates']}." if "dominates" in result else ""),
    ]
    record_section(BEGIN, END, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=None, help="a running cell (default: $CELL_STATE_DIR)")
    parser.add_argument("--namespaces", type=int, default=300, help="managed namespaces, and as many unmanaged")
    parser.add_argument("--creates", type=int, default=1000, help="pod creates on each side")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--record", action="store_true", help=f"write the result into {BENCHMARKS}")
    parser.add_argument("--max-p99-ms", type=float, default=None,
                        help="exit 1 if the API server's admission p99 is above this")
    args = parser.parse_args()
    state_dir = args.state_dir or (Path(os.environ["CELL_STATE_DIR"]) if os.environ.get("CELL_STATE_DIR") else None)
    cell = LocalCell(state_dir)
    temporary = None
    if not cell.exists():
        temporary = Path(tempfile.mkdtemp(prefix="cell-bench-admission-")) / "state"
        console.print(f"no cell at {cell.paths.root}; standing up a temporary one in {temporary}")
        lifecycle.up(nodes=12, state_dir=temporary, console=Console(stderr=True))
        cell = LocalCell(temporary)
    try:
        result = run(cell, args.namespaces, args.creates, args.concurrency)
    finally:
        if temporary is not None:
            lifecycle.down(state_dir=temporary, console=Console(stderr=True))
    if args.record:
        record(result, "python tests/bench/bench_admission.py " + " ".join(sys.argv[1:]))
        console.print(f"recorded in {BENCHMARKS.relative_to(ROOT)}")
    p99 = result["webhook_call"]
    assert isinstance(p99, dict)
    measured = p99.get("p99_ms")
    if args.max_p99_ms is not None and not (isinstance(measured, float) and measured <= args.max_p99_ms):
        console.print(f"[red]admission p99 {p99.get('p99_ms')} ms > {args.max_p99_ms} ms[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()

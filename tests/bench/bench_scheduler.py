"""`make bench-scheduler`: stock kube-scheduler vs kube-scheduler + Cell's extender, side by side.

One local cell with 1,000 KWOK nodes. 3,000 pods are scheduled by each of:
1. a stock kube-scheduler (schedulerName stock-scheduler, default plugins, no extender);
2. the cell's own scheduler, which calls the Borg extender (filter, prioritize, preempt).
The machine is shared and its load drifts, so the two alternate in rounds (3 x 1,000 pods each by
default; stock first in odd rounds, the extender first in even ones), and only one scheduler runs
at a time. In each round the pods are created while their scheduler is stopped, then it is started
and a watch records when each pod gets its node; a round's throughput is pods/s between its first
and last binding, so pod creation and informer start-up are not measured. A round's pods are
deleted (and gone) before the next round starts. The overall rate of a side is its pods over the
sum of its rounds' spans. The extender's p50/p99 per verb come from its Prometheus histogram
(server-side, interpolated within buckets).
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import msgspec
from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cell.localcell import lifecycle  # noqa: E402
from cell.localcell.supervisor import LocalCell  # noqa: E402
from cell.localcell.topology import CLUSTER_DIR  # noqa: E402
from cell.pki import extender_client_context  # noqa: E402
from cell.state import free_port  # noqa: E402
from scheduler_ext.extender import wire  # noqa: E402

console = Console()


def pod_manifest(name: str, scheduler: str, index: int) -> dict:
    band = ("production", "batch", "batch", "best-effort")[index % 4]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": f"job-{index % 30}"}},
        "spec": {
            "schedulerName": scheduler,
            "priorityClassName": band,
            "containers": [{"name": "task", "image": "cell.local/shell:1.0",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
        },
    }


def create_pods(api: client.ApiClient, namespace: str, scheduler: str, count: int) -> None:
    core: Any = client.CoreV1Api(api)  # the client takes plain dicts for bodies
    core.create_namespace({"metadata": {"name": namespace}})
    deadline = time.monotonic() + 60
    while not core.list_namespaced_service_account(namespace).items and time.monotonic() < deadline:
        time.sleep(0.2)  # pods are refused until the controller-manager made the default ServiceAccount

    def create(i: int) -> None:
        core.create_namespaced_pod(namespace, pod_manifest(f"p-{i:05d}", scheduler, i))

    with ThreadPoolExecutor(max_workers=24) as pool:
        list(pool.map(create, range(count)))


class BindingClock:
    """Watches a namespace and timestamps the moment each pod is seen with a node.

    The stream is read raw and decoded with the extender's msgspec types (name and node only): the
    official client's object model cannot keep up with a binding burst, and the API server closes
    a watcher that falls behind. A closed or expired watch is resumed (or re-listed), and counted.
    """

    def __init__(self, api: client.ApiClient, namespace: str, expected: int) -> None:
        self.times: dict[str, float] = {}
        self.expected = expected
        self.restarts = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(api, namespace), daemon=True)
        self._thread.start()

    def _seen(self, pod: wire.Pod) -> None:
        if pod.spec.node_name and pod.metadata.name not in self.times:
            self.times[pod.metadata.name] = time.monotonic()
            if len(self.times) >= self.expected:
                self.done.set()

    def _run(self, api: client.ApiClient, namespace: str) -> None:
        core = client.CoreV1Api(api)
        resource_version = ""
        while not self.done.is_set() and not self._stop.is_set():
            try:
                if not resource_version:
                    raw: Any = core.list_namespaced_pod(namespace, _preload_content=False)
                    listing = _POD_LIST.decode(raw.data)
                    for pod in listing.items or ():
                        self._seen(pod)
                    resource_version = listing.metadata.resource_version
                resp: Any = core.list_namespaced_pod(namespace, watch=True, resource_version=resource_version,
                                                allow_watch_bookmarks=True, timeout_seconds=120,
                                                _preload_content=False, _request_timeout=(10, 150))
                try:
                    for line in iter_resp_lines(resp):
                        event = _EVENT.decode(line)
                        if event.type == "ERROR":
                            console.print(f"[yellow]binding clock: watch error {bytes(event.object)[:200]!r}[/]")
                            resource_version = ""  # expired: list again
                            break
                        pod = _POD.decode(event.object)
                        resource_version = pod.metadata.resource_version or resource_version
                        if event.type != "BOOKMARK":
                            self._seen(pod)
                        if self.done.is_set() or self._stop.is_set():
                            return
                finally:
                    resp.release_conn()
                if not self.done.is_set() and not self._stop.is_set():
                    console.print(f"[yellow]binding clock: watch closed by the server after "
                                  f"{len(self.times)} bindings; resuming[/]")
            except Exception as exc:  # a broken stream: resume from where it was
                console.print(f"[yellow]binding clock: {type(exc).__name__}: {exc}[/]")
                time.sleep(0.5)
            self.restarts += 1

    def throughput(self, api: client.ApiClient, namespace: str, timeout: float) -> tuple[float, float, int]:
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        # Done when every pod was seen bound, or no unbound pod is left (a pod may be evicted meanwhile).
        while not self.done.wait(2.0) and time.monotonic() < deadline:
            if not core.list_namespaced_pod(namespace, field_selector="spec.nodeName=", limit=1).items:
                self.done.wait(3.0)  # let the watch deliver the last bindings
                break
        self._stop.set()
        stamps = sorted(self.times.values())
        if len(stamps) < 2:
            return 0.0, 0.0, len(stamps)
        span = stamps[-1] - stamps[0]
        return (len(stamps) - 1) / span if span > 0 else float("inf"), span, len(stamps)


_POD = msgspec.json.Decoder(wire.Pod)
_POD_LIST = msgspec.json.Decoder(wire.PodList)
_EVENT = msgspec.json.Decoder(wire.WatchEvent)


@dataclass
class Metrics:
    """The extender's /metrics, and the client certificate it requires."""

    url: str
    context: ssl.SSLContext

    def text(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5, context=self.context) as response:
            return str(response.read().decode())


def gauges(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    """label value -> value of one labelled gauge or counter in the extender's metrics."""
    text = metrics.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(item.split("=", 1) for item in labels[labels.index("{") + 1:-1].split(","))
            values[parts[label].strip('"')] = float(value)
    return values


def histogram(metrics: Metrics) -> dict[str, list[tuple[float, float]]]:
    """verb -> cumulative buckets [(le, count)] of cell_extender_request_duration_seconds."""
    text = metrics.text()
    buckets: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        if line.startswith("cell_extender_request_duration_seconds_bucket{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(item.split("=", 1) for item in labels[labels.index("{") + 1:-1].split(","))
            verb, le = parts["verb"].strip('"'), parts["le"].strip('"')
            buckets.setdefault(verb, []).append((float("inf") if le == "+Inf" else float(le), float(value)))
    return {verb: sorted(values) for verb, values in buckets.items()}


def quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """q-quantile of the requests between two scrapes, linear within the bucket (Prometheus' way)."""
    base = dict(before)
    delta = [(le, count - base.get(le, 0.0)) for le, count in after]
    total = delta[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            return lower_le + (le - lower_le) * (rank - lower_count) / max(count - lower_count, 1e-9)
        lower_le, lower_count = le, count
    return lower_le


def delete_namespace(api: client.ApiClient, namespace: str, timeout: float) -> None:
    core = client.CoreV1Api(api)
    core.delete_namespace(namespace)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(1.0)
    console.print(f"[yellow]namespace {namespace} still terminating after {timeout:.0f} s[/]")


def start_stock_scheduler(cell: LocalCell, percentage: int | None) -> subprocess.Popen:
    config = Template((CLUSTER_DIR / "scheduler" / "kube-scheduler-stock.yaml").read_text()).safe_substitute(
        KUBECONFIG=str(cell.paths.component_kubeconfig("kube-scheduler")))
    if percentage is not None:
        config = config.rstrip("\n") + f"\npercentageOfNodesToScore: {percentage}\n"
    path = cell.paths.root / "stock-scheduler.yaml"
    path.write_text(config)
    log = cell.paths.log("stock-scheduler").open("ab")
    return subprocess.Popen([str(cell.bin_dir / "kube-scheduler"), f"--config={path}",
                             f"--secure-port={free_port()}", "--bind-address=127.0.0.1",
                             f"--authentication-kubeconfig={cell.paths.component_kubeconfig('kube-scheduler')}",
                             f"--authorization-kubeconfig={cell.paths.component_kubeconfig('kube-scheduler')}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@dataclass
class Side:
    """One scheduler's rounds: pods bound and the seconds from first to last binding, per round."""

    name: str
    bound: list[int] = field(default_factory=list)
    spans: list[float] = field(default_factory=list)
    resumed: int = 0

    def add(self, rate_span_bound: tuple[float, float, int], resumed: int) -> None:
        _, span, bound = rate_span_bound
        self.bound.append(bound)
        self.spans.append(span)
        self.resumed += resumed

    def rate(self, i: int | None = None) -> float:
        """pods/s of round i, or of all rounds together (each round's first binding starts its clock)."""
        bound = self.bound if i is None else [self.bound[i]]
        spans = self.spans if i is None else [self.spans[i]]
        return sum(b - 1 for b in bound) / sum(spans) if sum(spans) > 0 else 0.0


def run_round(cell: LocalCell, api: client.ApiClient, side: Side, round_no: int, pods: int,
              stock_percentage: int | None) -> None:
    namespace = f"bench-{side.name}-{round_no}"
    scheduler = "stock-scheduler" if side.name == "stock" else "default-scheduler"
    create_pods(api, namespace, scheduler, pods)  # while no scheduler for them runs
    clock = BindingClock(api, namespace, pods)
    if side.name == "stock":
        stock = start_stock_scheduler(cell, stock_percentage)
        try:
            side.add(clock.throughput(api, namespace, 600), clock.restarts)
        finally:
            stock.terminate()
            stock.wait(30)
    else:
        cell.start("kube-scheduler")
        try:
            side.add(clock.throughput(api, namespace, 600), clock.restarts)
        finally:
            cell.stop("kube-scheduler")
    # The deletions must not run during the next round.
    delete_namespace(api, namespace, timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=3000, help="pods per scheduler, over all rounds")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate stock and extender this many times (a shared machine's load drifts)")
    parser.add_argument("--stock-percentage", type=int, metavar="P",
                        help="give the stock scheduler Cell's percentageOfNodesToScore too (default: upstream's)")
    args = parser.parse_args()
    if args.stock_percentage is not None and not 0 < args.stock_percentage <= 100:
        parser.error("--stock-percentage must be 1..100")
    if args.rounds < 1 or args.pods < 2 * args.rounds:
        parser.error("--rounds must be >= 1, with at least 2 pods per round")
    per_round = args.pods // args.rounds

    state = Path(tempfile.mkdtemp(prefix="cell-bench-")) / "state"
    os.environ["CELL_WITHOUT"] = "webhook,operator"  # admission is benchmarked on its own
    console.print(f"standing up a cell with {args.nodes} KWOK nodes ...")
    lifecycle.up(nodes=args.nodes, state_dir=state, console=Console(stderr=True))
    cell = LocalCell(state)
    api = cell.api()
    metrics_url = Metrics(f"https://127.0.0.1:{cell.port('extender')}/metrics",
                          extender_client_context(cell.paths.pki_dir))
    stock, borg = Side("stock"), Side("borg")
    loads: list[float] = []
    try:
        cell.stop("kube-scheduler")  # each round runs exactly one scheduler
        before = histogram(metrics_url)
        for round_no in range(1, args.rounds + 1):
            # Alternate which goes first, so neither always meets the same moment of the machine.
            for side in (stock, borg) if round_no % 2 else (borg, stock):
                run_round(cell, api, side, round_no, per_round, args.stock_percentage)
                loads.append(os.getloadavg()[0])
                console.print(f"round {round_no} {side.name:<5}: {side.bound[-1]} bound in {side.spans[-1]:.1f} s "
                              f"= {side.rate(-1):.0f} pods/s (load {loads[-1]:.1f})")
        after = histogram(metrics_url)
        assumed = gauges(metrics_url, "cell_extender_assumed_placements", "outcome")
        ahead = gauges(metrics_url, "cell_extender_ranked_ahead_total", "result")
    finally:
        lifecycle.down(state_dir=state, console=Console(stderr=True))

    console.print(f"\n[bold]bench-scheduler[/]: {args.nodes} KWOK nodes, {args.rounds} x {per_round} pods per "
                  "scheduler (100m/128Mi; production, batch, batch, best-effort), rounds alternating")
    stock_config = (f"percentageOfNodesToScore {args.stock_percentage}" if args.stock_percentage is not None
                    else "upstream defaults")
    console.print(f"stock scheduler config    : {stock_config}; Cell's: cluster/scheduler/kube-scheduler-config.yaml")
    for side, label in ((stock, "stock kube-scheduler     "), (borg, "kube-scheduler + extender")):
        console.print(f"{label} : {sum(side.bound)} bound in {sum(side.spans):.1f} s = {side.rate():.0f} pods/s "
                      f"(rounds: {', '.join(f'{side.rate(i):.0f}' for i in range(args.rounds))})")
    ratio = borg.rate() / stock.rate() if stock.rate() else 0.0
    per_round_ratios = sorted(borg.rate(i) / stock.rate(i) for i in range(args.rounds) if stock.rate(i))
    median = per_round_ratios[len(per_round_ratios) // 2] if per_round_ratios else 0.0
    console.print(f"ratio extender/stock      : {ratio:.2f} overall, {median:.2f} median of rounds (target >= 0.80)")
    console.print(f"machine                   : {os.cpu_count()} cores; load average {min(loads):.1f}.."
                  f"{max(loads):.1f} during the rounds; binding watch resumed {stock.resumed} (stock), "
                  f"{borg.resumed} (extender)")
    console.print("assumed placements        : " + ", ".join(f"{k} {v:.0f}" for k, v in assumed.items()))
    console.print("ranked ahead of prioritize: " + (", ".join(f"{k} {v:.0f}" for k, v in ahead.items()) or "none"))
    for verb in ("filter", "prioritize", "preempt"):
        count = after[verb][-1][1] - dict(before.get(verb, [])).get(float("inf"), 0.0) if verb in after else 0
        if count:
            p50 = quantile(before.get(verb, []), after[verb], 0.50) * 1000
            p99 = quantile(before.get(verb, []), after[verb], 0.99) * 1000
            console.print(f"extender {verb:<10}: {count:.0f} calls, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return 0 if min(sum(stock.bound), sum(borg.bound)) >= 0.99 * per_round * args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())

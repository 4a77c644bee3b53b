"""`python -m scheduler_ext.omega --kubeconfig K --scheduler-name omega-a [--decision-time S]`: run one
Omega scheduler until interrupted. Bad arguments exit non-zero with one line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from prometheus_client import CollectorRegistry, start_http_server

from scheduler_ext.kube.client import RawClient, api_client
from scheduler_ext.kube.errors import APIError
from scheduler_ext.omega.ledger import LEDGER_NAMESPACE
from scheduler_ext.omega.scheduler import COARSE, FINE, OmegaOptions, OmegaScheduler

PROG = "scheduler_ext.omega"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog=f"python -m {PROG}", description="Cell's live Omega scheduler (shared-state, "
                     "optimistic concurrency on per-node ledgers).")
    parser.add_argument("--kubeconfig", required=True, type=Path, help="kubeconfig of the cell (its admin's)")
    parser.add_argument("--scheduler-name", required=True, help="the spec.schedulerName whose pods it places")
    parser.add_argument("--decision-time", type=float, default=0.0, metavar="SECONDS",
                        help="Omega's t_job: seconds between taking the copy and committing (default 0)")
    parser.add_argument("--conflicts", choices=[FINE, COARSE], default=FINE,
                        help="fine: after a 409, retry on the node if the pod still fits; coarse: plan again")
    parser.add_argument("--ledger-namespace", default=LEDGER_NAMESPACE, help="where the ledgers live")
    parser.add_argument("--namespace", default="", help="only place pods of this namespace")
    parser.add_argument("--enough-feasible", type=int, default=0, metavar="N",
                        help="relaxed randomization: stop after N feasible nodes (0: examine all)")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics here (0: off)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.decision_time < 0:
        parser.error("--decision-time must be >= 0")
    if not 0 <= args.metrics_port < 65536:
        parser.error(f"--metrics-port {args.metrics_port}: must be 0..65535")
    if not args.kubeconfig.is_file():
        parser.error(f"--kubeconfig {args.kubeconfig}: no such file")
    if args.enough_feasible < 0:
        parser.error("--enough-feasible must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        raw = RawClient(api_client(args.kubeconfig, pool_size=8))
    except Exception as exc:
        print(f"{PROG}: error: cannot load kubeconfig {args.kubeconfig}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    options = OmegaOptions(args.scheduler_name, args.ledger_namespace, args.decision_time, args.conflicts,
                           args.enough_feasible or None, args.namespace)
    registry = CollectorRegistry()
    scheduler = OmegaScheduler(raw, options, stop, registry)
    try:
        scheduler.ensure_ledger_namespace()
    except (APIError, OSError) as exc:
        print(f"{PROG}: error: cannot reach the cell: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if args.metrics_port:
        try:
            start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)
        except OSError as exc:
            print(f"{PROG}: error: cannot listen on 127.0.0.1:{args.metrics_port}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
    scheduler.run(scheduler.reflectors(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())

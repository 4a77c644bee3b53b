"""`python -m scheduler_ext.extender --kubeconfig K --host H --port P`: start the cache's
reflectors and serve the extender. Bad arguments exit non-zero with one line."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

from scheduler_ext.extender.cache import ClusterCache, start_reflectors
from scheduler_ext.extender.server import create_app
from scheduler_ext.kube import names
from scheduler_ext.kube.client import RawClient, api_client

PROG = "scheduler_ext.extender"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog=f"python -m {PROG}", description="Cell's Borg scheduler extender for kube-scheduler.")
    parser.add_argument("--kubeconfig", required=True, type=Path, help="kubeconfig to list/watch the cell with")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", required=True, type=int, help="port to listen on")
    parser.add_argument("--enough-feasible", type=int, default=100, metavar="N",
                        help="relaxed randomization: stop filtering after N feasible nodes (0: examine all)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: must be 1..65535")
    if args.enough_feasible < 0:
        parser.error("--enough-feasible must be >= 0")
    if not args.kubeconfig.is_file():
        parser.error(f"--kubeconfig {args.kubeconfig}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        raw = RawClient(api_client(args.kubeconfig))
    except Exception as exc:
        print(f"{PROG}: error: cannot load kubeconfig {args.kubeconfig}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    # Reflector threads decode watch events while kube-scheduler waits on a verb: hand the GIL over
    # more often than every 5 ms, or a binding burst's events add whole switch intervals to a cycle.
    sys.setswitchinterval(0.0005)
    cache = ClusterCache()
    stop = threading.Event()
    start_reflectors(cache, raw, stop)

    def read_nodes(wanted: list[str]) -> list[dict[str, Any]]:
        found = (raw.get_or_none(names.NODES.object_path(name=name), timeout=2.0) for name in wanted)
        return [node for node in found if node is not None]

    def pod_exists(namespace: str, name: str, uid: str) -> bool:
        if not (_DNS_LABEL.fullmatch(namespace) and _DNS_SUBDOMAIN.fullmatch(name)):
            return False  # not a name the API could hold (and not one to put in a URL)
        pod = raw.get_or_none(names.PODS.object_path(namespace=namespace, name=name), timeout=2.0)
        return pod is not None and (pod.get("metadata") or {}).get("uid") == uid

    app = create_app(cache, enough_feasible=args.enough_feasible, read_nodes=read_nodes, pod_exists=pod_exists)
    try:
        web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())

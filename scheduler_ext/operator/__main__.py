"""python -m scheduler_ext.operator --kubeconfig K --health-port P"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import kopf
from kubernetes import client

from scheduler_ext.kube.client import RawClient

# Importing the resource modules registers their handlers with kopf's default registry.
from scheduler_ext.operator import allocs, bandquota, charges  # noqa: F401
from scheduler_ext.operator.connection import connection_info, load_configuration
from scheduler_ext.operator.settings import configure


def fail(message: str) -> NoReturn:
    print(f"scheduler_ext.operator: error: {message}", file=sys.stderr)
    sys.exit(1)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _OneLineParser(prog="python -m scheduler_ext.operator",
                            description="Cell's operator: BandQuota status.used (Q7) and Alloc placement (A1-A6).")
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--health-port", required=True, type=int, help="liveness: GET http://127.0.0.1:P/healthz")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not 0 < args.health_port < 65536:
        fail(f"--health-port must be 1..65535, got {args.health_port}")
    try:
        configuration = load_configuration(args.kubeconfig)
    except FileNotFoundError as exc:
        fail(str(exc))
    except Exception as exc:  # the loader raises several unrelated types for a broken file
        fail(f"kubeconfig {args.kubeconfig} is unusable: {str(exc).splitlines()[0]}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf reports every handled event at INFO ("Handler ... succeeded"): one line per pod event is noise.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))

    @kopf.on.login()
    def login(**_: Any) -> kopf.ConnectionInfo:
        # Explicit: never fall back to ~/.kube/config or in-cluster credentials.
        return connection_info(configuration)

    @kopf.on.startup()
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)

    kopf.run(
        clusterwide=True,
        standalone=True,  # one operator per cell: no peering objects needed
        liveness_endpoint=f"http://127.0.0.1:{args.health_port}/healthz",
        memo=kopf.Memo(api=RawClient(client.ApiClient(configuration))),
    )


if __name__ == "__main__":
    main()

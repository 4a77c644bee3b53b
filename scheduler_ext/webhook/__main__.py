"""python -m scheduler_ext.webhook --kubeconfig K --host H --port P --tls-cert C --tls-key KEY"""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from pathlib import Path
from typing import Any, NoReturn

import uvloop
from aiohttp import web

from scheduler_ext.kube.client import RawClient, api_client
from scheduler_ext.kube.names import SCALABLE
from scheduler_ext.webhook.admission import QuotaAdmission
from scheduler_ext.webhook.cache import QuotaCache
from scheduler_ext.webhook.server import make_app


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _OneLineParser(prog="python -m scheduler_ext.webhook",
                            description="Cell's quota admission webhook (BandQuota, SPEC §3).")
    parser.add_argument("--kubeconfig", required=True, type=Path, help="kubeconfig to list and watch the cell with")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--tls-cert", required=True, type=Path, help="serving certificate (PEM)")
    parser.add_argument("--tls-key", required=True, type=Path, help="its private key (PEM)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def fail(message: str) -> NoReturn:
    print(f"scheduler_ext.webhook: error: {message}", file=sys.stderr)
    sys.exit(1)


def connect(kubeconfig: Path) -> RawClient:
    try:
        # One long-lived watch connection per resource, plus lists and the odd GET.
        return RawClient(api_client(kubeconfig, pool_size=32))
    except FileNotFoundError as exc:
        fail(str(exc))
    except Exception as exc:  # the loader raises several unrelated types for a broken file
        fail(f"kubeconfig {kubeconfig} is unusable: {str(exc).splitlines()[0]}")


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load TLS certificate {cert} / key {key}: {exc}")
    return context


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not 0 < args.port < 65536:
        fail(f"--port must be 1..65535, got {args.port}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    context = tls_context(args.tls_cert, args.tls_key)
    api = connect(args.kubeconfig)
    scalable = {resource.plural: resource for resource in SCALABLE}

    def fetch(resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = api.get_or_none(scalable[resource].object_path(namespace, name), timeout=2.0)
        return obj

    # Reflector threads parse watch events while requests wait on the event loop: hand the GIL over
    # more often than every 5 ms, so that a burst of pod events does not add to admission latency.
    sys.setswitchinterval(0.0005)
    cache = QuotaCache(api)
    cache.start()
    app = make_app(QuotaAdmission(cache, fetch))
    # uvloop's TLS and socket handling costs a fraction of asyncio's: under a burst of concurrent
    # reviews on a small machine that is most of what the webhook adds to a create.
    uvloop.install()
    try:
        web.run_app(app, host=args.host, port=args.port, ssl_context=context, print=None, access_log=None)
    except OSError as exc:
        fail(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}")
    finally:
        cache.stop()


if __name__ == "__main__":
    main()

"""`python -m scheduler_ext.extender --kubeconfig K --host H --port P [--tls-cert-file C
--tls-key-file KEY --client-ca-file CA]`: start the cache's reflectors and serve the extender.

With the TLS options it serves HTTPS and completes a handshake only with a client certificate
CA signed: only kube-scheduler (and whoever holds a certificate of that CA) may call it. A booking
made through /filter holds capacity, so an open port would let anyone on the machine book nodes.
Bad arguments exit non-zero with one line."""

from __future__ import annotations

import argparse
import logging
import re
import ssl
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
    parser.add_argument("--tls-cert-file", type=Path, help="serving certificate (PEM); with the two below: HTTPS")
    parser.add_argument("--tls-key-file", type=Path, help="its private key (PEM)")
    parser.add_argument("--client-ca-file", type=Path,
                        help="CA (PEM) a client's certificate must be signed by; none: no handshake")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    tls = [args.tls_cert_file, args.tls_key_file, args.client_ca_file]
    if any(tls) and not all(tls):
        parser.error("--tls-cert-file, --tls-key-file and --client-ca-file go together")
    for option, path in zip(("--tls-cert-file", "--tls-key-file", "--client-ca-file"), tls, strict=True):
        if path is not None and not path.is_file():
            parser.error(f"{option} {path}: no such file")
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: must be 1..65535")
    if args.enough_feasible < 0:
        parser.error("--enough-feasible must be >= 0")
    if not args.kubeconfig.is_file():
        parser.error(f"--kubeconfig {args.kubeconfig}: no such file")
    return args


def tls_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """The server's side: its certificate, and a client certificate of client_ca required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(cert), str(key))
    return context


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    context = None
    if args.tls_cert_file is not None:
        try:
            context = tls_context(args.tls_cert_file, args.tls_key_file, args.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            print(f"{PROG}: error: cannot load TLS files: {exc}".splitlines()[0], file=sys.stderr)
            return 1
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
        web.run_app(app, host=args.host, port=args.port, ssl_context=context, access_log=None, print=None)
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())

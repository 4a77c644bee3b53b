"""Reaching the cell's API server: clients from kubeconfig files, a probe that fails in one line,
the kubectl that matches the cell, and node readiness as the scheduler sees it."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import yaml
from kubernetes import client, config

from cell import upstream
from cell.errors import CellError
from cell.settings import settings
from cell.state import CellPaths, load_record


def api_client(kubeconfig: Path) -> client.ApiClient:
    """An API client for a kubeconfig file, or a one-line CellError if it is missing or broken."""
    if not Path(kubeconfig).is_file():
        raise CellError(f"kubeconfig not found: {kubeconfig} (is the cell up? run `cell up`)")
    try:
        return config.new_client_from_config(config_file=str(kubeconfig))
    except (config.ConfigException, yaml.YAMLError, KeyError, TypeError) as exc:
        raise CellError(f"kubeconfig {kubeconfig} is unusable: {exc}") from exc


def connect(kubeconfig: Path) -> client.ApiClient:
    """An admin API client that has answered once, or one line saying why the cluster is unreachable."""
    api = api_client(kubeconfig)
    api.configuration.retries = 1  # fail in seconds, not after urllib3's default back-off
    probe(api, f"the admin credentials of {kubeconfig}")
    return api


def probe(api: client.ApiClient, credentials: str = "the credentials") -> None:
    """One cheap request; a one-line CellError if the cluster does not answer or refuses us."""
    try:
        client.VersionApi(api).get_code(_request_timeout=(5, 10))
    except client.ApiException as exc:
        raise CellError(f"the cluster at {api.configuration.host} refused {credentials}: "
                        f"{exc.status} {exc.reason}") from None
    except Exception as exc:  # urllib3 wraps refusals, timeouts and TLS failures in many types
        raise CellError(f"cannot reach the cluster at {api.configuration.host}: {_root_cause(exc)}") from None


def reachable(api: client.ApiClient, timeout: float = 5) -> bool:
    try:
        client.VersionApi(api).get_code(_request_timeout=timeout)
        return True
    except Exception:  # any failure means: do not rely on the API
        return False


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or getattr(exc, "reason", None) is not None:
        nxt = exc.__cause__ or getattr(exc, "reason", None)
        if not isinstance(nxt, BaseException) or nxt is exc:
            break
        exc = nxt
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^<[^>]+>:\s*", "", text)


def api_message(exc: Exception) -> str:
    """The API server's own one-line message from an ApiException (or the exception's first line)."""
    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
            if message:
                return str(message).splitlines()[0]
        except (ValueError, AttributeError):
            pass
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status:
        return f"{status} {reason}"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def find_kubectl(state_dir: Path | None = None) -> Path:
    """kubectl matching the cell: CELL_KUBECTL, the local cell's build, the cached build, then PATH."""
    explicit = settings().kubectl
    if explicit:
        return explicit
    candidates: list[Path] = []
    paths = CellPaths(state_dir)
    if paths.record.is_file():
        with contextlib.suppress(CellError):  # a corrupt record: the cached build will do
            candidates.append(Path(load_record(paths.record).bin_dir) / "kubectl")
    candidates.append(upstream.bin_dir() / "kubectl")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("kubectl")
    if not found:
        raise CellError("kubectl not found (run `cell build`, or set CELL_KUBECTL)")
    return Path(found)


# Taints the node lifecycle controller keeps on a node until it has seen it Ready, a few seconds
# after the kubelet (or KWOK) reports Ready, and puts back when heartbeats stop. kube-scheduler
# keeps pods off the node while one remains.
LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def node_is_ready(node: client.V1Node) -> bool:
    """Ready, and free of the lifecycle controller's not-ready/unreachable taints: pods can land."""
    conditions = (node.status.conditions if node.status else None) or []
    taints = (node.spec.taints if node.spec else None) or []
    return (any(c.type == "Ready" and c.status == "True" for c in conditions)
            and not any(t.key in LIFECYCLE_TAINTS for t in taints))

"""Raw JSON over the official client's connection: its credentials, TLS and connection pool.

For the paths that decode bytes themselves (msgspec structs, or plain camelCase dicts as the policy
core and AdmissionReview see objects) and skip the generated models: relists and watches stay
cheap. Every error status becomes one of `errors`' classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from kubernetes import config
from kubernetes.client import ApiClient, Configuration
from kubernetes.watch.watch import iter_resp_lines

from scheduler_ext.kube.errors import APINotFoundError, api_error

Timeout = float | tuple[float, float]
Query = Sequence[tuple[str, str]]

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)


def load_configuration(kubeconfig: Path) -> Configuration:
    """The connection an explicit kubeconfig describes (never ~/.kube/config or in-cluster
    credentials). Raises FileNotFoundError, or the loader's own exception for an unusable file."""
    if not kubeconfig.is_file():
        raise FileNotFoundError(f"kubeconfig not found: {kubeconfig}")
    configuration = Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


def api_client(kubeconfig: Path, pool_size: int | None = None) -> ApiClient:
    """The official client's connection for `kubeconfig`; `pool_size`: connections kept (a
    reflector holds one per watched resource)."""
    configuration = load_configuration(kubeconfig)
    if pool_size:
        configuration.connection_pool_maxsize = pool_size
    return ApiClient(configuration)


class RawClient:
    """GET/POST/PATCH/DELETE a path; bodies are bytes or decoded JSON; errors are `APIError`s."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def _send(self, method: str, path: str, query: Query = (), body: Any = None, content_type: str | None = None,
              timeout: Timeout = 10.0, accept: str = "application/json") -> Any:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        verb, url, header_params, payload, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=list(query), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        response = self.api.call_api(verb, url, header_params=header_params, body=payload, _request_timeout=timeout)
        if not 200 <= response.status < 300:
            raise api_error(response.status, response.read() or b"", f"{method} {path}")
        return response

    def request(self, method: str, path: str, query: Query = (), body: Any = None, content_type: str | None = None,
                timeout: Timeout = 10.0, accept: str = "application/json") -> bytes:
        """The response body as bytes (for callers that decode with their own msgspec types)."""
        return bytes(self._send(method, path, query, body, content_type, timeout, accept).read() or b"")

    def json(self, method: str, path: str, query: Query = (), body: Any = None, content_type: str | None = None,
             timeout: Timeout = 10.0) -> Any:
        raw = self.request(method, path, query, body, content_type, timeout)
        return msgspec.json.decode(raw) if raw else None

    def get(self, path: str, query: Query = (), timeout: Timeout = 10.0) -> Any:
        return self.json("GET", path, query, timeout=timeout)

    def get_or_none(self, path: str, query: Query = (), timeout: Timeout = 10.0) -> Any:
        """The object, or None when it does not exist."""
        try:
            return self.get(path, query, timeout)
        except APINotFoundError:
            return None

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH, query: Query = (),
              timeout: Timeout = 10.0) -> Any:
        return self.json("PATCH", path, query, body, content_type, timeout)

    def apply(self, path: str, manifest: Any, field_manager: str, force: bool = True, timeout: Timeout = 10.0) -> Any:
        """Server-side apply of one object at its own path."""
        query = [("fieldManager", field_manager), *([("force", "true")] if force else [])]
        return self.json("PATCH", path, query, manifest, APPLY_PATCH, timeout)

    def lines(self, path: str, query: Query = (), timeout: Timeout = (10.0, 330.0)) -> Iterator[str]:
        """A streamed response (a watch) line by line; the connection is released when the stream ends."""
        response = self._send("GET", path, query, timeout=timeout).response
        try:
            yield from iter_resp_lines(response)
        except BaseException:
            response.close()  # an unfinished stream cannot go back to the pool
            raise
        finally:
            response.release_conn()

"""Generic kinds by apiVersion/kind, and server-side apply, through the official client's dynamic
client: discovery finds each kind's path (and whether it is namespaced), so no table of kinds is
written by hand. Objects come back as plain dicts; errors as `errors`' classes.

Discovery costs a few requests on first use and is cached (a kind not found invalidates the cache
once, so a CRD installed later is seen). For hot paths that read bytes, use `client.RawClient`.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource as DynamicResource

from scheduler_ext.kube.errors import APINotFoundError, from_exception

Manifest = dict[str, Any]


class Objects:
    """get / list / apply / delete any kind the API server serves."""

    def __init__(self, api: ApiClient, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout
        self._dynamic: DynamicClient | None = None
        self._lock = threading.Lock()

    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                try:
                    self._dynamic = DynamicClient(self.api)
                except ApiException as exc:
                    raise from_exception(exc, "API discovery") from None
            return self._dynamic

    def resource(self, api_version: str, kind: str) -> DynamicResource:
        """The kind's coordinates, from discovery; APINotFoundError if this cell does not serve it."""
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise APINotFoundError(404, f"the cell does not serve kind {kind} ({api_version})",
                                   "NotFound") from None
        except ApiException as exc:
            raise from_exception(exc, f"discovery of {kind}") from None

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Manifest | None:
        """The object, or None if it does not exist."""
        resource = self.resource(api_version, kind)
        try:
            found = self.dynamic.get(resource, name=name, namespace=namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise from_exception(exc, f"get {kind} {name}") from None
        return dict(found.to_dict())

    def list(self, api_version: str, kind: str, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> list[Manifest]:
        """The objects (in `namespace`, or everywhere), each stamped with apiVersion and kind."""
        resource = self.resource(api_version, kind)
        try:
            listed = self.dynamic.get(resource, namespace=namespace, label_selector=label_selector,
                                      field_selector=field_selector, _request_timeout=self.timeout)
        except ApiException as exc:
            raise from_exception(exc, f"list {kind}") from None
        items = listed.to_dict().get("items") or []
        return [{"apiVersion": resource.group_version, "kind": kind, **item} for item in items]

    def apply(self, manifest: Manifest, field_manager: str, force: bool = True) -> Manifest:
        """Server-side apply of one manifest (idempotent); the object as stored."""
        kind, name = manifest.get("kind", ""), (manifest.get("metadata") or {}).get("name", "")
        resource = self.resource(manifest.get("apiVersion", ""), kind)
        try:
            applied = self.dynamic.server_side_apply(
                resource, body=manifest, field_manager=field_manager, force_conflicts=force,
                _request_timeout=self.timeout)
        except ApiException as exc:
            raise from_exception(exc, f"apply {kind} {name}") from None
        return dict(applied.to_dict())

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete the object; False if it did not exist."""
        resource = self.resource(api_version, kind)
        try:
            self.dynamic.delete(resource, name=name, namespace=namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise from_exception(exc, f"delete {kind} {name}") from None
        return True

"""scheduler_ext.kube against the real API server: the dynamic client's generic kinds and server-side
apply (a built-in kind and Cell's own CRD), the raw client's error classes, and the reflector
listing, watching and seeing a deletion."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import pytest
from kubernetes import client

from scheduler_ext.kube import errors, names
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.dynamic import Objects
from scheduler_ext.kube.reflector import ListWatch, Reflector
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.cluster

FIELD_MANAGER = "cell-test-kube-layer"


def config_map(namespace: str, name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"test": namespace}},
            "data": {"key": value}}


def test_dynamic_client_applies_gets_lists_and_deletes_any_kind(kube_api: client.ApiClient, namespace: str) -> None:
    objects = Objects(kube_api)
    first = objects.apply(config_map(namespace, "settings", "one"), FIELD_MANAGER)
    again = objects.apply(config_map(namespace, "settings", "one"), FIELD_MANAGER)
    assert first["data"] == {"key": "one"}
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"], "apply is idempotent"
    objects.apply(config_map(namespace, "settings", "two"), FIELD_MANAGER)
    stored = objects.get("v1", "ConfigMap", "settings", namespace)
    assert stored is not None and stored["data"] == {"key": "two"}
    listed = objects.list("v1", "ConfigMap", namespace, label_selector=f"test={namespace}")
    assert [(o["kind"], o["metadata"]["name"]) for o in listed] == [("ConfigMap", "settings")]

    # Cell's own kind through discovery: no path written for it anywhere.
    quota = {"apiVersion": names.API_VERSION, "kind": "BandQuota",
             "metadata": {"name": "quota", "namespace": namespace},
             "spec": {"bands": {"production": {"cpu": "2", "memory": "4Gi"}}}}
    assert objects.apply(quota, FIELD_MANAGER)["spec"]["bands"]["production"]["cpu"] == "2"
    assert objects.get(names.API_VERSION, "BandQuota", "quota", namespace) is not None

    assert objects.delete("v1", "ConfigMap", "settings", namespace) is True
    assert objects.get("v1", "ConfigMap", "settings", namespace) is None
    assert objects.delete("v1", "ConfigMap", "settings", namespace) is False
    with pytest.raises(errors.APINotFoundError, match="does not serve kind Gadget"):
        objects.get("example.com/v1", "Gadget", "g", namespace)


def test_raw_client_raises_by_meaning(kube_api: client.ApiClient, namespace: str) -> None:
    raw = RawClient(kube_api)
    assert raw.get_or_none(names.PODS.object_path(namespace, "nobody")) is None
    path = f"/api/v1/namespaces/{namespace}/configmaps/raw"
    created = raw.apply(path, config_map(namespace, "raw", "1"), FIELD_MANAGER)
    raw.patch(path, {"data": {"key": "2"}})
    with pytest.raises(errors.APIConflictError, match="modified"):
        raw.patch(path, {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"key": "3"}})
    with pytest.raises(errors.APIUnprocessableEntityError):
        raw.apply(f"/api/v1/namespaces/{namespace}/configmaps/Bad_Name", config_map(namespace, "Bad_Name", "x"),
                  FIELD_MANAGER)


class _Names:
    """A sink that keeps the names it has been told of."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.lock = threading.Lock()

    def replace(self, body: bytes) -> str:
        listed = msgspec.json.decode(body)
        with self.lock:
            self.names = {item["metadata"]["name"] for item in listed["items"]}
        return str(listed["metadata"]["resourceVersion"])

    def event(self, event_type: str, obj: bytes) -> str | None:
        meta = msgspec.json.decode(obj)["metadata"]
        with self.lock:
            (self.names.discard if event_type == "DELETED" else self.names.add)(meta["name"])
        return str(meta["resourceVersion"])

    def absent(self) -> None:
        self.names = set()


def test_reflector_lists_then_follows_the_watch(kube_api: client.ApiClient, namespace: str) -> None:
    raw, objects = RawClient(kube_api), Objects(kube_api)
    objects.apply(config_map(namespace, "before", "x"), FIELD_MANAGER)
    configmaps = names.Resource("", "v1", "configmaps", "ConfigMap")
    sink, stop = _Names(), threading.Event()
    reflector = Reflector(raw, ListWatch(configmaps, label_selector=f"test={namespace}"), sink, stop, watch_timeout=5)
    reflector.start()
    try:
        assert reflector.synced.wait(30)
        wait_for(lambda: sink.names == {"before"}, 30, what="the listed ConfigMap")
        objects.apply(config_map(namespace, "after", "y"), FIELD_MANAGER)
        objects.delete("v1", "ConfigMap", "before", namespace)
        wait_for(lambda: sink.names == {"after"}, 30, what="the watch's ADDED and DELETED")
    finally:
        stop.set()
        reflector.join(15)

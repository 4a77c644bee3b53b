"""The webhook's reflector against a scripted fake API server: list, watch, 410 Gone -> relist, 404 -> empty."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APINotFoundError as NotFound
from scheduler_ext.kube.names import ALLOCS, PODS, Resource
from scheduler_ext.kube.reflector import ListWatch, ManifestSink, Reflector
from scheduler_ext.policy.bands import Band
from scheduler_ext.webhook.cache import QuotaCache
from tests.unit.quota.quota_builders import pod, pod_spec, res


def webhook_reflector(http: client.ApiClient, resource: Resource, replace: Any, apply: Any,
                      stop: threading.Event) -> Reflector:
    """The webhook's reflector of one resource (as QuotaCache.start builds it)."""
    return Reflector(RawClient(http), ListWatch(resource), ManifestSink(resource, replace, apply), stop)


def get_json(http: client.ApiClient, path: str) -> Any:
    return RawClient(http).get(path)


def listed(obj: dict[str, Any], resource_version: str) -> dict[str, Any]:
    """As a list returns an item: no apiVersion/kind."""
    item = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    item["metadata"] = {**item["metadata"], "resourceVersion": resource_version}
    return item


class FakeApi:
    """Serves a script: each GET of a path pops the next response (a list body, or watch events)."""

    def __init__(self) -> None:
        self.script: dict[str, list[Any]] = {}
        self.requests: list[str] = []
        self.done = threading.Event()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                watching = parse_qs(url.query).get("watch") == ["true"]
                api.requests.append(f"{'WATCH' if watching else 'LIST'} {url.path}"
                                    + (f" rv={parse_qs(url.query)['resourceVersion'][0]}" if watching else ""))
                queue = api.script.get(url.path, [])
                if not queue:
                    api.done.set()
                    self.send_response(404 if url.path.startswith("/apis/cell") else 500)
                    self.end_headers()
                    return
                reply = queue.pop(0)
                status = reply.get("status", 200) if isinstance(reply, dict) else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if isinstance(reply, list):  # watch events, one JSON per line
                    for event in reply:
                        self.wfile.write(json.dumps(event).encode() + b"\n")
                elif status == 200:
                    self.wfile.write(json.dumps(reply).encode())

        return Handler


@pytest.fixture
def fake() -> Iterator[tuple[FakeApi, client.ApiClient]]:
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), api.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    yield api, client.ApiClient(configuration)
    server.shutdown()


def test_list_watch_gone_relist(fake: tuple[FakeApi, client.ApiClient]) -> None:
    api, http = fake
    a, b = pod("a", spec=pod_spec("production")), pod("b", spec=pod_spec("batch"))
    api.script[PODS.path] = [
        {"kind": "PodList", "metadata": {"resourceVersion": "10"}, "items": [listed(a, "9")]},
        [{"type": "ADDED", "object": {**b, "metadata": {**b["metadata"], "resourceVersion": "11"}}},
         {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "12"}}}],
        # The watch ends (server timeout); resuming from 12, the server says it is too old.
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}],
        # Relisted: a is gone, b is still there.
        {"kind": "PodList", "metadata": {"resourceVersion": "20"}, "items": [listed(b, "11")]},
    ]
    cache = QuotaCache()
    stop = threading.Event()
    reflector = webhook_reflector(http, PODS, cache.replace, cache.apply, stop)
    reflector.start()
    assert api.done.wait(10)
    stop.set()
    assert reflector.synced.is_set()
    assert api.requests[:5] == ["LIST /api/v1/pods", "WATCH /api/v1/pods rv=10", "WATCH /api/v1/pods rv=12",
                                "LIST /api/v1/pods", "WATCH /api/v1/pods rv=20"]
    used = cache.used("alice")
    assert (used[Band.PRODUCTION], used[Band.BATCH]) == (res(), res("1", "1Gi"))


def test_an_uninstalled_crd_counts_as_synced_and_empty(fake: tuple[FakeApi, client.ApiClient]) -> None:
    api, http = fake
    cache = QuotaCache()
    stop = threading.Event()
    reflector = webhook_reflector(http, ALLOCS, cache.replace, cache.apply, stop)
    reflector.start()
    assert reflector.synced.wait(10)
    stop.set()
    assert api.requests[0] == f"LIST {ALLOCS.path}"
    with pytest.raises(NotFound):
        get_json(http, ALLOCS.path)

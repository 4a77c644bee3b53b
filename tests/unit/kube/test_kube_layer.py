"""scheduler_ext.kube without a cluster: coordinates, the error hierarchy, the raw client against a
scripted HTTP server (what it sends, what it raises), the reflector's backoff and absent resources."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from scheduler_ext.kube import errors, names
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.reflector import Backoff, ListWatch, Reflector, apply_line


def test_coordinates_build_every_path() -> None:
    assert names.PODS.path == "/api/v1/pods"
    assert names.ALLOCS.path == "/apis/cell.distos.dev/v1alpha1/allocs"
    assert names.ALLOCS.object_path("alice", "cache", "status") == \
        "/apis/cell.distos.dev/v1alpha1/namespaces/alice/allocs/cache/status"
    assert names.NODES.object_path(name="n1") == "/api/v1/nodes/n1"
    assert names.PODS.object_path("alice") == "/api/v1/namespaces/alice/pods"
    assert (names.PODS.selector, names.BANDQUOTAS.selector) == (("v1", "pods"),
                                                                ("cell.distos.dev", "v1alpha1", "bandquotas"))
    assert names.BANDQUOTAS.api_version == names.API_VERSION == "cell.distos.dev/v1alpha1"
    with pytest.raises(ValueError, match="namespaced"):
        names.PODS.object_path(name="web")


@pytest.mark.parametrize(("status", "cls"), [
    (400, errors.APIBadRequestError), (401, errors.APIUnauthorizedError), (403, errors.APIForbiddenError),
    (404, errors.APINotFoundError), (409, errors.APIConflictError), (410, errors.APIGoneError),
    (422, errors.APIUnprocessableEntityError), (429, errors.APITooManyRequestsError),
    (418, errors.APIClientError), (503, errors.APIServerError),
])
def test_one_class_per_status(status: int, cls: type[errors.APIError]) -> None:
    error = errors.api_error(status, json.dumps({"kind": "Status", "message": "why", "reason": "Because"}), "GET /x")
    assert type(error) is cls and isinstance(error, errors.APIError)
    assert (error.status, error.message, error.reason) == (status, "why", "Because")
    assert str(error) == f"GET /x: {status} Because: why"
    assert errors.api_error(status, b"404 page not found").message == "404 page not found"


class Scripted:
    """An HTTP server answering each request with the next scripted (status, body); records requests."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, Any]] = []
        self.seen: list[dict[str, Any]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.seen.append({"method": self.command, "path": self.path,
                                    "content_type": self.headers.get("Content-Type"),
                                    "body": json.loads(self.rfile.read(length)) if length else None})
                status, body = server.replies.pop(0) if server.replies else (500, {"message": "unscripted"})
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PATCH = do_POST = _reply

        return Handler


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, RawClient]]:
    script = Scripted()
    server = ThreadingHTTPServer(("127.0.0.1", 0), script.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield script, RawClient(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.server_port}")))
    server.shutdown()


def test_raw_client_sends_json_and_raises_by_meaning(scripted: tuple[Scripted, RawClient]) -> None:
    script, raw = scripted
    script.replies = [(200, {"metadata": {"name": "n1"}}), (404, {"message": "nodes \"x\" not found"}),
                      (409, {"message": "the object has been modified", "reason": "Conflict"}),
                      (200, {"kind": "BandQuota"}), (404, b"404 page not found")]
    assert raw.get("/api/v1/nodes/n1") == {"metadata": {"name": "n1"}}
    assert raw.get_or_none("/api/v1/nodes/x") is None
    with pytest.raises(errors.APIConflictError, match="has been modified"):
        raw.patch("/apis/cell.distos.dev/v1alpha1/namespaces/a/allocs/c/status", {"status": {"phase": "Pending"}})
    raw.apply("/apis/cell.distos.dev/v1alpha1/namespaces/a/bandquotas/q", {"kind": "BandQuota"}, "cell")
    with pytest.raises(errors.APINotFoundError, match="page not found"):
        raw.get("/apis/nothing.example/v1/things")
    patch, apply = script.seen[2], script.seen[3]
    assert (patch["method"], patch["content_type"], patch["body"]) == (
        "PATCH", "application/merge-patch+json", {"status": {"phase": "Pending"}})
    assert apply["content_type"] == "application/apply-patch+yaml"
    assert apply["path"].endswith("/bandquotas/q?fieldManager=cell&force=true")


def test_a_watch_error_event_raises_gone_or_the_status() -> None:
    gone = json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}})
    with pytest.raises(errors.APIGoneError, match="too old"):
        apply_line(None, gone)  # type: ignore[arg-type]
    failed = json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}})
    with pytest.raises(errors.APIServerError, match="etcd"):
        apply_line(None, failed)  # type: ignore[arg-type]
    bookmark = json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
    assert apply_line(None, bookmark) == "9"  # type: ignore[arg-type]


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(first=0.5, cap=3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


class _Sink:
    def __init__(self) -> None:
        self.absent_calls = 0

    def replace(self, body: bytes) -> str:
        return "1"

    def event(self, event_type: str, obj: bytes) -> str | None:
        return None

    def absent(self) -> None:
        self.absent_calls += 1


class _Refusing:
    """A transport whose every list is refused with `status`; stops the reflector after `calls` lists."""

    def __init__(self, status: int, stop: threading.Event, calls: int) -> None:
        self.status, self.stop, self.calls, self.lists = status, stop, calls, 0

    def request(self, *args: Any, **kwargs: Any) -> bytes:
        self.lists += 1
        if self.lists >= self.calls:
            self.stop.set()
        raise errors.api_error(self.status, {"message": "no"})

    def lines(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        raise AssertionError("never listed, never watched")


@pytest.mark.parametrize(("status", "absent_on", "absent"), [(404, {404}, True), (403, {403, 404}, True),
                                                             (403, {404}, False), (500, {404}, False)])
def test_a_resource_not_served_is_synced_and_empty_other_errors_retry(status: int, absent_on: set[int],
                                                                       absent: bool) -> None:
    stop, sink = threading.Event(), _Sink()
    transport = _Refusing(status, stop, calls=2)
    reflector = Reflector(transport, ListWatch(names.ALLOCS, absent_on=frozenset(absent_on)), sink, stop,
                          absent_retry=0.01, backoff=Backoff(first=0.01))
    reflector.run()
    assert transport.lists == 2
    assert reflector.synced.is_set() is absent
    assert sink.absent_calls == (2 if absent else 0)

"""One reflector: list, then watch from the list's resourceVersion; list again after 410 Gone.

What the objects become is the caller's: it hands in a `Sink` that decodes the raw list body and
each event's raw object with its own types (the extender keeps its msgspec structs, the webhook
plain dicts) and keeps them. The reflector only reads the watch envelope: ERROR events (410 means
"list again"), BOOKMARKs (a newer resourceVersion, nothing else) and the event type.

Errors retry with one exponential backoff; a resource that is not served (a CRD installed later)
counts as synced and empty, and is looked for again after a while.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from scheduler_ext.kube.errors import APIError, APIGoneError, api_error
from scheduler_ext.kube.names import Resource

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 300  # seconds the API server keeps one watch open before the reflector resumes it


class Sink(Protocol):
    """What the reflector hands its objects to (every call from the reflector's thread)."""

    def replace(self, body: bytes) -> str:
        """A fresh list (the raw response body): everything not in it is gone. Returns its resourceVersion."""
        ...

    def event(self, event_type: str, obj: bytes) -> str | None:
        """One ADDED/MODIFIED/DELETED event's object (raw JSON). Returns its resourceVersion, if any."""
        ...

    def absent(self) -> None:
        """The resource is not served here (yet): nothing of it exists."""
        ...


class Transport(Protocol):
    """The reflector's two requests (RawClient's; tests script them)."""

    def request(self, method: str, path: str, query: Any = (), body: Any = None, content_type: str | None = None,
                timeout: Any = 10.0, accept: str = "application/json") -> bytes: ...

    def lines(self, path: str, query: Any = (), timeout: Any = (10.0, 330.0)) -> Iterator[str]: ...


@dataclass(frozen=True, slots=True)
class ListWatch:
    """What one reflector lists and watches, cell-wide."""

    resource: Resource
    field_selector: str = ""
    label_selector: str = ""
    # Statuses that mean "not served here (yet)", synced and empty, rather than an error to retry.
    absent_on: frozenset[int] = frozenset({404})

    def query(self) -> list[tuple[str, str]]:
        query = []
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        return query


class Backoff:
    """Exponential: first, 2*first, ... up to cap; reset after a success."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first, self.cap, self._next = first, cap, first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class WatchEvent(msgspec.Struct):
    """One line of a watch stream; `object` is decoded by the sink afterwards (an ERROR carries a Status)."""

    type: str
    object: msgspec.Raw = msgspec.Raw(b"{}")


class _Meta(msgspec.Struct, rename="camel"):
    resource_version: str = ""


class _Versioned(msgspec.Struct):
    metadata: _Meta = msgspec.field(default_factory=_Meta)


_envelope = msgspec.json.Decoder(WatchEvent)
_versioned = msgspec.json.Decoder(_Versioned)
_status = msgspec.json.Decoder(dict[str, Any])


def resource_version_of(obj: bytes) -> str:
    """metadata.resourceVersion of a raw object ("" if it has none)."""
    return _versioned.decode(obj).metadata.resource_version


def apply_line(sink: Sink, line: str | bytes, where: str = "watch") -> str | None:
    """One watch stream line into `sink`; returns the newer resourceVersion (None for an empty line).

    Raises `APIGoneError` when the watch expired (list again) and `APIError` for another ERROR event.
    """
    if not line:
        return None
    event = _envelope.decode(line)
    if event.type == "ERROR":
        status = _status.decode(event.object)
        raise api_error(int(status.get("code") or 500), status, where)
    if event.type == "BOOKMARK":
        return resource_version_of(event.object) or None
    return sink.event(event.type, event.object)


class Reflector(threading.Thread):
    """List, then watch from the list's resourceVersion; list again on 410 Gone or a broken stream."""

    def __init__(self, transport: Transport, watch: ListWatch, sink: Sink, stop: threading.Event, *,
                 watch_timeout: int = WATCH_TIMEOUT, absent_retry: float = 30.0,
                 backoff: Backoff | None = None) -> None:
        super().__init__(name=f"reflector-{watch.resource.plural}", daemon=True)
        self.transport, self.watch, self.sink, self.stop = transport, watch, sink, stop
        self.watch_timeout, self.absent_retry = watch_timeout, absent_retry
        self.backoff = backoff or Backoff()
        self.synced = threading.Event()
        self._absent_reported = False

    @property
    def resource(self) -> Resource:
        return self.watch.resource

    def run(self) -> None:
        name = self.resource.plural
        while not self.stop.is_set():
            try:
                resource_version = self._list()
                self.synced.set()
                self.backoff.reset()
                self._absent_reported = False
                while not self.stop.is_set():
                    resource_version = self._watch(resource_version)
            except APIGoneError:
                log.info("%s: resource version too old, listing again", name)
            except APIError as exc:
                if exc.status in self.watch.absent_on:
                    self._absent(exc)
                    continue
                self._retry(f"API error {exc}")
            except Exception as exc:  # a broken stream or an undecodable body: start over
                self._retry(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")

    def _absent(self, exc: APIError) -> None:
        if not self._absent_reported:
            # Not installed yet (a CRD applied later), or not readable: nothing of it to know.
            level = logging.INFO if exc.status == 404 else logging.ERROR
            log.log(level, "%s not readable (%s); treating as none, looking again every %.0f s",
                    self.resource.path, exc.status, self.absent_retry)
            self._absent_reported = True
        self.sink.absent()
        self.synced.set()
        self.stop.wait(self.absent_retry)

    def _retry(self, why: str) -> None:
        delay = self.backoff.next()
        log.warning("%s: %s; retrying in %.1f s", self.resource.plural, why, delay)
        self.stop.wait(delay)

    def _list(self) -> str:
        body = self.transport.request("GET", self.resource.path, self.watch.query(), timeout=(10.0, 60.0))
        return self.sink.replace(body)

    def _watch(self, resource_version: str) -> str:
        query = [*self.watch.query(), ("watch", "true"), ("resourceVersion", resource_version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(self.watch_timeout))]
        where = f"watch {self.resource.path}"
        for line in self.transport.lines(self.resource.path, query, timeout=(10.0, self.watch_timeout + 30.0)):
            newer = apply_line(self.sink, line, where)
            if newer:
                resource_version = newer
            if self.stop.is_set():
                break
        return resource_version


def start(reflectors: Iterable[Reflector]) -> list[Reflector]:
    started = list(reflectors)
    for reflector in started:
        reflector.start()
    return started


# --- a sink of plain dicts -------------------------------------------------------------------------

_item_list = msgspec.json.Decoder(dict[str, Any])


class ManifestSink:
    """Decodes to plain camelCase dicts (as the policy core and AdmissionReview see objects), stamped
    with apiVersion and kind (list items carry neither), for `replace(resource, items)` and
    `apply(resource, event_type, obj)` callbacks."""

    def __init__(self, resource: Resource,
                 replace: Callable[[Resource, list[dict[str, Any]]], None],
                 apply: Callable[[Resource, str, dict[str, Any]], None]) -> None:
        self.resource, self._replace, self._apply = resource, replace, apply

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        return obj

    def replace(self, body: bytes) -> str:
        listed = _item_list.decode(body)
        self._replace(self.resource, [self._stamp(item) for item in listed.get("items") or []])
        return str((listed.get("metadata") or {}).get("resourceVersion", ""))

    def event(self, event_type: str, obj: bytes) -> str | None:
        item = self._stamp(_item_list.decode(obj))
        self._apply(self.resource, event_type, item)
        return str((item.get("metadata") or {}).get("resourceVersion", "")) or None

    def absent(self) -> None:
        self._replace(self.resource, [])

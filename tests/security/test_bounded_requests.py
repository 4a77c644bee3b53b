"""No single request stalls the cell (issue 13): bounded work per request in the webhook and the extender.

A quantity such as "1e400000" (which the API server accepts) kept the webhook's event loop busy
for 11 s, so another student's create failed with `context deadline exceeded`; a small filter body
naming made-up nodes held the extender for 5 s; deeply nested JSON was a 500. Each worst body is
sent here beside a normal request, and the normal one must not wait on it. The bounds are generous
(this is a correctness test on a busy 2-core machine, not a benchmark).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from cell.localcell.supervisor import LocalCell
from cell.pki import extender_client_context
from tests.integration.test_quota import Student, pod

pytestmark = pytest.mark.cluster

# Seconds a normal request may take beside the worst one: far below the seconds the stall took.
NORMAL = 3.0


def _post(url: str, body: bytes, context: ssl.SSLContext | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    return status, text, time.monotonic() - started


@pytest.mark.parametrize("memory", ["1e400000", "9e999999"])
def test_a_huge_quantity_is_refused_at_once_and_stalls_nobody(student: Student, other_student: Student,
                                                                memory: str) -> None:
    huge = pod("huge", "best-effort", cpu="100m", memory=memory)
    outcome: dict[str, object] = {}

    def create_huge() -> None:
        started = time.monotonic()
        outcome["result"] = student.create(huge)
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=create_huge)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    normal = other_student.create(pod("normal", "production", cpu="100m", memory="64Mi"))
    took = time.monotonic() - started
    thread.join(60)
    assert normal.returncode == 0, normal.stderr
    assert took < NORMAL, f"a normal create took {took:.1f} s beside the huge one"
    result = outcome["result"]
    assert result.returncode != 0  # type: ignore[attr-defined]
    assert "is larger than any machine holds" in result.stderr  # type: ignore[attr-defined]
    assert outcome["seconds"] < NORMAL  # type: ignore[operator]


def test_a_pod_larger_than_any_node_is_refused(student: Student) -> None:
    result = student.create(pod("giant", "best-effort", cpu="500", memory="64Mi"))
    assert result.returncode != 0
    assert "each pod requests cpu 500, more than any node holds" in result.stderr


def _extender(local_cell: LocalCell) -> tuple[str, ssl.SSLContext]:
    """The extender's URL, and the client certificate it requires (issue 13: only its CA's)."""
    return f"https://127.0.0.1:{local_cell.port('extender')}", extender_client_context(local_cell.paths.pki_dir)


def _nested(depth: int) -> bytes:
    head = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":'
    return head + b"[" * depth + b"]" * depth + b"}"


def test_malformed_bodies_are_400_with_a_reason(local_cell: LocalCell) -> None:
    webhook = f"https://127.0.0.1:{local_cell.port('webhook')}/validate"
    context = ssl.create_default_context(cafile=str(local_cell.paths.pki_dir / "ca.crt"))
    for body in (_nested(100_000), b"{not json", b'{"request": 1}'):
        status, text, _ = _post(webhook, body, context)
        assert status == 400 and "not an admission.k8s.io/v1 AdmissionReview" in text, (status, text[:200])
    extender, context = _extender(local_cell)
    deep = b'{"Pod":{"metadata":{"name":"a","namespace":"b"}},"Nodes":{"items":[' + b"[" * 100_000 + b"]" * 100_000
    for verb, body in (("filter", deep + b"]}}"), ("prioritize", b"[]"), ("preempt", b'{"Pod": 7}')):
        status, text, _ = _post(f"{extender}/{verb}", body, context)
        assert status == 400 and "malformed" in text, (verb, status, text[:200])


def test_made_up_node_names_are_looked_up_once(local_cell: LocalCell) -> None:
    extender, context = _extender(local_cell)
    names = [f"no-such-node-{i}" for i in range(40)]
    body = json.dumps({"Pod": {"metadata": {"name": "probe", "namespace": "default", "uid": "probe"}},
                       "NodeNames": names}).encode()
    health: dict[str, float] = {}

    def healthz() -> None:
        started = time.monotonic()
        with urllib.request.urlopen(f"{extender}/healthz", timeout=30, context=context) as response:
            assert response.status == 200
        health["seconds"] = time.monotonic() - started

    checker = threading.Thread(target=healthz)
    status, text, first = _post(f"{extender}/filter", body, context)
    checker.start()
    checker.join(30)
    assert status == 200, text
    assert set(json.loads(text)["FailedNodes"]) == set(names)
    assert first < NORMAL and health["seconds"] < NORMAL, (first, health)
    # Asked again, the names are known to be absent: no lookup at all.
    for _ in range(5):
        _, _, again = _post(f"{extender}/filter", body, context)
        assert again < 1.0, f"a repeated filter of made-up names took {again:.1f} s"

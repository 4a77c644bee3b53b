"""`make fuzz`: generated bodies against every HTTP endpoint of the running extender and webhook.

Bounded: FUZZ_EXAMPLES bodies per endpoint (hypothesis; default 2000), sent to the shared local
cell's real processes over loopback. Each must answer without a 5xx; afterwards both processes are
alive, healthy, and their RSS grew by less than RSS_GROWTH_MB. The webhook's bodies are
AdmissionReviews of charged kinds in a namespace with no BandQuota (every band but best-effort is
zero there, Q4) with forged exemption claims: whatever the shape, one that asks for cpu or memory in
a limited band must be refused.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cell.localcell.supervisor import LocalCell
from cell.pki import extender_client_context
from scheduler_ext.policy.workloads import workload_of

pytestmark = [pytest.mark.cluster, pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
RSS_GROWTH_MB = 64
FIGURES: dict[str, Any] = {}

_settings = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])

# --- strategies ------------------------------------------------------------------------------------

names = st.text(st.sampled_from("abcdefghij-0123456789."), min_size=0, max_size=20)
weird = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                  st.text(max_size=30), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                             st.integers(), max_size=2))
quantities = st.one_of(
    st.sampled_from(["1", "100m", "0", "-1", "1e400000", "9e999999", "1e-400000", "1Ei", "0.5", "1.5Gi",
                     "lots", "", "1e24", "1e25", "12345678901234567890123456789", "1" * 70, "+1", ".5m"]),
    st.integers(-2**64, 2**64), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.none())
resources = st.dictionaries(st.sampled_from(["cpu", "memory", "pods", "nvidia.com/gpu"]), quantities, max_size=3)
containers = st.lists(st.fixed_dictionaries(
    {"name": names, "image": st.just("cell.local/web:1.0")},
    optional={"resources": st.fixed_dictionaries({}, optional={"requests": resources, "limits": resources}),
              "restartPolicy": st.sampled_from(["Always", "Never", "x"])}), max_size=4)
bands = st.sampled_from(["production", "batch", "monitoring", "best-effort", "nope", None])
owners = st.lists(st.fixed_dictionaries(
    {"apiVersion": st.sampled_from(["apps/v1", "batch/v1", "v1", "x/v1"]),
     "kind": st.sampled_from(["ReplicaSet", "Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet", "Alloc"]),
     "name": names, "uid": names, "controller": st.one_of(st.booleans(), st.none())}), max_size=2)
labels = st.dictionaries(st.sampled_from(["app", "cell.distos.dev/alloc", "batch.kubernetes.io/controller-uid"]),
                         names, max_size=3)


@st.composite
def pod_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": draw(containers)}
    band = draw(bands)
    if band:
        spec["priorityClassName"] = band
    if draw(st.booleans()):
        spec["initContainers"] = draw(containers)
    if draw(st.integers(0, 9)) == 0:
        spec["nodeName"] = draw(names)
    if draw(st.integers(0, 9)) == 0:
        spec["priority"] = draw(weird)
    if draw(st.integers(0, 9)) == 0:
        spec["overhead"] = draw(resources)
    return spec


KINDS = {"Pod": ("", "pods"), "Deployment": ("apps", "deployments"), "ReplicaSet": ("apps", "replicasets"),
         "StatefulSet": ("apps", "statefulsets"), "Job": ("batch", "jobs"), "CronJob": ("batch", "cronjobs"),
         "Alloc": ("cell.distos.dev", "allocs")}
NAMESPACE = "fuzz-no-quota"


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(KINDS)))
    group = KINDS[kind][0]
    meta: dict[str, Any] = {"name": draw(names) or "x", "namespace": NAMESPACE, "uid": draw(names),
                            "labels": draw(labels), "ownerReferences": draw(owners)}
    template = {"metadata": {"labels": draw(labels)}, "spec": draw(pod_specs())}
    if kind == "Pod":
        spec = template["spec"]
        meta["labels"] = template["metadata"]["labels"]
    elif kind == "Alloc":
        spec = {"priorityClassName": draw(bands), "count": draw(st.one_of(st.integers(-3, 10), weird)),
                "resources": draw(resources)}
    elif kind == "CronJob":
        spec = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template,
                                                                  "parallelism": draw(st.integers(-1, 50))}}}
    elif kind == "Job":
        spec = {"template": template, "parallelism": draw(st.one_of(st.integers(-1, 50), weird)),
                "selector": {"matchLabels": draw(labels)}}
    else:
        spec = {"template": template, "replicas": draw(st.one_of(st.integers(-1, 100), weird)),
                "selector": {"matchLabels": draw(labels)}}
    return {"apiVersion": f"{group}/v1" if group else "v1", "kind": kind, "metadata": meta, "spec": spec}


def review(obj: Any, operation: str = "CREATE") -> dict[str, Any]:
    kind = obj.get("kind", "Pod") if isinstance(obj, dict) else "Pod"
    group, plural = KINDS.get(kind, ("", "pods"))
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "fuzz", "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": plural}, "namespace": NAMESPACE,
        "name": "x", "operation": operation, "userInfo": {"username": "fuzz"}, "object": obj,
        # A dry run reserves nothing: each body is judged against the same (empty) namespace.
        "dryRun": True}}


def must_be_refused(obj: dict[str, Any]) -> bool:
    """With no BandQuota every limited band is zero: anything asking for cpu or memory there is refused,
    whatever it claims (no owner, no Alloc exists in this namespace), and so is any pod with nodeName."""
    if obj["kind"] == "Pod" and obj["spec"].get("nodeName"):
        return True
    try:
        workload = workload_of(obj)
    except (ValueError, TypeError, AttributeError, KeyError):
        return True  # unreadable numbers are refused with the reason
    if workload is None or workload.own is None:
        return False
    charge = workload.own
    return charge.band.label != "best-effort" and ((charge.replicas > 0 and not charge.demand.is_zero())
                                                   or (bool(charge.missing_requests) and charge.replicas > 0))


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda d: b"[" * d + b"]" * d, st.integers(1, 200_000)),
    st.builds(lambda d: b'{"a":' * d + b"1" + b"}" * d, st.integers(1, 100_000)),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
)

# --- the endpoints -----------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Endpoint:
    def __init__(self, url: str, context: ssl.SSLContext | None = None) -> None:
        self.url, self.context = url, context
        self.sent = 0
        self.statuses: dict[int, int] = {}

    def post(self, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, f"{self.url}: {status} for {body[:300]!r}: {data[:300]!r}"
        return status, data


@pytest.fixture(scope="module")
def processes(local_cell: LocalCell) -> dict[str, int]:
    pids = {name: local_cell.pid(name) for name in ("webhook", "extender")}
    assert all(pids.values()), pids
    return {name: pid for name, pid in pids.items() if pid}


@pytest.fixture(scope="module", autouse=True)
def bounded_rss(local_cell: LocalCell, processes: dict[str, int]) -> Any:
    before = {name: _rss_mb(pid) for name, pid in processes.items()}
    started = time.monotonic()
    yield
    for name, pid in processes.items():
        assert local_cell.alive(name) and local_cell.healthy(name), f"{name} died or is unhealthy after the fuzz"
        growth = _rss_mb(pid) - before[name]
        FIGURES[name] = {"rss_before_mb": round(before[name], 1), "rss_growth_mb": round(growth, 1)}
        assert growth < RSS_GROWTH_MB, f"{name} RSS grew {growth:.0f} MB under the fuzz"
    FIGURES["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nfuzz figures: {json.dumps(FIGURES, sort_keys=True)}")


@pytest.fixture(scope="module")
def webhook(local_cell: LocalCell) -> Endpoint:
    context = ssl.create_default_context(cafile=str(local_cell.paths.pki_dir / "ca.crt"))
    return Endpoint(f"https://127.0.0.1:{local_cell.port('webhook')}/validate", context)


def _extender(local_cell: LocalCell, verb: str) -> Endpoint:
    return Endpoint(f"https://127.0.0.1:{local_cell.port('extender')}/{verb}",
                    extender_client_context(local_cell.paths.pki_dir))


@_settings
@given(obj=objects(), operation=st.sampled_from(["CREATE", "UPDATE"]))
def test_webhook_admits_nothing_that_must_be_refused(webhook: Endpoint, obj: dict[str, Any], operation: str) -> None:
    status, data = webhook.post(json.dumps(review(obj, operation)).encode())
    assert status == 200
    allowed = json.loads(data)["response"]["allowed"]
    if must_be_refused(obj) and operation == "CREATE":
        assert not allowed, f"admitted what must be refused: {json.dumps(obj)[:500]}"
    FIGURES.setdefault("webhook_reviews", 0)
    FIGURES["webhook_reviews"] += 1


@_settings
@given(body=raw_bodies)
def test_webhook_malformed_bodies(webhook: Endpoint, body: bytes) -> None:
    status, _ = webhook.post(body)
    assert status in (200, 400)


@st.composite
def extender_args(draw: st.DrawFn) -> bytes:
    pod = {"metadata": {"name": draw(names) or "p", "namespace": draw(names) or "ns", "uid": draw(names),
                        "labels": draw(labels), "ownerReferences": draw(owners)},
           "spec": draw(pod_specs())}
    nodes = draw(st.lists(st.one_of(st.sampled_from([f"node-{i}" for i in range(1, 13)]), names), max_size=12))
    body: dict[str, Any] = {"Pod": pod}
    if draw(st.booleans()):
        body["NodeNames"] = nodes
    else:
        body["Nodes"] = {"items": [{"metadata": {"name": n}} for n in nodes]}
    if draw(st.integers(0, 4)) == 0:
        body["NodeNameToMetaVictims"] = {n: {"Pods": [{"UID": draw(names)}], "NumPDBViolations": 0} for n in nodes}
    return json.dumps(body).encode()


@pytest.mark.parametrize("verb", ["filter", "prioritize", "preempt"])
def test_extender_verbs(local_cell: LocalCell, verb: str) -> None:
    endpoint = _extender(local_cell, verb)

    @_settings
    @given(body=st.one_of(extender_args(), raw_bodies))
    def run(body: bytes) -> None:
        status, _ = endpoint.post(body)
        assert status in (200, 400)

    run()
    FIGURES[f"extender_{verb}"] = endpoint.statuses

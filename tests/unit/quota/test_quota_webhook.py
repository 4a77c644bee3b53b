"""The webhook adapter without a cluster: AdmissionReviews in, decisions out, over its real HTTP app.

The cache is fed the way its reflectors feed it (replace/apply with API objects), so these tests
cover the translation from requests to policy calls: UPDATE vs CREATE, the scale subresource,
reservations between admission and the watch, BandQuota checks, and the wire format.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_ext.policy.workloads import ObjectRef, charge_of, usage_by_band, workload_of
from scheduler_ext.webhook.admission import QuotaAdmission
from scheduler_ext.webhook.cache import BAND_QUOTAS, CHARGED, NODES, QuotaCache, Resource
from scheduler_ext.webhook.server import make_app
from scheduler_ext.webhook.wire import AdmissionRequest, decode_review
from tests.unit.quota.quota_builders import band_quota, container, deployment, job, owner, pod, pod_spec

KINDS = {r.kind: r for r in (*CHARGED, BAND_QUOTAS, NODES)}
GROUPS = {"Pod": ("", "v1", "pods"), "Deployment": ("apps", "v1", "deployments"),
          "ReplicaSet": ("apps", "v1", "replicasets"), "StatefulSet": ("apps", "v1", "statefulsets"),
          "Job": ("batch", "v1", "jobs"), "CronJob": ("batch", "v1", "cronjobs"),
          "Alloc": ("cell.distos.dev", "v1alpha1", "allocs"),
          "BandQuota": ("cell.distos.dev", "v1alpha1", "bandquotas")}

QUOTA = {"production": {"cpu": "4", "memory": "8Gi"}, "batch": {"cpu": "8", "memory": "16Gi"}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def node(name: str, cpu: str = "8", memory: str = "32Gi") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}}


def store(cache: QuotaCache, *objects: dict[str, Any]) -> None:
    """As the watch delivers objects (ADDED/MODIFIED)."""
    for obj in objects:
        cache.apply(KINDS[obj["kind"]], "ADDED", copy.deepcopy(obj))


def review(obj: dict[str, Any] | None, operation: str = "CREATE", old: dict[str, Any] | None = None,
           sub_resource: str = "", name: str = "", resource: str = "", kind: dict[str, str] | None = None,
           dry_run: bool = False, namespace: str = "alice") -> dict[str, Any]:
    source = obj or old or {}
    group, version, plural = GROUPS.get(source.get("kind", ""), ("", "v1", ""))
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0a1b", "kind": kind or {"group": group, "version": version, "kind": source.get("kind", "")},
        "resource": {"group": group, "version": version, "resource": resource or plural},
        "subResource": sub_resource, "name": name or (source.get("metadata") or {}).get("name", ""),
        "namespace": namespace, "operation": operation, "userInfo": {"username": "alice", "groups": ["cell:students"]},
        "object": obj, "oldObject": old, "dryRun": dry_run}}


def scale(name: str, replicas: int, old_replicas: int, resource: str = "deployments") -> dict[str, Any]:
    def obj(n: int) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name, "namespace": "alice"},
                "spec": {"replicas": n}}
    return review(obj(replicas), "UPDATE", obj(old_replicas), "scale", name, resource,
                  {"group": "autoscaling", "version": "v1", "kind": "Scale"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fetched() -> dict[str, dict[str, Any]]:
    return {}


@pytest.fixture
def admission(clock: Clock, fetched: dict[str, dict[str, Any]]) -> QuotaAdmission:
    cache = QuotaCache(clock=clock)
    cache.replace(NODES, [node("node-1"), node("node-2")])  # 16 CPU / 64Gi of allocatable
    store(cache, band_quota(QUOTA))

    def fetch(resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return fetched.get(f"{resource}/{namespace}/{name}")

    return QuotaAdmission(cache, fetch)


def decide(admission: QuotaAdmission, body: dict[str, Any]) -> tuple[bool, str]:
    request: AdmissionRequest = decode_review(msgspec.json.encode(body)).request
    decision = asyncio.run(admission.review(request))
    return decision.allowed, decision.message


# --- jobs ------------------------------------------------------------------------------------------

def test_q2_refusal_and_whole_job_admission(admission: QuotaAdmission) -> None:
    assert decide(admission, review(deployment(replicas=5))) == (
        False, "BandQuota alice/quota: band production needs cpu 5, 0 in use, limit 4")
    assert decide(admission, review(deployment(replicas=4)))[0]


def test_use_counts_and_is_charged_once(admission: QuotaAdmission) -> None:
    store(admission.cache, deployment("web", replicas=3))
    # The web Deployment's ReplicaSet and pods are charged to it, not again (Q3).
    rs = deployment("web-7f", replicas=3, kind="ReplicaSet", owners=[owner("Deployment", "web")])
    store(admission.cache, rs, pod("web-7f-a", owners=[owner("ReplicaSet", "web-7f")], labels={"app": "x"}))
    assert decide(admission, review(rs))[0]
    assert decide(admission, review(pod("web-7f-b", owners=[owner("ReplicaSet", "web-7f")], labels={"app": "x"})))[0]
    allowed, message = decide(admission, review(deployment("api", replicas=2)))
    assert not allowed
    assert message == "BandQuota alice/quota: band production needs cpu 2, 3 in use, limit 4"
    assert decide(admission, review(pod("solo")))[0]  # 3 + 1 fits


def test_reservation_closes_the_gap_until_the_watch_delivers(admission: QuotaAdmission, clock: Clock) -> None:
    assert decide(admission, review(deployment("a", replicas=3)))[0]
    # The watch has not delivered "a" yet; without the reservation "b" would be admitted too.
    assert not decide(admission, review(deployment("b", replicas=3)))[0]
    # Dry runs reserve nothing.
    assert decide(admission, review(job("j", parallelism=8), dry_run=True))[0]
    assert decide(admission, review(job("j", parallelism=8)))[0]
    # The watch delivers "a" (the reservation gives way to the real object) ...
    store(admission.cache, deployment("a", replicas=3))
    assert not decide(admission, review(deployment("b", replicas=3)))[0]
    # ... and a reservation that never materialises (the create failed later) expires.
    admission.cache.apply(KINDS["Deployment"], "DELETED", deployment("a", replicas=3))
    clock.now += 60
    assert decide(admission, review(deployment("b", replicas=4)))[0]


def test_update_is_judged_without_double_counting(admission: QuotaAdmission) -> None:
    old = deployment("web", replicas=3)
    store(admission.cache, old)
    assert decide(admission, review(deployment("web", replicas=4), "UPDATE", old))[0]
    store(admission.cache, deployment("web", replicas=4))
    allowed, message = decide(admission, review(deployment("web", replicas=5), "UPDATE", deployment("web", 4)))
    assert (allowed, message) == (False, "BandQuota alice/quota: band production needs cpu 5, 0 in use, limit 4")
    # Changing the template's labels or image does not grow the job: admitted even at the limit.
    relabelled = deployment("web", replicas=4, labels={"app": "x", "version": "2"})
    assert decide(admission, review(relabelled, "UPDATE", deployment("web", replicas=4)))[0]


def test_scale_subresource(admission: QuotaAdmission) -> None:
    store(admission.cache, deployment("web", replicas=4))
    assert decide(admission, scale("web", 5, 4)) == (
        False, "BandQuota alice/quota: band production needs cpu 5, 0 in use, limit 4")
    assert decide(admission, scale("web", 2, 4))[0]


def test_scale_of_a_workload_the_watch_has_not_delivered_asks_the_api(
        admission: QuotaAdmission, fetched: dict[str, dict[str, Any]]) -> None:
    fetched["statefulsets/alice/db"] = deployment("db", replicas=1, kind="StatefulSet")
    assert not decide(admission, scale("db", 5, 1, "statefulsets"))[0]
    assert decide(admission, scale("db", 4, 1, "statefulsets"))[0]
    assert decide(admission, scale("gone", 9, 1))[0]  # no such object: the API server answers 404 itself


def test_scale_of_a_replicaset_owned_by_a_deployment_is_free_within_its_cover(admission: QuotaAdmission) -> None:
    store(admission.cache, deployment("web", replicas=4),
          deployment("web-7f", replicas=4, kind="ReplicaSet", owners=[owner("Deployment", "web")]))
    # The Deployment covers its replicas plus the rollout's surge (25% of 4: 1) ...
    assert decide(admission, scale("web-7f", 5, 4, "replicasets"))[0]
    # ... and no more (Q9): beyond it the ReplicaSet is charged itself, and 40 CPU do not fit.
    allowed, message = decide(admission, scale("web-7f", 40, 4, "replicasets"))
    assert not allowed
    assert "band production needs cpu 40" in message and "Deployment alice/web covers 5" in message


def test_job_parallelism_and_best_effort_and_q5(admission: QuotaAdmission) -> None:
    assert not decide(admission, review(job(parallelism=9)))[0]
    assert decide(admission, review(job(parallelism=8)))[0]
    assert decide(admission, review(deployment("free", replicas=100, spec=pod_spec("best-effort"))))[0]
    allowed, message = decide(admission, review(pod("bare", spec=pod_spec(containers=[container(cpu=None)]))))
    assert not allowed
    assert 'must request cpu and memory; container "app" has no cpu request' in message


def test_unreadable_quantities_are_refused_with_the_reason(admission: QuotaAdmission) -> None:
    allowed, message = decide(admission, review(deployment(spec=pod_spec(containers=[container(cpu="lots")]))))
    assert not allowed
    assert "Deployment alice/web: not a quantity: 'lots'" in message


def test_alloc_is_charged_and_its_members_are_not(admission: QuotaAdmission) -> None:
    alloc = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc", "metadata": {"name": "cache",
             "namespace": "alice"}, "spec": {"priorityClassName": "production", "count": 2,
                                             "resources": {"cpu": "1500m", "memory": "256Mi"}}}
    assert decide(admission, review(alloc))[0]
    store(admission.cache, alloc)
    members = deployment("cache", replicas=10, labels={"app": "x", "cell.distos.dev/alloc": "cache"},
                         spec=pod_spec(containers=[container(cpu="250m", memory="128Mi")]))
    assert decide(admission, review(members))[0]
    # Q9: pods that cannot fit an instance are no members; charged, 10 x 1 CPU does not fit.
    too_big = deployment("big", replicas=10, labels={"app": "x", "cell.distos.dev/alloc": "cache"})
    allowed, message = decide(admission, review(too_big))
    assert not allowed and "do not fit an instance of Alloc cache" in message
    ghost = deployment("ghost", replicas=10, labels={"app": "x", "cell.distos.dev/alloc": "ghost"},
                       spec=pod_spec(containers=[container(cpu="250m", memory="128Mi")]))
    allowed, message = decide(admission, review(ghost))
    assert not allowed and "Alloc ghost does not exist in namespace alice" in message
    assert not decide(admission, review(deployment("api", replicas=2)))[0]  # 3 CPU reserved + 2 > 4


def test_delete_and_other_kinds_pass(admission: QuotaAdmission) -> None:
    assert decide(admission, review(None, "DELETE", deployment(replicas=50)))[0]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "alice"}}
    assert decide(admission, review(service))[0]


def test_no_band_quota_in_a_managed_namespace(admission: QuotaAdmission) -> None:
    allowed, message = decide(admission, review(deployment(), namespace="bob"))
    assert not allowed
    assert message.startswith("no BandQuota in namespace bob: band production needs cpu 1, 0 in use, limit 0")


# --- BandQuotas -------------------------------------------------------------------------------------

def test_band_quota_validation_collects_errors(admission: QuotaAdmission) -> None:
    bad = band_quota({"prod": {"cpu": "1", "memory": "1Gi"}, "batch": {"cpu": "-1", "memory": "x"}}, namespace="bob")
    allowed, message = decide(admission, review(bad, namespace="bob"))
    assert not allowed
    assert message == ("BandQuota bob/quota: spec.bands.prod: unknown band; expected one of best-effort, batch, "
                       "production, monitoring; BandQuota bob/quota: spec.bands.batch.cpu: must not be negative, "
                       "got '-1'; BandQuota bob/quota: spec.bands.batch.memory: must be a quantity, got 'x'")


def test_one_band_quota_per_namespace(admission: QuotaAdmission) -> None:
    allowed, message = decide(admission, review(band_quota(QUOTA, name="more")))
    assert not allowed
    assert "already has BandQuota alice/quota" in message
    assert decide(admission, review(band_quota(QUOTA), "UPDATE", band_quota(QUOTA)))[0]


def test_q6_counts_quotas_admitted_a_moment_ago(admission: QuotaAdmission) -> None:
    # alice holds 4 CPU of prod on a 16-CPU cell: 12 are left.
    prod = {"production": {"cpu": "6", "memory": "1Gi"}}
    assert decide(admission, review(band_quota(prod, namespace="bob"), namespace="bob"))[0]
    # carol's request comes before the watch delivered bob's quota: still counted.
    allowed, message = decide(admission, review(band_quota({"production": {"cpu": "7", "memory": "1Gi"}},
                                                           namespace="carol"), namespace="carol"))
    assert not allowed
    assert "cpu 17 granted over all namespaces (7 here), allocatable 16" in message
    # Lowering alice's own quota is always fine.
    lower = band_quota({"production": {"cpu": "1", "memory": "1Gi"}})
    assert decide(admission, review(lower, "UPDATE", band_quota(QUOTA)))[0]


# --- over HTTP --------------------------------------------------------------------------------------

def test_http_app(admission: QuotaAdmission) -> None:
    async def run() -> None:
        async with TestClient(TestServer(make_app(admission))) as http:
            assert (await http.get("/healthz")).status == 503  # no reflector has synced
            reply = await http.post("/validate", json=review(deployment(replicas=5)))
            assert reply.status == 200
            body = await reply.json()
            assert body["apiVersion"] == "admission.k8s.io/v1"
            assert body["kind"] == "AdmissionReview"
            assert body["response"] == {"uid": "0a1b", "allowed": False, "status": {
                "code": 403, "reason": "Forbidden",
                "message": "BandQuota alice/quota: band production needs cpu 5, 0 in use, limit 4"}}
            allowed = await (await http.post("/validate", json=review(deployment(replicas=1)))).json()
            assert allowed["response"] == {"uid": "0a1b", "allowed": True}
            assert (await http.post("/validate", data=b"{not json")).status == 400
            metrics = await (await http.get("/metrics")).text()
            assert 'cell_quota_admission_decisions_total{allowed="false",kind="Deployment"} 1.0' in metrics

    asyncio.run(run())


def test_cache_replace_drops_what_a_relist_no_longer_has(admission: QuotaAdmission) -> None:
    cache = admission.cache
    store(cache, deployment("web", replicas=4))
    deployments: Resource = KINDS["Deployment"]
    cache.replace(deployments, [])
    assert decide(admission, review(deployment("api", replicas=4)))[0]
    assert cache.capacity().cpu == 16_000


# --- the cache's incremental usage equals the plain sum ---------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "delete", "reserve", "expire"]),
                          st.sampled_from(["a", "b", "c"]), st.integers(min_value=0, max_value=4)), max_size=25),
       st.sampled_from([None, "a", "b", "c"]))
def test_used_matches_a_plain_sum(operations: list[tuple[str, str, int]], excluded: str | None) -> None:
    clock = Clock()
    cache = QuotaCache(clock=clock)
    stored: dict[str, dict[str, Any]] = {}
    reserved: dict[str, tuple[dict[str, Any], float]] = {}
    for operation, name, replicas in operations:
        manifest = deployment(name, replicas=replicas)
        if operation == "put":
            store(cache, manifest)
            stored[name] = manifest
            reserved.pop(name, None)
        elif operation == "delete":
            cache.apply(KINDS["Deployment"], "DELETED", manifest)
            stored.pop(name, None)
            reserved.pop(name, None)
        elif operation == "reserve":
            cache.reserve(workload_of(manifest))  # type: ignore[arg-type]
            reserved[name] = (manifest, clock.now + 15)
        else:
            clock.now += 10
    current = {**stored, **{n: m for n, (m, expiry) in reserved.items() if expiry >= clock.now}}
    expected = usage_by_band(c for c in map(charge_of, current.values()) if c is not None)
    assert cache.used("alice") == expected
    if excluded:
        ref = ObjectRef("Deployment", "alice", excluded)
        assert set(cache.namespace_view("alice")) == {ObjectRef("Deployment", "alice", n) for n in current}
        assert (cache.workload(ref) is not None) == (excluded in current)

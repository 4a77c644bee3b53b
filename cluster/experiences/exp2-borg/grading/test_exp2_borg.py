"""Grading checks of exp2-borg (SPEC §8); README.md says what each one looks for.

Quota and alloc arithmetic comes from the policy core (scheduler_ext.policy), the same code the
webhook and the operator decide with, so the grader cannot disagree with the cell about what a
student's quota admits. Every check only reads.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from cell.grading import ClusterView, is_ready, owned_by_deployment, plural, pod_spec, template_labels
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.model import ALLOC_LABEL
from scheduler_ext.policy.quota import band_quota_of
from scheduler_ext.policy.resources import ZERO, Resources, parse_cpu
from scheduler_ext.policy.workloads import charge_of, pod_requests

ALLOC = pytest.mark.task(1, "Alloc cache", points=3)
CACHE = pytest.mark.task(2, "Deployment cache in the alloc", points=3)
API = pytest.mark.task(3, "Deployment api fills the production quota", points=2)
ANSWERS = pytest.mark.task(4, "ConfigMap answers", points=2)

ZONE = "topology.kubernetes.io/zone"
ALLOC_RESOURCES = Resources.parse({"cpu": "500m", "memory": "256Mi"})
CACHE_REQUESTS = Resources.parse({"cpu": "250m", "memory": "128Mi"})
API_REQUESTS = Resources.parse({"cpu": "500m", "memory": "256Mi"})
# The handout's oversized Deployment (demo/oversized.yaml): 40 replicas x 1 CPU in production.
OVERSIZED_CPU = 40 * 1000
QUOTA_REJECTION = re.compile(
    r"BandQuota (?P<ref>[^\s:]+): band production needs cpu (?P<needs>[^\s,]+), (?P<used>[^\s,]+) in use, "
    r"limit (?P<limit>[^\s;,]+)")


def _instances(alloc: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in (alloc.get("status") or {}).get("instances") or [] if i.get("node")]


@ALLOC
def test_cache_alloc_spec(cluster: ClusterView) -> None:
    alloc = cluster.require("Alloc", "cache")
    spec = alloc.get("spec") or {}
    problems = []
    if spec.get("priorityClassName") != "production":
        problems.append(f"its priorityClassName is {spec.get('priorityClassName') or 'not set'}, expected production")
    if spec.get("count") != 2:
        problems.append(f"count is {spec.get('count')}, expected 2")
    resources = Resources.parse(spec.get("resources") or {})
    if resources != ALLOC_RESOURCES:
        problems.append(f"each instance reserves {resources}, expected {ALLOC_RESOURCES}")
    if spec.get("spreadBy") != ZONE:
        problems.append(f"spreadBy is {spec.get('spreadBy') or 'not set'}, expected {ZONE}")
    assert not problems, "Alloc cache: " + "; ".join(problems)


@ALLOC
def test_cache_alloc_reserved(cluster: ClusterView) -> None:
    alloc = cluster.require("Alloc", "cache")
    status = alloc.get("status") or {}
    phase = status.get("phase") or "not reported"
    message = f" ({status['message']})" if status.get("message") else ""
    assert phase == "Reserved", f"Alloc cache is {phase}{message}, expected Reserved"
    nodes = cluster.nodes()
    zones = [(nodes.get(i["node"]) or {}).get("metadata", {}).get("labels", {}).get(ZONE) for i in _instances(alloc)]
    assert len(set(zones)) == len(zones) == 2, (
        f"Alloc cache's instances are in zones {', '.join(str(z) for z in zones) or 'none'}, "
        "expected 2 instances in distinct zones")


@CACHE
def test_cache_deployment(cluster: ClusterView) -> None:
    cache = cluster.require("Deployment", "cache")
    problems = []
    replicas = (cache.get("spec") or {}).get("replicas", 1)
    if replicas != 2:
        problems.append(f"it asks for {plural(replicas, 'replica')}, expected 2")
    member_of = template_labels(cache).get(ALLOC_LABEL)
    if member_of != "cache":
        problems.append(f"its pods are not members of alloc cache (label {ALLOC_LABEL}: "
                        f"{member_of or 'not set'}, expected cache)")
    requests = pod_requests(pod_spec(cache))
    if requests != CACHE_REQUESTS:
        problems.append(f"each pod requests {requests}, expected {CACHE_REQUESTS}")
    assert not problems, "Deployment cache: " + "; ".join(problems)


@CACHE
def test_cache_pods_inside_alloc(cluster: ClusterView) -> None:
    cache = cluster.require("Deployment", "cache")
    selector = ",".join(f"{k}={v}" for k, v in
                        sorted(((cache.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items()))
    pods = [p for p in cluster.pods(selector or None) if owned_by_deployment(p, "cache")]
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running" and is_ready(p)]
    assert len(running) >= 2, f"Deployment cache has {plural(len(running), 'running pod')}, expected 2"
    alloc = cluster.get("Alloc", "cache")
    assert alloc is not None, "Alloc cache not found, so the cache pods cannot be inside it"
    per_instance = Resources.parse((alloc.get("spec") or {}).get("resources") or {})
    alloc_nodes = {i["node"] for i in _instances(alloc)}
    outside = [p["metadata"]["name"] for p in running if p["spec"].get("nodeName") not in alloc_nodes]
    assert not outside, (f"pod(s) {', '.join(outside)} of Deployment cache run outside alloc cache "
                         f"(its instances are on {', '.join(sorted(alloc_nodes)) or 'no node'})")
    members = [p for p in cluster.pods(f"{ALLOC_LABEL}=cache") if (p.get("status") or {}).get("phase") == "Running"]
    for node in sorted(alloc_nodes):
        used = ZERO
        for pod in members:
            if pod["spec"].get("nodeName") == node:
                used = used + pod_requests(pod["spec"])
        assert used.fits_in(per_instance), (f"the members of alloc cache on {node} request {used}, more than "
                                            f"the instance's {per_instance}")


@API
def test_api_deployment(cluster: ClusterView) -> None:
    api = cluster.require("Deployment", "api")
    problems = []
    band = pod_spec(api).get("priorityClassName")
    if band != "production":
        problems.append(f"its priorityClassName is {band or 'not set'}, expected production")
    requests = pod_requests(pod_spec(api))
    if requests != API_REQUESTS:
        problems.append(f"each pod requests {requests}, expected {API_REQUESTS}")
    assert not problems, "Deployment api: " + "; ".join(problems)


@API
def test_api_fills_production_quota(cluster: ClusterView) -> None:
    api = cluster.require("Deployment", "api")
    quotas = cluster.list("BandQuota")
    assert quotas, f"no BandQuota in namespace {cluster.namespace}; ask your instructor"
    quota, _errors = band_quota_of(quotas[0])
    limit = quota.limit(Band.PRODUCTION) or ZERO
    used = Resources.parse((((quotas[0].get("status") or {}).get("used")) or {}).get("production") or {})
    # What the rest of the namespace uses: status.used counts api itself once it is admitted (Q3).
    charge = charge_of(api)
    own = charge.demand if charge is not None and charge.band is Band.PRODUCTION else ZERO
    others = used - own
    expected = API_REQUESTS.how_many_fit(limit - others)
    replicas = (api.get("spec") or {}).get("replicas", 1)
    assert replicas == expected, (
        f"Deployment api has {plural(replicas, 'replica')}; the production quota (limit {limit}, "
        f"{others} used by your other production workloads) admits {expected} pods of {API_REQUESTS}")
    available = int((api.get("status") or {}).get("availableReplicas") or 0)
    assert available >= expected, (f"Deployment api has {plural(available, 'replica')} available, "
                                   f"expected {expected}")


@ANSWERS
def test_answer_preempted_band(cluster: ClusterView) -> None:
    answers = cluster.require("ConfigMap", "answers")
    answer = ((answers.get("data") or {}).get("preempted-band") or "").strip()
    assert answer, "ConfigMap answers has no key preempted-band"
    assert answer.lower() == Band.BATCH.label, (f"preempted-band is {answer!r}: that is not the band whose pods "
                                                "the demo preempts")


@ANSWERS
def test_answer_quota_message(cluster: ClusterView) -> None:
    answers = cluster.require("ConfigMap", "answers")
    answer = ((answers.get("data") or {}).get("quota-message") or "").strip()
    assert answer, "ConfigMap answers has no key quota-message"
    assert "\n" not in answer, "quota-message should be the first line of the rejection only"
    match = QUOTA_REJECTION.search(answer)
    assert match, (f"quota-message {answer!r} is not the webhook's rejection "
                   "(BandQuota NAMESPACE/NAME: band production needs cpu ..., ... in use, limit ...)")
    quotas = cluster.list("BandQuota")
    problems = []
    if quotas and match["ref"] != f"{cluster.namespace}/{quotas[0]['metadata']['name']}":
        problems.append(f"it names BandQuota {match['ref']}, not yours")
    try:
        needs, limit = parse_cpu(match["needs"]), parse_cpu(match["limit"])
    except ValueError:
        needs = limit = -1
    if needs != OVERSIZED_CPU:
        problems.append(f"it says the Deployment needs cpu {match['needs']}, but the handout's oversized "
                        "Deployment needs cpu 40")
    if quotas:
        quota, _errors = band_quota_of(quotas[0])
        expected_limit = (quota.limit(Band.PRODUCTION) or ZERO).cpu
        if limit != expected_limit:
            problems.append(f"it says the limit is cpu {match['limit']}, but your production limit is "
                            f"cpu {Resources(expected_limit, 0).to_dict()['cpu']}")
    assert not problems, "quota-message: " + "; ".join(problems)

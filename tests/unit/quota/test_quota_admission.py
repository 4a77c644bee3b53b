"""The quota decisions: whole-job admission (Q1, Q2, Q4, Q5), BandQuota validation, prod overselling (Q6)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import (
    DEFAULT_STUDENT_BANDS,
    BandQuota,
    admit_band_quota,
    admit_charge,
    band_quota_of,
    bands_manifest,
    parse_bands,
    used_status,
)
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.workloads import Charge, ObjectRef, charge_of, usage_by_band
from tests.unit.quota.quota_builders import band_quota, container, deployment, job, pod, pod_spec, res


def quota(bands: dict[str, Any] | None = None, namespace: str = "alice", name: str = "quota") -> BandQuota:
    parsed, errors = band_quota_of(band_quota(bands if bands is not None else
                                              {"production": {"cpu": "4", "memory": "8Gi"},
                                               "batch": {"cpu": "8", "memory": "16Gi"}}, name, namespace))
    assert errors == []
    return parsed


def charge(manifest: dict[str, Any]) -> Charge:
    result = charge_of(manifest)
    assert result is not None
    return result


NOTHING_USED = usage_by_band([])


# --- Q1/Q2: whole-job admission ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("manifest", "used", "allowed", "message"),
    [
        # The example, word for word (Q2).
        (deployment(replicas=5), NOTHING_USED, False,
         "BandQuota alice/quota: band production needs cpu 5, 0 in use, limit 4"),
        (deployment(replicas=4), NOTHING_USED, True, "fits band production"),
        (deployment(replicas=2), {Band.PRODUCTION: res("3", "1Gi")}, False,
         "BandQuota alice/quota: band production needs cpu 2, 3 in use, limit 4"),
        (deployment(replicas=1), {Band.PRODUCTION: res("3", "1Gi")}, True, "fits"),
        # Both resources short: both named, one line.
        (deployment(replicas=9), NOTHING_USED, False,
         "band production needs cpu 9, 0 in use, limit 4; BandQuota alice/quota: band production needs memory 9Gi, "
         "0 in use, limit 8Gi"),
        # Q1: a Job's parallelism is its size.
        (job(parallelism=9), NOTHING_USED, False, "band batch needs cpu 9, 0 in use, limit 8"),
        (job(parallelism=8), NOTHING_USED, True, "fits band batch"),
        # Q4: a band missing from spec.bands has zero quota...
        (deployment(spec=pod_spec("monitoring")), NOTHING_USED, False,
         "band monitoring needs cpu 1, 0 in use, limit 0 (monitoring is not in spec.bands)"),
        # ... except best-effort, which is unlimited, requests or not.
        (deployment(replicas=500, spec=pod_spec("best-effort")), NOTHING_USED, True, "unlimited"),
        (pod(spec=pod_spec(None, containers=[container(cpu=None, memory=None)])), NOTHING_USED, True, "unlimited"),
        # Q5: a limited band needs cpu and memory requests, checked before the arithmetic.
        (deployment(spec=pod_spec(containers=[container(memory=None)])), NOTHING_USED, False,
         'Deployment alice/web: pods in band production (limited by BandQuota alice/quota) must request cpu and '
         'memory; container "app" has no memory request'),
        (pod(spec=pod_spec("batch", containers=[container(cpu=None, memory=None)])), NOTHING_USED, False,
         'container "app" has no cpu or memory request'),
    ],
    ids=["q2-example", "fits-exactly", "in-use-counts", "fits-beside-use", "both-resources", "job-parallelism",
         "job-fits", "q4-missing-band", "q4-best-effort", "q4-best-effort-no-requests", "q5-deployment", "q5-pod"],
)
def test_admit_charge(manifest: dict[str, Any], used: dict[Band, Resources], allowed: bool, message: str) -> None:
    decision = admit_charge("alice", charge(manifest), quota(), used)
    assert decision.allowed is allowed
    assert message in decision.message
    assert "\n" not in decision.message


def test_q2_message_is_exact() -> None:
    decision = admit_charge("alice", charge(deployment(replicas=5)), quota(), NOTHING_USED)
    assert decision.message == "BandQuota alice/quota: band production needs cpu 5, 0 in use, limit 4"


def test_no_band_quota_means_only_best_effort() -> None:
    denied = admit_charge("bob", charge(deployment()), None, NOTHING_USED)
    assert not denied.allowed
    assert denied.message == ("no BandQuota in namespace bob: band production needs cpu 1, 0 in use, limit 0; "
                              "no BandQuota in namespace bob: band production needs memory 1Gi, 0 in use, limit 0")
    assert admit_charge("bob", charge(deployment(spec=pod_spec("best-effort"))), None, NOTHING_USED).allowed


def test_listed_best_effort_is_limited() -> None:
    limited = quota({"best-effort": {"cpu": "1", "memory": "1Gi"}})
    assert not admit_charge("alice", charge(deployment(replicas=2, spec=pod_spec(None))), limited, NOTHING_USED).allowed


@pytest.mark.parametrize(
    ("old_replicas", "new_replicas", "used", "allowed"),
    [
        (4, 5, NOTHING_USED, False),  # scaling 4 -> 5 asks whether 5 fit, not 9
        (3, 4, NOTHING_USED, True),
        (5, 3, {Band.PRODUCTION: res("3", "3Gi")}, True),  # shrinking is always admitted, even above quota
        (4, 4, {Band.PRODUCTION: res("3", "3Gi")}, True),  # a rollout or relabel does not grow
    ],
    ids=["grow-over", "grow-fits", "shrink-over-quota", "same-size-over-quota"],
)
def test_updates_are_judged_on_growth(old_replicas: int, new_replicas: int, used: dict[Band, Resources],
                                      allowed: bool) -> None:
    old = charge(deployment(replicas=old_replicas))
    decision = admit_charge("alice", old.with_replicas(new_replicas), quota(), used, old=old)
    assert decision.allowed is allowed, decision.message


def test_an_update_moving_bands_is_charged_in_the_new_band() -> None:
    old = charge(deployment(replicas=4, spec=pod_spec("batch")))
    new = charge(deployment(replicas=4, spec=pod_spec("monitoring")))
    assert not admit_charge("alice", new, quota(), NOTHING_USED, old=old).allowed


def test_update_without_requests_that_does_not_grow_is_admitted() -> None:
    # Objects from before the namespace was managed can still be relabelled or scaled down.
    bare = charge(deployment(replicas=2, spec=pod_spec(containers=[container(cpu=None, memory=None)])))
    assert admit_charge("alice", bare.with_replicas(1), quota(), NOTHING_USED, old=bare).allowed
    assert not admit_charge("alice", bare.with_replicas(3), quota(), NOTHING_USED, old=bare).allowed


@given(
    per_pod_cpu=st.integers(min_value=1, max_value=4000),
    replicas=st.integers(min_value=0, max_value=64),
    in_use=st.integers(min_value=0, max_value=40_000),
    limit=st.integers(min_value=0, max_value=40_000),
)
def test_admission_is_exactly_the_arithmetic(per_pod_cpu: int, replicas: int, in_use: int, limit: int) -> None:
    """Whole-job admission: allowed iff replicas x request + in use <= limit (memory never binding here)."""
    job_charge = Charge(ObjectRef("Deployment", "alice", "web"), Band.PRODUCTION, Resources(per_pod_cpu, 1), replicas)
    limits = BandQuota("alice", "quota", {Band.PRODUCTION: Resources(limit, 2**40)})
    decision = admit_charge("alice", job_charge, limits, {Band.PRODUCTION: Resources(in_use, 0)})
    growing = replicas > 0
    assert decision.allowed is (not growing or per_pod_cpu * replicas + in_use <= limit)
    assert decision.reasons


@given(st.lists(st.sampled_from(list(Band)), max_size=6), st.integers(min_value=0, max_value=8))
def test_largest_admissible_replica_count_is_admitted_and_one_more_is_not(bands: list[Band], used_cpu: int) -> None:
    """What exp2 task 3 relies on: the largest admitted size is floor(remaining / request)."""
    limits = quota({"production": {"cpu": "8", "memory": "64Gi"}})
    used = {Band.PRODUCTION: res(str(used_cpu), "0")}
    per_pod = charge(deployment(spec=pod_spec(containers=[container(cpu="500m", memory="256Mi")])))
    largest = (8000 - used_cpu * 1000) // 500
    assert admit_charge("alice", per_pod.with_replicas(largest), limits, used).allowed
    assert not admit_charge("alice", per_pod.with_replicas(largest + 1), limits, used).allowed


# --- BandQuota validation ---------------------------------------------------------------------------

def test_parse_bands_collects_every_error_with_its_path() -> None:
    limits, errors = parse_bands({"bands": {"prod": {"cpu": "1", "memory": "1Gi"},
                                            "batch": {"cpu": "lots", "memory": "-1Gi", "gpu": "1"},
                                            "production": {"cpu": "-1"},
                                            "monitoring": "1"},
                                  "extra": True})
    assert limits == {}
    assert errors == [
        "spec.extra: unknown field; expected bands",
        "spec.bands.prod: unknown band; expected one of best-effort, batch, production, monitoring",
        "spec.bands.batch.gpu: unknown resource; expected cpu, memory",
        "spec.bands.batch.cpu: must be a quantity, got 'lots'",
        "spec.bands.batch.memory: must not be negative, got '-1Gi'",
        "spec.bands.production.cpu: must not be negative, got '-1'",
        "spec.bands.production.memory: required",
        "spec.bands.monitoring: must be an object with cpu and memory",
    ]


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (None, "spec: must be an object with a bands field"),
        ({"bands": ["production"]}, "spec.bands: must be an object keyed by band"),
        ({"bands": {"batch": {"cpu": -2, "memory": "1Gi"}}}, "spec.bands.batch.cpu: must not be negative, got -2"),
        ({"bands": {"batch": {"cpu": True, "memory": "1Gi"}}}, "spec.bands.batch.cpu: must be a quantity, got True"),
    ],
    ids=["no-spec", "bands-list", "negative-int", "bool"],
)
def test_parse_bands_rejects(spec: Any, error: str) -> None:
    _, errors = parse_bands(spec)
    assert errors == [error]


def test_parse_bands_accepts_ints_and_quantities() -> None:
    limits, errors = parse_bands({"bands": {"production": {"cpu": 4, "memory": "8Gi"},
                                            "batch": {"cpu": "500m", "memory": "1.5Gi"}}})
    assert errors == []
    assert limits == {Band.PRODUCTION: res("4", "8Gi"), Band.BATCH: res("500m", "1536Mi")}
    assert parse_bands({}) == ({}, [])  # no bands: everything but best-effort is zero (Q4)


def test_default_student_quota_is_q8() -> None:
    limits, errors = parse_bands({"bands": DEFAULT_STUDENT_BANDS})
    assert errors == []
    assert limits == {Band.PRODUCTION: res("2", "2Gi"), Band.BATCH: res("4", "4Gi")}
    parsed = BandQuota("alice", "quota", limits)
    assert parsed.limit(Band.MONITORING) == res()
    assert parsed.limit(Band.BEST_EFFORT) is None
    assert bands_manifest(limits) == DEFAULT_STUDENT_BANDS


def test_used_status_lists_every_band() -> None:
    assert used_status({Band.PRODUCTION: res("2", "4Gi")}) == {
        "monitoring": {"cpu": "0", "memory": "0"},
        "production": {"cpu": "2", "memory": "4Gi"},
        "batch": {"cpu": "0", "memory": "0"},
        "best-effort": {"cpu": "0", "memory": "0"},
    }


# --- Q6 and one BandQuota per namespace -------------------------------------------------------------

CELL = res("96", "384Gi")  # 12 KWOK nodes of 8 CPU / 32Gi


def prod(cpu: str, memory: str = "1Gi", namespace: str = "alice", monitoring: str | None = None) -> BandQuota:
    bands: dict[str, Any] = {"production": {"cpu": cpu, "memory": memory}, "batch": {"cpu": "500", "memory": "1Ti"}}
    if monitoring:
        bands["monitoring"] = {"cpu": monitoring, "memory": "0"}
    return quota(bands, namespace=namespace)


@pytest.mark.parametrize(
    ("new", "others", "allowed", "message"),
    [
        (prod("4"), [prod("90", namespace="bob")], True, "prod quota cpu 94"),
        (prod("6"), [prod("90", namespace="bob")], True, "allocatable cpu 96"),
        (prod("7"), [prod("90", namespace="bob")], False,
         "BandQuota alice/quota: prod quota (monitoring + production) would oversell the cell: cpu 97 granted over "
         "all namespaces (7 here), allocatable 96"),
        # Monitoring counts as prod too.
        (prod("4", monitoring="3"), [prod("90", namespace="bob")], False, "cpu 97 granted"),
        # Non-prod may be oversold: batch of 500 CPU on a 96-CPU cell is fine.
        (prod("1"), [prod("1", namespace=f"s{i}") for i in range(50)], True, "prod quota"),
    ],
    ids=["fits", "fits-exactly", "oversold", "monitoring-is-prod", "batch-oversold"],
)
def test_q6_prod_may_not_be_oversold(new: BandQuota, others: list[BandQuota], allowed: bool, message: str) -> None:
    decision = admit_band_quota(new, others, CELL)
    assert decision.allowed is allowed
    assert message in decision.message


def test_q6_lowering_is_always_admitted() -> None:
    # The cell shrank below what is granted: lowering (or keeping) a quota still succeeds, growing does not.
    others = [prod("95", namespace="bob")]
    assert admit_band_quota(prod("3"), others, CELL, old=prod("4")).allowed
    assert admit_band_quota(prod("4"), others, CELL, old=prod("4")).allowed
    assert not admit_band_quota(prod("5"), others, CELL, old=prod("4")).allowed


def test_at_most_one_band_quota_per_namespace() -> None:
    decision = admit_band_quota(quota(name="second"), [quota(name="quota")], CELL)
    assert not decision.allowed
    assert decision.message == ("BandQuota alice/second: namespace alice already has BandQuota alice/quota; "
                                "at most one BandQuota per namespace")
    assert admit_band_quota(quota(name="quota"), [quota(name="quota", namespace="bob")], CELL).allowed


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=10), st.integers(min_value=0, max_value=50))
def test_q6_is_the_sum(granted: list[int], asked: int) -> None:
    others = [prod(str(cpu), "0", namespace=f"s{i}") for i, cpu in enumerate(granted)]
    decision = admit_band_quota(prod(str(asked), "0"), others, CELL)
    assert decision.allowed is (asked == 0 or sum(granted) + asked <= 96)

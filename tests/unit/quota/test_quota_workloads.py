"""A manifest's declared demand: band x replicas x pod requests, and what is not charged (Q1, Q3, A4)."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.workloads import (
    ObjectRef,
    charge_of,
    exemption,
    missing_requests,
    pod_requests,
    usage_by_band,
)
from tests.unit.quota.quota_builders import (
    alloc,
    container,
    cronjob,
    deployment,
    job,
    owner,
    pod,
    pod_spec,
    res,
)


@pytest.mark.parametrize(
    ("manifest", "band", "replicas", "demand"),
    [
        (deployment(replicas=5), Band.PRODUCTION, 5, res("5", "5Gi")),
        (deployment(replicas=None), Band.PRODUCTION, 1, res("1", "1Gi")),
        (deployment(replicas=0), Band.PRODUCTION, 0, res()),
        (deployment(kind="ReplicaSet", replicas=3), Band.PRODUCTION, 3, res("3", "3Gi")),
        (deployment(kind="StatefulSet", replicas=2, spec=pod_spec("monitoring")), Band.MONITORING, 2,
         res("2", "2Gi")),
        # A Job runs parallelism pods at once (Q1), never more than its completions.
        (job(parallelism=3), Band.BATCH, 3, res("3", "3Gi")),
        (job(parallelism=None), Band.BATCH, 1, res("1", "1Gi")),
        (job(parallelism=4, completions=2), Band.BATCH, 2, res("2", "2Gi")),
        (cronjob(parallelism=2), Band.BATCH, 2, res("2", "2Gi")),
        (pod(), Band.PRODUCTION, 1, res("1", "1Gi")),
        (pod(spec=pod_spec(None)), Band.BEST_EFFORT, 1, res("1", "1Gi")),
        (pod(spec=pod_spec("best-effort")), Band.BEST_EFFORT, 1, res("1", "1Gi")),
        # A4: count x resources, at the alloc's band.
        (alloc(count=2), Band.PRODUCTION, 2, res("1", "512Mi")),
        (alloc(count=None, band="batch"), Band.BATCH, 1, res("500m", "256Mi")),
    ],
    ids=["deploy-5", "deploy-default-1", "deploy-0", "replicaset", "statefulset", "job-parallelism",
         "job-default", "job-completions-cap", "cronjob", "pod", "pod-no-class", "pod-best-effort",
         "alloc", "alloc-default-count"],
)
def test_charge_of_kinds(manifest: dict[str, Any], band: Band, replicas: int, demand: Resources) -> None:
    charge = charge_of(manifest)
    assert charge is not None
    assert (charge.band, charge.replicas, charge.demand) == (band, replicas, demand)
    assert charge.ref == ObjectRef(manifest["kind"], "alice", manifest["metadata"]["name"])


def test_pod_priority_wins_over_class_and_cluster_classes_resolve_templates() -> None:
    # A created pod carries the priority admission resolved; it decides the band.
    assert charge_of(pod(spec=pod_spec("production", priority=500_000))).band is Band.BATCH  # type: ignore[union-attr]
    custom = deployment(spec=pod_spec("team-critical"))
    assert charge_of(custom, {"team-critical": 960_000}).band is Band.MONITORING  # type: ignore[union-attr]
    # An unknown class cannot be resolved: the API server refuses such pods; nothing is charged to a band.
    assert charge_of(custom).band is Band.BEST_EFFORT  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (pod(owners=[owner("ReplicaSet", "web-7f")]), "ReplicaSet web-7f (Q3)"),
        (pod(owners=[owner("StatefulSet", "db")]), "StatefulSet db (Q3)"),
        (pod(owners=[owner("Job", "crunch", "batch/v1")]), "Job crunch (Q3)"),
        (deployment(kind="ReplicaSet", owners=[owner("Deployment", "web")]), "Deployment web (Q3)"),
        (job(owners=[owner("CronJob", "nightly", "batch/v1")]), "CronJob nightly (Q3)"),
        (pod(labels={"cell.distos.dev/alloc": "cache"}), "Alloc cache"),
        (deployment(labels={"app": "x", "cell.distos.dev/alloc": "cache"}), "Alloc cache"),
        (pod(phase="Succeeded"), "finished (Succeeded)"),
        (pod(phase="Failed"), "finished (Failed)"),
        (job(conditions=[{"type": "Complete", "status": "True"}]), "finished (Complete)"),
    ],
    ids=["pod-of-rs", "pod-of-sts", "pod-of-job", "rs-of-deploy", "job-of-cronjob", "alloc-member-pod",
         "alloc-member-deploy", "pod-succeeded", "pod-failed", "job-complete"],
)
def test_exempt_objects_are_not_charged_again(manifest: dict[str, Any], reason: str) -> None:
    assert charge_of(manifest) is None
    assert reason in (exemption(manifest) or "")


@pytest.mark.parametrize(
    "manifest",
    [
        # Only a controller reference to a charged kind passes the charge on.
        pod(owners=[owner("ReplicaSet", "web-7f", controller=False)]),
        pod(owners=[owner("DaemonSet", "agent")]),
        deployment(kind="ReplicaSet", owners=[owner("Widget", "w", "example.com/v1")]),
        job(conditions=[{"type": "Complete", "status": "False"}]),
        pod(phase="Running"),
    ],
    ids=["not-controller", "daemonset-owner", "foreign-owner", "job-not-complete", "pod-running"],
)
def test_objects_without_a_charged_owner_are_charged(manifest: dict[str, Any]) -> None:
    assert exemption(manifest) is None
    assert charge_of(manifest) is not None


def test_uncharged_kinds() -> None:
    assert charge_of({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"}}) is None
    # Same kind name, other group: not ours to charge.
    assert charge_of({**deployment(), "apiVersion": "example.com/v1"}) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (pod_spec(containers=[container(cpu="250m", memory="64Mi"), container("b", cpu="250m", memory="64Mi")]),
         res("500m", "128Mi")),
        # Kubernetes defaults a missing request to the limit: the template is read as its pods will be.
        (pod_spec(containers=[container(cpu=None, memory=None, limits={"cpu": "2", "memory": "1Gi"})]),
         res("2", "1Gi")),
        (pod_spec(containers=[container(cpu="1", memory=None, limits={"cpu": "2", "memory": "1Gi"})]),
         res("1", "1Gi")),
        (pod_spec(containers=[container(cpu="100m", memory="1Gi")],
                  initContainers=[container("init", cpu="2", memory="10Mi")]), res("2", "1Gi")),
        (pod_spec(containers=[container(cpu="1", memory="1Gi")],
                  initContainers=[{**container("side", cpu="500m", memory="1Gi"), "restartPolicy": "Always"}]),
         res("1500m", "2Gi")),
        (pod_spec(containers=[container(cpu="1", memory="1Gi")], overhead={"cpu": "100m", "memory": "1Mi"}),
         res("1100m", "1025Mi")),
        # Pod-level requests (spec.resources) take precedence over the containers'.
        (pod_spec(containers=[container(cpu="1", memory="1Gi")], resources={"requests": {"cpu": "3"}}),
         res("3", "1Gi")),
    ],
    ids=["sum", "limits-default", "partial-limits-default", "init-peak", "sidecar", "overhead", "pod-level"],
)
def test_pod_requests(spec: dict[str, Any], expected: Resources) -> None:
    assert pod_requests(spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (pod_spec(containers=[container()]), ()),
        (pod_spec(containers=[container(cpu=None)]), ('container "app" has no cpu request',)),
        (pod_spec(containers=[container(cpu=None, memory=None)]), ('container "app" has no cpu or memory request',)),
        (pod_spec(containers=[container(cpu="0")]), ('container "app" has no cpu request',)),
        (pod_spec(containers=[container(cpu=None, memory=None, limits={"cpu": "1", "memory": "1Gi"})]), ()),
        # Plain init containers run to completion first and may omit requests; sidecars may not.
        (pod_spec(containers=[container()], initContainers=[container("init", cpu=None, memory=None)]), ()),
        (pod_spec(containers=[container()],
                  initContainers=[{**container("side", memory=None), "restartPolicy": "Always"}]),
         ('container "side" has no memory request',)),
        (pod_spec(containers=[container(cpu=None, memory=None)],
                  resources={"requests": {"cpu": "1", "memory": "1Gi"}}), ()),
    ],
    ids=["complete", "no-cpu", "none", "zero-cpu", "limits-count", "init-free", "sidecar", "pod-level"],
)
def test_missing_requests(spec: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert missing_requests(spec) == expected


def test_alloc_without_resources_is_flagged() -> None:
    charge = charge_of(alloc(resources={"cpu": "1"}))
    assert charge is not None
    assert charge.missing_requests == ("spec.resources has no memory",)


def test_malformed_numbers_raise_a_value_error_naming_the_object() -> None:
    with pytest.raises(ValueError, match="Deployment alice/web"):
        charge_of(deployment(spec=pod_spec(containers=[container(cpu="lots")])))
    with pytest.raises(ValueError, match="not an integer"):
        charge_of(deployment(replicas="5"))  # type: ignore[arg-type]


def test_usage_by_band_sums_charges_and_lists_every_band() -> None:
    charges = [charge_of(m) for m in (deployment(replicas=2), job(parallelism=3), pod(spec=pod_spec("production")),
                                      alloc(count=2), pod(owners=[owner("ReplicaSet", "web-1")]))]
    used = usage_by_band(c for c in charges if c is not None)
    assert used == {Band.MONITORING: res(), Band.PRODUCTION: res("4", "3584Mi"), Band.BATCH: res("3", "3Gi"),
                    Band.BEST_EFFORT: res()}


def test_with_replicas_is_the_scale_subresource() -> None:
    charge = charge_of(deployment(replicas=4))
    assert charge is not None
    assert charge.with_replicas(5).demand == res("5", "5Gi")
    assert charge.with_replicas(-1).replicas == 0

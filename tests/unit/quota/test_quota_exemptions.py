"""Q9: exemptions are earned, not claimed. policy.workloads.resolve over a namespace, table-driven.

Each escape found by trying the cell as a student (issue 13) is a case here: the forged claim is
charged itself; the honest object with the same shape is not.
"""

from __future__ import annotations

from typing import Any

import pytest

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import BandQuota, admit_workload, larger_than_any_node
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.workloads import (
    CHARGED,
    COVERED,
    IDLE,
    MEMBER,
    ObjectRef,
    Workload,
    binding_refusal,
    namespace_charges,
    resolve,
    usage_by_band,
    workload_of,
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

SMALL = pod_spec(containers=[container(cpu="250m", memory="128Mi")])


def workloads(*manifests: dict[str, Any]) -> list[Workload]:
    found = [workload_of(m) for m in manifests]
    assert all(w is not None for w in found)
    return [w for w in found if w is not None]


def states(*manifests: dict[str, Any]) -> dict[str, str]:
    return {ref.name: r.state for ref, r in resolve(workloads(*manifests)).items()}


def placed(manifest: dict[str, Any], *nodes: str) -> dict[str, Any]:
    return {**manifest, "status": {"instances": [{"index": i, "node": n} for i, n in enumerate(nodes)]}}


def test_honest_chains_are_charged_once() -> None:
    result = states(
        deployment("web", replicas=3),
        deployment("web-7f", replicas=3, kind="ReplicaSet", owners=[owner("Deployment", "web")]),
        *(pod(f"web-7f-{i}", owners=[owner("ReplicaSet", "web-7f")], labels={"app": "x"}) for i in range(3)),
        cronjob("nightly"),
        job("nightly-1", owners=[owner("CronJob", "nightly", "batch/v1")]),
    )
    assert result == {"web": CHARGED, "web-7f": COVERED, "web-7f-0": COVERED, "web-7f-1": COVERED,
                      "web-7f-2": COVERED, "nightly": CHARGED, "nightly-1": COVERED}


@pytest.mark.parametrize(
    ("manifests", "target", "reason"),
    [
        # An alloc label naming no Alloc (issue 13: 10 x 1 CPU ran uncharged).
        ([deployment("ghost", replicas=10, labels={"app": "x", "cell.distos.dev/alloc": "ghost"})],
         "ghost", "Alloc ghost does not exist"),
        # Pods that cannot fit one instance are no members.
        ([alloc("cache"), deployment("big", labels={"app": "x", "cell.distos.dev/alloc": "cache"})],
         "big", "do not fit an instance of Alloc cache"),
        # A Job naming the student's suspended CronJob, with a bigger template.
        ([cronjob("nightly", spec=pod_spec("batch", [container(cpu="100m")], restartPolicy="Never")),
          job("j", parallelism=10, owners=[owner("CronJob", "nightly", "batch/v1")])],
         "j", "larger than CronJob alice/nightly's template"),
        # A Pod naming the student's ReplicaSet, with labels its selector does not match.
        ([deployment("rs", kind="ReplicaSet"), pod("p", owners=[owner("ReplicaSet", "rs")], labels={"app": "other"})],
         "p", "do not match the selector of ReplicaSet alice/rs"),
        # An owner that does not exist, or another one of the same name (uid differs).
        ([pod("p", owners=[owner("ReplicaSet", "nope")], labels={"app": "x"})], "p", "does not exist"),
        ([{**deployment("rs", kind="ReplicaSet"), "metadata": {"name": "rs", "namespace": "alice", "uid": "new"}},
          pod("p", owners=[owner("ReplicaSet", "rs")], labels={"app": "x"})], "p", "names uid uid-rs"),
        # A controller of a kind that charges nothing passes nothing on.
        ([pod("p", owners=[owner("DaemonSet", "agent")], labels={"app": "x"})], "p", "not a workload quota charges"),
        # An owner that is not charged itself (finished) covers nothing.
        ([job("done", conditions=[{"type": "Complete", "status": "True"}]),
          pod("p", spec=pod_spec("batch"), owners=[owner("Job", "done", "batch/v1")], labels={"app": "x"})],
         "p", "is not charged itself"),
        # Cover is counted: a ReplicaSet of 1 covers one pod; the newer claimant is charged.
        ([deployment("rs", kind="ReplicaSet"),
          {**pod("a", owners=[owner("ReplicaSet", "rs")], labels={"app": "x"}),
           "metadata": {"name": "a", "namespace": "alice", "uid": "a", "creationTimestamp": "2026-01-01T00:00:00Z",
                        "labels": {"app": "x"}, "ownerReferences": [owner("ReplicaSet", "rs")]}},
          {**pod("b", owners=[owner("ReplicaSet", "rs")], labels={"app": "x"}),
           "metadata": {"name": "b", "namespace": "alice", "uid": "b", "creationTimestamp": "2026-01-01T00:00:01Z",
                        "labels": {"app": "x"}, "ownerReferences": [owner("ReplicaSet", "rs")]}}],
         "b", "ReplicaSet alice/rs covers 1"),
        # A second concurrent Job of one CronJob is charged itself.
        ([cronjob("nightly"), job("n1", owners=[owner("CronJob", "nightly", "batch/v1")]),
          job("n2", owners=[owner("CronJob", "nightly", "batch/v1")])], "n2", "CronJob alice/nightly covers 1"),
        # A bound member outside its Alloc's nodes (relabelled after it started elsewhere).
        ([placed(alloc("cache"), "node-1", "node-2"),
          pod("p", spec={**SMALL, "nodeName": "node-3"}, labels={"cell.distos.dev/alloc": "cache"})],
         "p", "where Alloc cache holds no instance"),
    ],
    ids=["ghost-alloc", "member-too-big", "job-of-cronjob-bigger", "pod-of-rs-mismatch", "owner-missing",
         "owner-uid-differs", "daemonset-owner", "owner-finished", "rs-cover-used", "cronjob-second-job",
         "member-off-node"],
)
def test_forged_claims_are_charged_itself(manifests: list[dict[str, Any]], target: str, reason: str) -> None:
    resolution = {ref.name: r for ref, r in resolve(workloads(*manifests)).items()}[target]
    assert resolution.state == CHARGED
    assert reason in resolution.reason


def test_members_of_an_existing_alloc_that_fit_are_not_charged() -> None:
    result = states(placed(alloc("cache"), "node-1", "node-2"),
                    deployment("members", replicas=10, labels={"app": "x", "cell.distos.dev/alloc": "cache"},
                               spec=SMALL),
                    pod("bound", spec={**SMALL, "nodeName": "node-1"}, labels={"cell.distos.dev/alloc": "cache"}))
    assert result == {"cache": CHARGED, "members": MEMBER, "bound": MEMBER}


def test_released_object_is_charged_itself() -> None:
    """The ReplicaSet controller releases a pod whose labels stop matching: it is then charged itself."""
    rs = deployment("rs", kind="ReplicaSet")
    covered = pod("p", owners=[owner("ReplicaSet", "rs")], labels={"app": "x"})
    released = pod("p", labels={"app": "moved"})
    assert states(rs, covered)["p"] == COVERED
    assert states(rs, released)["p"] == CHARGED
    assert usage_by_band(namespace_charges(workloads(rs, released))) == usage_by_band(
        namespace_charges(workloads(rs, pod("q"))))


def test_finished_and_terminating_objects() -> None:
    assert states(pod("p", phase="Succeeded"))["p"] == IDLE
    assert states(job("j", conditions=[{"type": "Complete", "status": "True"}]))["j"] == IDLE
    # A terminating pod of a ReplicaSet takes none of the cover its replacement needs.
    rs = deployment("rs", kind="ReplicaSet")
    going = pod("old", owners=[owner("ReplicaSet", "rs")], labels={"app": "x"})
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert states(rs, going, pod("new", owners=[owner("ReplicaSet", "rs")], labels={"app": "x"})) == {
        "rs": CHARGED, "old": COVERED, "new": COVERED}


def test_forged_cycles_terminate() -> None:
    a = deployment("a", kind="ReplicaSet", owners=[owner("Deployment", "b")])
    b = deployment("b", owners=[owner("ReplicaSet", "a")])  # a Deployment's owner references are ignored
    assert states(a, b) == {"a": COVERED, "b": CHARGED}


def test_admission_refuses_the_forged_and_says_why() -> None:
    quota = BandQuota("alice", "quota", {Band.PRODUCTION: res("4", "8Gi"), Band.BATCH: res("4", "4Gi")})
    ghost = workload_of({**deployment("ghost", replicas=10, labels={"app": "x", "cell.distos.dev/alloc": "ghost"})})
    assert ghost is not None
    decision = admit_workload("alice", ghost, {}, quota)
    assert not decision.allowed
    assert decision.reasons[0] == "BandQuota alice/quota: band production needs cpu 10, 0 in use, limit 4"
    assert "Alloc ghost does not exist in namespace alice" in decision.message
    # Relabelling a covered pod out of its ReplicaSet is an update that grows the namespace's use.
    rs = workload_of(deployment("rs", kind="ReplicaSet", replicas=4))
    old = workload_of(pod("p", owners=[owner("ReplicaSet", "rs")], labels={"app": "x"}))
    new = workload_of(pod("p", owners=[owner("ReplicaSet", "rs")], labels={"app": "away"}))
    assert rs is not None and old is not None and new is not None
    view = {rs.ref: rs, old.ref: old}
    assert not admit_workload("alice", new, view, quota, old).allowed
    assert admit_workload("alice", old, view, quota, old).allowed


def test_larger_than_any_node() -> None:
    huge = workload_of(pod("p", spec=pod_spec(containers=[container(cpu="9000", memory="1Gi")])))
    assert huge is not None
    largest = Resources(8000, 32 * 2**30)
    message = larger_than_any_node(huge, largest)
    assert message is not None and "Pod alice/p: each pod requests cpu 9000, more than any node holds" in message
    assert larger_than_any_node(huge, None) is None  # nodes not known yet
    assert larger_than_any_node(huge, largest, old=huge) is None  # not growing


def test_binding_refusal() -> None:
    message = binding_refusal(pod("p", spec={**SMALL, "nodeName": "node-2"}))
    assert message is not None and "spec.nodeName (node-2) may not be set in a managed namespace" in message
    assert binding_refusal(pod("p")) is None
    assert binding_refusal(deployment()) is None
    assert ObjectRef("Pod", "alice", "p") == workloads(pod("p"))[0].ref

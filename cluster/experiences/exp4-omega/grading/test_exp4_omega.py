"""Grading checks of exp4-omega; README.md says what each one looks for.

What Cell's Omega schedulers did is read from the Events they recorded on the student's pods
(reasons and reporters from scheduler_ext.omega.records, the code that writes them). Every check
only reads the namespace.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from cell.grading import ClusterView, owned_by_deployment, plural, pod_spec, requests_of
from scheduler_ext.omega import records
from scheduler_ext.policy.resources import Resources

STEADY = pytest.mark.task(1, "Deployment steady, placed by Omega", points=2)
RACE = pytest.mark.task(2, "The race: pods race-a and race-b", points=2)
CONFLICT = pytest.mark.task(3, "The conflict, from what Cell recorded", points=2)
KUBE = pytest.mark.task(4, "What the ledger cannot see", points=2)
RETRY = pytest.mark.task(5, "Why the loser kept its node", points=2)

REQUESTS = Resources.parse({"cpu": "100m", "memory": "64Mi"})
RACERS = {"race-a": "omega-a", "race-b": "omega-b"}
HOSTNAME = "kubernetes.io/hostname"
ANSWERS = {"kube-scheduler-conflict": ("checked-on-node", ("refused-by-ledger", "checked-on-node", "never-same-node")),
           "why-same-node": ("fine-grained", ("fine-grained", "coarse-grained", "preempted", "nodeselector-only"))}
_ATTEMPT = re.compile(r"\battempt (\d+)\b")


def events_about(cluster: ClusterView, pod: dict[str, Any], reason: str) -> list[dict[str, Any]]:
    """The Events of this pod (this uid: a pod created again starts afresh) with this reason."""
    uid = pod["metadata"].get("uid")
    return [e for e in cluster.list("Event") if e.get("reason") == reason
            and (e.get("involvedObject") or {}).get("uid") == uid]


def answer(cluster: ClusterView, key: str) -> str:
    data = cluster.require("ConfigMap", "answers").get("data") or {}
    value = str(data.get(key, "")).strip()
    assert value, f"ConfigMap answers has no key {key}"
    return value


@STEADY
def test_steady_deployment(cluster: ClusterView) -> None:
    steady = cluster.require("Deployment", "steady")
    spec = pod_spec(steady)
    problems = []
    replicas = (steady.get("spec") or {}).get("replicas", 1)
    if replicas != 2:
        problems.append(f"it asks for {plural(replicas, 'replica')}, expected 2")
    if spec.get("schedulerName") != "omega-a":
        problems.append(f"its pods' schedulerName is {spec.get('schedulerName') or 'not set (default-scheduler)'}, "
                        "expected omega-a")
    if spec.get("priorityClassName") != "batch":
        problems.append(f"its priorityClassName is {spec.get('priorityClassName') or 'not set'}, expected batch")
    containers = spec.get("containers") or []
    found = requests_of(containers[0]) if containers else None
    if found != REQUESTS:
        problems.append(f"its first container requests {found}, expected {REQUESTS}")
    assert not problems, "Deployment steady: " + "; ".join(problems)


@STEADY
def test_steady_placed_by_omega(cluster: ClusterView) -> None:
    steady = cluster.require("Deployment", "steady")
    available = int((steady.get("status") or {}).get("availableReplicas") or 0)
    assert available >= 2, f"Deployment steady has {plural(available, 'replica')} available, expected 2"
    problems = []
    for pod in (p for p in cluster.pods() if owned_by_deployment(p, "steady")):
        name = pod["metadata"]["name"]
        by = {records.reporter(e) for e in events_about(cluster, pod, records.SCHEDULED)}
        if not (pod.get("spec") or {}).get("nodeName"):
            problems.append(f"pod {name} is not bound to a node")
        elif "omega-a" not in by:
            placer = ", ".join(sorted(by)) or "a scheduler that left no Scheduled Event"
            problems.append(f"pod {name} was placed by {placer}, not omega-a")
    assert not problems, "Deployment steady: " + "; ".join(problems)


@RACE
def test_race_pods(cluster: ClusterView) -> None:
    problems = []
    selected = {}
    for name, scheduler in RACERS.items():
        pod = cluster.get("Pod", name)
        if pod is None:
            problems.append(f"pod {name} not found")
            continue
        spec = pod.get("spec") or {}
        if spec.get("schedulerName") != scheduler:
            problems.append(f"{name}'s schedulerName is {spec.get('schedulerName') or 'not set'}, expected {scheduler}")
        if spec.get("priorityClassName") != "batch":
            problems.append(f"{name}'s priorityClassName is {spec.get('priorityClassName') or 'not set'}, "
                            "expected batch")
        selected[name] = (spec.get("nodeSelector") or {}).get(HOSTNAME)
        if not selected[name]:
            problems.append(f"{name} has no nodeSelector on {HOSTNAME}")
        elif spec.get("nodeName") != selected[name] or (pod.get("status") or {}).get("phase") != "Running":
            problems.append(f"{name} is {(pod.get('status') or {}).get('phase') or 'Pending'} on "
                            f"{spec.get('nodeName') or 'no node'}, expected Running on {selected[name]}")
    if len(selected) == 2 and all(selected.values()) and len(set(selected.values())) != 1:
        problems.append(f"race-a selects {selected['race-a']} and race-b {selected['race-b']}: they do not race "
                        "for the same node")
    assert not problems, "; ".join(problems)


@CONFLICT
def test_conflict_explained(cluster: ClusterView) -> None:
    racers = {name: pod for name in RACERS if (pod := cluster.get("Pod", name)) is not None}
    assert racers, "pods race-a and race-b not found: there was no race (task 2)"
    refused = {name for name, pod in racers.items() if events_about(cluster, pod, records.CONFLICT)}
    assert refused, ("Cell recorded no OmegaConflict on race-a or race-b: they did not race (apply both in one file, "
                     "while both schedulers are idle)")
    loser = answer(cluster, "loser")
    assert loser in RACERS, f"answers says the loser is {loser!r}: the name of a pod is race-a or race-b"
    assert loser in refused, (f"answers says the loser is {loser}, but Cell recorded the refused commit on "
                              f"{' and '.join(sorted(refused))}")
    placed = events_about(cluster, racers[loser], records.SCHEDULED)
    attempts = {m.group(1) for e in placed if (m := _ATTEMPT.search(e.get("message") or ""))}
    assert attempts, f"{loser} has no Scheduled Event yet: it is not placed"
    given = answer(cluster, "loser-attempts")
    assert given in attempts, (f"answers says loser-attempts is {given!r}, but {loser}'s Scheduled Event says "
                               f"attempt {' or '.join(sorted(attempts))}")


def check_word(cluster: ClusterView, key: str) -> None:
    right, offered = ANSWERS[key]
    given = answer(cluster, key).lower()
    assert given in offered, f"answers: {key} is {given!r}; expected one of {', '.join(offered)}"
    assert given == right, f"answers: {key} is {given!r}, which is not what happens (see the handout's lesson)"


@KUBE
def test_kube_scheduler_answer(cluster: ClusterView) -> None:
    check_word(cluster, "kube-scheduler-conflict")


@RETRY
def test_retry_answer(cluster: ClusterView) -> None:
    check_word(cluster, "why-same-node")

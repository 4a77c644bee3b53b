"""What the live Omega scheduler records on a pod, as Events in the pod's namespace: students read
them with `kubectl describe pod` (their RBAC reads Events, not the ledgers in cell-system), and
exp4-omega's grader reads the same ones. Reasons and message shapes are written once, here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

SCHEDULED = "Scheduled"  # kube-scheduler's own reason for a placement
FAILED = "FailedScheduling"
CONFLICT = "OmegaConflict"  # a commit refused: the ledger moved (409), or the node filled behind it
OVERCOMMITTED = "OmegaOvercommitted"  # seen after the fact: the node's bound pods exceed it


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def ledger_conflict(scheduler: str, node: str, ledger: str, read: str, now: str, last: str, then: str) -> str:
    seen = f"resourceVersion {read or 'none (no ledger yet)'} -> {now or 'gone'}"
    return (f"{scheduler}: commit to node {node} refused (409 Conflict): ledger {ledger} changed since this "
            f"scheduler's snapshot ({seen}; {last or 'another commit'}). {then}")


def still_fits(node: str, attempt: int) -> str:
    return (f"Fine-grained: re-checked against node {node} as it is now, the pod still fits: "
            f"retrying the commit there (attempt {attempt}).")


def replanning(why: str) -> str:
    return f"{why}: planning again from a fresh snapshot."


def unledgered_conflict(scheduler: str, node: str, others: list[str], why: str) -> str:
    return (f"{scheduler}: node {node} filled behind the ledger: pods it does not record "
            f"({', '.join(others) or 'none seen'}; placed by a scheduler that does not write it) leave too little "
            f"room ({why}). Claim taken back; planning again from a fresh snapshot.")


def scheduled(namespace: str, name: str, node: str, scheduler: str, attempt: int, conflicts: int) -> str:
    return (f"Successfully assigned {namespace}/{name} to {node} ({scheduler}, attempt {attempt}, "
            f"{_plural(conflicts, 'conflict')})")


def overcommitted(scheduler: str, node: str, requested: str, allocatable: str) -> str:
    return (f"{scheduler}: node {node} is overcommitted: its bound pods request {requested}, it has {allocatable}. "
            "A scheduler that does not write the ledger bound a pod there after this one's last check.")


def event(pod: dict[str, Any], reason: str, message: str, scheduler: str, warning: bool = False) -> dict[str, Any]:
    """A core/v1 Event about `pod` (its metadata as the API returned it), reported by `scheduler`."""
    meta = pod.get("metadata") or {}
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'pod')}.{uuid.uuid4().hex[:12]}", "namespace": meta.get("namespace")},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name"),
                           "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "reason": reason, "message": message[:1000], "type": "Warning" if warning else "Normal",
        "source": {"component": scheduler}, "reportingComponent": scheduler,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


def reporter(event_obj: dict[str, Any]) -> str:
    """The component that reported an Event (the scheduler's name for Omega's and kube-scheduler's)."""
    return str((event_obj.get("source") or {}).get("component") or event_obj.get("reportingComponent") or "")

"""The one change a grading check may make: delete a ready pod of a Deployment and wait for its
replacement (self-healing), for every student at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kubernetes.client import ApiClient

from cell.experiences import Student
from cell.grading.view import (
    ClusterView,
    GradingError,
    is_ready,
    owned_by_deployment,
    path_of,
    ready_endpoints,
    request,
)
from cell.wait import wait_until

SELF_HEALING_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class SelfHealing:
    passed: bool
    reason: str = ""
    deleted: str | None = None
    replacement: str | None = None
    seconds: float = 0.0


def check_self_healing(api: ApiClient, namespace: str, deployment: str, selector: str,
                       timeout: float = SELF_HEALING_TIMEOUT, poll: float = 0.5) -> SelfHealing:
    """Delete one ready pod of the Deployment; passed if a new pod of it is ready within timeout.

    Before returning it also waits (within the same timeout) until the Deployment has as many
    available replicas, and its Services as many ready endpoints, as before, so the namespace is
    left as it was found and a second grading run reads the same state.
    """
    view = ClusterView(api, namespace)
    started = time.monotonic()
    owner = view.get("Deployment", deployment)
    if owner is None:
        return SelfHealing(False, f"Deployment {deployment} not found, so self-healing could not be checked")
    pods = [p for p in view.pods(selector) if owned_by_deployment(p, deployment)]
    ready = [p for p in pods if is_ready(p)]
    if not ready:
        return SelfHealing(False, f"Deployment {deployment} has no ready pod labelled {selector} to delete, "
                                  "so self-healing could not be checked")
    available_before = int((owner.get("status") or {}).get("availableReplicas") or 0)
    victim_ip = (ready[0].get("status") or {}).get("podIP")
    endpoints_before = {service: len(ips) for service, ips in ready_endpoints(view.list("EndpointSlice")).items()
                        if victim_ip in ips}
    known = {p["metadata"]["uid"] for p in pods}
    victim = ready[0]["metadata"]
    status, data = request(api, "DELETE", path_of("Pod", namespace, victim["name"]),
                            body={"preconditions": {"uid": victim["uid"]}})
    if status not in (200, 202, 404, 409):
        message = data.get("message", "") if isinstance(data, dict) else ""
        raise GradingError(f"could not delete pod {victim['name']}: {status} {message}".strip())
    deadline = started + timeout

    def replacement() -> str | None:
        fresh = [p for p in view.pods(selector) if p["metadata"]["uid"] not in known
                 and owned_by_deployment(p, deployment) and is_ready(p)]
        return str(fresh[0]["metadata"]["name"]) if fresh else None

    def as_before() -> bool:
        current = view.get("Deployment", deployment) or {}
        if int((current.get("status") or {}).get("availableReplicas") or 0) < available_before:
            return False
        endpoints = ready_endpoints(view.list("EndpointSlice"))
        return all(len(endpoints.get(service, ())) >= count for service, count in endpoints_before.items())

    new_pod = wait_until(replacement, deadline - time.monotonic(), interval=poll)
    if new_pod is None:
        return SelfHealing(False, f"deleted pod {victim['name']} of Deployment {deployment}: no replacement "
                                  f"became ready within {timeout:.0f} s", victim["name"], None,
                           round(time.monotonic() - started, 1))
    seconds = round(time.monotonic() - started, 1)
    wait_until(as_before, deadline - time.monotonic(), interval=poll)  # best effort, within the same timeout
    return SelfHealing(True, "", victim["name"], new_pod, seconds)


class SelfHealingPool:
    """Runs a self-healing check for every student at once, the first time any student's is asked.

    Deleting a pod and waiting for its replacement takes seconds; done one student after another
    it would dominate the grading time of a class.
    """

    def __init__(self, api: ApiClient, students: Sequence[Student]) -> None:
        self._api = api
        self._students = list(students)
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str, float], dict[str, Future[SelfHealing]]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def check(self, student: Student, deployment: str, selector: str, timeout: float) -> SelfHealing:
        key = (deployment, selector, timeout)
        with self._lock:
            if key not in self._runs:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(self._students))),
                                                    thread_name_prefix="self-healing")
                self._runs[key] = {s.name: self._pool.submit(check_self_healing, self._api, s.namespace,
                                                             deployment, selector, timeout)
                                   for s in self._students}
            future = self._runs[key][student.name]
        return future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


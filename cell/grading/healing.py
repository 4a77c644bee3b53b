"""The one change a grading check may make: delete a ready pod of a Deployment and wait for its
replacement (self-healing), for every student at once.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kubernetes.client import ApiClient

from cell.experiences import Student
from cell.grading.view import REQUEST_TIMEOUT, ClusterView, GradingError, is_ready, owned_by_deployment, ready_endpoints
from cell.wait import wait_until
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APIConflictError, APIError, APINotFoundError
from scheduler_ext.kube.names import PODS

SELF_HEALING_TIMEOUT = 60.0
# At most this many students' checks at once. Waiting for a replacement is the cluster's work, not
# ours (in waves of 32 it took 32 s of a 300-student grading), but every check's 60 s starts with it:
# a class of 300 in one wave at load 27 once failed most students' self-healing (not confirmed why).
MAX_CONCURRENT_CHECKS = 100


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
    try:  # gone already (404) or replaced under the same name (409): the wait below decides
        with contextlib.suppress(APINotFoundError, APIConflictError):
            RawClient(api).json("DELETE", PODS.object_path(namespace, victim["name"]),
                                body={"preconditions": {"uid": victim["uid"]}}, timeout=REQUEST_TIMEOUT)
    except APIError as exc:
        raise GradingError(f"could not delete pod {victim['name']}: {exc.status} {exc.message}".strip()) from None
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
        self._students = list(students)
        self._workers = max(1, min(MAX_CONCURRENT_CHECKS, len(self._students)))
        # Polled every half second by a class of 300, the API server would answer ~1,500 reads a
        # second on a small machine; a big class polls less often (the timeout stays the same).
        self._poll = 0.5 if self._workers <= 50 else 1.5
        self._api = self._own_client(api, self._workers)
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str, float], dict[str, Future[SelfHealing]]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def check(self, student: Student, deployment: str, selector: str, timeout: float) -> SelfHealing:
        key = (deployment, selector, timeout)
        with self._lock:
            if key not in self._runs:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="self-healing")
                self._runs[key] = {s.name: self._pool.submit(check_self_healing, self._api, s.namespace,
                                                             deployment, selector, timeout, self._poll)
                                   for s in self._students}
            future = self._runs[key][student.name]
        return future.result()

    @staticmethod
    def _own_client(api: ApiClient, workers: int) -> ApiClient:
        """A client whose connection pool holds a connection per worker: with the default pool (5 per
        CPU) the other threads' requests each open a connection, TLS handshake included, and drop it."""
        configuration = getattr(api, "configuration", None)
        if configuration is None or configuration.connection_pool_maxsize >= workers:
            return api
        configuration = copy.copy(configuration)
        configuration.connection_pool_maxsize = workers
        return ApiClient(configuration)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


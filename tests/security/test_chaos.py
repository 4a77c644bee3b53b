"""Chaos: each extension and etcd killed (SIGKILL) during a burst of a student's jobs (issue 13).

Afterwards the invariants hold: no band over its quota, status.used exact once the operator caught
up (recomputed here from the objects themselves with the policy core), every pod of an admitted job
bound (the cell has room for all of them), and no object the API acknowledged lost.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cell.kube import api_client
from cell.localcell.supervisor import LocalCell
from cell.students import kubeconfig_of
from scheduler_ext.kube.dynamic import Objects
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import DEFAULT_STUDENT_BANDS, used_status
from scheduler_ext.policy.resources import Resources
from scheduler_ext.policy.workloads import namespace_charges, usage_by_band, workload_of
from tests.integration.helpers import deployment, restricted, wait_for
from tests.integration.test_quota import Student

pytestmark = pytest.mark.cluster

VICTIMS = ("webhook", "operator", "extender", "etcd")
MAX_CREATES = 400  # the burst runs until every victim was killed and restarted (bounded all the same)


def _job(name: str, cpu: str) -> dict[str, Any]:
    spec = restricted({"priorityClassName": "batch", "restartPolicy": "Never",
                       "containers": [{"name": "main", "image": "cell.local/shell:1.0",
                                       "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]})
    # Suspended: KWOK would otherwise complete it, and a finished Job frees its quota mid-count.
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"parallelism": 1, "completions": 1, "suspend": True, "template": {"spec": spec}}}


def _kill(local_cell: LocalCell, name: str) -> None:
    pid = local_cell.pid(name)
    assert pid is not None, f"{name} is not running"
    os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_killing_each_extension_and_etcd_mid_burst_keeps_the_invariants(local_cell: LocalCell,
                                                                      student: Student) -> None:
    api = api_client(kubeconfig_of(local_cell.paths, student.name))
    apps, batch = client.AppsV1Api(api), client.BatchV1Api(api)
    created: list[tuple[str, str]] = []
    outcomes = {"admitted": 0, "refused": 0, "failed": 0}
    stop = threading.Event()

    def burst() -> None:
        for i in range(MAX_CREATES):
            if stop.is_set():
                return
            try:
                if i % 2:
                    apps.create_namespaced_deployment(student.name, deployment(f"d{i}", 1, cpu="250m", memory="64Mi",
                                                                               priority_class="production"))
                    created.append(("Deployment", f"d{i}"))
                else:
                    batch.create_namespaced_job(student.name, _job(f"j{i}", "500m"))
                    created.append(("Job", f"j{i}"))
                outcomes["admitted"] += 1
            except ApiException as exc:
                outcomes["refused" if exc.status == 403 else "failed"] += 1
            except Exception:  # the API server itself unreachable while etcd restarts
                outcomes["failed"] += 1
            time.sleep(0.05)

    thread = threading.Thread(target=burst)
    thread.start()
    try:
        for name in VICTIMS:
            time.sleep(1.0)
            _kill(local_cell, name)
            time.sleep(1.0)
            local_cell.start(name)
    finally:
        stop.set()
        thread.join(300)
    assert outcomes["admitted"] > 0 and outcomes["refused"] > 0, outcomes

    # No object the API acknowledged is lost.
    admin = local_cell.api()
    listed = {("Deployment", d.metadata.name) for d in client.AppsV1Api(admin).list_namespaced_deployment(
        student.name).items} | {("Job", j.metadata.name) for j in client.BatchV1Api(admin).list_namespaced_job(
            student.name).items}
    assert set(created) <= listed, f"lost: {set(created) - listed}"

    # No band over its quota: the objects as the policy charges them.
    def objects() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for api_version, kind in (("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("batch/v1", "Job"),
                                  ("v1", "Pod")):
            found.extend(Objects(admin).list(api_version, kind, student.name))
        return found

    def used() -> dict[Band, Resources]:
        workloads = [w for w in (workload_of(o) for o in objects()) if w is not None]
        return usage_by_band(namespace_charges(workloads))

    limits = {Band.from_label(b): Resources.parse(v) for b, v in DEFAULT_STUDENT_BANDS.items()}
    truth = used()
    for band, limit in limits.items():
        assert truth[band].fits_in(limit), f"band {band.label} over quota: {truth[band]} > {limit}"

    # status.used exact once the operator caught up.
    wait_for(lambda: student.used() == {b: v for b, v in used_status(used()).items() if b in ("production", "batch")},
             120, what="status.used equal to what the objects charge")

    # Every pod of an admitted Deployment bound (the cell has room for all of them).
    def all_bound() -> bool:
        pods = client.CoreV1Api(admin).list_namespaced_pod(student.name).items
        deployments = [n for k, n in created if k == "Deployment"]
        return len(pods) >= len(deployments) and all(p.spec.node_name for p in pods)

    wait_for(all_bound, 180, what="every pod of the admitted Deployments bound")
    print(f"\nchaos outcomes: {outcomes}")

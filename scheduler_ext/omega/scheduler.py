"""A live Omega scheduler (Schwarzkopf et al., EuroSys 2013) for the pods of one `schedulerName`.

Each scheduler keeps its private copy of the cell from watches (nodes, bound pods, Allocs, the
ledgers), places one pod at a time (per namespace) on a fresh copy with the policy core's
`Scheduler` (Borg's feasibility and scoring, as the extender), waits its decision time (Omega's
t_job: the copy ages while others commit), then commits as a transaction:

1. PUT the node's ledger with the claim added, under the resourceVersion of the copy. A 409 means
   another scheduler committed to that node since: a conflict. Fine-grained (default): re-read the
   ledger, re-check the pod against the node as it is now, and retry there if it still fits, else
   plan again. Coarse-grained: plan again, even if it still fits (the sim's `--variants coarse`).
2. Read the node's bound pods again (kube-scheduler writes no ledger): if the pod no longer fits,
   take the claim back and plan again (a conflict the ledger could not see).
3. Bind (pods/binding, with the pod's uid as precondition) and record an Event.

Nodes found overcommitted afterwards (a binding by kube-scheduler after step 2) are reported, not
repaired. Everything is counted in Prometheus metrics and said in Events on the pod (records.py).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from scheduler_ext.kube import names
from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APIConflictError, APIError
from scheduler_ext.kube.reflector import ListWatch, ManifestSink, Reflector, Transport
from scheduler_ext.omega import records
from scheduler_ext.omega.ledger import LEDGER_LABEL, Claim, Ledger, ledger_name, node_now, tolerates
from scheduler_ext.policy.feasibility import Verdict, check_node
from scheduler_ext.policy.model import AllocInfo, CellSnapshot, NodeInfo, PodInfo
from scheduler_ext.policy.scheduler import Scheduler

log = logging.getLogger(__name__)

CONFIGMAPS = names.Resource("", "v1", "configmaps", "ConfigMap")
EVENTS = names.Resource("", "v1", "events", "Event")
ACTIVE_BOUND = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
FINE, COARSE = "fine", "coarse"
MAX_TRIES = 10  # commits of one attempt before the pod goes back to the queue
NO_FIT_BACKOFF = 5.0  # seconds before a pod that fits nowhere is tried again
# One attempt at a time per namespace (a student's pods in order), namespaces side by side: a class
# sharing two schedulers does not queue behind each other's decision times. Attempts in different
# namespaces conflict on a ledger like any two schedulers do.
MAX_WORKERS = 16


@dataclass(frozen=True)
class OmegaOptions:
    scheduler_name: str
    ledger_namespace: str = "cell-system"
    decision_time: float = 0.0  # seconds between the copy and the commit (Omega's t_job)
    conflicts: str = FINE
    enough_feasible: int | None = None
    namespace: str = ""  # only pods of this namespace ("" = every namespace)


class Metrics:
    def __init__(self, registry: CollectorRegistry, scheduler: str) -> None:
        self.registry, self.scheduler = registry, scheduler
        self.transactions = Counter("cell_omega_transactions", "Commits attempted, by outcome.",
                                    ["scheduler", "outcome"], registry=registry)
        self.conflicts = Counter("cell_omega_conflicts", "Commits refused, by node and kind (ledger: 409 on the "
                                 "node's ledger; unledgered: the node's bound pods left no room).",
                                 ["scheduler", "node", "kind"], registry=registry)
        self.retries = Counter("cell_omega_retries", "Conflicts retried on the same node or planned again.",
                               ["scheduler", "how"], registry=registry)
        self.pending = Gauge("cell_omega_pending_pods", "Pods waiting for this scheduler.", ["scheduler"],
                             registry=registry)
        self.overcommitted = Gauge("cell_omega_overcommitted_nodes", "Nodes whose bound pods exceed them.",
                                   ["scheduler"], registry=registry)

    def transaction(self, outcome: str) -> None:
        self.transactions.labels(self.scheduler, outcome).inc()

    def conflict(self, node: str, kind: str) -> None:
        self.conflicts.labels(self.scheduler, node, kind).inc()

    def retry(self, how: str) -> None:
        self.retries.labels(self.scheduler, how).inc()


class View:
    """The scheduler's private copy of the cell, fed by reflectors (thread-safe)."""

    def __init__(self, scheduler_name: str) -> None:
        self.scheduler_name = scheduler_name
        self._lock = threading.Lock()
        self.nodes: dict[str, dict[str, Any]] = {}
        self._bases: dict[str, NodeInfo] = {}
        self._bound: dict[str, PodInfo] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        self.ledgers: dict[str, Ledger] = {}
        self._allocs: dict[str, AllocInfo] = {}
        self.changed = threading.Event()

    # --- reflector callbacks ------------------------------------------------------------------------
    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            if kind == "nodes":
                self.nodes, self._bases = {}, {}
            elif kind == "bound":
                self._bound = {}
            elif kind == "pending":
                self.pending = {}
            elif kind == "ledgers":
                self.ledgers = {}
            elif kind == "allocs":
                self._allocs = {}
        for item in items:
            self.apply(kind, "ADDED", item)

    def apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        gone = event_type == "DELETED"
        with self._lock:
            if kind == "nodes":
                name = meta.get("name", "")
                self.nodes.pop(name, None)
                self._bases.pop(name, None)
                if not gone:
                    self.nodes[name] = obj
                    self._bases[name] = NodeInfo.from_manifest(obj)
            elif kind == "bound":
                self._bound.pop(meta.get("uid", ""), None)
                if not gone and PodInfo.is_active(obj) and (obj.get("spec") or {}).get("nodeName"):
                    self._bound[meta.get("uid", "")] = PodInfo.from_manifest(obj)
            elif kind == "pending":
                self.pending.pop(meta.get("uid", ""), None)
                if not gone and not (obj.get("spec") or {}).get("nodeName") and not meta.get("deletionTimestamp"):
                    self.pending[meta.get("uid", "")] = obj
            elif kind == "ledgers":
                ledger = Ledger.from_manifest(obj)
                if ledger.node:
                    self.ledgers.pop(ledger.node, None)
                    if not gone:
                        self.ledgers[ledger.node] = ledger
            elif kind == "allocs":
                key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
                self._allocs.pop(key, None)
                if not gone:
                    try:
                        self._allocs[key] = AllocInfo.from_manifest(obj)
                    except (ValueError, TypeError, KeyError) as exc:
                        log.warning("Alloc %s ignored: %s", key, exc)
        self.changed.set()

    def put_ledger(self, ledger: Ledger) -> None:
        """A ledger read or written by this scheduler itself: newer than the watch may have shown yet."""
        with self._lock:
            self.ledgers[ledger.node] = ledger
        self.changed.set()

    # --- reads ----------------------------------------------------------------------------------------
    def bound_on(self, node: str) -> list[PodInfo]:
        with self._lock:
            return [pod for pod in self._bound.values() if pod.node_name == node]

    def base(self, node: str) -> NodeInfo | None:
        with self._lock:
            return self._bases.get(node)

    def ledger(self, node: str) -> Ledger:
        with self._lock:
            return self.ledgers.get(node) or Ledger(node)

    def allocs(self) -> list[AllocInfo]:
        with self._lock:
            return list(self._allocs.values())

    def snapshot(self, now: float) -> tuple[CellSnapshot, dict[str, Ledger], dict[str, dict[str, Any]]]:
        """The copy a decision is made on: every node with its bound pods and its ledger's live claims,
        the ledgers as read (their resourceVersions are the commit's preconditions), the nodes' objects."""
        with self._lock:
            by_node: dict[str, list[PodInfo]] = {}
            for pod in self._bound.values():
                by_node.setdefault(pod.node_name or "", []).append(pod)
            ledgers = {name: self.ledgers.get(name) or Ledger(name) for name in self._bases}
            nodes = []
            for name, base in self._bases.items():
                bound = by_node.get(name, [])
                claims = ledgers[name].live_claims((p.uid for p in bound), now)
                nodes.append(node_now(base, bound, claims))
            return CellSnapshot(nodes, list(self._allocs.values())), ledgers, dict(self.nodes)


class OmegaScheduler:
    """One Omega scheduler: its reflectors, its queue, its commits (run() blocks until stop is set)."""

    def __init__(self, raw: RawClient, options: OmegaOptions, stop: threading.Event,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time) -> None:
        self.raw, self.options, self.stop, self.clock = raw, options, stop, clock
        self.name = options.scheduler_name
        self.view = View(self.name)
        self.metrics = Metrics(registry or CollectorRegistry(), self.name)
        self.policy = Scheduler(enough_feasible=options.enough_feasible, rng=random.Random())
        self._not_before: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._conflicts: dict[str, int] = {}
        self._placed: dict[str, float] = {}  # uid -> when bound (the pending watch may still show it)
        self._said: dict[str, str] = {}  # uid -> the last FailedScheduling message (said once)
        self._overcommitted: set[tuple[str, frozenset[str]]] = set()

    # --- wiring ------------------------------------------------------------------------------------------
    def reflectors(self, transport: Transport) -> list[Reflector]:
        pending = f"spec.schedulerName={self.name},spec.nodeName="
        if self.options.namespace:
            pending += f",metadata.namespace={self.options.namespace}"
        watches = {
            "nodes": ListWatch(names.NODES),
            "bound": ListWatch(names.PODS, field_selector=ACTIVE_BOUND),
            "pending": ListWatch(names.PODS, field_selector=pending),
            "ledgers": ListWatch(CONFIGMAPS, label_selector=f"{LEDGER_LABEL}=true"),
            "allocs": ListWatch(names.ALLOCS, absent_on=frozenset({403, 404})),
        }
        return [Reflector(transport, watch, self._sink(kind, watch.resource), self.stop)
                for kind, watch in watches.items()]

    def _sink(self, kind: str, resource: names.Resource) -> ManifestSink:
        def replace(_: names.Resource, items: list[dict[str, Any]]) -> None:
            self.view.replace(kind, items)

        def apply(_: names.Resource, event_type: str, obj: dict[str, Any]) -> None:
            self.view.apply(kind, event_type, obj)

        return ManifestSink(resource, replace, apply)

    def ensure_ledger_namespace(self) -> None:
        namespace = self.options.ledger_namespace
        if self.raw.get_or_none(names.NAMESPACES.object_path(name=namespace)) is None:
            with contextlib.suppress(APIConflictError):  # another scheduler made it first
                self.raw.json("POST", names.NAMESPACES.path, body={"apiVersion": "v1", "kind": "Namespace",
                                                                   "metadata": {"name": namespace}})

    def run(self, reflectors: list[Reflector]) -> None:
        for reflector in reflectors:
            reflector.start()
        for reflector in reflectors:
            while not reflector.synced.wait(0.5):
                if self.stop.is_set():
                    return
        log.info("%s: synced (%d nodes); scheduling", self.name, len(self.view.nodes))
        last_scan = 0.0
        workers: dict[str, threading.Thread] = {}  # namespace -> the attempt under way there
        while not self.stop.is_set():
            workers = {ns: worker for ns, worker in workers.items() if worker.is_alive()}
            manifest = self._next(set(workers)) if len(workers) < MAX_WORKERS else None
            if manifest is not None:
                worker = threading.Thread(target=self._attempt_logged, args=(manifest,), daemon=True,
                                          name=f"omega-{manifest['metadata']['namespace']}")
                workers[manifest["metadata"]["namespace"]] = worker
                worker.start()
            elif self.clock() - last_scan > 2.0:
                self.scan_overcommit()
                last_scan = self.clock()
            else:
                self.view.changed.wait(0.2)
                self.view.changed.clear()

    def _attempt_logged(self, manifest: dict[str, Any]) -> None:
        try:
            self.attempt(manifest)
        except Exception:  # an API error mid-commit: the pod stays pending and is tried again
            log.exception("%s: attempt on %s/%s failed", self.name, manifest["metadata"].get("namespace"),
                          manifest["metadata"].get("name"))
            self._not_before[manifest["metadata"]["uid"]] = self.clock() + NO_FIT_BACKOFF
        finally:
            self.view.changed.set()  # the loop may hand this namespace its next pod

    # --- the queue -----------------------------------------------------------------------------------------
    def _next(self, busy: frozenset[str] | set[str] = frozenset()) -> dict[str, Any] | None:
        """The oldest pending pod that may be tried now, of a namespace with no attempt under way."""
        now = self.clock()
        with self.view._lock:
            pending = list(self.view.pending.values())
        self.metrics.pending.labels(self.name).set(len(pending))
        ready = [p for p in pending if self._not_before.get(p["metadata"]["uid"], 0.0) <= now
                 and p["metadata"]["uid"] not in self._placed and p["metadata"].get("namespace") not in busy]
        if not ready:
            return None
        return min(ready, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))

    # --- one attempt -------------------------------------------------------------------------------------------
    def attempt(self, manifest: dict[str, Any]) -> bool:
        """Plan on a fresh copy, think for the decision time, commit; True if the pod was bound."""
        plan = self.plan(manifest)
        if plan is None:
            return False
        log.info("%s: %s planned on %s (ledger at resourceVersion %s); committing in %.1f s", self.name, plan[0].key,
                 plan[1], plan[2].resource_version or "none", self.options.decision_time)
        if self.options.decision_time:
            self.stop.wait(self.options.decision_time)
        return self.commit(manifest, *plan)

    def plan(self, manifest: dict[str, Any]) -> tuple[PodInfo, str, Ledger] | None:
        """The pod, the node chosen on a fresh copy and that node's ledger as the copy read it (None:
        it fits nowhere, said in an Event once per reason)."""
        uid = manifest["metadata"]["uid"]
        pod = PodInfo.from_manifest(manifest)
        self._attempts[uid] = self._attempts.get(uid, 0) + 1
        snapshot, ledgers, nodes = self.view.snapshot(self.clock())
        candidates = [name for name in snapshot.nodes if tolerates(manifest, nodes[name])]
        decision = self.policy.schedule(pod, snapshot, candidates)
        if decision.node is None:
            self.metrics.transaction("fits-nowhere")
            message = (f"{self.name}: " + decision.message) if candidates else f"{self.name}: no node it tolerates"
            if self._said.get(uid) != message:
                self._said[uid] = message
                self._record(manifest, records.FAILED, message, warning=True)
            self._not_before[uid] = self.clock() + NO_FIT_BACKOFF
            return None
        return pod, decision.node, ledgers[decision.node]

    def commit(self, manifest: dict[str, Any], pod: PodInfo, node: str, ledger: Ledger) -> bool:
        """Commit `pod` to `node` as a transaction on the ledger read with the copy; True if bound."""
        uid = pod.uid
        for _ in range(MAX_TRIES):
            claim = Claim(uid, pod.key, pod.requests, self.name, self.clock())
            bound = self.view.bound_on(node)
            try:
                stored = self._write(ledger.committed(claim, (p.uid for p in bound), self.clock()))
            except APIConflictError:
                fresh = self._read_ledger(node)
                self.view.put_ledger(fresh)
                retry = self._on_conflict(manifest, pod, node, ledger, fresh)
                if retry:
                    ledger = fresh
                    continue
                return False
            self.view.put_ledger(stored)
            break
        else:
            return False
        if not self._room_on_node(manifest, pod, node, stored):
            return False
        try:
            self.raw.json("POST", names.PODS.object_path(pod.namespace, pod.name, "binding"), body={
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
        except APIError as exc:
            # Deleted, or bound by someone else meanwhile: the claim dies with CLAIM_TTL.
            log.info("%s: binding %s to %s failed: %s", self.name, pod.key, node, exc)
            self.metrics.transaction("binding-failed")
            return False
        self._placed[uid] = self.clock()
        self.metrics.transaction("committed")
        self._record(manifest, records.SCHEDULED, records.scheduled(
            pod.namespace, pod.name, node, self.name, self._attempts.get(uid, 1), self._conflicts.get(uid, 0)))
        log.info("%s: %s -> %s", self.name, pod.key, node)
        return True

    def _on_conflict(self, manifest: dict[str, Any], pod: PodInfo, node: str, read: Ledger, fresh: Ledger) -> bool:
        """A 409 on the node's ledger: count it, say it, and decide whether to retry on the same node."""
        uid = pod.uid
        self._conflicts[uid] = self._conflicts.get(uid, 0) + 1
        self.metrics.conflict(node, "ledger")
        self.metrics.transaction("conflict")
        then: str
        retry = False
        if self.options.conflicts == COARSE:
            then = records.replanning("Coarse-grained: any commit to the node since the snapshot refuses the claim")
        else:
            verdict = self._check(pod, node, fresh)
            if verdict is not None and verdict.fits:
                self._attempts[uid] = self._attempts.get(uid, 0) + 1
                then, retry = records.still_fits(node, self._attempts[uid]), True
            else:
                why = verdict.message if verdict is not None else "the node is gone"
                then = records.replanning(f"Fine-grained: re-checked against node {node} as it is now, it no "
                                          f"longer fits ({why})")
        self.metrics.retry("same-node" if retry else "replanned")
        self._record(manifest, records.CONFLICT, records.ledger_conflict(
            self.name, node, f"{self.options.ledger_namespace}/{ledger_name(node)}", read.resource_version,
            fresh.resource_version, fresh.last_commit, then), warning=True)
        log.info("%s: conflict committing %s to %s (resourceVersion %s -> %s); %s", self.name, pod.key, node,
                 read.resource_version or "none", fresh.resource_version, "retrying" if retry else "planning again")
        return retry

    def _check(self, pod: PodInfo, node: str, ledger: Ledger, bound: list[PodInfo] | None = None) -> Verdict | None:
        """The pod against `node` as it is now: its bound pods and the ledger's other live claims."""
        base = self.view.base(node)
        if base is None:
            return None
        bound = self.view.bound_on(node) if bound is None else bound
        claims = {k: c for k, c in ledger.live_claims((p.uid for p in bound), self.clock()).items() if k != pod.uid}
        here = node_now(base, [p for p in bound if p.uid != pod.uid], claims)
        snapshot = CellSnapshot([here], self.view.allocs())
        return check_node(pod, snapshot, here)

    def _room_on_node(self, manifest: dict[str, Any], pod: PodInfo, node: str, stored: Ledger) -> bool:
        """After the ledger took the claim: is the room still there on the node's real bound pods
        (read afresh, not from the watch)? kube-scheduler's pods show only here."""
        listed = self.raw.get(names.PODS.path, [("fieldSelector", f"spec.nodeName={node}")])
        bound = [PodInfo.from_manifest(p) for p in listed.get("items") or [] if PodInfo.is_active(p)]
        verdict = self._check(pod, node, stored, bound)
        if verdict is None or verdict.fits:
            return verdict is not None
        others = sorted(p.key for p in bound if p.uid not in stored.claims)
        self._conflicts[pod.uid] = self._conflicts.get(pod.uid, 0) + 1
        self.metrics.conflict(node, "unledgered")
        self.metrics.transaction("unledgered-conflict")
        self.metrics.retry("replanned")
        self._record(manifest, records.CONFLICT, records.unledgered_conflict(self.name, node, others, verdict.message),
                     warning=True)
        self._release(pod.uid, stored)
        return False

    def _release(self, uid: str, ledger: Ledger) -> None:
        for _ in range(MAX_TRIES):
            try:
                self.view.put_ledger(self._write(ledger.released(uid)))
                return
            except APIConflictError:
                ledger = self._read_ledger(ledger.node)
                if uid not in ledger.claims:
                    return
        log.warning("%s: could not take back the claim of %s on %s (it expires by itself)", self.name, uid,
                    ledger.node)

    # --- the API ---------------------------------------------------------------------------------------------
    def _write(self, ledger: Ledger) -> Ledger:
        """PUT under the resourceVersion read (POST for a new ledger); APIConflictError if it moved."""
        namespace = self.options.ledger_namespace
        body = ledger.manifest(namespace)
        if ledger.resource_version:
            stored = self.raw.json("PUT", CONFIGMAPS.object_path(namespace, ledger_name(ledger.node)), body=body)
        else:
            stored = self.raw.json("POST", CONFIGMAPS.object_path(namespace), body=body)  # 409 if someone made it
        return Ledger.from_manifest(stored)

    def _read_ledger(self, node: str) -> Ledger:
        found = self.raw.get_or_none(CONFIGMAPS.object_path(self.options.ledger_namespace, ledger_name(node)))
        return Ledger.from_manifest(found) if found else Ledger(node)

    def _record(self, pod: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        try:
            self.raw.json("POST", EVENTS.object_path(namespace), body=records.event(pod, reason, message, self.name,
                                                                                  warning))
        except APIError as exc:
            log.warning("%s: could not record %s on %s: %s", self.name, reason, pod["metadata"].get("name"), exc)

    # --- after the fact ------------------------------------------------------------------------------------------
    def scan_overcommit(self) -> int:
        """Nodes whose bound pods request more than they have; each such state said once."""
        found = 0
        for name in list(self.view.nodes):
            base = self.view.base(name)
            if base is None:
                continue
            bound = self.view.bound_on(name)
            node = base.with_pods(bound)
            if node.requested.fits_in(node.allocatable):
                continue
            found += 1
            key = (name, frozenset(p.uid for p in bound))
            if key in self._overcommitted:
                continue
            self._overcommitted.add(key)
            message = records.overcommitted(self.name, name, str(node.requested), str(node.allocatable))
            log.warning(message)
            for pod in bound:
                if pod.uid in self._placed:
                    self._record({"metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}},
                                 records.OVERCOMMITTED, message, warning=True)
        self.metrics.overcommitted.labels(self.name).set(found)
        return found


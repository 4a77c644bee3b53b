"""Alloc placement and release (SPEC §4, A1-A6): the operator side of Borg's allocs.

The policy core decides (`scheduler_ext.policy.allocs`); this module reads the cell, asks it, and
writes the answer to the Alloc's status. The status is the record of what is reserved: every
decision starts from the stored instances and is written back with a resourceVersion
precondition, so a restarted operator (or a second one) never reserves an instance twice; a
conflicting write is retried from a fresh read.

Level-triggered: Alloc events, member pod events and kopf timers all just ask for the alloc to be
reconciled; one reconcile per alloc runs at a time and requests arriving meanwhile coalesce into
one more run (a member pod's event is about another object than the Alloc, so kopf's own
one-handler-per-object cannot do this). Placement is serialised cell-wide (one at a time, on a
fresh snapshot that holds every alloc's reserved instances), so two allocs racing for the last free
node never both get it. A timer retries Pending and PartiallyReserved allocs, so instances are
placed when capacity frees (A6); a slower one reconciles every alloc (a vanished node, a missed
event). The reconciler lives in kopf's memo.

Deletion (A5) is kopf's: its finalizer (named cell.distos.dev/alloc-protection, see settings.py)
holds the Alloc until the deletion handler succeeds. The handler releases the reservation first
(no new member can be scheduled into it), then evicts the bound members through the Eviction API
(PodDisruptionBudgets are honoured); while members remain it asks kopf to retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf
import msgspec

from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APIConflictError, APINotFoundError, APITooManyRequestsError
from scheduler_ext.kube.names import ALLOC_FINALIZER, ALLOC_LABEL, ALLOCS, NODES, PODS
from scheduler_ext.policy.allocs import (
    PENDING,
    RESERVED,
    AllocPlacement,
    alloc_status,
    needs_placement,
    place_alloc,
    preempted,
    releasing_status,
    squeezed_out,
    valid_instances,
    without_instances,
)
from scheduler_ext.policy.model import AllocInfo, AllocInstance, CellSnapshot, NodeInfo, PodInfo

FINALIZER = ALLOC_FINALIZER
SWEEP_INTERVAL = 5.0  # seconds between retries of unsettled allocs (A6)
FULL_SWEEP_EVERY = 6  # every alloc is reconciled every FULL_SWEEP_EVERY * SWEEP_INTERVAL (missed events)
RELEASE_RETRY = 2.0  # seconds before kopf retries a deletion whose members are still running
MACHINES_TTL = 1.0  # seconds a listing of nodes and pods serves further placements
_CONFLICT_RERUNS = 5
_TIMEOUT = 30
_ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"

log = logging.getLogger(__name__)

Manifest = dict[str, Any]


class Conflict(Exception):
    """The Alloc changed since it was read: reconcile again from a fresh read."""


# --- reading and writing the cell (blocking; run in threads) -------------------------------------

def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _split(key: str) -> tuple[str, str]:
    namespace, name = key.split("/", 1)
    return namespace, name


def _items(api: RawClient, path: str, query: list[tuple[str, str]] | None = None,
           accept: str = "application/json") -> list[Manifest]:
    body = msgspec.json.decode(api.request("GET", path, query or [], timeout=_TIMEOUT, accept=accept))
    return list(body.get("items") or [])


def get_alloc(api: RawClient, namespace: str, name: str) -> Manifest | None:
    found = api.get_or_none(ALLOCS.object_path(namespace, name), timeout=_TIMEOUT)
    return dict(found) if found is not None else None


def list_allocs(api: RawClient) -> list[Manifest]:
    return _items(api, ALLOCS.path)


def list_node_names(api: RawClient) -> set[str]:
    # Metadata only: a reconcile needs to know which nodes exist, not their status.
    return {item["metadata"]["name"] for item in _items(api, NODES.path, accept=_METADATA_ONLY)}


def list_nodes(api: RawClient) -> list[Manifest]:
    return _items(api, NODES.path)


def list_bound_pods(api: RawClient, node: str | None = None) -> list[Manifest]:
    """Active pods bound to a node (to `node` only, when given)."""
    where = f"spec.nodeName={node}" if node else "spec.nodeName!="
    return _items(api, PODS.path, [("fieldSelector", f"{where},{_ACTIVE_PODS}")])


def list_members(api: RawClient, namespace: str, name: str) -> list[Manifest]:
    return _items(api, PODS.object_path(namespace),
                  [("labelSelector", f"{ALLOC_LABEL}={name}"), ("fieldSelector", _ACTIVE_PODS)])


def _patch(api: RawClient, obj: Manifest, body: Manifest, status: bool) -> Manifest:
    """A merge patch carrying the resourceVersion read: the API server refuses it (409) if the
    Alloc changed since, so a decision made on a stale read is never written."""
    meta = obj["metadata"]
    body = {**body, "metadata": {**body.get("metadata", {}), "resourceVersion": meta["resourceVersion"]}}
    path = ALLOCS.object_path(meta["namespace"], meta["name"], "status" if status else "")
    try:
        return dict(api.patch(path, body, timeout=_TIMEOUT))
    except (APINotFoundError, APIConflictError) as exc:
        raise Conflict(str(exc)) from None


def write_status(api: RawClient, obj: Manifest, status: Manifest) -> Manifest:
    return _patch(api, obj, {"status": status}, status=True)


def evict(api: RawClient, namespace: str, name: str) -> bool:
    """Evict one pod; False when a PodDisruptionBudget refuses it for now (429)."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    try:
        api.json("POST", PODS.object_path(namespace, name, "eviction"), body=body, timeout=_TIMEOUT)
    except APINotFoundError:
        return True  # already gone
    except APITooManyRequestsError:
        return False
    return True


# --- decisions on what was read ------------------------------------------------------------------

def _status_differs(obj: Manifest, status: Manifest) -> bool:
    current = obj.get("status") or {}
    return any(current.get(field) != value for field, value in status.items())


def _members(pods: Iterable[Manifest], key: str) -> list[PodInfo]:
    infos = (PodInfo.from_manifest(p) for p in pods if PodInfo.is_active(p))
    return [pod for pod in infos if pod.alloc == key]


def _parse(obj: Manifest) -> AllocInfo | str:
    """The Alloc, or why it cannot be read (the CRD schema should have refused it already)."""
    try:
        return AllocInfo.from_manifest(obj)
    except (ValueError, TypeError, KeyError) as exc:
        return f"spec cannot be read: {exc}"


def _snapshot(nodes: list[Manifest], pods: list[Manifest], allocs: list[Manifest]) -> CellSnapshot:
    parsed = []
    for manifest in allocs:
        alloc = _parse(manifest)
        if isinstance(alloc, str):
            meta = manifest.get("metadata") or {}
            log.warning("Alloc %s/%s left out of placement: %s", meta.get("namespace"), meta.get("name"), alloc)
            continue
        parsed.append(alloc)
    return CellSnapshot.from_manifests(nodes, pods).with_allocs(parsed)


def _describe(placement: AllocPlacement) -> str:
    where = ", ".join(f"{i.index}@{i.node}" for i in placement.instances) or "none"
    return f"{placement.phase} (instances {where}){': ' + placement.message if placement.message else ''}"


# --- reconciling one alloc -----------------------------------------------------------------------

class AllocReconciler:
    """One reconcile per alloc at a time; placement one at a time across the cell."""

    def __init__(self, api: RawClient) -> None:
        self.api = api
        self.placement_lock = asyncio.Lock()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._machines: tuple[float, list[Manifest], list[Manifest]] | None = None

    def request(self, key: str) -> None:
        """Ask for `key` ("ns/name") to be reconciled; coalesces with a run already under way."""
        if key in self._running:
            self._again.add(key)
            return
        self._running[key] = asyncio.create_task(self._run(key), name=f"alloc {key}")

    async def idle(self) -> None:
        """Wait until no reconcile runs (for tests and shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _run(self, key: str) -> None:
        try:
            reruns = 0
            while True:
                self._again.discard(key)
                try:
                    await self.reconcile(key)
                except Conflict as exc:
                    reruns += 1
                    if reruns <= _CONFLICT_RERUNS:
                        log.debug("Alloc %s changed while reconciling (%s); again", key, exc)
                        self._again.add(key)
                    else:
                        log.warning("Alloc %s keeps changing under the operator; the sweep retries", key)
                except Exception as exc:  # the sweep comes back; one bad alloc must not stop the others
                    log.error("Alloc %s: reconcile failed: %s: %s", key, type(exc).__name__,
                              str(exc).splitlines()[0] if str(exc) else "")
                if key not in self._again:
                    return
        finally:
            self._running.pop(key, None)

    async def reconcile(self, key: str) -> None:
        namespace, name = _split(key)
        obj = await asyncio.to_thread(get_alloc, self.api, namespace, name)
        if obj is None:
            return
        if obj["metadata"].get("deletionTimestamp"):
            return  # kopf's deletion handler (release) has it from here
        alloc = _parse(obj)
        generation = obj["metadata"].get("generation")
        if isinstance(alloc, str):
            status = {"phase": PENDING, "instances": [], "message": alloc, "observedGeneration": generation}
            if _status_differs(obj, status):
                await asyncio.to_thread(write_status, self.api, obj, status)
            return
        nodes = await asyncio.to_thread(list_node_names, self.api)
        if needs_placement(alloc, nodes):
            async with self.placement_lock:
                await self.place(key)
            return
        member_pods = await asyncio.to_thread(list_members, self.api, namespace, name)
        members = _members(member_pods, key)
        placement = AllocPlacement(valid_instances(alloc, nodes), RESERVED, "")
        dropped = await self._preempted(key)
        if dropped:
            # A7: a higher band's pods took these instances' room. Give it back, evict the members
            # there (Borg kills the tasks of a preempted alloc), and place the instances again.
            placement = without_instances(alloc, placement, dropped,
                                          "preempted by pods of a higher band (A7); placed again when room frees")
            log.info("Alloc %s: %s", key, _describe(placement))
            status = alloc_status(alloc, placement, members, generation)
            await asyncio.to_thread(write_status, self.api, obj, status)
            # The status message is rewritten when the instances are placed again; the Event keeps
            # why they moved (kubectl describe alloc), as the scheduler's Events do for pods.
            kopf.warn(kopf.Body(cast(kopf.RawBody, obj)), reason="Preempted", message=placement.message)
            gone = {i.node for i in dropped}
            for pod in member_pods:
                if (pod.get("spec") or {}).get("nodeName") in gone and not pod["metadata"].get("deletionTimestamp"):
                    await asyncio.to_thread(evict, self.api, namespace, pod["metadata"]["name"])
            self._again.add(key)
            return
        status = alloc_status(alloc, placement, members, generation)
        if _status_differs(obj, status):
            await asyncio.to_thread(write_status, self.api, obj, status)

    async def _preempted(self, key: str) -> tuple[AllocInstance, ...]:
        """The alloc's instances whose nodes higher-band pods took (policy.allocs.preempted)."""
        (nodes, pods), allocs = await asyncio.gather(self._nodes_and_pods(), asyncio.to_thread(list_allocs, self.api))
        snapshot = _snapshot(nodes, pods, allocs)
        alloc = snapshot.allocs.get(key)
        return preempted(alloc, snapshot) if alloc is not None else ()

    async def place(self, key: str) -> None:
        """Place the alloc's missing instances on a fresh snapshot; the caller holds placement_lock."""
        earlier_listing = self._machines
        (nodes, pods), allocs = await asyncio.gather(
            self._nodes_and_pods(), asyncio.to_thread(list_allocs, self.api))
        obj: Manifest | None = next(
            (a for a in allocs if _key(a["metadata"]["namespace"], a["metadata"]["name"]) == key), None)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return  # gone or going: nothing to place (a deletion is reconciled on its own event)
        snapshot = _snapshot(nodes, pods, allocs)
        alloc = snapshot.allocs.get(key)
        if alloc is None:
            return  # unreadable: reported by reconcile
        placement = place_alloc(alloc, snapshot)
        if len(placement.instances) < alloc.count and earlier_listing is not None and self._machines is earlier_listing:
            # A shared listing may predate a node or a freed pod; "fits nowhere" is only said on a fresh one.
            self._machines = None
            nodes, pods = await self._nodes_and_pods()
            snapshot = _snapshot(nodes, pods, allocs)
            placement = place_alloc(alloc, snapshot)
        generation = obj["metadata"].get("generation")
        members = _members(pods, key)
        status = alloc_status(alloc, placement, members, generation)
        if not _status_differs(obj, status):
            return
        obj = await asyncio.to_thread(write_status, self.api, obj, status)
        log.info("Alloc %s: %s", key, _describe(placement))
        new = {i.index for i in placement.instances} - {i.index for i in alloc.instances
                                                         if i in placement.instances}
        if new:
            await self._verify(key, obj, alloc.with_instances(placement.instances), placement, snapshot, new,
                               members)

    async def _nodes_and_pods(self) -> tuple[list[Manifest], list[Manifest]]:
        """Nodes and bound pods, shared by the placements of one burst (say a sweep retrying many
        Pending allocs) for MACHINES_TTL. Allocs are always read fresh: they are what two placements
        could race on; a pod bound meanwhile is caught by _verify, which reads the chosen nodes again."""
        now = time.monotonic()
        if self._machines is None or now - self._machines[0] > MACHINES_TTL:
            nodes, pods = await asyncio.gather(asyncio.to_thread(list_nodes, self.api),
                                               asyncio.to_thread(list_bound_pods, self.api))
            self._machines = (time.monotonic(), nodes, pods)
        return self._machines[1], self._machines[2]

    async def _verify(self, key: str, obj: Manifest, alloc: AllocInfo, placement: AllocPlacement,
                      snapshot: CellSnapshot, new: set[int], members: list[PodInfo]) -> None:
        """Give back new instances whose node filled up between the snapshot and the write."""
        fresh: list[NodeInfo] = []
        for instance in alloc.instances:
            if instance.index in new and instance.node in snapshot.nodes:
                bound = await asyncio.to_thread(list_bound_pods, self.api, instance.node)
                fresh.append(snapshot.nodes[instance.node].with_pods(PodInfo.from_manifest(p) for p in bound))
        after = snapshot.with_nodes(*fresh)
        after = after.with_allocs((*(a for a in after.allocs.values() if a.key != key), alloc))
        dropped = squeezed_out(alloc, after, new)
        if not dropped:
            return
        self._machines = None  # the listing missed what was bound meanwhile: the next placement reads again
        placement = without_instances(alloc, placement, dropped, "the node filled up while placing; placing again")
        log.warning("Alloc %s: %s", key, _describe(placement))
        await asyncio.to_thread(write_status, self.api, obj,
                                alloc_status(alloc, placement, members, obj["metadata"].get("generation")))
        self._again.add(key)

    async def release(self, key: str) -> bool:
        """A5: release the reservation and evict the bound members; True once none is left (the
        finalizer may go), False while members still hold it (kopf retries)."""
        namespace, name = _split(key)
        obj = await asyncio.to_thread(get_alloc, self.api, namespace, name)
        if obj is None:
            return True
        meta = obj["metadata"]
        members = await asyncio.to_thread(list_members, self.api, namespace, name)
        holding = [p["metadata"]["name"] for p in members
                   if (p.get("spec") or {}).get("nodeName") and not p["metadata"].get("deletionTimestamp")]
        alloc = _parse(obj)
        # First no instance is held any more, so no member is scheduled into it again; the members
        # still running count as ordinary pods on their nodes until they are gone.
        if not isinstance(alloc, str):
            status = releasing_status(alloc, len(holding), (), meta.get("generation"))
            if _status_differs(obj, status):
                obj = await asyncio.to_thread(write_status, self.api, obj, status)
        blocked = [pod for pod in holding if not await asyncio.to_thread(evict, self.api, namespace, pod)]
        if blocked and not isinstance(alloc, str):
            obj = await asyncio.to_thread(write_status, self.api, obj,
                                          releasing_status(alloc, len(holding), blocked, meta.get("generation")))
        if holding:
            log.info("Alloc %s deleted: evicted %d member pod(s)%s", key, len(holding) - len(blocked),
                     f", {len(blocked)} refused by a PodDisruptionBudget" if blocked else "")
            return False
        log.info("Alloc %s deleted: reservation released, no member left", key)
        return True


def unsettled(obj: Mapping[str, Any]) -> bool:
    """Whether an Alloc may need work: deleting, unprotected, not (or no longer) fully reserved."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return bool(meta.get("deletionTimestamp")
                or FINALIZER not in (meta.get("finalizers") or [])
                or status.get("phase") != RESERVED
                or status.get("observedGeneration") != meta.get("generation")
                or len(status.get("instances") or []) != spec.get("count"))


# --- kopf wiring ---------------------------------------------------------------------------------

MEMO_KEY = "alloc_reconciler"


def reconciler(memo: kopf.Memo) -> AllocReconciler:
    """The operator's one reconciler (its runs, its placement lock), kept in kopf's memo."""
    rec: AllocReconciler = memo[MEMO_KEY]
    return rec


@kopf.on.startup(id="alloc-reconciler")
async def start_reconciler(memo: kopf.Memo, **_: Any) -> None:
    # Startup handlers run before any watch: every object's memo is a shallow copy of this operator
    # memo, so all of them share this one reconciler and its cell-wide placement lock.
    memo[MEMO_KEY] = AllocReconciler(memo["api"])


@kopf.on.cleanup(id="alloc-reconciler-idle")
async def stop_reconciler(memo: kopf.Memo, **_: Any) -> None:
    await reconciler(memo).idle()


@kopf.on.event(*ALLOCS.selector, id="alloc-reconcile")
async def on_alloc(name: str, namespace: str | None, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace and type != "DELETED":
        reconciler(memo).request(_key(namespace, name))


@kopf.timer(*ALLOCS.selector, interval=SWEEP_INTERVAL, id="alloc-retry")
async def retry_unsettled(name: str, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A6: an alloc not (fully) reserved is tried again every SWEEP_INTERVAL."""
    if namespace and unsettled(body):
        reconciler(memo).request(_key(namespace, name))


@kopf.timer(*ALLOCS.selector, interval=SWEEP_INTERVAL * FULL_SWEEP_EVERY, id="alloc-resync")
async def resync(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Every alloc now and then, settled or not (a vanished node, a missed event)."""
    if namespace:
        reconciler(memo).request(_key(namespace, name))


@kopf.on.delete(*ALLOCS.selector, id="alloc-release", backoff=RELEASE_RETRY)
async def on_delete(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A5: kopf keeps its finalizer on the Alloc until this returns without an error."""
    if namespace and not await reconciler(memo).release(_key(namespace, name)):
        raise kopf.TemporaryError("member pods still hold the reservation", delay=RELEASE_RETRY)


@kopf.on.event(*PODS.selector, labels={ALLOC_LABEL: kopf.PRESENT}, id="alloc-members")
async def on_member(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """A member came, moved or went: its alloc's status.instances[].used."""
    alloc = labels.get(ALLOC_LABEL)
    if namespace and alloc:
        reconciler(memo).request(_key(namespace, alloc))

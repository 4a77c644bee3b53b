"""HTTP routes of the scheduler extender: decode, call the policy, encode. No rule lives here.

POST /filter, /prioritize, /preempt   kube-scheduler's extender verbs (wire.py)
GET  /healthz                         200 once the cache has synced, 503 before
GET  /metrics                         Prometheus: requests and latency per verb, cache sizes
GET  /why/{namespace}/{pod}           per-node reasons of the last filter decision for the pod (policy.why's
                                      record as JSON; ?format=text: the same text `cell why` prints)
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from scheduler_ext.extender import wire
from scheduler_ext.policy.model import CellSnapshot, PodInfo, ServiceInfo
from scheduler_ext.policy.preemption import Victims, choose_among
from scheduler_ext.policy.scheduler import FilterResult, PolicyCache, Ranking, Scheduler
from scheduler_ext.policy.why import WhyRecord

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Unknown node names (see ExtenderServer._learn_unknown_nodes).
ABSENT_TTL = 30.0
ABSENT_MAX = 4096
LOOKUPS_PER_REQUEST = 8
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS subdomain, as node names are


# Reads named nodes from the API (as plain manifests; nodes that do not exist are left out).
NodeReader = Callable[[list[str]], list[dict[str, Any]]]
# Whether a pod (namespace, name, uid) exists in the API; raises when the API cannot say.
PodChecker = Callable[[str, str, str], bool]
VERIFY_IN_FLIGHT = 4  # existence checks of booked pods at once; beyond that a booking waits out its TTL


class SnapshotSource(Protocol):
    """What the server needs from the cache (ClusterCache, or a fixed snapshot in tests)."""

    @property
    def synced(self) -> bool: ...

    def snapshot(self) -> CellSnapshot: ...

    def counts(self) -> dict[str, int]: ...

    def services(self, namespace: str) -> tuple[ServiceInfo, ...]: ...

    def assume(self, pod: PodInfo, node: str) -> None: ...

    def forget_assumed(self, uid: str) -> bool: ...

    def apply(self, kind: str, event_type: str, manifest: Mapping[str, Any]) -> None: ...

    @property
    def assume_outcomes(self) -> dict[str, int]: ...


class WhyStore:
    """Last filter decision per pod, for the most recent `capacity` pods (bounded memory)."""

    def __init__(self, capacity: int = 2000) -> None:
        self._records: OrderedDict[str, WhyRecord] = OrderedDict()
        self._capacity = capacity

    def record(self, pod: PodInfo, result: FilterResult) -> None:
        key = pod.key
        self._records[key] = WhyRecord.of(pod, result, time.time())
        self._records.move_to_end(key)
        if len(self._records) > self._capacity:
            self._records.popitem(last=False)

    def get(self, namespace: str, name: str) -> WhyRecord | None:
        return self._records.get(f"{namespace}/{name}")


class Evictions:
    """Victims Cell approved per preemptor, until the preemptor is placed (or `ttl` passes).

    kube-scheduler nominates the preemptor to the node and retries it; by then it may have seen the
    victims go while Cell's watch has not. Judging the preemptor on its nominated node as if its
    victims were gone keeps that retry from failing and preempting a second node.
    """

    def __init__(self, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_preemptor: OrderedDict[str, tuple[Victims, float]] = OrderedDict()
        self._ttl = ttl
        self._clock = clock

    def record(self, preemptor_uid: str, victims: Victims) -> None:
        now = self._clock()
        while self._by_preemptor:
            uid, (_, deadline) = next(iter(self._by_preemptor.items()))
            if deadline > now:
                break
            del self._by_preemptor[uid]
        self._by_preemptor.pop(preemptor_uid, None)
        self._by_preemptor[preemptor_uid] = (victims, now + self._ttl)

    def view_for(self, pod: PodInfo, snapshot: CellSnapshot) -> CellSnapshot:
        """`snapshot` as the preemptor `pod` should see it: its victims gone from its nominated node."""
        if not self._by_preemptor:
            return snapshot
        entry = self._by_preemptor.get(pod.uid)
        if entry is None or entry[1] <= self._clock():
            return snapshot
        victims = entry[0]
        node = snapshot.nodes.get(victims.node)
        uids = {p.uid for p in victims.pods}
        if node is None or not any(p.uid in uids for p in node.pods):
            return snapshot
        return snapshot.with_nodes(node.without_pods(uids))

    def forget(self, preemptor_uid: str) -> None:
        self._by_preemptor.pop(preemptor_uid, None)

    def __len__(self) -> int:
        return len(self._by_preemptor)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("cell_extender_requests", "Extender HTTP requests by verb and status code.",
                                ["verb", "code"], registry=registry)
        self.latency = Histogram("cell_extender_request_duration_seconds", "Extender request latency by verb.",
                                 ["verb"], registry=registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.cache_objects = Gauge("cell_extender_cache_objects", "Objects in the extender's cache.", ["kind"],
                                   registry=registry)
        self.score_cache = Gauge("cell_extender_score_cache_lookups", "Score cache lookups since start.",
                                 ["result"], registry=registry)
        self.assumptions = Gauge("cell_extender_assumed_placements",
                                 "Placements assumed before the binding was seen, by how the watch settled them.",
                                 ["outcome"], registry=registry)
        self.ranked_ahead = Counter("cell_extender_ranked_ahead",
                                    "Rankings computed between filter and prioritize: used, or stale (computed again).",
                                    ["result"], registry=registry)
        self.preempt_dropped = Counter("cell_extender_preempt_nodes_dropped",
                                       "Nodes taken out of kube-scheduler's preemption proposals, by reason.",
                                       ["reason"], registry=registry)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=wire.encode(payload), status=status, content_type="application/json")


def _priorities(ranking: Ranking, names: Sequence[str]) -> bytes:
    return wire.encode([wire.HostPriority(name, score) for name, score in ranking.wire(names).items()])


@dataclass(slots=True)
class _Ahead:
    """A ranking computed between a pod's filter and its prioritize, for that prioritize."""

    pod: PodInfo
    snapshot: CellSnapshot
    names: tuple[str, ...]
    ranking: Ranking | None = None
    body: bytes | None = None


class ExtenderServer:
    """The routes, holding the cache, the policy's scheduler, the why store and the metrics."""

    def __init__(self, source: SnapshotSource, scheduler: Scheduler, why: WhyStore, metrics: Metrics,
                 evictions: Evictions | None = None, read_nodes: NodeReader | None = None,
                 pod_exists: PodChecker | None = None) -> None:
        self.source = source
        self.read_nodes = read_nodes
        self.pod_exists = pod_exists
        self._verifying: set[str] = set()
        self.scheduler = scheduler
        self.why_store = why
        self.metrics = metrics
        self.evictions = evictions or Evictions()
        self._ahead: _Ahead | None = None
        self._absent: dict[str, float] = {}  # node name -> until when the API is not asked about it again
        # kube-scheduler sends the same pod to filter and then prioritize: convert it once.
        self._pod_infos: OrderedDict[tuple[str, str, tuple[ServiceInfo, ...]], PodInfo] = OrderedDict()

    def _pod_info(self, pod: wire.Pod) -> PodInfo:
        meta = pod.metadata
        # The Services of its namespace may make it one job with other pods (policy `job_key`).
        services = self.source.services(meta.namespace or "default")
        if not meta.uid or not meta.resource_version:
            return wire.pod_info(pod, services)
        key = (meta.uid, meta.resource_version, services)
        info = self._pod_infos.get(key)
        if info is None:
            info = self._pod_infos[key] = wire.pod_info(pod, services)
            if len(self._pod_infos) > 64:
                self._pod_infos.popitem(last=False)
        return info

    def instrument(self, verb: str, handler: Handler) -> Handler:
        latency = self.metrics.latency.labels(verb)  # label lookups once, not per request
        counters: dict[int, Any] = {}

        async def wrapped(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except wire.WireError as exc:
                response = web.Response(status=400, text=str(exc) + "\n")
            except web.HTTPException as exc:
                response = exc
            except Exception as exc:
                log.exception("%s failed", verb)
                response = web.Response(status=500, text=f"{verb} failed: {type(exc).__name__}: {exc}\n")
            counter = counters.get(response.status)
            if counter is None:
                counter = counters[response.status] = self.metrics.requests.labels(verb, str(response.status))
            counter.inc()
            latency.observe(time.perf_counter() - started)
            return response
        return wrapped

    async def filter(self, request: web.Request) -> web.Response:
        args = wire.decode_args(await request.read())
        if not self.source.synced:
            return _json(wire.ExtenderFilterResult(error="cell extender: cache not synced yet"))
        pod = self._pod_info(args.pod)
        names = wire.node_names(args)
        await self._learn_unknown_nodes(names)
        snapshot = self.evictions.view_for(pod, self.source.snapshot())
        result = self.scheduler.filter(pod, snapshot, names)
        self.why_store.record(pod, result)
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        for name, message in result.failed.items():
            (failed if result.verdicts[name].resolvable else unresolvable)[name] = message
        feasible = list(result.feasible)
        if len(feasible) == 1:
            # kube-scheduler takes a lone feasible node without asking prioritize: book it now.
            self._assume(pod, feasible[0])
        elif feasible:
            # kube-scheduler runs its own score plugins before it asks prioritize: rank meanwhile.
            self._ahead = _Ahead(pod, snapshot, tuple(feasible))
            asyncio.get_running_loop().call_soon(self._rank_ahead, self._ahead)
        node_list = wire.filtered_node_list(args, set(feasible))
        return _json(wire.ExtenderFilterResult(
            nodes=node_list,
            node_names=feasible if node_list is None else None,
            failed_nodes=failed,
            failed_and_unresolvable_nodes=unresolvable,
        ))

    async def _learn_unknown_nodes(self, names: list[str]) -> None:
        """kube-scheduler can see a new node before this cache's watch does: read such nodes from the API
        instead of calling them unfit (which would steer a whole burst away from them).

        Each unknown name is looked up once: a name the API does not know is remembered as absent
        for `ABSENT_TTL` (the watch adds the node if it appears meanwhile), names that cannot be node
        names are never looked up, and one request looks up at most `LOOKUPS_PER_REQUEST` names. So a
        body full of made-up names costs one round trip, not one per name and per request.
        """
        if self.read_nodes is None:
            return
        known = self.source.snapshot().nodes
        now = time.monotonic()
        unknown = []
        for name in names:
            if name in known or name in unknown:
                continue
            absent_until = self._absent.get(name)
            if absent_until is not None and absent_until > now:
                continue
            if not _NODE_NAME.fullmatch(name):
                continue
            unknown.append(name)
            if len(unknown) == LOOKUPS_PER_REQUEST:
                break
        if not unknown:
            return
        for name in unknown:
            self._absent[name] = now + ABSENT_TTL  # also while the lookup runs: concurrent requests skip it
        if len(self._absent) > ABSENT_MAX:
            expired = [n for n, until in self._absent.items() if until <= now]
            for name in expired or list(self._absent)[:ABSENT_MAX // 2]:
                del self._absent[name]
        try:
            found = await asyncio.to_thread(self.read_nodes, unknown)
        except Exception as exc:  # the API is slow or down: judge with what the cache knows
            log.warning("looking up nodes %s failed: %s", ", ".join(unknown), exc)
            return
        for manifest in found:
            self._absent.pop(str((manifest.get("metadata") or {}).get("name", "")), None)
            self.source.apply("nodes", "ADDED", manifest)

    async def prioritize(self, request: web.Request) -> web.Response:
        args = wire.decode_args(await request.read())
        names = wire.node_names(args)
        if not self.source.synced:
            return _json([wire.HostPriority(name, 0) for name in names])
        pod = self._pod_info(args.pod)
        snapshot = self.evictions.view_for(pod, self.source.snapshot())
        ahead, self._ahead = self._ahead, None
        if (ahead is not None and ahead.body is not None and ahead.pod is pod and ahead.snapshot is snapshot
                and ahead.names == tuple(names)):
            self.metrics.ranked_ahead.labels("used").inc()
            ranking, body = ahead.ranking, ahead.body
        else:
            if ahead is not None:
                self.metrics.ranked_ahead.labels("stale").inc()
            ranking = self.scheduler.rank(pod, snapshot, names)
            body = _priorities(ranking, names)
        if ranking is not None and ranking.best is not None:
            # Cell's pick scores 10 and every other node at most 9, so kube-scheduler binds it there.
            self._assume(pod, ranking.best)
        return web.Response(body=body, content_type="application/json")

    def _rank_ahead(self, ahead: _Ahead) -> None:
        """The ranking prioritize will most likely be asked for, computed while kube-scheduler scores."""
        if self._ahead is not ahead:
            return  # another pod came first
        try:
            ahead.ranking = self.scheduler.rank(ahead.pod, ahead.snapshot, ahead.names)
            ahead.body = _priorities(ahead.ranking, ahead.names)
        except Exception:  # prioritize computes it again, and reports what goes wrong
            log.exception("ranking %s ahead of prioritize failed", ahead.pod.key)

    async def preempt(self, request: web.Request) -> web.Response:
        args = wire.decode_preemption_args(await request.read())
        pod = self._pod_info(args.pod)
        snapshot = self.source.snapshot()
        proposals: dict[str, tuple[list[PodInfo], int]] = {}
        if args.node_name_to_meta_victims is not None:
            for name, meta in args.node_name_to_meta_victims.items():
                known = [p for p in (snapshot.find_pod(m.uid) for m in meta.pods) if p is not None]
                if len(known) < len(meta.pods):
                    # A victim Cell does not know cannot be checked against R1, and a cache that lags
                    # behind kube-scheduler may think the pod fits: offer nothing on this node.
                    self._drop(pod, name, "unknown-victims", "proposed victims not in Cell's cache yet")
                    continue
                proposals[name] = (known, meta.num_pdb_violations)
        elif args.node_name_to_victims is not None:
            for name, full in args.node_name_to_victims.items():
                proposals[name] = ([wire.pod_info(p) for p in full.pods], full.num_pdb_violations)
        # R3 chosen here (not left to kube-scheduler), so Cell knows where the pod is nominated and can
        # keep that room for it.
        decision = choose_among(pod, snapshot, proposals)
        for name, reason in decision.rejected.items():
            self._drop(pod, name, reason, "; ".join(decision.reasons.get(name, ())))
        best = decision.victims
        if best is None:
            return _json(wire.ExtenderPreemptionResult({}))
        log.debug("preempt %s on %s: %s", pod.key, best.node, "; ".join(decision.reasons.get(best.node, ())))
        self.evictions.record(pod.uid, best)
        return _json(wire.ExtenderPreemptionResult({best.node: wire.MetaVictims(
            [wire.MetaPod(p.uid) for p in best.pods], best.num_pdb_violations)}))

    def _assume(self, pod: PodInfo, node: str) -> None:
        self.evictions.forget(pod.uid)
        self.source.assume(pod, node)
        if self.pod_exists is not None and pod.uid not in self._verifying and len(self._verifying) < VERIFY_IN_FLIGHT:
            self._verifying.add(pod.uid)
            asyncio.get_running_loop().create_task(self._verify(pod))

    async def _verify(self, pod: PodInfo) -> None:
        """A booking holds room for up to the assume TTL. Anyone who reaches the extender could book
        made-up pods: ask the API (off the request path) and drop the booking at once if it has none."""
        assert self.pod_exists is not None
        try:
            exists = await asyncio.to_thread(self.pod_exists, pod.namespace, pod.name, pod.uid)
        except Exception as exc:  # the API cannot say: the booking keeps its TTL
            log.debug("cannot check pod %s: %s", pod.key, exc)
            return
        finally:
            self._verifying.discard(pod.uid)
        if not exists and self.source.forget_assumed(pod.uid):
            log.warning("booking of %s dropped: no such pod (uid %s) in the API", pod.key, pod.uid)

    def _drop(self, pod: PodInfo, node: str, reason: str, message: str) -> None:
        self.metrics.preempt_dropped.labels(reason).inc()
        log.debug("preempt %s: node %s dropped: %s", pod.key, node, message)

    async def why(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        record = self.why_store.get(namespace, name)
        if record is None:
            return _json({"error": f"no filter decision recorded for {namespace}/{name}"}, status=404)
        if request.query.get("format") == "text":
            return web.Response(text=record.text())
        return _json(record.to_json())

    async def healthz(self, request: web.Request) -> web.Response:
        if self.source.synced:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="cache not synced\n")

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        for kind, count in self.source.counts().items():
            self.metrics.cache_objects.labels(kind).set(count)
        for outcome, count in self.source.assume_outcomes.items():
            self.metrics.assumptions.labels(outcome).set(count)
        cache = self.scheduler.cache
        if cache is not None:
            self.metrics.score_cache.labels("hit").set(cache.hits)
            self.metrics.score_cache.labels("miss").set(cache.misses)
        response = web.Response(body=generate_latest(self.metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


SERVER: web.AppKey[ExtenderServer] = web.AppKey("server", ExtenderServer)


def create_app(source: SnapshotSource, scheduler: Scheduler | None = None, registry: CollectorRegistry | None = None,
               enough_feasible: int | None = 100, why_capacity: int = 2000,
               read_nodes: NodeReader | None = None, pod_exists: PodChecker | None = None) -> web.Application:
    """The aiohttp application; `scheduler` defaults to a cached, relaxed-randomization one."""
    scheduler = scheduler or Scheduler(PolicyCache(), enough_feasible=enough_feasible or None, rng=random.Random())
    server = ExtenderServer(source, scheduler, WhyStore(why_capacity), Metrics(registry or CollectorRegistry()),
                            read_nodes=read_nodes, pod_exists=pod_exists)
    # A filter names nodes, not objects (nodeCacheCapable): a few MB is more than any real body.
    app = web.Application(client_max_size=8 * 2**20)
    app[SERVER] = server
    app.router.add_post("/filter", server.instrument("filter", server.filter))
    app.router.add_post("/prioritize", server.instrument("prioritize", server.prioritize))
    app.router.add_post("/preempt", server.instrument("preempt", server.preempt))
    app.router.add_get("/why/{namespace}/{pod}", server.instrument("why", server.why))
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/metrics", server.metrics_endpoint)
    return app

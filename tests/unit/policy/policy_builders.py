"""Small constructors for policy tests: a node, a pod, an alloc, a cell, in one line each."""

from __future__ import annotations

from scheduler_ext.policy.bands import PRIORITY_CLASSES
from scheduler_ext.policy.model import (
    ALLOC_LABEL,
    RACK_LABEL,
    ZONE_LABEL,
    AllocInfo,
    AllocInstance,
    CellSnapshot,
    NodeInfo,
    PodInfo,
)
from scheduler_ext.policy.resources import Resources

PROD = PRIORITY_CLASSES["production"]
MONITORING = PRIORITY_CLASSES["monitoring"]
BATCH = PRIORITY_CLASSES["batch"]
BEST_EFFORT = PRIORITY_CLASSES["best-effort"]


def res(cpu: str = "0", memory: str = "0") -> Resources:
    return Resources.parse({"cpu": cpu, "memory": memory})


def node(name: str, cpu: str = "8", memory: str = "32Gi", zone: str = "zone-a", rack: str = "rack-1",
         pods: tuple[PodInfo, ...] = (), max_pods: int = 110, unschedulable: bool = False,
         **labels: str) -> NodeInfo:
    return NodeInfo(name, res(cpu, memory), {ZONE_LABEL: zone, RACK_LABEL: rack, **labels},
                    tuple(PodInfo(p.namespace, p.name, p.uid, p.priority, p.requests, p.labels, p.owner, name,
                                  p.node_selector) for p in pods),
                    max_pods, unschedulable)


def pod(name: str, cpu: str = "1", memory: str = "1Gi", priority: int = PROD, namespace: str = "alice",
        job: str | None = None, alloc: str | None = None, uid: str | None = None,
        selector: dict[str, str] | None = None) -> PodInfo:
    labels = {ALLOC_LABEL: alloc} if alloc else {}
    return PodInfo(namespace, name, uid or f"uid-{namespace}-{name}", priority, res(cpu, memory), labels,
                   f"{namespace}/ReplicaSet/{job}" if job else "", None, selector or {})


def alloc(name: str, cpu: str = "2", memory: str = "2Gi", nodes: tuple[str, ...] = (), count: int | None = None,
          priority: int = PROD, namespace: str = "alice", spread_by: str | None = None,
          selector: dict[str, str] | None = None) -> AllocInfo:
    return AllocInfo(namespace, name, res(cpu, memory), len(nodes) if count is None else count, priority, spread_by,
                     selector or {}, tuple(AllocInstance(i, n) for i, n in enumerate(nodes)))


def cell(*nodes: NodeInfo, allocs: tuple[AllocInfo, ...] = ()) -> CellSnapshot:
    return CellSnapshot(nodes, allocs)

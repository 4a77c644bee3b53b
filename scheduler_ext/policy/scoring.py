"""Scoring (Borg §3.2): 0..10 per node, higher is better.

- Prod pods spread: least allocated, so latency-sensitive work keeps headroom for spikes.
- Non-prod pods pack: most allocated (best fit), so fewer resources are stranded.
- Pods of one job spread across failure domains: zones first, then racks.

How the two parts weigh depends on the band. A prod job's spread counts as much as headroom. A
non-prod job packs first: its spread only breaks (near) ties, or eight 1-CPU batch tasks would land
on eight machines in three zones instead of filling one (Borg packs batch work; it tolerates losing
a machine). The weight is small enough that any real difference in packing wins, large enough that
equally packed nodes are told apart by the job's spread.

The resource part depends only on (pod shape, node state) and is what the score cache keeps; the
spread part depends on where the job's other pods are and is recomputed from the snapshot.
`resource_scores`, `spread_scores` and `combine_many` are the same formulas over arrays of nodes,
written operation for operation as the scalar ones so that the floats are bit-identical (the
scheduler's columns use them; a property test holds the two together).
Scores are floats: rounding to kube-scheduler's 0..10 integers happens once, at the wire
(`scheduler.Ranking`), so nothing is lost in between.
"""

from __future__ import annotations

import numpy as np

from scheduler_ext.policy.columnar import Floats, Ints
from scheduler_ext.policy.feasibility import NodeLedger, node_ledger
from scheduler_ext.policy.model import CellSnapshot, DomainCounts, NodeInfo, PodInfo

MAX_SCORE = 10
ZONE_WEIGHT = 2  # losing a zone hurts more than losing a rack
RACK_WEIGHT = 1
PROD_SPREAD_WEIGHT = 0.5  # prod: headroom and the job's spread count equally
NON_PROD_SPREAD_WEIGHT = 0.01  # non-prod: the whole spread range is worth 1% of a node's packing


def _ratio(part: int, whole: int) -> float:
    return min(part / whole, 1.0) if whole > 0 else 1.0


def resource_score(pod: PodInfo, books: NodeLedger) -> float:
    """0..10 from the node's use after placing the pod: inverted for prod (spread), direct for non-prod."""
    allocatable = books.node.allocatable
    after = books.committed
    if pod.alloc is None or books.reservation_for(pod.alloc) is None:
        after = after + pod.requests
    # A member lands inside a reservation already counted in `committed`.
    return _after_score(after.cpu, after.memory, allocatable.cpu, allocatable.memory, pod.band.is_prod)


def _after_score(after_cpu: int, after_mem: int, cap_cpu: int, cap_mem: int, prod: bool) -> float:
    used = (_ratio(after_cpu, cap_cpu) + _ratio(after_mem, cap_mem)) / 2
    fraction = 1.0 - used if prod else used
    return MAX_SCORE * fraction


def plain_resource_score(cpu: int, memory: int, prod: bool, node: NodeInfo) -> float:
    """`resource_score` of a pod that is not an alloc member, on a node without reservations."""
    allocatable, requested = node.allocatable, node.requested
    return _after_score(requested.cpu + cpu, requested.memory + memory, allocatable.cpu, allocatable.memory, prod)


def spread_score(domains: DomainCounts, node: NodeInfo) -> float:
    """0..10: higher where fewer of the job's pods already run (zone weighs twice a rack).

    `domains` is `snapshot.job_domains(pod.owner)`, looked up once per pod, not once per node.
    """
    if domains.max_zone == 0:
        return MAX_SCORE
    zone_part = 1.0 - domains.zones.get(node.zone, 0) / domains.max_zone
    rack_part = 1.0 - domains.racks.get(node.rack, 0) / domains.max_rack
    return MAX_SCORE * (ZONE_WEIGHT * zone_part + RACK_WEIGHT * rack_part) / (ZONE_WEIGHT + RACK_WEIGHT)


def spread_weight(prod: bool) -> float:
    return PROD_SPREAD_WEIGHT if prod else NON_PROD_SPREAD_WEIGHT


def combine(resource: float, spread: float, prod: bool) -> float:
    """The node's score, 0..10: the resource policy and the job's spread, weighted by band."""
    weight = spread_weight(prod)
    return (1.0 - weight) * resource + weight * spread


def score_node(pod: PodInfo, snapshot: CellSnapshot, node: NodeInfo) -> float:
    """The uncached score of one node for one pod (the pod is assumed to fit)."""
    return combine(resource_score(pod, node_ledger(snapshot, node)),
                   spread_score(snapshot.job_domains(pod.owner), node), pod.band.is_prod)


def _ratios(part: Ints, whole: Ints) -> Floats:
    """`_ratio` per node: int64 / int64 is the same correctly rounded division as Python's int / int."""
    out = np.ones(len(part), dtype=np.float64)
    np.divide(part, whole, out=out, where=whole > 0)
    return np.minimum(out, 1.0, out=out)


def resource_scores(cpu: int, memory: int, prod: bool, cap_cpu: Ints, cap_mem: Ints, used_cpu: Ints,
                    used_mem: Ints) -> Floats:
    """`plain_resource_score` on many nodes, given as columns (`_after_score` op for op)."""
    used = (_ratios(used_cpu + cpu, cap_cpu) + _ratios(used_mem + memory, cap_mem)) / 2
    fraction = 1.0 - used if prod else used
    return MAX_SCORE * fraction


def spread_scores(zone_counts: Ints, rack_counts: Ints, max_zone: int, max_rack: int) -> Floats:
    """`spread_score` per node, given the job's count in each node's zone and rack (max_zone > 0)."""
    zone_part = 1.0 - zone_counts / max_zone
    rack_part = 1.0 - rack_counts / max_rack
    spread: Floats = MAX_SCORE * (ZONE_WEIGHT * zone_part + RACK_WEIGHT * rack_part) / (ZONE_WEIGHT + RACK_WEIGHT)
    return spread


def combine_many(resource: Floats, spread: Floats | float, prod: bool) -> Floats:
    """`combine` per node."""
    weight = spread_weight(prod)
    combined: Floats = (1.0 - weight) * resource + weight * spread
    return combined

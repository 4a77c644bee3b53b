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
Scores are floats: rounding to kube-scheduler's 0..10 integers happens once, at the wire
(`scheduler.Ranking`), so nothing is lost in between.
"""

from __future__ import annotations

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
    used = (_ratio(after.cpu, allocatable.cpu) + _ratio(after.memory, allocatable.memory)) / 2
    fraction = 1.0 - used if pod.band.is_prod else used
    return MAX_SCORE * fraction


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

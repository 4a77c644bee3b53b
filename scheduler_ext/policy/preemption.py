"""Preemption (SPEC §2 R1-R3): which pods to evict so a pending pod fits, and on which node.

R1/R2 are `bands.may_preempt`; this module never decides them on its own. Victims on a node are
chosen as Kubernetes does: take every pod the preemptor may preempt, check the pod would fit,
then reprieve the most important ones that are not needed. R3 orders candidate nodes as
Kubernetes' default preemption does: fewest PDB violations, lowest highest-priority victim,
smallest priority sum, fewest victims (node name breaks the last tie, for determinism).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler_ext.policy.bands import Band, may_preempt
from scheduler_ext.policy.feasibility import Verdict, check_node
from scheduler_ext.policy.model import CellSnapshot, NodeInfo, PodInfo

_PRIORITY_OFFSET = 2**31  # Kubernetes shifts priorities positive before summing them


@dataclass(frozen=True, slots=True)
class Victims:
    """The pods to evict on one node, and how many PodDisruptionBudgets that would violate."""

    node: str
    pods: tuple[PodInfo, ...]
    num_pdb_violations: int = 0

    @property
    def highest_priority(self) -> int:
        return max((p.priority for p in self.pods), default=-_PRIORITY_OFFSET)

    def order_key(self) -> tuple[int, int, int, int, str]:
        """R3: smaller is better."""
        return (self.num_pdb_violations, self.highest_priority,
                sum(p.priority + _PRIORITY_OFFSET for p in self.pods), len(self.pods), self.node)

    def describe(self) -> str:
        if not self.pods:
            return "no victims needed"
        bands = sorted({p.band.label for p in self.pods})
        return f"{len(self.pods)} victim(s) ({', '.join(bands)}): " + ", ".join(p.key for p in self.pods)


@dataclass(frozen=True, slots=True)
class PreemptionDecision:
    """The chosen node and victims (or none), with the reason for every node considered; `rejected`
    names why a node offers no option ("unknown-node", "no-allowed-victims", "no-victims-needed")."""

    node: str | None
    victims: Victims | None
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rejected: Mapping[str, str] = field(default_factory=dict)


def best_victims(options: Iterable[Victims]) -> Victims | None:
    """R3: the option with the fewest PDB violations, then the lowest and fewest victims."""
    return min(options, key=Victims.order_key, default=None)


def preemptable(preemptor: PodInfo, pods: Iterable[PodInfo]) -> list[PodInfo]:
    """Pods the preemptor may evict (R1 + R2), lowest priority first."""
    return sorted((p for p in pods if may_preempt(preemptor.priority, p.priority)),
                  key=lambda p: (p.priority, p.key))


def select_victims(pod: PodInfo, snapshot: CellSnapshot, node: NodeInfo,
                   allowed: Iterable[PodInfo] | None = None) -> tuple[Victims | None, Verdict]:
    """Fewest and lowest victims on `node` that let `pod` fit, or None with the reason.

    `allowed` narrows the pods that may be evicted (default: all the node's pods R1/R2 permit).
    """
    candidates = preemptable(pod, node.pods if allowed is None else allowed)
    all_out = frozenset(p.uid for p in candidates)
    verdict = check_node(pod, snapshot, node, without=all_out)
    if not verdict.fits:
        if not candidates:
            return None, Verdict(False, ("no pod here may be preempted (R1/R2)", *verdict.reasons))
        return None, Verdict(False, ("does not fit even after preempting every allowed pod", *verdict.reasons))
    victims: list[PodInfo] = []
    removed = set(all_out)
    # Reprieve the most important pods first; each one stays unless the preemptor needs its room.
    for candidate in sorted(candidates, key=lambda p: (-p.priority, p.key)):
        removed.discard(candidate.uid)
        if not check_node(pod, snapshot, node, without=frozenset(removed)).fits:
            removed.add(candidate.uid)
            victims.append(candidate)
    chosen = Victims(node.name, tuple(sorted(victims, key=lambda p: (p.priority, p.key))))
    return chosen, Verdict(True, (chosen.describe(),))


def preempt(pod: PodInfo, snapshot: CellSnapshot, node_names: Iterable[str] | None = None,
            pdb_violations: Mapping[str, int] | None = None) -> PreemptionDecision:
    """Choose where `pod` should preempt (R3), among nodes where it does not fit as things stand."""
    reasons: dict[str, tuple[str, ...]] = {}
    options: list[Victims] = []
    names = snapshot.nodes.keys() if node_names is None else node_names
    for name in names:
        node = snapshot.nodes.get(name)
        if node is None:
            reasons[name] = ("unknown node",)
            continue
        if check_node(pod, snapshot, node).fits:
            reasons[name] = ("pod fits without preemption",)
            continue
        victims, verdict = select_victims(pod, snapshot, node)
        reasons[name] = verdict.reasons
        if victims is not None:
            pdb = (pdb_violations or {}).get(name, 0)
            options.append(Victims(victims.node, victims.pods, pdb) if pdb else victims)
    best = best_victims(options)
    return PreemptionDecision(best.node if best else None, best, reasons)


def vet_victims(pod: PodInfo, snapshot: CellSnapshot, node: NodeInfo, proposed: Iterable[PodInfo],
                num_pdb_violations: int = 0) -> tuple[Victims | None, Verdict]:
    """Check victims someone else proposed (kube-scheduler's preemption dry run).

    Drops victims that R1/R2 protect; if the pod then no longer fits (by Cell's rules, allocs
    included), looks for Cell's own victims on the node; None when nothing works.
    """
    proposed = list(proposed)
    allowed = [p for p in proposed if may_preempt(pod.priority, p.priority)]
    notes: list[str] = []
    if len(allowed) < len(proposed):
        protected = [p.key for p in proposed if not may_preempt(pod.priority, p.priority)]
        rule = "R1: prod never preempts prod" if Band.of_priority(pod.priority).is_prod else "R2"
        notes.append(f"{rule}: kept {', '.join(protected)}")
    gone = frozenset(p.uid for p in allowed)
    if check_node(pod, snapshot, node, without=gone).fits:
        # A subset of the proposal violates at most as many budgets as the proposal did.
        victims = Victims(node.name, tuple(allowed), num_pdb_violations)
        return victims, Verdict(True, (*notes, victims.describe()))
    own, verdict = select_victims(pod, snapshot, node)
    if own is None:
        return None, Verdict(False, (*notes, *verdict.reasons))
    return own, Verdict(True, (*notes, "victims chosen by Cell: " + own.describe()))


def choose_among(pod: PodInfo, snapshot: CellSnapshot,
                 proposals: Mapping[str, tuple[Iterable[PodInfo], int]]) -> PreemptionDecision:
    """R3 over someone else's proposals (kube-scheduler's: node -> (victims, PDB violations)):
    each node's proposal vetted (`vet_victims`), then the best of what is left."""
    reasons: dict[str, tuple[str, ...]] = {}
    rejected: dict[str, str] = {}
    options: list[Victims] = []
    for name, (proposed, pdb) in proposals.items():
        node = snapshot.nodes.get(name)
        if node is None:
            reasons[name], rejected[name] = ("node not in Cell's cache",), "unknown-node"
            continue
        victims, verdict = vet_victims(pod, snapshot, node, proposed, pdb)
        reasons[name] = verdict.reasons
        if victims is None:
            rejected[name] = "no-allowed-victims"
        elif not victims.pods:
            # kube-scheduler rejects a node without victims; Cell's view says the pod fits there
            # as is, which means the two caches disagree: let the next scheduling cycle decide.
            rejected[name] = "no-victims-needed"
        else:
            options.append(victims)
    best = best_victims(options)
    return PreemptionDecision(best.node if best else None, best, reasons, rejected)

"""Preemption: R1 (prod never preempts prod), R2 (strictly lower priority only), R3 (node choice)."""

from __future__ import annotations

import pytest

from scheduler_ext.policy.preemption import Victims, best_victims, choose_among, preempt, select_victims, vet_victims
from tests.unit.policy.policy_builders import BATCH, BEST_EFFORT, MONITORING, PROD, alloc, cell, node, pod


@pytest.mark.parametrize(
    ("preemptor", "victim", "preempts"),
    [
        (MONITORING, PROD, False),  # R1: no preemption inside prod, though 950000 > 800000
        (PROD, PROD - 1, False),  # R1
        (PROD, BATCH, True),
        (MONITORING, BEST_EFFORT, True),
        (BATCH, BEST_EFFORT, True),  # R2
        (BATCH, BATCH, False),  # R2: strictly lower only
        (BATCH + 1, BATCH, True),
        (BEST_EFFORT, BATCH, False),
    ],
)
def test_rules_decide_whether_a_full_node_can_be_freed(preemptor: int, victim: int, preempts: bool) -> None:
    snapshot = cell(node("n", cpu="4", pods=(pod("v", cpu="4", priority=victim),)))
    decision = preempt(pod("p", cpu="2", priority=preemptor), snapshot)
    assert (decision.node == "n") is preempts
    if preempts:
        assert [v.name for v in decision.victims.pods] == ["v"]
    else:
        assert decision.victims is None
        assert "may be preempted" in " ".join(decision.reasons["n"])


def test_victims_are_fewest_and_lowest_on_a_node() -> None:
    pods = (pod("be", cpu="1", priority=BEST_EFFORT), pod("batch", cpu="2", priority=BATCH),
            pod("prod", cpu="1", priority=PROD))
    snapshot = cell(node("n", cpu="4", pods=pods))
    victims, verdict = select_victims(pod("p", cpu="2", priority=PROD), snapshot, snapshot.nodes["n"])
    # Only batch (2 cpu) frees enough: best-effort alone would not, and prod is protected (R1).
    assert victims is not None and [v.name for v in victims.pods] == ["batch"]
    assert verdict.fits and "batch" in verdict.message


def test_reprieve_keeps_the_more_important_pod() -> None:
    pods = (pod("be", cpu="2", priority=BEST_EFFORT), pod("batch", cpu="2", priority=BATCH))
    snapshot = cell(node("n", cpu="4", pods=pods))
    victims, _ = select_victims(pod("p", cpu="2", priority=PROD), snapshot, snapshot.nodes["n"])
    assert [v.name for v in victims.pods] == ["be"]


@pytest.mark.parametrize(
    ("node_pods", "expected"),
    [
        # Lowest highest-priority victim wins over fewer victims.
        ({"x": [("be1", "2", BEST_EFFORT), ("be2", "2", BEST_EFFORT)], "y": [("b", "4", BATCH)]}, "x"),
        # Same highest priority: the smaller priority sum (fewer victims here) wins.
        ({"x": [("b1", "2", BATCH), ("b2", "2", BATCH)], "y": [("b", "4", BATCH)]}, "y"),
        # A node where the pod already fits is not a preemption candidate at all.
        ({"x": [("b1", "4", BATCH)], "y": [("b", "1", BATCH)]}, "x"),
    ],
)
def test_r3_node_choice(node_pods: dict[str, list[tuple[str, str, int]]], expected: str) -> None:
    snapshot = cell(*(node(name, cpu="4", pods=tuple(pod(f"{name}-{p}", cpu=c, priority=pr) for p, c, pr in spec))
                      for name, spec in node_pods.items()))
    decision = preempt(pod("p", cpu="4", priority=PROD), snapshot)
    assert decision.node == expected
    assert decision.reasons


def test_pdb_violations_come_first() -> None:
    snapshot = cell(node("x", cpu="4", pods=(pod("be", cpu="4", priority=BEST_EFFORT),)),
                    node("y", cpu="4", pods=(pod("b", cpu="4", priority=BATCH),)))
    decision = preempt(pod("p", cpu="4", priority=PROD), snapshot, pdb_violations={"x": 1})
    assert decision.node == "y"


def test_alloc_reservations_are_not_freed_by_preemption() -> None:
    # 4 cpu node, 3 reserved by an alloc whose member is idle: evicting the batch pod frees only 1.
    snapshot = cell(node("n", cpu="4", pods=(pod("b", cpu="1", priority=BATCH),)),
                    allocs=(alloc("c", cpu="3", nodes=("n",)),))
    assert preempt(pod("p", cpu="1", priority=PROD), snapshot).node == "n"
    decision = preempt(pod("p", cpu="2", priority=PROD), snapshot)
    assert decision.node is None
    assert "even after preempting" in " ".join(decision.reasons["n"])


def test_vet_victims_drops_prod_victims_then_falls_back_to_own_choice() -> None:
    prod_pod = pod("prod", cpu="2", priority=PROD)
    batch_pod = pod("batch", cpu="2", priority=BATCH)
    snapshot = cell(node("n", cpu="4", pods=(prod_pod, batch_pod)))
    n = snapshot.nodes["n"]
    prod_pod, batch_pod = n.pods  # as bound to the node
    preemptor = pod("m", cpu="2", priority=MONITORING)
    # kube-scheduler (R2 only) proposes the production pod; R1 forbids it; batch is enough instead.
    victims, verdict = vet_victims(preemptor, snapshot, n, [prod_pod], num_pdb_violations=0)
    assert victims == Victims("n", (batch_pod,))
    assert "R1" in verdict.message
    # Proposal of both: the batch pod alone remains and suffices.
    victims, _ = vet_victims(preemptor, snapshot, n, [prod_pod, batch_pod], num_pdb_violations=1)
    assert [v.name for v in victims.pods] == ["batch"] and victims.num_pdb_violations == 1
    # Nothing but prod pods to take: no candidate on this node.
    only_prod = cell(node("n", cpu="4", pods=(prod_pod, pod("prod2", cpu="2", priority=PROD))))
    victims, verdict = vet_victims(preemptor, only_prod, only_prod.nodes["n"], [prod_pod])
    assert victims is None and not verdict.fits


def test_choose_among_proposals_applies_r3_and_says_why_each_node_is_out() -> None:
    """kube-scheduler's proposals (node -> victims, PDB violations): vetted per node, then R3."""
    low, high = pod("low", cpu="4", priority=BEST_EFFORT), pod("high", cpu="4", priority=BATCH)
    guarded = pod("guarded", cpu="4", priority=PROD)
    snapshot = cell(node("n-low", cpu="4", pods=(low,)), node("n-high", cpu="4", pods=(high,)),
                    node("n-prod", cpu="4", pods=(guarded,)), node("n-free", cpu="4"))
    preemptor = pod("p", cpu="2", priority=PROD)
    decision = choose_among(preemptor, snapshot, {
        "n-low": ([low], 0), "n-high": ([high], 0), "n-prod": ([guarded], 0), "n-free": ([], 0), "gone": ([], 0)})
    assert decision.node == "n-low" and decision.victims is not None
    assert [p.name for p in decision.victims.pods] == ["low"]
    assert decision.rejected == {"n-prod": "no-allowed-victims", "n-free": "no-victims-needed",
                                 "gone": "unknown-node"}
    assert any("R1" in reason for reason in decision.reasons["n-prod"])
    # A PDB violation outweighs a lower victim (R3's first key), as in preempt().
    assert choose_among(preemptor, snapshot, {"n-low": ([low], 1), "n-high": ([high], 0)}).node == "n-high"
    assert best_victims([]) is None

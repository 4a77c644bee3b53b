"""The live Omega scheduler without a cluster: the ledger's books, taints, and two schedulers racing
through a fake API server that enforces resourceVersion preconditions as the real one does."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from cell.cli.main import app
from scheduler_ext.kube.client import RawClient
from scheduler_ext.omega import records
from scheduler_ext.omega.__main__ import main
from scheduler_ext.omega.ledger import CLAIM_TTL, Claim, Ledger, node_now, tolerates
from scheduler_ext.omega.scheduler import COARSE, FINE, OmegaOptions, OmegaScheduler
from scheduler_ext.policy.model import NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources
from tests.unit.omega.fakeapi import FakeAPI, feed, node, pod

NOW = 1_000_000.0


def scheduler(api: FakeAPI, name: str, conflicts: str = FINE) -> OmegaScheduler:
    return OmegaScheduler(cast(RawClient, api), OmegaOptions(name, conflicts=conflicts), threading.Event(),
                          clock=lambda: NOW)


def events_of(api: FakeAPI, pod_name: str, reason: str | None = None) -> list[dict[str, Any]]:
    return [e for e in api.events if e["involvedObject"]["name"] == pod_name and reason in (None, e["reason"])]


def requested_on(api: FakeAPI, node_name: str) -> int:
    return sum(PodInfo.from_manifest(p).requests.cpu for p in api.bound(node_name))


# --- the ledger ------------------------------------------------------------------------------------------

def test_a_claim_survives_its_ledger_round_trip() -> None:
    claim = Claim("u1", "ns/a", Resources(1500, 64 * 2**20), "omega-a", NOW)
    ledger = Ledger("n1").committed(claim, (), NOW)
    manifest = ledger.manifest("cell-system")
    assert "resourceVersion" not in manifest["metadata"]  # a new ledger is created, not replaced
    manifest["metadata"]["resourceVersion"] = "7"
    manifest["data"]["garbage"] = "{not json"
    read = Ledger.from_manifest(manifest)
    assert (read.node, read.resource_version, read.transactions) == ("n1", "7", 1)
    assert read.claims == {"u1": claim}
    assert read.last_commit == "omega-a placed ns/a"
    assert read.manifest("cell-system")["metadata"]["resourceVersion"] == "7"  # the precondition


def test_dead_claims_leave_the_books_on_the_next_commit() -> None:
    bound = Claim("bound", "ns/b", Resources(1000, 0), "omega-a", NOW - 10 * CLAIM_TTL)
    young = Claim("young", "ns/y", Resources(1000, 0), "omega-a", NOW - 1)
    dead = Claim("dead", "ns/d", Resources(1000, 0), "omega-b", NOW - 2 * CLAIM_TTL)
    ledger = Ledger("n1", "5", {c.uid: c for c in (bound, young, dead)}, transactions=3)
    new = Claim("new", "ns/n", Resources(1000, 0), "omega-b", NOW)
    after = ledger.committed(new, ["bound"], NOW)
    assert set(after.claims) == {"bound", "young", "new"}
    assert (after.transactions, after.resource_version) == (4, "5")
    assert set(after.released("young").claims) == {"bound", "new"}


def test_the_node_as_a_commit_sees_it_counts_a_bound_claim_once() -> None:
    base = NodeInfo("n1", Resources(8000, 2**35))
    bound = [PodInfo("ns", "k", "k", requests=Resources(3000, 0), node_name="n1"),
             PodInfo("ns", "a", "a", requests=Resources(2000, 0), node_name="n1")]
    claims = {"a": Claim("a", "ns/a", Resources(2000, 0), "omega-a", NOW),
              "b": Claim("b", "ns/b", Resources(1000, 0), "omega-b", NOW)}
    assert node_now(base, bound, claims).requested.cpu == 6000


@pytest.mark.parametrize(("tolerations", "ok"), [
    ([], False),
    ([{"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"}], True),
    ([{"key": "dedicated", "operator": "Equal", "value": "y"}], False),
    ([{"key": "dedicated", "operator": "Exists"}], True),
    ([{"operator": "Exists"}], True),
    ([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}], False),
])
def test_taints_keep_out_the_pods_that_do_not_tolerate_them(tolerations: list[dict[str, str]], ok: bool) -> None:
    tainted = node("n1", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"},
                                 {"key": "soft", "value": "x", "effect": "PreferNoSchedule"}])
    assert tolerates({"spec": {"tolerations": tolerations}}, tainted) is ok


# --- commits ----------------------------------------------------------------------------------------------

def race(conflicts: str, room_cpu: str, pod_cpu: str, spare: bool = True,
         ) -> tuple[FakeAPI, OmegaScheduler, OmegaScheduler]:
    """omega-a and omega-b copy the same cell, both choose n1 for their pod, a commits first."""
    api = FakeAPI()
    nodes = [node("n1", cpu=room_cpu), *([node("n2")] if spare else [])]
    api.add_pod(pod("other", "3", scheduler="default-scheduler", node_name="n1"))
    api.add_pod(pod("a", pod_cpu, "omega-a"))
    api.add_pod(pod("b", pod_cpu, "omega-b"))
    first, second = scheduler(api, "omega-a", conflicts), scheduler(api, "omega-b", conflicts)
    feed(first, api, nodes)
    feed(second, api, nodes)
    plan_a = first.plan(api.pods["uid-a"])
    plan_b = second.plan(api.pods["uid-b"])
    assert plan_a is not None and plan_b is not None
    assert plan_a[1] == plan_b[1] == "n1", "batch pods pack onto the fuller node"
    assert first.commit(api.pods["uid-a"], *plan_a)
    second.commit(api.pods["uid-b"], *plan_b)
    return api, first, second


def test_the_loser_of_the_last_room_gets_a_409_and_is_placed_elsewhere() -> None:
    api, _, second = race(FINE, room_cpu="8", pod_cpu="4")
    assert [status for _, status in api.puts] == [200, 409]
    conflict = events_of(api, "b", records.CONFLICT)
    assert len(conflict) == 1
    assert "409 Conflict" in conflict[0]["message"] and "no longer fits" in conflict[0]["message"]
    assert conflict[0]["source"]["component"] == "omega-b"
    assert api.pods["uid-b"]["spec"].get("nodeName") is None
    # The retry plans again, on a copy that now shows the winner's claim: the other node.
    feed(second, api, [node("n1"), node("n2")])
    assert second.attempt(api.pods["uid-b"])
    assert api.pods["uid-b"]["spec"]["nodeName"] == "n2"
    assert requested_on(api, "n1") == 7000 <= 8000
    scheduled = events_of(api, "b", records.SCHEDULED)[0]["message"]
    assert scheduled == "Successfully assigned ns/b to n2 (omega-b, attempt 2, 1 conflict)"
    assert second.metrics.conflicts.labels("omega-b", "n1", "ledger")._value.get() == 1


def test_fine_grained_retries_on_the_same_node_when_the_pod_still_fits() -> None:
    api, _, second = race(FINE, room_cpu="16", pod_cpu="4", spare=False)
    assert [status for _, status in api.puts] == [200, 409, 200]
    assert api.pods["uid-b"]["spec"]["nodeName"] == "n1"
    assert "still fits" in events_of(api, "b", records.CONFLICT)[0]["message"]
    assert events_of(api, "b", records.SCHEDULED)[0]["message"].endswith("(omega-b, attempt 2, 1 conflict)")
    ledger = Ledger.from_manifest(api.configmaps["omega-n1"])
    assert set(ledger.claims) == {"uid-a", "uid-b"} and ledger.transactions == 2
    assert second.metrics.retries.labels("omega-b", "same-node")._value.get() == 1


def test_coarse_grained_plans_again_even_when_the_pod_would_still_fit() -> None:
    api, _, second = race(COARSE, room_cpu="16", pod_cpu="4", spare=False)
    assert [status for _, status in api.puts] == [200, 409]
    assert api.pods["uid-b"]["spec"].get("nodeName") is None
    assert "Coarse-grained" in events_of(api, "b", records.CONFLICT)[0]["message"]
    assert second.metrics.retries.labels("omega-b", "replanned")._value.get() == 1


def test_a_pod_the_ledger_does_not_know_is_caught_on_the_node_before_binding() -> None:
    api = FakeAPI()
    api.add_pod(pod("a", "4", "omega-a"))
    omega = scheduler(api, "omega-a")
    feed(omega, api, [node("n1")])
    plan = omega.plan(api.pods["uid-a"])
    assert plan is not None
    # kube-scheduler binds a pod there after omega's copy: the ledger never hears of it.
    api.add_pod(pod("k", "6", scheduler="default-scheduler", node_name="n1"))
    assert not omega.commit(api.pods["uid-a"], *plan)
    assert [status for _, status in api.puts] == [200, 200]  # the claim, then taking it back
    assert Ledger.from_manifest(api.configmaps["omega-n1"]).claims == {}
    message = events_of(api, "a", records.CONFLICT)[0]["message"]
    assert "filled behind the ledger" in message and "ns/k" in message
    assert requested_on(api, "n1") == 6000


def test_a_pod_that_fits_nowhere_says_why_once() -> None:
    api = FakeAPI()
    api.add_pod(pod("a", "1", "omega-a"))
    omega = scheduler(api, "omega-a")
    feed(omega, api, [node("n1", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}])])
    assert omega.plan(api.pods["uid-a"]) is None
    omega._not_before.clear()
    assert omega.plan(api.pods["uid-a"]) is None
    assert [e["message"] for e in events_of(api, "a", records.FAILED)] == ["omega-a: no node it tolerates"]


def test_an_overcommitted_node_is_reported_once() -> None:
    api = FakeAPI()
    api.add_pod(pod("a", "5", "omega-a", node_name="n1"))
    api.add_pod(pod("k", "5", "default-scheduler", node_name="n1"))
    omega = scheduler(api, "omega-a")
    omega._placed["uid-a"] = NOW
    feed(omega, api, [node("n1"), node("n2")])
    assert omega.scan_overcommit() == 1
    assert omega.scan_overcommit() == 1
    reported = events_of(api, "a", records.OVERCOMMITTED)
    assert len(reported) == 1 and "overcommitted" in reported[0]["message"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--scheduler-name", "x"], "the following arguments are required: --kubeconfig"),
    (["--kubeconfig", "/nonexistent", "--scheduler-name", "x"], "--kubeconfig /nonexistent: no such file"),
    (["--kubeconfig", "/dev/null", "--scheduler-name", "x", "--decision-time", "-1"],
     "--decision-time must be >= 0"),
])
def test_bad_arguments_exit_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().endswith(message)


def test_cell_omega_hands_the_cells_kubeconfig_to_the_scheduler(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["omega", "--scheduler-name", "omega-a", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"--kubeconfig {tmp_path}/admin.kubeconfig: no such file" in result.output

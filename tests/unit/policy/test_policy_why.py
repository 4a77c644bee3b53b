"""The why-record: one shape for the extender's /why and `cell why` (JSON both ways, the text)."""

from __future__ import annotations

import json

from scheduler_ext.policy.model import CellSnapshot
from scheduler_ext.policy.scheduler import PolicyCache, Scheduler
from scheduler_ext.policy.why import Suggestion, WhyRecord, explain
from tests.unit.policy.policy_builders import BATCH, alloc, cell, node, pod


def _snapshot() -> CellSnapshot:
    return cell(node("node-1", cpu="4"), node("node-2", cpu="4", pods=(pod("filler", cpu="3", priority=BATCH),)),
                node("node-10", cpu="1"), allocs=(alloc("cache", cpu="2", nodes=("node-1",)),))


def test_explain_gives_every_node_its_reasons_in_natural_order() -> None:
    record = explain(_snapshot(), pod("big", cpu="3"))
    assert record.pod == "alice/big" and record.feasible == () and record.decided_at is None
    assert [name for name, _, _ in record.rows()] == ["node-1", "node-2", "node-10"]
    reasons = {name: text for name, _, text in record.rows()}
    assert "alloc reservations hold cpu 2" in reasons["node-1"] and "cpu 3 > 1 free" in reasons["node-2"]
    assert record.summary().startswith("0 of 3 node(s) feasible; ")


def test_explain_judges_a_bound_pod_without_itself() -> None:
    snapshot = _snapshot()
    filler = snapshot.nodes["node-2"].pods[0]
    assert dict((n, fits) for n, fits, _ in explain(snapshot, filler).rows())["node-2"] is True


def test_json_round_trip_keeps_every_part_and_leaves_room_for_suggestions() -> None:
    snapshot = _snapshot()
    result = Scheduler(PolicyCache(), enough_feasible=1).filter(pod("small", cpu="1"), snapshot)
    record = WhyRecord.of(pod("small", cpu="1"), result, decided_at=1_700_000_000.0)
    record = WhyRecord(record.pod, record.uid, record.decided_at, record.names, record.verdicts, record.feasible,
                       record.unexamined, suggestions=(Suggestion("ask for cpu 1 less", ("node-2",)),),
                       refusals=("BandQuota alice/quota: band production needs cpu 5",))
    data = json.loads(json.dumps(record.to_json()))
    assert data["decidedAt"] == "2023-11-14T22:13:20+00:00"
    assert data["unexamined"] == len(record.unexamined) == 2 and len(data["nodes"]) == 3
    assert data["suggestions"] == [{"kind": "", "text": "ask for cpu 1 less", "change": {}, "target": "", "patch": [],
                                    "nodes": ["node-2"], "victims": []}]
    back = WhyRecord.from_json(data)
    assert back.to_json() == data and back.text() == record.text()
    text = record.text()
    assert "relaxed randomization" in text and "1 of 3 node(s) feasible" in text
    assert "would let it in: ask for cpu 1 less (on node-2)" in text
    assert "refused at admission: BandQuota alice/quota" in text

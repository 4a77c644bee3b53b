"""The why-record (Borg §8, "why pending?"): for one pod, every node's verdict with its reasons.

Defined once here, so the extender (`GET /why/NS/POD`, from its last filter decision) and `cell why`
(that record, or one computed now over a snapshot) serve and print the same thing: `to_json` is the
wire and `--format json` shape, `from_json` reads it back, `rows` and `summary` are the text.

Room for more than feasibility: `suggestions` (what would let the pod in: a smaller request, a freed
node, ...) and `refusals` (what admission refused for the pod's job) are part of the shape, empty
until something fills them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scheduler_ext.policy.feasibility import Verdict
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.scheduler import NOT_EXAMINED, FilterResult, Scheduler
from scheduler_ext.policy.usage import natural_order


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A change that would let the pod in, and the nodes where it would."""

    text: str
    nodes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "nodes": list(self.nodes)}


@dataclass(frozen=True, slots=True)
class WhyRecord:
    """One pod's per-node reasons. `names[i]` was judged `verdicts[i]` (the verdict objects are the
    scheduler's own, shared with its score cache: recording one costs two tuples); `unexamined`
    nodes were left out by relaxed randomization. `decided_at` is None for a record computed now."""

    pod: str
    uid: str
    decided_at: float | None
    names: tuple[str, ...]
    verdicts: tuple[Verdict, ...]
    feasible: tuple[str, ...]
    unexamined: tuple[str, ...] = ()
    suggestions: tuple[Suggestion, ...] = ()
    refusals: tuple[str, ...] = ()

    @classmethod
    def of(cls, pod: PodInfo, result: FilterResult, decided_at: float | None = None) -> WhyRecord:
        return cls(pod.key, pod.uid, decided_at, tuple(result.verdicts), tuple(result.verdicts.values()),
                   result.feasible, result.unexamined)

    # --- the JSON shape (the extender's /why, `cell why --format json`) ------------------------------

    def nodes(self) -> dict[str, tuple[bool | None, tuple[str, ...]]]:
        """node -> (fits, reasons); fits is None for a node not examined."""
        nodes: dict[str, tuple[bool | None, tuple[str, ...]]] = {
            name: (verdict.fits, verdict.reasons) for name, verdict in zip(self.names, self.verdicts, strict=True)}
        for name in self.unexamined:
            nodes[name] = (None, NOT_EXAMINED.reasons)
        return nodes

    def to_json(self) -> dict[str, Any]:
        decided = None if self.decided_at is None else datetime.fromtimestamp(self.decided_at, UTC).isoformat()
        return {
            "pod": self.pod,
            "uid": self.uid,
            "decidedAt": decided,
            "feasible": list(self.feasible),
            "unexamined": len(self.unexamined),
            "nodes": {name: {"fits": fits, "reasons": list(reasons)} for name, (fits, reasons) in self.nodes().items()},
            "suggestions": [s.to_json() for s in self.suggestions],
            "refusals": list(self.refusals),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WhyRecord:
        """A record as `to_json` wrote it (say, fetched from the extender)."""
        nodes: Mapping[str, Mapping[str, Any]] = data.get("nodes") or {}
        examined = {name: Verdict(bool(v.get("fits")), tuple(v.get("reasons") or ()))
                    for name, v in nodes.items() if v.get("fits") is not None}
        decided = data.get("decidedAt")
        return cls(
            pod=str(data.get("pod", "")),
            uid=str(data.get("uid") or ""),
            decided_at=datetime.fromisoformat(decided).timestamp() if isinstance(decided, str) else None,
            names=tuple(examined),
            verdicts=tuple(examined.values()),
            feasible=tuple(data.get("feasible") or ()),
            unexamined=tuple(name for name, v in nodes.items() if v.get("fits") is None),
            suggestions=tuple(Suggestion(str(s.get("text", "")), tuple(s.get("nodes") or ()))
                              for s in data.get("suggestions") or ()),
            refusals=tuple(str(r) for r in data.get("refusals") or ()),
        )

    # --- the text -----------------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, bool | None, str]]:
        """(node, fits, reasons joined) in natural node order (node-2 before node-10)."""
        nodes = self.nodes()
        return [(name, nodes[name][0], "; ".join(nodes[name][1])) for name in sorted(nodes, key=natural_order)]

    def summary(self) -> str:
        """"0 of 3 node(s) feasible; 2 node(s): <reason>, 1 node(s): <reason>"."""
        nodes = self.nodes()
        failed = Counter("; ".join(reasons) for fits, reasons in nodes.values() if fits is False)
        counts = ", ".join(f"{count} node(s): {reason}" for reason, count in failed.most_common())
        return f"{len(self.feasible)} of {len(nodes)} node(s) feasible" + (f"; {counts}" if counts else "")

    def notes(self) -> list[str]:
        """What follows the summary: the suggestions, then the refusals."""
        return [*(f"would let it in: {s.text}" + (f" (on {', '.join(s.nodes)})" if s.nodes else "")
                  for s in self.suggestions),
                *(f"refused at admission: {refusal}" for refusal in self.refusals)]

    def text(self) -> str:
        """The record as plain lines: one per node (name, fits, reasons), the summary, the notes."""
        marks = {True: "yes", False: "no", None: "-"}
        rows = [f"{name}\t{marks[fits]}\t{reasons}" for name, fits, reasons in self.rows()]
        return "\n".join([*rows, self.summary(), *self.notes()]) + "\n"


def explain(snapshot: CellSnapshot, pod: PodInfo, node_names: Iterable[str] | None = None) -> WhyRecord:
    """Every node's reasons for `pod`, computed now on `snapshot` (every node examined)."""
    if pod.node_name and pod.node_name in snapshot.nodes:
        # Judge a bound pod as if it were not there yet, else it would compete with itself.
        node = snapshot.nodes[pod.node_name]
        snapshot = snapshot.with_nodes(node.without_pods({pod.uid}))
    return WhyRecord.of(pod, Scheduler().filter(pod, snapshot, node_names))

"""The why-record (Borg §8, "why pending?"): for one pod, every node's verdict with its reasons.

Defined once here, so the extender (`GET /why/NS/POD`, from its last filter decision) and `cell why`
(that record, or one computed now over a snapshot) serve and print the same thing: `to_json` is the
wire and `--format json` shape, `from_json` reads it back, `rows` and `summary` are the text.

Beyond feasibility: `suggestions` (what would let it in, `policy.suggest`), `refusals` (what quota
admission said, the webhook's reasons) and, for a job judged from its manifest (`cell why -f`),
`job`, `admitted` and `placement` (where each of its pods would go, and whom it would preempt).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scheduler_ext.policy.feasibility import Verdict
from scheduler_ext.policy.model import CellSnapshot, PodInfo
from scheduler_ext.policy.scheduler import NOT_EXAMINED, FilterResult, Scheduler
from scheduler_ext.policy.usage import natural_order


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A change that would let the job or pod in, and the nodes where its pods would then go.

    `kind` is one of replicas, requests, band, quota, alloc, preempt; `change` says the new values
    (say {"replicas": 2}); `patch` is the same change as JSON Patch operations on `target` (the job's
    manifest, or the namespace's BandQuota), so `kubectl patch --type json` or an edit applies it;
    `victims` are the pods it would preempt (R1/R2), "namespace/name".
    """

    text: str
    nodes: tuple[str, ...] = ()
    kind: str = ""
    change: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    target: str = ""
    patch: tuple[Mapping[str, Any], ...] = field(default=(), hash=False, compare=False)
    victims: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "change": dict(self.change), "target": self.target,
                "patch": [dict(op) for op in self.patch], "nodes": list(self.nodes), "victims": list(self.victims)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Suggestion:
        return cls(str(data.get("text", "")), tuple(data.get("nodes") or ()), str(data.get("kind") or ""),
                   dict(data.get("change") or {}), str(data.get("target") or ""),
                   tuple(dict(op) for op in data.get("patch") or ()), tuple(data.get("victims") or ()))


@dataclass(frozen=True, slots=True)
class Placed:
    """Where one pod of a job would go (None: nowhere), and the pods placing it there preempts."""

    pod: str
    node: str | None
    victims: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "node": self.node, "victims": list(self.victims)}


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
    job: str = ""  # "Deployment alice/web" when judged from a manifest
    admitted: bool | None = None  # None: admission was not asked (a pod's record)
    placement: tuple[Placed, ...] = ()

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
            "job": self.job,
            "admitted": self.admitted,
            "placement": [p.to_json() for p in self.placement],
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
            suggestions=tuple(Suggestion.from_json(s) for s in data.get("suggestions") or ()),
            refusals=tuple(str(r) for r in data.get("refusals") or ()),
            job=str(data.get("job") or ""),
            admitted=data.get("admitted") if isinstance(data.get("admitted"), bool) else None,
            placement=tuple(Placed(str(p.get("pod", "")), p.get("node") or None, tuple(p.get("victims") or ()))
                            for p in data.get("placement") or ()),
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

    def placement_summary(self) -> str | None:
        """"3 of 4 pod(s) placed: node-1 x2, node-2 x1; 1 preemption(s)" (None: no placement judged)."""
        if not self.placement:
            return None
        counts = Counter(p.node for p in self.placement if p.node is not None)
        where = ", ".join(f"{node} x{counts[node]}" for node in sorted(counts, key=natural_order))
        victims = [v for p in self.placement for v in p.victims]
        return (f"{sum(counts.values())} of {len(self.placement)} pod(s) placed" + (f": {where}" if where else "")
                + (f"; preempting {len(victims)} pod(s): {some(victims)}" if victims else ""))

    def notes(self) -> list[str]:
        """What follows the summary: the job's admission and placement, the refusals, the suggestions."""
        head = []
        if self.admitted is not None:
            head.append(f"{self.job or self.pod}: " + ("admitted by quota" if self.admitted else "refused by quota"))
        placement = self.placement_summary()
        if placement:
            head.append(f"placement: {placement}")
        return [*head,
                *(f"refused at admission: {refusal}" for refusal in self.refusals),
                *(f"would let it in: {s.text}" + (f" (on {some(s.nodes)})" if s.nodes else "")
                  for s in self.suggestions)]

    def text(self) -> str:
        """The record as plain lines: one per node (name, fits, reasons), the summary, the notes."""
        marks = {True: "yes", False: "no", None: "-"}
        rows = [f"{name}\t{marks[fits]}\t{reasons}" for name, fits, reasons in self.rows()]
        return "\n".join([*rows, self.summary(), *self.notes()]) + "\n"


def some(names: Iterable[str], shown: int = 6) -> str:
    """"a, b, c and 4 more": long lists of nodes or victims in a line a person reads."""
    names = list(names)
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def explain(snapshot: CellSnapshot, pod: PodInfo, node_names: Iterable[str] | None = None) -> WhyRecord:
    """Every node's reasons for `pod`, computed now on `snapshot` (every node examined)."""
    if pod.node_name and pod.node_name in snapshot.nodes:
        # Judge a bound pod as if it were not there yet, else it would compete with itself.
        node = snapshot.nodes[pod.node_name]
        snapshot = snapshot.with_nodes(node.without_pods({pod.uid}))
    return WhyRecord.of(pod, Scheduler().filter(pod, snapshot, node_names))

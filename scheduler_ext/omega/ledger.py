"""The shared cell state of Cell's live Omega scheduler: one ledger object per node (no I/O here).

A ledger is a ConfigMap `omega-<node>` in the ledger namespace (`cell-system` by default), labelled
`cell.distos.dev/omega-ledger`. Its data holds one claim per pod that an Omega scheduler placed on
the node (key: the pod's uid, value: JSON of the pod, its requests, the scheduler, when); its
annotations count the transactions committed to it. Every commit is a PUT carrying the
resourceVersion the scheduler read: the API server refuses it with 409 Conflict when anyone
committed to that node since, which is Omega's optimistic concurrency (Omega §3.4) on the API
server's own compare-and-swap. The resourceVersion plays the sim's per-machine sequence number
(cell/sim/omega.py).

What the ledger does not see: pods bound by a scheduler that never writes it (kube-scheduler).
Those count only through the node's bound pods (`node_now`), read again before binding; see
docs/omega.md for what is and is not detected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler_ext.kube.names import GROUP
from scheduler_ext.policy.model import NodeInfo, PodInfo
from scheduler_ext.policy.resources import Resources

LEDGER_NAMESPACE = "cell-system"
LEDGER_LABEL = f"{GROUP}/omega-ledger"  # value "true"; the node is in NODE_ANNOTATION (a label value is too short)
NODE_ANNOTATION = f"{GROUP}/omega-node"
TRANSACTIONS_ANNOTATION = f"{GROUP}/omega-transactions"  # commits to this node so far
LAST_ANNOTATION = f"{GROUP}/omega-last-commit"  # who committed what, last
# A claim whose pod is not (yet) seen bound is kept this long: the binding follows the claim within
# milliseconds, and a watch lags by about as much. Older, it was a binding that failed.
CLAIM_TTL = 30.0
BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


def ledger_name(node: str) -> str:
    return f"omega-{node}"


@dataclass(frozen=True, slots=True)
class Claim:
    """One pod placed on the ledger's node by an Omega scheduler."""

    uid: str
    pod: str  # namespace/name
    requests: Resources
    scheduler: str
    at: float  # wall-clock seconds of the commit

    def encode(self) -> str:
        return json.dumps({"pod": self.pod, "cpu": self.requests.cpu, "memory": self.requests.memory,
                           "scheduler": self.scheduler, "at": round(self.at, 3)}, sort_keys=True)

    @classmethod
    def decode(cls, uid: str, text: str) -> Claim:
        value = json.loads(text)
        return cls(uid, str(value["pod"]), Resources(int(value["cpu"]), int(value["memory"])),
                   str(value.get("scheduler", "")), float(value.get("at", 0.0)))

    def as_pod(self, node: str) -> PodInfo:
        """The claim as a pod on `node` (for a node whose watch has not shown the binding yet)."""
        namespace, _, name = self.pod.partition("/")
        return PodInfo(namespace, name, self.uid, requests=self.requests, node_name=node)


@dataclass(frozen=True, slots=True)
class Ledger:
    """A node's ledger as read: its claims, its resourceVersion ("" = does not exist yet), its count."""

    node: str
    resource_version: str = ""
    claims: Mapping[str, Claim] = field(default_factory=dict)
    transactions: int = 0
    last_commit: str = ""

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Ledger:
        meta = manifest.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        node = str(annotations.get(NODE_ANNOTATION) or "")
        claims = {}
        for uid, text in (manifest.get("data") or {}).items():
            try:
                claims[uid] = Claim.decode(uid, text)
            except (ValueError, KeyError, TypeError):
                continue  # one hand-edited entry must not take the node's books down
        return cls(node, str(meta.get("resourceVersion") or ""), claims,
                   int(annotations.get(TRANSACTIONS_ANNOTATION) or 0), str(annotations.get(LAST_ANNOTATION) or ""))

    def live_claims(self, bound: Iterable[str], now: float) -> dict[str, Claim]:
        """The claims still holding room: their pod is bound (uid in `bound`), or they are younger than
        CLAIM_TTL (the binding may not have shown yet). The rest were pods that finished, were deleted
        or whose binding failed."""
        bound = set(bound)
        return {uid: c for uid, c in self.claims.items() if uid in bound or now - c.at < CLAIM_TTL}

    def committed(self, claim: Claim, bound: Iterable[str], now: float) -> Ledger:
        """The ledger after committing `claim` (dead claims dropped on the way)."""
        claims = self.live_claims(bound, now)
        claims[claim.uid] = claim
        return replace(self, claims=claims, transactions=self.transactions + 1,
                       last_commit=f"{claim.scheduler} placed {claim.pod}")

    def released(self, uid: str) -> Ledger:
        """The ledger without one claim (a commit taken back: the node turned out full)."""
        return replace(self, claims={k: c for k, c in self.claims.items() if k != uid},
                       transactions=self.transactions + 1, last_commit=f"claim of {uid} taken back")

    def manifest(self, namespace: str) -> dict[str, Any]:
        """The ConfigMap to PUT (or POST, for a ledger that does not exist yet): the resourceVersion
        read is the precondition."""
        metadata: dict[str, Any] = {
            "name": ledger_name(self.node), "namespace": namespace,
            "labels": {LEDGER_LABEL: "true"},
            "annotations": {NODE_ANNOTATION: self.node, TRANSACTIONS_ANNOTATION: str(self.transactions),
                            LAST_ANNOTATION: self.last_commit},
        }
        if self.resource_version:
            metadata["resourceVersion"] = self.resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                "data": {uid: claim.encode() for uid, claim in sorted(self.claims.items())}}


def node_now(base: NodeInfo, bound: Iterable[PodInfo], claims: Mapping[str, Claim]) -> NodeInfo:
    """The node as a commit must see it: every pod bound there (whoever placed it) plus the claims
    whose binding has not shown yet. A claimed pod that is bound counts once."""
    pods = list(bound)
    seen = {pod.uid for pod in pods}
    pods.extend(claim.as_pod(base.name) for uid, claim in claims.items() if uid not in seen)
    return base.with_pods(pods)


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key") or ""
        if toleration.get("operator") == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def tolerates(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether the pod tolerates every NoSchedule/NoExecute taint of the node (kube-scheduler's
    TaintToleration filter; the policy core leaves taints to Kubernetes, Omega has to do it itself)."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or ()
    return all(_tolerated(taint, tolerations) for taint in (node.get("spec") or {}).get("taints") or ()
               if taint.get("effect") in BLOCKING_EFFECTS)

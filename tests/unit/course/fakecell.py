"""An in-memory stand-in for a cell, so the grading checks can be exercised without a cluster.

It serves, through the two ApiClient methods ClusterView uses (param_serialize, call_api), what a
cell would after students applied manifests, playing just enough of the controllers: Deployments
get ready pods, Services an EndpointSlice, Jobs complete, budgets, Allocs and BandQuotas get their
status. Quota admission and charging are the policy core's (scheduler_ext.policy), as in the
webhook and the operator. It is a fixture, not a model of Kubernetes: placement is deterministic
and everything settles at once.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import yaml

from cell.catalog import experiences_dir
from cell.grading import ClusterView
from cell.grading.view import KINDS
from cell.localcell.topology import kwok_node_manifest
from scheduler_ext.omega import records
from scheduler_ext.policy.model import ALLOC_LABEL
from scheduler_ext.policy.quota import DEFAULT_STUDENT_BANDS, admit_charge, band_quota_of, used_status
from scheduler_ext.policy.workloads import charge_of, usage_by_band

Manifest = dict[str, Any]
ZONE = "topology.kubernetes.io/zone"
EVICTION_REFUSED = ("Error from server (TooManyRequests): Cannot evict pod as it would violate the pod's "
                    "disruption budget.")
_KINDS_BY_PATH = {(resource.prefix, resource.plural): kind for kind, resource in KINDS.items()}


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.data = json.dumps(body).encode() if body is not None else b""

    def read(self) -> bytes:
        return self.data


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


def _ready(pod: Manifest) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


class FakeCell:
    """Nodes node-1..N in zones zone-a..c (the local cell's layout); students added with add_student."""

    def __init__(self, nodes: int = 12) -> None:
        self._lock = threading.RLock()
        self._uids = itertools.count(1)
        self.objects: dict[tuple[str, str | None, str], Manifest] = {}
        self.deleted_pods: list[str] = []
        self.requests: list[str] = []  # "GET /path[?query]" / "DELETE /path", in the order served
        for index in range(1, nodes + 1):
            self._store(kwok_node_manifest(f"node-{index}", index))

    # --- setup ------------------------------------------------------------------------------------

    def add_student(self, name: str, bands: dict[str, dict[str, str]] | None = None) -> None:
        self._store({"apiVersion": "cell.distos.dev/v1alpha1", "kind": "BandQuota",
                     "metadata": {"name": "quota", "namespace": name},
                     "spec": {"bands": copy.deepcopy(bands or DEFAULT_STUDENT_BANDS)}})
        self.reconcile()

    def apply_experience(self, namespace: str, experience: str) -> None:
        """The experience's own per-student objects (its kustomization's files, not the course base)."""
        root = experiences_dir() / experience
        kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
        for entry in kustomization.get("resources", []):
            if (root / entry).is_file():
                refusal = self.apply(namespace, [d for d in yaml.safe_load_all((root / entry).read_text()) if d])
                assert refusal is None, refusal

    # --- what students do -------------------------------------------------------------------------

    def apply(self, namespace: str, manifests: Sequence[Manifest]) -> str | None:
        """Create or update objects, with quota admission; the first refusal's line, if any."""
        refusal = None
        with self._lock:
            for manifest in manifests:
                obj = copy.deepcopy(manifest)
                obj["metadata"]["namespace"] = namespace
                reason = self._admit(obj)
                if reason:
                    refusal = refusal or ('Error from server (Forbidden): error when creating "STDIN": admission '
                                          f'webhook "quota.cell.distos.dev" denied the request: {reason}')
                    continue
                old = self.objects.get(self._key(obj))
                if old is not None:
                    obj["metadata"]["uid"] = old["metadata"]["uid"]
                self._store(obj)
            self.reconcile()
        return refusal

    def evict(self, namespace: str, pod: str) -> str:
        with self._lock:
            target = self.objects.get(("Pod", namespace, pod))
            if target is None:
                return f'Error from server (NotFound): pods "{pod}" not found'
            for pdb in self._in(namespace, "PodDisruptionBudget"):
                labels = pdb["spec"].get("selector", {}).get("matchLabels", {})
                if _matches(target["metadata"].get("labels", {}), ",".join(f"{k}={v}" for k, v in labels.items())) \
                        and pdb["status"]["disruptionsAllowed"] < 1:
                    return EVICTION_REFUSED
            self._delete(("Pod", namespace, pod))
            self.reconcile()
        return '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"}'

    def _admit(self, obj: Manifest) -> str | None:
        charge = charge_of(obj)
        if charge is None:
            return None
        namespace = obj["metadata"]["namespace"]
        quotas = self._in(namespace, "BandQuota")
        quota = band_quota_of(quotas[0])[0] if quotas else None
        others = [c for o in self._charged(namespace) if self._key(o) != self._key(obj) and (c := charge_of(o))]
        old_obj = self.objects.get(self._key(obj))
        old = charge_of(old_obj) if old_obj is not None else None
        decision = admit_charge(namespace, charge, quota, usage_by_band(others), old)
        return None if decision.allowed else decision.message

    # --- the API ClusterView talks to ---------------------------------------------------------------

    def param_serialize(self, method: str, resource_path: str, query_params: Any = None,
                        header_params: Any = None, body: Any = None, **_: Any) -> tuple[Any, ...]:
        return method, (resource_path, dict(query_params or [])), header_params, body, None

    def call_api(self, method: str, url: tuple[str, dict[str, str]], header_params: Any = None, body: Any = None,
                 _request_timeout: Any = None) -> FakeResponse:
        path, query = url
        kind, namespace, name = self._parse(path)
        with self._lock:
            self.requests.append(f"{method} {path}" + (f"?{urlencode(query)}" if query else ""))
            if method == "GET" and name:
                obj = self.objects.get((kind, namespace, name))
                return FakeResponse(200, obj) if obj else FakeResponse(404, {"message": "not found"})
            if method == "GET":
                items = [o for (k, ns, _), o in sorted(self.objects.items()) if k == kind and ns == namespace
                         and _matches(o["metadata"].get("labels") or {}, query.get("labelSelector"))]
                return FakeResponse(200, {"items": copy.deepcopy(items)})
            if method == "DELETE" and kind == "Pod":
                if (kind, namespace, name) not in self.objects:
                    return FakeResponse(404, {"message": "not found"})
                self._delete((kind, namespace, name))
                self.reconcile()
                return FakeResponse(200, {"status": "Success"})
        return FakeResponse(405, {"message": f"{method} {path} is not served by the fake cell"})

    def _parse(self, path: str) -> tuple[str, str | None, str | None]:
        for (prefix, resource), kind in _KINDS_BY_PATH.items():
            if not path.startswith(prefix + "/"):
                continue
            parts = path[len(prefix) + 1:].split("/")
            if parts[0] == "namespaces" and len(parts) >= 3 and parts[2] == resource:
                return kind, parts[1], parts[3] if len(parts) > 3 else None
            if parts[0] == resource:
                return kind, None, parts[1] if len(parts) > 1 else None
        raise AssertionError(f"the fake cell cannot serve {path}")

    # --- controllers ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        with self._lock:
            for namespace in sorted({ns for (_, ns, _) in self.objects if ns}):
                self._allocs(namespace)
                for deployment in self._in(namespace, "Deployment"):
                    self._deployment(deployment)
                if self._omega(namespace):
                    for deployment in self._in(namespace, "Deployment"):
                        self._deployment(deployment)  # their pods' readiness changed
                for job in self._in(namespace, "Job"):
                    job["status"] = {"succeeded": job["spec"].get("completions", 1),
                                     "conditions": [{"type": "Complete", "status": "True"}]}
                for service in self._in(namespace, "Service"):
                    self._endpoints(service)
                for pdb in self._in(namespace, "PodDisruptionBudget"):
                    self._budget(pdb)
                for quota in self._in(namespace, "BandQuota"):
                    charges = [c for o in self._charged(namespace) if (c := charge_of(o))]
                    quota["status"] = {"used": used_status(usage_by_band(charges))}

    def _node_names(self) -> list[str]:
        return sorted((k[2] for k in self.objects if k[0] == "Node"), key=lambda n: int(n.split("-")[1]))

    def _zone(self, node: str) -> str:
        return self.objects[("Node", None, node)]["metadata"]["labels"][ZONE]

    def _allocs(self, namespace: str) -> None:
        """Instances on distinct nodes from node-2 on; with spreadBy, in distinct zones too."""
        for alloc in self._in(namespace, "Alloc"):
            spec = alloc["spec"]
            chosen: list[str] = []
            for node in self._node_names()[1:]:
                if len(chosen) == spec.get("count", 1):
                    break
                if spec.get("spreadBy") == ZONE and self._zone(node) in {self._zone(n) for n in chosen}:
                    continue
                if spec.get("spreadBy") != ZONE and chosen and self._zone(node) != self._zone(chosen[0]):
                    continue  # without spreading the fake packs instances into one zone
                chosen.append(node)
            alloc["status"] = {"phase": "Reserved" if len(chosen) == spec.get("count", 1) else "PartiallyReserved",
                               "instances": [{"index": i, "node": n} for i, n in enumerate(chosen)], "message": ""}

    def _omega(self, namespace: str) -> bool:
        """Cell's live Omega schedulers (scheduler_ext.omega), played: pending pods of an omega-* scheduler
        are bound to the node their nodeSelector names (else node-1), with the Events the real ones
        record. Within one apply, a scheduler committing to a node another scheduler just committed to
        gets the ledger's 409 first, and (the pod still fitting) is retried there: fine-grained."""
        committed: dict[str, str] = {}  # node -> the scheduler that committed to it in this round
        for pod in self._in(namespace, "Pod"):
            spec = pod["spec"]
            scheduler = spec.get("schedulerName") or ""
            if not scheduler.startswith("omega-") or spec.get("nodeName"):
                continue
            node = (spec.get("nodeSelector") or {}).get("kubernetes.io/hostname") or self._node_names()[0]
            conflicts = int(committed.get(node, scheduler) != scheduler)
            if conflicts:
                self._event(pod, records.CONFLICT, records.ledger_conflict(
                    scheduler, node, f"cell-system/omega-{node}", "41", "42", f"{committed[node]} placed a pod",
                    records.still_fits(node, 2)), scheduler)
            committed[node] = scheduler
            spec["nodeName"] = node
            pod["status"] = {"phase": "Running", "podIP": f"10.244.1.{next(self._uids) % 250}",
                             "conditions": [{"type": "Ready", "status": "True"}]}
            self._event(pod, records.SCHEDULED, records.scheduled(
                namespace, pod["metadata"]["name"], node, scheduler, 1 + conflicts, conflicts), scheduler)
        return bool(committed)

    def _event(self, pod: Manifest, reason: str, message: str, scheduler: str) -> None:
        event = records.event(pod, reason, message, scheduler, warning=reason != records.SCHEDULED)
        self._store(event)

    def _place(self, namespace: str, template: Manifest, index: int) -> str | None:
        if (template["spec"].get("schedulerName") or "").startswith("omega-"):
            return None  # _omega binds it
        alloc_name = (template["metadata"].get("labels") or {}).get(ALLOC_LABEL)
        if alloc_name:
            alloc = self.objects.get(("Alloc", namespace, alloc_name))
            nodes = [i["node"] for i in ((alloc or {}).get("status") or {}).get("instances", [])]
            return nodes[index % len(nodes)] if nodes else None  # a member without its alloc stays Pending
        if any(c.get("topologyKey") == ZONE for c in template["spec"].get("topologySpreadConstraints") or []):
            zones = sorted({self._zone(n) for n in self._node_names()})
            zone = zones[index % len(zones)]
            return next(n for n in self._node_names() if self._zone(n) == zone)
        return self._node_names()[0]

    def _deployment(self, deployment: Manifest) -> None:
        namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:8]
        replica_set = f"{name}-{template_hash}"
        mine = [p for p in self._in(namespace, "Pod")
                if any(r["name"].startswith(f"{name}-") and r["kind"] == "ReplicaSet"
                       for r in p["metadata"].get("ownerReferences", []))]
        for pod in mine:
            if pod["metadata"]["labels"].get("pod-template-hash") != template_hash:
                self._delete(self._key(pod))
        current = [p for p in mine if p["metadata"]["labels"].get("pod-template-hash") == template_hash]
        wanted = deployment["spec"].get("replicas", 1)
        for pod in current[wanted:]:
            self._delete(self._key(pod))
        current = current[:wanted]
        for index in range(len(current), wanted):
            node = self._place(namespace, template, index)
            uid = next(self._uids)
            pod_name = f"{replica_set}-{uid}"  # a fresh name, as a ReplicaSet's random suffix gives
            self._store({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": namespace,
                             "labels": {**(template["metadata"].get("labels") or {}),
                                        "pod-template-hash": template_hash},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
                                                  "controller": True, "uid": f"rs-{replica_set}"}]},
                "spec": {**copy.deepcopy(template["spec"]), **({"nodeName": node} if node else {})},
                "status": {"phase": "Running" if node else "Pending", "podIP": f"10.244.0.{uid % 250}",
                           "conditions": [{"type": "Ready", "status": "True" if node else "False"}]},
            }, uid=f"pod-{uid}")
        ready = sum(1 for p in self._in(namespace, "Pod") if p["metadata"]["name"].startswith(f"{replica_set}-")
                    and _ready(p))
        deployment["status"] = {"replicas": wanted, "readyReplicas": ready, "availableReplicas": ready}

    def _endpoints(self, service: Manifest) -> None:
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        selector = ",".join(f"{k}={v}" for k, v in (service["spec"].get("selector") or {}).items())
        pods = [p for p in self._in(namespace, "Pod") if selector and _matches(p["metadata"]["labels"], selector)]
        self._store({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-fake", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "endpoints": [{"addresses": [p["status"]["podIP"]], "conditions": {"ready": _ready(p)}} for p in pods],
        })

    def _budget(self, pdb: Manifest) -> None:
        namespace = pdb["metadata"]["namespace"]
        labels = (pdb["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        pods = [p for p in self._in(namespace, "Pod") if _matches(p["metadata"]["labels"], selector)]
        healthy = sum(1 for p in pods if _ready(p))
        if "minAvailable" in pdb["spec"]:
            desired = int(pdb["spec"]["minAvailable"])
        else:
            desired = len(pods) - int(pdb["spec"].get("maxUnavailable", 0))
        pdb["metadata"].setdefault("generation", 1)
        pdb["status"] = {"expectedPods": len(pods), "currentHealthy": healthy, "desiredHealthy": desired,
                         "disruptionsAllowed": max(healthy - desired, 0), "observedGeneration": 1}

    # --- storage ----------------------------------------------------------------------------------

    @staticmethod
    def _key(obj: Manifest) -> tuple[str, str | None, str]:
        return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]

    def _store(self, obj: Manifest, uid: str | None = None) -> None:
        obj["metadata"].setdefault("uid", uid or f"uid-{next(self._uids)}")
        self.objects[self._key(obj)] = obj

    def _delete(self, key: tuple[str, str | None, str]) -> None:
        if key[0] == "Pod":
            self.deleted_pods.append(key[2])
        self.objects.pop(key, None)

    def _in(self, namespace: str, kind: str) -> list[Manifest]:
        return [o for (k, ns, _), o in sorted(self.objects.items()) if k == kind and ns == namespace]

    def _charged(self, namespace: str) -> list[Manifest]:
        kinds = {"Pod", "Deployment", "ReplicaSet", "StatefulSet", "Job", "CronJob", "Alloc"}
        return [o for (k, ns, _), o in sorted(self.objects.items()) if k in kinds and ns == namespace]


class FakeBackend:
    """tests/reference/catalog.py's Backend over a FakeCell: one student's namespace."""

    def __init__(self, cell: FakeCell, namespace: str) -> None:
        self.cell = cell
        self.namespace = namespace
        self.view = ClusterView(cell, namespace)  # type: ignore[arg-type]

    def apply(self, manifests: list[Manifest]) -> str | None:
        return self.cell.apply(self.namespace, manifests)

    def get(self, kind: str, name: str) -> Manifest | None:
        return self.view.get(kind, name)

    def list(self, kind: str) -> list[Manifest]:
        return self.view.list(kind)

    def evict(self, pod: str) -> str:
        return self.cell.evict(self.namespace, pod)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> bool:
        return condition()  # the fake settles at once

"""Reference solutions and typical mistakes of the course's experiences, and how to apply them.

Every experience has a full-marks solution (`<experience>/solution.yaml` beside this file) and a
catalogue of typical mistakes, each of which must cost exactly its task's points. A recipe applies
a solution the way a student would, through a Backend: a real cell (tests/reference/apply.py, the
integration tests) or an in-memory one (the unit tests). What depends on the student's namespace
(how many replicas the remaining quota admits, the exact text of a refusal) is asked of the cell,
as the handout tells the student to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Protocol

import yaml

from cell.catalog import course_images, experiences_dir
from cell.grading import ready_endpoints
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.quota import band_quota_of
from scheduler_ext.policy.resources import ZERO, Resources
from scheduler_ext.policy.workloads import charge_of, usage_by_band

HERE = Path(__file__).resolve().parent
EXPERIENCES = ("exp1-orchestration", "exp2-borg", "exp3-failures")
Manifest = dict[str, Any]
API_POD = Resources.parse({"cpu": "500m", "memory": "256Mi"})
# Kinds whose objects BandQuota charges (scheduler_ext.policy.workloads.CHARGED_KINDS).
CHARGED_KINDS = ("Pod", "Deployment", "ReplicaSet", "StatefulSet", "Job", "CronJob", "Alloc")


class Backend(Protocol):
    """A student's namespace on some cell, as the recipes need it."""

    namespace: str

    def apply(self, manifests: list[Manifest]) -> str | None:
        """Apply as the student; None when admitted, else the first line of the refusal."""

    def get(self, kind: str, name: str) -> Manifest | None: ...

    def list(self, kind: str) -> list[Manifest]: ...

    def evict(self, pod: str) -> str:
        """Ask the Eviction API to evict pod; the first line of what the client printed."""

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> bool:
        """Poll condition until it holds (True) or timeout passes (False)."""


class SolutionError(RuntimeError):
    """A reference solution could not be applied as intended (the cell disagrees with the handout)."""


def solution(experience: str, images: dict[str, str] | None = None) -> list[Manifest]:
    """The full-marks manifests of an experience, with the course's image names filled in."""
    images = images or course_images()
    text = Template((HERE / experience / "solution.yaml").read_text()).substitute(
        WEB_IMAGE=images["web"], SHELL_IMAGE=images["shell"])
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def _template(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    return find(manifests, kind, name)["spec"]["template"]["spec"]


def _container(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    return _template(manifests, kind, name)["containers"][0]


# --- typical mistakes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Mistake:
    experience: str
    name: str
    task: int  # the one task it must cost, entirely
    what: str
    mutate: Callable[[list[Manifest]], None]  # edits the solution's manifests in place
    refused: bool = False  # the cell refuses an object of it at admission (so that object is missing)


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    def apply(obj: Manifest) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[key]
        obj[last] = value
    return apply


def _drop(manifests: list[Manifest], kind: str, name: str) -> None:
    manifests.remove(find(manifests, kind, name))


MISTAKES: tuple[Mistake, ...] = (
    # exp1-orchestration
    Mistake("exp1-orchestration", "wrong-replica-count", 1, "Deployment web with 4 replicas",
            lambda m: _set("spec.replicas", 4)(find(m, "Deployment", "web"))),
    Mistake("exp1-orchestration", "wrong-band", 1, "Deployment web in the batch band",
            lambda m: _template(m, "Deployment", "web").update(priorityClassName="batch")),
    Mistake("exp1-orchestration", "wrong-target-port", 2, "Service web forwards to port 80",
            lambda m: find(m, "Service", "web")["spec"]["ports"][0].update(targetPort=80)),
    Mistake("exp1-orchestration", "missing-probe", 3, "no readiness probe on web",
            lambda m: _container(m, "Deployment", "web").pop("readinessProbe")),
    Mistake("exp1-orchestration", "wrong-completions", 4, "Job crunch with 3 completions",
            lambda m: _set("spec.completions", 3)(find(m, "Job", "crunch"))),
    Mistake("exp1-orchestration", "budget-as-max-unavailable", 5, "PodDisruptionBudget web with maxUnavailable 1",
            lambda m: find(m, "PodDisruptionBudget", "web").update(
                spec={"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}})),
    # exp2-borg
    Mistake("exp2-borg", "alloc-not-spread", 1, "Alloc cache without spreadBy",
            lambda m: find(m, "Alloc", "cache")["spec"].pop("spreadBy")),
    Mistake("exp2-borg", "pod-outside-alloc", 2, "Deployment cache's pods are not members of the alloc",
            lambda m: find(m, "Deployment", "cache")["spec"]["template"]["metadata"]["labels"].pop(
                "cell.distos.dev/alloc")),
    Mistake("exp2-borg", "api-wrong-band", 3, "Deployment api in the batch band",
            lambda m: _template(m, "Deployment", "api").update(priorityClassName="batch")),
    Mistake("exp2-borg", "api-too-few-replicas", 3, "Deployment api one replica short of the quota",
            lambda m: _set("spec.replicas", max(find(m, "Deployment", "api")["spec"]["replicas"] - 1, 0))(
                find(m, "Deployment", "api"))),
    Mistake("exp2-borg", "oversized-deployment", 3, "Deployment api one replica beyond the quota",
            lambda m: _set("spec.replicas", find(m, "Deployment", "api")["spec"]["replicas"] + 1)(
                find(m, "Deployment", "api")), refused=True),
    Mistake("exp2-borg", "wrong-preempted-band", 4, "answers says production was preempted",
            lambda m: find(m, "ConfigMap", "answers")["data"].update({"preempted-band": "production"})),
    # exp3-failures
    Mistake("exp3-failures", "no-zone-spread", 1, "Deployment store without a zone spread constraint",
            lambda m: _template(m, "Deployment", "store").pop("topologySpreadConstraints")),
    Mistake("exp3-failures", "default-failover", 2, "Deployment store keeps the 300 s default tolerations",
            lambda m: _template(m, "Deployment", "store").pop("tolerations")),
    Mistake("exp3-failures", "missing-liveness-probe", 3, "no liveness probe on store",
            lambda m: _container(m, "Deployment", "store").pop("livenessProbe")),
    Mistake("exp3-failures", "budget-as-min-available", 4, "PodDisruptionBudget store with minAvailable 3",
            lambda m: find(m, "PodDisruptionBudget", "store").update(
                spec={"minAvailable": 3, "selector": {"matchLabels": {"app": "store"}}})),
    Mistake("exp3-failures", "ledger-unprotected", 5, "no PodDisruptionBudget for ledger (its eviction succeeds)",
            lambda m: _drop(m, "PodDisruptionBudget", "ledger")),
)


def mistakes(experience: str) -> list[Mistake]:
    return [m for m in MISTAKES if m.experience == experience]


def mistake(experience: str, name: str) -> Mistake:
    for candidate in mistakes(experience):
        if candidate.name == name:
            return candidate
    known = ", ".join(m.name for m in mistakes(experience))
    raise KeyError(f"no mistake {name!r} for {experience}; known: {known}")


# --- recipes: applying a solution as a student would ---------------------------------------------

def _manifests(experience: str, mistake_: Mistake | None, images: dict[str, str] | None,
               fill: Callable[[list[Manifest]], None] = lambda m: None) -> list[Manifest]:
    manifests = solution(experience, images)
    fill(manifests)
    if mistake_ is not None:
        mistake_.mutate(manifests)
    return manifests


def _pick(manifests: list[Manifest], kind: str, name: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]


def _without(manifests: list[Manifest], *keys: tuple[str, str]) -> list[Manifest]:
    return [m for m in manifests if (m["kind"], m["metadata"]["name"]) not in keys]


def _must_apply(backend: Backend, manifests: list[Manifest], mistake_: Mistake | None) -> None:
    if not manifests:
        return
    refusal = backend.apply(manifests)
    if refusal is not None and not (mistake_ is not None and mistake_.refused):
        raise SolutionError(f"the cell refused the reference in {backend.namespace}: {refusal}")


def _available(backend: Backend, name: str) -> int:
    deployment = backend.get("Deployment", name) or {}
    return int((deployment.get("status") or {}).get("availableReplicas") or 0)


def _replicas(manifests: list[Manifest], name: str) -> int:
    found = _pick(manifests, "Deployment", name)
    return int(found[0]["spec"].get("replicas", 1)) if found else 0


def _job_complete(backend: Backend, name: str) -> bool:
    job = backend.get("Job", name) or {}
    return any(c.get("type") == "Complete" and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def solve_exp1(backend: Backend, mistake_: Mistake | None, images: dict[str, str] | None,
               timeout: float) -> list[Manifest]:
    manifests = _manifests("exp1-orchestration", mistake_, images)
    _must_apply(backend, manifests, mistake_)
    backend.wait_for("Deployment web available", lambda: _available(backend, "web") >= _replicas(manifests, "web"),
                     timeout)
    backend.wait_for("Job crunch complete", lambda: _job_complete(backend, "crunch"), timeout)
    # The EndpointSlice controller adds ready pods a moment after the Deployment counts them available.
    backend.wait_for("Service web's endpoints ready",
                     lambda: len(ready_endpoints(backend.list("EndpointSlice")).get("web", ())) >= 3, timeout)
    return manifests


def production_in_use(backend: Backend) -> Resources:
    """What the namespace's workloads charge to the production band, computed as the operator does."""
    charges = []
    for kind in CHARGED_KINDS:
        for obj in backend.list(kind):
            charge = charge_of(obj)
            if charge is not None:
                charges.append(charge)
    return usage_by_band(charges)[Band.PRODUCTION]


def _band_quota(backend: Backend) -> Manifest:
    quotas = backend.list("BandQuota")
    if not quotas:
        raise SolutionError(f"no BandQuota in namespace {backend.namespace}")
    return quotas[0]


def _reported_production_use(backend: Backend) -> Resources:
    used = (_band_quota(backend).get("status") or {}).get("used") or {}
    return Resources.parse(used.get("production") or {})


def admitted_api_replicas(backend: Backend) -> int:
    """Task 3 of exp2 as the handout says: how many 500m/256Mi pods the remaining production quota admits."""
    quota, _errors = band_quota_of(_band_quota(backend))
    limit = quota.limit(Band.PRODUCTION) or ZERO
    used = _reported_production_use(backend)
    api = backend.get("Deployment", "api")  # re-applying: api's own charge is not "the rest"
    charge = charge_of(api) if api is not None else None
    own = charge.demand if charge is not None and charge.band is Band.PRODUCTION else ZERO
    return API_POD.how_many_fit(limit - (used - own))


def oversized_deployment() -> Manifest:
    path = experiences_dir() / "exp2-borg" / "demo" / "oversized.yaml"
    return yaml.safe_load(path.read_text())


def solve_exp2(backend: Backend, mistake_: Mistake | None, images: dict[str, str] | None,
               timeout: float) -> list[Manifest]:
    api_key, answers_key = ("Deployment", "api"), ("ConfigMap", "answers")
    first = _manifests("exp2-borg", mistake_, images)
    _must_apply(backend, _without(first, api_key, answers_key), mistake_)
    backend.wait_for("Alloc cache Reserved",
                     lambda: ((backend.get("Alloc", "cache") or {}).get("status") or {}).get("phase") == "Reserved",
                     timeout)
    if not backend.wait_for("BandQuota status.used current",
                            lambda: _reported_production_use(backend) == production_in_use(backend), timeout):
        raise SolutionError(f"BandQuota status.used.production in {backend.namespace} stays "
                             f"{_reported_production_use(backend)}, expected {production_in_use(backend)}")
    replicas = admitted_api_replicas(backend)

    def fill_replicas(manifests: list[Manifest]) -> None:
        find(manifests, *api_key)["spec"]["replicas"] = replicas

    second = _manifests("exp2-borg", mistake_, images, fill_replicas)
    _must_apply(backend, _pick(second, *api_key), mistake_)
    rejection = backend.apply([oversized_deployment()])
    if rejection is None:
        raise SolutionError("the handout's oversized Deployment was admitted: is the quota webhook registered?")

    def fill_all(manifests: list[Manifest]) -> None:
        fill_replicas(manifests)
        find(manifests, *answers_key)["data"]["quota-message"] = rejection

    final = _manifests("exp2-borg", mistake_, images, fill_all)
    _must_apply(backend, _pick(final, *answers_key), mistake_)
    if not (mistake_ is not None and mistake_.refused):
        backend.wait_for("Deployment api available", lambda: _available(backend, "api") >= replicas, timeout)
    backend.wait_for("Deployment cache available", lambda: _available(backend, "cache") >= 2, timeout)
    # Task 3's check reads status.used, which the operator updates after api's pods appear.
    backend.wait_for("BandQuota status.used current with api",
                     lambda: _reported_production_use(backend) == production_in_use(backend), timeout)
    return final


def _ready_pods(backend: Backend, app: str) -> list[Manifest]:
    return [p for p in backend.list("Pod")
            if (p["metadata"].get("labels") or {}).get("app") == app and not p["metadata"].get("deletionTimestamp")
            and any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (p.get("status") or {}).get("conditions") or [])]


def _budget_settled(backend: Backend, name: str) -> bool:
    pdb = backend.get("PodDisruptionBudget", name)
    if pdb is None:
        return True
    status = pdb.get("status") or {}
    # The disruption controller may have synced before every pod existed: it must count them all.
    pods = [p for p in backend.list("Pod") if (p["metadata"].get("labels") or {}).get("app") == name
            and not p["metadata"].get("deletionTimestamp")]
    return (status.get("observedGeneration") == pdb["metadata"].get("generation") and "disruptionsAllowed" in status
            and status.get("expectedPods") == len(pods))


def solve_exp3(backend: Backend, mistake_: Mistake | None, images: dict[str, str] | None,
               timeout: float) -> list[Manifest]:
    answers_key = ("ConfigMap", "answers")
    first = _manifests("exp3-failures", mistake_, images)
    _must_apply(backend, _without(first, answers_key), mistake_)
    if backend.get("Deployment", "ledger") is None:
        raise SolutionError(f"Deployment ledger missing in {backend.namespace}: apply the experience first")
    backend.wait_for("Deployment store available", lambda: _available(backend, "store") >= 4, timeout)
    backend.wait_for("ledger ready", lambda: bool(_ready_pods(backend, "ledger")), timeout)
    backend.wait_for("budgets observed", lambda: _budget_settled(backend, "ledger")
                     and _budget_settled(backend, "store"), timeout)
    ledger_pods = _ready_pods(backend, "ledger")
    if not ledger_pods:
        raise SolutionError(f"no ready ledger pod in {backend.namespace}")
    refusal = backend.evict(ledger_pods[0]["metadata"]["name"])

    def fill(manifests: list[Manifest]) -> None:
        find(manifests, *answers_key)["data"]["eviction-refused"] = refusal

    final = _manifests("exp3-failures", mistake_, images, fill)
    _must_apply(backend, _pick(final, *answers_key), mistake_)
    backend.wait_for("Deployment ledger available", lambda: _available(backend, "ledger") >= 1, timeout)
    return final


RECIPES: dict[str, Callable[[Backend, Mistake | None, dict[str, str] | None, float], list[Manifest]]] = {
    "exp1-orchestration": solve_exp1,
    "exp2-borg": solve_exp2,
    "exp3-failures": solve_exp3,
}


def apply_solution(experience: str, backend: Backend, *, mistake_name: str | None = None,
                   images: dict[str, str] | None = None, timeout: float = 90.0) -> list[Manifest]:
    """Apply the reference solution of experience (or one typical mistake of it); the manifests applied."""
    chosen = mistake(experience, mistake_name) if mistake_name else None
    return RECIPES[experience](backend, chosen, images, timeout)

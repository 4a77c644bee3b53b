"""Reference solutions and typical mistakes of the course's experiences, and how to apply them.

Every experience has a full-marks solution (`<experience>/solution.yaml` beside this file) and a
catalogue of typical mistakes, each of which must cost exactly its task's points. A recipe applies
a solution the way a student would, through a Backend: a real cell (tests/reference/apply.py, the
integration tests) or an in-memory one (the unit tests). What depends on the student's namespace
(how many replicas the remaining quota admits, the exact text of a refusal) is asked of the cell,
as the handout tells the student to.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
import sys
import tempfile
import zlib
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
EXPERIENCES = ("exp1-orchestration", "exp2-borg", "exp3-failures", "exp4-omega", "exp5-borg-evaluation")
Manifest = dict[str, Any]
API_POD = Resources.parse({"cpu": "500m", "memory": "256Mi"})
RACE_SCHEDULERS = {"race-a": "omega-a", "race-b": "omega-b"}  # exp4-omega's race: pod -> its scheduler
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
    # exp4-omega
    Mistake("exp4-omega", "steady-default-scheduler", 1, "Deployment steady without schedulerName (kube-scheduler)",
            lambda m: _template(m, "Deployment", "steady").pop("schedulerName")),
    Mistake("exp4-omega", "race-wrong-band", 2, "race-b in the production band",
            lambda m: find(m, "Pod", "race-b")["spec"].update(priorityClassName="production")),
    Mistake("exp4-omega", "loser-as-scheduler", 3, "answers names the losing scheduler, not its pod",
            lambda m: _answers(m).update(loser=RACE_SCHEDULERS.get(_answers(m)["loser"], ""))),
    Mistake("exp4-omega", "ledger-sees-kube-scheduler", 4, "answers says the ledger refuses kube-scheduler's pods",
            lambda m: _answers(m).update({"kube-scheduler-conflict": "refused-by-ledger"})),
    Mistake("exp4-omega", "coarse-retry", 5, "answers says the loser kept its node by coarse-grained detection",
            lambda m: _answers(m).update({"why-same-node": "coarse-grained"})),
    # exp5-borg-evaluation
    Mistake("exp5-borg-evaluation", "prod-cell-as-p90", 1, "shared-p90 read off the prod cell of -e segregate",
            lambda m: _compaction(m).update({"shared-p90": str(_experiment("segregate")["parts"][0]["p90"])})),
    Mistake("exp5-borg-evaluation", "segregation-wrong-side", 2, "segregate-vs-borg on the wrong side of 20-30 %",
            lambda m: _compaction(m).update({"segregate-vs-borg": "above" if _compaction(m)["segregate-vs-borg"]
                                             != "above" else "below"})),
    Mistake("exp5-borg-evaluation", "users-in-machines", 3, "users-overhead given in machines, not percent",
            lambda m: _compaction(m).update({"users-overhead": str(
                _experiment("users")["alternativeP90"] - _lab_run()["baseline"]["p90"])})),
    Mistake("exp5-borg-evaluation", "menu-run-with-jitter", 4, "powers-of-two-overhead-menu from the jittered run",
            lambda m: _compaction(m).update({"powers-of-two-overhead-menu": _compaction(m)["powers-of-two-overhead"]})),
    Mistake("exp5-borg-evaluation", "segregation-blamed-on-quota", 5, "segregation-cost answered quota",
            lambda m: _compaction(m).update({"segregation-cost": "quota"})),
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


def _answers(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = find(manifests, "ConfigMap", "answers")["data"]
    return data


def _race_node(backend: Backend) -> str:
    """A node any pod may use (no taint that keeps pods off, not cordoned); the class's races spread
    over the nodes by namespace, so that most pairs race only each other."""
    free = sorted(n["metadata"]["name"] for n in backend.list("Node")
                  if not (n.get("spec") or {}).get("unschedulable")
                  and not any(t.get("effect") in ("NoSchedule", "NoExecute")
                              for t in (n.get("spec") or {}).get("taints") or []))
    if not free:
        raise SolutionError("no node without taints to race on")
    return free[zlib.crc32(backend.namespace.encode()) % len(free)]


def _events(backend: Backend, pod: Manifest | None, reason: str) -> list[Manifest]:
    uid = ((pod or {}).get("metadata") or {}).get("uid")
    return [e for e in backend.list("Event") if e.get("reason") == reason
            and (e.get("involvedObject") or {}).get("uid") == uid]


def _placed_by_omega(backend: Backend, name: str) -> bool:
    pod = backend.get("Pod", name)
    return bool(pod and (pod.get("spec") or {}).get("nodeName") and _events(backend, pod, "Scheduled"))


def solve_exp4(backend: Backend, mistake_: Mistake | None, images: dict[str, str] | None,
               timeout: float) -> list[Manifest]:
    """steady first; once it runs, both race pods in one apply (both schedulers idle for this namespace,
    so both copy the cell before either commits); then the answers, read from the race pods' Events."""
    node = _race_node(backend)

    def on_node(manifests: list[Manifest]) -> None:
        for name in RACE_SCHEDULERS:
            find(manifests, "Pod", name)["spec"]["nodeSelector"]["kubernetes.io/hostname"] = node

    first = _manifests("exp4-omega", mistake_, images, on_node)
    _must_apply(backend, _pick(first, "Deployment", "steady"), mistake_)
    backend.wait_for("Deployment steady available", lambda: _available(backend, "steady") >= 2, timeout)
    _must_apply(backend, [*_pick(first, "Pod", "race-a"), *_pick(first, "Pod", "race-b")], mistake_)
    backend.wait_for("race-a and race-b placed", lambda: all(_placed_by_omega(backend, n) for n in RACE_SCHEDULERS),
                     timeout)
    pods = {name: backend.get("Pod", name) for name in RACE_SCHEDULERS}
    losers = [name for name, pod in pods.items() if _events(backend, pod, "OmegaConflict")]
    if not losers:
        raise SolutionError(f"{backend.namespace}: omega-a and omega-b did not conflict over {node}: are both "
                            "running, with a decision time?")
    loser = losers[0]
    placed = " ".join(e.get("message") or "" for e in _events(backend, pods[loser], "Scheduled"))
    attempt = re.search(r"\battempt (\d+)\b", placed)
    if attempt is None:
        raise SolutionError(f"{backend.namespace}: {loser}'s Scheduled Event names no attempt: {placed!r}")

    def fill(manifests: list[Manifest]) -> None:
        on_node(manifests)
        _answers(manifests).update({"loser": loser, "loser-attempts": attempt.group(1)})

    final = _manifests("exp4-omega", mistake_, images, fill)
    _must_apply(backend, _pick(final, "ConfigMap", "answers"), mistake_)
    return final


def lab_command(experience: str = "exp5-borg-evaluation") -> list[str]:
    """The handout's compaction, as the experience's ConfigMap gives it to students (key lab-command)."""
    kustomization = yaml.safe_load((experiences_dir() / experience / "kustomization.yaml").read_text())
    literals = [entry for generator in kustomization.get("configMapGenerator", [])
                for entry in generator.get("literals", [])]
    command = next(entry.partition("=")[2] for entry in literals if entry.startswith("lab-command="))
    return shlex.split(command)


@functools.cache
def _lab_run(*extra: str) -> dict[str, Any]:
    """`cell sim compact` as the handout has students run it (its --json summary), once per session."""
    command = lab_command()
    assert command[:3] == ["cell", "sim", "compact"], command
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-m", "cell.cli", *command[1:], *extra, "--json", "--out", out],
                                capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise SolutionError(f"{' '.join(command)} {' '.join(extra)} failed: {result.stderr.strip()}")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _experiment(name: str) -> dict[str, Any]:
    return next(e for e in _lab_run("-e", "all")["experiments"] if e["experiment"] == name)


def _compaction(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = find(manifests, "ConfigMap", "compaction")["data"]
    return data


def solve_exp5(backend: Backend, mistake_: Mistake | None, images: dict[str, str] | None,
               timeout: float) -> list[Manifest]:
    everything = _lab_run("-e", "all")
    menu = _lab_run("-e", "powers-of-two", "--jitter", "0")
    segregate = _experiment("segregate")
    low, high = 20.0, 30.0  # Borg's range, as the handout gives it

    def fill(manifests: list[Manifest]) -> None:
        overhead = float(segregate["overheadPercent"])
        _compaction(manifests).update({
            "shared-p90": str(everything["baseline"]["p90"]),
            "shared-trials": ",".join(str(size) for size in everything["baseline"]["sizes"]),
            "segregate-p90": str(segregate["alternativeP90"]),
            "segregate-overhead": str(overhead),
            "segregate-vs-borg": "below" if overhead < low else "above" if overhead > high else "within",
            "users-largest": _experiment("users")["parts"][0]["label"].removeprefix("cell of "),
            "users-overhead": str(_experiment("users")["overheadPercent"]),
            "powers-of-two-overhead": str(_experiment("powers-of-two")["overheadPercent"]),
            "buckets-overhead": str(_experiment("buckets")["overheadPercent"]),
            "powers-of-two-overhead-menu": str(menu["experiments"][0]["overheadPercent"]),
        })

    manifests = _manifests("exp5-borg-evaluation", mistake_, images, fill)
    _must_apply(backend, manifests, mistake_)
    return manifests


RECIPES: dict[str, Callable[[Backend, Mistake | None, dict[str, str] | None, float], list[Manifest]]] = {
    "exp1-orchestration": solve_exp1,
    "exp2-borg": solve_exp2,
    "exp3-failures": solve_exp3,
    "exp4-omega": solve_exp4,
    "exp5-borg-evaluation": solve_exp5,
}


def apply_solution(experience: str, backend: Backend, *, mistake_name: str | None = None,
                   images: dict[str, str] | None = None, timeout: float = 90.0) -> list[Manifest]:
    """Apply the reference solution of experience (or one typical mistake of it); the manifests applied."""
    chosen = mistake(experience, mistake_name) if mistake_name else None
    return RECIPES[experience](backend, chosen, images, timeout)

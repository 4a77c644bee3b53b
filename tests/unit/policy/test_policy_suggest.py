"""policy.suggest: what would let a job (or a pending pod) in; every suggestion, applied, is admitted and placed.

The check of a suggestion here is the one `suggest` uses (`judge`: admit_workload + the scheduler's pass),
applied to the manifest (or the BandQuota) the suggestion's JSON patch changes; the properties at the
end hold that, and the "smallest" part (one unit more fails), over generated cells and jobs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.model import ALLOC_LABEL, CellSnapshot
from scheduler_ext.policy.quota import BandQuota, band_quota_of, bands_manifest
from scheduler_ext.policy.resources import Resources, format_cpu
from scheduler_ext.policy.suggest import (
    QuotaView,
    apply_patch,
    judge,
    largest_passing,
    smallest_passing,
    suggest,
    suggest_pod,
)
from scheduler_ext.policy.why import Suggestion, WhyRecord
from scheduler_ext.policy.workloads import ObjectRef, workload_of
from tests.unit.policy.policy_builders import BATCH, BEST_EFFORT, alloc, cell, node, pod, res

GI = 2**30


def deployment(name: str = "web", replicas: int = 3, cpu: str = "1", memory: str = "512Mi",
               priority_class: str | None = "production", labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "web",
                                            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "alice"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name, **(labels or {})}}, "spec": spec}}}


def quota(production: tuple[str, str] = ("2", "2Gi"), batch: tuple[str, str] = ("4", "4Gi")) -> BandQuota:
    return BandQuota("alice", "quota", {Band.PRODUCTION: res(*production), Band.BATCH: res(*batch)})


def view(band_quota: BandQuota | None = None, workloads: list[dict[str, Any]] = ()) -> QuotaView:  # type: ignore[assignment]
    parsed = {w.ref: w for w in (workload_of(m) for m in workloads) if w is not None}
    return QuotaView("alice", parsed, band_quota if band_quota is not None else quota(), (), {},
                     Resources(8000, 32 * GI))


def two_nodes() -> CellSnapshot:
    return cell(node("node-1", cpu="4", memory="8Gi"),
                node("node-2", cpu="4", memory="8Gi", pods=(pod("filler", cpu="3", priority=BATCH, namespace="bob"),)))


def applied(suggestion: Suggestion, manifest: dict[str, Any],
            quota_view: QuotaView) -> tuple[dict[str, Any], QuotaView]:
    """The manifest and the namespace after the suggestion: its patch on its target."""
    if suggestion.kind != "quota":
        return apply_patch(manifest, suggestion.patch), quota_view
    current = quota_view.quota or BandQuota("alice", "quota")
    stored = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "BandQuota",
              "metadata": {"namespace": current.namespace, "name": current.name},
              "spec": {"bands": bands_manifest(current.limits)}}
    new, errors = band_quota_of(apply_patch(stored, suggestion.patch))
    assert not errors
    return manifest, quota_view.with_quota(new)


def assert_every_suggestion_lets_it_in(record: WhyRecord, manifest: dict[str, Any], quota_view: QuotaView,
                                       snapshot: CellSnapshot) -> None:
    for suggestion in record.suggestions:
        changed, changed_view = applied(suggestion, manifest, quota_view)
        verdict = judge(changed, changed_view, snapshot)
        assert verdict.ok, (suggestion.text, verdict.decision.reasons, verdict.placement)
        assert set(suggestion.nodes) == set(verdict.placement.nodes)


# --- a job quota refuses ---------------------------------------------------------------------------------

def test_a_job_over_quota_gets_fewer_replicas_smaller_requests_another_band_and_more_quota() -> None:
    manifest, quota_view, snapshot = deployment(), view(), two_nodes()
    record = suggest(manifest, quota_view, snapshot)
    assert record.job == "Deployment alice/web" and record.admitted is False
    assert record.refusals == ("BandQuota alice/quota: band production needs cpu 3, 0 in use, limit 2",)
    assert all(p.node for p in record.placement) and len(record.placement) == 3
    changes: dict[str, list[dict[str, Any]]] = {s.kind: [] for s in record.suggestions}
    for s in record.suggestions:
        changes[s.kind].append(dict(s.change))
    assert changes["replicas"] == [{"replicas": 2}]
    assert changes["requests"] == [{"requests": {"cpu": "666m"}}]  # 3 x 666m <= 2, 3 x 667m > 2
    assert changes["band"] == [{"priorityClassName": "batch"}, {"priorityClassName": "best-effort"}]
    assert changes["quota"] == [{"bandQuota": {"band": "production", "cpu": "3", "memory": "2Gi"}}]
    assert "alloc" not in changes and "preempt" not in changes
    assert_every_suggestion_lets_it_in(record, manifest, quota_view, snapshot)


def test_the_text_and_json_say_admission_placement_and_suggestions() -> None:
    record = suggest(deployment(), view(), two_nodes())
    text = record.text()
    assert "Deployment alice/web: refused by quota" in text
    assert "placement: 3 of 3 pod(s) placed" in text
    assert "would let it in: replicas 2 (from 3)" in text
    data = json.loads(json.dumps(record.to_json()))
    assert data["admitted"] is False and data["job"] == "Deployment alice/web"
    replicas = next(s for s in data["suggestions"] if s["kind"] == "replicas")
    assert replicas["patch"] == [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    assert replicas["target"] == "Deployment alice/web"
    assert WhyRecord.from_json(data).to_json() == data


def test_a_job_that_gets_in_needs_no_suggestion() -> None:
    record = suggest(deployment(replicas=2), view(), two_nodes())
    assert record.admitted is True and record.refusals == () and record.suggestions == ()
    assert [p.node is not None for p in record.placement] == [True, True]


def test_use_already_in_the_namespace_counts() -> None:
    running = deployment("api", replicas=1, cpu="1")
    record = suggest(deployment(replicas=2), view(workloads=[running]), two_nodes())
    assert record.admitted is False
    assert {s.kind: dict(s.change) for s in record.suggestions}["replicas"] == {"replicas": 1}


# --- a job the cell cannot place ----------------------------------------------------------------------------

def test_a_job_admitted_but_too_big_for_the_cell_gets_fewer_replicas_and_smaller_requests() -> None:
    snapshot = cell(node("node-1", cpu="8", memory="32Gi"))
    manifest = deployment(replicas=3, cpu="3", priority_class="batch")
    quota_view = view(quota(batch=("16", "16Gi")))
    record = suggest(manifest, quota_view, snapshot)
    assert record.admitted is True
    assert [p.node for p in record.placement] == ["node-1", "node-1", None]
    assert "cpu 3 > 2 free" in record.text()  # the stuck pod's reasons, node by node
    changes = {s.kind: dict(s.change) for s in record.suggestions}
    assert changes == {"replicas": {"replicas": 2}, "requests": {"requests": {"cpu": "2666m"}}}
    assert_every_suggestion_lets_it_in(record, manifest, quota_view, snapshot)


def test_placement_preempts_lower_bands_as_the_cell_would_and_says_whom() -> None:
    fillers = tuple(pod(f"b{i}", cpu="2", priority=BATCH, namespace="bob") for i in range(4))
    snapshot = cell(node("node-1", cpu="8", memory="32Gi", pods=fillers))
    record = suggest(deployment(replicas=2, cpu="1"), view(), snapshot)
    assert record.admitted is True and record.suggestions == ()
    victims = [v for p in record.placement for v in p.victims]
    assert len(victims) == 1 and victims[0].startswith("bob/b")  # one batch pod makes room for both
    assert f"preempting 1 pod(s): {victims[0]}" in record.text()


def test_a_band_change_that_needs_preemption_lists_the_victims() -> None:
    fillers = tuple(pod(f"be{i}", cpu="2", priority=BEST_EFFORT, namespace="bob") for i in range(4))
    snapshot = cell(node("node-1", cpu="8", memory="32Gi", pods=fillers))
    manifest = deployment(replicas=1, cpu="2", priority_class=None)  # best-effort itself: no one to preempt
    quota_view = view()
    record = suggest(manifest, quota_view, snapshot)
    band = {s.change["priorityClassName"]: s for s in record.suggestions if s.kind == "band"}
    assert set(band) == {"batch", "production"}
    victims = band["batch"].victims
    assert len(victims) == 1 and f"preempts 1 pod(s): {victims[0]}" in band["batch"].text
    assert_every_suggestion_lets_it_in(record, manifest, quota_view, snapshot)


def test_an_alloc_with_room_is_suggested_and_membership_takes_the_charge() -> None:
    alloc_manifest = {"apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc",
                      "metadata": {"name": "cache", "namespace": "alice"},
                      "spec": {"priorityClassName": "production", "count": 1,
                               "resources": {"cpu": "2", "memory": "2Gi"}},
                      "status": {"instances": [{"index": 0, "node": "node-1"}]}}
    snapshot = cell(node("node-1", cpu="4", memory="8Gi"), node("node-2", cpu="4", memory="8Gi"),
                    allocs=(alloc("cache", cpu="2", memory="2Gi", nodes=("node-1",)),))
    quota_view = view(quota(production=("2", "2Gi")), [alloc_manifest])
    manifest = deployment(replicas=2, cpu="500m", memory="256Mi")
    record = suggest(manifest, quota_view, snapshot)
    assert record.admitted is False  # the Alloc already takes the band's whole quota
    member = next(s for s in record.suggestions if s.kind == "alloc")
    assert member.change == {"alloc": "cache"} and member.nodes == ("node-1",)
    assert apply_patch(manifest, member.patch)["spec"]["template"]["metadata"]["labels"][ALLOC_LABEL] == "cache"
    assert_every_suggestion_lets_it_in(record, manifest, quota_view, snapshot)


def test_a_job_suggests_parallelism() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "crunch", "namespace": "alice"},
           "spec": {"parallelism": 6, "completions": 12, "template": {"spec": {
               "priorityClassName": "batch", "restartPolicy": "Never",
               "containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}}}
    quota_view = view()
    record = suggest(job, quota_view, two_nodes())
    replicas = next(s for s in record.suggestions if s.kind == "replicas")
    assert replicas.change == {"parallelism": 4}
    # Over quota in cpu and memory: neither alone is enough, both scaled together are.
    requests = next(s for s in record.suggestions if s.kind == "requests")
    assert requests.change == {"requests": {"cpu": "666m", "memory": "681Mi"}}
    # Requests defaulted from limits (as the API server will): the patch adds the requests.
    assert [op["path"] for op in requests.patch] == ["/spec/template/spec/containers/0/resources/requests",
                                                     "/spec/template/spec/containers/0/resources/requests/memory"]
    assert_every_suggestion_lets_it_in(record, job, quota_view, two_nodes())


def test_no_quota_object_means_zero_quota_and_the_suggestion_creates_the_band() -> None:
    record = suggest(deployment(replicas=1), view(BandQuota("alice", "quota", {})), two_nodes())
    quota_change = next(s for s in record.suggestions if s.kind == "quota")
    assert quota_change.change == {"bandQuota": {"band": "production", "cpu": "1", "memory": "512Mi"}}
    assert "(production is not in spec.bands)" in record.refusals[0]
    assert quota_change.patch == ({"op": "add", "path": "/spec/bands",
                                   "value": {"production": {"cpu": "1", "memory": "512Mi"}}},)


def test_prod_quota_the_cell_cannot_deliver_is_not_suggested() -> None:
    # Q6: other namespaces already hold all of the cell's prod quota.
    others = (BandQuota("bob", "quota", {Band.PRODUCTION: res("8", "16Gi")}),)
    quota_view = QuotaView("alice", {}, quota(), others, {}, Resources(8000, 32 * GI))
    record = suggest(deployment(), quota_view, two_nodes())
    assert "quota" not in {s.kind for s in record.suggestions}


def test_not_a_job_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a job"):
        suggest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, view(), two_nodes())


def test_an_existing_job_is_judged_without_its_own_pods_and_as_an_update() -> None:
    running = deployment(replicas=2)
    pods = tuple(pod(f"web-{i}", cpu="1", memory="512Mi") for i in range(2))
    labelled = tuple(type(p)(p.namespace, p.name, p.uid, p.priority, p.requests, {"app": "web"}, p.owner)
                     for p in pods)
    snapshot = cell(node("node-1", cpu="2", memory="8Gi", pods=labelled))
    record = suggest(deployment(replicas=2), view(workloads=[running]), snapshot)
    assert record.admitted is True and all(p.node == "node-1" for p in record.placement)


# --- a pending pod ------------------------------------------------------------------------------------------

def test_a_pending_pod_gets_preemption_smaller_requests_other_bands_and_allocs() -> None:
    # 8 cpu: a batch pod uses 5, a production alloc holds 2: 1 left for anyone else.
    snapshot = cell(node("node-1", cpu="8", memory="8Gi", pods=(pod("b", cpu="5", priority=BATCH, namespace="bob"),)),
                    allocs=(alloc("cache", cpu="2", memory="2Gi", nodes=("node-1",), count=1),))
    pending = pod("p", cpu="1500m", memory="1Gi", priority=BATCH)
    found = suggest_pod(pending, snapshot)
    kinds = [s.kind for s in found]
    assert "preempt" not in kinds  # batch may not preempt batch (R2)
    requests = next(s for s in found if s.kind == "requests")
    assert requests.change == {"requests": {"cpu": "1"}} and requests.nodes == ("node-1",)
    bands = {s.change["priorityClassName"]: s for s in found if s.kind == "band"}
    assert set(bands) == {"production", "monitoring"} and bands["production"].victims == ("bob/b",)
    assert next(s for s in found if s.kind == "alloc").change == {"alloc": "cache"}
    prod = pod("q", cpu="2", memory="1Gi")
    preempting = next(s for s in suggest_pod(prod, snapshot) if s.kind == "preempt")
    assert preempting.victims == ("bob/b",) and preempting.nodes == ("node-1",)


def test_a_pod_that_fits_needs_nothing() -> None:
    assert suggest_pod(pod("small", cpu="100m"), two_nodes()) == ()


# --- the searches -------------------------------------------------------------------------------------------

@given(st.integers(0, 200), st.integers(1, 60), st.integers(1, 60))
def test_largest_and_smallest_passing_find_a_boundary_whatever_the_predicate(seed: int, lo: int, width: int) -> None:
    hi = lo + width
    passing = {n for n in range(lo, hi + 1) if (n * 7919 + seed) % 3 != 0}

    def passes(n: int) -> bool:
        return n in passing

    best = largest_passing(lo, hi, passes)
    if lo not in passing:
        assert best is None
    else:
        assert best is not None and best in passing and (best + 1 == hi or best + 1 not in passing)
    failing_lo = lo - 1  # smallest_passing is given a lo that fails

    def passes_above(n: int) -> bool:
        return n != failing_lo and passes(n)

    least = smallest_passing(failing_lo, hi, passes_above)
    if hi not in passing:
        assert least is None
    else:
        assert least is not None and least in passing and (least - 1 == failing_lo or least - 1 not in passing)


# --- properties over generated cells and jobs ---------------------------------------------------------------

_BANDS = {"production": 800_000, "batch": 500_000}


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], QuotaView, CellSnapshot]:
    nodes = []
    for i in range(draw(st.integers(1, 3))):
        fillers = tuple(pod(f"f{i}-{k}", cpu=format_cpu(draw(st.integers(1, 4)) * 500), memory="1Gi",
                            priority=draw(st.sampled_from([BATCH, BEST_EFFORT, 800_000])), namespace="bob")
                        for k in range(draw(st.integers(0, 3))))
        nodes.append(node(f"node-{i + 1}", cpu=str(draw(st.integers(2, 8))), memory="16Gi", pods=fillers))
    limits = {band: res(format_cpu(draw(st.integers(0, 12)) * 250), f"{draw(st.integers(0, 8))}Gi")
              for band in (Band.PRODUCTION, Band.BATCH)}
    manifest = deployment(replicas=draw(st.integers(1, 6)), cpu=format_cpu(draw(st.integers(1, 30)) * 100),
                          memory=f"{draw(st.integers(1, 16)) * 256}Mi",
                          priority_class=draw(st.sampled_from(sorted(_BANDS))))
    return manifest, QuotaView("alice", {}, BandQuota("alice", "quota", limits), (), {}, Resources(8000, 16 * GI)), \
        cell(*nodes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_suggestion_applied_is_admitted_and_placed(case: tuple[dict[str, Any], QuotaView, CellSnapshot]) -> None:
    manifest, quota_view, snapshot = case
    record = suggest(manifest, quota_view, snapshot)
    if record.admitted and all(p.node for p in record.placement):
        assert record.suggestions == ()
    assert_every_suggestion_lets_it_in(record, manifest, quota_view, snapshot)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_each_suggestion_is_the_smallest_change(case: tuple[dict[str, Any], QuotaView, CellSnapshot]) -> None:
    manifest, quota_view, snapshot = case
    record = suggest(manifest, quota_view, snapshot)
    original = manifest["spec"]["replicas"]
    container = ["spec", "template", "spec", "containers", 0, "resources", "requests"]
    for s in record.suggestions:
        if s.kind == "replicas" and s.change["replicas"] + 1 < original:
            one_more = s.change["replicas"] + 1
            more = apply_patch(manifest, [{"op": "replace", "path": "/spec/replicas", "value": one_more}])
            assert not judge(more, quota_view, snapshot).ok
        elif s.kind == "requests" and set(s.change["requests"]) == {"cpu"}:
            cpu = Resources.parse({"cpu": s.change["requests"]["cpu"]}).cpu + 1
            if cpu < Resources.parse({"cpu": manifest["spec"]["template"]["spec"]["containers"][0]["resources"]
                                      ["requests"]["cpu"]}).cpu:
                path = "/" + "/".join(map(str, container)) + "/cpu"
                more = apply_patch(manifest, [{"op": "replace", "path": path, "value": format_cpu(cpu)}])
                assert not judge(more, quota_view, snapshot).ok
        elif s.kind == "quota":
            assert quota_view.quota is not None
            band = Band.from_label(s.change["bandQuota"]["band"])
            granted = res(s.change["bandQuota"]["cpu"], s.change["bandQuota"]["memory"])
            before = quota_view.quota.limits[band]
            # Each resource that grew: a milli-CPU (a Mi) less would not admit it.
            tighter = []
            if granted.cpu > before.cpu:
                tighter.append(Resources(granted.cpu - 1, granted.memory))
            if granted.memory > before.memory:
                tighter.append(Resources(granted.cpu, granted.memory - 2**20))
            for less in tighter:
                less_quota = BandQuota("alice", "quota", {**quota_view.quota.limits, band: less})
                assert not judge(manifest, quota_view.with_quota(less_quota), snapshot).decision.allowed


def test_a_ref_of_the_namespace_view_is_the_stored_version() -> None:
    quota_view = view(workloads=[deployment(replicas=1)])
    assert ObjectRef("Deployment", "alice", "web") in quota_view.workloads


def test_a_bare_pod_is_one_pod_and_a_finished_one_none() -> None:
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "namespace": "alice"},
            "spec": {"priorityClassName": "production",
                     "containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}]}}
    record = suggest(bare, view(), two_nodes())
    assert [p.pod for p in record.placement] == ["alice/solo"] and record.admitted is False
    assert "replicas" not in {s.kind for s in record.suggestions}  # a Pod has no replicas to lower
    assert {s.kind: dict(s.change) for s in record.suggestions}["requests"] == {"requests": {"cpu": "2"}}
    done = suggest({**bare, "status": {"phase": "Succeeded"}}, view(), two_nodes())
    assert done.placement == () and done.admitted is True and done.suggestions == ()

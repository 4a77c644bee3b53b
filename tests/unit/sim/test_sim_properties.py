"""Property tests: in every simulated outcome the band rules hold (R1/R2), quota is never exceeded
(Q1, A4), allocs are respected (A1, A2, spread), nodes are never overcommitted, no task is lost."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cell.sim.engine import SimOptions, SimResult, Techniques, simulate
from cell.sim.snapshot import SimCell
from cell.sim.workload import Workload
from scheduler_ext.policy.bands import PRIORITY_CLASSES, Band
from scheduler_ext.policy.resources import Resources
from tests.unit.sim.sim_builders import alloc, band_quota, job, nodes, running_pod, sim_cell, workload

BANDS = list(PRIORITY_CLASSES)
PROD_BANDS = {"monitoring", "production"}
CPUS = ["100m", "250m", "500m", "1", "2"]
NAMESPACES = ["alice", "bob", "carol"]  # carol has no BandQuota: unlimited


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SimCell, Workload, SimOptions]:
    node_count = draw(st.integers(1, 5))
    cpu = draw(st.sampled_from(["2", "4", "6"]))
    max_pods = draw(st.sampled_from([3, 110]))
    node_objs = nodes(node_count, cpu=cpu, memory="8Gi", pods=max_pods)
    free = {n["metadata"]["name"]: [Resources.parse({"cpu": cpu, "memory": "8Gi"}), max_pods] for n in node_objs}
    running = []
    for i in range(draw(st.integers(0, 16))):
        node = f"node-{draw(st.integers(1, node_count))}"
        size = draw(st.sampled_from(["500m", "1", "2"]))
        need = Resources.parse({"cpu": size, "memory": "1Gi"})
        if need.fits_in(free[node][0]) and free[node][1] > 0:  # the starting cell is a valid one
            free[node] = [free[node][0] - need, free[node][1] - 1]
            running.append(running_pod(f"old-{i}", node, band=draw(st.sampled_from(BANDS)), cpu=size,
                                       job=f"old-{i % 3}"))
    quotas = []
    for namespace in ("alice", "bob"):
        bands = {band: {"cpu": str(draw(st.integers(0, 8))), "memory": "64Gi"}
                 for band in draw(st.sets(st.sampled_from(["monitoring", "production", "batch"])))}
        quotas.append(band_quota(namespace, bands))
    allocs = []
    for i in range(draw(st.integers(0, 2))):
        allocs.append(alloc(f"a{i}", count=draw(st.integers(1, 3)), cpu=draw(st.sampled_from(["500m", "1", "2"])),
                            band=draw(st.sampled_from(["production", "batch"])),
                            namespace=draw(st.sampled_from(NAMESPACES)),
                            spread_by=draw(st.sampled_from([None, "topology.kubernetes.io/zone"]))))
    jobs = []
    for i in range(draw(st.integers(1, 6))):
        member_of = draw(st.sampled_from([None, *allocs, *allocs])) if allocs else None
        jobs.append(job(f"j{i}", draw(st.sampled_from(BANDS)), tasks=draw(st.integers(1, 6)),
                        cpu=draw(st.sampled_from(CPUS)), memory="256Mi",
                        namespace=member_of.namespace if member_of else draw(st.sampled_from(NAMESPACES)),
                        alloc=member_of.name if member_of else None))
    options = SimOptions(seed=draw(st.integers(0, 3)), enough_feasible=draw(st.sampled_from([1, 2, 100])),
                         techniques=Techniques(*draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))))
    return sim_cell(*node_objs, *running, *quotas), workload(*jobs, allocs=tuple(allocs)), options


def _check_bands(result: SimResult) -> None:
    for eviction in result.preemptions:
        both_prod = eviction.victim_band.label in PROD_BANDS and eviction.preemptor_band.label in PROD_BANDS
        assert not both_prod, f"R1 broken: {eviction}"
        assert eviction.victim_priority < eviction.preemptor_priority, f"R2 broken: {eviction}"


def _check_quota(cell: SimCell, load: Workload, result: SimResult) -> None:
    refused = {r.ref for r in result.rejections}
    charged: Counter[tuple[str, str]] = Counter()
    for spec in load.allocs:
        if f"Alloc {spec.key}" not in refused:
            charged[(spec.namespace, spec.band)] += Resources.parse(dict(spec.resources)).cpu * spec.count
    for spec in load.jobs:
        if f"Job {spec.key}" not in refused and not spec.alloc:  # members are charged through their alloc
            charged[(spec.namespace, spec.band)] += Resources.parse(dict(spec.requests)).cpu * spec.tasks
    for (namespace, label), cpu in charged.items():
        if namespace not in cell.quotas:
            continue  # no BandQuota, not managed: unlimited
        quota = cell.quotas[namespace]
        band = Band.from_label(label)
        limit = quota.limit(band) if quota is not None else None
        if band is Band.BEST_EFFORT and limit is None:
            continue  # Borg's free quota
        assert limit is not None and cpu <= limit.cpu, f"quota of {namespace}/{label} exceeded: {cpu} > {limit}"
        assert result.quota_use[namespace][band].cpu == cpu  # the simulation's books agree


def _check_allocs_and_nodes(result: SimResult) -> None:
    final = result.final
    for outcome in result.allocs:
        assert len(set(outcome.nodes)) == len(outcome.nodes), f"two instances of {outcome.key} share a node"
        info = final.allocs[outcome.key]
        if info.spread_by:
            domains = [final.nodes[n].labels.get(info.spread_by) for n in outcome.nodes]
            assert len(set(domains)) == len(domains), f"{outcome.key} not spread by {info.spread_by}"
    for node in final.nodes.values():
        assert len(node.pods) <= node.max_pods
        assert node.requested.fits_in(node.allocatable), f"{node.name} overcommitted"
        reserved_cpu = 0
        for info in final.allocs_on(node.name):
            members = sum(p.requests.cpu for p in node.pods if p.alloc == info.key)
            assert members <= info.resources.cpu, f"members of {info.key} overflow its instance on {node.name}"
            reserved_cpu += max(members, info.resources.cpu)
        outsiders = sum(p.requests.cpu for p in node.pods if p.alloc not in {a.key for a in final.allocs_on(node.name)})
        assert outsiders + reserved_cpu <= node.allocatable.cpu, f"reservations on {node.name} given away (A1)"
    for placement in result.placements.values():
        pod = next(p for p in final.nodes[placement.node].pods if p.key == placement.task)
        if pod.alloc is not None:
            assert placement.node in final.allocs[pod.alloc].nodes, f"{pod.key} outside its alloc (A2)"


def _check_conservation(load: Workload, result: SimResult) -> None:
    refused = {r.ref for r in result.rejections}
    submitted = {f"{j.namespace}/{j.name}-{i}" for j in load.jobs if f"Job {j.key}" not in refused
                 for i in range(j.tasks)}
    victims = {e.victim for e in result.preemptions}
    outcomes = [*result.placements, *(p.task for p in result.pending)]
    assert len(outcomes) == len(set(outcomes)), "a task both placed and pending"
    assert submitted <= set(outcomes) <= submitted | victims


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_simulated_outcome_keeps_the_rules(scenario: tuple[SimCell, Workload, SimOptions]) -> None:
    cell, load, options = scenario
    result = simulate(cell, load, options)
    event(f"preemptions: {'some' if result.preemptions else 'none'}")
    event(f"refused submissions: {'some' if result.rejections else 'none'}")
    members = [p for n in result.final.nodes.values() for p in n.pods if p.alloc and p.key in result.placements]
    event(f"alloc members placed: {'some' if members else 'none'}")
    _check_bands(result)
    _check_quota(cell, load, result)
    _check_allocs_and_nodes(result)
    _check_conservation(load, result)

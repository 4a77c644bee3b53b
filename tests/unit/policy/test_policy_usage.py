"""The books behind `cell top`: capacity, reservations and use by band and by node."""

from __future__ import annotations

from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.usage import cell_usage
from tests.unit.policy.policy_builders import BATCH, PROD, alloc, cell, node, pod, res


def test_cell_usage_by_band_and_node() -> None:
    snapshot = cell(
        node("node-10", cpu="4", memory="4Gi", pods=(pod("b", cpu="1", memory="1Gi", priority=BATCH),)),
        node("node-2", cpu="4", memory="4Gi", pods=(pod("m", cpu="500m", memory="256Mi", alloc="c"),)),
        allocs=(alloc("c", cpu="1", memory="1Gi", nodes=("node-2",)),),
    )
    usage = cell_usage(snapshot)
    assert usage.capacity == res("8", "8Gi")
    bands = {b.band: b for b in usage.bands}
    assert [b.band for b in usage.bands] == [Band.MONITORING, Band.PRODUCTION, Band.BATCH, Band.BEST_EFFORT]
    assert bands[Band.BATCH].requested == res("1", "1Gi") and bands[Band.BATCH].pods == 1
    assert bands[Band.PRODUCTION].reserved == res("1", "1Gi")
    assert bands[Band.PRODUCTION].in_allocs == res("500m", "256Mi")
    assert bands[Band.PRODUCTION].requested == res()
    assert [n.name for n in usage.nodes] == ["node-2", "node-10"]  # natural order
    node2 = usage.nodes[0]
    assert node2.reserved == res("1", "1Gi") and node2.free == res("3", "3Gi")
    assert node2.by_band[Band.PRODUCTION] == res("500m", "256Mi")
    assert usage.free == res("6", "6Gi")
    assert PROD  # the member above is production by default

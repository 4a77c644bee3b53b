"""What a simulation shows: console tables, CSV/JSON files and a PNG chart of utilisation by band.

Utilisation is the policy's own books (`usage.cell_usage`): pods' requests by band, alloc
reservations charged to their band (A4), members' use counted inside their alloc.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cell.sim.engine import SimResult
from scheduler_ext.policy.bands import Band
from scheduler_ext.policy.resources import Resources, format_cpu, format_memory
from scheduler_ext.policy.usage import CellUsage, NodeUsage

SHOWN_ROWS = 20
SHORT = {Band.MONITORING: "mon", Band.PRODUCTION: "prod", Band.BATCH: "batch", Band.BEST_EFFORT: "b-e"}


def _res(value: Resources) -> str:
    return f"{format_cpu(value.cpu)} / {format_memory(value.memory)}"


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def band_shares(usage: CellUsage) -> dict[Band, tuple[float, float]]:
    """Per band: (% of cell cpu, % of cell memory) committed (pods outside allocs + reservations)."""
    cap = usage.capacity
    return {b.band: (_pct(b.requested.cpu + b.reserved.cpu, cap.cpu),
                     _pct(b.requested.memory + b.reserved.memory, cap.memory)) for b in usage.bands}


def summary(result: SimResult) -> dict[str, Any]:
    """The JSON summary (summary.json; `cell sim run --json`)."""
    usage = result.usage
    stats = result.stats
    shares = band_shares(usage)
    bands = {b.band.label: {"pods": b.pods, "requested": b.requested.to_dict(), "reserved": b.reserved.to_dict(),
                            "inAllocs": b.in_allocs.to_dict(),
                            "cpuPercent": round(shares[b.band][0], 2), "memoryPercent": round(shares[b.band][1], 2)}
             for b in usage.bands}
    return {
        "cell": {"nodes": len(usage.nodes), "capacity": usage.capacity.to_dict(), "free": usage.free.to_dict()},
        "techniques": result.options.techniques.describe(),
        "seed": result.options.seed,
        "tasks": {"submitted": stats.tasks_submitted, "requeued": stats.requeued, "placed": len(result.placements),
                  "pending": len(result.pending), "preemptions": len(result.preemptions),
                  "rejectedSubmissions": len(result.rejections)},
        "bands": bands,
        "allocs": [{"alloc": a.key, "band": a.band.label, "phase": a.phase, "nodes": list(a.nodes),
                    "message": a.message} for a in result.allocs],
        "rejections": [{"ref": r.ref, "band": r.band.label, "reason": r.reason} for r in result.rejections],
        "pendingByJob": _pending_by_job(result),
        "preemptionsByBand": {f"{v} by {p}": n for (v, p), n in sorted(Counter(
            (e.victim_band.label, e.preemptor_band.label) for e in result.preemptions).items())},
        "stats": {"seconds": round(stats.seconds, 3), "decisions": stats.decisions,
                  "nodesExamined": stats.nodes_examined, "preemptionSearches": stats.preemption_searches,
                  "memoHits": stats.memo_hits, "cacheHits": stats.cache_hits, "cacheMisses": stats.cache_misses},
    }


def _pending_by_job(result: SimResult) -> list[dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    for task in result.pending:
        entry = jobs.setdefault(task.job, {"job": task.job, "band": task.band.label, "tasks": 0,
                                           "reason": task.reason})
        entry["tasks"] += 1
    return list(jobs.values())


# --- console -------------------------------------------------------------------------------------

def render(result: SimResult, console: Console, shown: int = SHOWN_ROWS) -> None:
    usage = result.usage
    stats = result.stats
    cap = usage.capacity
    console.print(
        f"Fauxmaster: {len(usage.nodes)} node(s) (cpu {format_cpu(cap.cpu)}, memory {format_memory(cap.memory)}); "
        f"{stats.tasks_submitted} task(s) submitted"
        + (f" (+{stats.requeued} evicted, requeued)" if stats.requeued else "")
        + f", {len(result.placements)} placed, {len(result.pending)} pending, "
        f"{len(result.preemptions)} preemption(s), {len(result.rejections)} submission(s) refused; "
        f"{stats.seconds:.2f} s, {result.options.techniques.describe()}", highlight=False)

    shares = band_shares(usage)
    bands = Table(title="Utilisation by band", title_justify="left")
    for column in ("band", "prod", "pods", "requested", "reserved", "in allocs", "cpu", "memory"):
        bands.add_column(column, justify="left" if column in ("band", "prod") else "right")
    for band in usage.bands:
        cpu, memory = shares[band.band]
        bands.add_row(band.band.label, "yes" if band.band.is_prod else "no", str(band.pods), _res(band.requested),
                      _res(band.reserved), _res(band.in_allocs), f"{cpu:.1f}%", f"{memory:.1f}%")
    console.print(bands)

    nodes = sorted(usage.nodes, key=lambda n: -_pct(n.allocatable.cpu - n.free.cpu, n.allocatable.cpu))
    table = Table(title=f"CPU by node (busiest {min(shown, len(nodes))} of {len(nodes)}; all in nodes.csv)"
                  if len(nodes) > shown else "CPU by node", title_justify="left")
    order = sorted(Band, reverse=True)
    for column in ("node", "zone", "rack", "pods", "cpu", "reserved", *(SHORT[b] for b in order), "used"):
        table.add_column(column, justify="left" if column in ("node", "zone", "rack") else "right")
    for node in nodes[:shown]:
        table.add_row(node.name, node.zone or "-", node.rack or "-", f"{node.pods}/{node.max_pods}",
                      format_cpu(node.allocatable.cpu), format_cpu(node.reserved.cpu),
                      *(format_cpu(node.by_band[b].cpu) for b in order),
                      f"{_pct(node.allocatable.cpu - node.free.cpu, node.allocatable.cpu):.0f}%")
    console.print(table)

    if result.allocs:
        allocs = Table(title="Allocs", title_justify="left")
        for column in ("alloc", "band", "phase", "nodes", "message"):
            allocs.add_column(column)
        for a in result.allocs:
            allocs.add_row(a.key, a.band.label, a.phase, ", ".join(a.nodes) or "-", a.message or "")
        console.print(allocs)
    if result.rejections:
        console.print("[bold]Refused at submission (quota):[/]")
        for r in result.rejections:
            console.print(f"  {r.ref}: {r.reason}", highlight=False, soft_wrap=True)
    pending = _pending_by_job(result)
    if pending:
        console.print(f"[bold]Pending ({len(result.pending)} task(s) of {len(pending)} job(s)):[/]")
        for entry in pending[:shown]:
            console.print(f"  {entry['job']} ({entry['band']}): {entry['tasks']} task(s): {entry['reason']}",
                          highlight=False, soft_wrap=True)
        if len(pending) > shown:
            console.print(f"  ... and {len(pending) - shown} more job(s) (pending.csv)")
    if result.preemptions:
        console.print(f"[bold]Preempted ({len(result.preemptions)}):[/]")
        for event in result.preemptions[:shown]:
            console.print(f"  {event.victim}: {event.reason}", highlight=False, soft_wrap=True)
        if len(result.preemptions) > shown:
            console.print(f"  ... and {len(result.preemptions) - shown} more (preemptions.csv)")


# --- files ---------------------------------------------------------------------------------------

def write_outputs(result: SimResult, out_dir: Path) -> list[Path]:
    """placements.csv, pending.csv, preemptions.csv, nodes.csv, summary.json and utilisation.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def table(name: str, header: list[str], rows: Any) -> None:
        path = out_dir / name
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        written.append(path)

    table("placements.csv", ["task", "job", "band", "node"],
          ((p.task, p.job, p.band.label, p.node) for p in result.placements.values()))
    table("pending.csv", ["task", "job", "band", "reason"],
          ((p.task, p.job, p.band.label, p.reason) for p in result.pending))
    table("preemptions.csv", ["victim", "victim_band", "preemptor", "preemptor_band", "node", "reason"],
          ((e.victim, e.victim_band.label, e.preemptor, e.preemptor_band.label, e.node, e.reason)
           for e in result.preemptions))
    bands = sorted(Band, reverse=True)
    table("nodes.csv", ["node", "zone", "rack", "pods", "max_pods", "cpu_allocatable_m", "memory_allocatable",
                        "cpu_reserved_m", "cpu_free_m", "memory_free", *(f"cpu_m_{b.label}" for b in bands)],
          ((n.name, n.zone, n.rack, n.pods, n.max_pods, n.allocatable.cpu, n.allocatable.memory, n.reserved.cpu,
            n.free.cpu, n.free.memory, *(n.by_band[b].cpu for b in bands)) for n in result.usage.nodes))
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary(result), indent=2) + "\n")
    written.append(summary_path)
    written.append(write_chart(result.usage, out_dir / "utilisation.png"))
    return written


BAND_COLOURS = {Band.MONITORING: "#7b3294", Band.PRODUCTION: "#d7191c", Band.BATCH: "#2c7bb6",
                Band.BEST_EFFORT: "#abd9e9"}
IDLE_COLOUR = "#bdbdbd"


def idle_reserved_cpu(node: NodeUsage) -> int:
    """CPU held by alloc instances on the node that no member uses (A1: nobody else gets it)."""
    return max(0, node.allocatable.cpu - node.free.cpu - sum(r.cpu for r in node.by_band.values()))


def write_chart(usage: CellUsage, path: Path) -> Path:
    """Two panels: the cell's cpu and memory committed per band; each node's cpu by band, busiest first."""
    # matplotlib is heavy (about a second): only a run that draws the chart imports it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = sorted(Band, reverse=True)
    shares = band_shares(usage)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 2.2]})
    width = 0.38
    xs = range(len(bands))
    left.bar([x - width / 2 for x in xs], [shares[b][0] for b in bands], width, label="cpu",
             color=[BAND_COLOURS[b] for b in bands])
    left.bar([x + width / 2 for x in xs], [shares[b][1] for b in bands], width, label="memory",
             color=[BAND_COLOURS[b] for b in bands], alpha=0.5, hatch="//")
    left.set_xticks(list(xs), [b.label for b in bands])
    left.set_ylabel("% of cell capacity (requests + alloc reservations)")
    left.set_title("Cell utilisation by band (solid: cpu, hatched: memory)")
    left.set_ylim(0, max(100.0, *(max(s) for s in shares.values())) * 1.05)

    nodes = sorted(usage.nodes, key=lambda n: -(n.allocatable.cpu - n.free.cpu) / max(n.allocatable.cpu, 1))
    series = [[_pct(n.by_band[b].cpu, n.allocatable.cpu) for n in nodes] for b in bands]
    series.append([_pct(idle_reserved_cpu(n), n.allocatable.cpu) for n in nodes])
    colours = [*(BAND_COLOURS[b] for b in bands), IDLE_COLOUR]
    labels = [*(b.label for b in bands), "alloc reserved, unused"]
    positions = list(range(len(nodes)))
    if len(nodes) <= 60:
        bottom = [0.0] * len(nodes)
        for colour, label, values in zip(colours, labels, series, strict=True):
            right.bar(positions, values, bottom=bottom, color=colour, label=label, width=0.85)
            bottom = [a + b for a, b in zip(bottom, values, strict=True)]
        right.set_xticks(positions, [n.name for n in nodes], rotation=90, fontsize=7)
    else:
        right.stackplot(positions, *series, colors=colours, labels=labels, step="mid")
        right.set_xlabel(f"{len(nodes)} nodes, busiest first")
    right.set_ylim(0, 105)
    right.set_ylabel("% of node cpu requested")
    right.set_title("Per-node cpu by band")
    right.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

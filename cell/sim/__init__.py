"""`cell sim`, the Fauxmaster (Borg §3.4): the policy core run offline over a cell snapshot and a workload.

snapshot.py  the starting cell: a YAML checkpoint, a compact `kind: Cell`, or `live`
workload.py  jobs and alloc sets to submit (`kind: Workload`)
generate.py  synthetic cells and workloads with Borg-like shapes
engine.py    the pass: quota admission, alloc placement, scheduling, preemption
report.py    console tables, CSV/JSON files, the utilisation chart
cli.py       the `cell sim` command group
"""

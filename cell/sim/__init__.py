"""`cell sim`, the Fauxmaster (Borg §3.4): the policy core run offline over a cell snapshot and a workload.

snapshot.py  the starting cell: a YAML checkpoint, a compact `kind: Cell`, or `live`
workload.py  jobs and alloc sets to submit (`kind: Workload`)
generate.py  synthetic cells and workloads with Borg-like shapes
engine.py    the pass: quota admission, alloc placement, scheduling, preemption
report.py    console tables, CSV/JSON files, the utilisation chart
omega.py     Omega's shared-state scheduling: schedulers, transactions, conflicts (`cell sim omega`)
omega_report.py  its sweeps, CSV and charts
compact.py   Borg §5's cell compaction and its experiments (`cell sim compact`)
compact_report.py  its CSV and charts
cli.py       the `cell sim` command group
"""

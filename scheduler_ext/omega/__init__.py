"""Cell's live Omega scheduler: a second scheduler beside kube-scheduler, for its own
`schedulerName`, committing each placement as an optimistic transaction on a per-node ledger
(`ledger`), saying what happened in Events (`records`) and metrics (`scheduler`). The same idea
offline, in simulated time, is `cell sim omega` (cell/sim/omega.py); docs/omega.md says what the
live one detects and what it cannot.
"""

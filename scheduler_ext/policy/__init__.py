"""The Borg policy core: pure functions and plain data; no I/O, no Kubernetes client.

Adapters (extender, webhook, operator, CLI, Fauxmaster) import from here and never
re-implement a rule.
"""

"""The local cell: a real Kubernetes control plane on this machine, with KWOK nodes and Cell's extensions.

supervisor.py  one cell's handle: its record, its components' processes (start, stop, health), its nodes
topology.py    what the cell is made of: components' command lines, KWOK nodes, the scheduler's configuration
lifecycle.py   `cell up`, `cell down`, `cell status`; a real node joins through the `NodeAgent` interface
"""

"""This machine as a real node of the local cell (`cell up --real-node`): containers really run.

config.py  the node's configuration, as kubeadm would write it (pure; unit tested)
host.py    what the node changes on the machine: recorded before, restored after
claim.py   the machine-wide claim (one real node per machine) and the baseline beside it
node.py    the node itself: add and remove; `RealNode` is the local cell's NodeAgent for it
"""

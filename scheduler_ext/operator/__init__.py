"""Cell's operator (kopf): keeps derived state current, level-triggered.

One module per resource it reasons about: charges.py indexes what every workload charges to quota,
bandquota.py keeps BandQuota status.used equal to their sum (Q7). Handlers are thin: they call the
pure policy core and patch the result. Importing a module registers its handlers with kopf.
"""

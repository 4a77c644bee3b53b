"""Cell's Borg extensions for Kubernetes: the pure policy core and its thin adapters."""

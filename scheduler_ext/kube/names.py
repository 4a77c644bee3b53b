"""Where Cell's objects live in the API, and the labels and finalizers Cell puts on objects.

Written once here. The label keys the policy core itself interprets (an alloc's members, racks,
zones) are defined in the policy (it may not import this package) and re-exported from here, so
adapters and `cell` take every name from this one module.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler_ext.policy.model import ALLOC_LABEL, HOSTNAME_LABEL, RACK_LABEL, ZONE_LABEL
from scheduler_ext.policy.workloads import CELL_GROUP

GROUP = CELL_GROUP
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource type's coordinates: enough to build every path to it and to select it in kopf."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def path(self) -> str:
        """The collection across all namespaces (what a cell-wide list or watch reads)."""
        return f"{self.prefix}/{self.plural}"

    def object_path(self, namespace: str | None = None, name: str | None = None, subresource: str = "") -> str:
        """The collection in one namespace, or one object (and its subresource)."""
        if self.namespaced and namespace:
            path = f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        elif self.namespaced and name:
            raise ValueError(f"{self.kind} {name!r} is namespaced: a namespace is needed")
        else:
            path = self.path
        if name:
            path = f"{path}/{name}"
        return f"{path}/{subresource}" if subresource else path

    @property
    def selector(self) -> tuple[str, ...]:
        """kopf's positional selector: (group, version, plural), or (version, plural) for the core group."""
        return (self.group, self.version, self.plural) if self.group else (self.version, self.plural)


PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICES = Resource("", "v1", "services", "Service")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
JOBS = Resource("batch", "v1", "jobs", "Job")
CRONJOBS = Resource("batch", "v1", "cronjobs", "CronJob")
PRIORITY_CLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False)
# Cell's own kinds (cluster/base/crds).
ALLOCS = Resource(GROUP, VERSION, "allocs", "Alloc")
BANDQUOTAS = Resource(GROUP, VERSION, "bandquotas", "BandQuota")

# Everything BandQuota charges (SPEC Q1, A4): what the webhook and the operator watch for quota.
CHARGED = (PODS, DEPLOYMENTS, REPLICASETS, STATEFULSETS, JOBS, CRONJOBS, ALLOCS)
# Kinds whose scale subresource quota sees.
SCALABLE = (DEPLOYMENTS, REPLICASETS, STATEFULSETS)

# --- labels and finalizers ------------------------------------------------------------------------
MANAGED_LABEL = f"{GROUP}/managed"  # a Namespace whose quota Cell enforces
STUDENT_LABEL = f"{GROUP}/student"  # a student's Namespace, value: the student's name
EXPERIENCE_LABEL = f"{GROUP}/experience"  # objects an experience applied
REAL_LABEL = f"{GROUP}/real"  # the real (containerd/kubelet) node; also its taint's key
PLATFORM_LABEL = f"{GROUP}/platform"  # a machine's platform (Borg §2.1's heterogeneity)
ALLOC_FINALIZER = f"{GROUP}/alloc-protection"  # an Alloc's reservation is released before it goes

__all__ = [
    "ALLOCS", "ALLOC_FINALIZER", "ALLOC_LABEL", "API_VERSION", "BANDQUOTAS", "CHARGED", "CRONJOBS", "DEPLOYMENTS",
    "EXPERIENCE_LABEL", "GROUP", "HOSTNAME_LABEL", "JOBS", "MANAGED_LABEL", "NAMESPACES", "NODES", "PLATFORM_LABEL",
    "PODS", "PRIORITY_CLASSES", "RACK_LABEL", "REAL_LABEL", "REPLICASETS", "SCALABLE", "STATEFULSETS",
    "STUDENT_LABEL", "VERSION", "ZONE_LABEL", "Resource",
]

"""Wire types: kube-scheduler's extender protocol (k8s.io/kube-scheduler/extender/v1) and the few
Kubernetes object fields the extender reads.

The extender structs carry no JSON tags, so their keys are Go field names (PascalCase); the
Kubernetes objects inside them use normal API JSON (camelCase). Only the fields the policy needs
are declared: msgspec skips the rest of a pod or node without building it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from scheduler_ext.kube import reflector
from scheduler_ext.policy.model import PodInfo, ServiceInfo
from scheduler_ext.policy.resources import QuantityError

Quantity = str | int | float


# --- Kubernetes objects (only what the policy reads) ----------------------------------------------

class OwnerReference(msgspec.Struct, rename="camel", omit_defaults=True):
    kind: str = ""
    name: str = ""
    controller: bool | None = None


class ObjectMeta(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    labels: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None


class ResourceRequirements(msgspec.Struct, omit_defaults=True):
    requests: dict[str, Quantity] | None = None


class Container(msgspec.Struct, rename="camel", omit_defaults=True):
    resources: ResourceRequirements | None = None
    restart_policy: str | None = None


class PodSpec(msgspec.Struct, rename="camel", omit_defaults=True):
    containers: list[Container] = []
    init_containers: list[Container] | None = None
    overhead: dict[str, Quantity] | None = None
    priority: int | None = None
    priority_class_name: str | None = None
    node_name: str | None = None
    node_selector: dict[str, str] | None = None


class PodStatus(msgspec.Struct, omit_defaults=True):
    phase: str | None = None


class Pod(msgspec.Struct, omit_defaults=True):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus | None = None


class NodeSpec(msgspec.Struct, omit_defaults=True):
    unschedulable: bool | None = None


class NodeStatus(msgspec.Struct, omit_defaults=True):
    allocatable: dict[str, Quantity] | None = None
    capacity: dict[str, Quantity] | None = None


class Node(msgspec.Struct, omit_defaults=True):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: NodeSpec | None = None
    status: NodeStatus | None = None


class ListMeta(msgspec.Struct, rename="camel", omit_defaults=True):
    resource_version: str = ""


class PodList(msgspec.Struct):
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[Pod] | None = None


class NodeList(msgspec.Struct):
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[Node] | None = None


class CustomObjectList(msgspec.Struct):
    """Allocs are read whole: they are few and small, and the policy's converter takes dicts."""

    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[dict[str, Any]] | None = None


WatchEvent = reflector.WatchEvent  # one line of a watch stream (the benchmarks decode them too)


# --- The extender protocol (Go field names) -------------------------------------------------------

class ExtenderNodeList(msgspec.Struct):
    """v1.NodeList as sent when nodeCacheCapable is false: only names are read, objects echoed raw."""

    items: list[msgspec.Raw] | None = None


class ExtenderArgs(msgspec.Struct, rename="pascal"):
    pod: Pod
    nodes: ExtenderNodeList | None = None
    node_names: list[str] | None = None


class ExtenderFilterResult(msgspec.Struct, rename="pascal"):
    nodes: dict[str, Any] | None = None
    node_names: list[str] | None = None
    failed_nodes: dict[str, str] = {}
    failed_and_unresolvable_nodes: dict[str, str] = {}
    error: str = ""


class HostPriority(msgspec.Struct, rename="pascal"):
    host: str
    score: int


class MetaPod(msgspec.Struct, rename={"uid": "UID"}):
    uid: str


# "pascal" would spell NumPdbViolations; Go's field is NumPDBViolations.
_VICTIMS = {"pods": "Pods", "num_pdb_violations": "NumPDBViolations"}


class MetaVictims(msgspec.Struct, rename=_VICTIMS):
    pods: list[MetaPod] = []
    num_pdb_violations: int = 0


class Victims(msgspec.Struct, rename=_VICTIMS):
    pods: list[Pod] = []
    num_pdb_violations: int = 0


class ExtenderPreemptionArgs(msgspec.Struct, rename="pascal"):
    pod: Pod
    node_name_to_victims: dict[str, Victims] | None = None
    node_name_to_meta_victims: dict[str, MetaVictims] | None = None


class ExtenderPreemptionResult(msgspec.Struct, rename="pascal"):
    node_name_to_meta_victims: dict[str, MetaVictims] = {}


# --- Encoding / decoding helpers ------------------------------------------------------------------

_args_decoder = msgspec.json.Decoder(ExtenderArgs)
_preemption_decoder = msgspec.json.Decoder(ExtenderPreemptionArgs)
_node_name_decoder = msgspec.json.Decoder(Node)
_encoder = msgspec.json.Encoder()


class WireError(ValueError):
    """A request body that is not what kube-scheduler sends."""


def decode_args(body: bytes) -> ExtenderArgs:
    try:
        args = _args_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError is a DecodeError; nesting too deep
        raise WireError(f"malformed ExtenderArgs: {exc}") from None
    if args.node_names is None and args.nodes is None:
        raise WireError("malformed ExtenderArgs: neither NodeNames nor Nodes given")
    _check_pod(args.pod, "ExtenderArgs")
    return args


def _check_pod(pod: Pod, what: str) -> None:
    if not pod.metadata.name or not pod.metadata.namespace:
        raise WireError(f"malformed {what}: Pod.metadata needs name and namespace")


def decode_preemption_args(body: bytes) -> ExtenderPreemptionArgs:
    try:
        args = _preemption_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"malformed ExtenderPreemptionArgs: {exc}") from None
    _check_pod(args.pod, "ExtenderPreemptionArgs")
    return args


def node_names(args: ExtenderArgs) -> list[str]:
    """The candidate node names, from NodeNames or (nodeCacheCapable false) from the NodeList."""
    if args.node_names is not None:
        return args.node_names
    try:
        return [_node_name_decoder.decode(raw).metadata.name for raw in (args.nodes.items or ())] if args.nodes else []
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"malformed ExtenderArgs: Nodes.items: {exc}") from None


def filtered_node_list(args: ExtenderArgs, keep: set[str]) -> dict[str, Any] | None:
    """Echo back the NodeList objects that passed (only when the request carried a NodeList)."""
    if args.nodes is None:
        return None
    try:
        items = [msgspec.json.decode(raw) for raw in (args.nodes.items or ())
                 if _node_name_decoder.decode(raw).metadata.name in keep]
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"malformed ExtenderArgs: Nodes.items: {exc}") from None
    return {"items": items}


def pod_info(pod: Pod, services: Iterable[ServiceInfo] = ()) -> PodInfo:
    """The policy's view of a pod from the request (`services`: those that may select it); bad
    quantities are the request's fault."""
    try:
        return PodInfo.from_manifest(to_manifest(pod), services)
    except (QuantityError, ValueError, TypeError) as exc:
        raise WireError(f"malformed Pod {pod.metadata.namespace}/{pod.metadata.name}: {exc}") from None


def to_manifest(obj: msgspec.Struct) -> dict[str, Any]:
    """The struct as the plain API dict the policy's `from_manifest` converters take."""
    return msgspec.to_builtins(obj)


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)

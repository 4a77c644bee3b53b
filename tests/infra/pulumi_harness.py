"""Run the Pulumi program under `pulumi.runtime.set_mocks` and keep what it registered.

The mocks give ports sequential fixed IPs and floating IPs addresses, answer the external-network
lookup, and give the bootstrap (dynamic) resource a kubeconfig; the recording monitor keeps each
RegisterResource request (type, name, parent, protect, additionalSecretOutputs) and each
RegisterResourceOutputs request, so tests can assert resource options as well as inputs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

from infra.config import StackConfig, parse_config

PORT = "openstack:networking/port:Port"
FLOATING_IP = "openstack:networking/floatingIp:FloatingIp"
INSTANCE = "openstack:compute/instance:Instance"
SECURITY_GROUP = "openstack:networking/secGroup:SecGroup"
SECURITY_GROUP_RULE = "openstack:networking/secGroupRule:SecGroupRule"
SERVER_GROUP = "openstack:compute/serverGroup:ServerGroup"
BOOTSTRAP = "pulumi-python:dynamic/cell:ClusterBootstrap"
CLUSTER = "cell:infra:Cluster"
EXTERNAL_NETWORK_ID = "ext-net-0001"
# pulumi's secret signature in serialized properties (sdk/python/lib/pulumi/runtime/rpc.py).
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")

BASE_CONFIG: dict[str, Any] = {
    "clusters": [{"name": "lab", "workers": 3, "students": ["alice", "bob"]}],
    "image": "Debian 12",
    "flavor": "m1.large",
    "controlPlaneFlavor": "m1.medium",
    "externalNetwork": "public",
    "allowedCidrs": ["203.0.113.0/24", "2001:db8::/48"],
    "sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample teacher@laptop",
    "kubernetesVersion": "1.34",
}


def stack_config(**overrides: Any) -> StackConfig:
    return parse_config({**BASE_CONFIG, **overrides})


@dataclass
class Registered:
    """One custom resource as the mocks saw it: inputs (camelCase) and the returned state."""

    type: str
    name: str
    id: str
    inputs: dict[str, Any]
    state: dict[str, Any]


class CellMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Registered] = []
        self.calls: list[MockCallArgs] = []
        self._ips = itertools.count(10)
        self._floating = itertools.count(10)

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.typ == PORT:
            state["allFixedIps"] = [f"10.10.0.{next(self._ips)}"]
        elif args.typ == FLOATING_IP:
            state["address"] = f"198.51.100.{next(self._floating)}"
        elif args.typ == INSTANCE:
            state["availabilityZone"] = args.inputs.get("availabilityZone") or "nova"
        elif args.typ == BOOTSTRAP:
            resource_id = args.inputs["cluster"]
            state["kubeconfig"] = f"kubeconfig of {args.inputs['cluster']}"
            state["studentKubeconfigs"] = {name: f"kubeconfig of {name}"
                                           for name in args.inputs["inventory"]["all"]["vars"]["cell_students"]}
        if args.custom:
            self.resources.append(Registered(args.typ, args.name, resource_id, dict(args.inputs), state))
        return resource_id, state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.calls.append(args)
        if args.token == "openstack:networking/getNetwork:getNetwork":
            return {"id": EXTERNAL_NETWORK_ID, "name": args.args["name"], "external": True}, []
        raise AssertionError(f"unexpected invoke {args.token}")


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: CellMocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Any] = []
        self.outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
        self.registrations.append(request)
        return super().RegisterResource(request)

    def RegisterResourceOutputs(self, request: Any) -> Any:  # the gRPC method's name
        self.outputs[request.urn] = MessageToDict(request.outputs)
        return super().RegisterResourceOutputs(request)


@dataclass
class Run:
    mocks: CellMocks
    monitor: RecordingMonitor
    values: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registered]:
        return [resource for resource in self.mocks.resources if resource.type == typ]

    def named(self, name: str) -> Registered:
        (match,) = [resource for resource in self.mocks.resources if resource.name == name]
        return match

    def request(self, name: str) -> Any:
        (match,) = [request for request in self.monitor.registrations if request.name == name]
        return match

    def component_outputs(self, cluster: str) -> dict[str, Any]:
        (outputs,) = [value for urn, value in self.monitor.outputs.items() if urn.endswith(f"{CLUSTER}::{cluster}")]
        return outputs


def run_program(stack: StackConfig) -> Run:
    """Declare the stack's clusters under mocks; wait for every registration and output."""
    from infra.program import build

    mocks = CellMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=monitor)
    run = Run(mocks, monitor)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        clusters = build(stack)
        values = {name: cluster.inventory for name, cluster in clusters.items()}
        return pulumi.Output.all(**values).apply(run.values.update)

    program()
    return run


def is_secret(serialized: Any) -> bool:
    """Whether a serialized property value is wrapped as a Pulumi secret."""
    return isinstance(serialized, dict) and serialized.get(SECRET_SIG[0]) == SECRET_SIG[1]

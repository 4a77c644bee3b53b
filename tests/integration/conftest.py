"""Fixtures the integration tests share: a namespace of their own, and KWOK nodes of their own."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from cell.kube import node_is_ready
from tests.integration.helpers import dedicated_node_manifests, wait_for

NodeFactory = Callable[[int], list[str]]


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace; deleting it at the end lets the operator release what is left (A5)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def test_nodes(kube_api: client.ApiClient, namespace: str) -> Iterator[NodeFactory]:
    """make(count): that many 8 CPU / 32Gi KWOK nodes (zones a, b, c, a, ...) reserved for this test:
    labelled and tainted with the test's namespace, so only its pods land there (see pin_to_test_nodes)."""
    core = client.CoreV1Api(kube_api)
    created: list[str] = []

    def make(count: int) -> list[str]:
        manifests = dedicated_node_manifests(namespace, count)
        for node in manifests:
            core.create_node(node)
            created.append(node["metadata"]["name"])
        names = [n["metadata"]["name"] for n in manifests]

        def all_ready() -> bool:
            # Ready is not enough: until the lifecycle controller lifts its not-ready taint, kube-scheduler
            # skips the node, and a burst doubles up on the others.
            return all(node_is_ready(core.read_node(n)) for n in names)

        wait_for(all_ready, 60, what=f"{count} test nodes Ready")
        return names

    yield make
    for name in created:
        core.delete_node(name)

"""Objects shaped as the API server and kube-scheduler send them (trimmed, but with the noise)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from scheduler_ext.extender.cache import ClusterCache
from scheduler_ext.extender.server import create_app


def node_manifest(name: str, zone: str = "zone-a", rack: str = "rack-1", cpu: str = "8", memory: str = "32Gi",
                  resource_version: str = "1") -> dict[str, Any]:
    return {
        "kind": "Node", "apiVersion": "v1",
        "metadata": {
            "name": name, "uid": f"node-uid-{name}", "resourceVersion": resource_version,
            "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone,
                       "cell.distos.dev/rack": rack, "type": "kwok"},
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                            "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64", "operatingSystem": "linux"},
            "images": [],
        },
    }


def pod_manifest(name: str, namespace: str = "alice", cpu: str = "500m", memory: str = "256Mi",
                 priority: int | None = 800000, node: str | None = None, uid: str | None = None,
                 labels: dict[str, str] | None = None, owner: str = "web-7d4b9c", phase: str = "Pending",
                 resource_version: str = "10") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{
            "name": "web", "image": "registry.local/web:1", "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": "1"}},
            "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
        }],
        "restartPolicy": "Always", "schedulerName": "default-scheduler", "dnsPolicy": "ClusterFirst",
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300}],
        "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
    }
    if priority is not None:
        spec["priority"] = priority
        spec["priorityClassName"] = {950000: "monitoring", 800000: "production", 500000: "batch",
                                     100000: "best-effort"}.get(priority, "custom")
    if node:
        spec["nodeName"] = node
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}",
            "resourceVersion": resource_version, "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"app": "web", **(labels or {})},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                 "uid": "rs-uid", "controller": True, "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}],
        },
        "spec": spec,
        "status": {"phase": phase, "qosClass": "Burstable"},
    }


def alloc_manifest(name: str, nodes: list[str], namespace: str = "alice", cpu: str = "2",
                   memory: str = "2Gi") -> dict[str, Any]:
    return {
        "apiVersion": "cell.distos.dev/v1alpha1", "kind": "Alloc",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "5"},
        "spec": {"priorityClassName": "production", "count": len(nodes), "resources": {"cpu": cpu, "memory": memory}},
        "status": {"phase": "Reserved", "instances": [{"index": i, "node": n} for i, n in enumerate(nodes)]},
    }


def extender_args(pod: dict[str, Any], node_names: list[str]) -> bytes:
    """ExtenderArgs as kube-scheduler marshals it with nodeCacheCapable: true."""
    return json.dumps({"Pod": pod, "Nodes": None, "NodeNames": node_names}).encode()


def watch_line(event_type: str, obj: dict[str, Any]) -> str:
    return json.dumps({"type": event_type, "object": obj})


@contextlib.contextmanager
def served_extender(cache: ClusterCache, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """The real extender app over `cache` on a free loopback port, in a thread; yields its base URL
    (https when `ssl_context` is given, as `cell up` serves it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(cache))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

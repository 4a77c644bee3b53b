"""Small Kubernetes helpers shared by the CLI's modules: kubeconfig files and API clients."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from kubernetes import client, config

from cell.errors import CellError


def write_kubeconfig(path: Path, server_url: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str,
                     namespace: str | None = None, cluster_name: str = "cell") -> Path:
    """A self-contained kubeconfig (certificates embedded) for one user of the cell."""
    context: dict[str, str] = {"cluster": cluster_name, "user": user}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {
            "server": server_url,
            "certificate-authority-data": base64.b64encode(ca_pem).decode(),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": base64.b64encode(cert_pem).decode(),
            "client-key-data": base64.b64encode(key_pem).decode(),
        }}],
        "contexts": [{"name": f"{user}@{cluster_name}", "context": context}],
        "current-context": f"{user}@{cluster_name}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path


def server_url_of(kubeconfig: Path) -> str:
    try:
        document = yaml.safe_load(kubeconfig.read_text())
        return str(document["clusters"][0]["cluster"]["server"])
    except FileNotFoundError as exc:
        raise CellError(f"kubeconfig not found: {kubeconfig}") from exc
    except (KeyError, IndexError, TypeError, yaml.YAMLError) as exc:
        raise CellError(f"kubeconfig {kubeconfig} is malformed: no clusters[0].cluster.server") from exc


def api_client(kubeconfig: Path) -> client.ApiClient:
    """An API client for a kubeconfig file, or a one-line CellError if it is missing or broken."""
    if not Path(kubeconfig).is_file():
        raise CellError(f"kubeconfig not found: {kubeconfig} (is the cell up? run `cell up`)")
    try:
        return config.new_client_from_config(config_file=str(kubeconfig))
    except (config.ConfigException, yaml.YAMLError, KeyError, TypeError) as exc:
        raise CellError(f"kubeconfig {kubeconfig} is unusable: {exc}") from exc


# Taints the node lifecycle controller keeps on a node until it has seen it Ready, a few seconds
# after the kubelet (or KWOK) reports Ready, and puts back when heartbeats stop. kube-scheduler
# keeps pods off the node while one remains.
LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def node_is_ready(node: client.V1Node) -> bool:
    """Ready, and free of the lifecycle controller's not-ready/unreachable taints: pods can land."""
    conditions = (node.status.conditions if node.status else None) or []
    taints = (node.spec.taints if node.spec else None) or []
    return (any(c.type == "Ready" and c.status == "True" for c in conditions)
            and not any(t.key in LIFECYCLE_TAINTS for t in taints))

"""Kubeconfig files: writing one for a user of the cell, and reading its server back."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

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

"""Credentials from an explicit kubeconfig, for kopf (ConnectionInfo) and for the API client."""

from __future__ import annotations

from pathlib import Path

import kopf
from kubernetes import client, config


def load_configuration(kubeconfig: Path) -> client.Configuration:
    """Raises FileNotFoundError or the loader's own exception for an unusable file."""
    if not kubeconfig.is_file():
        raise FileNotFoundError(f"kubeconfig not found: {kubeconfig}")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """What kopf needs to talk to the API server as the kubeconfig's user (certificates or a token)."""
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization")
    scheme, token = (header.split(" ", 1) if header and " " in header else (None, header or None))
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )

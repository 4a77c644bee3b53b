"""Credentials from an explicit kubeconfig, for kopf (ConnectionInfo) and for the API client."""

from __future__ import annotations

import kopf
from kubernetes import client

from scheduler_ext.kube.client import load_configuration

__all__ = ["connection_info", "load_configuration"]


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

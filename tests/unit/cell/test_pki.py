"""The cell's PKI: chains verify, names and usages are what Kubernetes reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cell.errors import CellError
from cell.kubeconfig import server_url_of, write_kubeconfig
from cell.pki import CertificateAuthority


def test_client_cert_carries_user_and_groups_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    cert_pem, _key = ca.issue_client_cert("alice", ["cell:students"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cell:students"
    cert.verify_directly_issued_by(ca.cert)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages


def test_serving_cert_names_ips_and_dns(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    ca.write_serving_cert(tmp_path, "webhook", ["localhost"], ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate((tmp_path / "webhook.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (tmp_path / "webhook.key").stat().st_mode & 0o077 == 0


def test_ca_round_trips_and_a_missing_ca_is_a_clear_error(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "pki")
    assert CertificateAuthority.load(tmp_path / "pki").cert_pem == ca.cert_pem
    with pytest.raises(CellError, match="no cell CA"):
        CertificateAuthority.load(tmp_path / "elsewhere")


def test_kubeconfig_is_self_contained(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    cert, key = ca.issue_client_cert("bob", [])
    path = write_kubeconfig(tmp_path / "bob.kubeconfig", "https://127.0.0.1:6443", ca.cert_pem, cert, key, "bob",
                            namespace="bob")
    doc = yaml.safe_load(path.read_text())
    assert doc["contexts"][0]["context"] == {"cluster": "cell", "user": "bob", "namespace": "bob"}
    assert server_url_of(path) == "https://127.0.0.1:6443"
    with pytest.raises(CellError, match="kubeconfig not found"):
        server_url_of(tmp_path / "nope")

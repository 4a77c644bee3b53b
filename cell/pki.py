"""The local cell's PKI, made with `cryptography`: CAs, serving and client certificates, SA keys.

Three CAs, as kubeadm keeps etcd's apart: the cell CA (the API's users, serving certificates),
etcd's CA (pki/etcd/, etcd and its one client, the API server) and the extender's client CA (its
one client, kube-scheduler, and the cell's own tools). A certificate the cell CA signed, a
student's for one, opens neither etcd nor the extender.

ECDSA P-256 keys: every Kubernetes component accepts them and they are generated in microseconds,
which keeps `cell up` fast.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cell.errors import CellError

VALIDITY = dt.timedelta(days=365)
# kubeadm's layout for etcd's PKI: pki/etcd/{ca,server,peer}.*, and the API server's client of it.
ETCD_DIR = "etcd"
APISERVER_ETCD_CLIENT = "apiserver-etcd-client"
# The extender: a serving certificate from the cell CA, clients from a CA of their own.
EXTENDER_SERVING = "extender"
EXTENDER_CLIENT_CA = "extender-client-ca"
SCHEDULER_EXTENDER_CLIENT = "kube-scheduler-extender-client"
CELL_EXTENDER_CLIENT = "cell-extender-client"  # the supervisor's probe, `cell why`, the tests


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str, organizations: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations or []]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


@dataclass
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, pki_dir: Path, common_name: str = "cell-ca", stem: str = "ca") -> CertificateAuthority:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + 10 * VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        pki_dir.mkdir(parents=True, exist_ok=True)
        ca = cls(cert, key)
        _write(pki_dir / f"{stem}.crt", ca.cert_pem)
        _write(pki_dir / f"{stem}.key", _key_pem(key), private=True)
        return ca

    @classmethod
    def load(cls, pki_dir: Path, stem: str = "ca") -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate((pki_dir / f"{stem}.crt").read_bytes())
            key = serialization.load_pem_private_key((pki_dir / f"{stem}.key").read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise CellError(f"no cell CA at {pki_dir} (is the local cell up? run `cell up`)") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CellError(f"{pki_dir / f'{stem}.key'}: unexpected key type")
        return cls(cert, key)

    def _issue(self, subject: x509.Name, usages: list[x509.ObjectIdentifier],
               dns_names: list[str] | None = None, ips: list[str] | None = None) -> tuple[bytes, bytes]:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names or []]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips or []]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def issue_client_cert(self, common_name: str, organizations: list[str]) -> tuple[bytes, bytes]:
        """A client certificate: Kubernetes reads the user from CN and groups from O."""
        return self._issue(_name(common_name, organizations), [ExtendedKeyUsageOID.CLIENT_AUTH])

    def issue_serving_cert(self, common_name: str, dns_names: list[str], ips: list[str]) -> tuple[bytes, bytes]:
        return self._issue(_name(common_name), [ExtendedKeyUsageOID.SERVER_AUTH], dns_names, ips)

    def write_serving_cert(self, pki_dir: Path, stem: str, dns_names: list[str], ips: list[str]) -> None:
        cert, key = self.issue_serving_cert(stem, dns_names, ips)
        _write(pki_dir / f"{stem}.crt", cert)
        _write(pki_dir / f"{stem}.key", key, private=True)

    def write_member_cert(self, pki_dir: Path, stem: str, dns_names: list[str], ips: list[str]) -> None:
        """Serving and client at once, as kubeadm's etcd certificates: an etcd member answers with
        its server certificate and dials itself with it (the JSON gateway), its peers with the peer one."""
        cert, key = self._issue(_name(stem), [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                dns_names, ips)
        _write(pki_dir / f"{stem}.crt", cert)
        _write(pki_dir / f"{stem}.key", key, private=True)

    def write_client_cert(self, pki_dir: Path, stem: str, common_name: str, organizations: list[str]) -> None:
        cert, key = self.issue_client_cert(common_name, organizations)
        _write(pki_dir / f"{stem}.crt", cert)
        _write(pki_dir / f"{stem}.key", key, private=True)


def write_service_account_keys(pki_dir: Path) -> None:
    """The key pair the apiserver signs service-account tokens with (and the controller-manager too)."""
    key = _new_key()
    _write(pki_dir / "sa.key", _key_pem(key), private=True)
    _write(pki_dir / "sa.pub", key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))


def client_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A client's TLS context: the server verified by ca_file, this side shown by cert_file."""
    missing = [str(path) for path in (ca_file, cert_file, key_file) if not path.exists()]
    if missing:
        raise CellError(f"{', '.join(missing)} missing: the cell was made by an older Cell "
                        "(run `cell down`, then `cell up`)")
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise CellError(f"cannot load the client certificate {cert_file}: {exc}") from None
    return context


def extender_client_context(pki_dir: Path) -> ssl.SSLContext:
    """How the cell's own tools reach the extender: its serving certificate is the cell CA's, the
    client certificate the extender's client CA's."""
    return client_context(pki_dir / "ca.crt", pki_dir / f"{CELL_EXTENDER_CLIENT}.crt",
                          pki_dir / f"{CELL_EXTENDER_CLIENT}.key")

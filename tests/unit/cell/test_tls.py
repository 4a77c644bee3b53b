"""Issue 13 item 5: only kube-scheduler (and the cell's own tools) reach the extender, and only the
API server reaches etcd. No cluster: the command lines, the scheduler's configuration, the chains
of trust, and a real extender app served over TLS in a thread.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cell import pki
from cell.errors import CellError
from cell.localcell import lifecycle, topology
from cell.localcell.supervisor import LocalCell
from cell.pki import CertificateAuthority, client_context, extender_client_context
from cell.state import CellPaths, CellRecord
from cell.why import fetch_extender_why
from scheduler_ext.extender.__main__ import main as extender_main
from scheduler_ext.extender.__main__ import tls_context
from scheduler_ext.extender.cache import KINDS, ClusterCache
from tests.unit.extender.extender_fixtures import served_extender


def _record(**extra: object) -> CellRecord:
    return CellRecord(bin_dir="/opt/bin", ports={name: 20000 + i for i, name in enumerate(topology.PORTS)},
                      **extra)  # type: ignore[arg-type]  # the test's own fields


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> CellPaths:
    """A state directory with the PKI `cell up` writes."""
    paths = CellPaths(tmp_path_factory.mktemp("state"))
    paths.pki_dir.mkdir(parents=True)
    lifecycle._write_pki(paths)
    return paths


def _argv(paths: CellPaths, name: str) -> list[str]:
    (component,) = [c for c in topology.components(paths, _record()) if c.name == name]
    return component.argv


def _flag(argv: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
    return value


# --- etcd ---------------------------------------------------------------------------------------

def test_etcd_serves_tls_to_clients_and_peers_of_its_own_ca(paths: CellPaths) -> None:
    argv, ports = _argv(paths, "etcd"), _record().ports
    etcd_ca = paths.pki_dir / "etcd" / "ca.crt"
    assert _flag(argv, "listen-client-urls") == _flag(argv, "advertise-client-urls") == (
        f"https://127.0.0.1:{ports['etcd']}")
    assert _flag(argv, "listen-peer-urls") == f"https://127.0.0.1:{ports['etcd_peer']}"
    assert _flag(argv, "initial-cluster") == f"cell=https://127.0.0.1:{ports['etcd_peer']}"
    assert _flag(argv, "client-cert-auth") == _flag(argv, "peer-client-cert-auth") == "true"
    assert Path(_flag(argv, "trusted-ca-file")) == Path(_flag(argv, "peer-trusted-ca-file")) == etcd_ca
    for flag in ("cert-file", "key-file", "peer-cert-file", "peer-key-file"):
        assert Path(_flag(argv, flag)).is_file(), flag
    assert not any(arg.startswith("--") and "http://" in arg and "metrics" not in arg for arg in argv), argv
    # Health over a plain listener of /health and /metrics only, on a port of its own.
    assert _flag(argv, "listen-metrics-urls") == f"http://127.0.0.1:{ports['etcd_metrics']}"
    (etcd,) = [c for c in topology.components(paths, _record()) if c.name == "etcd"]
    assert etcd.health_url == f"http://127.0.0.1:{ports['etcd_metrics']}/health"


def test_the_api_server_reaches_etcd_with_a_certificate_of_etcds_ca(paths: CellPaths) -> None:
    argv = _argv(paths, "kube-apiserver")
    assert _flag(argv, "etcd-servers") == f"https://127.0.0.1:{_record().ports['etcd']}"
    etcd_ca = x509.load_pem_x509_certificate(Path(_flag(argv, "etcd-cafile")).read_bytes())
    client = x509.load_pem_x509_certificate(Path(_flag(argv, "etcd-certfile")).read_bytes())
    client.verify_directly_issued_by(etcd_ca)
    assert Path(_flag(argv, "etcd-keyfile")).is_file()
    # etcd's CA is not the cell's: a certificate of the API's users (a student's) is not one of etcd's.
    cell_ca = CertificateAuthority.load(paths.pki_dir)
    assert etcd_ca.subject != cell_ca.cert.subject
    student = x509.load_pem_x509_certificate(cell_ca.issue_client_cert("alice", ["cell:students"])[0])
    with pytest.raises(ValueError):
        student.verify_directly_issued_by(etcd_ca)


def test_etcds_certificates_serve_and_dial(paths: CellPaths) -> None:
    # etcd dials its own client port with its server certificate (the JSON gateway): a serving-only
    # one is refused ("incompatible key usage") and /v3/kv/range answers 503.
    etcd_dir = paths.pki_dir / "etcd"
    etcd_ca = x509.load_pem_x509_certificate((etcd_dir / "ca.crt").read_bytes())
    for stem in ("peer", "server"):
        cert = x509.load_pem_x509_certificate((etcd_dir / f"{stem}.crt").read_bytes())
        cert.verify_directly_issued_by(etcd_ca)
        assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
            ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}, stem
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"], stem


def test_a_record_without_a_port_of_this_cell_is_a_clear_error_and_still_stops(tmp_path: Path) -> None:
    cell = LocalCell(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    ports = {name: 1 for name in topology.PORTS if name != "etcd_metrics"}
    cell.create(CellRecord(bin_dir="/opt/bin", ports=ports, pids={"etcd": 2 ** 22 + 1}))
    with pytest.raises(CellError, match=r"older Cell .*etcd_metrics.*cell down"):
        cell.component_names()
    cell.stop_all()  # what `cell down` runs: it stops by the record's PIDs
    assert LocalCell(tmp_path).record.pids == {}


# --- the extender ---------------------------------------------------------------------------------

def test_the_extender_serves_https_for_its_client_ca_and_the_scheduler_shows_its_certificate(
        paths: CellPaths) -> None:
    argv = _argv(paths, "extender")
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert Path(options["--client-ca-file"]) == paths.pki_dir / "extender-client-ca.crt"
    (extender,) = [c for c in topology.components(paths, _record()) if c.name == "extender"]
    assert extender.health_url == f"https://127.0.0.1:{_record().ports['extender']}/healthz"
    assert extender.health_tls == "extender-client"

    text, url = topology.scheduler_config(paths, _record())
    assert url == f"https://127.0.0.1:{_record().ports['extender']}"
    (config,) = yaml.safe_load(text)["extenders"]
    assert config["urlPrefix"] == url and config["enableHTTPS"] is True
    tls = config["tlsConfig"]
    client_ca = x509.load_pem_x509_certificate(Path(options["--client-ca-file"]).read_bytes())
    x509.load_pem_x509_certificate(Path(tls["certFile"]).read_bytes()).verify_directly_issued_by(client_ca)
    serving = x509.load_pem_x509_certificate(Path(options["--tls-cert-file"]).read_bytes())
    serving.verify_directly_issued_by(x509.load_pem_x509_certificate(Path(tls["caFile"]).read_bytes()))
    assert Path(tls["keyFile"]).is_file()
    assert config["ignorable"] is False  # the rest of the shared file is kept


def test_the_shared_template_keeps_https_off_for_the_cloud() -> None:
    text = (topology.CLUSTER_DIR / "scheduler" / "kube-scheduler-config.yaml").read_text()
    (config,) = yaml.safe_load(text)["extenders"]
    assert config["enableHTTPS"] is False and "tlsConfig" not in config


def test_a_cell_without_the_extender_has_no_extender_in_its_scheduler(paths: CellPaths) -> None:
    text, url = topology.scheduler_config(paths, _record(without=["extender"]))
    assert url is None and "extenders" not in yaml.safe_load(text)


@pytest.fixture
def extender(paths: CellPaths) -> Iterator[str]:
    """The real extender app, served over TLS as `cell up` starts it, in a thread."""
    cache = ClusterCache()
    for resource in KINDS:
        cache.replace(resource, [])
    context = tls_context(paths.pki_dir / "extender.crt", paths.pki_dir / "extender.key",
                          paths.pki_dir / "extender-client-ca.crt")
    with served_extender(cache, context) as url:
        yield url


def _get(url: str, context: ssl.SSLContext) -> int:
    with urllib.request.urlopen(url, timeout=5, context=context) as response:
        return int(response.status)


def test_the_extender_answers_a_certificate_of_its_client_ca(extender: str, paths: CellPaths) -> None:
    assert _get(f"{extender}/healthz", extender_client_context(paths.pki_dir)) == 200
    scheduler = client_context(paths.pki_dir / "ca.crt", paths.pki_dir / "kube-scheduler-extender-client.crt",
                               paths.pki_dir / "kube-scheduler-extender-client.key")
    assert _get(f"{extender}/healthz", scheduler) == 200
    # `cell why` asks with the same context (no decision recorded: None, not an error).
    assert fetch_extender_why(extender, "alice", "big", context=extender_client_context(paths.pki_dir)) is None


def test_the_extender_refuses_no_certificate_and_a_cell_ca_certificate(extender: str, paths: CellPaths,
                                                                       tmp_path: Path) -> None:
    anonymous = ssl.create_default_context(cafile=str(paths.pki_dir / "ca.crt"))
    with pytest.raises(OSError):  # the handshake is refused: URLError, SSLError or a reset, all OSErrors
        _get(f"{extender}/healthz", anonymous)
    # A student's kubeconfig certificate: the cell CA's, which the API trusts and the extender does not.
    cert, key = CertificateAuthority.load(paths.pki_dir).issue_client_cert("alice", ["cell:students"])
    (tmp_path / "alice.crt").write_bytes(cert)
    (tmp_path / "alice.key").write_bytes(key)
    student = client_context(paths.pki_dir / "ca.crt", tmp_path / "alice.crt", tmp_path / "alice.key")
    with pytest.raises(OSError):
        _get(f"{extender}/healthz", student)
    # Nor does plain HTTP reach it.
    with pytest.raises(OSError):
        urllib.request.urlopen(extender.replace("https:", "http:") + "/healthz", timeout=5).close()


def test_the_extender_takes_the_tls_options_together_or_not_at_all(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    with pytest.raises(SystemExit) as exited:
        extender_main(["--kubeconfig", str(kubeconfig), "--port", "1", "--tls-cert-file", str(kubeconfig)])
    assert exited.value.code == 2
    assert "--tls-cert-file, --tls-key-file and --client-ca-file go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        extender_main(["--kubeconfig", str(kubeconfig), "--port", "1", "--tls-cert-file", str(kubeconfig),
                       "--tls-key-file", str(kubeconfig), "--client-ca-file", str(tmp_path / "none.crt")])
    assert f"--client-ca-file {tmp_path / 'none.crt'}: no such file" in capsys.readouterr().err


def test_an_older_cell_without_the_extenders_client_certificate_is_named(tmp_path: Path) -> None:
    CertificateAuthority.create(tmp_path)
    with pytest.raises(CellError, match=f"{pki.CELL_EXTENDER_CLIENT}.crt, .*missing.*older Cell"):
        extender_client_context(tmp_path)

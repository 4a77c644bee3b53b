"""Issue 13 item 5: only kube-scheduler talks to the extender, only the API server to etcd.

Before, both listened on loopback in plain HTTP: any process of the machine could POST bookings
to the extender's /filter, or read every Secret of the cell from etcd. Now the extender requires a
certificate of its own client CA and etcd one of its own CA (kubeadm's pki/etcd/), so neither a
request without a certificate nor one with a student's kubeconfig certificate (the cell CA's, which
the API server trusts) gets an answer. Each refusal is paired with the request that is answered.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from cell import pki
from cell.localcell.supervisor import LocalCell
from cell.pki import client_context, extender_client_context
from tests.integration.test_quota import Student

pytestmark = pytest.mark.cluster

FILTER = json.dumps({"Pod": {"metadata": {"name": "probe", "namespace": "default", "uid": "probe"}},
                     "NodeNames": ["node-1"]}).encode()
# etcd's JSON gateway: the first key of the API server's tree, as etcdctl get --prefix /registry would.
RANGE = json.dumps({"key": base64.b64encode(b"/registry/").decode(),
                    "range_end": base64.b64encode(b"/registry0").decode(), "limit": 1}).encode()


def _post(url: str, body: bytes, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, bytes(exc.read())


def _refused(url: str, body: bytes, context: ssl.SSLContext | None = None) -> str:
    """How the request failed: at the handshake (or before any answer), or with a 4xx and no data."""
    try:
        status, data = _post(url, body, context)
    except OSError as exc:  # URLError, SSLError, a reset: no HTTP answer at all
        return type(exc).__name__
    assert 400 <= status < 500 and b"/registry" not in data and b"NodeNames" not in data, (status, data[:200])
    return str(status)


@pytest.fixture
def student_tls(student: Student, tmp_path: Path) -> tuple[Path, Path]:
    """The certificate and key of the student's kubeconfig, as files."""
    (user,) = yaml.safe_load(student.kubectl.kubeconfig.read_text())["users"]
    cert, key = tmp_path / "student.crt", tmp_path / "student.key"
    cert.write_bytes(base64.b64decode(user["user"]["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["user"]["client-key-data"]))
    key.chmod(0o600)
    assert student.kubectl("get", "pods").returncode == 0  # a certificate the API server accepts
    return cert, key


def test_the_extender_answers_only_its_client_cas_certificates(local_cell: LocalCell,
                                                              student_tls: tuple[Path, Path]) -> None:
    url = f"https://127.0.0.1:{local_cell.port('extender')}/filter"
    pki_dir = local_cell.paths.pki_dir
    status, data = _post(url, FILTER, extender_client_context(pki_dir))
    assert status == 200 and "FailedNodes" in json.loads(data), data[:200]

    assert _refused(url, FILTER, ssl.create_default_context(cafile=str(pki_dir / "ca.crt")))
    assert _refused(url, FILTER, client_context(pki_dir / "ca.crt", *student_tls))
    assert _refused(url.replace("https:", "http:"), FILTER)


def test_etcd_answers_only_the_api_servers_certificate(local_cell: LocalCell,
                                                       student_tls: tuple[Path, Path]) -> None:
    url = f"https://127.0.0.1:{local_cell.port('etcd')}/v3/kv/range"
    pki_dir = local_cell.paths.pki_dir
    etcd_ca = pki_dir / pki.ETCD_DIR / "ca.crt"
    apiserver = client_context(etcd_ca, pki_dir / f"{pki.APISERVER_ETCD_CLIENT}.crt",
                               pki_dir / f"{pki.APISERVER_ETCD_CLIENT}.key")
    status, data = _post(url, RANGE, apiserver)
    assert status == 200 and json.loads(data)["kvs"], data[:200]  # the API server's objects are there

    assert _refused(url.replace("https:", "http:"), RANGE)  # plain HTTP
    assert _refused(url, RANGE, ssl.create_default_context(cafile=str(etcd_ca)))  # no certificate
    assert _refused(url, RANGE, client_context(etcd_ca, *student_tls))  # the cell CA's (a student's)
    # The cell's own admin certificate is the cell CA's too: system:masters for the API, nothing for etcd.
    assert _refused(url, RANGE, client_context(etcd_ca, pki_dir / "admin.crt", pki_dir / "admin.key"))
    # The plain listener the supervisor probes serves health and metrics, not the keys.
    metrics = f"http://127.0.0.1:{local_cell.port('etcd_metrics')}"
    with urllib.request.urlopen(f"{metrics}/health", timeout=10) as response:
        assert json.loads(response.read())["health"] == "true"
    assert _refused(f"{metrics}/v3/kv/range", RANGE)

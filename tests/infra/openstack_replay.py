"""Replays recorded Keystone, Nova, Glance and Neutron responses on 127.0.0.1 for `cell cloud check`.

A scenario is the directory `recorded/openstack/` (a project that holds the course) overlaid with
the files of `recorded/openstack-<scenario>/` (e.g. an empty image list). `{base}` in a recording
becomes the server's own URL, so the token's service catalog points back here. List endpoints
honour `?name=` as the real services do. Every request is logged in `requests` for assertions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RECORDED = Path(__file__).parent / "recorded"
PASSWORD = "course-secret"

# (method, path) -> recording; list endpoints name the key holding the list, for ?name= filtering.
ROUTES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("GET", "/identity/v3"): ("identity_v3.json", None),
    ("GET", "/compute/v2.1"): ("compute_v2.1.json", None),
    ("GET", "/compute/v2.1/flavors/detail"): ("flavors_detail.json", "flavors"),
    ("GET", "/compute/v2.1/limits"): ("limits.json", None),
    ("GET", "/compute/v2.1/os-keypairs"): ("keypairs.json", None),
    ("GET", "/compute/v2.1/os-availability-zone"): ("availability_zones.json", None),
    ("GET", "/image"): ("image_versions.json", None),
    ("GET", "/image/v2/images"): ("images.json", "images"),
    ("GET", "/network/v2.0/networks"): ("networks.json", "networks"),
    ("GET", "/network/v2.0/quotas/{project}/details"): ("network_quota_details.json", None),
}
PROJECT_ID = "4d5e6f708192a3b4c5d6e7f8091a2b3c"


@dataclass
class Replay:
    base: str
    requests: list[str] = field(default_factory=list)


def _load(scenario: str | None, name: str) -> str:
    overlay = RECORDED / f"openstack-{scenario}" / name if scenario else None
    path = overlay if overlay is not None and overlay.is_file() else RECORDED / "openstack" / name
    return path.read_text()


@contextmanager
def replay(scenario: str | None = None) -> Iterator[Replay]:
    state = Replay(base="")

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
            data = body.replace("{base}", state.base).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append(f"POST {self.path}")
            if urlsplit(self.path).path.rstrip("/") != "/identity/v3/auth/tokens":
                self._send(404, '{"error": "not recorded"}')
                return
            password = body.get("auth", {}).get("identity", {}).get("password", {}).get("user", {}).get("password")
            if password != PASSWORD:
                self._send(401, _load(scenario, "token_unauthorized.json"))
                return
            self._send(201, _load(scenario, "token.json"), {"X-Subject-Token": "gAAAAABrecordedtoken"})

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            url = urlsplit(self.path)
            path = url.path.rstrip("/").replace(PROJECT_ID, "{project}")
            route = ROUTES.get(("GET", path))
            if route is None:
                self._send(404, json.dumps({"itemNotFound": {"code": 404, "message": f"{url.path} not found"}}))
                return
            recording, list_key = route
            body = _load(scenario, recording)
            wanted = parse_qs(url.query).get("name")
            if list_key and wanted:
                document = json.loads(body)
                document[list_key] = [item for item in document[list_key] if item.get("name") == wanted[0]]
                body = json.dumps(document)
            self._send(200, body)

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def write_clouds_yaml(path: Path, base: str, password: str = PASSWORD) -> Path:
    path.write_text(
        "clouds:\n"
        "  course:\n"
        "    auth:\n"
        f"      auth_url: {base}/identity/v3\n"
        "      username: teacher\n"
        f"      password: {password}\n"
        "      project_name: distos-course\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        "    region_name: RegionOne\n"
        "    identity_api_version: 3\n"
    )
    return path

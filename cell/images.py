"""Container images built on this machine, for the local real node: no registry is reachable here.

Each image is a `docker save` archive (manifest.json, an image config, one layer tar) that
`ctr images import` reads. The files come from the host's static binaries, which the node role
installs (Debian's busybox-static and catatonit):

- pause: catatonit as /pause, run as `/pause -P` (a pause process: reaps zombies, holds the namespaces);
- web:   busybox's httpd on 8080 serving /www, with /www/healthz answering "ok" (the experiences' web server);
- shell: busybox with every applet linked into /bin (a busybox-like shell image).

Image names are configuration, not code: the pause image's from the node role's local inventory
(playbooks/inventory/local.yml, container_runtime_pause_image), the course's from
cluster/experiences/course/images.yaml, so the cloud can use public images under other names.
Archives are byte-for-byte reproducible (fixed timestamps and owners), so a rebuild is the same image.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cell.catalog import course_images
from cell.errors import CellError
from playbooks import PLAYBOOK_DIR

LOCAL_INVENTORY = PLAYBOOK_DIR / "inventory" / "local.yml"
BUSYBOX = Path("/bin/busybox")
CATATONIT = Path("/usr/bin/catatonit")
PATH_ENV = "PATH=/bin:/usr/bin:/sbin:/usr/sbin"
# Kubernetes' containerd namespace: images elsewhere are invisible to the kubelet.
CRI_NAMESPACE = "k8s.io"
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class ImageSpec:
    """What goes into one image: files by path (bytes with a mode, or a symlink), and how it runs."""

    ref: str
    files: Mapping[str, tuple[bytes, int] | Symlink]
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    exposed_ports: Sequence[int] = ()
    directories: Mapping[str, int] = field(default_factory=dict)  # extra (empty) directories and their modes
    user: str | None = None  # numeric uid:gid, so that the kubelet can check runAsNonRoot (Pod Security)


def _tarinfo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def layer_tar(spec: ImageSpec) -> bytes:
    """One layer holding every file of the image, parents first, in a stable order."""
    directories: dict[str, int] = {}
    for path in spec.files:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directories.setdefault("/".join(parts[:depth]), 0o755)
    directories.update(spec.directories)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directories):
            info = _tarinfo(path)
            info.type = tarfile.DIRTYPE
            info.mode = directories[path]
            tar.addfile(info)
        for path, entry in sorted(spec.files.items()):
            info = _tarinfo(path)
            if isinstance(entry, Symlink):
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tar.addfile(info)
            else:
                data, mode = entry
                info.size = len(data)
                info.mode = mode
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def docker_archive(spec: ImageSpec, architecture: str | None = None) -> bytes:
    """A `docker save` archive of the image: what `ctr images import` and `docker load` read."""
    layer = layer_tar(spec)
    config = {
        "architecture": architecture or host_architecture(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": [PATH_ENV],
            "Entrypoint": list(spec.entrypoint) if spec.entrypoint else None,
            "Cmd": list(spec.cmd) if spec.cmd else None,
            "ExposedPorts": {f"{port}/tcp": {} for port in spec.exposed_ports} or None,
            "WorkingDir": "/",
            **({"User": spec.user} if spec.user else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [spec.ref], "Layers": ["layer.tar"]}]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((config_name, config_bytes), ("layer.tar", layer), ("manifest.json", manifest)):
            info = _tarinfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def host_architecture() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


# --- the course's images ------------------------------------------------------------------------

def _read_static(path: Path, package: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CellError(f"{path} is missing: install Debian's {package} (the node role does: "
                        f"cell up --real-node)") from None


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """The applets this busybox provides (`busybox --list`)."""
    try:
        out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CellError(f"cannot list the applets of {busybox}: {exc}") from None
    return sorted({name for name in out.stdout.split() if name and "/" not in name})


def _busybox_root(busybox: bytes, applets: Sequence[str]) -> dict[str, tuple[bytes, int] | Symlink]:
    files: dict[str, tuple[bytes, int] | Symlink] = {"bin/busybox": (busybox, 0o755)}
    files.update({f"bin/{applet}": Symlink("busybox") for applet in applets if applet != "busybox"})
    files["etc/passwd"] = (b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                           0o644)
    files["etc/group"] = (b"root:x:0:\nnobody:x:65534:\n", 0o644)
    return files


def image_refs(inventory: Path = LOCAL_INVENTORY, experiences_root: Path | None = None) -> dict[str, str]:
    """Role -> image reference: pause from the node role's local inventory, the rest from the course."""
    try:
        document = yaml.safe_load(inventory.read_text())
        pause = document["all"]["vars"]["container_runtime_pause_image"]
    except FileNotFoundError:
        raise CellError(f"{inventory} is missing") from None
    except (yaml.YAMLError, KeyError, TypeError):
        raise CellError(f"{inventory}: no all.vars.container_runtime_pause_image") from None
    refs = {"pause": str(pause), **course_images(experiences_root)}
    for role in ("web", "shell"):
        if role not in refs:
            raise CellError(f"the course configures no {role!r} image (cluster/experiences/course/images.yaml)")
    return refs


def course_image_specs(refs: Mapping[str, str], busybox: Path = BUSYBOX,
                       catatonit: Path = CATATONIT) -> list[ImageSpec]:
    busybox_bytes = _read_static(busybox, "busybox-static")
    root = _busybox_root(busybox_bytes, busybox_applets(busybox))
    tmp = {"tmp": 0o1777, "root": 0o700}
    # Student namespaces enforce Pod Security "restricted" (SPEC §9): the course images run as
    # nobody. httpd listens on 8080, which needs no privilege.
    nobody = "65534:65534"
    return [
        ImageSpec(refs["pause"], {"pause": (_read_static(catatonit, "catatonit"), 0o755)},
                  entrypoint=["/pause", "-P"]),
        ImageSpec(refs["web"], {**root, "www/healthz": (b"ok\n", 0o644),
                                "www/index.html": (b"hello from a Cell web pod\n", 0o644)},
                  entrypoint=["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
                  exposed_ports=[8080], directories=tmp, user=nobody),
        ImageSpec(refs["shell"], root, cmd=["/bin/sh"], directories=tmp, user=nobody),
    ]


def build_archives(specs: Sequence[ImageSpec], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        path = out_dir / (spec.ref.replace("/", "_").replace(":", "_") + ".tar")
        path.write_bytes(docker_archive(spec))
        paths.append(path)
    return paths


def import_archives(archives: Sequence[Path], containerd_socket: Path, log: Path) -> None:
    """Import into containerd's Kubernetes namespace, unpacked for the CRI's snapshotter."""
    for archive in archives:
        cmd = ["ctr", "--address", str(containerd_socket), "--namespace", CRI_NAMESPACE, "images", "import",
               "--snapshotter", "overlayfs", str(archive)]
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(cmd)}\n")
            handle.flush()
            result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, timeout=120)
        if result.returncode != 0:
            raise CellError(f"ctr could not import {archive.name} into containerd (exit {result.returncode}); "
                            f"log: {log}")


def imported_refs(containerd_socket: Path) -> set[str]:
    result = subprocess.run(["ctr", "--address", str(containerd_socket), "--namespace", CRI_NAMESPACE,
                             "images", "list", "--quiet"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise CellError(f"ctr cannot list containerd's images: {result.stderr.strip()[:200]}")
    return set(result.stdout.split())

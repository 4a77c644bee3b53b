"""The locally built images (cell/images.py): docker-save archives that ctr and docker read.

No cluster and no containerd needed; the real import and run are in test_node.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from cell import images
from cell.errors import CellError

BUSYBOX_PRESENT = images.BUSYBOX.is_file() and images.CATATONIT.is_file()
needs_binaries = pytest.mark.skipif(not BUSYBOX_PRESENT, reason="busybox-static and catatonit not installed")


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _layer_entries(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


SPEC = images.ImageSpec(
    "example.test/tool:2", {"bin/tool": (b"#!/bin/sh\necho hi\n", 0o755), "bin/alias": images.Symlink("tool"),
                            "etc/motd": (b"hello\n", 0o644)},
    entrypoint=["/bin/tool"], cmd=["--flag"], exposed_ports=[8080], directories={"tmp": 0o1777})


def test_archive_is_a_docker_save_with_one_layer_matching_its_diff_id() -> None:
    members = _members(images.docker_archive(SPEC, architecture="amd64"))
    (manifest,) = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == ["example.test/tool:2"] and manifest["Layers"] == ["layer.tar"]
    config_bytes = members[manifest["Config"]]
    assert manifest["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"  # content-addressed
    config = json.loads(config_bytes)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(members["layer.tar"]).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/bin/tool"] and config["config"]["Cmd"] == ["--flag"]
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}


def test_layer_holds_files_links_and_parent_directories_with_their_modes() -> None:
    entries = _layer_entries(images.layer_tar(SPEC))
    assert entries["bin"].isdir() and entries["etc"].isdir()
    assert entries["tmp"].isdir() and entries["tmp"].mode == 0o1777
    assert entries["bin/tool"].isfile() and entries["bin/tool"].mode == 0o755
    assert entries["bin/alias"].issym() and entries["bin/alias"].linkname == "tool"
    assert all(e.uid == 0 and e.gid == 0 and e.mtime == 0 for e in entries.values())
    names = list(entries)
    assert names.index("bin") < names.index("bin/tool")  # parents before children


def test_archives_are_reproducible_and_differ_when_content_does() -> None:
    assert images.docker_archive(SPEC) == images.docker_archive(SPEC)
    other = images.ImageSpec(SPEC.ref, {**SPEC.files, "etc/motd": (b"bye\n", 0o644)}, SPEC.entrypoint)
    assert images.docker_archive(other) != images.docker_archive(SPEC)


def test_image_names_come_from_configuration(tmp_path: Path) -> None:
    inventory = tmp_path / "local.yml"
    inventory.write_text("all:\n  vars:\n    container_runtime_pause_image: mirror.test/pause:9\n")
    course = tmp_path / "experiences" / "course"
    course.mkdir(parents=True)
    (course / "images.yaml").write_text("kind: ConfigMap\ndata:\n  web: mirror.test/web:3\n  shell: mirror.test/sh:1\n")
    assert images.image_refs(inventory, tmp_path / "experiences") == {
        "pause": "mirror.test/pause:9", "web": "mirror.test/web:3", "shell": "mirror.test/sh:1"}


def test_the_repositorys_configuration_names_the_local_images() -> None:
    refs = images.image_refs()
    assert refs["pause"] == "cell.local/pause:1.0"
    assert {refs["web"], refs["shell"]} == {"cell.local/web:1.0", "cell.local/shell:1.0"}


def test_missing_image_configuration_is_one_clear_error(tmp_path: Path) -> None:
    inventory = tmp_path / "local.yml"
    inventory.write_text("all:\n  vars: {}\n")
    with pytest.raises(CellError, match="container_runtime_pause_image"):
        images.image_refs(inventory)
    course = tmp_path / "experiences" / "course"
    course.mkdir(parents=True)
    (course / "images.yaml").write_text("kind: ConfigMap\ndata:\n  web: a/web:1\n")
    inventory.write_text("all:\n  vars:\n    container_runtime_pause_image: p:1\n")
    with pytest.raises(CellError, match="no 'shell' image"):
        images.image_refs(inventory, tmp_path / "experiences")


@needs_binaries
def test_course_images_run_what_the_experiences_expect() -> None:
    refs = {"pause": "t/pause:1", "web": "t/web:1", "shell": "t/shell:1"}
    pause, web, shell = images.course_image_specs(refs)
    assert pause.entrypoint == ["/pause", "-P"] and set(pause.files) == {"pause"}
    # The web server the experiences probe: /healthz on 8080.
    assert web.entrypoint is not None and list(web.entrypoint[:2]) == ["/bin/busybox", "httpd"]
    assert "8080" in web.entrypoint and web.files["www/healthz"] == (b"ok\n", 0o644)
    # A busybox-like shell: every applet on PATH.
    for applet in ("sh", "sleep", "wget", "cat", "ls"):
        assert shell.files[f"bin/{applet}"] == images.Symlink("busybox")
    assert shell.cmd == ["/bin/sh"]


def test_missing_host_binaries_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CellError, match="busybox-static"):
        images.course_image_specs({"pause": "p", "web": "w", "shell": "s"}, busybox=tmp_path / "busybox")

"""The upstream build's pure parts: the wrapper go.mod and the version checks."""

from __future__ import annotations

import io
import stat
import threading
from pathlib import Path

import pytest
from rich.console import Console

from cell import upstream
from cell.errors import CellError

UPSTREAM_GOMOD = """module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/kube-scheduler => ./staging/src/k8s.io/kube-scheduler
\tk8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
)
"""


def test_wrapper_gomod_replaces_every_staging_module_with_its_published_twin() -> None:
    text = upstream.kubernetes_wrapper_gomod(UPSTREAM_GOMOD, "1.34.4")
    assert "require k8s.io/kubernetes v1.34.4" in text
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in text
    assert "\tk8s.io/kube-scheduler => k8s.io/kube-scheduler v0.34.4" in text
    assert "\tk8s.io/sample-controller => k8s.io/sample-controller v0.34.4" in text
    assert "godebug default=go1.24" in text
    assert "go 1.24.0" in text
    assert "./staging" not in text


def test_wrapper_gomod_refuses_a_gomod_without_staging_replaces() -> None:
    with pytest.raises(CellError, match="no staging replaces"):
        upstream.kubernetes_wrapper_gomod("module k8s.io/kubernetes\n\ngo 1.24.0\n", "1.34.4")


def _fake_binary(directory: Path, name: str, output: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_check_binary_reports_missing_wrong_version_and_ok(tmp_path: Path) -> None:
    binary = upstream.Binary("kube-apiserver", ("--version",), "v1.34.4")
    assert upstream.check_binary(tmp_path, binary) == "kube-apiserver: missing"
    _fake_binary(tmp_path, "kube-apiserver", "Kubernetes v0.0.0-master")
    problem = upstream.check_binary(tmp_path, binary)
    assert problem is not None and "expected v1.34.4" in problem
    _fake_binary(tmp_path, "kube-apiserver", "Kubernetes v1.34.4")
    assert upstream.check_binary(tmp_path, binary) is None


def test_missing_go_toolchain_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CellError, match="no Go toolchain"):
        upstream.go_toolchain()


def test_failed_build_names_the_step_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("")
    with pytest.raises(CellError, match=r"building nothing failed .*full log: .*build\.log"):
        upstream._run(["sh", "-c", "echo compile error >&2; exit 2"], tmp_path, log, {"PATH": "/usr/bin:/bin"},
                      "building nothing")


def test_go_imports_reads_the_import_block_with_aliases_and_blank_imports() -> None:
    source = '''package e2e

import "testing"

import (
\t"flag"

\t// a comment
\t"github.com/onsi/ginkgo/v2"
\tyaml "go.yaml.in/yaml/v2"
\t_ "k8s.io/kubernetes/test/e2e/apps"
)

func f() { _ = "not/an/import" }
'''
    assert upstream.go_imports(source) == ["flag", "github.com/onsi/ginkgo/v2", "go.yaml.in/yaml/v2",
                                           "k8s.io/kubernetes/test/e2e/apps", "testing"]


def test_e2e_test_is_not_one_of_the_binaries_cell_build_makes() -> None:
    # `make install` builds expected_binaries(): e2e.test (6 minutes more) only when asked for.
    assert upstream.E2E_BINARY.name not in {b.name for b in upstream.expected_binaries()}
    assert upstream.E2E_BINARY.expect == f"v{upstream.KUBERNETES_VERSION}"


def test_a_second_build_waits_for_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "cache_root", lambda: tmp_path)
    first_in, release, second_in = threading.Event(), threading.Event(), threading.Event()
    said = io.StringIO()

    def first() -> None:
        with upstream.build_lock(Console(file=io.StringIO())):
            first_in.set()
            release.wait(10)

    def second() -> None:
        with upstream.build_lock(Console(file=said)):
            second_in.set()

    holder = threading.Thread(target=first)
    holder.start()
    assert first_in.wait(10)
    waiter = threading.Thread(target=second)
    waiter.start()
    assert not second_in.wait(0.5), "the second build ran beside the first"
    assert "waiting for it to finish" in said.getvalue()
    release.set()
    assert second_in.wait(10)
    holder.join(10)
    waiter.join(10)

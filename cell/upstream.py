"""Build and cache the upstream binaries Cell runs: Kubernetes 1.34, etcd 3.6 and KWOK.

Nothing can be downloaded here but Go modules, so each binary is built from the Go module proxy:
Kubernetes through a small wrapper module that requires `k8s.io/kubernetes` and replaces every
staging module with its published `v0.34.x` twin (the list is read from the tag's own go.mod, so a
version bump needs no hand edits); etcd through a wrapper `main` calling `etcdmain.Main`; KWOK with
`go install`. Results land in ~/.cache/cell/bin/<key>/ and are reused once `--version` checks pass.
Upstream's e2e suite (`e2e.test`, for `make conformance`) is built on request only, from the same wrapper.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cell.errors import CellError
from cell.settings import settings

KUBERNETES_VERSION = "1.34.4"
ETCD_VERSION = "3.6.16"
KWOK_VERSION = "0.8.0"
# Oldest Go that builds all three (Kubernetes 1.34's go.mod says go 1.24.0).
MIN_GO = (1, 24)

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl", "kubelet")
# kubelet needs cgo (cadvisor); upstream builds the control plane statically (hack/lib/golang.sh).
CGO_COMMANDS = {"kubelet"}


def cache_root() -> Path:
    return settings().cache_dir


def bin_dir() -> Path:
    """Where the binaries of the pinned versions live once built."""
    return cache_root() / "bin" / f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"


@dataclass(frozen=True)
class Binary:
    name: str
    version_args: tuple[str, ...]
    expect: str  # substring the version output must contain


def expected_binaries() -> list[Binary]:
    kube = [Binary(cmd, ("--version",), f"v{KUBERNETES_VERSION}") for cmd in KUBE_COMMANDS if cmd != "kubectl"]
    kube.append(Binary("kubectl", ("version", "--client"), f"v{KUBERNETES_VERSION}"))
    return [
        *kube,
        Binary("etcd", ("--version",), ETCD_VERSION),
        Binary("kwok", ("--version",), KWOK_VERSION),
    ]


def check_binary(directory: Path, binary: Binary) -> str | None:
    """None if the binary exists and reports the pinned version, else what is wrong."""
    path = directory / binary.name
    if not path.is_file():
        return f"{binary.name}: missing"
    try:
        out = subprocess.run([str(path), *binary.version_args], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"{binary.name}: cannot run ({exc})"
    text = out.stdout + out.stderr
    if binary.expect not in text:
        return f"{binary.name}: reports {text.strip()[:80]!r}, expected {binary.expect}"
    return None


# KWOK's own stage definitions (shipped in its module, not its binary): nodes become Ready and renew
# leases, pods become Ready, Jobs' pods complete, deleted pods go away.
KWOK_STAGES = ("node/fast", "node/heartbeat-with-lease", "pod/fast")
KWOK_STAGES_FILE = "kwok-stages.yaml"

# Upstream's e2e suite is a Go test binary (`go test -c`, as hack/lib/golang.sh builds it); optional, since it
# only serves `make conformance` and costs about 6 minutes more than the rest.
E2E_PACKAGE = "k8s.io/kubernetes/test/e2e"
E2E_BINARY = Binary("e2e.test", ("--version",), f"v{KUBERNETES_VERSION}")
# Ginkgo's CLI runs e2e.test's specs in parallel processes (upstream's hack/ginkgo-e2e.sh does the same);
# the version is the one the Kubernetes tag requires, so the CLI and the suite's library agree.
GINKGO_PACKAGE = "github.com/onsi/ginkgo/v2/ginkgo"
GINKGO_BINARY = Binary("ginkgo", ("version",), "Ginkgo Version 2.")


def cached_binaries_ok(directory: Path | None = None) -> bool:
    directory = directory or bin_dir()
    return (directory / KWOK_STAGES_FILE).is_file() and all(
        check_binary(directory, b) is None for b in expected_binaries())


def go_toolchain() -> Path:
    """The `go` binary, checked to be new enough, or a one-line CellError."""
    go = shutil.which("go")
    if go is None:
        raise CellError("no Go toolchain on PATH: install Go >= 1.24 (it only builds Kubernetes, etcd and KWOK)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", out)
    if not match or (int(match.group(1)), int(match.group(2))) < MIN_GO:
        raise CellError(f"Go {out or 'of unknown version'} is too old: Kubernetes {KUBERNETES_VERSION} needs "
                        f"Go >= {MIN_GO[0]}.{MIN_GO[1]}")
    return Path(go)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOWORK="off", GOFLAGS="-mod=mod -buildvcs=false", GOTOOLCHAIN="local")
    return env


def _run(cmd: list[str], cwd: Path, log: Path, env: dict[str, str], what: str, nice: int = 0) -> None:
    if nice:
        # Go's compiler processes inherit the priority: a long build yields the CPU to everything else.
        cmd = ["nice", "-n", str(nice), *cmd]
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        result = subprocess.run(cmd, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise CellError(f"{what} failed ({tail[0][:160]}); full log: {log}")


def kubernetes_wrapper_gomod(upstream_gomod: str, version: str) -> str:
    """A go.mod requiring k8s.io/kubernetes@version, every staging module replaced by its v0.x twin.

    The staging list comes from the tag's own replace block (`k8s.io/x => ./staging/src/k8s.io/x`);
    newer tags add modules, so it is never written by hand.
    """
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", upstream_gomod, flags=re.MULTILINE)
    if not staging:
        raise CellError(f"k8s.io/kubernetes v{version}: no staging replaces found in its go.mod")
    go_line = re.search(r"^go (\S+)$", upstream_gomod, flags=re.MULTILINE)
    godebug = re.search(r"^godebug .*$", upstream_gomod, flags=re.MULTILINE)
    staging_version = "v0." + version.split(".", 1)[1]
    lines = ["module cell.distos.dev/upstream/kubernetes", "", f"go {go_line.group(1) if go_line else '1.24.0'}", ""]
    if godebug:
        lines += [godebug.group(0), ""]
    lines += [f"require k8s.io/kubernetes v{version}", "", "replace ("]
    lines += [f"\t{module} => {module} {staging_version}" for module in staging]
    lines += [")", ""]
    return "\n".join(lines)


def go_imports(source: str) -> list[str]:
    """The import paths of one Go source file (its import block and single-line imports)."""
    paths: list[str] = []
    for block in re.findall(r"^import\s*\((.*?)^\)", source, flags=re.MULTILINE | re.DOTALL):
        paths += re.findall(r'^\s*(?:[\w.]+\s+)?"([^"]+)"', block, flags=re.MULTILINE)
    paths += re.findall(r'^import\s+(?:[\w.]+\s+)?"([^"]+)"', source, flags=re.MULTILINE)
    return paths


def _tools_go(imports: list[str]) -> str:
    body = "\n".join(f'\t_ "{path}"' for path in imports)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{body}\n)\n"


def _version_ldflags() -> str:
    major, minor, _ = KUBERNETES_VERSION.split(".")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion=v{KUBERNETES_VERSION}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
                  f"-X {pkg}.buildDate=1970-01-01T00:00:00Z"]
    return " ".join(flags)


class _Builder:
    def __init__(self, go: Path, work: Path, out: Path, log: Path, nice: int = 0) -> None:
        self.go, self.work, self.out, self.log, self.nice = str(go), work, out, log, nice
        self.env = _go_env()

    def _kubernetes_module(self, cwd: Path) -> dict[str, str]:
        info = subprocess.run([self.go, "mod", "download", "-json", f"k8s.io/kubernetes@v{KUBERNETES_VERSION}"],
                              capture_output=True, text=True, env=self.env, cwd=cwd)
        if info.returncode != 0:
            raise CellError(f"cannot fetch k8s.io/kubernetes v{KUBERNETES_VERSION} from the Go module proxy: "
                            f"{(info.stderr or info.stdout).strip().splitlines()[-1:]}")
        module: dict[str, str] = json.loads(info.stdout)
        return module

    def _wrapper(self, name: str, imports: list[str] | None = None) -> Path:
        src = self.work / name
        src.mkdir(parents=True, exist_ok=True)
        module = self._kubernetes_module(src)
        (src / "go.mod").write_text(kubernetes_wrapper_gomod(Path(module["GoMod"]).read_text(), KUBERNETES_VERSION))
        if imports is None:
            # `go mod tidy` resolves the tests of the main module's packages only, never a dependency's: the
            # e2e suite's test file imports every spec package, so the wrapper imports them itself.
            imports = [E2E_PACKAGE, GINKGO_PACKAGE,
                       *go_imports((Path(module["Dir"]) / "test/e2e/e2e_test.go").read_text())]
        (src / "tools.go").write_text(_tools_go(sorted(set(imports))))
        _run([self.go, "mod", "tidy"], src, self.log, self.env, f"resolving Kubernetes modules for {name} "
             "(go mod tidy)", self.nice)
        return src

    def prepare_kubernetes(self) -> Path:
        return self._wrapper("kubernetes", [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS])

    def prepare_e2e(self) -> Path:
        return self._wrapper("kubernetes-e2e")

    def build_e2e(self, src: Path) -> None:
        _run([self.go, "test", "-c", "-trimpath", "-tags", "selinux,notest", "-ldflags", _version_ldflags(),
              "-o", str(self.out / E2E_BINARY.name), E2E_PACKAGE],
             src, self.log, dict(self.env, CGO_ENABLED="0"), "building e2e.test", self.nice)
        _run([self.go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(self.out / GINKGO_BINARY.name),
              GINKGO_PACKAGE], src, self.log, dict(self.env, CGO_ENABLED="0"), "building ginkgo", self.nice)

    def build_kubernetes(self, src: Path, command: str) -> None:
        env = dict(self.env, CGO_ENABLED="1" if command in CGO_COMMANDS else "0")
        _run([self.go, "build", "-trimpath", "-tags", "selinux,notest", "-ldflags", _version_ldflags(),
              "-o", str(self.out / command), f"k8s.io/kubernetes/cmd/{command}"],
             src, self.log, env, f"building {command}")

    def build_etcd(self) -> None:
        src = self.work / "etcd"
        src.mkdir(parents=True, exist_ok=True)
        (src / "go.mod").write_text(f"module cell.distos.dev/upstream/etcd\n\ngo 1.24\n\n"
                                    f"require go.etcd.io/etcd/server/v3 v{ETCD_VERSION}\n")
        # etcd's own main (server/main.go) is exactly this call; `go install` fails on its replaces.
        (src / "main.go").write_text('package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)'
                                     "\n\nfunc main() {\n\tetcdmain.Main(os.Args)\n}\n")
        _run([self.go, "mod", "tidy"], src, self.log, self.env, "resolving etcd modules (go mod tidy)")
        _run([self.go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(self.out / "etcd"), "."],
             src, self.log, dict(self.env, CGO_ENABLED="0"), "building etcd")

    def build_kwok(self) -> None:
        env = dict(self.env, GOBIN=str(self.out), CGO_ENABLED="0")
        env["GOFLAGS"] = "-buildvcs=false"
        _run([self.go, "install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@v{KWOK_VERSION}"],
             self.work, self.log, env, "building kwok")
        info = subprocess.run([self.go, "mod", "download", "-json", f"sigs.k8s.io/kwok@v{KWOK_VERSION}"],
                              capture_output=True, text=True, env=env, cwd=self.work)
        if info.returncode != 0:
            raise CellError(f"cannot fetch sigs.k8s.io/kwok v{KWOK_VERSION} for its stages: {info.stderr.strip()}")
        stage_root = Path(json.loads(info.stdout)["Dir"]) / "kustomize" / "stage"
        documents = [path.read_text() for stage in KWOK_STAGES for path in sorted((stage_root / stage).glob("*.yaml"))
                     if path.name != "kustomization.yaml"]
        (self.out / KWOK_STAGES_FILE).write_text("\n---\n".join(doc.strip() for doc in documents) + "\n")


@contextlib.contextmanager
def build_lock(console: Console) -> Iterator[None]:
    """One cell build at a time: two callers at once (make install beside a test session) would build
    into one staging directory; the second waits for the first, then finds the binaries built."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / "build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print("Another cell build is running; waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_binaries(force: bool = False, console: Console | None = None) -> Path:
    """Return the directory of the pinned binaries, building what is missing (with progress)."""
    console = console or Console(stderr=True)
    final = bin_dir()
    if not force and cached_binaries_ok(final):
        return final
    with build_lock(console):
        if not force and cached_binaries_ok(final):
            return final
        return _build(final, force, console)


def _e2e_ok(directory: Path) -> bool:
    return all(check_binary(directory, b) is None for b in (E2E_BINARY, GINKGO_BINARY))


def ensure_e2e(force: bool = False, console: Console | None = None) -> Path:
    """The path of upstream's e2e.test beside the other binaries (and ginkgo, its parallel runner),
    built (at the lowest priority) if missing."""
    console = console or Console(stderr=True)
    directory = ensure_binaries(console=console)
    path = directory / E2E_BINARY.name
    if not force and _e2e_ok(directory):
        return path
    # The same lock as ensure_binaries: a `cell build` beside this would move the directory away.
    with build_lock(console):
        if not force and _e2e_ok(directory):
            return path
        log = cache_root() / "build-e2e.log"
        log.write_text(f"Cell e2e.test build, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        staging = directory / (E2E_BINARY.name + ".partial")
        builder = _Builder(go_toolchain(), cache_root() / "src", staging, log, nice=19)
        staging.mkdir(exist_ok=True)
        console.print(f"Building e2e.test at low priority (cold build: about 6 minutes on 2 cores; log: {log})")
        started = time.monotonic()
        builder.build_e2e(builder.prepare_e2e())
        for binary in (E2E_BINARY, GINKGO_BINARY):
            problem = check_binary(staging, binary)
            if problem:
                raise CellError(f"{problem}; build log: {log}")
        for binary in (GINKGO_BINARY, E2E_BINARY):  # e2e.test last: present means complete
            (staging / binary.name).replace(directory / binary.name)
        shutil.rmtree(staging)
        console.print(f"Built e2e.test and ginkgo in {time.monotonic() - started:.0f} s: {path}")
    return path


def _build(final: Path, force: bool, console: Console) -> Path:
    go = go_toolchain()
    work = cache_root() / "src"
    work.mkdir(parents=True, exist_ok=True)
    log = cache_root() / "build.log"
    log.write_text(f"Cell upstream build, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    staging = final.with_name(final.name + ".partial")
    if final.exists() and not staging.exists():
        final.rename(staging)  # keep what already passes its check; rebuild only the rest
    staging.mkdir(parents=True, exist_ok=True)
    builder = _Builder(go, work, staging, log)
    missing = [b for b in expected_binaries() if force or check_binary(staging, b) is not None
               or (b.name == "kwok" and not (staging / KWOK_STAGES_FILE).is_file())]
    console.print(f"Building {', '.join(b.name for b in missing)} (cold build: about 10 minutes on 2 cores; "
                  f"log: {log})")
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("upstream binaries", total=len(missing))
        kube_src: Path | None = None
        for binary in missing:
            progress.update(overall, description=f"building {binary.name}")
            if binary.name in KUBE_COMMANDS:
                if kube_src is None:
                    progress.update(overall, description="resolving k8s.io/kubernetes modules")
                    kube_src = builder.prepare_kubernetes()
                    progress.update(overall, description=f"building {binary.name}")
                builder.build_kubernetes(kube_src, binary.name)
            elif binary.name == "etcd":
                builder.build_etcd()
            else:
                builder.build_kwok()
            problem = check_binary(staging, binary)
            if problem:
                raise CellError(f"{problem}; build log: {log}")
            progress.advance(overall)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    console.print(f"Built upstream binaries in {time.monotonic() - started:.0f} s: {final}")
    return final

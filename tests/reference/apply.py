"""Apply an experience's reference solution (or one typical mistake) into a student's namespace.

    .venv/bin/python tests/reference/apply.py exp1-orchestration --student alice
    .venv/bin/python tests/reference/apply.py exp2-borg --student bob --mistake pod-outside-alloc
    .venv/bin/python tests/reference/apply.py --list

It first applies the experience itself for that student (idempotent, as `cell experience apply`
does), then works as the student: with the student's kubeconfig when the cell has one, through
kubectl, waiting for the cell to settle so that `cell grade` right after sees the result. Not part
of the student-facing CLI: `make demo-grade` and the integration tests use it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cell.errors import CellError
from cell.experiences import apply_experience, discover_students
from cell.grading import ClusterView
from cell.kube import connect, find_kubectl
from cell.state import CellPaths, admin_kubeconfig
from tests.reference import catalog

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Manifest = dict[str, Any]


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class KubectlBackend:
    """catalog.Backend on a real cell: kubectl as the student for changes, the admin's view for reads."""

    def __init__(self, namespace: str, kubectl: Path, kubeconfig: Path, api: ApiClient,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.namespace = namespace
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self.view = ClusterView(api, namespace)
        self.log = log

    def _kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.kubectl), f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, *args],
                              input=stdin, capture_output=True, text=True, timeout=120, check=False)

    def apply(self, manifests: list[Manifest]) -> str | None:
        result = self._kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests, sort_keys=False))
        if result.returncode == 0:
            return None
        refusal = _first_line(result.stderr)
        self.log(f"{self.namespace}: refused: {refusal}")
        return refusal

    def get(self, kind: str, name: str) -> Manifest | None:
        return self.view.get(kind, name)

    def list(self, kind: str) -> list[Manifest]:
        return self.view.list(kind)

    def evict(self, pod: str) -> str:
        body = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}})
        result = self._kubectl("create", "--raw", f"/api/v1/namespaces/{self.namespace}/pods/{pod}/eviction",
                               "-f", "-", stdin=body)
        return _first_line(result.stderr if result.returncode else result.stdout)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if time.monotonic() >= deadline:
                self.log(f"{self.namespace}: still waiting for {what} after {timeout:.0f} s; going on")
                return False
            time.sleep(0.5)


def student_kubeconfig(state_dir: Path | None, student: str, admin: Path) -> Path:
    """The student's own kubeconfig (so RBAC applies), else the admin's."""
    own = CellPaths(state_dir).student_kubeconfig(student)
    return own if own.is_file() else admin


def apply_reference(experience: str, student: str, *, admin_kubeconfig: Path, kubectl: Path, api: ApiClient,
                    state_dir: Path | None = None, mistake: str | None = None, as_admin: bool = False,
                    timeout: float = 90.0, log: Callable[[str], None] = lambda line: None) -> list[Manifest]:
    """Apply the experience for student, then its reference (or mistake) as the student; the manifests applied."""
    apply_experience(experience, kubeconfig=admin_kubeconfig, kubectl=kubectl, api=api, student=student)
    namespace = discover_students(api, student)[0].namespace
    kubeconfig = admin_kubeconfig if as_admin else student_kubeconfig(state_dir, student, admin_kubeconfig)
    backend = KubectlBackend(namespace, kubectl, kubeconfig, api, log)
    try:
        return catalog.apply_solution(experience, backend, mistake_name=mistake, timeout=timeout)
    except catalog.SolutionError as exc:
        raise CellError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experience", nargs="?", choices=catalog.EXPERIENCES)
    parser.add_argument("--student", help="the student whose namespace gets the solution")
    parser.add_argument("--mistake", help="apply this typical mistake instead of the full solution")
    parser.add_argument("--list", action="store_true", help="list the typical mistakes and exit")
    parser.add_argument("--state-dir", type=Path, help="state directory of the local cell")
    parser.add_argument("--kubeconfig", type=Path, help="admin kubeconfig (default: the local cell's)")
    parser.add_argument("--as-admin", action="store_true", help="apply with the admin's kubeconfig")
    args = parser.parse_args(argv)
    if args.list:
        for m in catalog.MISTAKES:
            print(f"{m.experience:20} {m.name:28} task {m.task}: {m.what}")
        return 0
    if not args.experience or not args.student:
        parser.error("EXPERIENCE and --student are required")
    try:
        if args.mistake:
            catalog.mistake(args.experience, args.mistake)
        admin = admin_kubeconfig(args.kubeconfig, args.state_dir)
        api = connect(admin)
        apply_reference(args.experience, args.student, admin_kubeconfig=admin, kubectl=find_kubectl(args.state_dir),
                        api=api, state_dir=args.state_dir, mistake=args.mistake, as_admin=args.as_admin,
                        log=lambda line: print(line, file=sys.stderr))
    except (CellError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 1
    what = f"mistake {args.mistake}" if args.mistake else "reference solution"
    print(f"{args.experience}: {what} applied for {args.student}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

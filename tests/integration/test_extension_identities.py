"""Cell's extender, webhook and operator act as their own users with the RBAC of
cluster/base/rbac-extensions.yaml, not as the cell's admin. That those roles are enough is shown
by the rest of the suite, which runs against extensions holding nothing more."""

from __future__ import annotations

import subprocess

import pytest

from cell.localcell.supervisor import LocalCell
from cell.localcell.topology import EXTENSION_USERS

pytestmark = pytest.mark.cluster

# (extension, verb, resource, flags, allowed): what each one needs, and what it must not be able to do.
PERMISSIONS = [
    ("extender", "watch", "pods", ["-A"], True),
    ("extender", "list", "allocs.cell.distos.dev", ["-A"], True),
    ("extender", "get", "nodes", [], True),
    ("extender", "create", "pods", ["-n", "default"], False),
    ("extender", "patch", "nodes", [], False),
    ("webhook", "watch", "bandquotas.cell.distos.dev", ["-A"], True),
    ("webhook", "get", "deployments.apps", ["-n", "default"], True),
    ("webhook", "patch", "bandquotas.cell.distos.dev", ["-n", "default"], False),
    ("webhook", "create", "pods", ["-n", "default"], False),
    ("operator", "patch", "bandquotas.cell.distos.dev", ["-n", "default", "--subresource=status"], True),
    ("operator", "patch", "allocs.cell.distos.dev", ["-n", "default"], True),
    ("operator", "create", "pods", ["-n", "default", "--subresource=eviction"], True),
    ("operator", "delete", "pods", ["-n", "default"], False),
    ("operator", "patch", "bandquotas.cell.distos.dev", ["-n", "default"], False),
]


def _kubectl(local_cell: LocalCell, kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(local_cell.kubectl), f"--kubeconfig={kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("extension", sorted(EXTENSION_USERS))
def test_each_extension_runs_as_its_own_user(local_cell: LocalCell, extension: str) -> None:
    argv = local_cell.component(extension).argv
    kubeconfig = argv[argv.index("--kubeconfig") + 1]
    assert kubeconfig != str(local_cell.kubeconfig), f"{extension} runs with the admin kubeconfig"
    whoami = _kubectl(local_cell, kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout == EXTENSION_USERS[extension]
    # No extension may read Secrets: a leaked extension credential must not open the cell.
    secrets = _kubectl(local_cell, kubeconfig, "auth", "can-i", "get", "secrets", "-A")
    assert secrets.stdout.strip() == "no", (extension, secrets.stdout, secrets.stderr)


@pytest.mark.parametrize(("extension", "verb", "resource", "flags", "allowed"), PERMISSIONS,
                         ids=[f"{e}-{v}-{r.split('.')[0]}" for e, v, r, _, _ in PERMISSIONS])
def test_extension_rbac_is_what_its_code_calls(local_cell: LocalCell, extension: str, verb: str, resource: str,
                                               flags: list[str], allowed: bool) -> None:
    result = _kubectl(local_cell, str(local_cell.kubeconfig), "auth", "can-i", verb, resource, *flags,
                      f"--as={EXTENSION_USERS[extension]}")
    assert result.stdout.strip() == ("yes" if allowed else "no"), (result.stdout, result.stderr)

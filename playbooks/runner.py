"""Running Cell's Ansible playbooks (playbooks/) through ansible-runner, for the local real node
(cell/realnode/) and the OpenStack bootstrap (infra/bootstrap.py) alike."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playbooks import PLAYBOOK_DIR


def run(playbook: str, inventory: Path | Mapping[str, Any], extravars: Mapping[str, Any], private_dir: Path,
        envvars: Mapping[str, str] | None = None) -> Any:
    """Run `playbooks/<playbook>`; returns ansible-runner's Runner (status, rc, stats, events).

    `private_dir` keeps the artifacts (logs) of the last ten runs."""
    import ansible_runner  # type: ignore[import-untyped]  # heavy; only the commands that run Ansible need it

    private_dir.mkdir(parents=True, exist_ok=True)
    # The ansible-playbook beside this Python (the project's venv) first, whatever PATH says.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    return ansible_runner.run(
        private_data_dir=str(private_dir),
        project_dir=str(PLAYBOOK_DIR),
        playbook=playbook,
        inventory=str(inventory) if isinstance(inventory, Path) else dict(inventory),
        extravars=dict(extravars),
        envvars={"ANSIBLE_CONFIG": str(PLAYBOOK_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "PATH": path,
                 **(envvars or {})},
        rotate_artifacts=10,
        quiet=True,
    )


def succeeded(result: Any) -> bool:
    return bool(result.status == "successful" and result.rc == 0)


def failure(result: Any) -> str:
    """One line on a failed run: the host and task that failed and the most telling line Ansible gave."""
    for event in reversed(list(result.events)):
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable"):
            data = event.get("event_data", {})
            return f"on {data.get('host')} at task '{data.get('task')}': {task_error(data.get('res') or {})[:200]}"
    return f"ended {result.status} (rc {result.rc})"


def task_error(res: Mapping[str, Any]) -> str:
    """A failed task's message: a loop's first failed item; the command's stderr, else msg."""
    failed_items = [item for item in res.get("results") or [] if isinstance(item, Mapping) and item.get("failed")]
    if failed_items:
        res = failed_items[0]
    for text in (res.get("stderr"), res.get("msg")):
        lines = [line for line in str(text or "").splitlines() if line.strip()]
        if lines:
            return lines[0]
    return "see the log"


def changed_tasks(result: Any) -> tuple[str, ...]:
    """"host: task" of every task that changed something."""
    return tuple(f"{event['event_data'].get('host')}: {event['event_data'].get('task')}" for event in result.events
                 if event.get("event") == "runner_on_ok"
                 and (event.get("event_data", {}).get("res") or {}).get("changed"))


@dataclass(frozen=True)
class Outcome:
    """What a successful run did: tasks changed and ok over all hosts, and where its logs are."""

    changed: int
    ok: int
    artifacts: Path
    changed_tasks: tuple[str, ...] = ()  # "host: task" of every task that changed something


def outcome(result: Any) -> Outcome:
    stats = result.stats or {}
    return Outcome(changed=sum((stats.get("changed") or {}).values()), ok=sum((stats.get("ok") or {}).values()),
                   artifacts=Path(result.config.artifact_dir), changed_tasks=changed_tasks(result))

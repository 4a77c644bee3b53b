"""Every `CELL_*` environment variable Cell reads, in one object.

Read when asked (not at import), so a test or a wrapper that sets a variable is seen. The CLI's
options default to these values; domain modules ask `settings()` instead of reading os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Settings:
    state_dir: Path          # CELL_STATE_DIR: the local cell's state (default $XDG_STATE_HOME/cell/default)
    experiences_dir: Path    # CELL_EXPERIENCES_DIR: the course's experiences (default cluster/experiences)
    kubectl: Path | None     # CELL_KUBECTL: the kubectl to use (default: the cell's own build, then PATH)
    without: tuple[str, ...]  # CELL_WITHOUT=extender,webhook,operator: extensions a new cell leaves out
    cache_dir: Path          # CELL_CACHE_DIR: built upstream binaries (default ~/.cache/cell)
    realnode_claim_dir: Path  # CELL_REALNODE_CLAIM_DIR: the machine-wide real-node claim (default /run/cell/realnode)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        state_home = Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        kubectl = environ.get("CELL_KUBECTL")
        return cls(
            state_dir=Path(environ.get("CELL_STATE_DIR") or state_home / "cell" / "default"),
            experiences_dir=Path(environ.get("CELL_EXPERIENCES_DIR") or REPO_ROOT / "cluster" / "experiences"),
            kubectl=Path(kubectl) if kubectl else None,
            without=tuple(name.strip() for name in environ.get("CELL_WITHOUT", "").split(",") if name.strip()),
            cache_dir=Path(environ.get("CELL_CACHE_DIR") or Path.home() / ".cache" / "cell"),
            realnode_claim_dir=Path(environ.get("CELL_REALNODE_CLAIM_DIR") or "/run/cell/realnode"),
        )


def settings() -> Settings:
    return Settings.from_env(os.environ)

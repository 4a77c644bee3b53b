"""The course catalog: its experiences (the weekly labs) and the images they use.

An experience is a directory `<experiences>/<name>/` with a handout (README.md), a kustomization
of the manifests each student gets, and grading checks (`grading/`). The experiences live in
cluster/experiences unless CELL_EXPERIENCES_DIR points elsewhere (tests, a course of one's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cell.errors import CellError
from cell.settings import settings

# Shared by every experience (a kustomize base each one includes): the course's image names.
COURSE_BASE = "course"
IMAGES_FILE = "images.yaml"


def experiences_dir() -> Path:
    return settings().experiences_dir.resolve()


@dataclass(frozen=True, slots=True)
class Experience:
    name: str
    path: Path

    @property
    def handout(self) -> Path:
        return self.path / "README.md"

    @property
    def grading_dir(self) -> Path:
        return self.path / "grading"


def list_experiences(root: Path | None = None) -> list[str]:
    root = root or experiences_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / "kustomization.yaml").is_file() and (p / "grading").is_dir())


def find_experience(name: str, root: Path | None = None) -> Experience:
    """The experience called name, or a one-line CellError naming the ones that exist."""
    root = root or experiences_dir()
    known = list_experiences(root)
    if name not in known:
        raise CellError(f"unknown experience {name!r}; known: {', '.join(known) or f'none in {root}'}")
    return Experience(name, root / name)


def course_images(root: Path | None = None) -> dict[str, str]:
    """Role -> image reference (web, shell, ...), from the ConfigMap every experience applies."""
    path = (root or experiences_dir()) / COURSE_BASE / IMAGES_FILE
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CellError(f"course images not configured: {path} is missing") from None
    except yaml.YAMLError as exc:
        raise CellError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    data = (document or {}).get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CellError(f"{path}: expected a ConfigMap whose data maps roles to image references")
    return dict(data)

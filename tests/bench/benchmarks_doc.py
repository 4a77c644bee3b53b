"""docs/benchmarks.md, where each benchmark's `--record` keeps one section between its own two markers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def record_section(begin: str, end: str, lines: Sequence[str], path: Path = BENCHMARKS) -> None:
    """Put `lines` between `begin` and `end` in place of what stood there, or at the end of the file the first
    time; the other benchmarks' sections stay as they are."""
    section = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)

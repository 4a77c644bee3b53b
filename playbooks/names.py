"""The student-name rule, once for every place that accepts a student: `cell students`, the course
code (experiences, grading), the cloud's stack file (infra/config.py) and the students role, which
runs this module (`python -m playbooks.names NAME...`) before it renders anything.

A student's name names a namespace and a user, so it is what Kubernetes accepts for a namespace: a
DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, at
most 63 characters; a leading digit is allowed), and none of Kubernetes' own namespaces.
"""

from __future__ import annotations

import re
import sys

STUDENT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
RULE = ("a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit, "
        "at most 63 characters)")


def student_name_error(name: str) -> str | None:
    """Why `name` cannot be a student's, or None if it can."""
    if not STUDENT_NAME.match(name):
        return f"{name!r} is not a valid student name: {RULE}"
    if name in RESERVED_NAMESPACES or name.startswith("kube-"):
        return f"{name!r} is reserved for Kubernetes' own namespaces"
    return None


def main(names: list[str]) -> int:
    """Every bad name on its own line on stderr; exit 1 if there is one."""
    errors = [error for error in map(student_name_error, names) if error]
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Cell's Ansible project (the roles and playbooks beside this file), and the Python both sides of
Cell share with it: the local cell (cell/) and the cloud's Pulumi program (infra/) run playbooks
through `playbooks.runner`, and the student-name rule the students role applies is `playbooks.names`.

It imports nothing of cell/ or infra/, so both can use it without importing each other.
"""

from pathlib import Path

PLAYBOOK_DIR = Path(__file__).resolve().parent

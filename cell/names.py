"""Cell's labels and names: what marks a student's namespace, a real node, a failure domain, and
who a student is (the one student-name rule, shared with infra/ and the students role)."""

from __future__ import annotations

from playbooks.names import student_name_error
from scheduler_ext.policy.model import RACK_LABEL, ZONE_LABEL

__all__ = ["RACK_LABEL", "ZONE_LABEL", "student_name_error"]

# A student is a namespace labelled managed (quota admission applies) and with the student's name.
MANAGED_LABEL = "cell.distos.dev/managed"
STUDENT_LABEL = "cell.distos.dev/student"
STUDENT_GROUP = "cell:students"   # the students' client certificates' organisation
STUDENT_ROLE = "cell:student"     # cluster/base/rbac-students.yaml
EXPERIENCE_LABEL = "cell.distos.dev/experience"

# Borg's failure domains on every node are the policy's: ZONE_LABEL and RACK_LABEL.
# A real node (cell/realnode/): labelled, and tainted NoSchedule with the same key.
REAL_LABEL = "cell.distos.dev/real"
# The annotation KWOK manages its simulated nodes by.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

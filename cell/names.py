"""Cell's labels and names as cell/ uses them: the labels (from scheduler_ext.kube.names, where the
extensions take them too), the students' group and role, and who a student is (the one
student-name rule, playbooks/names.py, shared with infra/ and the students role)."""

from __future__ import annotations

from playbooks.names import student_name_error
from scheduler_ext.kube.names import (
    EXPERIENCE_LABEL,
    MANAGED_LABEL,
    RACK_LABEL,
    REAL_LABEL,
    STUDENT_LABEL,
    ZONE_LABEL,
)

__all__ = ["EXPERIENCE_LABEL", "KWOK_NODE_ANNOTATION", "MANAGED_LABEL", "RACK_LABEL", "REAL_LABEL", "STUDENT_GROUP",
           "STUDENT_LABEL", "STUDENT_ROLE", "ZONE_LABEL", "student_name_error"]

STUDENT_GROUP = "cell:students"   # the students' client certificates' organisation
STUDENT_ROLE = "cell:student"     # cluster/base/rbac-students.yaml
# The annotation KWOK manages its simulated nodes by.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

"""Grading: run an experience's checks against every student's namespace, and report (SPEC §6, §8).

The checks are plain pytest tests in `cluster/experiences/<name>/grading/test_*.py`:

    WEB = pytest.mark.task(1, "Deployment web", points=2)

    @WEB
    def test_web_replicas(cluster: ClusterView) -> None:
        web = cluster.require("Deployment", "web")
        replicas = web["spec"].get("replicas")
        assert replicas == 3, f"Deployment web asks for {replicas} replicas, expected 3"

One pytest session grades the whole class: every check is parametrized over the students, so
there is no process per student or per check. A task earns its points only when every check
marked with it passes, so one mistake costs exactly its task's points; the assertion message is
the reason the student reads. Checks only read the cluster (ClusterView has no write method); the
one declared exception is `self_healing`, which deletes a pod and waits for its replacement. Those
checks run last, for all students at once, so no read check sees a pod that is being replaced.

Fixtures a check may ask for: `student` and `namespace` (str), `cluster` (ClusterView of the
student's namespace), `course_images` (role -> image), `api_client` (admin ApiClient, read-only
use), `self_healing` (callable, see check_self_healing).

report.py   the report model: tasks, check results, grades
view.py     the cluster view a check reads (ClusterView) and helpers for checks
healing.py  the one declared change: self-healing, for every student at once
plugin.py   the pytest plugin and the grading run
render.py   JSON, CSV, JUnit XML, HTML and the console table

A check imports what it needs from here (`from cell.grading import ClusterView, is_ready`).
"""

from cell.grading.healing import SelfHealing
from cell.grading.view import (
    ClusterView,
    GradingError,
    container_port,
    containers,
    is_ready,
    owned_by_deployment,
    plural,
    pod_spec,
    ready_endpoints,
    requests_of,
    template_labels,
)

__all__ = ["ClusterView", "GradingError", "SelfHealing", "container_port", "containers", "is_ready",
           "owned_by_deployment", "plural", "pod_spec", "ready_endpoints", "requests_of", "template_labels"]

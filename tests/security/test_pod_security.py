"""SPEC §9: every student namespace enforces Pod Security "restricted" (issue 13).

A student's pod could be privileged, with hostNetwork, hostPID and a hostPath of /: root on a real
node, and locally the cell's CA key and etcd within reach. The API server's own PodSecurity
admission plugin (on by default in 1.34) refuses it, with Kubernetes' own message.
"""

from __future__ import annotations

import pytest

from tests.integration.test_quota import Student, pod

pytestmark = pytest.mark.cluster


def test_a_root_pod_is_refused_with_kubernetes_own_message(student: Student) -> None:
    root = pod("root", "best-effort", cpu=None, memory=None)
    root["spec"].update(hostNetwork=True, hostPID=True,
                        volumes=[{"name": "host", "hostPath": {"path": "/"}}],
                        securityContext={})
    root["spec"]["containers"][0].update(securityContext={"privileged": True},
                                         volumeMounts=[{"name": "host", "mountPath": "/host"}])
    result = student.create(root)
    assert result.returncode != 0
    message = result.stderr
    assert 'violates PodSecurity "restricted:v1.34"' in message, message
    for what in ("host namespaces", "privileged", "restricted volume types", "hostPath"):
        assert what in message, message


def test_a_pod_that_omits_restricted_fields_is_refused_and_a_compliant_one_runs(student: Student) -> None:
    plain = pod("plain", "production", cpu="100m", memory="64Mi")
    del plain["spec"]["securityContext"], plain["spec"]["containers"][0]["securityContext"]
    result = student.create(plain)
    assert result.returncode != 0 and 'violates PodSecurity "restricted:v1.34"' in result.stderr
    assert student.create(pod("ok", "production", cpu="100m", memory="64Mi")).returncode == 0


def test_a_student_cannot_relabel_their_namespace(student: Student) -> None:
    result = student.kubectl("label", "namespace", student.name, "pod-security.kubernetes.io/enforce=privileged",
                             "--overwrite")
    assert result.returncode != 0 and "forbidden" in result.stderr.lower()

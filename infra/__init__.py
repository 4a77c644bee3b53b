"""Cell on OpenStack: the Pulumi program (networks, security groups, VMs) and the Ansible bootstrap.

`infra.config` validates the stack configuration (SPEC §7), `infra.cluster` builds one Kubernetes
cluster as a ComponentResource, `infra.bootstrap` runs the playbooks through ansible-runner as a
dynamic resource, and `infra.program` ties them together for `pulumi up`.
"""

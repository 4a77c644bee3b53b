"""The scheduler extender: kube-scheduler's filter/prioritize/preempt verbs over the policy core.

`python -m scheduler_ext.extender --kubeconfig K --host H --port P`
"""

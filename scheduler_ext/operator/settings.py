"""kopf settings shared by every handler module of the operator."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from scheduler_ext.kube.names import ALLOC_FINALIZER

# Kinds watched at high volume by event/index handlers only: no on.create/update/resume handler
# looks at their diff. Add a change-detecting handler for one of them and remove it from here.
NO_DIFF_KINDS = frozenset({"Pod"})


class LeanDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's default diff base, minus the deep copy it makes of every pod event to detect changes
    that no handler here asks about (the largest single cost of the operator per event)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if body.get("kind") in NO_DIFF_KINDS:
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)


def configure(settings: kopf.OperatorSettings) -> None:
    # kopf's finalizer, named as Cell's: only Allocs carry it (the one kind with a deletion handler and
    # timers), and Allocs protected by an earlier operator keep the same name.
    settings.persistence.finalizer = ALLOC_FINALIZER
    settings.persistence.diffbase_storage = LeanDiffBase()
    settings.posting.level = logging.WARNING  # no Kubernetes Event per status patch
    settings.watching.server_timeout = 300

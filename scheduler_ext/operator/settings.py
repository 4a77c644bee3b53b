"""kopf settings for an operator with index and event handlers only."""

from __future__ import annotations

import logging
from typing import Any

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """No change detection: this operator has no on.create/update handlers, so the essence kopf would
    deep-copy out of every event (every pod of the cell) would never be read. Stores nothing either,
    so no annotation is ever written to watched objects."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING  # no Kubernetes Event per status patch
    settings.watching.server_timeout = 300

"""What each workload declares and claims, kept as kopf indexes keyed by namespace.

An index is level-triggered by construction: kopf re-lists on start and keeps one value per live
object, so resolving a namespace's entries (policy.workloads.resolve: who is charged, Q9) always
gives its current use (Q7), also after a restart.

An indexing handler that returns None leaves the object's previous entry in place (kopf only
replaces on a non-None result); an empty mapping removes it. So an object that stops counting
returns {}: a finished Job must leave status.used at once, not at the next restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from scheduler_ext.kube import names
from scheduler_ext.policy.workloads import Charge, Workload, namespace_charges, workload_of

# Every resource quota charges (Q1, A4), as kopf selectors, by index name (pod_charges, ...).
CHARGED: dict[str, tuple[str, ...]] = {f"{r.kind.lower()}_charges": r.selector for r in names.CHARGED}


@kopf.index(*names.PRIORITY_CLASSES.selector)
async def priority_classes(name: str, body: kopf.Body, **_: Any) -> dict[str, int] | None:
    """Cluster PriorityClasses, so that templates naming a custom class land in the right band."""
    value = body.get("value")
    return {name: value} if isinstance(value, int) else None


def class_values(index: kopf.Index[str, int] | None) -> dict[str, int]:
    if not index:
        return {}
    return {name: value for name, store in index.items() for value in store}


def _workload(body: kopf.Body, namespace: str | None, classes: kopf.Index[str, int] | None,
              logger: kopf.Logger) -> dict[str, Workload]:
    try:
        workload = workload_of(body, class_values(classes))
    except ValueError as exc:
        logger.warning(f"not charged, unreadable: {exc}")
        return {}
    return {namespace: workload} if workload is not None and namespace else {}


def _register(index_name: str, selector: tuple[str, ...]) -> None:
    # A coroutine: kopf runs synchronous handlers in a thread pool, a hop per event that costs more than this.
    async def index(body: kopf.Body, namespace: str | None, logger: kopf.Logger,
                    **kwargs: Any) -> dict[str, Workload]:
        return _workload(body, namespace, kwargs.get("priority_classes"), logger)

    index.__name__ = index.__qualname__ = index_name
    kopf.index(*selector, id=index_name)(index)


for _name, _selector in CHARGED.items():
    _register(_name, _selector)


def workloads_in(namespace: str, indices: Mapping[str, Any]) -> list[Workload]:
    """Every workload in one namespace, from the indexes a kopf handler receives as keyword arguments."""
    workloads: list[Workload] = []
    for index_name in CHARGED:
        index = indices.get(index_name)
        if index is not None and namespace in index:
            workloads.extend(index[namespace])
    return workloads


def charges_in(namespace: str, indices: Mapping[str, Any]) -> list[Charge]:
    """The charges one namespace really carries (Q9: exemptions judged against its other objects)."""
    return namespace_charges(workloads_in(namespace, indices))

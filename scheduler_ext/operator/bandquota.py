"""BandQuota status.used (Q7): recomputed from the charge indexes whenever anything it sums changes.

Level-triggered: every event on a charged object or a BandQuota recomputes the namespace's whole
use from the indexes (never an increment) and patches status.used if it differs. One lock per
namespace serialises the comparisons and patches of a namespace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf

from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APIError, APINotFoundError
from scheduler_ext.kube.names import BANDQUOTAS
from scheduler_ext.operator.charges import CHARGED, charges_in
from scheduler_ext.policy.quota import used_status
from scheduler_ext.policy.workloads import usage_by_band

# Handlers are coroutines: a pod event costs a dict lookup and a small sum, not a thread hop.
_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
# What this operator last wrote per BandQuota, until the watch shows it back: saves re-patching the
# same value for every event of a burst while the index still holds the older status.
_written: dict[tuple[str, str], dict[str, Any]] = {}
log = logging.getLogger(__name__)


@kopf.index(*BANDQUOTAS.selector)
async def band_quotas(name: str, namespace: str | None, status: kopf.Status, **_: Any) -> dict[str, Any] | None:
    """namespace -> (name, current status.used) of its BandQuota(s)."""
    return {namespace: (name, dict(status.get("used") or {}))} if namespace else None


async def sync_namespace(namespace: str, indices: Mapping[str, Any], api: RawClient) -> None:
    """Make status.used of the namespace's BandQuota equal to the sum of its charges.

    Every patch comes back as a BandQuota event, which recomputes against the stored status, so the
    status converges even when an earlier comparison was made against a stale index.
    """
    quotas = indices.get("band_quotas")
    if not quotas or namespace not in quotas:
        return
    async with _locks[namespace]:
        used = used_status(usage_by_band(charges_in(namespace, indices)))
        for name, current in list(quotas[namespace]):
            stale = current != used and _written.get((namespace, name)) != used
            if stale and await asyncio.to_thread(_patch_used, api, namespace, name, used):
                _written[(namespace, name)] = used


def _patch_used(api: RawClient, namespace: str, name: str, used: dict[str, Any]) -> bool:
    for attempt in range(4):
        try:
            api.patch(BANDQUOTAS.object_path(namespace, name, "status"), {"status": {"used": used}})
            log.info("status.used of BandQuota %s/%s: %s", namespace, name, used)
            return True
        except APINotFoundError:
            return False  # deleted meanwhile: nothing to keep current
        except APIError as exc:
            if attempt == 3:
                log.error("cannot update status of BandQuota %s/%s: %s", namespace, name, exc)
                return False
            time.sleep(0.2 * 2**attempt)
    return False


async def _on_charged(namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    if namespace:
        await sync_namespace(namespace, kwargs, memo["api"])


async def _on_band_quota(name: str, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    if namespace:
        _written.pop((namespace, name), None)  # the watch now shows what is stored
        await sync_namespace(namespace, kwargs, memo["api"])


# Any change to something charged, or to a BandQuota itself, re-derives that namespace's status.
for _name, _selector in CHARGED.items():
    kopf.on.event(*_selector, id=f"sync-used-{_name}")(_on_charged)
kopf.on.event(*BANDQUOTAS.selector, id="sync-used-band_quotas")(_on_band_quota)

"""BandQuota status.used (Q7): recomputed from the charge indexes whenever anything it sums changes.

Level-triggered: every event on a charged object or a BandQuota recomputes the namespace's whole
use from the indexes (never an increment) and patches status.used if it differs. One lock per
namespace serialises the comparisons and patches of a namespace; locks and what was last written
live in kopf's memo (`UsedStatus`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from scheduler_ext.kube.client import RawClient
from scheduler_ext.kube.errors import APIError, APINotFoundError
from scheduler_ext.kube.names import BANDQUOTAS
from scheduler_ext.operator.charges import CHARGED, charges_in
from scheduler_ext.policy.quota import used_status
from scheduler_ext.policy.workloads import usage_by_band

MEMO_KEY = "used_status"
log = logging.getLogger(__name__)


@dataclass
class UsedStatus:
    """The operator's state for status.used: one lock per namespace, and what it last wrote per
    BandQuota until the watch shows it back (saves re-patching the same value for every event of a
    burst while the index still holds the older status)."""

    api: RawClient
    locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    written: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


@kopf.on.startup(id="used-status")
async def start_used_status(memo: kopf.Memo, **_: Any) -> None:
    memo[MEMO_KEY] = UsedStatus(memo["api"])


@kopf.index(*BANDQUOTAS.selector)
async def band_quotas(name: str, namespace: str | None, status: kopf.Status, **_: Any) -> dict[str, Any] | None:
    """namespace -> (name, current status.used) of its BandQuota(s)."""
    return {namespace: (name, dict(status.get("used") or {}))} if namespace else None


async def sync_namespace(namespace: str, indices: Mapping[str, Any], state: UsedStatus) -> None:
    """Make status.used of the namespace's BandQuota equal to the sum of its charges.

    Every patch comes back as a BandQuota event, which recomputes against the stored status, so the
    status converges even when an earlier comparison was made against a stale index.
    """
    quotas = indices.get("band_quotas")
    if not quotas or namespace not in quotas:
        return
    # Handlers are coroutines: a pod event costs a dict lookup and a small sum, not a thread hop.
    async with state.locks[namespace]:
        used = used_status(usage_by_band(charges_in(namespace, indices)))
        for name, current in list(quotas[namespace]):
            stale = current != used and state.written.get((namespace, name)) != used
            if stale and await asyncio.to_thread(_patch_used, state.api, namespace, name, used):
                state.written[(namespace, name)] = used


def _patch_used(api: RawClient, namespace: str, name: str, used: dict[str, Any]) -> bool:
    # A few quick attempts of its own: kopf does not retry event handlers, and the next event of the
    # namespace may be long in coming.
    for attempt in range(4):
        try:
            api.patch(BANDQUOTAS.object_path(namespace, name, "status"), {"status": {"used": used}}, timeout=30)
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
        await sync_namespace(namespace, kwargs, memo[MEMO_KEY])


async def _on_band_quota(name: str, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    if namespace:
        state: UsedStatus = memo[MEMO_KEY]
        state.written.pop((namespace, name), None)  # the watch now shows what is stored
        await sync_namespace(namespace, kwargs, state)


# Any change to something charged, or to a BandQuota itself, re-derives that namespace's status.
for _name, _selector in CHARGED.items():
    kopf.on.event(*_selector, id=f"sync-used-{_name}")(_on_charged)
kopf.on.event(*BANDQUOTAS.selector, id="sync-used-band_quotas")(_on_band_quota)

"""The uploader: drains the spool through a transport, in batches that fit the wire limits.

It never deletes anything itself; the spool does, on the transport's per-item answers. While a batch is
in flight the uploader keeps checking consent: if a product in the batch is opted out, or its consent
changes in any way (fewer categories: the queued reports were just rewritten without them), the send is
cancelled at once, so no further byte about that product leaves the machine. Items that
must be retried are rescheduled with exponential backoff and full jitter (or after the receiver's
``Retry-After``), and stay queued however long that takes: only the spool's quotas remove them.

The backoff measures how long the receiver has been unreachable, so it ends with the outage: the first
batch accepted resets every item's backoff, and the drain goes on, batch after batch, through the whole
backlog. When the receiver asks for a short pause (a rate limit's ``Retry-After`` of at most
``patience_s``) after accepting batches, the drain waits it out and continues rather than leaving the rest
of the backlog for the next drain.

Before sending, the uploader refreshes the vendor's kill switch and sampling policy when the transport
can fetch it and the cached copy is older than ``vendor_policy.MAX_AGE_S`` (see ``ceip_core.vendor_policy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ceip_core import vendor_policy, wire
from ceip_core.spool import Lease, Spool
from ceip_core.transport import Batch, BatchItem, Outcome, SendResult, Transport
from ceip_core.vendor_policy import PolicySource, VendorPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``initial * factor**attempts`` capped at ``maximum``, then full jitter."""

    initial: float = 5.0
    factor: float = 2.0
    maximum: float = 3600.0

    def delay(self, attempts: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * self.factor ** min(attempts, 32)))


@dataclass
class UploadSummary:
    """What one drain did."""

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    """Items refused for good, by reason."""
    retry_reasons: dict[str, int] = field(default_factory=dict)
    """Items kept for a later try, by reason (what ``ceip upload`` shows: a refused certificate ...)."""
    batches: int = 0

    @property
    def retried(self) -> int:
        return sum(self.retry_reasons.values())


#: Longest ``Retry-After`` a drain waits out itself once the receiver has accepted something.
PATIENCE_S = 60.0


@dataclass
class _Round:
    """What one lease's sends came to."""

    accepted: int = 0
    rejected: int = 0
    pause: float | None = None
    """If every retried item came with a ``Retry-After``: the longest; else None."""


async def drain(
    spool: Spool,
    transport: Transport,
    *,
    backoff: Backoff | None = None,
    max_rounds: int = 1000,
    policy_max_age: float = vendor_policy.MAX_AGE_S,
    waiting_too: bool = False,
    patience_s: float = PATIENCE_S,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    destination: str | None = None,
) -> UploadSummary:
    """Send everything that is ready now. Stops when nothing is ready or a whole round is retried (unless
    the receiver, having accepted items in this drain, asked for a pause of at most ``patience_s``:
    then it waits with ``sleep`` and goes on).

    ``waiting_too`` also sends items that are waiting out a retry delay (``ceip export`` does: a person
    carrying the queue away wants all of it). ``destination`` (the upload URL) is what the sent history
    names as where accepted items went."""
    backoff = backoff or Backoff()
    summary = UploadSummary()
    if isinstance(transport, PolicySource):
        await refresh_policy(spool, transport, policy_max_age)
    for _ in range(max_rounds):
        lease = spool.lease(due_only=not waiting_too)
        if not lease.items:
            break
        result = await _send_lease(spool, transport, lease, backoff, summary, destination)
        if result.accepted:
            spool.reset_backoff()  # the receiver is back: what waited out the outage is due now
        elif summary.accepted and result.pause is not None and result.pause <= patience_s:
            await sleep(result.pause)
            spool.reset_backoff()  # the pause asked for is over (by whatever clock ``sleep`` keeps)
        elif not result.rejected:
            break
    if summary.retry_reasons:  # what `ceip status` and `ceip upload` show as the last error
        spool.note_retry(max(summary.retry_reasons, key=summary.retry_reasons.__getitem__))
    return summary


async def refresh_policy(spool: Spool, source: PolicySource, max_age: float) -> VendorPolicy:
    """The vendor policy, fetched again if the cached copy was checked more than ``max_age`` seconds ago.
    A failed fetch keeps the cached rules but counts as a check, so an unreachable service is asked at
    most once per ``max_age``."""
    cached = spool.db.read(vendor_policy.read)
    if cached.checked is not None and time.time() - cached.checked < max_age:
        return cached
    policy = await source.fetch_policy() or dataclasses.replace(cached, checked=time.time())
    spool.db.write(lambda conn: vendor_policy.write(conn, policy))
    return policy


async def _send_lease(
    spool: Spool, transport: Transport, lease: Lease, backoff: Backoff, summary: UploadSummary, destination: str | None
) -> _Round:
    attempts = {i.item_id: i.attempts for i in lease.items}
    accepted: list[str] = []
    retry: dict[str, float] = {}
    rejected: dict[str, str] = {}
    pauses: list[float | None] = []
    start = 0
    try:
        for group in wire.split_batches([i.data for i in lease.items]):
            items = lease.items[start : start + len(group)]
            start += len(group)
            batch = Batch(BatchItem(i.item_id, i.kind, i.product, i.data) for i in items)
            summary.batches += 1
            for result in await _send_unless_withdrawn(spool, transport, batch):
                reason = result.reason or result.outcome.value
                if result.outcome is Outcome.ACCEPTED:
                    accepted.append(result.item_id)
                elif result.outcome is Outcome.REJECTED:
                    rejected[result.item_id] = reason
                    summary.rejected[reason] = summary.rejected.get(reason, 0) + 1
                else:
                    pauses.append(result.retry_after)
                    retry[result.item_id] = (
                        result.retry_after
                        if result.retry_after is not None
                        else backoff.delay(attempts.get(result.item_id, 0))
                    )
                    summary.retry_reasons[reason] = summary.retry_reasons.get(reason, 0) + 1
    finally:
        # Whatever happened (even a cancelled send), settle what we know; the rest is released by the lease.
        spool.settle(lease, accepted, retry, rejected, destination=destination)
    summary.accepted += len(accepted)
    asked = [p for p in pauses if p is not None]
    pause = max(asked) if asked and len(asked) == len(pauses) else None
    return _Round(len(accepted), len(rejected), pause)


#: How often consent is re-read while a batch is in flight (the opt-out deadline is one second).
CONSENT_POLL_S = 0.1


async def _send_unless_withdrawn(spool: Spool, transport: Transport, batch: Batch) -> Sequence[SendResult]:
    """``transport.send(batch)``, cancelled as soon as the consent of any product it carries reports for
    changes (an opt-out, fewer categories: its epoch moves). A cancelled send answers nothing, so its items
    stay queued (or are already deleted, or rewritten, by the change)."""
    products = {i.product for i in batch.items if i.kind == "report"}
    epochs = {p: spool.consent.epoch(p) for p in products}
    send = asyncio.ensure_future(transport.send(batch))
    try:
        while not send.done():
            await asyncio.wait({send}, timeout=CONSENT_POLL_S)
            if not send.done() and any(e is None or spool.consent.epoch(p) != e for p, e in epochs.items()):
                send.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await send
                log.info("upload aborted: consent withdrawn for %s", ", ".join(sorted(products)))
                return []
        return send.result()
    finally:
        send.cancel()

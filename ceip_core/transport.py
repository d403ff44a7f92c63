"""The Transport contract: how sealed batches leave the spool, whatever carries them.

A transport gets a :class:`Batch` of items already encoded exactly as they sit in the spool, and answers
with one :class:`SendResult` per item. The spool turns those results into acknowledgements (delete),
retries (keep, try again later) and permanent rejections (delete, count the reason). A transport never
deletes or keeps anything itself, so a crash in the middle of a send loses nothing: the lease expires and
the items are sent again, and the receiver's de-duplication by item id makes that harmless.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from attrs import field, frozen

from ceip_core import wire


class Outcome(enum.Enum):
    """What became of one item."""

    ACCEPTED = "accepted"
    """Durably stored by the receiver (or a duplicate of something it stored): remove it from the spool."""
    RETRY = "retry"
    """Not delivered this time (network, overload, server error): keep it and try again later."""
    REJECTED = "rejected"
    """The receiver will never take it (invalid, not allowlisted): remove it and count the reason."""


@frozen
class SendResult:
    """The outcome for one item of a batch."""

    item_id: str
    outcome: Outcome
    reason: str | None = None
    """Why it was rejected or must be retried, for the drop counters and logs."""
    retry_after: float | None = None
    """Seconds to wait before the next try, when the receiver said so (e.g. ``Retry-After``)."""


@frozen
class BatchItem:
    """One spooled item as a transport sees it."""

    item_id: str
    kind: str
    """``report`` or ``deletion``."""
    product: str
    data: bytes
    """The item's JSON, byte for byte as spooled and as ``ceip review`` shows it."""


def _items(values: Iterable[BatchItem]) -> tuple[BatchItem, ...]:
    return tuple(values)


@frozen
class Batch:
    """Items to send together. Built by the uploader so that its body fits the wire limits."""

    items: tuple[BatchItem, ...] = field(converter=_items)

    def body(self) -> bytes:
        """The gzip-compressed batch body (see docs/wire-format.md)."""
        return wire.encode_batch(item.data for item in self.items)

    def results(
        self, outcome: Outcome, reason: str | None = None, retry_after: float | None = None
    ) -> list[SendResult]:
        """The same outcome for every item: what a transport answers when the batch fails as a whole."""
        return [SendResult(i.item_id, outcome, reason, retry_after) for i in self.items]


@runtime_checkable
class Transport(Protocol):
    """Delivers batches to one destination. Modelled on OpenTelemetry's exporter contract.

    Implementations are asynchronous and must be safe to cancel: cancelling ``send`` (as the uploader
    does when consent is withdrawn) must abort the transfer, and the items then count as not delivered.
    ``send`` should not raise for delivery problems; it answers ``RETRY`` or ``REJECTED`` per item.
    """

    async def send(self, batch: Batch) -> Sequence[SendResult]:
        """Deliver ``batch``; return one result per item, in any order."""
        ...

    async def flush(self, timeout: float | None = None) -> bool:
        """Finish anything buffered; True if everything handed to ``send`` was settled in time."""
        ...

    async def close(self) -> None:
        """Release connections and files. ``send`` is not called afterwards."""
        ...


TransportFactory = Callable[[str], Transport]
"""Makes a transport for a destination URL; registered per URL scheme (``file``, ``https`` ...)."""

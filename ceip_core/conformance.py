"""The transport conformance suite: the Transport contract (``ceip_core.transport``) as tests a transport
author runs against their own transport and a real destination of its protocol.

The suite can only check that a transport maps "try again later" or "never" correctly if it can make the
destination say so, so the author hands it a :class:`TransportHarness`: a way to make the transport, and a
hand on the far end (accept, ask to retry later, reject, hold a transfer open, stop listening) and on
what arrived there. Use it from a test module::

    import pytest
    from ceip_core.testing import TransportConformance, TransportHarness

    class MyHarness(TransportHarness): ...

    @pytest.fixture
    def ceip_transport_under_test(...) -> MyHarness: ...

    class TestMyTransport(TransportConformance):
        pass

The checks are async tests marked for pytest-asyncio (which ``ceip[test]`` installs). A destination that
cannot behave some way (a folder never refuses a file) says so by raising :class:`NotApplicable` from that
control; the checks that need it are skipped with the reason, so a report shows what was not checked.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from ceip_core import upload, wire
from ceip_core.consent import Consent
from ceip_core.records import DeletionRequest, Period, Report
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.transport import Batch, BatchItem, Outcome, SendResult, Transport

T = TypeVar("T")

#: The product the suite's reports are about (any valid product id: a transport never reads it).
PRODUCT = "conformance"
#: The opt-out deadline of docs/consent: no byte about the product leaves the machine after it.
OPT_OUT_DEADLINE_S = 1.0
#: How long a send may take against a destination that answers at once (refused, accepted, rejected).
SEND_DEADLINE_S = 30.0
#: Items in the large batch: as many as the uploader leases at once (``Spool.lease``'s ``max_items``).
LARGE_BATCH_ITEMS = 500


class NotApplicable(Exception):
    """Raised by a harness control the destination cannot perform; the message says why."""


class TransportHarness(abc.ABC):
    """The transport under test and a hand on its destination, as the conformance suite needs them.

    Controls change how the destination answers *from then on*, for every transfer, until the next
    control is called; a new harness starts accepting. Raise :class:`NotApplicable` from a control the
    destination cannot perform.
    """

    tells_retry_delay: bool = True
    """Whether the protocol can carry how long to wait (HTTP's ``Retry-After``); SMTP cannot, and then
    ``retry_after`` must be None so that the uploader's backoff applies."""

    @abc.abstractmethod
    def make_transport(self) -> Transport:
        """A new transport for this destination (the suite closes it)."""

    @abc.abstractmethod
    async def accept(self) -> None:
        """Store everything that arrives (the state a harness starts in)."""

    @abc.abstractmethod
    async def retry_later(self, seconds: float) -> None:
        """Refuse everything for now, asking to try again after ``seconds`` if the protocol can say so."""

    @abc.abstractmethod
    async def reject(self, reason: str, item_ids: Collection[str] | None = None) -> None:
        """Refuse for good, with ``reason``, the items with these ids (every item if None); store the rest."""

    @abc.abstractmethod
    async def stall(self) -> None:
        """Take transfers in but never answer, until the sender gives up or aborts."""

    @abc.abstractmethod
    def stalled(self) -> int:
        """How many transfers the destination is holding open right now (see :meth:`stall`)."""

    @abc.abstractmethod
    async def unreachable(self) -> None:
        """Stop listening: transfers fail as they would with the destination down."""

    @abc.abstractmethod
    def received(self) -> list[Any]:
        """The items the destination stored, as wire JSON values (``report_id`` or ``request_id`` names
        each), every delivery, duplicates included if the destination keeps them."""


# -- what the checks send ---------------------------------------------------------------------------------


def report_item(product: str = PRODUCT, *, padding: int = 0, guid: str | None = None) -> BatchItem:
    """A valid report as the spool holds it; ``padding`` hex characters of random configuration make
    it that much larger and hard to compress (for the large batch)."""
    now = datetime.now(UTC).replace(microsecond=0)
    config: dict[str, str | int | float | bool] = {f"option_{i}": secrets.token_hex(32) for i in range(padding // 64)}
    report = Report(
        report_id=str(uuid.uuid4()),
        guid=guid or str(uuid.uuid4()),
        product=product,
        product_version="1.0",
        period=Period(now - timedelta(minutes=5), now),
        config=config,
    )
    return BatchItem(report.report_id, "report", product, wire.encode_item(report))


def deletion_item(product: str = PRODUCT) -> BatchItem:
    request = DeletionRequest(str(uuid.uuid4()), str(uuid.uuid4()), product, datetime.now(UTC).replace(microsecond=0))
    return BatchItem(request.request_id, "deletion", product, wire.encode_item(request))


def received_ids(harness: TransportHarness) -> list[str]:
    return [doc.get("report_id") or doc.get("request_id") for doc in harness.received()]


async def within(seconds: float, what: str, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, failing the check (not hanging the suite) if it takes longer."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"{what} took longer than {seconds} s")


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll ``condition()`` until true; returns when (monotonic), fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s")
        await asyncio.sleep(0.01)
    return time.monotonic()


async def control(harness: TransportHarness, name: str, *args: Any) -> None:
    """Call a harness control; skip the check if the destination cannot do that."""
    try:
        await getattr(harness, name)(*args)
    except NotApplicable as exc:
        pytest.skip(f"the destination cannot {name.replace('_', ' ')}: {exc}")


@contextlib.asynccontextmanager
async def opened(harness: TransportHarness) -> AsyncIterator[Transport]:
    """A new transport of ``harness``, closed afterwards (within the deadline)."""
    transport = harness.make_transport()
    try:
        yield transport
    finally:
        await within(SEND_DEADLINE_S, "close", transport.close())


def one_result_per_item(batch: Batch, results: Sequence[SendResult]) -> dict[str, SendResult]:
    ids = [r.item_id for r in results]
    assert sorted(ids) == sorted(i.item_id for i in batch.items), "send must answer exactly once for every item"
    return {r.item_id: r for r in results}


# -- the suite --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
class TransportConformance:
    """The Transport contract as checks. Subclass it in a test module and provide the fixture
    ``ceip_transport_under_test`` returning a :class:`TransportHarness`."""

    async def test_accepted_items_arrive_as_spooled(self, ceip_transport_under_test: TransportHarness) -> None:
        """Reports and a deletion request are accepted, each answered once, and arrive as they were spooled."""
        harness = ceip_transport_under_test
        batch = Batch([report_item(), deletion_item(), report_item()])
        async with opened(harness) as transport:
            results = one_result_per_item(batch, await within(SEND_DEADLINE_S, "send", transport.send(batch)))
        assert {r.outcome for r in results.values()} == {Outcome.ACCEPTED}, results
        arrived = {doc.get("report_id") or doc.get("request_id"): doc for doc in harness.received()}
        assert arrived == {i.item_id: orjson.loads(i.data) for i in batch.items}

    async def test_retry_later_with_a_delay(self, ceip_transport_under_test: TransportHarness) -> None:
        """A destination that asks to try again later: every item is kept to retry, after the delay it
        asked for when the protocol can carry one (else none, so the uploader's backoff applies), and
        nothing is stored."""
        harness = ceip_transport_under_test
        await control(harness, "retry_later", 7.0)
        batch = Batch([report_item(), report_item()])
        async with opened(harness) as transport:
            results = one_result_per_item(batch, await within(SEND_DEADLINE_S, "send", transport.send(batch)))
        for result in results.values():
            assert result.outcome is Outcome.RETRY, result
            assert result.reason, "a retry names its reason (ceip status shows it)"
            if harness.tells_retry_delay:
                assert result.retry_after is not None and abs(result.retry_after - 7.0) <= 1.0, result
            else:
                assert result.retry_after is None, "a delay the destination did not give must not be invented"
        assert received_ids(harness) == []

    async def test_rejected_for_good_with_the_reason(self, ceip_transport_under_test: TransportHarness) -> None:
        """A destination that refuses for good: every item is rejected, with the destination's reason."""
        harness = ceip_transport_under_test
        await control(harness, "reject", "conformance-refused")
        batch = Batch([report_item(), report_item()])
        async with opened(harness) as transport:
            results = one_result_per_item(batch, await within(SEND_DEADLINE_S, "send", transport.send(batch)))
        for result in results.values():
            assert result.outcome is Outcome.REJECTED, result
            assert result.reason and "conformance-refused" in result.reason, result
        assert received_ids(harness) == []

    async def test_mixed_batch_answers_per_item(self, ceip_transport_under_test: TransportHarness) -> None:
        """One batch, some items refused: those are rejected with the reason, the rest accepted and stored."""
        harness = ceip_transport_under_test
        batch = Batch([report_item() for _ in range(5)])
        refused = {batch.items[1].item_id, batch.items[3].item_id}
        await control(harness, "reject", "not-allowlisted", refused)
        async with opened(harness) as transport:
            results = one_result_per_item(batch, await within(SEND_DEADLINE_S, "send", transport.send(batch)))
        for item_id, result in results.items():
            if item_id in refused:
                assert result.outcome is Outcome.REJECTED and "not-allowlisted" in (result.reason or ""), result
            else:
                assert result.outcome is Outcome.ACCEPTED, result
        assert set(received_ids(harness)) == {i.item_id for i in batch.items} - refused

    async def test_sending_again_is_harmless(self, ceip_transport_under_test: TransportHarness) -> None:
        """The same batch sent again by a new transport (a lease that expired after a crash): accepted
        again, and every copy that arrived carries the same id and the same content, so the receiver's
        de-duplication by id makes the second delivery harmless."""
        harness = ceip_transport_under_test
        batch = Batch([report_item(), report_item(), deletion_item()])
        answers: list[SendResult] = []
        for _ in range(2):
            async with opened(harness) as transport:
                answers += await within(SEND_DEADLINE_S, "send", transport.send(batch))
        assert len(answers) == 2 * len(batch.items) and {r.outcome for r in answers} == {Outcome.ACCEPTED}
        sent = {i.item_id: orjson.loads(i.data) for i in batch.items}
        assert set(received_ids(harness)) == set(sent)
        for doc in harness.received():
            assert doc == sent[doc.get("report_id") or doc.get("request_id")], "a copy differs from what was sent"

    async def test_opt_out_mid_send_aborts_within_a_second(
        self, ceip_transport_under_test: TransportHarness, ceip_home: Path
    ) -> None:
        """The uploader sends through the transport; the destination holds the transfer open; the product
        is opted out. Within a second the upload has returned and the destination has seen the transfer
        end, with nothing stored; the same transport then delivers the next batch."""
        harness = ceip_transport_under_test
        spool = Spool(StateDB(ceip_home))
        consent = Consent(spool.db)
        consent.opt_in(PRODUCT)
        guid, epoch = consent.guid(), consent.epoch(PRODUCT)
        assert guid is not None and epoch is not None
        queued = [report_item(guid=guid) for _ in range(3)]
        for item in queued:
            assert spool.put_report(item.item_id, PRODUCT, guid, item.data, consent_epoch=epoch)
        await control(harness, "stall")
        async with opened(harness) as transport:
            drain = asyncio.ensure_future(upload.drain(spool, transport))
            try:
                await wait_until(lambda: harness.stalled() > 0 or drain.done(), SEND_DEADLINE_S, "the transfer")
                assert not drain.done(), f"the upload ended against a stalled destination: {drain.result()}"
                opted_out = time.monotonic()
                consent.opt_out(PRODUCT)
                await within(OPT_OUT_DEADLINE_S, "the upload after the opt-out", asyncio.shield(drain))
                ended = await wait_until(lambda: harness.stalled() == 0, OPT_OUT_DEADLINE_S, "the transfer's end")
                assert ended - opted_out <= OPT_OUT_DEADLINE_S
            finally:
                drain.cancel()
            assert drain.result().accepted == 0
            assert [i for i in spool.items() if i.kind == "report"] == [], "the opt-out deletes the queued reports"
            await control(harness, "accept")
            after = Batch([report_item("other-product")])
            results = await within(SEND_DEADLINE_S, "the next send", transport.send(after))
        assert [r.outcome for r in results] == [Outcome.ACCEPTED], "a cancelled send must not break the transport"
        arrived = set(received_ids(harness))
        assert after.items[0].item_id in arrived
        assert not arrived & {i.item_id for i in queued}, "a report of the opted-out product arrived"

    async def test_flush_and_close(self, ceip_transport_under_test: TransportHarness) -> None:
        """``flush`` settles what was sent (True) and ``close`` returns, whether or not anything was sent."""
        harness = ceip_transport_under_test
        idle = harness.make_transport()
        assert await within(SEND_DEADLINE_S, "flush of an unused transport", idle.flush(timeout=5.0)) is True
        await within(SEND_DEADLINE_S, "close of an unused transport", idle.close())
        used = harness.make_transport()
        batch = Batch([report_item()])
        results = await within(SEND_DEADLINE_S, "send", used.send(batch))
        assert [r.outcome for r in results] == [Outcome.ACCEPTED]
        assert await within(SEND_DEADLINE_S, "flush", used.flush(timeout=5.0)) is True
        await within(SEND_DEADLINE_S, "close", used.close())
        assert received_ids(harness) == [batch.items[0].item_id]

    async def test_large_batch(self, ceip_transport_under_test: TransportHarness) -> None:
        """The largest batch the uploader makes (a full lease, its body near the 1 MiB limit) is
        delivered whole, every item answered."""
        harness = ceip_transport_under_test
        items = [report_item(padding=3584) for _ in range(LARGE_BATCH_ITEMS)]
        batch = Batch(items[: len(wire.split_batches([i.data for i in items])[0])])
        assert len(batch.body()) > wire.MAX_COMPRESSED_BYTES // 2, "the large batch is not large"
        async with opened(harness) as transport:
            results = one_result_per_item(batch, await within(4 * SEND_DEADLINE_S, "send", transport.send(batch)))
        assert {r.outcome for r in results.values()} == {Outcome.ACCEPTED}
        assert set(received_ids(harness)) == {i.item_id for i in batch.items}

    async def test_unreachable_destination(self, ceip_transport_under_test: TransportHarness) -> None:
        """A destination that went away after the transport had delivered to it (a kept connection must
        not fool it): the send answers rather than raises, every item kept to retry, with a reason."""
        harness = ceip_transport_under_test
        batch = Batch([report_item(), report_item()])
        async with opened(harness) as transport:
            first = await within(SEND_DEADLINE_S, "send", transport.send(Batch([report_item()])))
            assert [r.outcome for r in first] == [Outcome.ACCEPTED]
            await control(harness, "unreachable")
            results = one_result_per_item(batch, await within(SEND_DEADLINE_S, "send", transport.send(batch)))
        for result in results.values():
            assert result.outcome is Outcome.RETRY and result.reason, result

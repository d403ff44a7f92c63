"""The uploader: transport answers become spool changes; consent withdrawal aborts an in-flight send."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from pathlib import Path

import pytest

import ceip_core
from ceip_core.consent import Consent
from ceip_core.default_plugins.file_transport import SUFFIX, FileTransport
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.transport import Batch, Outcome, SendResult
from ceip_core.upload import Backoff, drain


class Scripted:
    """A transport that answers each item with the outcome a script gives for its send number."""

    def __init__(self, *rounds: Outcome, reason: str = "bad", retry_after: float | None = None) -> None:
        self.rounds = list(rounds)
        self.sent: list[list[str]] = []
        self.reason = reason
        self.retry_after = retry_after

    async def send(self, batch: Batch) -> list[SendResult]:
        self.sent.append([i.item_id for i in batch.items])
        outcome = self.rounds.pop(0)
        return batch.results(outcome, self.reason if outcome is not Outcome.ACCEPTED else None, self.retry_after)

    async def flush(self, timeout: float | None = None) -> bool:
        return True

    async def close(self) -> None:
        return None


@pytest.fixture
def queued(sample, ceip_home: Path) -> Spool:
    Consent(StateDB(ceip_home)).opt_in("sample")
    for _ in range(3):
        with ceip_core.recorder("sample", "1.0") as rec:
            rec.feature("open_file")
    spool = Spool(StateDB(ceip_home))
    assert spool.stats().reports == 3
    return spool


def test_accepted_items_leave_the_spool(queued: Spool) -> None:
    transport = Scripted(Outcome.ACCEPTED)
    summary = asyncio.run(drain(queued, transport))
    assert summary.accepted == 3 and summary.batches == 1
    assert queued.stats().reports == 0 and queued.stats().last_upload is not None


def test_retried_items_stay_with_backoff_and_are_never_dropped(queued: Spool) -> None:
    transport = Scripted(Outcome.RETRY)
    summary = asyncio.run(drain(queued, transport, backoff=Backoff(initial=1000, maximum=1000)))
    assert summary.retried == 3
    stats = queued.stats()
    assert stats.reports == 3 and stats.drops == {}
    assert stats.next_attempt is not None and stats.next_attempt > time.time()
    assert [i.attempts for i in queued.items()] == [1, 1, 1]
    # Not ready again until the delay has passed, whatever the number of drains in between.
    assert asyncio.run(drain(queued, Scripted())).accepted == 0


def test_retry_after_from_the_receiver_is_honoured(queued: Spool) -> None:
    asyncio.run(drain(queued, Scripted(Outcome.RETRY, retry_after=0.0)))
    assert asyncio.run(drain(queued, Scripted(Outcome.ACCEPTED))).accepted == 3


def test_rejected_items_are_removed_and_counted(queued: Spool) -> None:
    summary = asyncio.run(drain(queued, Scripted(Outcome.REJECTED, reason="not-allowlisted")))
    assert summary.rejected == {"not-allowlisted": 3}
    assert queued.stats().reports == 0
    assert queued.stats().drops["rejected:not-allowlisted:sample"] == 3


def test_a_failing_transport_loses_nothing(queued: Spool) -> None:
    class Broken(Scripted):
        async def send(self, batch: Batch) -> list[SendResult]:
            raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(drain(queued, Broken()))
    assert queued.stats().reports == 3
    assert asyncio.run(drain(queued, Scripted(Outcome.ACCEPTED))).accepted == 3


@pytest.mark.parametrize(
    ("withdraw", "left"),
    [
        ("everything", ["deletion"]),
        # the queued reports are rewritten without the withdrawn category: the copy in flight must not arrive
        ("one category", ["deletion", "report", "report", "report"]),
    ],
)
def test_withdrawing_consent_aborts_an_in_flight_send_within_a_second(
    queued: Spool, ceip_home: Path, sample, withdraw: str, left: list[str]
) -> None:
    from ceip_core.records import Category

    started = threading.Event()
    cancelled: list[float] = []

    class Stuck(Scripted):
        async def send(self, batch: Batch) -> list[SendResult]:
            started.set()
            try:
                await asyncio.sleep(60)  # ok: a slow network, cancelled by the opt-out within a second
            except asyncio.CancelledError:
                cancelled.append(time.monotonic())
                raise
            return batch.results(Outcome.ACCEPTED)

    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.update(summary=asyncio.run(drain(queued, Stuck()))))
    worker.start()
    try:
        assert started.wait(10)
        consent = Consent(StateDB(ceip_home))
        if withdraw == "everything":
            consent.opt_out("sample")
        else:
            consent.opt_out("sample", [Category.PERFORMANCE], spec=sample.product("sample"))
        withdrawn = time.monotonic()
        worker.join(timeout=5)
        assert not worker.is_alive()
    finally:
        worker.join()
    assert cancelled and cancelled[0] - withdrawn <= 1.0
    assert result["summary"].accepted == 0  # type: ignore[attr-defined]
    assert sorted(i.kind for i in queued.items()) == left


def test_file_transport_writes_each_batch_whole(queued: Spool, tmp_path: Path) -> None:
    drop = tmp_path / "outbox"
    summary = asyncio.run(drain(queued, FileTransport(f"file://{drop}")))
    assert summary.accepted == 3
    files = list(drop.iterdir())
    assert [f.name.endswith(SUFFIX) for f in files] == [True]  # no temporary file left behind
    body = json.loads(gzip.decompress(files[0].read_bytes()))
    assert body["schema"] == 1 and len(body["items"]) == 3


def test_file_transport_retries_when_it_cannot_write(queued: Spool, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    summary = asyncio.run(drain(queued, FileTransport(f"file://{blocker}")))
    assert summary.retried == 3 and queued.stats().reports == 3

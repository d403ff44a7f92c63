"""The conformance suite itself: run as a transport author would run it (a test module of their own, in a
pytest of its own, pytest-asyncio in strict mode), it passes a transport that keeps the contract and
fails one that does not, check by check."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

AUTHORS_MODULE = '''
import asyncio

import orjson
import pytest

from ceip_core.testing import TransportConformance, TransportHarness
from ceip_core.transport import Outcome, SendResult


class Destination:
    """An in-memory far end."""

    def __init__(self):
        self.items, self.mode, self.refuse, self.holding, self.up = [], "accept", {}, 0, True


class MemoryTransport:
    BROKEN = False

    def __init__(self, destination):
        self.destination = destination

    async def send(self, batch):
        d = self.destination
        if not d.up:
            return batch.results(Outcome.RETRY, "down")
        if d.mode == "retry" and not self.BROKEN:
            return batch.results(Outcome.RETRY, "busy", 7.0)
        if d.mode == "stall":
            d.holding += 1
            try:
                await asyncio.Event().wait()  # a far end that never answers: only a cancel ends it
            except asyncio.CancelledError:
                if not self.BROKEN:
                    raise
                await asyncio.sleep(1.5)  # ok: the broken transport ignores the cancel, past the 1 s it has
            finally:
                d.holding -= 1
        results = []
        for item in batch.items:
            reason = d.refuse.get(item.item_id, d.refuse.get("*"))
            if reason and not self.BROKEN:
                results.append(SendResult(item.item_id, Outcome.REJECTED, reason))
            else:
                d.items.append(orjson.loads(item.data))
                results.append(SendResult(item.item_id, Outcome.ACCEPTED))
        return results

    async def flush(self, timeout=None):
        return True

    async def close(self):
        pass


class BrokenTransport(MemoryTransport):
    BROKEN = True


class Harness(TransportHarness):
    transport_class = MemoryTransport

    def __init__(self):
        self.d = Destination()

    def make_transport(self):
        return self.transport_class(self.d)

    async def accept(self):
        self.d.mode, self.d.refuse = "accept", {}

    async def retry_later(self, seconds):
        self.d.mode = "retry"

    async def reject(self, reason, item_ids=None):
        self.d.refuse = dict.fromkeys(item_ids or ["*"], reason)

    async def stall(self):
        self.d.mode = "stall"

    def stalled(self):
        return self.d.holding

    async def unreachable(self):
        self.d.up = False

    def received(self):
        return list(self.d.items)


class TestKeepsTheContract(TransportConformance):
    @pytest.fixture
    def ceip_transport_under_test(self):
        return Harness()


class TestBreaksIt(TransportConformance):
    @pytest.fixture
    def ceip_transport_under_test(self):
        harness = Harness()
        harness.transport_class = BrokenTransport
        return harness
'''


def test_the_suite_passes_a_good_transport_and_fails_a_broken_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_authors_transport=AUTHORS_MODULE)
    pytester.makeini("[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-rA")
    outcomes = result.parseoutcomes()
    good = [line for line in result.outlines if "TestKeepsTheContract" in line]
    assert sum(line.startswith("PASSED") for line in good) == 9, "\n".join(result.outlines)
    broken = {line.split("::")[-1].split()[0] for line in result.outlines if line.startswith("FAILED")}
    # The broken transport takes "retry later" and refused items as accepted, and finishes a cancelled
    # transfer anyway: exactly the checks for those fail, the others pass.
    assert broken == {
        "test_retry_later_with_a_delay",
        "test_rejected_for_good_with_the_reason",
        "test_mixed_batch_answers_per_item",
        "test_opt_out_mid_send_aborts_within_a_second",
    }, "\n".join(result.outlines)
    assert outcomes["passed"] == 9 + 5

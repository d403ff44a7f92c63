"""The vendor's kill switch and sampling: fetched from the service, cached, honoured at sealing and at send."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fake_service import FakeService
from helpers import epoch

from ceip_core import vendor_policy
from ceip_core.consent import Consent
from ceip_core.default_plugins.http_transport import HttpTransport
from ceip_core.sealing import seal_session
from ceip_core.session_data import SessionData
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.upload import UploadSummary, drain
from ceip_core.vendor_policy import ProductRule, VendorPolicy, machine_draw


@pytest.fixture
def spool(sample: Any, ceip_home: Path) -> Spool:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    consent.opt_in("other")
    return Spool(StateDB(ceip_home))


def seal(spool: Spool, product: str, n: int = 1) -> int:
    """Seal ``n`` sessions of ``product``; how many were queued."""
    used = "open_file" if product == "sample" else "used"
    queued = 0
    for _ in range(n):
        data = SessionData(product, "1.0", time.time() - 60, time.time(), counters={(used, None): 1})
        data.consent_epoch = epoch(spool, product)
        queued += seal_session(data, spool.db.folder)
    return queued


def upload(spool: Spool, url: str, **kwargs: float) -> UploadSummary:
    async def run() -> UploadSummary:
        transport = HttpTransport(url)
        try:
            return await drain(spool, transport, **kwargs)
        finally:
            await transport.close()

    return asyncio.run(run())


def cached(spool: Spool) -> VendorPolicy:
    return spool.db.read(vendor_policy.read)


def test_a_product_disabled_by_the_vendor_is_neither_sent_nor_recorded(spool: Spool, fake_service: FakeService) -> None:
    seal(spool, "sample", 2)
    seal(spool, "other", 1)
    fake_service.policy = {"products": {"sample": {"enabled": False}}}
    summary = upload(spool, fake_service.url)
    assert summary.accepted == 1 and {r["product"] for r in fake_service.stored.values()} == {"other"}
    assert spool.stats().by_product == {"sample": 2}  # kept, not sent: they go if the vendor enables it again
    assert cached(spool).disabled == {"sample"}
    assert seal(spool, "sample") == 0 and seal(spool, "other") == 1  # no new data for it either
    assert spool.stats().drops["disabled-by-vendor:sample"] == 1

    fake_service.policy = {"products": {}}  # enabled again
    assert upload(spool, fake_service.url).accepted == 1  # the cached policy is still fresh: sample waits
    assert upload(spool, fake_service.url, policy_max_age=0).accepted == 2
    assert sorted(r["product"] for r in fake_service.stored.values()) == ["other", "other", "sample", "sample"]


def test_deletion_requests_go_even_for_a_disabled_product(
    spool: Spool, fake_service: FakeService, ceip_home: Path
) -> None:
    seal(spool, "sample", 1)
    Consent(StateDB(ceip_home)).opt_out("sample")
    fake_service.policy = {"products": {"sample": {"enabled": False}}}
    assert upload(spool, fake_service.url).accepted == 1
    assert [r["type"] for r in fake_service.stored.values()] == ["deletion"]


def test_sampling_keeps_or_drops_whole_machines(spool: Spool, fake_service: FakeService) -> None:
    fake_service.policy = {"products": {"sample": {"enabled": True, "sample_rate": 0.5}, "other": {"sample_rate": 0}}}
    upload(spool, fake_service.url)
    guid = spool.consent.guid()
    assert guid is not None
    in_sample = machine_draw(guid, "sample") < 0.5
    assert seal(spool, "sample", 20) == (20 if in_sample else 0)  # all of this machine's reports, or none
    assert seal(spool, "other", 5) == 0
    drops = spool.stats().drops
    assert drops.get("sampled-out:sample", 0) == (0 if in_sample else 20) and drops["sampled-out:other"] == 5


def test_the_machine_sample_is_the_share_asked_for_and_stable() -> None:
    guids = [str(uuid.UUID(int=random.Random(3).getrandbits(128) ^ n)) for n in range(4000)]
    share = sum(machine_draw(g, "sample") < 0.25 for g in guids) / len(guids)
    assert 0.22 <= share <= 0.28  # binomial(4000, 0.25): outside this range far less than once in 10^6
    assert [machine_draw(g, "sample") for g in guids[:5]] == [machine_draw(g, "sample") for g in guids[:5]]
    assert machine_draw(guids[0], "sample") != machine_draw(guids[0], "other")


def test_the_policy_is_fetched_at_most_once_per_max_age(spool: Spool, fake_service: FakeService) -> None:
    for _ in range(3):
        upload(spool, fake_service.url)
    assert fake_service.requests.count(("GET", "/v1/policy")) == 1
    upload(spool, fake_service.url, policy_max_age=0)
    assert fake_service.requests.count(("GET", "/v1/policy")) == 2


def test_an_unreachable_policy_keeps_the_cached_one_and_is_not_asked_again_at_once(
    spool: Spool, fake_service: FakeService
) -> None:
    fake_service.policy = {"products": {"sample": {"enabled": False}}}
    upload(spool, fake_service.url)
    first_check = cached(spool).checked
    fake_service.policy_status = 503
    upload(spool, fake_service.url, policy_max_age=0)
    assert cached(spool).disabled == {"sample"} and cached(spool).checked > first_check
    fake_service.stop()
    upload(spool, fake_service.url, policy_max_age=0)  # refused: still the cached rules
    assert cached(spool).disabled == {"sample"}


def test_a_service_without_a_policy_disables_nothing(spool: Spool, fake_service: FakeService) -> None:
    fake_service.policy_status = 404
    seal(spool, "sample", 1)
    assert upload(spool, fake_service.url).accepted == 1
    assert cached(spool).products == {} and cached(spool).checked is not None


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b"[]",
        b'{"products": []}',
        b'{"products": {"sample": {"enabled": "no"}, "other": {"sample_rate": "half"}}}',
        b'{"products": {"sample": 5, "other": {"enabled": null}}}',
    ],
)
def test_a_malformed_policy_changes_nothing(answer: bytes, spool: Spool, fake_service: FakeService) -> None:
    fake_service.policy = answer
    seal(spool, "sample", 2)
    assert upload(spool, fake_service.url).accepted == 2
    assert cached(spool).products == {}
    assert seal(spool, "sample", 3) == 3


def test_rules_are_read_leniently_and_clamped() -> None:
    doc = {
        "products": {
            "a": {"enabled": False},
            "b": {"sample_rate": 7},
            "c": {"sample_rate": -1, "enabled": True},
            "d": {"enabled": 1},  # not a bool: ignored, so d stays enabled at full rate
            "e": {"sample_rate": 0.25},
        }
    }
    policy = VendorPolicy.from_answer(doc, checked=1.0)
    assert policy.products == {
        "a": ProductRule(False, 1.0),
        "b": ProductRule(True, 1.0),
        "c": ProductRule(True, 0.0),
        "e": ProductRule(True, 0.25),
    }
    assert policy.drop_reason("a", 0.0) == "disabled-by-vendor"
    assert policy.drop_reason("c", 0.0) == "sampled-out"
    assert policy.drop_reason("e", 0.2) is None and policy.drop_reason("e", 0.3) == "sampled-out"
    assert policy.drop_reason("unnamed", 0.99) is None and policy.drop_reason("d", 0.99) is None


def test_an_unreadable_cache_is_the_empty_policy(spool: Spool) -> None:
    spool.db.write(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('vendor_policy', '{oops')"))
    assert cached(spool) == VendorPolicy()
    spool.db.write(lambda c: vendor_policy.write(c, VendorPolicy({"x": ProductRule(False)}, checked=5.0)))
    assert cached(spool) == VendorPolicy({"x": ProductRule(False, 1.0)}, checked=5.0)
    raw = spool.db.read(lambda c: c.execute("SELECT value FROM meta WHERE key = 'vendor_policy'").fetchone()[0])
    assert json.loads(raw)["checked"] == 5.0

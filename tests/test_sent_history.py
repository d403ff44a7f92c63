"""What was sent: ``ceip review --sent`` shows the items receivers accepted in the last 30 days, exactly as
sent, with when and where; the history is bounded, and withdrawing consent or the machine ID removes it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fake_service import FakeService
from helpers import epoch

from ceip_core import sent_history
from ceip_core.cli import cli
from ceip_core.consent import Consent
from ceip_core.sealing import seal_session
from ceip_core.session_data import SessionData
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB


@pytest.fixture
def spool(sample: Any, ceip_home: Path) -> Spool:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    consent.opt_in("other")
    return Spool(StateDB(ceip_home))


def seal(spool: Spool, product: str = "sample", feature: str = "open_file") -> None:
    data = SessionData(product, "1.0", time.time() - 60, time.time(), counters={(feature, None): 1})
    data.consent_epoch = epoch(spool, product)
    assert seal_session(data, spool.db.folder)


def ceip(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def sent_lines(*args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ceip("review", "--sent", "--json", *args).splitlines()]


def test_review_sent_shows_what_the_receiver_accepted_exactly_as_sent(spool: Spool, fake_service: FakeService) -> None:
    assert "Nothing was sent in the last 30 days." in ceip("review", "--sent")
    seal(spool)
    seal(spool, "other", "used")
    ceip("upload", "--to", f"{fake_service.url}/")
    lines = sent_lines()
    assert [line["item"] for line in lines] == sorted(fake_service.stored.values(), key=lines_order(lines))
    assert {line["destination"] for line in lines} == {fake_service.url + "/"}
    assert all(line["sent"].endswith(" UTC") for line in lines)
    text = ceip("review", "--sent", "--product", "sample")
    assert "== sample: sent " in text and f"to {fake_service.url}/ ==" in text and "open_file" in text
    assert "other" not in text
    assert "Nothing is queued." in ceip("review")  # the queue itself is empty


def lines_order(lines: list[dict[str, Any]]) -> Any:
    ids = [line["item"]["report_id"] for line in lines]
    return lambda item: ids.index(item["report_id"])


def test_opting_out_removes_the_history_of_that_product_only(spool: Spool, fake_service: FakeService) -> None:
    seal(spool)
    seal(spool, "other", "used")
    ceip("upload", "--to", fake_service.url)
    Consent(StateDB(spool.db.folder)).opt_out("sample")
    assert [line["item"]["product"] for line in sent_lines()] == ["other"]


def test_resetting_the_machine_id_removes_what_the_old_one_sent(spool: Spool, fake_service: FakeService) -> None:
    seal(spool)
    ceip("upload", "--to", fake_service.url)
    assert len(sent_lines()) == 1
    Consent(StateDB(spool.db.folder)).reset_id()
    ceip("upload", "--to", fake_service.url)  # the deletion requests for the old ID
    assert {line["item"]["type"] for line in sent_lines()} == {"deletion"}


def history(spool: Spool) -> list[str]:
    return [i.item_id for i in spool.db.read(lambda conn: list(sent_history.read_sent(conn, NOW)))]


NOW = 1_900_000_000.0


def put(spool: Spool, item_id: str, sent: float, size: int = 10) -> None:
    def work(conn: Any) -> None:
        conn.execute(
            "INSERT INTO sent (item_id, kind, product, guid, sent, destination, size, data) "
            "VALUES (?, 'report', 'sample', 'g', ?, 'https://x/', ?, ?)",
            (item_id, sent, size, b"{}"),
        )
        sent_history.prune(conn, NOW)

    spool.db.write(work)


def test_the_history_is_bounded_by_age_items_and_bytes(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    put(spool, "too-old", NOW - sent_history.MAX_AGE_S - 1)
    put(spool, "a", NOW - 100)
    assert history(spool) == ["a"]
    monkeypatch.setattr(sent_history, "MAX_ITEMS", 3)
    for name in "bcd":
        put(spool, name, NOW - 50)
    assert history(spool) == ["b", "c", "d"]  # the oldest went first
    monkeypatch.setattr(sent_history, "MAX_BYTES", 25)
    put(spool, "e", NOW, size=20)
    assert history(spool) == ["e"]  # 20 bytes fit; with the next newest (10) it would be 30


def test_destinations_keep_no_credentials_or_query() -> None:
    assert sent_history.destination_of("https://ann:pw@ceip.example.com:8443/base/?ca=/c.pem#x") == (
        "https://ceip.example.com:8443/base/"
    )
    assert sent_history.destination_of(None) == "unknown"

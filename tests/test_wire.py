"""The wire format: round trips, strict input, per-item errors, and body limits."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from ceip_core import wire
from ceip_core.records import (
    Category,
    CounterValue,
    DeletionRequest,
    EndKind,
    Histogram,
    Period,
    Problem,
    ProcessSession,
    Report,
    SystemInfo,
    UnknownItem,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def full_report() -> Report:
    return Report(
        report_id=str(uuid.uuid4()),
        guid=str(uuid.uuid4()),
        product="sample",
        product_version="1.2.3",
        period=Period(NOW, NOW),
        system=SystemInfo(
            cpu_logical=8, cpu_physical=4, memory_bucket="8-16 GiB", os="Linux", features={"bluetooth": "absent"}
        ),
        counters=[CounterValue("open_file", 3), CounterValue("export", 1, "pdf")],
        histograms=[Histogram("render_ms", 2, 30.0, 10.0, 20.0, {13: 1, 17: 1})],
        problems=[Problem("error", "ValueError@render.py:88", 2)],
        config={"theme": "dark", "zoom": 1.5, "tabs": 3, "beta": True},
        sessions=[ProcessSession("sample-app", NOW, 12.5, 1.25, 50_000_000, EndKind.CRASHED)],
        diagnostics={"recorder.invalid_value": 1},
    )


def test_items_round_trip() -> None:
    report = full_report()
    deletion = DeletionRequest(str(uuid.uuid4()), report.guid, "sample", NOW)
    assert wire.decode_item(wire.encode_item(report)) == report
    assert wire.decode_item(wire.encode_item(deletion)) == deletion
    body = wire.encode_batch([wire.encode_item(report), wire.encode_item(deletion)])
    assert wire.decode_batch(body) == [report, deletion]


@pytest.mark.parametrize(
    "categories", [None, (Category.PERFORMANCE,), (Category.CONFIGURATION, Category.PROGRAM_USE)], ids=str
)
def test_a_deletion_request_made_without_the_records_is_the_records_one(categories) -> None:
    """The opt-out makes its request's bytes with the standard library (ceip_core.deletion_wire): they are
    what the converter makes of the record, byte for byte, and the one decoder reads them back as it."""
    from ceip_core import deletion_wire

    request = DeletionRequest(
        str(uuid.uuid4()), str(uuid.uuid4()), "analyst-2", datetime.now(UTC), categories=categories
    )
    values = None if categories is None else [c.value for c in categories]
    data = deletion_wire.encode(request.request_id, request.guid, request.product, request.requested, values)
    assert data == orjson.dumps(wire.unstructure_item(request))
    assert wire.decode_item(data) == request
    assert wire.encode_item(request) == data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("counters", 0, "value"), "3", "expected int"),
        (("counters", 0, "value"), True, "expected int"),
        (("histograms", 0, "sum"), "30", "expected float"),
        (("config", "theme"), ["dark"], "config"),
        (("period", "start"), "2026-11-22T12:00:00", "UTC offset"),
        (("sessions", 0, "ended"), "exploded", "sessions"),
        (("counters", 0, "colour"), "red", "extra fields"),
        (("problems",), {}, "expected an array"),
    ],
)
def test_input_is_strict(path: tuple[object, ...], value: object, message: str) -> None:
    raw = orjson.loads(wire.encode_item(full_report()))
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(wire.WireError, match=message) as info:
        wire.structure_item(raw)
    assert info.value.reason == "invalid"
    assert info.value.item_id == raw["report_id"]


def test_one_bad_item_does_not_spoil_the_batch() -> None:
    good = full_report()
    bad = orjson.loads(wire.encode_item(full_report()))
    bad["surprise"] = 1
    newer = {"type": "heartbeat", "report_id": "abc"}
    body = wire.encode_batch([wire.encode_item(good), orjson.dumps(bad), orjson.dumps(newer)])
    decoded = wire.decode_batch(body)
    assert decoded[0] == good
    assert isinstance(decoded[1], wire.WireError) and "extra fields" in decoded[1].detail
    assert decoded[2] == UnknownItem(type="heartbeat", item_id="abc")


def test_unsupported_schema_is_named() -> None:
    raw = orjson.loads(wire.encode_item(full_report()))
    raw["schema"] = 99
    with pytest.raises(wire.WireError) as info:
        wire.structure_item(raw)
    assert info.value.reason == "unsupported-schema"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not gzip at all", "bad-gzip"),
        (gzip.compress(b'{"schema":1,"items":[]}')[:-6], "bad-gzip"),
        (gzip.compress(b"{nope"), "malformed-json"),
        (gzip.compress(b'{"schema":1}'), "malformed"),
        (gzip.compress(b'{"schema":1,"items":[],"more":1}'), "malformed"),
        (gzip.compress(b'{"schema":7,"items":[]}'), "unsupported-schema"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.read_body(body)
    assert info.value.reason == reason


def test_a_gzip_bomb_is_refused_without_expanding_it() -> None:
    bomb = gzip.compress(b" " * (wire.MAX_EXPANDED_BYTES * 10), compresslevel=9)
    assert len(bomb) < wire.MAX_COMPRESSED_BYTES
    with pytest.raises(wire.WireError) as info:
        wire.read_body(bomb)
    assert info.value.reason == "too-large"


def test_batches_are_split_to_fit_the_compressed_limit() -> None:
    rng = __import__("random").Random(7)
    items = [orjson.dumps({"noise": rng.randbytes(3000).hex()}) for _ in range(400)]  # incompressible-ish
    batches = wire.split_batches(items, max_compressed=256 * 1024)
    assert [x for b in batches for x in b] == items
    assert len(batches) > 1
    for batch in batches:
        assert len(wire.encode_batch(batch)) <= 256 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T12:00:00+00:00", "2026-11-22T12:00:00+00:00"),
        ("2026-12-03t06:56:01z", "2026-12-03T06:56:01+00:00"),  # RFC 3339: T and Z in either case
        ("2026-11-22T12:00:00.5Z", "2026-11-22T12:00:00.500000+00:00"),
        ("2026-11-22T12:00:00.123456789-05:30", "2026-11-22T12:00:00.123456-05:30"),  # cut to microseconds
        ("2026-11-22T12:00:00-00:00", "2026-11-22T12:00:00+00:00"),
    ],
)
def test_timestamps_are_rfc_3339(text: str, expected: str) -> None:
    assert wire.parse_timestamp(text).isoformat() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-22T12:00:00", "UTC offset"),
        ("2026-11-22 12:00:00Z", "RFC 3339"),
        ("2026-11-22T12:00:00+0000", "RFC 3339"),
        ("20261122T120000Z", "RFC 3339"),
        ("2026-11-22T12:00:60Z", "RFC 3339"),
        ("2026-11-22T12:00:00+24:00", "RFC 3339"),
        ("2026-11-22T12:00:00.1234567890Z", "RFC 3339"),
        ("２026-11-22T12:00:00Z", "RFC 3339"),
        ("2026-02-30T12:00:00Z", "day is out of range"),
        ("0001-01-01T00:00:00+01:00", "outside the years 1 to 9999"),
    ],
)
def test_other_timestamp_spellings_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wire.parse_timestamp(text)
    raw = orjson.loads(wire.encode_item(full_report()))
    raw["period"]["end"] = text
    with pytest.raises(wire.WireError, match=message):
        wire.structure_item(raw)

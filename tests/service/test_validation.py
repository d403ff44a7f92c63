"""The service's validation agrees with the wire decoder, and the rules the schema cannot state hold."""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from service.factory import ALLOWLIST, deletion, report

from ceip_core import wire
from ceip_core.records import Report
from ceip_core.service import validation
from ceip_core.service.config import AdmissionLimits
from ceip_core.service.validation import (
    BatchError,
    Bounds,
    Rejection,
    Valid,
    check_items,
    decode_batch,
    decode_stored,
)

BOUNDS = Bounds.at(time.time(), AdmissionLimits())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5) | st.sampled_from(["2026-11-22T10:00:00+00:00", "2026-11-22T10:00:00", "pdf", "crashed"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def check(item: Any, kind: str | None = "report") -> Valid | Rejection:
    (verdict,) = check_items([msgspec.Raw(orjson.dumps(item))], kind, BOUNDS, ALLOWLIST)
    return verdict


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _paths(inner, (*path, i))
    return found


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_service_accepts_only_what_the_wire_decoder_accepts(data: st.DataObject) -> None:
    raw = report(problems={"E@x.py:1": 2}, timings={"render_ms": [1, 2]})
    raw["system"]["cpu_physical"] = 4
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(raw)[1:]))
        parent = raw
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(json_values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8))] = data.draw(json_values)
    # What the service stores, the wire decoder takes; and what the wire decoder takes, the service refuses
    # only by a rule of its own (docs/wire-format.md, "HTTP"), never as a format it cannot read.
    verdict = check(copy.deepcopy(raw))
    try:
        decoded = wire.structure_item(raw)
    except wire.WireError:
        decoded = None
    if isinstance(verdict, Valid):
        assert isinstance(decoded, Report)
    elif isinstance(decoded, Report):
        assert verdict.reason in SERVICE_RULES, (verdict, raw)


#: Reasons the service refuses an item the format allows: limits, ids, the allowlist, the clock.
SERVICE_RULES = {
    "not-allowlisted", "bad-id", "negative-value", "out-of-range", "too-long", "too-many", "bad-period",
    "future-timestamp", "too-old",
}  # fmt: skip


def test_every_rule_has_its_reason() -> None:
    item = report()
    assert isinstance(check(item), Valid)
    cases = {
        "negative-value": {"counters": [{"name": "open_file", "value": -1, "label": None}]},
        "out-of-range": {"counters": [{"name": "open_file", "value": 1 << 60, "label": None}]},
        "too-long": {"problems": [{"kind": "error", "signature": "x" * 256, "count": 1}]},
        "too-many": {"counters": [{"name": f"c{i}", "value": 1, "label": None} for i in range(1001)]},
        "invalid": {"counters": [{"name": "open_file", "value": "5", "label": None}]},
        "bad-id": {"guid": "john@example.com"},
        "unsupported-schema": {"schema": 2},
        "unsupported-schema ": {"schema": None},
        "unknown-item-type": {"type": "telemetry-v9"},
    }
    for reason, change in cases.items():
        changed = {k: v for k, v in {**item, **change}.items() if v is not None}
        verdict = check(changed)
        assert isinstance(verdict, Rejection) and verdict.reason == reason.strip(), (reason, verdict)
    bucket = report(timings={"render_ms": [1]})
    bucket["histograms"][0]["buckets"] = {"5000": 1}
    assert check(bucket) == Rejection("out-of-range", "Expected `int` <= 4095 - at `key` in `$.histograms[0].buckets`")


def test_deletions_are_honoured_for_any_product_and_any_age() -> None:
    old = deletion("0f3e7a52-0c1e-4c59-9d61-000000000001", product="retired-product")
    old["requested"] = "2001-01-01T00:00:00+00:00"
    assert isinstance(check(old, "deletion"), Valid)
    assert check(old, "report") == Rejection("wrong-endpoint", "deletion items go to /v1/deletions")


def test_configuration_values_may_be_negative_but_counts_may_not() -> None:
    item = report(config={"offset": -5, "ratio": -0.5})
    assert isinstance(check(item), Valid)
    item["diagnostics"] = {"recorder.errors": -1}
    rejection = check(item)
    assert isinstance(rejection, Rejection) and rejection.reason == "negative-value"
    assert rejection.detail.endswith("at `$.diagnostics[...]`") or "$.diagnostics" in rejection.detail


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


#: Timestamp spellings around the one the wire documents: RFC 3339 and its near misses (case, separators,
#: fractions, offsets, dates and times out of range, ISO 8601 forms that are not RFC 3339, non-ASCII digits).
spellings = st.one_of(
    st.builds(
        "{}-{}-{}{}{}:{}{}{}{}".format,
        st.sampled_from(["2026", "0001", "9999", "0000", "+2026", "２０２６"]) | _digits(4),
        st.sampled_from(["01", "02", "12", "13", "00", "1"]),
        st.sampled_from(["01", "28", "29", "30", "31", "32", "00", "3"]),
        st.sampled_from(["T", "t", " ", "_", "", "TT"]),
        st.sampled_from(["00", "06", "23", "24", "6"]) | _digits(2),
        st.sampled_from(["00", "56", "59", "60"]),
        st.sampled_from([":01", ":59", ":60", "", ":5"]),
        st.sampled_from(["", ".", ",5"]) | st.integers(1, 12).flatmap(lambda n: _digits(n).map(".".__add__)),
        st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+0000", "+00", "+05:30", "-23:59", "+24:00", "+23:60"])
        | st.sampled_from(["+00:00:00", " Z", "Z ", "UTC", "+14:00", "-12:00"]),
    ),
    st.text(max_size=30),
)


def _client_reads(item: dict[str, Any]) -> Any:
    try:
        return wire.structure_item(item)
    except wire.WireError:
        return None


@settings(max_examples=500, deadline=None)
@given(spellings)
def test_both_ends_read_every_timestamp_spelling_alike(text: str) -> None:
    """What the service takes the client takes and the other way round, and both read the same instant."""
    item = deletion("0f3e7a52-0c1e-4c59-9d61-000000000001")
    item["requested"] = text
    verdict, decoded = check(item, "deletion"), _client_reads(item)
    if decoded is None:
        assert isinstance(verdict, Rejection), (text, verdict)
        return
    assert isinstance(verdict, Valid), (text, verdict)
    ours, theirs = verdict.item.requested, decoded.requested
    assert (ours, ours.utcoffset()) == (theirs, theirs.utcoffset()), text


def test_rfc_3339_spellings_are_read_and_near_misses_refused_at_both_ends() -> None:
    base = report()
    for text, expected in {
        "2026-12-03t06:56:01z": "2026-12-03T06:56:01+00:00",  # RFC 3339 allows lower case t and z
        "2026-12-03T06:56:01.123456789Z": "2026-12-03T06:56:01.123456+00:00",  # nanoseconds: cut, not rounded
        "2026-12-03T08:56:01+02:00": "2026-12-03T08:56:01+02:00",
    }.items():
        item = deletion(base["guid"])
        item["requested"] = text
        verdict = check(item, "deletion")
        assert isinstance(verdict, Valid) and verdict.item.requested.isoformat() == expected
        assert _client_reads(item).requested.isoformat() == expected
    for text in ("2026-12-03 06:56:01Z", "2026-12-03T06:56:01+0000", "20261203T065601Z", "2026-12-03T06:56:01"):
        item = deletion(base["guid"])
        item["requested"] = text
        assert isinstance(check(item, "deletion"), Rejection) and _client_reads(item) is None, text


def test_a_stored_report_is_read_back_by_the_ingest_decoder_as_ingest_read_it() -> None:
    item = report(problems={"E@x.py:1": 2}, timings={"render_ms": [1, 2]})
    valid = check(item)
    assert isinstance(valid, Valid)
    again = decode_stored(valid.raw)
    assert msgspec.to_builtins(again, enc_hook=str) == msgspec.to_builtins(valid.item, enc_hook=str)
    # Limits are those of the day it was stored: lowering them later does not make it unreadable.
    long = {**report(), "product_version": "v" * 300}
    assert check(long).reason == "too-long"  # type: ignore[union-attr]
    assert decode_stored(orjson.dumps(long)).product_version == "v" * 300


GOOD_ID = "0f3e7a52-0c1e-4c59-9d61-000000000001"


@pytest.mark.parametrize(
    "spelling",
    [
        GOOD_ID + "\n",  # `$` matches before a final newline: this one was accepted once
        " " + GOOD_ID,
        GOOD_ID + " ",
        GOOD_ID.upper(),  # one spelling only, so that one machine cannot count, or be deleted, as two
        "{" + GOOD_ID + "}",
        "urn:uuid:" + GOOD_ID,
        GOOD_ID.replace("-", ""),
        GOOD_ID[:-1] + "\u0661",  # a non-ASCII digit
    ],
)
def test_ids_are_uuids_in_their_one_lower_case_spelling(spelling: str) -> None:
    assert isinstance(check(report(GOOD_ID)), Valid)
    for kind, item, field in (
        ("report", report(spelling), "guid"),
        ("report", {**report(GOOD_ID), "report_id": spelling}, "report_id"),
        ("deletion", deletion(spelling), "guid"),
        ("deletion", {**deletion(GOOD_ID), "request_id": spelling}, "request_id"),
    ):
        verdict = check(item, kind)
        assert isinstance(verdict, Rejection) and verdict.reason == "bad-id", (field, verdict)
        assert f"$.{field}" in verdict.detail


#: Text with surrogates among other characters, as Python's ``json`` writes it: every character escaped.
surrogate_text = st.lists(
    st.sampled_from(["a", "\\", '"', "\x00", "\U0001f600", "\ud83d", "\ude00", "\udfff", "\ud800"]), max_size=8
).map("".join)


def _as_read(text: str) -> str:
    """``text`` with each high-low surrogate pair as the one character it stands for, other surrogates as NUL."""
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return re.sub("[\ud800-\udfff]", "\x00", joined)


@settings(max_examples=300, deadline=None)
@given(surrogate_text, st.booleans())
def test_an_unpaired_surrogate_escape_refuses_its_item_and_keeps_every_other_character(text: str, upper: bool) -> None:
    """The batch decoder reads every escaped string as Python's json reads it, except that each surrogate
    escape not part of a pair reads as a NUL (which the item check refuses) instead of refusing the batch."""
    escaped = json.dumps(text)  # ensure_ascii: lone surrogates and pairs both as \\uXXXX escapes
    if upper:  # JSON allows either case of hex digit
        escaped = re.sub(r"\\u[0-9a-f]{4}", lambda m: "\\u" + m[0][2:].upper(), escaped)
    body = b'{"schema": 1, "items": [' + escaped.encode() + b', "next"]}'
    first, second = (msgspec.json.decode(raw) for raw in decode_batch(body))
    assert first == _as_read(text)
    assert second == "next"


def test_an_item_with_an_unpaired_surrogate_escape_is_refused_with_the_path() -> None:
    item = orjson.dumps({**report(), "product_version": "X"}).replace(b'"X"', b'"1.\\udc00"')
    (verdict,) = check_items(decode_batch(b'{"schema": 1, "items": [' + item + b"]}"), "report", BOUNDS, ALLOWLIST)
    assert verdict == Rejection(
        "invalid", "a NUL character or an unpaired surrogate escape in a string - at `$.product_version`"
    )


def test_past_its_bound_a_body_is_left_to_msgspec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The work per body stays bounded: past MAX_SURROGATE_ESCAPES candidates nothing is rewritten, so pairs
    still decode and an unpaired escape refuses the whole body, as before the rewrite existed."""
    monkeypatch.setattr(validation, "MAX_SURROGATE_ESCAPES", 4)
    pairs = '"' + "\\ud83d\\ude00" * 2 + '"'
    assert [msgspec.json.decode(raw) for raw in decode_batch(f'{{"schema": 1, "items": [{pairs}]}}'.encode())] == [
        "\U0001f600" * 2
    ]
    within = '"\\ud800", "\\ud800\\ud83d\\ude00"'
    assert [msgspec.json.decode(raw) for raw in decode_batch(f'{{"schema": 1, "items": [{within}]}}'.encode())] == [
        "\x00",
        "\x00\U0001f600",
    ]
    past = f'"\\ud800", {pairs}'
    with pytest.raises(BatchError) as refused:
        decode_batch(f'{{"schema": 1, "items": [{past}]}}'.encode())
    assert refused.value.reason == "malformed-json"

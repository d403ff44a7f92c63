"""Decoding and validating batch items on the receiving side: the wire schema, and what it cannot say.

Beyond the schema an item must name an allowlisted product (and allowlisted executables), carry no
negative numbers (except configuration values and histogram bucket indexes), no timestamp in the future
beyond the clock-skew allowance nor absurdly old, no string longer than the limit, no list or object with
more entries than a client ever makes, ids that are UUIDs (so no free text hides in a GUID), and a period
whose start is not after its end. Deletion requests are honoured for any product and however late.

Why msgspec and not ``wire.make_converter()``: parsing with orjson and building attrs objects costs more
than the whole rest of the ingest path, while msgspec validates while it parses, in C, about ten times
faster (bench/service.py). The msgspec types are *generated from the records* (``ceip_core.records``),
so the records stay the one definition of the format, and a property test holds the two decoders to the
same verdict. Error reasons are taken from msgspec's (stable, documented) messages; the detail is the
message itself, with the path of the offending value.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

import attrs
import msgspec
import orjson
from attrs import frozen

from ceip_core.recording import ZERO_BUCKET
from ceip_core.records import SCHEMA_VERSION, DeletionRequest, Report
from ceip_core.service.config import Limits

#: Largest count or amount accepted; sums over millions of reports stay within 64-bit integers.
MAX_COUNT = 1 << 40
#: Histogram bucket indexes a finite double can produce (see ``ceip_core.recording.bucket_of``).
BUCKET_RANGE = range(ZERO_BUCKET, 4096)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@frozen
class Rejection:
    """Why a batch or one item is refused: a short machine-readable reason, and a detail to act on."""

    reason: str
    detail: str


class BatchError(Exception):
    """A body that is not a batch at all (``malformed-json``, ``malformed``, ``unsupported-schema``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@frozen
class Bounds:
    """What one validation run compares against: the limits and the service's clock."""

    limits: Limits
    earliest: float
    """Oldest acceptable timestamp (seconds since the epoch)."""
    latest: float
    """Newest acceptable timestamp: now plus the clock-skew allowance."""

    @classmethod
    def at(cls, now: float, limits: Limits) -> Bounds:
        return cls(limits, now - limits.max_age_days * 86400, now + limits.clock_skew_s)


# -- msgspec types, generated from the records -------------------------------------------------------


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    schema: int
    items: list[msgspec.Raw]


class _Types:
    """msgspec equivalents of the record types, with the service's limits as constraints."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.structs: dict[type, type] = {}
        self.text = Annotated[str, msgspec.Meta(max_length=limits.max_string)]
        self.amount = {t: Annotated[t, msgspec.Meta(ge=0, le=MAX_COUNT)] for t in (int, float)}
        self.bucket = Annotated[int, msgspec.Meta(ge=BUCKET_RANGE.start, lt=BUCKET_RANGE.stop)]

    def entries(self, tp: Any) -> Any:
        return Annotated[tp, msgspec.Meta(max_length=self.limits.max_entries)]

    def of(self, tp: Any) -> Any:
        if tp is str:
            return self.text
        if tp in (int, float):
            return self.amount[tp]
        if tp in (bool, datetime):
            return tp
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return Literal[tuple(member.value for member in tp)]
        if attrs.has(tp):
            return self.struct(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):
            others = [a for a in args if a is not type(None)]
            if len(others) == 1:
                return self.of(others[0]) | None
            if set(others) <= {str, int, float, bool}:  # a configuration value: numbers may be negative
                return self.text | int | float | bool
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return self.entries(list.__class_getitem__(self.of(args[0])))
        elif origin is dict and args == (int, int):
            return self.entries(dict.__class_getitem__((self.bucket, self.amount[int])))
        elif origin is dict and args[0] is str:
            return self.entries(dict.__class_getitem__((self.text, self.of(args[1]))))
        raise TypeError(f"the service validation has no rule for {tp!r}: extend ceip_core/service/validation.py")

    def struct(self, cls: type, tag: str | None = None) -> type:
        if cls not in self.structs:
            hints = typing.get_type_hints(cls)
            fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
            for f in attrs.fields(cls):
                tp = Literal[SCHEMA_VERSION] if f.name == "schema" else self.of(hints[f.name])
                if f.default is attrs.NOTHING or f.name == "schema":  # every item says its schema
                    fields.append((f.name, tp))
                elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                    fields.append((f.name, tp, msgspec.field(default_factory=f.default.factory)))
                else:
                    fields.append((f.name, tp, f.default.value if isinstance(f.default, enum.Enum) else f.default))
            options: dict[str, Any] = {"forbid_unknown_fields": True}
            if tag is not None:
                options.update(tag=tag, tag_field="type")
            self.structs[cls] = msgspec.defstruct(f"Wire{cls.__name__}", fields, **options)
        return self.structs[cls]


@cache
def _decoders(limits: Limits) -> tuple[msgspec.json.Decoder[Any], type, type]:
    """The item decoder (reports or deletions, tagged by ``type``) and the two struct types, per limits."""
    made = _Types(limits)
    report, deletion = made.struct(Report, "report"), made.struct(DeletionRequest, "deletion")
    return msgspec.json.Decoder(report | deletion), report, deletion


_BATCH = msgspec.json.Decoder(_Batch)


def decode_batch(data: bytes) -> list[msgspec.Raw]:
    """The raw items of an expanded batch body; raises :class:`BatchError` for the body as a whole."""
    try:
        batch = _BATCH.decode(data)
    except msgspec.ValidationError as exc:
        raise BatchError("malformed", f'a batch is {{"schema": 1, "items": [...]}}: {exc}') from None
    except msgspec.DecodeError as exc:
        raise BatchError("malformed-json", str(exc)) from None
    if batch.schema != SCHEMA_VERSION:
        raise BatchError("unsupported-schema", f"batch schema {batch.schema} (this side speaks {SCHEMA_VERSION})")
    return batch.items


# -- per item ---------------------------------------------------------------------------------------

_CONSTRAINT = re.compile(r"^Expected `(\w+)`(?: of length)? (<=|>=|<|>) (-?[\d.]+)")


def _reason(message: str) -> str:
    """A machine-readable reason for a msgspec validation message."""
    if message.startswith("Object missing required field `type`") or message.endswith("at `$.type`"):
        return "unknown-item-type"
    if message.endswith("at `$.schema`") or message == "Object missing required field `schema`":
        return "unsupported-schema"
    if message.startswith("Expected `object`, got") and " - at " not in message:
        return "malformed"
    found = _CONSTRAINT.match(message)
    if found is None:
        return "invalid"
    kind, op, bound = found.groups()
    if "of length" in message:
        return "too-long" if kind == "str" else "too-many"
    if op == ">=" and float(bound) == 0:
        return "negative-value"
    return "out-of-range"


def _timestamps(item: Any) -> list[tuple[str, datetime]]:
    if hasattr(item, "requested"):
        return [("$.requested", item.requested)]
    found = [("$.period.start", item.period.start), ("$.period.end", item.period.end)]
    return found + [(f"$.sessions[{i}].started", s.started) for i, s in enumerate(item.sessions)]


def _semantic(item: Any, is_report: bool, bounds: Bounds, allowlist: Mapping[str, frozenset[str]]) -> Rejection | None:
    """The rules beyond types, on an item that decoded."""
    for name in ("report_id" if is_report else "request_id", "guid"):
        if not _UUID.match(getattr(item, name)):
            return Rejection("bad-id", f"{name} must be a UUID - at `$.{name}`")
    for path, moment in _timestamps(item):
        if moment.tzinfo is None:
            return Rejection("invalid", f"timestamp must carry a UTC offset - at `{path}`")
        if not is_report:  # a deletion is honoured however late it comes
            continue
        ts = moment.timestamp()
        if ts > bounds.latest:
            return Rejection("future-timestamp", f"{moment.isoformat()} is in the future - at `{path}`")
        if ts < bounds.earliest:
            return Rejection("too-old", f"older than {bounds.limits.max_age_days:g} days - at `{path}`")
    if not is_report:  # deleting is always allowed, for any product
        return None
    executables = allowlist.get(item.product)
    if executables is None:
        return Rejection("not-allowlisted", f"product {item.product!r} is not on this service's allowlist")
    if item.period.start > item.period.end:
        return Rejection("bad-period", "period starts after it ends - at `$.period`")
    for i, session in enumerate(item.sessions):
        if session.executable not in executables:
            return Rejection(
                "not-allowlisted",
                f"executable {session.executable!r} is not allowlisted for {item.product!r} - at `$.sessions[{i}]`",
            )
    return None


@frozen
class Valid:
    """An item that passed: the decoded struct (reports and deletions: the record's fields) and its JSON."""

    item: Any
    raw: bytes

    @property
    def is_report(self) -> bool:
        return hasattr(self.item, "report_id")


def check_items(
    raws: Sequence[msgspec.Raw], kind: str | None, bounds: Bounds, allowlist: Mapping[str, frozenset[str]]
) -> list[Valid | Rejection]:
    """Per item, in order: :class:`Valid`, or the :class:`Rejection` that says why not.

    :param kind: what the endpoint takes: ``report`` or ``deletion`` (the other type is ``wrong-endpoint``),
        or None for either (``ceip import``).
    """
    decoder, report_type, _ = _decoders(bounds.limits)
    out: list[Valid | Rejection] = []
    for raw in raws:
        try:
            item = decoder.decode(raw)
        except msgspec.ValidationError as exc:
            out.append(Rejection(_reason(str(exc)), str(exc)))
            continue
        is_report = type(item) is report_type
        if kind is not None and kind != ("report" if is_report else "deletion"):
            other = "report" if is_report else "deletion"
            out.append(Rejection("wrong-endpoint", f"{other} items go to /v1/{other}s"))
            continue
        out.append(_semantic(item, is_report, bounds, allowlist) or Valid(item, bytes(raw)))
    return out


def item_id_of(raw: msgspec.Raw, verdict: Valid | Rejection) -> str | None:
    """The id a client gave an item, to label its result (read again only for rejected items)."""
    if isinstance(verdict, Valid):
        return str(verdict.item.report_id if verdict.is_report else verdict.item.request_id)
    try:
        doc = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        return None
    found = doc.get("report_id", doc.get("request_id")) if isinstance(doc, dict) else None
    return found if isinstance(found, str) and len(found) <= 64 else None

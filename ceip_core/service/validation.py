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
same verdict. Timestamps are the exception to "msgspec parses": msgspec's own parser reads spellings the
client's does not (and the other way round), so both ends read them with ``wire.parse_timestamp``, called
here through msgspec's ``dec_hook``. Error reasons are taken from msgspec's (stable, documented) messages;
the detail is the message itself, with the path of the offending value.

The service's second pass (``ceip_core.service.screening``) runs the client's scrubbers on the record form
of a valid report: :func:`to_record` builds it from the struct, and a report the scrubbers changed is
encoded by the client's encoder and decoded here again (:func:`revalidate`), so that the struct and the
stored body still come from this one decoder.

What validation produces is what every later reader takes: the ingest path hands the decoded struct to
storage and on to the rollup fold, and a stored report that must be read again (after a restart, or to
rebuild the rollups) is decoded by :func:`decode_stored`, the same decoder. Nothing else parses a report.
"""

from __future__ import annotations

import enum
import itertools
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

import attrs
import msgspec
import orjson
from attrs import frozen

from ceip_core import wire
from ceip_core.records import SCHEMA_VERSION, DeletionRequest, Report, is_uuid
from ceip_core.service.config import AdmissionLimits
from ceip_core.session_data import ZERO_BUCKET

#: Largest count or amount accepted; sums over millions of reports stay within 64-bit integers.
MAX_COUNT = 1 << 40
#: Histogram bucket indexes a finite double can produce (see ``ceip_core.session_data.bucket_of``).
BUCKET_RANGE = range(ZERO_BUCKET, 4096)


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

    limits: AdmissionLimits
    earliest: float
    """Oldest acceptable timestamp (seconds since the epoch)."""
    latest: float
    """Newest acceptable timestamp: now plus the clock-skew allowance."""

    @classmethod
    def at(cls, now: float, limits: AdmissionLimits) -> Bounds:
        return cls(limits, now - limits.max_age_days * 86400, now + limits.clock_skew_s)


# -- msgspec types, generated from the records -------------------------------------------------------


class Timestamp(datetime):
    """A decoded wire timestamp: an aware ``datetime``, read by ``wire.parse_timestamp``.

    A type of its own only so that msgspec hands the string to :func:`_decode_hook` instead of using its
    own parser; everything downstream treats it as the ``datetime`` it is.
    """


def _decode_hook(kind: type, value: Any) -> Any:
    if kind is Timestamp:
        if not isinstance(value, str):
            raise TypeError(f"Expected `str`, got `{type(value).__name__}`")
        return wire.parse_timestamp(value, Timestamp)
    raise NotImplementedError(f"no decoder for {kind!r}")


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    schema: int
    items: list[msgspec.Raw]


class _Types:
    """msgspec equivalents of the record types, with the service's limits as constraints."""

    def __init__(self, limits: AdmissionLimits) -> None:
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
        if tp is bool:
            return tp
        if tp is datetime:
            return Timestamp
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
def _decoders(limits: AdmissionLimits) -> tuple[msgspec.json.Decoder[Any], type, type]:
    """The item decoder (reports or deletions, tagged by ``type``) and the two struct types, per limits."""
    made = _Types(limits)
    report, deletion = made.struct(Report, "report"), made.struct(DeletionRequest, "deletion")
    return msgspec.json.Decoder(report | deletion, dec_hook=_decode_hook), report, deletion


_BATCH = msgspec.json.Decoder(_Batch)
#: What msgspec says when JSON nests deeper than the interpreter's recursion limit allows (no report
#: nests deeper than five levels, so anything near that is refused, never worked around).
_TOO_DEEP = "JSON nests too deeply"


#: What might be the escape of a UTF-16 surrogate (``\\ud800``-``\\udfff``): it is one if the run of
#: backslashes before it is even (an odd run escapes its backslash, and the ``\\u`` is text).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
#: Most surrogate escapes a body is looked through for (a client that escapes non-ASCII, as Python's json
#: does by default, writes two per emoji): about 10 ms of work at most.
MAX_SURROGATE_ESCAPES = 10_000
#: What an unpaired surrogate escape becomes: the same length, and a character the item check refuses.
_NUL_ESCAPE = b"\\u0000"


def _surrogate_escapes(data: bytes) -> list[re.Match[bytes]] | None:
    """The escapes of surrogates in ``data``, in order; None if there are more than
    :data:`MAX_SURROGATE_ESCAPES` candidates. A candidate is an escape if the run of backslashes before it
    is even; that run starts after the candidate before, which ends in a hex digit, so the runs looked at
    over a whole body add up to one pass."""
    candidates = list(itertools.islice(_SURROGATE_ESCAPE.finditer(data), MAX_SURROGATE_ESCAPES + 1))
    if len(candidates) > MAX_SURROGATE_ESCAPES:
        return None
    escapes = []
    previous_end = 0
    for candidate in candidates:
        before = data[previous_end : candidate.start()]
        if (len(before) - len(before.rstrip(b"\\"))) % 2 == 0:
            escapes.append(candidate)
        previous_end = candidate.end()
    return escapes


def _is_high(escape: re.Match[bytes]) -> bool:
    """Whether a :data:`_SURROGATE_ESCAPE` match is of a high (leading) surrogate, D800-DBFF."""
    return escape[0][3:4] in b"89abAB"


def _unpaired_surrogates_as_nul(data: bytes) -> bytes:
    """``data`` with every escape of an unpaired surrogate replaced by an escaped NUL.

    Such an escape is valid JSON text but no character, and msgspec refuses the whole body for it, which
    would refuse the good items beside the one that holds it. A NUL is refused per item by the item check
    (:func:`_decode`), so after this the bad item alone is refused. Escaped pairs (an emoji, say) are kept.
    Lexical only: it finds escapes, it reads no value. No ceip client writes one (it sends UTF-8), and a body
    without a backslash, the usual one, costs a byte search. A body with more than
    :data:`MAX_SURROGATE_ESCAPES` candidates is left as it is, so that the work per body stays bounded: its
    pairs decode, and an unpaired one refuses the body (``malformed-json``), as msgspec decides.
    """
    escapes = _surrogate_escapes(data) if b"\\" in data else None
    if not escapes:
        return data
    out: list[bytes] = []
    at = i = 0
    while i < len(escapes):
        escape = escapes[i]
        after = escapes[i + 1] if i + 1 < len(escapes) else None
        # A high surrogate with a low one right after it is one character (right after: so an escape too).
        if _is_high(escape) and after is not None and after.start() == escape.end() and not _is_high(after):
            i += 2
            continue
        out += [data[at : escape.start()], _NUL_ESCAPE]
        at = escape.end()
        i += 1
    return b"".join([*out, data[at:]])


def decode_batch(data: bytes) -> list[msgspec.Raw]:
    """The raw items of an expanded batch body; raises :class:`BatchError` for the body as a whole.

    An unpaired surrogate escape in an item makes that item, not the batch, fail
    (:func:`_unpaired_surrogates_as_nul`)."""
    try:
        batch = _BATCH.decode(_unpaired_surrogates_as_nul(data))
    except msgspec.ValidationError as exc:
        raise BatchError("malformed", f'a batch is {{"schema": 1, "items": [...]}}: {exc}') from None
    except msgspec.DecodeError as exc:
        raise BatchError("malformed-json", str(exc)) from None
    except RecursionError:
        raise BatchError("malformed-json", _TOO_DEEP) from None
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


def _timestamps(report: Any) -> list[tuple[str, datetime]]:
    found = [("$.period.start", report.period.start), ("$.period.end", report.period.end)]
    return found + [(f"$.sessions[{i}].started", s.started) for i, s in enumerate(report.sessions)]


def _nul_at(value: Any, path: str = "$") -> str | None:
    """The path of a string (or key) holding a NUL character, which PostgreSQL's text cannot store."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            found = _nul_at(key, f"{path} (a key)") or _nul_at(inner, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found = _nul_at(inner, f"{path}[{i}]")
            if found:
                return found
    return None


def _semantic(item: Any, is_report: bool, bounds: Bounds, allowlist: Mapping[str, frozenset[str]]) -> Rejection | None:
    """The rules beyond types, on an item that decoded."""
    for name in ("report_id" if is_report else "request_id", "guid"):
        if not is_uuid(getattr(item, name)):
            return Rejection("bad-id", f"{name} must be a UUID in lower case, as 8-4-4-4-12 hex digits - at `$.{name}`")
    if not is_report:  # deleting is always allowed, for any product and however late
        return None
    for path, moment in _timestamps(item):
        ts = moment.timestamp()  # aware and within datetime's range: wire.parse_timestamp made it
        if ts > bounds.latest:
            return Rejection("future-timestamp", f"{moment.isoformat()} is in the future - at `{path}`")
        if ts < bounds.earliest:
            return Rejection("too-old", f"older than {bounds.limits.max_age_days:g} days - at `{path}`")
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


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes) -> Any:
    """One item through the item decoder: the struct, or the :class:`Rejection` that says why not.

    Every way an item can fail to decode ends here as a reason: a schema mismatch (msgspec's message), JSON
    that is not UTF-8 or not JSON (``malformed-json``), nesting past the recursion limit, and a NUL
    character in a string (JSON may escape one as ``\\u0000``; PostgreSQL's text cannot hold it).
    """
    try:
        item = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return Rejection(_reason(str(exc)), str(exc))
    except msgspec.DecodeError as exc:
        return Rejection("malformed-json", str(exc))
    except RecursionError:
        return Rejection("malformed-json", _TOO_DEEP)
    if b"\\u0000" in raw:  # the only way a NUL gets into JSON text, so the walk below is rare
        found = _nul_at(msgspec.to_builtins(item, enc_hook=str))
        if found is not None:
            return Rejection("invalid", f"a NUL character or an unpaired surrogate escape in a string - at `{found}`")
    return item


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
        data = bytes(raw)
        item = _decode(decoder, data)
        if isinstance(item, Rejection):
            out.append(item)
            continue
        is_report = type(item) is report_type
        if kind is not None and kind != ("report" if is_report else "deletion"):
            other = "report" if is_report else "deletion"
            out.append(Rejection("wrong-endpoint", f"{other} items go to /v1/{other}s"))
            continue
        out.append(_semantic(item, is_report, bounds, allowlist) or Valid(item, data))
    return out


#: What a stored report is decoded with when it must be read again: the ingest decoder, with the limits
#: widened. The report passed the limits of the day it arrived; an operator who lowers them later must not
#: make the reports stored before unreadable.
STORED_LIMITS = attrs.evolve(AdmissionLimits(), max_string=1 << 30, max_entries=1 << 30)


def decode_stored(body: bytes) -> Any:
    """A stored report, decoded again by the ingest decoder (see :data:`STORED_LIMITS`), or why not.

    What a fold reads when the struct that validation produced is gone (the service restarted, another
    worker stored the report, the rollups are being rebuilt). A :class:`Rejection` means a body that this
    version of the decoder does not take, which the fold quarantines.
    """
    decoder, report_type, _ = _decoders(STORED_LIMITS)
    item = _decode(decoder, body)
    if isinstance(item, Rejection) or type(item) is report_type:
        return item
    return Rejection("malformed", "a stored body that is not a report")


# -- the record form, for the scrubbers ---------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


@cache
def _record_builder(cls: type) -> Callable[[Any], Any]:
    """Builds a ``cls`` record from its generated struct (same field names; lists become tuples and enum
    values enums; timestamps are already datetimes). Runs for every report: only the fields that need a
    conversion get one."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in attrs.fields(cls)]
    steps = [(i, step) for i, name in enumerate(names) if (step := _value_builder(hints[name])) is not _identity]

    def build(struct: Any) -> Any:
        values = [getattr(struct, name) for name in names]
        for i, step in steps:
            values[i] = step(values[i])
        return cls(*values)

    return build


def _value_builder(tp: Any) -> Callable[[Any], Any]:
    if attrs.has(tp):
        return _record_builder(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        others = [a for a in args if a is not type(None)]
        inner = _value_builder(others[0]) if len(others) == 1 else _identity
        if inner is _identity:
            return _identity
        return lambda value: None if value is None else inner(value)
    if origin is tuple:
        element = _value_builder(args[0])
        return lambda values: tuple(map(element, values))
    return _identity


def to_record(item: Any) -> Report:
    """The :class:`~ceip_core.records.Report` that a valid report struct stands for."""
    record: Report = _record_builder(Report)(item)
    return record


def revalidate(report: Report, limits: AdmissionLimits) -> Valid | Rejection:
    """A changed record as a :class:`Valid` again: encoded as a client encodes it, decoded by the item
    decoder. (A Rejection here would be a scrubber making what the service refuses; it is refused.)"""
    data = wire.encode_item(report)
    decoder, report_type, _ = _decoders(limits)
    item = _decode(decoder, data)
    if isinstance(item, Rejection):
        return item
    if type(item) is not report_type:
        return Rejection("malformed", "a scrubbed report that is not a report")
    return Valid(item, data)


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

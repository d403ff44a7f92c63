"""The wire format: records to gzip-compressed JSON and back, strictly. Documented in docs/wire-format.md.

One private cattrs converter, never the global one. Decoding a batch decodes each item on its own, so a
malformed item is reported with its reason while the good items of the same batch still go through.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import cattrs
import orjson
from cattrs.preconf.orjson import make_converter as make_orjson_converter

from ceip_core import deletion_wire
from ceip_core.records import (
    SCHEMA_VERSION,
    DeletionRequest,
    Item,
    ProductSpec,
    Report,
    UnknownItem,
)

#: Largest batch body on the wire, compressed and expanded (docs/wire-format.md, "Batch body").
MAX_COMPRESSED_BYTES = 1 << 20
MAX_EXPANDED_BYTES = 10 << 20
#: Most items in one batch: what clients send at most, and what the receiving service takes by default.
MAX_BATCH_ITEMS = 500

CONTENT_TYPE = "application/vnd.ceip.batch+json"

_ITEM_TYPES: dict[str, type] = {"report": Report, "deletion": DeletionRequest}
_TYPE_OF: dict[type, str] = {cls: name for name, cls in _ITEM_TYPES.items()}
_ARRAY_FIELDS = ("counters", "histograms", "problems", "sessions")


class WireError(ValueError):
    """A body or an item that does not decode. ``reason`` is short and machine-readable, ``detail``
    says where and why in words a sender can act on."""

    def __init__(self, reason: str, detail: str, item_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.item_id = item_id


def _strict(kind: type) -> Any:
    """cattrs coerces by default (``int("5")``); the wire accepts only the JSON type it documents."""

    def structure(value: Any, _type: Any) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


#: The one spelling of a timestamp on the wire: RFC 3339's ``date-time``, with ``T`` and ``Z`` in either
#: case as RFC 3339 allows, a fraction of 1 to 9 digits and an offset that is required; ASCII digits only.
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


def parse_timestamp(text: str, kind: type[datetime] = datetime) -> datetime:
    """A wire timestamp as an aware ``kind`` (``datetime`` or a subclass); raises ``ValueError`` saying why.

    The client's cattrs converter and the service's validation both decode timestamps with this one
    function, so they accept exactly the same spellings and read the same instant from each. The pattern
    decides what is accepted; ``fromisoformat`` (documented since Python 3.11 to take every string the
    pattern lets through, and to cut a fraction after six digits) only builds the value. Refused besides: a
    day that does not exist (``02-30``, year 0) and an instant outside the years 1 to 9999 once its offset
    is applied: each would fail later, in a reader that trusted the validation.
    """
    if _TIMESTAMP.fullmatch(text) is None:
        if _TIMESTAMP.fullmatch(text + "Z"):
            raise ValueError("timestamp must carry a UTC offset")
        raise ValueError(f"expected an RFC 3339 timestamp such as 2026-11-22T12:00:00+00:00, got {text[:40]!r}")
    parsed = kind.fromisoformat(text.upper())  # fromisoformat reads only an upper-case T and Z
    if parsed.year in (1, 9999):  # the only years an offset can push out of range
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
    return parsed


def _structure_datetime(value: Any, _type: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 timestamp string, got {type(value).__name__}")
    return parse_timestamp(value)


def _structure_bucket_keys(value: Any, _type: Any) -> dict[int, int]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    out: dict[int, int] = {}
    for key, count in value.items():
        if type(count) is not int:
            raise TypeError(f"bucket {key!r}: expected int, got {type(count).__name__}")
        out[int(key)] = count
    return out


def make_converter() -> cattrs.Converter:
    """The converter for wire format version 1.

    Wire decisions, all of them here:
    - JSON via orjson; records as objects with their attribute names; tuples as arrays;
    - enums by value; timestamps as RFC 3339 strings with a UTC offset, read by :func:`parse_timestamp`
      (the service's validation reads them with it too; naive ones are rejected);
    - histogram bucket indexes as decimal string keys;
    - input is strict: unknown keys are rejected (``forbid_extra_keys``) and no type is coerced
      (``"5"`` is not an int, ``true`` is not a number);
    - batch items are a tagged union on ``type`` (``report``, ``deletion``); an unknown type becomes
      :class:`UnknownItem` so that it is rejected alone;
    - ``categories`` (reports and deletion requests) is left out when it is None (all categories), so
      what a person consenting to everything sends is byte for byte what older clients sent (see
      :func:`unstructure_item`).
    """
    conv = make_orjson_converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        conv.register_structure_hook(kind, _strict(kind))
    conv.register_unstructure_hook(datetime, datetime.isoformat)
    conv.register_structure_hook(datetime, _structure_datetime)
    is_buckets = lambda t: t == dict[int, int]  # noqa: E731
    conv.register_structure_hook_func(is_buckets, _structure_bucket_keys)
    conv.register_unstructure_hook_func(is_buckets, lambda d: {str(k): v for k, v in d.items()})
    # Hooks for the records themselves are generated on first use (forbid_extra_keys holds for them too):
    # generating all of them here would put ~30 ms on the first seal in every product process.
    return conv


_CONVERTER = make_converter()


def unstructure_item(item: Item) -> dict[str, Any]:
    """An item as the JSON-ready mapping the wire carries, with its ``type`` tag first."""
    if isinstance(item, UnknownItem):
        raise TypeError("an unknown item cannot be sent")
    fields = _CONVERTER.unstructure(item)
    if fields.get("categories", ()) is None:  # absent means all: older receivers know no such field
        del fields["categories"]
    return {"type": _TYPE_OF[type(item)], **fields}


def encode_item(item: Item) -> bytes:
    """One item as compact JSON bytes (the form the spool stores). A deletion request's bytes are made by
    ``ceip_core.deletion_wire``, which the opt-out uses without the records' libraries."""
    if isinstance(item, DeletionRequest):
        categories = None if item.categories is None else [c.value for c in item.categories]
        return deletion_wire.encode(item.request_id, item.guid, item.product, item.requested, categories, item.schema)
    return orjson.dumps(unstructure_item(item))


def structure_item(raw: Any) -> Item:
    """Decode one item from its JSON-ready form; raises :class:`WireError` with the reason."""
    if not isinstance(raw, dict):
        raise WireError("malformed", f"an item must be an object, got {type(raw).__name__}")
    raw_id = raw.get("report_id", raw.get("request_id"))
    item_id = raw_id if isinstance(raw_id, str) else None
    tag = raw.get("type")
    cls = _ITEM_TYPES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        return UnknownItem(type=str(tag), item_id=item_id)
    fields = {k: v for k, v in raw.items() if k != "type"}
    # cattrs builds a tuple from any iterable, so an object would pass as its keys: arrays must be arrays.
    not_arrays = [k for k in _ARRAY_FIELDS if k in fields and not isinstance(fields[k], list)]
    if not_arrays:
        raise WireError("invalid", "; ".join(f"expected an array @ $.{k}" for k in not_arrays), item_id)
    if fields.get("schema") != SCHEMA_VERSION:
        raise WireError(
            "unsupported-schema", f"schema {fields.get('schema')!r} (this side speaks {SCHEMA_VERSION})", item_id
        )
    try:
        return _CONVERTER.structure(fields, cls)
    except Exception as exc:  # cattrs raises exception groups; flatten them into one readable line
        if isinstance(exc, cattrs.BaseValidationError):
            messages = cattrs.transform_error(exc, path="$", format_exception=_explain)
        else:
            messages = [str(exc)]
        raise WireError("invalid", "; ".join(messages), item_id) from None


def _explain(exc: BaseException, type_: Any) -> str:
    """Our own hooks raise messages that say what was expected; keep them instead of cattrs' generic one."""
    if type(exc) in (TypeError, ValueError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def decode_item(data: bytes) -> Item:
    """One item from the compact JSON bytes made by :func:`encode_item`."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("malformed-json", str(exc)) from None
    return structure_item(raw)


def encode_batch(encoded_items: Iterable[bytes]) -> bytes:
    """A gzip-compressed batch body from items already encoded by :func:`encode_item`.

    Splicing the stored bytes keeps the spool's copy and the sent copy byte-identical: what
    ``ceip review`` shows is exactly what leaves the machine.
    """
    body = b'{"schema":%d,"items":[%s]}' % (SCHEMA_VERSION, b",".join(encoded_items))
    return gzip.compress(body, compresslevel=6, mtime=0)


def split_batches(
    encoded_items: Sequence[bytes], max_compressed: int = MAX_COMPRESSED_BYTES, max_items: int = MAX_BATCH_ITEMS
) -> list[list[bytes]]:
    """Group encoded items into batches that each fit the body limits and hold at most ``max_items``, in order.

    An item that alone exceeds the limits is returned in a batch of its own; the caller decides what
    to do with it (the receiver would reject it as too large).
    """
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    expanded = 0
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    compressed = 0
    for data in encoded_items:
        # Flushing after each item gives an upper bound of the compressed size so far at little cost.
        added = len(compressor.compress(data)) + len(compressor.flush(zlib.Z_SYNC_FLUSH))
        if current and (
            len(current) >= max_items
            or expanded + len(data) + 64 > MAX_EXPANDED_BYTES
            or compressed + added > max_compressed
        ):
            batches.append(current)
            current, expanded, compressed = [], 0, 0
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
            added = len(compressor.compress(data)) + len(compressor.flush(zlib.Z_SYNC_FLUSH))
        current.append(data)
        expanded += len(data) + 1
        compressed += added
    if current:
        batches.append(current)
    return batches


def inflate(body: bytes, *, max_expanded: int = MAX_EXPANDED_BYTES) -> bytes:
    """Expand a gzip body, refusing one that expands past ``max_expanded`` bytes.

    Decompression is incremental and stops as soon as the limit is passed, so a gzip bomb costs at
    most ``max_expanded`` bytes of memory. Raises :class:`WireError` (``bad-gzip``, ``too-large``).
    """
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, max_expanded + 1)
    except zlib.error as exc:
        raise WireError("bad-gzip", f"body is not valid gzip ({exc})") from None
    if len(data) > max_expanded or inflater.unconsumed_tail:
        raise WireError("too-large", f"body expands past {max_expanded} bytes")
    if not inflater.eof:
        raise WireError("bad-gzip", "gzip stream is truncated")
    return data


def read_body(body: bytes, *, max_expanded: int = MAX_EXPANDED_BYTES) -> list[Any]:
    """Expand (see :func:`inflate`) and parse a batch body into raw items. Raises :class:`WireError`."""
    data = inflate(body, max_expanded=max_expanded)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("malformed-json", str(exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise WireError("malformed", 'a batch is an object with an "items" array')
    if doc.get("schema") != SCHEMA_VERSION:
        raise WireError("unsupported-schema", f"batch schema {doc.get('schema')!r} (this side speaks {SCHEMA_VERSION})")
    extra = set(doc) - {"schema", "items"}
    if extra:
        raise WireError("malformed", f"unknown batch keys: {', '.join(sorted(extra))}")
    return list(doc["items"])


# -- product declarations ---------------------------------------------------------------------------


def spec_document(spec: ProductSpec) -> dict[str, Any]:
    """A product's declaration as JSON-ready data: one entry of ``ceip describe --json`` and of the
    receiving service's ``--specs`` file. A metric's ``max_value`` is always a float, so that a spec
    read back from JSON has the same form, and the same :func:`spec_digest`, as the one it was made from."""
    doc: dict[str, Any] = orjson.loads(orjson.dumps(_CONVERTER.unstructure(spec)))  # plain JSON types
    for metric in doc["metrics"]:
        if metric["max_value"] is not None:
            metric["max_value"] = float(metric["max_value"])
    return doc


@functools.lru_cache(maxsize=64)
def spec_digest(spec: ProductSpec) -> str:
    """The content hash a report carries in ``spec_digest``: the first 32 hex digits of the SHA-256 of
    :func:`spec_document` without ``executables``, as compact JSON with sorted keys. Any change to what a
    report may hold changes it; which processes may record is the allowlist's business, not the report's."""
    document = {k: v for k, v in spec_document(spec).items() if k != "executables"}
    data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:32]


def specs_document(specs: Iterable[ProductSpec]) -> dict[str, Any]:
    """The specs file: ``{"schema": 1, "products": [declaration, ...]}`` (see docs/wire-format.md)."""
    return {"schema": SCHEMA_VERSION, "products": [spec_document(spec) for spec in specs]}


def read_specs(data: bytes) -> list[ProductSpec]:
    """The declarations of a specs file (:func:`specs_document`), in file order; raises :class:`WireError`."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("malformed-json", str(exc)) from None
    if not isinstance(doc, dict) or set(doc) != {"schema", "products"} or not isinstance(doc["products"], list):
        raise WireError("malformed", 'a specs file is {"schema": 1, "products": [...]} (ceip describe --json)')
    if doc["schema"] != SCHEMA_VERSION:
        raise WireError("unsupported-schema", f"schema {doc['schema']!r} (this side speaks {SCHEMA_VERSION})")
    specs = []
    for i, entry in enumerate(doc["products"]):
        try:
            specs.append(_CONVERTER.structure(entry, ProductSpec))
        except Exception as exc:
            if isinstance(exc, cattrs.BaseValidationError):
                messages = cattrs.transform_error(exc, path=f"$.products[{i}]", format_exception=_explain)
            else:
                messages = [f"{exc} - at $.products[{i}]"]
            raise WireError("invalid", "; ".join(messages)) from None
    return specs


def decode_batch(body: bytes) -> list[Item | WireError]:
    """Every item of a gzip batch body, or the :class:`WireError` that explains why it is not one."""
    results: list[Item | WireError] = []
    for raw in read_body(body):
        try:
            results.append(structure_item(raw))
        except WireError as err:
            results.append(err)
    return results


__all__ = [
    "CONTENT_TYPE",
    "MAX_BATCH_ITEMS",
    "MAX_COMPRESSED_BYTES",
    "MAX_EXPANDED_BYTES",
    "WireError",
    "decode_batch",
    "decode_item",
    "encode_batch",
    "encode_item",
    "inflate",
    "make_converter",
    "parse_timestamp",
    "read_body",
    "read_specs",
    "spec_digest",
    "spec_document",
    "specs_document",
    "split_batches",
    "structure_item",
    "unstructure_item",
]

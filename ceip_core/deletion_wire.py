"""A deletion request's wire bytes, made with the standard library alone.

An opt-out queues its deletion request inside the transaction that records the choice, and
``ceip consent out X`` must answer at once: making the request through the records (attrs) and the wire's
converter (cattrs) would cost that command a quarter of its start-up (issue 11). So the bytes of every
deletion request are made here, and only here: the client's opt-out, narrowing and ID reset call
:func:`encode`, and ``wire.encode_item`` hands a :class:`~ceip_core.records.DeletionRequest` to it too.
What it writes is read by the wire's one decoder (``wire.decode_item``), and a test holds the two together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from ceip_core.version import SCHEMA_VERSION


def encode(
    request_id: str,
    guid: str,
    product: str,
    requested: datetime,
    categories: Iterable[str] | None = None,
    schema: int = SCHEMA_VERSION,
) -> bytes:
    """The compact JSON of a deletion request, its fields in the record's order and ``type`` first.

    ``categories`` are values of ``records.Category`` (delete only their data), in that enum's order; None
    (everything) leaves the field out, so that an opt-out is byte for byte what older clients sent."""
    fields: dict[str, object] = {
        "type": "deletion",
        "request_id": request_id,
        "guid": guid,
        "product": product,
        "requested": requested.isoformat(),
        "schema": schema,
    }
    if categories is not None:
        fields["categories"] = list(categories)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()

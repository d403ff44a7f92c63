"""schemathesis hooks for ``ceip serve`` (loaded through ``SCHEMATHESIS_HOOKS``; see test_schemathesis.py):
batch bodies go out as clients send them, gzip-compressed JSON."""

from __future__ import annotations

import gzip
import json
from typing import Any

import schemathesis

from ceip_core import wire


@schemathesis.serializer(wire.CONTENT_TYPE)
def gzip_json(ctx: Any, value: Any) -> dict[str, Any]:
    """JSON (non-ASCII escaped, as any encoder may), gzip-compressed."""
    return {"data": gzip.compress(json.dumps(value).encode(), mtime=0)}

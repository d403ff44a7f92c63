"""A recorded session in plain standard-library types, and the log-bucket histograms it holds.

What a recorder hands to sealing (``ceip_core.recording`` -> ``ceip_core.sealing``, in process or through a
detached sealer, ``ceip_core.detached``) and what the agent collects a product's values into. It lives
beneath all of them so that the sealer reads the session without importing the recorder. The bucket
scheme is also the wire's: the receiving service checks bucket indexes against it.

Standard library only (``math``): the recording path imports it.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False  # typing costs more than the recording path's import budget
if TYPE_CHECKING:
    from typing import Any

#: Bucket ``i`` of a histogram holds values in ``[2**(i/4), 2**((i+1)/4))`` (about 19% wide).
BUCKETS_PER_OCTAVE = 4
#: The bucket for zero and for values too small to matter (below 2**-256).
ZERO_BUCKET = -1024


class SessionData:
    """One recorded session (or the part of it since the last seal), handed to ``ceip_core.sealing``."""

    __slots__ = (
        "config",
        "consent_epoch",
        "counters",
        "end",
        "errors",
        "histograms",
        "problems",
        "product",
        "start",
        "version",
    )

    def __init__(
        self,
        product: str,
        version: str,
        start: float,
        end: float,
        *,
        counters: dict[tuple[Any, Any], int] | None = None,
        histograms: dict[tuple[Any, Any], list[Any]] | None = None,
        problems: dict[tuple[str, str], int] | None = None,
        config: dict[str, Any] | None = None,
        errors: dict[str, int] | None = None,
        consent_epoch: int | None = None,
    ) -> None:
        self.product = product
        self.version = version
        self.start = start
        self.end = end
        self.counters = counters or {}
        self.histograms = histograms or {}
        """(name, label) -> [count, sum, min, max, {bucket: count}]"""
        self.problems = problems or {}
        self.config = config or {}
        self.errors = errors or {}
        self.consent_epoch = consent_epoch
        """The consent epoch the data was recorded under; the spool refuses it if consent changed since."""

    def is_empty(self) -> bool:
        return not (self.counters or self.histograms or self.problems or self.config or self.errors)


def bucket_of(value: float) -> int:
    """The log bucket a non-negative finite value falls in."""
    if value <= 0:
        return ZERO_BUCKET
    return max(math.floor(math.log2(value) * BUCKETS_PER_OCTAVE), ZERO_BUCKET)


def valid_value(value: object) -> bool:
    """True for what a histogram takes: a non-negative, finite int or float."""
    return type(value) in (int, float) and value >= 0 and value != math.inf  # type: ignore[operator]


def add_value(histogram: list[Any], value: float) -> None:
    """Add ``value`` to a histogram in ``SessionData`` form, ``[count, sum, min, max, {bucket: count}]``:
    the one place a recorder and the agent (a product's collector's values) both count values."""
    histogram[0] += 1
    histogram[1] += value
    if value < histogram[2]:
        histogram[2] = value
    if value > histogram[3]:
        histogram[3] = value
    bucket = bucket_of(value)
    histogram[4][bucket] = histogram[4].get(bucket, 0) + 1

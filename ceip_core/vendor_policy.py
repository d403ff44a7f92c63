"""The vendor's kill switch and sampling rates, as last fetched from the receiving service.

The receiving service publishes, per product, whether it wants reports at all (``enabled``) and what share
of machines (``sample_rate``), so that the vendor can stop or thin out a product's reporting without shipping
an update. The uploader fetches it (``GET /v1/policy``) at most every :data:`MAX_AGE_S` seconds and caches
it in the state database's ``meta`` table, where the two places that honour it read it:

- sealing drops a report of a disabled product (counted ``disabled-by-vendor``), and the reports of a
  sampled product from machines outside the sample (counted ``sampled-out``). The sample is of machines,
  not reports (see :func:`machine_draw`): a machine in it sends everything, so counts of distinct
  machines, the measure problems are ranked by, stay unbiased;
- the spool's lease holds back reports already queued for a disabled product: they are sent if the
  vendor enables it again, or age out under the spool's quotas.

A product the policy does not name is enabled at full rate, and a policy that cannot be read changes
nothing: the kill switch is the vendor's tool for asking for *less*, never a way to break uploads.

Standard library only: sealing reads it in the product's process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

#: How old the cached policy may grow before the uploader asks the service again.
MAX_AGE_S = 15 * 60.0

#: The ``meta`` key the cached policy is stored under.
META_KEY = "vendor_policy"


@dataclass(frozen=True)
class ProductRule:
    """What the vendor wants for one product."""

    enabled: bool = True
    sample_rate: float = 1.0
    """Share of machines that report, from 0 (none) to 1 (all)."""


@dataclass(frozen=True)
class VendorPolicy:
    """The vendor's rules by product id, and when they were last asked for."""

    products: Mapping[str, ProductRule] = field(default_factory=dict)
    checked: float | None = None
    """When the service was last asked (answered or not); None if it never was."""

    @property
    def disabled(self) -> frozenset[str]:
        """Products whose queued reports must not be sent."""
        return frozenset(p for p, rule in self.products.items() if not rule.enabled)

    def drop_reason(self, product: str, draw: float) -> str | None:
        """Why a new report of ``product`` must not be spooled, or None to keep it. ``draw`` is the
        machine's :func:`machine_draw` for the product: the report is kept when it is below the sample
        rate."""
        rule = self.products.get(product, ProductRule())
        if not rule.enabled:
            return "disabled-by-vendor"
        if draw >= rule.sample_rate:
            return "sampled-out"
        return None

    @classmethod
    def from_answer(cls, doc: object, checked: float) -> VendorPolicy:
        """Read the service's answer ``{"products": {id: {"enabled": bool, "sample_rate": float}}}``.

        Raises ValueError if the answer is not of that shape at all. A product entry that is malformed is
        skipped (that product stays enabled at full rate) and logged; a sample rate outside [0, 1] is
        clamped into it."""
        products = doc.get("products") if isinstance(doc, dict) else None
        if not isinstance(products, dict):
            raise ValueError('a policy is an object with a "products" object')
        rules: dict[str, ProductRule] = {}
        for product, entry in products.items():
            rule = _rule(entry)
            if rule is None:
                log.warning("ignoring the vendor policy for %r: malformed entry %.200r", product, entry)
            else:
                rules[str(product)] = rule
        return cls(rules, checked)


def _rule(entry: object) -> ProductRule | None:
    if not isinstance(entry, dict):
        return None
    enabled = entry.get("enabled", True)
    rate = entry.get("sample_rate", 1.0)
    if type(enabled) is not bool or type(rate) not in (int, float) or not math.isfinite(rate):
        return None
    return ProductRule(enabled, min(1.0, max(0.0, float(rate))))


def read(conn: sqlite3.Connection) -> VendorPolicy:
    """The cached policy (the empty policy if none was fetched yet, or if the cache is unreadable)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    if row is None:
        return VendorPolicy()
    try:
        doc = json.loads(row[0])
        return VendorPolicy.from_answer(doc, float(doc["checked"]))
    except (ValueError, TypeError, KeyError):
        log.warning("the cached vendor policy is unreadable; it will be fetched again")
        return VendorPolicy()


def write(conn: sqlite3.Connection, policy: VendorPolicy) -> None:
    """Cache ``policy`` inside the caller's transaction."""
    doc = {
        "checked": policy.checked,
        "products": {p: {"enabled": r.enabled, "sample_rate": r.sample_rate} for p, r in policy.products.items()},
    }
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (META_KEY, json.dumps(doc)))


@runtime_checkable
class PolicySource(Protocol):
    """A transport that can also fetch the vendor's policy (the HTTP transport does)."""

    async def fetch_policy(self) -> VendorPolicy | None:
        """The vendor's current policy, or None if it could not be fetched now."""
        ...


def machine_draw(guid: str, product: str) -> float:
    """A number in [0, 1) that is the same for every report of one machine and product, and uniformly
    spread over machines: whether a machine is in a product's sample. A new GUID (``ceip reset-id``, or
    an opt-out and a new opt-in) draws again."""
    digest = hashlib.sha256(f"{guid}\0{product}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64

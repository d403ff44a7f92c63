"""What the operator configures: which products may report (the service allowlist), the per-product
kill switch and sampling policy that clients fetch, k for k-anonymity, and the limits.

The allowlist and the policy are small TOML files so that they can be reviewed like code. The allowlist
has the maintainers' format (``ceip_core.allowlist``, ``ceip allowlist``), so one file serves both sides::

    # allowlist.toml: products that may report, and the executables their process sessions may name
    [products.analyst]
    executables = ["analyst", "analyst.exe"]

    # policy.toml: what clients are told by GET /v1/policy
    [products.analyst]
    enabled = true        # false: clients stop reporting this product (the kill switch)
    sample_rate = 0.25    # the share of machines that report

Without ``--allowlist`` the service allows the products of the installed product plugins, with the
executables their specs declare: the vendor that ships the plugins runs the service with the same set.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

from ceip_core import wire
from ceip_core.allowlist import Allowlist, AllowlistError
from ceip_core.records import ProductSpec


class ConfigError(Exception):
    """A service configuration file that cannot be used; the message names the file and the fix."""


@frozen
class Limits:
    """Bounds on what one request may cost the service. Defaults: ARCHITECTURE.md, section 4."""

    max_compressed: int = wire.MAX_COMPRESSED_BYTES
    max_expanded: int = wire.MAX_EXPANDED_BYTES
    max_string: int = 255
    """Longest string in an item, in characters; clients cut strings to 255 UTF-8 bytes, never more."""
    max_entries: int = 1000
    """Most entries of any list or object in one report (clients keep at most 1000 series)."""
    clock_skew_s: float = 15 * 60
    """How far in the future a timestamp may be, for machines whose clocks run ahead."""
    max_age_days: float = 400
    """Oldest acceptable timestamp: older is a broken clock, not a machine back from a long trip."""
    rate_burst: float = 200
    """Items one machine (GUID) may send at once ..."""
    rate_per_s: float = 0.1
    """... and how fast that allowance refills (items per second)."""
    request_timeout_s: float = 30
    """Longest a request may take, body upload included; slower ones get 408."""


@frozen
class ProductPolicy:
    """What clients are told about one product: report or not, and from which share of machines."""

    enabled: bool = True
    sample_rate: float = 1.0


@frozen
class ServiceConfig:
    """Everything the receiving service is told at start; immutable while it runs."""

    allowlist: Mapping[str, frozenset[str]]
    """Allowlisted product ids and, per product, the executables its sessions may name."""
    policy: Mapping[str, ProductPolicy] = field(factory=dict)
    """Per-product policy; products not named here are enabled with sample rate 1."""
    k: int = 5
    """Published summaries hide groups of fewer than ``k`` machines."""
    limits: Limits = Limits()
    retention_days: int = 90
    """Days raw reports and per-machine rows are kept (``ceip_core.service.aging``); 0 keeps them for ever."""

    def policy_for(self, product: str) -> ProductPolicy:
        return self.policy.get(product, ProductPolicy())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _products_table(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    products = doc.get("products")
    extra = set(doc) - {"products"}
    if extra or not isinstance(products, dict):
        raise ConfigError(f"{path}: expected only [products.<id>] tables, e.g. [products.analyst]")
    for product, table in products.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: products.{product} must be a table")
    return products


def allowlist_from_specs(specs: Iterable[ProductSpec]) -> dict[str, frozenset[str]]:
    """The default allowlist: the installed product plugins and the executables they declare."""
    return {spec.id: frozenset(spec.executables) for spec in specs}


def load_allowlist(path: Path) -> dict[str, frozenset[str]]:
    """Read an allowlist file: the maintainers' format (``ceip_core.allowlist``), of which the service
    uses the product ids and executable names (paths and hashes can only be checked on the machine)."""
    try:
        entries = Allowlist.read(path).entries
    except AllowlistError as exc:
        raise ConfigError(str(exc)) from None
    allowlist: dict[str, set[str]] = {}
    for entry in entries:
        allowlist.setdefault(entry.product, set()).add(entry.name)
    return {product: frozenset(names) for product, names in allowlist.items()}


def load_policy(path: Path, allowlist: Mapping[str, frozenset[str]]) -> dict[str, ProductPolicy]:
    """Read a policy file (see the module docstring); every product it names must be allowlisted."""
    policy: dict[str, ProductPolicy] = {}
    for product, table in _products_table(_read_toml(path), path).items():
        if product not in allowlist:
            known = ", ".join(sorted(allowlist)) or "none"
            raise ConfigError(f"{path}: product {product!r} is not on the service allowlist (known: {known})")
        enabled = table.get("enabled", True)
        rate = table.get("sample_rate", 1.0)
        if (
            set(table) - {"enabled", "sample_rate"}
            or not isinstance(enabled, bool)
            or isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not 0.0 <= rate <= 1.0
        ):
            raise ConfigError(
                f"{path}: products.{product} takes enabled = true|false and sample_rate = a number from 0 to 1"
            )
        policy[product] = ProductPolicy(enabled=enabled, sample_rate=float(rate))
    return policy

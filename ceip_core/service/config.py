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

Without ``--allowlist`` the service allows the products it has a declaration of, with the executables
those declare: the vendor that ships the plugins runs the service with the same set.

Declarations (``ProductSpec``) come from the installed product plugins and from specs files
(``--specs FILE``, the output of ``ceip describe --json``; see docs/wire-format.md). The service keeps
every declaration it was given, by content hash (``wire.spec_digest``): a report names the one it was
scrubbed against. A product's *current* declaration, which applies to reports that name none or one this
service does not know, is the installed plugin's, else the last one listed in the files.

The files (allowlist, policy, specs) are re-read while the service runs, when one of them changes
(:class:`LiveConfig`): no restart is needed. A file that no longer reads is logged and counted, and the
configuration before it stays in force.
"""

from __future__ import annotations

import logging
import math
import os
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import field, frozen

from ceip_core import wire
from ceip_core.allowlist import Allowlist, AllowlistError
from ceip_core.records import ProductSpec

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A service configuration file that cannot be used; the message names the file and the fix."""


@frozen
class AdmissionLimits:
    """Bounds on what one request may cost the service. Defaults and what each answers: docs/operations.md, "Limits"."""

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
    rate_burst: float = 1000
    """Items one machine (GUID) may send at once ...

    A machine back from weeks offline brings up to its spool's 10,000 reports: the burst and the rate
    below let it through in about 6 minutes (docs/operations.md), while one runaway machine costs at most
    ``rate_per_s`` of a worker's roughly 700-1,600 stored reports a second."""
    rate_per_s: float = 25
    """... and how fast that allowance refills (items per second)."""
    max_items: int = wire.MAX_BATCH_ITEMS
    """Most items one batch may hold (more: 413 ``too-many-items``); clients send at most 500."""
    source_burst: float = 10_000
    """Requests plus items one connection source (peer address, IPv6 by its /64) may send at once;
    0: no per-source limit (behind a reverse proxy every request comes from the proxy) ...

    Anyone can make up GUIDs, so this is what holds back one sender posing as many machines. Ten
    machines' worth: a company's machines behind one NAT address, back from a weekend, pass."""
    source_per_s: float = 250
    """... and how fast that allowance refills (per second)."""
    request_timeout_s: float = 30
    """Longest a request may take, body upload included; slower ones get 408."""
    idle_timeout_s: float = 20
    """Longest a connection may go without a complete request head, after connecting or after its last
    answer (keep-alive); then it is closed. Longer than the client's own keep-alive (15 s)."""
    max_connections: int = 4096
    """Most connections one worker holds open; beyond, a connection is answered 503 and closed (also
    capped by the open-files limit)."""


@frozen
class ProductPolicy:
    """What clients are told about one product: report or not, and from which share of machines."""

    enabled: bool = True
    sample_rate: float = 1.0


@frozen
class Declarations:
    """Every product declaration the service knows, by content hash, and the current one per product."""

    by_digest: Mapping[str, ProductSpec] = field(factory=dict)
    current: Mapping[str, ProductSpec] = field(factory=dict)

    @classmethod
    def of(cls, specs: Iterable[ProductSpec], preferred: Iterable[ProductSpec] = ()) -> Declarations:
        """All of ``specs`` and ``preferred``; a product's current declaration is its ``preferred`` one (the
        installed plugin's), else its last in ``specs`` (the order of the files)."""
        by_digest: dict[str, ProductSpec] = {}
        current: dict[str, ProductSpec] = {}
        for spec in (*specs, *preferred):
            by_digest[wire.spec_digest(spec)] = spec
            current[spec.id] = spec
        return cls(dict(sorted(by_digest.items())), dict(sorted(current.items())))

    def applying_to(self, product: str, digest: str | None) -> tuple[ProductSpec | None, str]:
        """The declaration a report of ``product`` naming ``digest`` is checked against, and which one it
        is: ``named`` (the one it names), ``none-named`` or ``unknown`` (then the current one applies)."""
        named = self.by_digest.get(digest) if digest is not None else None
        if named is not None and named.id == product:
            return named, "named"
        return self.current.get(product), "none-named" if digest is None else "unknown"


@frozen
class ServiceConfig:
    """Everything the receiving service is told at start; immutable (a reload makes a new one)."""

    allowlist: Mapping[str, frozenset[str]]
    """Allowlisted product ids and, per product, the executables its sessions may name."""
    policy: Mapping[str, ProductPolicy] = field(factory=dict)
    """Per-product policy; products not named here are enabled with sample rate 1."""
    k: int = 5
    """Published summaries hide groups of fewer than ``k`` machines."""
    limits: AdmissionLimits = AdmissionLimits()
    declarations: Declarations = field(factory=Declarations)
    """What each product may report; reports of a product with no declaration are refused."""
    files: ConfigFiles | None = None
    """The files this configuration was read from, re-read when they change (None: fixed)."""
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


def load_specs(path: Path) -> list[ProductSpec]:
    """Read a specs file (``ceip describe --json``): the declarations it lists, in order."""
    try:
        return wire.read_specs(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except wire.WireError as exc:
        raise ConfigError(f"{path} is not a specs file (make one with: ceip describe --json): {exc}") from None


@frozen
class ConfigFiles:
    """Where the service's reloadable configuration comes from."""

    allowlist: Path | None = None
    policy: Path | None = None
    specs: tuple[Path, ...] = ()
    installed: tuple[ProductSpec, ...] = ()
    """The installed product plugins' declarations, read once (a new plugin needs a restart)."""

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.allowlist, self.policy, *self.specs) if p is not None)

    def load(self, k: int = 5, limits: AdmissionLimits = AdmissionLimits()) -> ServiceConfig:
        """Read every file into a configuration; raises :class:`ConfigError` naming the file and the fix."""
        declarations = Declarations.of([spec for path in self.specs for spec in load_specs(path)], self.installed)
        if self.allowlist is not None:
            allowlist = load_allowlist(self.allowlist)
        else:
            allowlist = allowlist_from_specs(declarations.current.values())
        undeclared = sorted(set(allowlist) - set(declarations.current))
        if undeclared:
            raise ConfigError(
                f"allowlisted product(s) {', '.join(undeclared)} have no declaration: install their plugins, "
                "or give --specs FILE (made with: ceip describe --json)"
            )
        policy = load_policy(self.policy, allowlist) if self.policy is not None else {}
        return ServiceConfig(allowlist, policy, k, limits, declarations, self)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten, in place or by rename; None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class LiveConfig:
    """The service's configuration as it is now: its files are re-read when one of them changes.

    Every worker process polls on its own, at most every ``poll_s`` seconds and only when asked (a stat per
    file), so N workers on several machines pick up a deployed file alike, with no signal to forward.
    """

    def __init__(self, config: ServiceConfig, counts: Counter[str] | None = None, poll_s: float = 1.0) -> None:
        self._config = config
        self.counts: Counter[str] = Counter() if counts is None else counts
        """``config:reloaded`` and ``config:reload-failed``, for the service's counters."""
        self._poll_s = poll_s
        self._checked = -math.inf
        self._stamps = self._stat()

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        files = self._config.files
        return tuple(_stamp(p) for p in files.paths) if files is not None else ()

    def current(self, now: float) -> ServiceConfig:
        """The configuration in force at ``now`` (seconds; the caller's clock), re-read if a file changed."""
        files = self._config.files
        if files is None or now - self._checked < self._poll_s:
            return self._config
        self._checked = now
        stamps = self._stat()
        if stamps == self._stamps:
            return self._config
        self._stamps = stamps  # a broken file is reported once, not on every poll
        try:
            fresh = files.load()
        except ConfigError as exc:
            self.counts["config:reload-failed"] += 1
            log.error("configuration not reloaded, the previous one stays in force: %s", exc)
        else:
            # Only what the files say changes; the operator's settings from the command line (k, limits,
            # retention) stay as they were given.
            self._config = attrs.evolve(
                self._config, allowlist=fresh.allowlist, policy=fresh.policy, declarations=fresh.declarations
            )
            self.counts["config:reloaded"] += 1
            log.info("configuration reloaded from %s", ", ".join(map(str, files.paths)))
        return self._config

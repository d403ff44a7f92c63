"""The allowlist: the maintainers' policy of which products and executables may report on this machine.

A product is *active* only if the allowlist names at least one of the executables its ``ProductSpec``
declares; every other product is inert: ``ceip_core.sealing`` drops its reports (counted as
``not-allowlisted``) and the agent neither observes its processes nor collects for it. A missing file
allowlists nothing (fail closed), and so does a malformed one, outside the ``ceip allowlist`` commands,
which name the line and the reason instead.

The file is TOML, a table per product listing its executables by file name (as the product declares
them), each optionally narrowed by a glob its full path must match and the SHA-256 of its file::

    [products.analyst]
    executables = ["analyst", "analyst.exe"]

    [products.hub-server]
    executables = [{ name = "hub-server", path = "/opt/hub/bin/*", sha256 = "9f86d081884c7d65..." }]
    reviewed = "5d41402abc4b2a76b9719d911017c592"

``reviewed`` is the spec digest (``ceip_core.wire.spec_digest``) of the declaration the maintainer saw when
``ceip allowlist add`` showed it; ``ceip allowlist check`` flags the product when its plugin now declares
something else (a new metric), until the maintainer reviews it again.

This is the shape of the receiving service's allowlist too (``ceip serve --allowlist``), which takes
names only. The file lives at ``$CEIP_ALLOWLIST`` if that is set, else at ``allowlist.toml`` in the state
folder. Standard library only: a product's process reads it when it seals a report.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ceip_core.records import ProductSpec

log = logging.getLogger(__name__)

FILE_NAME = "allowlist.toml"
_KEYS = {"name", "path", "sha256"}
_PRODUCT_KEYS = {"executables", "reviewed"}
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")  # fullmatch: `$` would let a final newline through
_DIGEST = re.compile(r"[0-9a-f]{32}")  # fullmatch, likewise
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HEADER = re.compile(r"""^\s*\[\s*products\s*\.\s*["']?([^"'\]\s]+)["']?\s*\]""")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = " (at end of document)"


class AllowlistError(Exception):
    """An allowlist file that cannot be used; the message names the file, the line and the reason."""


def default_path(folder: Path | None = None) -> Path:
    """``$CEIP_ALLOWLIST`` if set, else ``allowlist.toml`` in ``folder`` (default: the state folder)."""
    named = os.environ.get("CEIP_ALLOWLIST")
    if named:
        return Path(named)
    if folder is None:
        from ceip_core.statedb import state_dir

        folder = state_dir()
    return folder / FILE_NAME


@dataclass(frozen=True)
class Entry:
    """One allowlisted executable of one product."""

    product: str
    name: str
    """The executable's file name, e.g. ``analyst``; it must be one the product's spec declares."""
    path: str | None = None
    """If set, a glob (``fnmatch``: ``*`` also matches ``/``) that the executable's full path must match."""
    sha256: str | None = None
    """If set, the SHA-256 (lower-case hex) that the executable file must have."""

    def describe(self) -> str:
        extra = [f"path {self.path}"] if self.path else []
        extra += [f"sha256 {self.sha256[:12]}…"] if self.sha256 else []
        return self.name + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Allowlist:
    """The allowlisted executables, in file order."""

    entries: tuple[Entry, ...] = ()
    reviewed: Mapping[str, str] = field(default_factory=dict)
    """Per product, the spec digest of the declaration a maintainer reviewed when allowing it."""

    # -- reading ------------------------------------------------------------------------------------

    @classmethod
    def read(cls, path: Path) -> Allowlist:
        """The allowlist in ``path``; a missing file allowlists nothing. Raises :class:`AllowlistError`."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except UnicodeDecodeError:
            raise AllowlistError(f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise AllowlistError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            if (where := _TOML_POSITION.search(message)) is not None:
                raise AllowlistError(f"{path}:{where[1]}:{where[2]}: {message[: where.start()]}") from None
            if message.endswith(_AT_END):  # e.g. an unclosed array: point at the last line
                last = len(text.splitlines()) or 1
                raise AllowlistError(f"{path}:{last}: {message[: -len(_AT_END)]}, at the end of the file") from None
            raise AllowlistError(f"{path}: {message}") from None
        reviewed: dict[str, str] = {}
        return cls(tuple(_entries(doc, path, text, reviewed)), reviewed)

    @classmethod
    def current(cls, folder: Path | None = None) -> Allowlist:
        """The allowlist in force (see :func:`default_path`). Never raises: a file that cannot be used
        allowlists nothing, and the reason is logged once. Re-read only when the file changes."""
        path = default_path(folder)
        try:
            st = path.stat()
            key: tuple[int, ...] = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = ()
        cached = _CACHE.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            allowlist = cls.read(path)
        except AllowlistError as exc:
            log.error("%s; nothing is allowlisted until it is fixed", exc)
            allowlist = cls()
        _CACHE[path] = (key, allowlist)
        return allowlist

    # -- asking -------------------------------------------------------------------------------------

    def executables(self, spec: ProductSpec) -> tuple[Entry, ...]:
        """The entries of ``spec``'s product that name an executable the spec declares."""
        return tuple(e for e in self.entries if e.product == spec.id and e.name in spec.executables)

    def allows(self, spec: ProductSpec) -> bool:
        """True if the product may report: the allowlist names at least one executable it declares."""
        return bool(self.executables(spec))

    def why_inert(self, spec: ProductSpec) -> str | None:
        """None if ``spec``'s product is allowlisted, else the reason in words."""
        if self.allows(spec):
            return None
        named = sorted({e.name for e in self.entries if e.product == spec.id})
        if not named:
            return "not allowlisted"
        return (
            f"not allowlisted: the allowlist names {', '.join(named)}, which the product does not declare "
            f"(declared: {', '.join(spec.executables)})"
        )

    def declaration_changed(self, product: str, digest: str) -> bool:
        """True if a maintainer reviewed ``product``'s declaration and it now has another ``digest``."""
        seen = self.reviewed.get(product)
        return seen is not None and seen != digest

    # -- changing -----------------------------------------------------------------------------------

    def add(self, entries: Iterable[Entry], reviewed: tuple[str, str] | None = None) -> Allowlist:
        """This allowlist with ``entries`` added, and ``reviewed`` = (product, spec digest) recorded. An
        entry for the same product and executable replaces the old one, so that adding a path or hash
        narrows what is allowed instead of widening it."""
        new = list(entries)
        replaced = {(e.product, e.name) for e in new}
        kept = [e for e in self.entries if (e.product, e.name) not in replaced]
        digests = dict(self.reviewed)
        if reviewed is not None:
            digests[reviewed[0]] = reviewed[1]
        return Allowlist(tuple(kept + new), digests)

    def remove(self, product: str, name: str | None = None) -> Allowlist:
        """This allowlist without ``product``'s entries (only those for executable ``name``, if given)."""
        kept = tuple(e for e in self.entries if not (e.product == product and (name is None or e.name == name)))
        listed = {e.product for e in kept}
        return Allowlist(kept, {p: d for p, d in self.reviewed.items() if p in listed})

    def write(self, path: Path) -> None:
        """Write the allowlist to ``path`` atomically (comments in an existing file are not kept)."""
        lines = [
            "# Which products and executables may report on this machine. See `ceip allowlist --help`.",
            "# Written by `ceip allowlist`; comments are not kept.",
        ]
        for product in dict.fromkeys(e.product for e in self.entries):
            items = [_item(e) for e in self.entries if e.product == product]
            key = product if _BARE_KEY.fullmatch(product) else _quote(product)
            lines += ["", f"[products.{key}]", "executables = [", *(f"    {i}," for i in items), "]"]
            if product in self.reviewed:
                lines.append(f"reviewed = {_quote(self.reviewed[product])}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)


_CACHE: dict[Path, tuple[tuple[int, ...], Allowlist]] = {}


def make_entry(product: str, name: str, path: str | None = None, sha256: str | None = None) -> Entry:
    """An entry with its values checked and normalised; raises ``ValueError`` with the reason."""
    for key, value in (("product", product), ("name", name)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"'{key}' must be a non-empty string")
    for key, text in (("product", product), ("name", name), ("path", path)):
        if isinstance(text, str) and not text.isprintable():
            raise ValueError(f"'{key}' must not contain control characters")
    if "/" in name or "\\" in name:
        raise ValueError(f"'name' is a file name, not a path ({name!r}): give the location as 'path'")
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise ValueError("'path' must be a non-empty string (a glob such as /opt/analyst/bin/*)")
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
        raise ValueError("'sha256' must be 64 hexadecimal digits")
    return Entry(product, name, path, sha256.lower() if sha256 is not None else None)


def _entries(doc: Mapping[str, Any], path: Path, text: str, reviewed: dict[str, str]) -> Iterable[Entry]:
    """The entries of ``doc``; the products' ``reviewed`` digests go into ``reviewed``."""
    unknown = sorted(set(doc) - {"products"})
    if unknown:
        raise AllowlistError(f"{path}: unknown key {unknown[0]!r}: the file holds [products.<id>] tables only")
    products = doc.get("products", {})
    if not isinstance(products, dict):
        raise AllowlistError(f"{path}: 'products' must hold a table per product, e.g. [products.analyst]")
    # Errors point at the product's [products.<id>] header; a product written another way gets none.
    headers = {m[1]: n for n, line in enumerate(text.splitlines(), 1) if (m := _HEADER.match(line))}
    for product, table in products.items():
        where = f"{path}:{headers[product]}" if product in headers else f"{path}: products.{product}"
        if not isinstance(table, dict) or "executables" not in table or not set(table) <= _PRODUCT_KEYS:
            raise AllowlistError(
                f'{where}: a product takes executables = ["name", ...] and, optionally, reviewed = "<spec digest>"'
            )
        if "reviewed" in table:
            if not isinstance(table["reviewed"], str) or not _DIGEST.fullmatch(table["reviewed"]):
                raise AllowlistError(f"{where}: reviewed must be a spec digest (32 hexadecimal digits)")
            reviewed[product] = table["reviewed"]
        items = table["executables"]
        if not isinstance(items, list):
            raise AllowlistError(f'{where}: executables must be a list, e.g. ["{product}"]')
        for item in items:
            yield _entry(product, item, where)


def _entry(product: str, item: Any, where: str) -> Entry:
    if not isinstance(item, dict):
        item = {"name": item}
    extra = sorted(set(item) - _KEYS)
    if extra:
        raise AllowlistError(f"{where}: unknown key {extra[0]!r} in an executable (known: name, path, sha256)")
    if "name" not in item:
        raise AllowlistError(f"{where}: an executable given as a table needs a name")
    try:
        return make_entry(product, item["name"], item.get("path"), item.get("sha256"))
    except ValueError as exc:
        raise AllowlistError(f"{where}: {exc}") from None


def _item(entry: Entry) -> str:
    """One executable as the file writes it: its name, or an inline table when narrowed."""
    if entry.path is None and entry.sha256 is None:
        return _quote(entry.name)
    parts = [f"name = {_quote(entry.name)}"]
    parts += [f"path = {_quote(entry.path)}"] if entry.path is not None else []
    parts += [f"sha256 = {_quote(entry.sha256)}"] if entry.sha256 is not None else []
    return "{ " + ", ".join(parts) + " }"


def _quote(value: str) -> str:
    """A TOML basic string. Values hold no control characters (``make_entry``), so JSON's quoting of
    quotes and backslashes is exactly TOML's."""
    return json.dumps(value, ensure_ascii=False)


__all__ = ["Allowlist", "AllowlistError", "Entry", "default_path", "make_entry"]

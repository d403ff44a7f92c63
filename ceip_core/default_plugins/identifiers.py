"""The ``identifiers`` scrubber (order 200): no identifier survives in any free-text string.

Declared names (metric names, config keys, problem kinds, executables, feature keys) cannot carry an
identifier: the ``declared`` scrubber lets only declared ones through. Free text can: a label, a problem
signature, a config string, a system string. Each of those is normalised and then passed through the
detectors below, in a fixed order, and every hit becomes a placeholder such as ``<email>``. The two version
fields are not free text: they must look like a version, or they become ``<invalid>``.

Detectors are heuristics and lean towards scrubbing too much; docs/scrubbing.md lists what each one
matches and what it deliberately leaves alone.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import re
import unicodedata
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from ceip_core.default_plugins import _detectors as detect
from ceip_core.default_plugins._series import (
    merge_counters,
    merge_histograms,
    merge_problems,
    with_label,
    with_signature,
)
from ceip_core.hookspecs import hookimpl
from ceip_core.records import CounterValue, Histogram, Report, SystemInfo
from ceip_core.scrubbing import MachineIdentifiers, ScrubContext, add_diagnostics

#: What each kind of identifier is replaced with. Detectors never match these, so scrubbing is idempotent.
PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "email": "<email>",
        "ip": "<ip>",
        "mac": "<mac>",
        "card": "<card>",
        "phone": "<phone>",
        "uuid": "<uuid>",
        "serial": "<serial>",
        "host": "<host>",
        "user": "<user>",
        "secret": "<secret>",
        "value": "<value>",
        "national_id": "<id>",
        "geo": "<geo>",
        "encoded": "<encoded>",
        "path": "<path>",
    }
)
#: What a version field that does not look like a version becomes.
INVALID = "<invalid>"
#: A version field: starts with a letter or digit, then letters, digits and ``.+_-``, at most 64 chars.
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")

_PREFIX = "scrub.identifiers."

# Normalisation. Line breaks and tabs become a space; other control and invisible formatting characters
# (C0, C1, DEL, soft hyphen, zero-width and bidi controls, tags) are removed so they cannot split an
# identifier and hide it from the detectors, and so are lone surrogates, which UTF-8 cannot carry. Then
# NFKC, so that full-width digits and the like are seen.
_LINE_BREAKS = re.compile(r"[\t\n\v\f\r\x85\u2028\u2029]+")
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)

# The detectors below start with a character class and check the character before the match in a
# lookbehind placed after that first character (``(?<![0-9].)``): a pattern that starts with a class lets
# the regex engine skip quickly to where a match can begin, which keeps the scrubber fast.

# Home folders of any user: /home/<name>, /Users/<name>, C:\Users\<name>, C:\Documents and Settings\<name>,
# /root. A Windows or macOS user name may contain spaces when a path separator follows it; otherwise it
# ends at the first space.
_HOME = re.compile(
    r"[A-Za-z\\/](?:(?<=[A-Za-z]):[\\/]+|(?<=[\\/])[\\/]*)(?:Users|Documents and Settings)[\\/]+"
    r"[^\\/:*?\"<>|\s](?:[^\\/:*?\"<>|\r\n]{0,62}?(?=[\\/])|[^\\/:*?\"<>|\s]{0,62})"
    r"|/homes?/[^/\\\s]+"
    r"|/root(?![^\W_])",
    re.IGNORECASE,
)
# Words one of which a home folder path must contain: a cheap test before ``_HOME``.
_HOME_HINT = re.compile(r"users|/home|/root|documents and settings")  # searched in lower-cased text

# E-mail: "@", then a DNS name of at least two labels or an [IP literal]. The local part (RFC 5322
# dot-atom characters, at most 64) is found by walking back from the "@".
_EMAIL_DOMAIN = re.compile(
    r"@(?:\[(?:IPv6:)?[0-9A-Fa-f:.]{2,45}\]"
    r"|(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,126}(?P<tld>[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]))"
)
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-")
# ``ValueError@render.py:88`` is a crash site, not an address: an identifier, a source file, a line number.
_CODE_EXTENSIONS = frozenset(
    {
        *("c", "cc", "cpp", "cxx", "h", "hh", "hpp", "hxx", "cs", "java", "kt", "go", "rs", "rb", "py", "pyx"),
        *("js", "jsx", "ts", "tsx", "mjs", "swift", "m", "mm", "php", "pl", "pm", "lua", "scala", "vb", "fs"),
    }
)
_CODE_LOCAL = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LINE_NUMBER = re.compile(r":[0-9]")

# UUID (8-4-4-4-12 hex digits), any version.
_UUID = re.compile(
    r"[0-9A-Fa-f](?<![0-9A-Za-z].)[0-9A-Fa-f]{7}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"(?![0-9A-Za-z])"
)

# IPv6 candidates: a run of hex digits, colons and dots (embedded IPv4) holding at least two colons, with
# an optional %zone; each is validated with :mod:`ipaddress`, so times (12:30:45) and C++ names
# (std::vector) do not pass.
_IPV6 = re.compile(
    r"(?P<addr>[0-9A-Fa-f:.](?<![0-9A-Za-z_.].)(?:(?<=:)(?=[0-9A-Fa-f.]*:)|(?=[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:))"
    r"[0-9A-Fa-f:.]{1,63}+)(?P<zone>%[0-9A-Za-z_.-]{1,32}+)?(?![0-9A-Za-z_])"
)

# MAC: six hex pairs separated by one kind of separator (: or -), or Cisco's dotted aabb.ccdd.eeff.
_MAC = re.compile(
    r"[0-9A-Fa-f](?<![0-9A-Za-z].)(?:[0-9A-Fa-f](?P<sep>[:-])(?:[0-9A-Fa-f]{2}(?P=sep)){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{3}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![0-9A-Za-z])"
)

# IPv4 candidates: four dotted groups of 1-3 digits, not part of a longer dotted number (1.2.3.4.5);
# each group must then be at most 255 (leading zeros allowed).
_IPV4 = re.compile(r"[0-9](?<![0-9].)(?<![0-9A-Za-z_]\..)[0-9]{0,2}+(?:\.[0-9]{1,3}+){3}(?![0-9])(?!\.[0-9])")

# Card candidates: at least 13 digits in groups separated by single spaces or dashes, not after a decimal
# point or a "+" (that is a phone number); windows of 13-19 digits passing the Luhn check are cards.
_DIGIT_GROUPS = re.compile(
    r"[0-9](?<![0-9+].)(?<![0-9]\..)(?=(?:[ -]?[0-9]){12})[0-9]{0,18}+(?:[ -][0-9]{1,19}+){0,18}+(?![0-9])"
)
_DIGITS = re.compile(r"[0-9]+")

# Phone numbers (see docs/scrubbing.md for the heuristic). International: +, a 1-3 digit country code,
# then 1-6 groups, 8-15 digits in all (checked after matching).
_PHONE_INTL = re.compile(
    r"\+(?<![0-9A-Za-z+].)[1-9][0-9]{0,2}\)?(?:[ .-]?+(?:\([0-9]{1,5}+\)|[0-9]{1,5}+)){1,6}+(?![0-9])(?![.-][0-9])"
)
_LAST_GROUP = re.compile(r"[ .-]?(?:\([0-9]+\)|[0-9]+)$")
# National: (area) 123-4567, a trunk 0 with separated groups (020 7946 0958), or NANP 555-123-4567.
_PHONE_NATIONAL = re.compile(
    r"[(0-9](?<![0-9A-Za-z+].)(?<![0-9]\..)(?:"
    r"(?<=\()[0-9]{2,5}\)[ .-]?[0-9]{3,4}[ .-][0-9]{3,5}"
    r"|(?<=0)[0-9]{1,4}[ .-][0-9]{3,4}[ .-]?[0-9]{3,4}"
    r"|(?<=[0-9])[0-9]{2}[.-][0-9]{3}[.-][0-9]{4}"
    r")(?![0-9])(?![.-][0-9])"
)

# Serial-number candidates: letter/digit tokens (dashes allowed inside) of at least 8 characters, with
# at least one digit.
_TOKEN = re.compile(
    r"[A-Za-z0-9](?<![A-Za-z0-9].)(?=[A-Za-z0-9-]{7})(?:(?<=[0-9])|(?=[A-Za-z-]*+[0-9]))"
    r"[A-Za-z0-9]*+(?:-[A-Za-z0-9]++)*+(?![A-Za-z0-9])"
)
_HEX = frozenset("0123456789abcdefABCDEF")
_LETTER_DIGIT_SWITCH = re.compile(r"[A-Za-z](?=[0-9])|[0-9](?=[A-Za-z])")

# Update, advisory and knowledge-base article numbers name a fix, not a machine: KB5034441, CVE-2024-3094.
_ARTICLE = re.compile(
    r"(?i)(?:KB|Q)[0-9]{5,8}|(?:CVE|CAN)-[0-9]{4}-[0-9]{4,7}|MS[0-9]{2}-[0-9]{3}|ADV[0-9]{6}"
    r"|(?:RHSA|RHBA|RHEA|USN|DSA|DLA|ELSA|ALAS|GHSA|PYSEC|RUSTSEC|GO|TALOS|ZDI|CWE|BID|JDK|SUSE)(?:-[0-9A-Za-z]+)+"
)
# Hex digests that name content, not a machine: after a word such as "sha256" (detect.HASH_WORDS), or of
# a digest's length.
_DIGEST_LENGTHS = frozenset({40, 56, 64, 96, 128})
_ID_WORDS = (
    "device",
    "machine",
    "id",
    "token",
    "key",
    "secret",
    "session",
    "serial",
    "guid",
    "user",
    "account",
    "install",
    "client",
)
# Encoded characters: percent-encoding, \x and \u escapes, HTML character references.
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}|\\x[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|&#[xX]?[0-9A-Fa-f]{1,6};|&[a-z]{2,8};")
# A backslash that is itself escaped (``\\\\u``, as in the UNC path ``\\\\uaa01\\share``) starts no escape.
_ESCAPE = re.compile(r"(?<!\\)\\x([0-9A-Fa-f]{2})|(?<!\\)\\u([0-9A-Fa-f]{4})")
# IPv4-shaped text preceded by one of these is a version: v1.2.3.4, "version 1.0.0.0".
_VERSION_BEFORE = re.compile(r"(?i)(?:(?<![A-Za-z0-9])v|(?<![A-Za-z])(?:version|ver\.?|build|release|rev)[ :=]{1,3}+)$")
# The most of a string that is scanned (in characters): the limits scrubber cuts strings to a quarter of
# this at most, so nothing longer is ever stored, and the scan stays bounded whatever a product passes.
_SCAN_FACTOR = 4
_HAS_DIGIT = re.compile(r"[0-9]")
_NO_DIGITS = str.maketrans("", "", "0123456789")
_ASCII_LOWER = "abcdefghijklmnopqrstuvwxyz"
# Short text of letters, "_" and spaces only: no detector but the machine's names can match, so the rest
# is skipped. (Longer text can hold a token of a known shape, sk_live_..., or "alice at example dot com".)
_PLAIN_MAX = 14
_PLAIN = re.compile(r"[A-Za-z_ ]*")
_PLACEHOLDER = r"<(?:" + "|".join(k for k in PLACEHOLDERS) + r"|invalid)>"


@attrs.frozen
class _MachinePatterns:
    """This machine's home folders and names, compiled once per :class:`MachineIdentifiers`."""

    homes: re.Pattern[str] | None
    names: re.Pattern[str] | None
    kinds: dict[str, str]
    folded: tuple[str, ...]
    """The names as ASCII text that ``names`` could match appears after ``str.lower``: a quick test."""


@functools.lru_cache(maxsize=16)
def _machine_patterns(machine: MachineIdentifiers) -> _MachinePatterns:
    homes = sorted({h.rstrip("\\/") for h in machine.home_dirs if h.strip("\\/")}, key=lambda h: (-len(h), h))
    home_re = None
    if homes:
        paths = ("[\\\\/]+".join(map(re.escape, re.split(r"[\\/]+", h))) for h in homes)
        home_re = re.compile("(?:" + "|".join(paths) + r")(?![^\W_])", re.IGNORECASE)
    named = {(n, "host") for n in machine.host_names if n} | {(n, "user") for n in machine.user_names if n}
    ordered = sorted(named, key=lambda nk: (-len(nk[0]), nk[0], nk[1]))
    kinds = {f"n{i}": kind for i, (_, kind) in enumerate(ordered)}
    names_re = None
    if ordered:
        alternatives = "|".join(f"(?P<n{i}>{re.escape(n)})" for i, (n, _) in enumerate(ordered))
        # Placeholders match first so that a user called "user" does not turn "<user>" into "<<user>>".
        # A name followed by digits (alice2, vm01) is still the name.
        names_re = re.compile(rf"(?P<ph>{_PLACEHOLDER})|(?<![^\W_])(?:{alternatives})[0-9]*+(?![^\W_])", re.IGNORECASE)
    folded = tuple(sorted({_ascii_fold(n) for n, _ in ordered}))
    return _MachinePatterns(homes=home_re, names=names_re, kinds=kinds, folded=folded)


def _ascii_fold(name: str) -> str:
    """``name`` with each character replaced by the lower-case ASCII letter that a case-insensitive
    regex treats as equal to it (``K`` for the Kelvin sign, ``s`` for the long s), if there is one. If
    the result is not in an ASCII text's ``lower()``, the case-insensitive pattern cannot match there."""
    out = []
    for ch in name:
        pattern = re.compile(re.escape(ch), re.IGNORECASE)
        out.append(next((a for a in _ASCII_LOWER if pattern.fullmatch(a)), ch.lower() if ch.isascii() else ch))
    return "".join(out)


class TextScrubber:
    """Scrubs free text for one machine, adding what it replaced to ``counts`` (by kind, unprefixed)."""

    def __init__(
        self, machine: MachineIdentifiers, counts: Counter[str] | None = None, max_chars: int | None = None
    ) -> None:
        self.machine = _machine_patterns(machine)
        self.max_chars = max_chars
        """Text beyond this many characters is not scanned but cut (the limits scrubber cuts shorter)."""
        self.counts: Counter[str] = Counter() if counts is None else counts
        self._version_mode = False

    def __call__(self, text: str) -> str:
        """``text`` with every identifier replaced by its placeholder. Same input, same output."""
        if self.max_chars is not None and len(text) > self.max_chars:
            text = text[: self.max_chars]
        text = self._normalise(text)
        m = self.machine
        if len(text) < _PLAIN_MAX and _PLAIN.fullmatch(text):
            return m.names.sub(self._name, text) if m.names is not None and self._may_hold_names(text) else text
        if ("%" in text or "\\" in text or "&" in text) and _ENCODED.search(text):
            decoded = _decoded(text)
            if decoded != text:
                counts, self.counts = self.counts, Counter()
                try:
                    scrubbed = self._scrub(decoded)
                finally:
                    found, self.counts = self.counts, counts
                if scrubbed != decoded:
                    self.counts.update(found)
                    self.counts["encoded"] += 1
                    return scrubbed
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        m = self.machine
        hit = self._hit
        # Counted once: replacements only remove these characters, so the counts stay upper bounds, and
        # each detector is skipped when the text lacks what it needs (a digit count, a word it keys on).
        colons, dashes, dots = text.count(":"), text.count("-"), text.count(".")
        digits = len(text) - len(text.translate(_NO_DIGITS))
        hinted = detect.ANY_HINT.search(text.lower()) is not None
        if hinted or len(text) >= 16 or "-----" in text:
            text = detect.credentials(text, hit)
        if "://" in text or "?" in text or "#" in text:
            text = detect.urls(text, hit)
        if "=" in text or ":" in text:
            text = detect.accounts(text, hit)
        if "/" in text or "\\" in text:
            if m.homes is not None:
                text = self._sub(m.homes, "~", "home_dir", text)
            if _HOME_HINT.search(text.lower()):
                text = self._sub(_HOME, "~", "home_dir", text)
        if "/" in text or "\\" in text or "~" in text or "%" in text or "$" in text:
            text = detect.user_paths(text, hit)
        if "@" in text:
            text = self._emails(text)
        if " " in text or "[" in text or "(" in text:
            text = detect.obfuscated_emails(text, hit)
        if m.names is not None and self._may_hold_names(text):
            text = m.names.sub(self._name, text)
        if dots or hinted:
            text = detect.host_names(text, hit)
        if digits >= 4 or (hinted and digits) or "°" in text:
            text = detect.national_ids(text, hit)
        if dashes >= 4:
            text = self._sub(_UUID, PLACEHOLDERS["uuid"], "uuid", text)
        if colons >= 2:
            text = _IPV6.sub(self._ipv6, text)
        if colons >= 5 or dashes >= 5 or dots >= 2:
            text = self._sub(_MAC, PLACEHOLDERS["mac"], "mac", text)
        # Every number detector needs at least 7 characters (1.2.3.4).
        if len(text) >= 7 and digits:
            if digits >= 4:
                text = detect.ipv4_spellings(text, hit)
            if dots >= 3:
                text = _IPV4.sub(self._ipv4, text)
            if digits >= 7:
                if len(text) >= 13:
                    text = _DIGIT_GROUPS.sub(self._cards, text)
                if "+" in text:
                    text = _PHONE_INTL.sub(self._phone, text)
                text = self._sub(_PHONE_NATIONAL, PLACEHOLDERS["phone"], "phone", text)
                text = detect.device_and_phone_numbers(text, hit)
            if len(text) >= 12:
                text = detect.encoded_text(text, hit, self._decoded_view)
            if len(text) >= 20:
                text = detect.random_tokens(text, hit)
            text = _TOKEN.sub(self._serial, text)
        return text

    def _decoded_view(self, text: str) -> str:
        """Scrub decoded text without counting (the caller counts the encoded run once)."""
        counts, self.counts = self.counts, Counter()
        try:
            return self(text)
        finally:
            self.counts = counts

    def _may_hold_names(self, text: str) -> bool:
        if not text.isascii():
            return True
        lower = text.lower()
        return any(name in lower for name in self.machine.folded)

    def version(self, text: str) -> str:
        """``text`` if it looks like a version and holds no identifier, else ``<invalid>`` (counted as
        ``bad_version``). A dotted quad is a version here if all its numbers are below 100 (and it does
        not start with 10, a private network)."""
        if VERSION.fullmatch(text):
            self._version_mode = True
            try:
                clean = self(text) == text
            finally:
                self._version_mode = False
            if clean:
                return text
        self.counts["bad_version"] += 1
        return INVALID

    def _normalise(self, text: str) -> str:
        if text.isprintable() and text.isascii():
            return text
        normal = unicodedata.normalize("NFKC", _INVISIBLE.sub("", _LINE_BREAKS.sub(" ", text)))
        if normal != text:
            self.counts["normalised"] += 1
        return normal

    def _sub(self, pattern: re.Pattern[str], placeholder: str, kind: str, text: str) -> str:
        text, n = pattern.subn(placeholder, text)
        if n:
            self.counts[kind] += n
        return text

    def _hit(self, kind: str) -> str:
        self.counts[kind] += 1
        return PLACEHOLDERS[kind]

    def _emails(self, text: str) -> str:
        out: list[str] = []
        done = 0
        for m in _EMAIL_DOMAIN.finditer(text):
            at = start = m.start()
            while start > done and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
                start -= 1
            if start == at or _is_code_location(text[start:at], m):
                continue
            out += (text[done:start], self._hit("email"))
            done = m.end()
        return "".join(out) + text[done:] if out else text

    def _name(self, m: re.Match[str]) -> str:
        if m.lastgroup == "ph" or m.lastgroup is None:
            return m.group()
        return self._hit(self.machine.kinds[m.lastgroup])

    def _ipv6(self, m: re.Match[str]) -> str:
        addr = m.group("addr")
        zone = m.group("zone") or ""
        # A sentence or a port may follow the address: "fe80::1: refused", "fe80::1.", "fe80::1%eth0.",
        # and punctuation may stand between the address and its zone: "fe80::1.%eth0" goes whole.
        tail = zone[len(zone.rstrip(".-")) :]
        while addr:
            if _plausible_ipv6(addr):
                return self._hit("ip") + tail
            if addr[-1] not in ":." or addr.endswith("::"):
                break
            addr, tail = addr[:-1], addr[-1] + tail
        return m.group()

    def _cards(self, m: re.Match[str]) -> str:
        text = m.group()
        groups = [g.span() for g in _DIGITS.finditer(text)]
        out: list[str] = []
        done = i = 0
        while i < len(groups):
            # The longest run of whole groups from here that holds 13-19 digits and passes Luhn.
            end, digits = None, ""
            for j in range(i, len(groups)):
                digits += text[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and _luhn(digits):
                    end = j
            if end is None:
                i += 1
                continue
            out += (text[done : groups[i][0]], self._hit("card"))
            done, i = groups[end][1], end + 1
        return "".join(out) + text[done:] if out else text

    def _phone(self, m: re.Match[str]) -> str:
        number = m.group()
        # The match may run into a number that follows; drop trailing groups until it fits E.164.
        while (digits := sum(c.isdigit() for c in number)) > 15 and (last := _LAST_GROUP.search(number)):
            number = number[: last.start()]
        if not 8 <= digits <= 15:
            return m.group()
        return self._hit("phone") + m.group()[len(number) :]

    def _ipv4(self, m: re.Match[str]) -> str:
        octets = [int(octet) for octet in m.group().split(".")]
        if any(octet > 255 for octet in octets):
            return m.group()
        if octets[0] == 0 or octets[3] == 0:
            return m.group()  # "this network" (0.x), a network (10.1.2.0) or a version (4.0.0.0, 0.22.04.1)
        if self._version_mode and max(octets) < 100 and octets[0] != 10:
            return m.group()  # 1.2.3.4 in a version field is a version
        if _VERSION_BEFORE.search(m.string, max(0, m.start() - 12), m.start()):
            return m.group()
        return self._hit("ip")

    def _serial(self, m: re.Match[str]) -> str:
        token = m.group()
        if not _looks_like_serial(token.replace("-", "")) or _ARTICLE.fullmatch(token):
            return token
        if m.start() and m.string[m.start() - 1] == "." and m.string.startswith(".", m.end()):
            return token  # main.8f3e2b1a9c7d.js: a content hash in a file name
        if all(c in _HEX for c in token.replace("-", "")) and _is_digest(
            token, m.string[max(0, m.start() - 24) : m.start()].lower()
        ):
            return token
        if self._version_mode and all(c in _HEX for c in token):
            return token  # 1.2.3+g3f2a9c1d5e6f: a commit in a version
        return self._hit("serial")


def _is_digest(token: str, before: str) -> bool:
    """A hex run that names content: a word such as ``sha256`` or ``commit`` before it, or a digest's length
    and no word such as ``device`` or ``token`` before it."""
    if any(w in before for w in detect.HASH_WORDS):
        return True
    return len(token) in _DIGEST_LENGTHS and not any(w in before for w in _ID_WORDS)


def _decoded(text: str) -> str:
    """``text`` with percent-encoding, escapes and character references undone, up to three times
    (double-encoded ``%2540``)."""
    for _ in range(3):
        decoded = urllib.parse.unquote(text)
        decoded = _ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), decoded)
        if "&" in decoded:
            decoded = html.unescape(decoded)
        if decoded == text:
            break
        text = decoded
    return text


def _is_code_location(local: str, domain: re.Match[str]) -> bool:
    """``Name@file.py:88``: an identifier, a source file name and a line number."""
    tld = domain.group("tld")
    return (
        tld is not None
        and tld.lower() in _CODE_EXTENSIONS
        and _LINE_NUMBER.match(domain.string, domain.end()) is not None
        and _CODE_LOCAL.fullmatch(local) is not None
    )


def _plausible_ipv6(addr: str) -> bool:
    """A valid IPv6 address that also looks like one: it has a digit or at least three groups, so that
    words made of hex letters (``add::dec``) survive."""
    if addr.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return _HAS_DIGIT.search(addr) is not None or sum(1 for g in addr.split(":") if g) >= 3


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _looks_like_serial(token: str) -> bool:
    """A serial number, device id or memory address, as opposed to an ordinary word or identifier:

    - ``0x`` and at least 9 hex digits (a 64-bit address; 8-digit codes such as HRESULTs survive);
    - at least 8 letters and digits with at least 2 of each, and either all letters upper-case with
      several letter/digit switches or at least 7 digits (``C02XK1ZZJG5H``, ``SN12345678``, but not
      ``UTF16LE`` or ``ISO-8859-1``), or all hex and at least 12 long (``7ffd5e8a1b20``, hashes).
    """
    if len(token) < 8:
        return False
    if token[:2] in ("0x", "0X") and len(token) >= 11 and all(c in _HEX for c in token[2:]):
        return True
    digits = sum(c.isdigit() for c in token)
    letters = len(token) - digits
    if digits < 2 or letters < 2:
        return False
    if token.isupper() and (digits >= 7 or len(_LETTER_DIGIT_SWITCH.findall(token)) >= 3):
        return True
    return len(token) >= 12 and all(c in _HEX for c in token)


def scrub_text(text: str, machine: MachineIdentifiers | None = None, counts: Counter[str] | None = None) -> str:
    """``text`` with every identifier replaced, as the ``identifiers`` scrubber does it; ``counts`` (if
    given) gets one entry per replacement, keyed by kind (``email``, ``ip``, ...)."""
    return TextScrubber(machine or MachineIdentifiers(), counts)(text)


class IdentifiersScrubber:
    """Replaces identifiers in every free-text string of a report with placeholders."""

    name = "identifiers"
    order = 200

    def scrub(self, report: Report, ctx: ScrubContext) -> Report | None:
        scrub = TextScrubber(ctx.machine, max_chars=ctx.limits.max_string_bytes * _SCAN_FACTOR)
        counters = _scrub_labels(report.counters, scrub, merge_counters)
        histograms = _scrub_labels(report.histograms, scrub, merge_histograms)
        problems = [
            p if (sig := scrub(p.signature)) == p.signature else with_signature(p, sig) for p in report.problems
        ]
        config = {k: scrub(v) if isinstance(v, str) else v for k, v in report.config.items()}
        system = None if report.system is None else _system(report.system, scrub)
        scrubbed = attrs.evolve(
            report,
            product_version=scrub.version(report.product_version),
            counters=counters,
            histograms=histograms,
            problems=report.problems if _same(problems, report.problems) else merge_problems(problems),
            config=config,
            system=system,
        )
        return add_diagnostics(scrubbed, {_PREFIX + k: n for k, n in scrub.counts.items()})

    def keeps(self, report: Report, ctx: ScrubContext) -> bool:
        """Whether :meth:`scrub` would return ``report`` as it is: no free-text string in it holds anything
        to replace, and both version fields look like versions.

        A test that changes nothing: the receiving service asks it before running the pipeline again and runs
        the pipeline only for a report some scrubber would change (``ceip_core.service.screening``). Each
        string is looked at by the scrubber itself, through :func:`keeps_text`, whose answers are cached per
        string; fields are read by name, so it takes the service's decoded structs as well as records.
        """
        max_chars = ctx.limits.max_string_bytes * _SCAN_FACTOR

        def clean(text: str, version: bool = False) -> bool:
            return keeps_text(text, ctx.machine, max_chars, version)

        system = report.system
        return (
            clean(report.product_version, version=True)
            and all(c.label is None or clean(c.label) for c in report.counters)
            and all(h.label is None or clean(h.label) for h in report.histograms)
            and all(clean(p.signature) for p in report.problems)
            and all(clean(v) for v in report.config.values() if isinstance(v, str))
            and (
                system is None
                or (
                    all(clean(v) for v in (getattr(system, n) for n in _SYSTEM_TEXT) if isinstance(v, str))
                    and (system.os_version is None or clean(system.os_version, version=True))
                    and all(map(clean, system.features.values()))
                )
            )
        )


#: How many strings' verdicts :func:`keeps_text` remembers: labels, signatures and configuration values
#: repeat across a fleet's reports, so a few thousand distinct ones answer almost every lookup.
KEEPS_CACHE = 16_384


@functools.lru_cache(maxsize=KEEPS_CACHE)
def keeps_text(text: str, machine: MachineIdentifiers, max_chars: int, version: bool = False) -> bool:
    """Whether the scrubber leaves ``text`` exactly as it is and counts nothing in it (``version``: as a
    version field). A pure function of its arguments (the scrubber keeps no state between strings and
    ``machine`` is frozen), so caching it per string changes no answer."""
    scrub = TextScrubber(machine, max_chars=max_chars)
    out = scrub.version(text) if version else scrub(text)
    return out == text and not scrub.counts


_Series = TypeVar("_Series", CounterValue, Histogram)


def _scrub_labels(
    series: tuple[_Series, ...], scrub: TextScrubber, merge: Callable[[list[_Series]], tuple[_Series, ...]]
) -> tuple[_Series, ...]:
    """The series with scrubbed labels; merged only if a label changed, since two may now collide."""
    out = [s if s.label is None or (label := scrub(s.label)) == s.label else with_label(s, label) for s in series]
    return series if _same(out, series) else merge(out)


def _same(new: Sequence[object], old: Sequence[object]) -> bool:
    return all(a is b for a, b in zip(new, old, strict=True))


#: The free-text fields of the system info (``os_version`` is a version field).
_SYSTEM_TEXT = ("memory_bucket", "os", "arch", "boot_age_bucket")


def _system(system: SystemInfo, scrub: TextScrubber) -> SystemInfo:
    changes: dict[str, Any] = {}
    for name in _SYSTEM_TEXT:
        value = getattr(system, name)
        if isinstance(value, str) and (scrubbed := scrub(value)) != value:
            changes[name] = scrubbed
    if system.os_version is not None and (version := scrub.version(system.os_version)) != system.os_version:
        changes["os_version"] = version
    features = {k: scrub(v) for k, v in system.features.items()}
    if features != system.features:
        changes["features"] = features
    return attrs.evolve(system, **changes) if changes else system


@hookimpl
def ceip_register_scrubbers(register: Callable[[IdentifiersScrubber], None]) -> None:
    register(IdentifiersScrubber())

"""Builds the dialog's catalogs from source: ``python -m ceip_core.ui.po`` after changing a string or a
translation.

It extracts every ``_("...")`` literal of ``ceip_core/ui`` into ``locale/ceip.pot`` (what a translator
starts from), and compiles each ``locale/<language>/LC_MESSAGES/ceip.po`` into the ``ceip.mo`` that gettext
reads. The compiled files are committed, so that an install needs no build step; a test rebuilds them
and fails when the committed copies drift from the sources. Standard library only, and never imported
when the dialog is shown.
"""

from __future__ import annotations

import ast
import struct
import sys
from pathlib import Path

from ceip_core.ui.i18n import DOMAIN, LOCALE_DIR

UI_DIR = Path(__file__).parent
_MO_MAGIC = 0x950412DE
_POT_HEADER = (
    'msgid ""\nmsgstr ""\n"Project-Id-Version: ceip\\n"\n"MIME-Version: 1.0\\n"\n'
    '"Content-Type: text/plain; charset=UTF-8\\n"\n"Content-Transfer-Encoding: 8bit\\n"\n'
)


class CatalogError(Exception):
    """A .po file this compiler cannot read, with the file and line."""


def messages(folder: Path = UI_DIR) -> list[tuple[str, str]]:
    """Every translatable literal in ``folder``'s modules with its first place (``view.py:12``), in order
    of appearance: calls of ``_`` or of an attribute named ``_`` (``self._``) with one string literal."""
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or len(node.args) != 1:
                continue
            func = node.func
            named = (isinstance(func, ast.Name) and func.id == "_") or (
                isinstance(func, ast.Attribute) and func.attr == "_"
            )
            arg = node.args[0]
            if named and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.setdefault(arg.value, f"{path.name}:{node.lineno}")
    return sorted(found.items(), key=lambda item: (item[1].split(":")[0], int(item[1].split(":")[1])))


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    lines = escaped.split("\n")
    if len(lines) == 1:
        return f'"{escaped}"'
    parts = [line + "\\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return '""\n' + "\n".join(f'"{p}"' for p in parts)


def pot(folder: Path = UI_DIR) -> str:
    """The template (``ceip.pot``) for the messages of ``folder``."""
    out = [_POT_HEADER]
    for msgid, where in messages(folder):
        out.append(f'#: {where.split(":")[0]}\nmsgid {_quote(msgid)}\nmsgstr ""\n')
    return "\n".join(out)


def _unquote(token: str, where: str) -> str:
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise CatalogError(f"{where}: expected a quoted string, got {token!r}")
    out = []
    chars = iter(token[1:-1])
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt not in escapes:
                raise CatalogError(f"{where}: unknown escape \\{nxt}")
            out.append(escapes[nxt])
        else:
            out.append(ch)
    return "".join(out)


def parse_po(path: Path) -> dict[str, str]:
    """msgid -> msgstr of ``path``, without fuzzy or untranslated entries (gettext would not use them).
    Only what ceip's catalogs use: no contexts, no plurals."""
    catalog: dict[str, str] = {}
    entry: dict[str, str] = {}
    key: str | None = None
    fuzzy = False

    def finish() -> None:
        nonlocal entry, key, fuzzy
        if "msgid" in entry and "msgstr" in entry and not fuzzy and (entry["msgstr"] or entry["msgid"] == ""):
            catalog[entry["msgid"]] = entry["msgstr"]
        entry, key, fuzzy = {}, None, False

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line:
            finish()
        elif line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith("#"):
            continue
        elif line.startswith(("msgid ", "msgstr ")):
            word, _, rest = line.partition(" ")
            if word == "msgid" and "msgid" in entry:
                finish()
            key = word
            entry[key] = _unquote(rest.strip(), where)
        elif line.startswith('"') and key is not None:
            entry[key] += _unquote(line, where)
        else:
            raise CatalogError(f"{where}: cannot read {raw!r} (only msgid/msgstr entries are supported)")
    finish()
    return catalog


def mo(catalog: dict[str, str]) -> bytes:
    """The GNU .mo file for ``catalog``: header, the two offset tables sorted by msgid, no hash table."""
    ids = sorted(catalog)
    originals = [k.encode() for k in ids]
    translated = [catalog[k].encode() for k in ids]
    n = len(ids)
    table_start = 7 * 4
    data_start = table_start + 2 * n * 8
    blob = b""
    offsets: list[tuple[int, int]] = []
    for text in originals + translated:
        offsets.append((len(text), data_start + len(blob)))
        blob += text + b"\0"
    header = struct.pack("<7I", _MO_MAGIC, 0, n, table_start, table_start + n * 8, 0, data_start)
    tables = b"".join(struct.pack("<2I", length, offset) for length, offset in offsets)
    return header + tables + blob


def build(locale_dir: Path = LOCALE_DIR) -> dict[Path, bytes]:
    """Every file this module generates, by path: the template and each language's .mo."""
    files: dict[Path, bytes] = {locale_dir / f"{DOMAIN}.pot": pot().encode()}
    for po_file in sorted(locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        files[po_file.with_suffix(".mo")] = mo(parse_po(po_file))
    return files


def main() -> None:
    for path, data in build().items():
        path.write_bytes(data)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

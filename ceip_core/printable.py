"""Text from elsewhere, made safe to print on a terminal.

Report values, problem signatures, labels and file names come from other machines or other programs. A
terminal obeys the control characters inside them: an escape sequence can set the window title, move the
cursor or recolour the screen, and a ``\\r`` or ``\\n`` can forge the rows of a table. Every CLI view of such
text passes it through :func:`shown`, which spells each control character out (``\\x1b``, ``\\r``) and leaves
every other character, accents and scripts included, as it is. "Control" is Python's own notion of what
is not printable: control and formatting characters (bidirectional overrides among them, which reorder
what is read without being seen), separators other than the space, and unassigned code points.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(text: object) -> str:
    """``text`` as a terminal may print it: control and invisible formatting characters spelled out."""
    value = str(text)
    if value.isprintable() and "\\" not in value:
        return value  # the common case, checked in C
    return "".join(_escape(ch) if ch == "\\" or not ch.isprintable() else ch for ch in value)

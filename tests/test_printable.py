"""Text from reports reaches a terminal only with its control characters spelled out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ceip_core.printable import shown


def test_escape_sequences_and_line_breaks_are_spelled_out() -> None:
    title = "\x1b]0;owned\x07E@x.py:1\r\n| forged | row |"
    assert shown(title) == "\\x1b]0;owned\\x07E@x.py:1\\r\\n| forged | row |"
    assert shown("a\u202eb") == "a\\u202eb"  # a right-to-left override would reorder what follows
    assert shown("\x9b31m") == "\\x9b31m"  # C1 control: CSI on terminals that take 8-bit controls


def test_ordinary_text_is_left_as_it_is() -> None:
    for text in ("ValueError@render.py:88", "Größe", "日本語", "naïve café", "tab-less text", ""):
        assert shown(text) == text


def test_backslashes_stay_unambiguous() -> None:
    assert shown("C:\\temp") == "C:\\\\temp"  # so "\\x1b" in the output always means an escaped ESC


@given(st.text())
def test_nothing_shown_can_control_the_terminal(text: str) -> None:
    out = shown(text)
    assert all(ch.isprintable() for ch in out)

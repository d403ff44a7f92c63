"""Scrubber edges that the mutation run (bench/mutation.sh) found untested: each test pins a boundary that a
mutant moved by one (``>= 0`` made ``> 0``, ...) without any other test failing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest

from ceip_core.default_plugins.declared import DeclaredFieldsScrubber
from ceip_core.default_plugins.identifiers import scrub_text
from ceip_core.default_plugins.limits import truncate_utf8
from ceip_core.records import Histogram, Problem, ProcessSession, Report
from ceip_core.scrubbing import (
    MachineIdentifiers,
    Scrubber,
    ScrubContext,
    ScrubLimits,
    ScrubOutcome,
    ordered,
    run_pipeline,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def declared(report: Report, ctx: ScrubContext) -> Report:
    result = DeclaredFieldsScrubber().scrub(report, ctx)
    assert result is not None
    return result


def test_zero_is_a_valid_duration_cpu_time_and_memory(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    """A session that lasted no measurable time is real data, not out of range."""
    sessions = (ProcessSession("analyst", T0, 0.0, 0.0, 0), ProcessSession("analyst.exe", T0, 0, None, None))
    out = declared(make_report(sessions=sessions), ctx)
    assert out.sessions == sessions
    assert out.diagnostics == {}


def test_a_histogram_of_zeros_and_an_empty_bucket_is_kept(
    make_report: Callable[..., Report], ctx: ScrubContext
) -> None:
    """Zero is a valid timing (it has its own bucket), and a bucket may hold zero observations."""
    zeros = Histogram("open_session", 2, 0.0, 0.0, 0.0, {-1024: 2, 3: 0})
    empty = Histogram("render", 0, 0.0, 0.0, 0.0, {}, "fast")
    out = declared(make_report(histograms=[zeros, empty]), ctx)
    assert out.histograms == (zeros, empty)
    assert out.diagnostics == {}


def test_a_name_in_non_ascii_capitals_is_found_although_lower_case_text_hides_it() -> None:
    """``"İRIS".lower()`` is ``"i̇ris"`` (with a combining dot), which does not contain ``"iris"``, yet the
    case-insensitive match sees the name: the quick lower-case test must not be trusted for such text."""
    machine = MachineIdentifiers(user_names=("iris",))
    assert scrub_text("logged in as İRIS", machine) == "logged in as <user>"
    assert scrub_text("İris: café", machine) == "<user>: café"


def test_an_address_after_a_crash_site_or_a_bare_at_is_still_found() -> None:
    """A crash site (``Name@file.py:88``) and an ``@`` with nothing before it are skipped, and the search
    goes on: the address after them is scrubbed."""
    assert scrub_text("ValueError@render.py:88 raised for bob@example.com") == (
        "ValueError@render.py:88 raised for <email>"
    )
    assert scrub_text("@example.com or bob@example.com") == "@example.com or <email>"


def test_a_run_of_nine_groups_is_not_cut_down_to_an_address() -> None:
    """Only a trailing ``:`` or ``.`` (a port, the end of a sentence) is taken off a candidate; a run that is
    not an address is not shortened until a prefix of it is one."""
    assert scrub_text("ratio 1:2:3:4:5:6:7:8:9 ok") == "ratio 1:2:3:4:5:6:7:8:9 ok"
    assert scrub_text("refused by fe80::1: retry") == "refused by <ip>: retry"


def test_a_problem_seen_zero_times_is_in_range(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    problems = (Problem("crash", "ValueError@render.py:88", 0),)
    out = declared(make_report(problems=problems), ctx)
    assert out.problems == problems
    assert out.diagnostics == {}


def test_text_without_names_or_with_control_characters_is_scrubbed_without_error() -> None:
    """Non-ASCII text on a machine whose names are unknown, and ASCII text holding a control character
    that could split an identifier: both are normalised and scrubbed, never passed through or failed on."""
    assert scrub_text("naïve café at 10.0.0.1") == "naïve café at <ip>"
    assert scrub_text("mail bob@exam\x00ple.com") == "mail <email>"
    assert scrub_text("alice\tbob") == "alice bob"


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("1.2.3.4", "<ip>"),  # the shortest text any number detector looks at: 7 characters
        ("4222222222222", "<card>"),  # 13 digits, the shortest card
        ("ref 12 4111 1111 1111 1111", "ref 12 <card>"),  # a group that starts no card, then a card
        ("x" + "a" * 64 + "@example.com", "x<email>"),  # a local part is at most 64 characters
        ("+49 30 1234", "<phone>"),  # 8 digits, the shortest international number
        ("+1 234 567 890 12345", "<phone>"),  # 15 digits, the longest (E.164)
        ("at 12:30: done", "at 12:30: done"),  # a time before a colon is not cut down to an address
        ("AB1CD2EF", "<serial>"),  # 8 characters, 2 digits, 4 letter/digit switches
        ("AB12CD34", "<serial>"),  # exactly 3 switches
        ("SN1234567", "<serial>"),  # exactly 7 digits
        ("at 0x7ffd5e8a1", "at <serial>"),  # 0x and 9 hex digits: an address
        ("code 0x80070005", "code 0x80070005"),  # 0x and 8 hex digits: an error code
    ],
)
def test_detector_boundaries(text: str, scrubbed: str) -> None:
    assert scrub_text(text) == scrubbed


def test_truncation_counts_bytes_not_characters() -> None:
    """85 four-byte characters are 340 bytes: cut to the 63 that fit in 255, never passed whole."""
    assert truncate_utf8("😀" * 85, 255) == "😀" * 63
    assert truncate_utf8("abc", -1) == ""


def test_the_default_limits_are_the_documented_ones() -> None:
    """docs/scrubbing.md promises these numbers to users and plugin authors."""
    assert ScrubLimits() == ScrubLimits(max_string_bytes=255, max_labels_per_metric=16, max_signatures_per_kind=100)


class _Failing:
    name = "failing"
    order = 150

    def scrub(self, report: Report, ctx: ScrubContext) -> Report | None:
        raise ValueError("a scrubber with a bug")


def test_a_scrubber_that_raises_drops_the_report(
    make_report: Callable[..., Report], ctx: ScrubContext, scrubbers: Sequence[Scrubber]
) -> None:
    outcome = run_pipeline(make_report(), ordered([*scrubbers, _Failing()]), ctx)
    assert outcome == ScrubOutcome(None, "scrubber-error:failing")


def test_a_problem_seen_minus_once_is_out_of_range(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    out = declared(make_report(problems=(Problem("crash", "ValueError@render.py:88", -1),)), ctx)
    assert out.problems == ()
    assert out.diagnostics == {"scrub.declared.out_of_range": 1}

"""The second pass's shortcut: a report every scrubber would keep as it is skips the pipeline, and that gives
exactly what the pipeline gives, for clean reports and for every kind of report the pipeline changes."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import msgspec
import orjson
from corpus import privacy
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from service.factory import config, report

from ceip_core import wire
from ceip_core.default_plugins._series import OTHER
from ceip_core.default_plugins.identifiers import TextScrubber, keeps_text
from ceip_core.plugins import get_plugins
from ceip_core.records import CounterValue, Histogram, Period, Problem, ProcessSession, Report, SystemInfo
from ceip_core.scrubbing import MachineIdentifiers, Scrubber, ScrubContext
from ceip_core.service.config import ServiceConfig
from ceip_core.service.screening import screen
from ceip_core.service.validation import Bounds, Rejection, Valid, check_items

NOBODY = MachineIdentifiers()
MAX_CHARS = 255 * 4
EMAIL = "bob.smith@example.com"


def _uncached(text: str, version: bool = False) -> bool:
    scrub = TextScrubber(NOBODY, max_chars=MAX_CHARS)
    out = scrub.version(text) if version else scrub(text)
    return out == text and not scrub.counts


def _strings() -> list[str]:
    leaking = [e["text"] for e in privacy.leaking(NOBODY, per_kind=15)]
    benign = [e["text"] for e in privacy.benign(per_kind=15)]
    odd = ["", OTHER, "<email>", "x" * 300, "é" * 200, "tab\there", "zero\u200bwidth", "1.2.3.4", "10.0.0.1", "5.3"]
    return leaking + benign + odd


def test_the_scrub_cache_answers_as_the_scrubber_does_for_strings_it_must_scrub_and_strings_it_keeps() -> None:
    strings = _strings()
    keeps_text.cache_clear()
    for version in (False, True):
        expected = [_uncached(s, version) for s in strings]
        first = [keeps_text(s, NOBODY, MAX_CHARS, version) for s in strings]
        again = [keeps_text(s, NOBODY, MAX_CHARS, version) for s in strings]  # now from the cache
        assert first == again == expected
    assert keeps_text.cache_info().hits >= len(strings)
    leaking = privacy.leaking(NOBODY, per_kind=15)
    kept = [e["text"] for e in leaking if keeps_text(e["text"], NOBODY, MAX_CHARS)]
    assert all(_uncached(text) for text in kept)  # only what the scrubber itself leaves alone
    assert len(kept) < len(leaking) / 10
    assert not keeps_text(f"mail {EMAIL}", NOBODY, MAX_CHARS)


def test_the_cache_is_per_machine_so_a_name_scrubbed_on_one_machine_is_not_kept_for_it() -> None:
    """Scrubbing depends only on the string, the rules and the machine's names; the service has none."""
    alice = MachineIdentifiers(user_names=("alice",))
    assert keeps_text("opened by alice", NOBODY, MAX_CHARS)
    assert not keeps_text("opened by alice", alice, MAX_CHARS)


class _Pipeline:
    """A scrubber without ``keeps``: the pipeline always runs."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber, self.name, self.order = scrubber, scrubber.name, scrubber.order

    def scrub(self, report: Report, ctx: Any) -> Report | None:
        return self.scrubber.scrub(report, ctx)


SCRUBBERS = get_plugins().scrubbers
PIPELINE_ONLY = tuple(_Pipeline(s) for s in SCRUBBERS)
NOW = time.time()


def _both(item: bytes, cfg: ServiceConfig) -> list[tuple[Any, Counter[str]]]:
    """The second pass on ``item``, with the shortcut and with the pipeline only: (stored bytes or the
    Rejection, counts) of each; nothing for an item refused before it (a string beyond the limit)."""
    [verdict] = check_items([msgspec.Raw(item)], "report", Bounds.at(NOW, cfg.limits), cfg.allowlist)
    if not isinstance(verdict, Valid):
        return []
    out = []
    for scrubbers in (SCRUBBERS, PIPELINE_ONLY):
        counts: Counter[str] = Counter()
        result = screen(verdict, cfg, scrubbers, counts)
        out.append((result.raw if isinstance(result, Valid) else result, counts))
    return out


class _KeepsOnly(_Pipeline):
    """A scrubber that answers ``keeps`` and must not be run."""

    def keeps(self, report: Any, ctx: Any) -> bool:
        return bool(self.scrubber.keeps(report, ctx))  # type: ignore[attr-defined]

    def scrub(self, report: Report, ctx: Any) -> Report | None:
        raise AssertionError(f"{self.name} ran on a report every scrubber keeps")


def test_a_clean_report_skips_the_pipeline_and_is_stored_as_sent() -> None:
    item = orjson.dumps(report(config={"theme": "dark"}, problems={"TimeoutError@app/io.py:41": 2}))
    cfg = config()
    [verdict] = check_items([msgspec.Raw(item)], "report", Bounds.at(NOW, cfg.limits), cfg.allowlist)
    counts: Counter[str] = Counter()
    assert screen(verdict, cfg, tuple(_KeepsOnly(s) for s in SCRUBBERS), counts) is verdict
    (shortcut, counts), (pipeline, pipeline_counts) = _both(item, cfg)
    assert shortcut == pipeline == item and counts == pipeline_counts == {"spec:none-named": 1}


def test_a_report_with_an_email_in_a_label_takes_the_pipeline_and_is_scrubbed() -> None:
    doc = report()
    doc["counters"].append({"name": "tag", "value": 2, "label": f"owner {EMAIL}"})
    (shortcut, counts), (pipeline, _) = _both(orjson.dumps(doc), config())
    assert shortcut == pipeline and EMAIL not in shortcut.decode() and counts["scrubbed:identifiers.email"] == 1


_CLEAN = [e["text"] for e in privacy.benign(per_kind=10)] + ["pdf", "dark", OTHER]
#: Mostly strings the scrubbers keep, so that many reports are clean but for one value.
texts = st.one_of(*[st.sampled_from(_CLEAN)] * 8, st.sampled_from(_strings()))
labels = st.one_of(st.none(), st.sampled_from(["pdf", "csv", OTHER, ""]), texts)
END = datetime.fromtimestamp(NOW, UTC).replace(microsecond=0) - timedelta(minutes=5)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    """Reports of ``sample`` that are sometimes clean and sometimes hold what the pipeline changes: undeclared
    names and labels, identifiers, long strings, duplicate and unsorted series, out-of-range values, odd
    diagnostics keys, bad versions."""
    names = st.sampled_from(["open_file", "export", "tag"] * 5 + ["zzz_counter", EMAIL])
    counters = draw(st.lists(st.builds(CounterValue, names, st.integers(0, 99), labels), max_size=6))
    histograms = draw(
        st.lists(
            st.builds(
                lambda name, label, top: Histogram(name, 3, 6.0, 1.0, float(top), {1: 2, 3: 1}, label),
                st.sampled_from(["render_ms"] * 5 + ["zzz_ms"]),
                labels,
                st.sampled_from([2] * 5 + [5_000_000]),
            ),
            max_size=3,
        )
    )
    problems = draw(
        st.lists(
            st.builds(Problem, st.sampled_from(["error", "crash"] * 5 + ["bogus"]), texts, st.integers(1, 5)),
            max_size=4,
        )
    )
    config_values = st.one_of(texts, st.integers(-5, 5), st.booleans(), st.floats(-1, 1, allow_nan=False))
    system = SystemInfo(
        memory_bucket=draw(st.one_of(st.none(), texts)),
        os=draw(st.sampled_from(["Linux", "Windows"] * 5 + [f"Linux at {EMAIL}"])),
        os_version=draw(st.sampled_from(["6.1.0", "10.0.19045", None] * 3 + ["not a version!"])),
        arch="x86_64",
        features=draw(
            st.dictionaries(
                st.sampled_from(["bluetooth", "usb_high_speed"] * 5 + ["webcam"]),
                st.sampled_from(["present", "absent"] * 5 + ["maybe"]),
                max_size=3,
            )
        ),
    )
    return Report(
        report_id="00000000-0000-4000-8000-000000000001",
        guid="00000000-0000-4000-8000-000000000002",
        product="sample",
        product_version=draw(st.sampled_from(["1.0", "5.3.1", "1.2.3.4"] * 4 + ["10.1.2.3", "bad version"])),
        period=Period(END - timedelta(hours=1), END),
        system=system,
        counters=counters,
        histograms=histograms,
        problems=problems,
        config=draw(st.dictionaries(st.sampled_from(["theme"] * 5 + ["zzz_key"]), config_values, max_size=2)),
        sessions=draw(
            st.lists(st.sampled_from([ProcessSession("sample-app", END - timedelta(minutes=30), 60.0)]), max_size=1)
        ),
        diagnostics=draw(
            st.dictionaries(
                st.sampled_from(["recorder.too_many_series"] * 5 + ["Not A Key", EMAIL]), st.integers(0, 3), max_size=2
            )
        ),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports(), st.sampled_from([config(), config(max_string=1000)]))
def test_the_shortcut_stores_and_counts_exactly_what_the_pipeline_would(item: Report, cfg: ServiceConfig) -> None:
    both = _both(wire.encode_item(item), cfg)
    assume(both)
    (shortcut, counts), (pipeline, pipeline_counts) = both
    event("stored as sent" if shortcut == wire.encode_item(item) else "changed or refused")
    assert shortcut == pipeline
    assert counts == pipeline_counts
    if isinstance(pipeline, Rejection):
        return
    stored = pipeline.decode()
    for secret in (EMAIL, "zzz", "webcam"):
        assert secret not in stored


def _as_sets(report: Report) -> Report:
    """``report`` with its series in one order, to compare "the same up to the order of its series"."""
    return attrs.evolve(
        report,
        counters=sorted(report.counters, key=lambda c: (c.name, c.label or "", c.label is None)),
        histograms=sorted(report.histograms, key=lambda h: (h.name, h.label or "", h.label is None)),
        problems=sorted(report.problems, key=lambda p: (p.kind, p.signature)),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports(), st.sampled_from(SCRUBBERS), st.sampled_from([NOBODY, MachineIdentifiers(user_names=("dark",))]))
def test_each_scrubber_keeps_only_what_it_would_return_as_it_is(
    item: Report, scrubber: Scrubber, machine: MachineIdentifiers
) -> None:
    """Each ``keeps`` on its own, on records (a client's machine names included), not only all of them
    together: a True is a promise that ``scrub`` changes nothing but perhaps the order of the series."""
    ctx = ScrubContext(spec=config().declarations.current["sample"], machine=machine)
    kept = scrubber.keeps(item, ctx)  # type: ignore[attr-defined]
    event(f"{scrubber.name} keeps" if kept else f"{scrubber.name} changes")
    if kept:
        scrubbed = scrubber.scrub(item, ctx)
        assert scrubbed is not None and _as_sets(scrubbed) == _as_sets(item)

"""The limits scrubber: strings cut on character boundaries, labels and signatures folded into __other__."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceip_core.default_plugins.limits import LimitsScrubber, truncate_utf8
from ceip_core.records import CounterValue, Histogram, Problem, ProductSpec, Report, SystemInfo
from ceip_core.scrubbing import ScrubContext, ScrubLimits, ScrubOutcome


def run(report: Report, ctx: ScrubContext) -> Report:
    result = LimitsScrubber().scrub(report, ctx)
    assert result is not None
    return result


@pytest.fixture(scope="module")
def small(spec: ProductSpec) -> ScrubContext:
    """Limits small enough to see them work: 8-byte strings, 3 labels per metric."""
    return ScrubContext(spec=spec, limits=ScrubLimits(max_string_bytes=8, max_labels_per_metric=3))


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 8, "short"),
        ("exactly8", 8, "exactly8"),
        ("too long by far", 8, "too long"),
        ("caf\u00e9s", 4, "caf"),  # é is 2 bytes: cut before it, never inside
        ("caf\u00e9s", 5, "caf\u00e9"),
        ("\u20ac\u20ac\u20ac", 7, "\u20ac\u20ac"),  # € is 3 bytes
        ("\U0001f600x", 3, ""),  # a 4-byte emoji does not fit in 3
        ("", 0, ""),
        ("abc", 0, ""),
    ],
)
def test_truncate_utf8_cuts_on_character_boundaries(text: str, limit: int, expected: str) -> None:
    assert truncate_utf8(text, limit) == expected
    assert len(truncate_utf8(text, limit).encode()) <= limit


@settings(max_examples=200, deadline=None)
@given(text=st.text(), limit=st.integers(0, 64))
def test_truncate_utf8_is_the_longest_valid_prefix(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    assert text.startswith(cut)
    assert len(cut.encode()) <= limit
    assert cut == text or len(text[: len(cut) + 1].encode()) > limit


def test_every_string_is_truncated_and_counted(make_report: Callable[..., Report], small: ScrubContext) -> None:
    report = make_report(
        product_version="5.2.1-beta.1234",
        counters=[CounterValue("feature", 1, "label is long")],
        histograms=[Histogram("open_session", 1, 1.0, 1.0, 1.0, {0: 1}, "hist label long")],
        problems=[Problem("crash", "ValueError@render.py:88", 1)],
        config={"theme": "solarized-dark", "threads": 123456789012},
        system=SystemInfo(
            os="Windows 11 Pro", os_version="10.0.22631.1", arch="x86_64", features={"bluetooth": "present-ish"}
        ),
    )
    out = run(report, small)
    assert out.product_version == "5.2.1-be"
    assert out.counters[0].label == "label is"
    assert out.histograms[0].label == "hist lab"
    assert out.problems[0].signature == "ValueErr"
    assert out.config == {"theme": "solarize", "threads": 123456789012}
    assert out.system == SystemInfo(
        os="Windows ", os_version="10.0.226", arch="x86_64", features={"bluetooth": "present-"}
    )
    assert out.diagnostics == {"scrub.limits.truncated": 8}
    assert (out.report_id, out.guid, out.product) == (report.report_id, report.guid, report.product)


def test_labels_that_collide_after_truncation_merge(make_report: Callable[..., Report], small: ScrubContext) -> None:
    report = make_report(
        system=None, counters=[CounterValue("feature", 2, "tool_0001"), CounterValue("feature", 3, "tool_0002")]
    )
    out = run(report, small)
    assert out.counters == (CounterValue("feature", 5, "tool_000"),)


def test_a_report_within_limits_is_left_as_it_is(typical_report: Report, spec: ProductSpec) -> None:
    report = typical_report
    out = run(report, ScrubContext(spec=spec, limits=ScrubLimits(max_labels_per_metric=100)))
    assert out.counters is report.counters
    assert out.problems is report.problems
    assert out.diagnostics == {}


def test_labels_beyond_the_limit_fold_into_other(make_report: Callable[..., Report], small: ScrubContext) -> None:
    report = make_report(
        system=None,
        counters=[
            CounterValue("feature", 100),  # unlabelled: not a label, always kept
            CounterValue("feature", 9, "a"),
            CounterValue("feature", 1, "b"),
            CounterValue("feature", 5, "c"),
            CounterValue("feature", 5, "d"),
            CounterValue("feature", 2, "e"),
            CounterValue("export_pdf", 1, "x"),
        ],
    )
    out = run(report, small)
    # 3 labels at most, __other__ included: the two heaviest (ties by label text), then the rest.
    assert out.counters == (
        CounterValue("export_pdf", 1, "x"),
        CounterValue("feature", 100),
        CounterValue("feature", 8, "__other__"),
        CounterValue("feature", 9, "a"),
        CounterValue("feature", 5, "c"),
    )
    assert out.diagnostics == {"scrub.limits.labels_folded": 3}


def test_an_existing_other_label_absorbs_the_fold(make_report: Callable[..., Report], small: ScrubContext) -> None:
    report = make_report(
        system=None,
        counters=[CounterValue("feature", n, label) for n, label in [(50, "__other__"), (9, "a"), (7, "b"), (1, "c")]],
    )
    out = run(report, small)
    assert out.counters == (
        CounterValue("feature", 51, "__other__"),
        CounterValue("feature", 9, "a"),
        CounterValue("feature", 7, "b"),
    )
    assert out.diagnostics == {"scrub.limits.labels_folded": 1}


def test_histograms_fold_by_count_and_merge(
    make_report: Callable[..., Report], make_histogram: Callable[..., Histogram], small: ScrubContext
) -> None:
    report = make_report(
        system=None,
        histograms=[
            make_histogram("open_session", [1.0, 1.0, 1.0, 1.0], "a"),
            make_histogram("open_session", [2.0, 2.0, 2.0], "b"),
            make_histogram("open_session", [300.0], "c"),
            make_histogram("open_session", [0.5, 40.0], "d"),
            make_histogram("open_session", [7.0]),
        ],
    )
    out = run(report, small)
    assert [h.label for h in out.histograms] == [None, "__other__", "a", "b"]
    other = out.histograms[1]
    assert (other.count, other.sum, other.min, other.max) == (3, 340.5, 0.5, 300.0)
    assert other.buckets == {0: 1, 6: 1, 9: 1}
    assert out.diagnostics == {"scrub.limits.labels_folded": 2}


def test_problem_signatures_are_capped_per_kind(make_report: Callable[..., Report], spec: ProductSpec) -> None:
    crashes = [Problem("crash", f"site {i:03d}", 1000 - i) for i in range(150)]
    hangs = [Problem("hang", f"hang {i}", 1) for i in range(5)]
    out = run(make_report(problems=crashes + hangs), ScrubContext(spec=spec))
    kept = [p for p in out.problems if p.kind == "crash"]
    assert len(kept) == ScrubLimits().max_signatures_per_kind == 100
    assert kept[0] == Problem("crash", "__other__", sum(1000 - i for i in range(99, 150)))
    assert {p.signature for p in kept[1:]} == {f"site {i:03d}" for i in range(99)}
    assert len([p for p in out.problems if p.kind == "hang"]) == 5
    assert out.diagnostics == {"scrub.limits.problems_folded": 51}


@pytest.mark.parametrize("limit", [0, 1])
def test_a_limit_of_one_or_less_keeps_only_other(
    limit: int, make_report: Callable[..., Report], spec: ProductSpec
) -> None:
    ctx = ScrubContext(spec=spec, limits=ScrubLimits(max_labels_per_metric=limit))
    out = run(make_report(counters=[CounterValue("feature", 1, "a"), CounterValue("feature", 2, "b")]), ctx)
    assert out.counters == (CounterValue("feature", 3, "__other__"),)


LABELLED = st.builds(
    CounterValue, st.sampled_from(["feature", "export_pdf"]), st.integers(0, 100), st.none() | st.text(max_size=20)
)


@settings(max_examples=150, deadline=None)
@given(counters=st.lists(LABELLED, max_size=40), limit=st.integers(1, 6), max_bytes=st.integers(0, 12))
def test_the_pipeline_output_is_within_limits_and_keeps_totals(
    counters: list[CounterValue],
    limit: int,
    max_bytes: int,
    make_report: Callable[..., Report],
    spec: ProductSpec,
    pipeline: Callable[[Report, ScrubContext], ScrubOutcome],
) -> None:
    ctx = ScrubContext(spec=spec, limits=ScrubLimits(max_string_bytes=max_bytes, max_labels_per_metric=limit))
    out = pipeline(make_report(counters=counters), ctx).report
    assert out is not None
    labels: defaultdict[str, list[str]] = defaultdict(list)
    for c in out.counters:
        if c.label is not None:
            labels[c.name].append(c.label)
            assert c.label == "__other__" or len(c.label.encode()) <= max_bytes
    assert all(len(v) <= limit and len(set(v)) == len(v) for v in labels.values())
    for name in ("feature", "export_pdf"):
        assert sum(c.value for c in out.counters if c.name == name) == sum(c.value for c in counters if c.name == name)
    assert pipeline(make_report(counters=counters[::-1]), ctx).report == out


@pytest.mark.parametrize(
    ("names", "problems", "kept"),
    [
        (["a", "a", "a"], 0, True),  # at the limit of 3 labels per metric
        (["a", "a", "a", "a"], 0, False),
        (["a", "a", "b", "b", "b"], 0, True),  # more labelled series than the limit, none over it per name
        (["a", "b", "b", "b", "b"], 0, False),
        ([], 3, True),  # 3 signatures of one kind, at the limit
        ([], 4, False),
    ],
)
def test_keeps_answers_as_scrub_at_the_label_and_signature_limits(
    make_report: Callable[..., Report], spec: ProductSpec, names: list[str], problems: int, kept: bool
) -> None:
    """``keeps`` counts series per name only when there are more than the limit in all: either way its
    answer is what ``scrub`` does (a report it keeps comes back as it is)."""
    ctx = ScrubContext(spec=spec, limits=ScrubLimits(max_labels_per_metric=3, max_signatures_per_kind=3))
    report = make_report(
        counters=[CounterValue(name, 1, f"label{i}") for i, name in enumerate(names)],
        problems=[Problem("error", f"E{i}@x.py:1", 1) for i in range(problems)],
    )
    assert LimitsScrubber().keeps(report, ctx) is kept
    assert (run(report, ctx) == report) is kept

"""The declared scrubber: only what the product's spec declares survives, and every drop is counted."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ceip_core.default_plugins.declared import HARDWARE_FEATURES, DeclaredFieldsScrubber
from ceip_core.records import CounterValue, Histogram, Problem, ProcessSession, Report, SystemInfo
from ceip_core.scrubbing import Scrubber, ScrubContext

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def run(report: Report, ctx: ScrubContext) -> Report:
    result = DeclaredFieldsScrubber().scrub(report, ctx)
    assert result is not None
    return result


def test_the_built_ins_register_in_pipeline_order(scrubbers: Sequence[Scrubber]) -> None:
    assert [(s.name, s.order) for s in scrubbers] == [("declared", 100), ("identifiers", 200), ("limits", 300)]
    assert all(isinstance(s, Scrubber) for s in scrubbers)
    assert HARDWARE_FEATURES == ("bluetooth", "usb_high_speed")


def test_a_report_for_another_product_is_dropped(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    assert DeclaredFieldsScrubber().scrub(make_report(product="packager"), ctx) is None


def test_declared_values_pass_unchanged(typical_report: Report, ctx: ScrubContext) -> None:
    clean = attrs.evolve(typical_report, histograms=typical_report.histograms[:3])
    out = run(clean, ctx)
    assert out.counters == tuple(sorted(clean.counters, key=lambda c: (c.name, c.label or "")))
    assert out.histograms == clean.histograms
    assert out.problems == tuple(sorted(clean.problems, key=lambda p: (p.kind, p.signature)))
    assert out.config == clean.config
    assert out.sessions == clean.sessions
    assert out.diagnostics == {}


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("counters", [CounterValue("export_csv", 1)], "undeclared_counter"),
        ("counters", [CounterValue("open_session", 1)], "wrong_kind"),
        ("histograms", [Histogram("load_time", 1, 1.0, 1.0, 1.0, {0: 1})], "undeclared_histogram"),
        ("histograms", [Histogram("export_pdf", 1, 1.0, 1.0, 1.0, {0: 1})], "wrong_kind"),
        ("problems", [Problem("freeze", "x", 1)], "undeclared_problem"),
        ("problems", [Problem("theme", "x", 1)], "wrong_kind"),
        ("config", {"password": "hunter2"}, "undeclared_config"),
        ("config", {"crash": "x"}, "wrong_kind"),
        ("sessions", [ProcessSession("bash", T0, 1.0)], "undeclared_executable"),
    ],
)
def test_undeclared_items_are_dropped_and_counted(
    field: str, value: object, key: str, make_report: Callable[..., Report], ctx: ScrubContext
) -> None:
    out = run(make_report(**{field: value}), ctx)
    assert not getattr(out, field)
    assert out.diagnostics == {f"scrub.declared.{key}": 1}


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("counters", [CounterValue("export_pdf", -1)], "out_of_range"),
        ("counters", [CounterValue("rows_loaded", 1001)], "out_of_range"),
        ("counters", [CounterValue("export_pdf", True)], "out_of_range"),
        ("counters", [CounterValue("export_pdf", 1.5)], "out_of_range"),
        ("histograms", [Histogram("open_session", -1, 1.0, 1.0, 1.0, {0: 1})], "out_of_range"),
        ("histograms", [Histogram("open_session", 1, -1.0, -1.0, -1.0, {0: 1})], "out_of_range"),
        ("histograms", [Histogram("open_session", 1, 1.0, 1.0, 1.0, {0: -1})], "out_of_range"),
        ("histograms", [Histogram("open_session", 1, 70_000.0, 70_000.0, 70_000.0, {64: 1})], "out_of_range"),
        ("histograms", [Histogram("open_session", 1, math.nan, 1.0, 1.0, {0: 1})], "out_of_range"),
        ("histograms", [Histogram("open_session", 1, math.inf, 1.0, math.inf, {0: 1})], "out_of_range"),
        ("problems", [Problem("crash", "x", -2)], "out_of_range"),
        ("config", {"zoom": math.nan}, "out_of_range"),
        ("config", {"zoom": -math.inf}, "out_of_range"),
        ("config", {"threads": 65}, "out_of_range"),
        ("config", {"theme": ["dark"]}, "invalid_value"),
        ("config", {"theme": None}, "invalid_value"),
        ("sessions", [ProcessSession("analyst", T0, -1.0)], "out_of_range"),
        ("sessions", [ProcessSession("analyst", T0, 1.0, cpu_s=math.nan)], "out_of_range"),
    ],
)
def test_values_out_of_range_are_dropped_and_counted(
    field: str, value: object, key: str, make_report: Callable[..., Report], ctx: ScrubContext
) -> None:
    out = run(make_report(**{field: value}), ctx)
    assert not getattr(out, field)
    assert out.diagnostics == {f"scrub.declared.{key}": 1}


def test_values_in_range_survive(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    report = make_report(
        counters=[CounterValue("rows_loaded", 1000), CounterValue("export_pdf", 0)],
        histograms=[Histogram("open_session", 1, 60_000.0, 60_000.0, 60_000.0, {63: 1})],
        config={"threads": 64, "autosave": True, "zoom": -0.5, "theme": ""},
    )
    out = run(report, ctx)
    assert len(out.counters) == 2 and len(out.histograms) == 1
    assert out.config == {"autosave": True, "theme": "", "threads": 64, "zoom": -0.5}
    assert out.diagnostics == {}


def test_labels_not_declared_fold_into_other(
    make_report: Callable[..., Report], make_histogram: Callable[..., Histogram], ctx: ScrubContext
) -> None:
    report = make_report(
        counters=[
            CounterValue("open_file", 5, "csv"),
            CounterValue("open_file", 2, "parquet"),
            CounterValue("open_file", 3, "/home/alice/secret.txt"),
            CounterValue("open_file", 1),
        ],
        histograms=[
            make_histogram("render", [1.0, 2.0], "fast"),
            make_histogram("render", [10.0], "glacial"),
            make_histogram("render", [20.0, 30.0], "medium"),
        ],
    )
    out = run(report, ctx)
    assert out.counters == (
        CounterValue("open_file", 1),
        CounterValue("open_file", 5, "__other__"),
        CounterValue("open_file", 5, "csv"),
    )
    other = out.histograms[0]
    assert (other.label, other.count, other.sum, other.min, other.max) == ("__other__", 3, 60.0, 10.0, 30.0)
    assert out.histograms[1].label == "fast"
    assert out.diagnostics == {"scrub.declared.label_not_allowed": 4}


def test_free_labels_are_kept_when_the_metric_declares_none(
    make_report: Callable[..., Report], ctx: ScrubContext
) -> None:
    out = run(make_report(counters=[CounterValue("feature", 1, "anything at all")]), ctx)
    assert out.counters == (CounterValue("feature", 1, "anything at all"),)


def test_hardware_features_are_an_allowlist(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    features = {"usb_high_speed": "absent", "bluetooth": "present", "camera": "present", "tpm": "ws-4711"}
    out = run(make_report(system=SystemInfo(features={**features, "bluetooth": "maybe"})), ctx)
    assert out.system is not None and out.system.features == {"usb_high_speed": "absent"}
    assert out.diagnostics == {"scrub.declared.undeclared_feature": 3}
    out = run(make_report(system=SystemInfo(features={"usb_high_speed": "unknown", "bluetooth": "present"})), ctx)
    assert out.system is not None and list(out.system.features) == ["bluetooth", "usb_high_speed"]


def test_duplicates_are_merged(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    report = make_report(
        counters=[CounterValue("export_pdf", 2), CounterValue("export_pdf", 3)],
        problems=[Problem("crash", "x", 1), Problem("crash", "x", 2)],
    )
    out = run(report, ctx)
    assert out.counters == (CounterValue("export_pdf", 5),)
    assert out.problems == (Problem("crash", "x", 3),)


def test_existing_diagnostics_are_kept_and_added_to(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    report = make_report(
        counters=[CounterValue("nope", 1), CounterValue("nope2", 1)],
        diagnostics={"recorder.undeclared": 4, "scrub.declared.undeclared_counter": 1},
    )
    assert run(report, ctx).diagnostics == {"recorder.undeclared": 4, "scrub.declared.undeclared_counter": 3}


COUNTER_NAMES = st.sampled_from(["export_pdf", "feature", "open_file", "rows_loaded", "open_session", "nope"])
LABELS = st.one_of(st.none(), st.sampled_from(["csv", "xlsx", "pdf", "__other__", "x"]))


@settings(max_examples=100, deadline=None)
@given(counters=st.lists(st.builds(CounterValue, COUNTER_NAMES, st.integers(-5, 2000), LABELS), max_size=12))
def test_counters_are_either_kept_or_counted(
    counters: list[CounterValue], make_report: Callable[..., Report], ctx: ScrubContext
) -> None:
    out = run(make_report(counters=counters), ctx)
    assert all(ctx.spec.metric(c.name) is not None for c in out.counters)
    keys = [(c.name, c.label) for c in out.counters]
    assert keys == sorted(set(keys), key=lambda k: (k[0], k[1] is not None, k[1] or ""))
    dropped = sum(v for k, v in out.diagnostics.items() if k != "scrub.declared.label_not_allowed")
    kept = [c for c in counters if c.value >= 0 and (c.name != "rows_loaded" or c.value <= 1000)]
    kept = [c for c in kept if c.name in ("export_pdf", "feature", "open_file", "rows_loaded")]
    assert dropped == len(counters) - len(kept)
    assert sum(c.value for c in out.counters) == sum(c.value for c in kept)
    assert run(make_report(counters=counters[::-1]), ctx) == out

"""Fixtures for the built-in scrubbers: a sample product spec, a report factory and the pipeline as ceip
loads it. Session-scoped, so hypothesis tests can use them too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from ceip_core.plugins import Plugins
from ceip_core.records import (
    Category,
    CounterValue,
    Histogram,
    MetricKind,
    MetricSpec,
    Period,
    Problem,
    ProcessSession,
    ProductSpec,
    Report,
    SystemInfo,
)
from ceip_core.scrubbing import MachineIdentifiers, Scrubber, ScrubContext, ScrubOutcome, run_pipeline

C, H, P, K = MetricKind.COUNTER, MetricKind.HISTOGRAM, MetricKind.PROBLEM, MetricKind.CONFIG
USE, PERF, CONF = Category.PROGRAM_USE, Category.PERFORMANCE, Category.CONFIGURATION

SPEC = ProductSpec(
    id="analyst",
    display_name="Analyst",
    executables=("analyst.exe", "analyst"),
    metrics=(
        MetricSpec("export_pdf", C, "uses", USE, "Exports to PDF."),
        MetricSpec("feature", C, "uses", USE, "Feature use, labelled by free text."),
        MetricSpec("open_file", C, "uses", USE, "Files opened, by type.", labels=("csv", "xlsx")),
        MetricSpec("rows_loaded", C, "rows", PERF, "Rows loaded.", max_value=1000),
        MetricSpec("open_session", H, "ms", PERF, "Time to open a session.", max_value=60_000),
        MetricSpec("render", H, "ms", PERF, "Render time, by speed class.", labels=("fast", "slow")),
        MetricSpec("crash", P, "occurrences", PERF, "Crashes, by crash site."),
        MetricSpec("hang", P, "occurrences", PERF, "Hangs, by site."),
        MetricSpec("theme", K, "value", CONF, "The UI theme."),
        MetricSpec("threads", K, "value", CONF, "Worker threads.", max_value=64),
        MetricSpec("autosave", K, "value", CONF, "Whether autosave is on."),
        MetricSpec("zoom", K, "value", CONF, "Zoom factor."),
        MetricSpec("language", K, "value", CONF, "The UI language."),
    ),
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _make_report(**fields: Any) -> Report:
    """A well-formed report for the sample product; ``fields`` override any attribute."""
    base: dict[str, Any] = {
        "report_id": "6f1c2b1e-8d7a-4c3b-9e5f-0a1b2c3d4e5f",
        "guid": "0d9b8c7a-6f5e-4d3c-8b2a-1908f7e6d5c4",
        "product": "analyst",
        "product_version": "5.2.1",
        "period": Period(T0, T0.replace(hour=13)),
        "system": SystemInfo(cpu_logical=8, memory_bucket="8-16 GiB", os="Linux", os_version="6.8.0-45-generic"),
    }
    base.update(fields)
    return Report(**base)


def _histogram(name: str, values: list[float], label: str | None = None) -> Histogram:
    """A histogram of ``values`` with made-up bucket indexes (the scrubbers never interpret them)."""
    buckets: dict[int, int] = {}
    for v in values:
        buckets[int(v).bit_length()] = buckets.get(int(v).bit_length(), 0) + 1
    return Histogram(name, len(values), float(sum(values)), min(values), max(values), buckets, label)


def _typical_report() -> Report:
    """A report of typical size: 20 counters, 5 histograms, 5 problems, 5 config values, 1 session."""
    return _make_report(
        counters=[CounterValue("feature", i + 1, f"tool_{i}") for i in range(17)]
        + [CounterValue("export_pdf", 3), CounterValue("open_file", 5, "csv"), CounterValue("rows_loaded", 900)],
        histograms=[_histogram("open_session", [120.0, 340.5, 80.25])]
        + [
            _histogram("render", [float(i), 2.0 * i + 1], label)
            for i, label in enumerate(("fast", "slow", "medium"), 1)
        ]
        + [_histogram("open_session", [5000.0], "cold start")],
        problems=[
            Problem("crash", "ValueError@render.py:88", 2),
            Problem("crash", "KeyError@io/csv_reader.py:120", 1),
            Problem("crash", "OSError: [Errno 2] No such file: '/home/alice/data/q3.csv'", 1),
            Problem("hang", "main thread blocked in sqlite3_step", 1),
            Problem("hang", "UI thread waiting on 10.0.0.12:5432", 1),
        ],
        config={"theme": "dark", "threads": 8, "autosave": True, "zoom": 1.25, "language": "en-GB"},
        sessions=[ProcessSession("analyst.exe", T0, 3600.0, 120.5, 512 << 20)],
    )


@pytest.fixture(scope="session")
def spec() -> ProductSpec:
    return SPEC


@pytest.fixture(scope="session")
def ctx() -> ScrubContext:
    """A context for the sample product on a machine with known names."""
    machine = MachineIdentifiers(
        host_names=("ws-4711", "ws-4711.corp.example.com"),
        user_names=("alice",),
        home_dirs=("/home/alice",),
    )
    return ScrubContext(spec=SPEC, machine=machine)


@pytest.fixture(scope="session")
def make_report() -> Callable[..., Report]:
    """``make_report(**fields)``: a well-formed report for the sample product, ``fields`` overriding."""
    return _make_report


@pytest.fixture(scope="session")
def make_histogram() -> Callable[..., Histogram]:
    """``make_histogram(name, values, label=None)``: a histogram holding ``values``."""
    return _histogram


@pytest.fixture(scope="session")
def typical_report() -> Report:
    """A report of typical size (see :func:`_typical_report`)."""
    return _typical_report()


@pytest.fixture(scope="session")
def scrubbers() -> tuple[Scrubber, ...]:
    """The three built-in scrubbers as ceip loads them: the built-ins only, through the real plugin manager
    (``Plugins.load``), in pipeline order, whatever plugin switches the environment holds."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("CEIP_LOAD_PLUGINS", "CEIP_BLOCK_PLUGINS", "CEIP_PLUGIN_MODULES"):
            env.delenv(name, raising=False)
        return Plugins.load(entry_points=False).scrubbers


@pytest.fixture(scope="session")
def pipeline(scrubbers: Sequence[Scrubber]) -> Callable[[Report, ScrubContext], ScrubOutcome]:
    """Runs a report through all three scrubbers, in order."""
    return lambda report, ctx: run_pipeline(report, scrubbers, ctx)

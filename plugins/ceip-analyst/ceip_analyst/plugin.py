"""Analyst: the desktop application for viewing and summarising data. What it may record, and nothing else."""

from collections.abc import Callable

from ceip_core.hookspecs import hookimpl
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec

_USE, _PERF, _CONF = Category.PROGRAM_USE, Category.PERFORMANCE, Category.CONFIGURATION
_C, _H, _P, _K = MetricKind.COUNTER, MetricKind.HISTOGRAM, MetricKind.PROBLEM, MetricKind.CONFIG

SPEC = ProductSpec(
    id="analyst",
    display_name="Analyst",
    executables=("analyst", "analyst.exe"),
    description="The desktop application for viewing and summarising data.",
    metrics=(
        MetricSpec("open_session", _C, "uses", _USE, "How often a data session was opened."),
        MetricSpec(
            "filter",
            _C,
            "uses",
            _USE,
            "How often a filter was applied, by kind.",
            labels=("text", "range", "date", "category"),
        ),
        MetricSpec("summarise", _C, "uses", _USE, "How often a summary table was computed."),
        MetricSpec(
            "export", _C, "uses", _USE, "How often data was exported, by format.", labels=("pdf", "csv", "xlsx", "png")
        ),
        MetricSpec(
            "chart",
            _C,
            "uses",
            _USE,
            "How often a chart was drawn, by chart type.",
            labels=("bar", "line", "pie", "scatter", "table"),
        ),
        MetricSpec("help_opened", _C, "uses", _USE, "How often the help was opened."),
        MetricSpec(
            "feedback_options_opened", _C, "uses", _USE, "How often the customer-feedback options dialog was opened."
        ),
        MetricSpec(
            "click_to_response_ms",
            _H,
            "ms",
            _PERF,
            "Time from a click to the window showing its result.",
            max_value=600_000,
        ),
        MetricSpec(
            "open_file_ms", _H, "ms", _PERF, "Time from choosing a file to seeing its contents.", max_value=3_600_000
        ),
        MetricSpec("render_chart_ms", _H, "ms", _PERF, "Time to draw a chart.", max_value=600_000),
        MetricSpec("error", _P, "occurrences", _PERF, "Errors shown to the user, by signature."),
        MetricSpec("crash", _P, "occurrences", _PERF, "Crashes, by the place in the code where they happened."),
        MetricSpec("theme", _K, "value", _CONF, "The colour theme chosen (light or dark).", labels=("light", "dark")),
        MetricSpec(
            "default_chart",
            _K,
            "value",
            _CONF,
            "The chart type used by default.",
            labels=("bar", "line", "pie", "scatter", "table"),
        ),
        MetricSpec("auto_save", _K, "value", _CONF, "Whether sessions are saved automatically."),
    ),
)


@hookimpl
def ceip_register_products(register: Callable[[ProductSpec], None]) -> None:
    register(SPEC)

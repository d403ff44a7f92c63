"""Packager: the utility that gathers data for analysis. What it may record, and nothing else."""

from collections.abc import Callable

from ceip_core.collectors import Collector
from ceip_core.hookspecs import hookimpl
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec

_USE, _PERF, _CONF = Category.PROGRAM_USE, Category.PERFORMANCE, Category.CONFIGURATION
_C, _H, _P, _K = MetricKind.COUNTER, MetricKind.HISTOGRAM, MetricKind.PROBLEM, MetricKind.CONFIG

SPEC = ProductSpec(
    id="packager",
    display_name="Packager",
    executables=("packager", "packager.exe"),
    description="The utility that gathers data into packages for analysis.",
    metrics=(
        MetricSpec(
            "runs",
            _C,
            "runs",
            _USE,
            "How often Packager was run, by how it was started.",
            labels=("interactive", "scheduled", "command_line"),
        ),
        MetricSpec("packages_built", _C, "packages", _USE, "How many packages were built."),
        MetricSpec("package_size_bytes", _H, "bytes", _PERF, "Size of each package built.", max_value=1 << 40),
        MetricSpec(
            "transfer_speed_bps",
            _H,
            "bytes/s",
            _PERF,
            "Speed at which package data was transferred.",
            max_value=1 << 36,
        ),
        MetricSpec("run_duration_ms", _H, "ms", _PERF, "Time one run took from start to finish.", max_value=86_400_000),
        MetricSpec("failure", _P, "occurrences", _PERF, "Failed runs, by kind of failure."),
        MetricSpec("crash", _P, "occurrences", _PERF, "Crashes, by the place in the code where they happened."),
        MetricSpec(
            "compression", _K, "value", _CONF, "The compression chosen for packages.", labels=("zstd", "gzip", "none")
        ),
        MetricSpec("parallel_jobs", _K, "jobs", _CONF, "How many jobs run in parallel."),
    ),
)


@hookimpl
def ceip_register_products(register: Callable[[ProductSpec], None]) -> None:
    register(SPEC)


@hookimpl
def ceip_register_collectors(register: Callable[[Collector], None]) -> None:
    """Packager's run log, read by the agent from outside Packager (``ceip_packager.runlog``)."""
    from ceip_packager.runlog import RunLogCollector

    register(RunLogCollector())

"""My Product: what it may record, and nothing else. Replace the metrics with your product's own.

Every metric needs a kind, a unit, a category and one sentence a customer can read in the data
dictionary (``ceip describe``). What is not declared here is dropped before it reaches the disk.
"""

from ceip_core import hookimpl
from ceip_core.hookspecs import RegisterCollectors, RegisterProducts
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec

SPEC = ProductSpec(
    id="myproduct",
    display_name="My Product",
    # The file names of the product's executables: the agent observes these, once they are allowlisted.
    executables=("myproduct", "myproduct.exe"),
    description="What My Product is, in one sentence.",
    metrics=(
        MetricSpec(
            "export",
            MetricKind.COUNTER,
            "uses",
            Category.PROGRAM_USE,
            "How often data was exported, by format.",
            labels=("pdf", "csv"),
        ),
        MetricSpec(
            "open_file_ms",
            MetricKind.HISTOGRAM,
            "ms",
            Category.PERFORMANCE,
            "Time from choosing a file to seeing its contents.",
            max_value=3_600_000,
        ),
        MetricSpec("error", MetricKind.PROBLEM, "occurrences", Category.PERFORMANCE, "Errors shown, by signature."),
        MetricSpec("theme", MetricKind.CONFIG, "value", Category.CONFIGURATION, "The colour theme chosen."),
    ),
)


@hookimpl
def ceip_register_products(register: RegisterProducts) -> None:
    register(SPEC)


# Optional: what the agent reads about the product from outside it (see collector.py). Delete this hook
# and collector.py if the product's own recording says it all.
@hookimpl
def ceip_register_collectors(register: RegisterCollectors) -> None:
    from ceip_myproduct.collector import StatusCollector

    register(StatusCollector())

"""A product plugin used by the core tests: the "sample" product, declaring one metric of each kind."""

from ceip_core.hookspecs import hookimpl
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec
from ceip_core.testing import declare_test_process

# Both products declare the test process (ceip_core.testing): the tests record as them in their own process
# and in interpreters they start.
SPEC = ProductSpec(
    id="sample",
    display_name="Sample",
    executables=("sample-app",),
    description="A product that exists only in ceip's tests.",
    metrics=(
        MetricSpec("open_file", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Files opened."),
        MetricSpec(
            "export", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Exports, by format.", labels=("pdf", "csv")
        ),
        MetricSpec("tag", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Free-form tags used."),
        MetricSpec(
            "render_ms", MetricKind.HISTOGRAM, "ms", Category.PERFORMANCE, "Time to render a view.", max_value=3_600_000
        ),
        MetricSpec("error", MetricKind.PROBLEM, "occurrences", Category.PERFORMANCE, "Errors by signature."),
        MetricSpec("crash", MetricKind.PROBLEM, "occurrences", Category.PERFORMANCE, "Crashes by signature."),
        MetricSpec("theme", MetricKind.CONFIG, "value", Category.CONFIGURATION, "The colour theme chosen."),
    ),
)

OTHER = ProductSpec(
    id="other",
    display_name="Other",
    executables=("other-app",),
    metrics=(
        MetricSpec("used", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Times used."),
        MetricSpec("error", MetricKind.PROBLEM, "occurrences", Category.PERFORMANCE, "Errors by signature."),
    ),
)


@hookimpl
def ceip_register_products(register):
    register(declare_test_process(SPEC))
    register(declare_test_process(OTHER))

"""Hub Server: the server that hosts a private hub. What it may record, and nothing else."""

from collections.abc import Callable

from ceip_core.collectors import Collector
from ceip_core.hookspecs import hookimpl
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec

_USE, _PERF, _CONF = Category.PROGRAM_USE, Category.PERFORMANCE, Category.CONFIGURATION
_C, _H, _P, _K = MetricKind.COUNTER, MetricKind.HISTOGRAM, MetricKind.PROBLEM, MetricKind.CONFIG

SPEC = ProductSpec(
    id="hub-server",
    display_name="Hub Server",
    executables=("hub-server", "hub-server.exe"),
    description="The server that hosts a private hub.",
    metrics=(
        MetricSpec("server_starts", _C, "starts", _USE, "How often the server was started."),
        MetricSpec(
            "requests_served",
            _C,
            "requests",
            _USE,
            "Requests served, by kind of request.",
            labels=("api", "web", "sync"),
        ),
        MetricSpec(
            "uptime_s",
            _H,
            "s",
            _PERF,
            "How long the server ran between a start and a stop.",
            max_value=10 * 365 * 86400,
        ),
        MetricSpec(
            "response_time_ms",
            _H,
            "ms",
            _PERF,
            "Time to answer a request, by kind of request.",
            labels=("api", "web", "sync"),
            max_value=600_000,
        ),
        MetricSpec(
            "connected_clients",
            _H,
            "clients",
            _PERF,
            "Number of connected clients, read from the server's status once a minute.",
            max_value=1_000_000,
        ),
        MetricSpec(
            "hosted_repositories",
            _H,
            "repositories",
            _USE,
            "How many repositories the hub hosts, read from its status once an hour.",
            max_value=10_000_000,
        ),
        MetricSpec("error", _P, "occurrences", _PERF, "Errors while serving, by kind."),
        MetricSpec("crash", _P, "occurrences", _PERF, "Crashes, by the place in the code where they happened."),
        MetricSpec(
            "storage_backend", _K, "value", _CONF, "The kind of storage the hub uses.", labels=("sqlite", "postgresql")
        ),
        MetricSpec("tls_enabled", _K, "value", _CONF, "Whether the hub serves over TLS."),
        MetricSpec("worker_count", _K, "workers", _CONF, "How many worker processes serve requests."),
    ),
)


@hookimpl
def ceip_register_products(register: Callable[[ProductSpec], None]) -> None:
    register(SPEC)


@hookimpl
def ceip_register_collectors(register: Callable[[Collector], None]) -> None:
    """The server's own status, read by the agent from outside the server (``ceip_hub_server.collector``)."""
    from ceip_hub_server.collector import HubStatusCollector

    register(HubStatusCollector())

"""A product's own collector: it contributes the product's declared metrics, observed from outside the
product, through the agent's one sealing path; it runs only while its product is active, sees nothing
else, and a slow or failing one is counted and never stalls the agent. Collisions fail at load time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ceip_core.agent import read_status
from ceip_core.collectors import CollectContext, MetricsObserved, Observation
from ceip_core.consent import Consent
from ceip_core.hookspecs import hookimpl
from ceip_core.plugins import PluginError, Plugins
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec, SystemInfo
from ceip_core.statedb import StateDB

GADGET = ProductSpec(
    "gadget",
    "Gadget",
    ("gadget",),
    (
        MetricSpec("widgets", MetricKind.COUNTER, "widgets", Category.PROGRAM_USE, "Widgets made."),
        MetricSpec("latency_ms", MetricKind.HISTOGRAM, "ms", Category.PERFORMANCE, "Latency.", max_value=60_000),
        MetricSpec("failure", MetricKind.PROBLEM, "occurrences", Category.PERFORMANCE, "Failures, by kind."),
        MetricSpec("mode", MetricKind.CONFIG, "value", Category.CONFIGURATION, "The mode.", labels=("fast", "safe")),
    ),
)


class Reads:
    """A product's collector that returns what the test gives it, and remembers what it was shown."""

    interval_s = 60.0
    timeout_s = 2.0

    def __init__(self, name: str, observed: Sequence[Observation] = (), product: str = "gadget") -> None:
        self.name, self.product, self.observed = name, product, observed
        self.contexts: list[CollectContext] = []
        self.threads: list[str] = []

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        self.contexts.append(ctx)
        self.threads.append(threading.current_thread().name)
        return self.observed


class Hangs(Reads):
    """Blocks its thread (not only its coroutine) until the test ends: only the time budget frees the agent."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__("hangs")
        self.timeout_s = 0.3
        self.release = release

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        self.release.wait(120)
        return [MetricsObserved("gadget", counters={("widgets", None): 1000})]


class Fails(Reads):
    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        raise OSError("the status endpoint is down")


class GadgetPlugin:
    """The gadget product's plugin: its declaration and its collectors."""

    def __init__(self, *collectors: Any) -> None:
        self.__name__ = "gadget-plugin"
        self.collectors = collectors

    @hookimpl
    def ceip_register_products(self, register: Callable[[ProductSpec], None]) -> None:
        register(GADGET)

    @hookimpl
    def ceip_register_collectors(self, register: Callable[[Any], None]) -> None:
        for collector in self.collectors:
            register(collector)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def gadget(ceip_home: Path, ceip_plugins: Any, ceip_allow: Any) -> Callable[..., Plugins]:
    """``gadget(*collectors)``: the gadget product with these collectors, allowlisted and opted in."""

    def load(*collectors: Any, opted_in: bool = True) -> Plugins:
        plugins: Plugins = ceip_plugins(GadgetPlugin(*collectors), test_process=True)
        ceip_allow("gadget")
        if opted_in:
            Consent(StateDB(ceip_home)).opt_in("gadget")
        return plugins

    return load


def gadget_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    [report] = [r for r in reports if r["product"] == "gadget"]
    return report


def test_a_product_collector_contributes_its_declared_metrics_and_nothing_undeclared(
    gadget: Any, ceip_agent_once: Any
) -> None:
    observed = MetricsObserved(
        "gadget",
        counters={("widgets", None): 3, ("owner_email", None): 1},
        values=[("latency_ms", 12.5, None), ("latency_ms", 40.0, None), ("latency_ms", -1.0, None)],
        config={"mode": "fast"},
        problems={("failure", "disk-full"): 2},
        version="7.1",
    )
    reads = Reads("reads", [observed])
    gadget(reads)
    report = gadget_report(ceip_agent_once())
    assert report["product_version"] == "7.1"
    assert [(c["name"], c["value"]) for c in report["counters"]] == [("widgets", 3)]
    [latency] = report["histograms"]
    assert (latency["name"], latency["count"], latency["sum"]) == ("latency_ms", 2, 52.5)
    assert report["config"] == {"mode": "fast"}
    assert [(p["kind"], p["signature"], p["count"]) for p in report["problems"]] == [("failure", "disk-full", 2)]
    # The undeclared counter was dropped and counted by the same scrubbers as a recorder's; the bad value too.
    assert report["diagnostics"]["recorder.invalid_value"] == 1
    assert any(k.startswith("scrub.declared.") for k in report["diagnostics"]), report["diagnostics"]
    # It ran in a worker thread of its own, seeing its product only.
    assert reads.threads == ["ceip-collector-reads"]
    assert [s.id for s in reads.contexts[0].products] == ["gadget"]


def test_a_hanging_or_failing_collector_is_counted_and_stalls_nothing(
    gadget: Any, ceip_agent_once: Any, ceip_home: Path, release: threading.Event
) -> None:
    good = Reads("good", [MetricsObserved("gadget", counters={("widgets", None): 1})])
    gadget(Hangs(release), Fails("fails"), good)
    report = gadget_report(ceip_agent_once())
    assert [(c["name"], c["value"]) for c in report["counters"]] == [("widgets", 1)]  # the good one's only
    troubles = read_status(ceip_home).collector_troubles
    assert troubles == {"hangs": {"timed_out": 1}, "fails": {"failed": 1}}


def test_a_product_collector_runs_only_while_its_product_is_active_and_may_give_only_its_data(
    gadget: Any, ceip_agent_once: Any, ceip_home: Path
) -> None:
    foreign = Reads(
        "foreign",
        [
            MetricsObserved("sample", counters={("open_file", None): 5}),  # another product's
            SystemInfo(cpu_logical=128),  # machine facts are the system collector's
            MetricsObserved("gadget", counters={("widgets", None): 2}),
        ],
    )
    gadget(foreign, opted_in=False)
    ceip_agent_once()
    assert foreign.contexts == []  # not opted in: never called
    Consent(StateDB(ceip_home)).opt_in("gadget")
    report = gadget_report(ceip_agent_once())
    assert [(c["name"], c["value"]) for c in report["counters"]] == [("widgets", 2)]
    assert (report.get("system") or {}).get("cpu_logical") != 128
    assert read_status(ceip_home).collector_troubles == {"foreign": {"dropped": 2}}


class OtherFacts:
    name = "more-facts"
    interval_s = 60.0
    machine_facts = True

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        return [SystemInfo()]


class FactsPlugin:
    def __init__(self) -> None:
        self.__name__ = "facts-plugin"

    @hookimpl
    def ceip_register_collectors(self, register: Callable[[Any], None]) -> None:
        register(OtherFacts())


class Squatter:
    """A plugin that registers a collector for a product some other plugin declares."""

    def __init__(self, collector: Any) -> None:
        self.__name__ = "squatter"
        self.collector = collector

    @hookimpl
    def ceip_register_collectors(self, register: Callable[[Any], None]) -> None:
        register(self.collector)


def test_collisions_are_errors_at_load_time_naming_both_plugins(ceip_home: Path, ceip_plugins: Any) -> None:
    with pytest.raises(
        PluginError,
        match=r"machine facts are collected twice: by 'system' of ceip_core\S+ and 'more-facts' of facts-plugin",
    ):
        _ = ceip_plugins(FactsPlugin()).collectors
    with pytest.raises(PluginError, match=r"collector 'x' of squatter is for 'gadget', which gadget-plugin registers"):
        _ = ceip_plugins(GadgetPlugin(), Squatter(Reads("x"))).collectors
    with pytest.raises(PluginError, match=r"collector 'x' is registered twice: by gadget-plugin and by squatter"):
        _ = ceip_plugins(GadgetPlugin(Reads("x")), Squatter(Reads("x"))).collectors
    with pytest.raises(PluginError, match=r"collector 'y' of squatter is for 'nothing', which no plugin registers"):
        _ = ceip_plugins(Squatter(Reads("y", product="nothing"))).collectors

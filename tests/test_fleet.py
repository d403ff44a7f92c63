"""The simulated fleet of ``ceip demo`` and the benchmarks: declared data only, reproducible, and plausible
enough that every dashboard panel has something to tell (versions differ, a regression and a fix in the
new version, labels adopted unevenly, settings as the spec declares them, some machines opt out)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from ceip_core.default_plugins.declared import DeclaredFieldsScrubber
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec, Report
from ceip_core.scrubbing import ScrubContext
from ceip_core.service import fleet

C, H, P, K = MetricKind.COUNTER, MetricKind.HISTOGRAM, MetricKind.PROBLEM, MetricKind.CONFIG
USE, PERF, CONF = Category.PROGRAM_USE, Category.PERFORMANCE, Category.CONFIGURATION
SPEC = ProductSpec(
    id="sample",
    display_name="Sample",
    executables=("sample",),
    metrics=(
        MetricSpec("open", C, "uses", USE, "How often a file was opened."),
        MetricSpec("export", C, "uses", USE, "Exports, by format.", labels=("pdf", "csv", "png", "svg")),
        MetricSpec("open_ms", H, "ms", PERF, "Time to open a file.", max_value=600_000),
        MetricSpec("save_ms", H, "ms", PERF, "Time to save a file.", max_value=600_000),
        MetricSpec("draw_ms", H, "ms", PERF, "Time to draw.", max_value=60_000),
        MetricSpec("error", P, "occurrences", PERF, "Errors, by signature."),
        MetricSpec("theme", K, "value", CONF, "The colour theme.", labels=("light", "dark")),
        MetricSpec("auto_save", K, "value", CONF, "Whether files are saved automatically."),
        MetricSpec("jobs", K, "jobs", CONF, "How many jobs run at once."),
    ),
)
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def simulated() -> tuple[fleet.Fleet, list[Report]]:
    made = fleet.Fleet([SPEC], machines_count=300, days=30, seed=3, now=NOW)
    return made, list(made.reports())


def test_every_report_is_declared_data_and_the_same_seed_makes_the_same_fleet(
    simulated: tuple[fleet.Fleet, list[Report]],
) -> None:
    made, reports = simulated
    scrubber, ctx = DeclaredFieldsScrubber(), ScrubContext(SPEC)
    for r in reports:
        scrubbed = scrubber.scrub(r, ctx)
        assert scrubbed is not None and scrubbed.diagnostics == {}  # nothing dropped, nothing counted
        assert set(scrubbed.counters) == set(r.counters) and scrubbed.config == r.config
        assert len(scrubbed.histograms) == len(r.histograms) and len(scrubbed.problems) == len(r.problems)
    assert all(r.period.end < NOW for r in reports)
    again = fleet.Fleet([SPEC], machines_count=300, days=30, seed=3, now=NOW)
    assert list(again.reports()) == reports and again.deletions() == made.deletions()


def test_settings_take_the_values_their_spec_declares(simulated: tuple[fleet.Fleet, list[Report]]) -> None:
    _, reports = simulated
    values: dict[str, set[object]] = defaultdict(set)
    for r in reports:
        for key, value in r.config.items():
            values[key].add(value)
    assert values["theme"] == {"light", "dark"}
    assert values["auto_save"] == {True, False}
    assert values["jobs"] <= {1, 2, 4, 8, 12, 16} and all(isinstance(v, int) for v in values["jobs"])


def test_the_new_version_is_slower_on_one_timing_faster_on_another_and_fixes_the_common_problem(
    simulated: tuple[fleet.Fleet, list[Report]],
) -> None:
    _, reports = simulated
    means: dict[tuple[str, str], list[float]] = defaultdict(list)
    machines: dict[str, set[str]] = defaultdict(set)
    hit: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in reports:
        machines[r.product_version].add(r.guid)
        for h in r.histograms:
            means[h.name, r.product_version].append(h.sum / h.count)
        for p in r.problems:
            hit[p.signature, r.product_version].add(r.guid)
    old, current, new = fleet.VERSIONS
    assert all(machines[v] for v in fleet.VERSIONS)

    def mean(name: str, version: str) -> float:
        return statistics.mean(means[name, version])

    assert mean("open_ms", new) > 1.3 * mean("open_ms", current)  # the regression
    assert mean("save_ms", new) < 0.9 * mean("save_ms", current)  # a speed-up
    assert mean("draw_ms", old) > mean("draw_ms", current)
    assert len({round(mean(name, current), -1) for name in ("open_ms", "save_ms", "draw_ms")}) == 3

    def share(signature: str, version: str) -> float:
        return len(hit[signature, version]) / len(machines[version])

    by_machines = sorted({s for s, _ in hit}, key=lambda s: -len(hit[s, current]))
    common = by_machines[0]
    assert share(common, new) < share(common, current) / 3  # fixed in the new version
    brought = [s for s in {s for s, _ in hit} if hit[s, new] and not hit[s, current] and not hit[s, old]]
    assert brought and len(hit[brought[0], new]) >= 5  # a problem of its own, on enough machines to be shown


def test_labels_of_a_feature_are_adopted_unevenly(simulated: tuple[fleet.Fleet, list[Report]]) -> None:
    _, reports = simulated
    users: dict[str, set[str]] = defaultdict(set)
    for r in reports:
        for c in r.counters:
            if c.label:
                users[c.label].add(r.guid)
    adoption = sorted((len(g) for g in users.values()), reverse=True)
    assert len(adoption) == 4 and adoption[0] > 2 * adoption[-1]


def test_some_machines_opt_out_and_send_nothing_after(simulated: tuple[fleet.Fleet, list[Report]]) -> None:
    made, reports = simulated
    deletions = made.deletions()
    assert 3 <= len(deletions) <= 30 and all(d.product == "sample" and d.requested < NOW for d in deletions)
    last = {d.guid: d.requested for d in deletions}
    assert all(r.period.end <= last[r.guid] for r in reports if r.guid in last)
    assert {r.guid for r in reports} >= set(last)  # they took part before

"""A simulated fleet: plausible reports of many machines over many days, for the demo and the benchmarks.

One real machine cannot show what the receiving service is for (ranking problems by *distinct machines*,
adoption as a share of machines, distributions), and k-anonymity hides any group of fewer than k machines
anyway. So ``ceip demo`` and ``bench/dashboard.py`` make a fleet: machines with distinct random GUIDs,
each with a configuration of its own, using some of the installed products on some days. Everything is
generated from the products' specs, so every report carries declared metrics only and passes the
service's validation; the same seed makes the same fleet.

What a newcomer should see in it: a few problems that hit many machines once and one that hits a few
machines very often; features adopted widely and others rarely; a new version rolled out over the second
half of the range that is slower on one timing and brings a problem of its own.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from attrs import frozen

from ceip_core.recording import bucket_of
from ceip_core.records import (
    CounterValue,
    Histogram,
    MetricKind,
    MetricSpec,
    Period,
    Problem,
    ProductSpec,
    Report,
    SystemInfo,
)

#: Versions every simulated product ships: an old one a few keep, the current one, and the new one.
VERSIONS = ("2.3", "2.4", "3.0")
#: How much slower the new version is on each product's first timing: the regression to find.
REGRESSION = 1.6
_EXCEPTIONS = ("TimeoutError", "FileNotFoundError", "KeyError", "PermissionError", "ConnectionResetError")
_MODULES = ("io", "loader", "render", "net", "settings")
_OS = (
    ("Windows", ("10.0.19045", "10.0.22631"), 62),
    ("macOS", ("14.6", "15.1"), 23),
    ("Linux", ("6.1.0", "6.8.0"), 15),
)


@frozen
class Machine:
    """One simulated machine: its identity, configuration, and how it uses each product."""

    guid: str
    system: SystemInfo
    activity: float
    """The chance that it uses a product it has on a given day."""
    products: tuple[str, ...]
    upgrade_day: int
    """The day (counted from the first) it moves from 2.4 to the new version; past the end: never."""
    old: bool
    """It stays on the oldest version."""


def _system(rng: random.Random) -> SystemInfo:
    os_name, versions, _ = rng.choices(_OS, weights=[w for *_, w in _OS])[0]
    logical = rng.choices((4, 8, 12, 16, 32), weights=(15, 40, 15, 22, 8))[0]
    return SystemInfo(
        cpu_logical=logical,
        cpu_physical=max(2, logical // 2),
        memory_bucket=rng.choices(("4-8 GiB", "8-16 GiB", "16-32 GiB", "32-64 GiB"), weights=(12, 45, 33, 10))[0],
        os=os_name,
        os_version=rng.choice(versions),
        arch="arm64" if os_name == "macOS" and rng.random() < 0.8 else "x86_64",
        net_interfaces_up=rng.choice((1, 2, 2, 3)),
        net_connected=rng.random() < 0.97,
        boot_age_bucket=rng.choice(("<1 h", "1-24 h", "1-7 d", "1-7 d", ">=7 d")),
        features={
            "bluetooth": "present" if rng.random() < 0.7 else "absent",
            "usb_high_speed": "present" if rng.random() < 0.9 else "absent",
        },
    )


def machines(specs: Sequence[ProductSpec], count: int, days: int, rng: random.Random) -> list[Machine]:
    """``count`` machines; the first product is on most of them, later ones on fewer."""
    fleet = []
    for _ in range(count):
        products = tuple(s.id for i, s in enumerate(specs) if rng.random() < 0.9 * 0.65**i)
        fleet.append(
            Machine(
                guid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                system=_system(rng),
                activity=rng.uniform(0.3, 0.95),
                products=products or (specs[0].id,),
                upgrade_day=rng.randint(days // 2, days + days // 2),
                old=rng.random() < 0.08,
            )
        )
    return fleet


def _signatures(spec: ProductSpec, metric: MetricSpec, rng: random.Random) -> list[str]:
    """Problem signatures of one problem metric, most common first: ``KeyError@analyst/render.py:88``."""
    return [f"{rng.choice(_EXCEPTIONS)}@{spec.id}/{rng.choice(_MODULES)}.py:{rng.randint(20, 900)}" for _ in range(5)]


def _config_value(metric: MetricSpec, rng: random.Random) -> str | int | bool:
    if metric.description.startswith("Whether"):
        return rng.random() < 0.7
    if metric.unit != "value":
        return rng.choices((1, 2, 4, 8), weights=(20, 40, 30, 10))[0]
    values = metric.labels or ("default", "custom", "legacy")
    return rng.choices(values, weights=[6 / (i + 1) for i in range(len(values))])[0]


def _histogram(metric: MetricSpec, rng: random.Random, slower: float) -> Histogram:
    median = (metric.max_value or 100_000) / 1000 * slower
    values = [rng.lognormvariate(math.log(median), 0.7) for _ in range(rng.randint(5, 40))]
    buckets: dict[int, int] = {}
    for v in values:
        buckets[bucket_of(v)] = buckets.get(bucket_of(v), 0) + 1
    return Histogram(metric.name, len(values), sum(values), min(values), max(values), buckets)


class _Product:
    """How the fleet uses one product: which features each machine adopted, its settings, its problems."""

    def __init__(self, spec: ProductSpec, rng: random.Random) -> None:
        self.spec = spec
        self.counters = [m for m in spec.metrics if m.kind is MetricKind.COUNTER]
        self.histograms = [m for m in spec.metrics if m.kind is MetricKind.HISTOGRAM]
        self.configs = [m for m in spec.metrics if m.kind is MetricKind.CONFIG]
        self.problems = {m.name: _signatures(spec, m, rng) for m in spec.metrics if m.kind is MetricKind.PROBLEM}
        self.settings: dict[str, dict[str, str | int | float | bool]] = {}
        self.adopted: dict[str, list[MetricSpec]] = {}
        self.noisy: set[str] = set()

    def setup(self, machine: Machine, rng: random.Random) -> None:
        self.settings[machine.guid] = {m.name: _config_value(m, rng) for m in self.configs}
        self.adopted[machine.guid] = [m for i, m in enumerate(self.counters) if rng.random() < 0.95 * 0.7**i]
        if len(self.noisy) < 6:  # a handful of machines that hit one problem over and over
            self.noisy.add(machine.guid)

    def report(self, machine: Machine, version: str, end: datetime, rng: random.Random) -> Report:
        counters = []
        for metric in self.adopted[machine.guid]:
            for label in rng.sample(metric.labels, k=min(2, len(metric.labels))) if metric.labels else [None]:
                counters.append(CounterValue(metric.name, 1 + int(rng.expovariate(0.3)), label))
        histograms = [
            _histogram(m, rng, REGRESSION if i == 0 and version == VERSIONS[-1] else 1.0)
            for i, m in enumerate(self.histograms)
        ]
        problems = []
        for kind, signatures in self.problems.items():
            for j, signature in enumerate(signatures[:4]):
                if rng.random() < 0.06 * 0.55**j:
                    problems.append(Problem(kind, signature, 1))
            if version == VERSIONS[-1] and rng.random() < 0.05:  # the new version's own problem
                problems.append(Problem(kind, signatures[4], 1))
            if machine.guid in self.noisy and kind == next(iter(self.problems)):
                problems.append(Problem(kind, f"RecursionError@{self.spec.id}/plugins.py:42", rng.randint(20, 60)))
        return Report(
            report_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            guid=machine.guid,
            product=self.spec.id,
            product_version=version,
            period=Period(end - timedelta(hours=1), end),
            system=machine.system,
            counters=counters,
            histograms=histograms,
            problems=problems,
            config=self.settings[machine.guid],
        )


def simulate(
    specs: Sequence[ProductSpec],
    *,
    machines_count: int = 200,
    days: int = 30,
    seed: int = 1,
    now: datetime | None = None,
) -> Iterator[Report]:
    """Reports of a simulated fleet over the last ``days`` days (today included), oldest day first.

    A machine sends one report per product on each day it uses that product.
    """
    if not specs:
        return
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    fleet = machines(specs, machines_count, days, rng)
    products = {spec.id: _Product(spec, rng) for spec in specs}
    for machine in fleet:
        for product in machine.products:
            products[product].setup(machine, rng)
    first = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    for day in range(days):
        for machine in fleet:
            for product in machine.products:
                if rng.random() >= machine.activity:
                    continue
                version = VERSIONS[0] if machine.old else VERSIONS[1] if day < machine.upgrade_day else VERSIONS[2]
                end = min(first + timedelta(days=day, hours=rng.uniform(8, 20)), now - timedelta(minutes=1))
                yield products[product].report(machine, version, end, rng)

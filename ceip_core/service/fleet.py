"""A simulated fleet: plausible reports of many machines over many days, for the demo and the benchmarks.

One real machine cannot show what the receiving service is for (ranking problems by *distinct machines*,
adoption as a share of machines, distributions), and k-anonymity hides any group of fewer than k machines
anyway. So ``ceip demo`` and ``bench/dashboard.py`` make a fleet: machines with distinct random GUIDs,
each with a configuration of its own, using some of the installed products on some days. Everything is
generated from the products' specs, so every report carries declared metrics only and passes the
service's validation (a setting that declares its values takes only those); the same seed makes the same
fleet.

What a newcomer should see in it, so each panel has something to tell:

- three versions: an old one a few machines keep, the current one, and a new one rolled out from the
  first third of the range on;
- the new version is slower on one timing (the regression to find), a little faster on another, and brings
  a problem of its own, while the most common problem of the older versions is mostly fixed in it;
- problems that hit many machines once, and one that hits a few machines very often;
- features adopted widely and others rarely, and the labels of a feature adopted unevenly;
- timings that differ by metric, by version and by machine (fewer CPUs: slower);
- a few machines that opt out during the range (:meth:`Fleet.deletions`), so opt-outs are not empty.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from attrs import frozen

from ceip_core.records import (
    CounterValue,
    DeletionRequest,
    Histogram,
    MetricKind,
    MetricSpec,
    Period,
    Problem,
    ProductSpec,
    Report,
    SystemInfo,
)
from ceip_core.session_data import bucket_of

#: Versions every simulated product ships: an old one a few keep, the current one, and the new one.
VERSIONS = ("2.3", "2.4", "3.0")
#: How much slower the new version is on each product's first timing: the regression to find.
REGRESSION = 1.6
#: How much faster the new version is on each product's second timing (a fix that worked).
SPEEDUP = 0.8
#: How much slower the old version is on every timing than the current one.
OLD_SLOWDOWN = 1.15
#: The share of machines that opt out of every product at some day in the range.
OPT_OUT_SHARE = 0.04
#: How often, per report, the most common problem occurs in the versions before the new one, and in it.
COMMON_RATE = 0.03
FIXED_RATE = 0.002
_EXCEPTIONS = ("TimeoutError", "FileNotFoundError", "KeyError", "PermissionError", "ConnectionResetError")
_MODULES = ("io", "loader", "render", "net", "settings")
_OS = (
    ("Windows", ("10.0.19045", "10.0.22631"), 62),
    ("macOS", ("14.6", "15.1"), 23),
    ("Linux", ("6.1.0", "6.8.0"), 15),
)
#: Values of a numeric setting (a count of workers, of jobs), the common ones weighted up.
_COUNTS = ((1, 2, 4, 8, 16), (14, 30, 32, 18, 6))


@frozen
class Machine:
    """One simulated machine: its identity, configuration, and how it uses each product."""

    guid: str
    system: SystemInfo
    activity: float
    """The chance that it uses a product it has on a given day."""
    products: tuple[str, ...]
    upgrade_day: int
    """The day (counted from the first) it moves from the current to the new version; past the end: never."""
    old: bool
    """It stays on the oldest version."""
    opt_out_day: int | None
    """The day (counted from the first) it opts out of every product, after its last report; None: never."""

    @property
    def speed(self) -> float:
        """How much longer than a machine of 8 logical CPUs it takes to do the same work."""
        return float((8 / (self.system.cpu_logical or 8)) ** 0.3)


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
        opts_out = rng.random() < OPT_OUT_SHARE
        fleet.append(
            Machine(
                guid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                system=_system(rng),
                activity=rng.uniform(0.3, 0.95),
                products=products or (specs[0].id,),
                upgrade_day=rng.randint(days // 3, days + days // 3),
                old=rng.random() < 0.08,
                opt_out_day=rng.randint(days // 3, days - 1) if opts_out else None,
            )
        )
    return fleet


def _signatures(spec: ProductSpec, rng: random.Random) -> list[str]:
    """Problem signatures of one problem metric, most common first: ``KeyError@analyst/render.py:88``."""
    return [f"{rng.choice(_EXCEPTIONS)}@{spec.id}/{rng.choice(_MODULES)}.py:{rng.randint(20, 900)}" for _ in range(5)]


def _weights(n: int, rng: random.Random) -> list[float]:
    """Uneven chances for ``n`` choices (the first most likely): no two labels or values alike."""
    return [rng.uniform(0.75, 1.1) * 0.6**i for i in range(n)]


def _setting(metric: MetricSpec, machine: Machine, weights: list[float], rng: random.Random) -> str | int | bool:
    """A value of a setting that agrees with its spec: one of its declared values, a yes/no for a "Whether"
    setting, a count for one with a unit (never more than the machine's CPUs)."""
    if metric.labels:
        return rng.choices(metric.labels, weights=weights)[0]
    if metric.description.startswith("Whether"):
        return rng.random() < 0.7
    values, chances = _COUNTS
    return min(rng.choices(values, weights=chances)[0], machine.system.cpu_logical or 8)


def _timing(metric: MetricSpec, rng: random.Random) -> tuple[float, float]:
    """A timing metric's median (on a machine of 8 CPUs, in the current version) and spread."""
    top = metric.max_value or 100_000
    return top * 10 ** rng.uniform(-4.5, -2.5), rng.uniform(0.35, 0.8)


def _histogram(metric: MetricSpec, median: float, sigma: float, rng: random.Random) -> Histogram:
    top = (metric.max_value or math.inf) * 0.9
    values = [min(rng.lognormvariate(math.log(median), sigma), top) for _ in range(rng.randint(5, 40))]
    buckets: dict[int, int] = {}
    for v in values:
        buckets[bucket_of(v)] = buckets.get(bucket_of(v), 0) + 1
    return Histogram(metric.name, len(values), sum(values), min(values), max(values), buckets)


def _version_factor(index: int, version: str) -> float:
    """How a version changes a product's ``index``-th timing, against the current version."""
    if version == VERSIONS[0]:
        return OLD_SLOWDOWN
    if version == VERSIONS[-1]:
        return REGRESSION if index == 0 else SPEEDUP if index == 1 else 1.0
    return 1.0


class _Product:
    """How the fleet uses one product: which features each machine adopted, its settings, its problems."""

    def __init__(self, spec: ProductSpec, rng: random.Random) -> None:
        self.spec = spec
        self.counters = [m for m in spec.metrics if m.kind is MetricKind.COUNTER]
        self.label_weights = {m.name: _weights(len(m.labels or ()), rng) for m in self.counters}
        self.timings = [(m, *_timing(m, rng)) for m in spec.metrics if m.kind is MetricKind.HISTOGRAM]
        self.configs = [m for m in spec.metrics if m.kind is MetricKind.CONFIG]
        self.value_weights = {m.name: _weights(len(m.labels or ()), rng) for m in self.configs}
        self.problems = {m.name: _signatures(spec, rng) for m in spec.metrics if m.kind is MetricKind.PROBLEM}
        self.settings: dict[str, dict[str, str | int | float | bool]] = {}
        self.adopted: dict[str, list[tuple[MetricSpec, tuple[str, ...]]]] = {}
        self.noisy: set[str] = set()

    def setup(self, machine: Machine, rng: random.Random) -> None:
        self.settings[machine.guid] = {
            m.name: _setting(m, machine, self.value_weights[m.name], rng) for m in self.configs
        }
        self.adopted[machine.guid] = [
            (m, self._kinds(m, rng)) for i, m in enumerate(self.counters) if rng.random() < 0.95 * 0.7**i
        ]
        if len(self.noisy) < 6:  # a handful of machines that hit one problem over and over
            self.noisy.add(machine.guid)

    def _kinds(self, metric: MetricSpec, rng: random.Random) -> tuple[str, ...]:
        """The labels of a feature one machine uses: at least one, the common ones more often."""
        if not metric.labels:
            return ()
        weights = self.label_weights[metric.name]
        kinds = tuple(label for label, w in zip(metric.labels, weights, strict=True) if rng.random() < min(0.95, w))
        return kinds or (rng.choices(metric.labels, weights=weights)[0],)

    def _counters(self, machine: Machine, rng: random.Random) -> list[CounterValue]:
        counters = []
        for metric, labels in self.adopted[machine.guid]:
            if not metric.labels:
                counters.append(CounterValue(metric.name, 1 + int(rng.expovariate(0.3))))
            for label in labels:  # the kinds of use this machine's person takes to, not always each day
                if rng.random() < 0.5:
                    counters.append(CounterValue(metric.name, 1 + int(rng.expovariate(0.4)), label))
        return counters

    def _problems(self, machine: Machine, version: str, rng: random.Random) -> list[Problem]:
        problems = []
        new = version == VERSIONS[-1]
        for n, (kind, signatures) in enumerate(self.problems.items()):
            common = FIXED_RATE if new and n == 0 else COMMON_RATE * 0.6**n  # fixed in the new version
            if rng.random() < common:
                problems.append(Problem(kind, signatures[0], 1))
            for j, signature in enumerate(signatures[1:4], 1):
                if rng.random() < 0.025 * 0.55**j:
                    problems.append(Problem(kind, signature, 1))
            if new and rng.random() < 0.05 * 0.6**n:  # the new version's own problem
                problems.append(Problem(kind, signatures[4], 1))
            if machine.guid in self.noisy and n == 0:
                problems.append(Problem(kind, f"RecursionError@{self.spec.id}/plugins.py:42", rng.randint(20, 60)))
        return problems

    def report(self, machine: Machine, version: str, end: datetime, rng: random.Random) -> Report:
        histograms = [
            _histogram(m, median * machine.speed * _version_factor(i, version), sigma, rng)
            for i, (m, median, sigma) in enumerate(self.timings)
        ]
        return Report(
            report_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            guid=machine.guid,
            product=self.spec.id,
            product_version=version,
            period=Period(end - timedelta(hours=1), end),
            system=machine.system,
            counters=self._counters(machine, rng),
            histograms=histograms,
            problems=self._problems(machine, version, rng),
            config=self.settings[machine.guid],
        )


class Fleet:
    """The simulated machines of the last ``days`` days (today included) and what they send.

    The same arguments make the same fleet: its reports (:meth:`reports`) and the deletion requests of the
    machines that opted out (:meth:`deletions`, to be sent after the reports, as those machines would).
    """

    def __init__(
        self,
        specs: Sequence[ProductSpec],
        *,
        machines_count: int = 200,
        days: int = 30,
        seed: int = 1,
        now: datetime | None = None,
    ) -> None:
        self.specs = list(specs)
        self.days = days
        self.seed = seed
        self.now = now or datetime.now(UTC)
        self.first = self.now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
        rng = random.Random(seed)
        self.machines = machines(self.specs, machines_count, days, rng) if self.specs else []
        self.products = {spec.id: _Product(spec, rng) for spec in self.specs}
        for machine in self.machines:
            for product in machine.products:
                self.products[product].setup(machine, rng)

    def _version(self, machine: Machine, day: int) -> str:
        if machine.old:
            return VERSIONS[0]
        return VERSIONS[1] if day < machine.upgrade_day else VERSIONS[2]

    def reports(self) -> Iterator[Report]:
        """One report per product on each day a machine uses it, oldest day first."""
        rng = random.Random(self.seed + 1)
        for day in range(self.days):
            for machine in self.machines:
                if machine.opt_out_day is not None and day > machine.opt_out_day:
                    continue
                for product in machine.products:
                    if rng.random() >= machine.activity:
                        continue
                    hours = rng.uniform(8, 20)
                    end = min(self.first + timedelta(days=day, hours=hours), self.now - timedelta(minutes=1))
                    yield self.products[product].report(machine, self._version(machine, day), end, rng)

    def deletions(self) -> list[DeletionRequest]:
        """A deletion request for each product of each machine that opted out."""
        rng = random.Random(self.seed + 2)
        found = []
        for machine in self.machines:
            if machine.opt_out_day is None:
                continue
            when = min(self.first + timedelta(days=machine.opt_out_day, hours=21), self.now - timedelta(minutes=1))
            for product in machine.products:
                found.append(DeletionRequest(str(uuid.UUID(int=rng.getrandbits(128), version=4)), machine.guid,
                                             product, when))  # fmt: skip
        return found


def simulate(
    specs: Sequence[ProductSpec],
    *,
    machines_count: int = 200,
    days: int = 30,
    seed: int = 1,
    now: datetime | None = None,
) -> Iterator[Report]:
    """Reports of a simulated fleet (see :class:`Fleet`): the benchmarks' source of data."""
    return Fleet(specs, machines_count=machines_count, days=days, seed=seed, now=now).reports()

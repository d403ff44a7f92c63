"""``ceip demo``: the whole client path on this machine in a few seconds, for newcomers.

It opts the installed products in (in the state folder given, never silently in the real one), plays a
few sessions of each product through the public recording API with plausible values drawn from each
product's own declarations, and leaves the sealed, scrubbed reports in the spool for ``ceip review``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import ceip_core
from ceip_core.records import MetricKind, ProductSpec


def play_session(spec: ProductSpec, rng: random.Random, version: str = "1.0") -> bool:
    """Record one plausible session of ``spec``'s product; True if a report was queued."""
    rec = ceip_core.recorder(spec.id, version, seal_every=None)
    for metric in spec.metrics:
        labels = list(metric.labels or [None])
        if metric.kind is MetricKind.COUNTER:
            for _ in range(rng.randint(0, 6)):
                rec.feature(metric.name, rng.choice(labels))
        elif metric.kind is MetricKind.HISTOGRAM:
            ceiling = min(metric.max_value or 10_000.0, 10_000.0)
            for _ in range(rng.randint(1, 20)):
                rec.observe(metric.name, rng.lognormvariate(3, 1) % ceiling, rng.choice(labels))
        elif metric.kind is MetricKind.PROBLEM and rng.random() < 0.3:
            rec.problem(f"TimeoutError@{spec.id.replace('-', '_')}/io.py:{rng.choice([41, 88, 120])}", metric.name)
        elif metric.kind is MetricKind.CONFIG:
            rec.config(metric.name, rng.choice(["light", "dark", True, 4]))
    return rec.close()


def run(specs: Iterable[ProductSpec], sessions: int, seed: int = 1) -> int:
    """Play ``sessions`` sessions of every product; returns how many were played."""
    rng = random.Random(seed)
    played = 0
    for spec in specs:
        for i in range(sessions):
            play_session(spec, rng, version=f"1.{i % 2}")
            played += 1
    return played

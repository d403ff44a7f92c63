"""Batch items and bodies for the service tests, built from the records so they are valid by construction."""

from __future__ import annotations

import gzip
import socket
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import orjson
from ceip_sample import OTHER, SPEC

from ceip_core import wire
from ceip_core.records import (
    Category,
    CounterValue,
    DeletionRequest,
    Histogram,
    MetricKind,
    MetricSpec,
    Period,
    Problem,
    ProcessSession,
    Report,
    SystemInfo,
)
from ceip_core.service.config import AdmissionLimits, Declarations, ServiceConfig


def jsonable(item: Report | DeletionRequest) -> dict[str, Any]:
    """An item as decoded JSON, exactly as a client would send it."""
    result: dict[str, Any] = orjson.loads(wire.encode_item(item))
    return result


def report(
    guid: str | None = None,
    *,
    product: str = "sample",
    version: str = "1.0",
    counters: dict[str, int] | None = None,
    problems: dict[str, int] | None = None,
    timings: dict[str, list[int]] | None = None,
    config: dict[str, str | int | float | bool] | None = None,
    os: str = "Linux",
    end: datetime | None = None,
) -> dict[str, Any]:
    """A report item as the wire carries it. ``timings`` maps a metric to ``{bucket: count}`` pairs as a list."""
    end = end or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    buckets = {name: dict(enumerate(counts)) for name, counts in (timings or {}).items()}
    item = Report(
        report_id=str(uuid.uuid4()),
        guid=guid or str(uuid.uuid4()),
        product=product,
        product_version=version,
        period=Period(end - timedelta(hours=1), end),
        system=SystemInfo(
            cpu_logical=8, memory_bucket="8-16 GiB", os=os, arch="x86_64", features={"bluetooth": "present"}
        ),
        counters=[CounterValue(name, n) for name, n in (counters or {"open_file": 1}).items()],
        histograms=[
            Histogram(name, sum(b.values()), float(sum(b.values())), 1.0, 2.0, {i: n for i, n in b.items() if n})
            for name, b in buckets.items()
        ],
        problems=[Problem("error", signature, n) for signature, n in (problems or {}).items()],
        config=config if config is not None else {"theme": "dark"},
        sessions=[ProcessSession("sample-app", end - timedelta(minutes=30), 60.0)] if product == "sample" else [],
    )
    return jsonable(item)


def deletion(guid: str, product: str = "sample") -> dict[str, Any]:
    return jsonable(
        DeletionRequest(request_id=str(uuid.uuid4()), guid=guid, product=product, requested=datetime.now(UTC))
    )


def withdrawing(guid: str, *categories: Category) -> dict[str, Any]:
    """A deletion request for some categories of the machine's data (a withdrawal of consent to them)."""
    request = DeletionRequest(str(uuid.uuid4()), guid, "sample", datetime.now(UTC), categories=categories)
    return jsonable(request)


def body(*items: dict[str, Any], schema: int = 1) -> bytes:
    """A gzip batch body carrying ``items``."""
    return gzip.compress(orjson.dumps({"schema": schema, "items": list(items)}), mtime=0)


GZIP = {"Content-Encoding": "gzip", "Content-Type": wire.CONTENT_TYPE}

ALLOWLIST = {"sample": frozenset({"sample-app"}), "other": frozenset({"other-app"})}
TOKEN = "test-token-00000001"


def config(**limits: Any) -> ServiceConfig:
    """The service configuration the tests use: products ``sample`` and ``other`` (declared by the fixture
    plugin ``ceip_sample``), k = 5."""
    return ServiceConfig(allowlist=ALLOWLIST, limits=AdmissionLimits(**limits), declarations=DECLARATIONS)


DECLARATIONS = Declarations.of([], [SPEC, OTHER])


def declaring(
    counters: Sequence[str] = (), configs: Sequence[str] = (), histograms: Sequence[str] = (), **limits: Any
) -> ServiceConfig:
    """The test configuration with ``sample`` declaring these metrics besides its own."""
    extra = [MetricSpec(n, MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "A counter.") for n in counters]
    extra += [MetricSpec(n, MetricKind.CONFIG, "value", Category.CONFIGURATION, "A setting.") for n in configs]
    extra += [MetricSpec(n, MetricKind.HISTOGRAM, "ms", Category.PERFORMANCE, "A timing.") for n in histograms]
    spec = attrs.evolve(SPEC, metrics=(*SPEC.metrics, *extra))
    return attrs.evolve(config(**limits), declarations=Declarations.of([], [spec, OTHER]))


def specs_file(folder: Path) -> Path:
    """A specs file declaring ``sample`` and ``other``, as ``ceip describe --json`` writes it."""
    path = folder / "specs.json"
    path.write_bytes(orjson.dumps(wire.specs_document([SPEC, OTHER])))
    return path


def auth() -> dict[str, str]:
    """Headers that pass the query API's bearer token check."""
    return {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

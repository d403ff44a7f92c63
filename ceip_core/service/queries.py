"""What the vendor asks: problems ranked by distinct machines, feature adoption, configuration
distributions, timing percentiles and participation. One implementation for the query API, ``ceip report``
and (later) the dashboard, so they always show the same numbers.

Every query reads the rollups (``ceip_core.service.rollups``), never raw reports, and returns only
aggregates: no answer contains a GUID or a report. k-anonymity: a group of fewer than ``k`` machines is
never published; configuration values fold into ``"other"``, everything else is hidden and counted in
``hidden``. Deletion requests per day are published as they are: a count of opt-outs holds nothing about
any machine (what the machine had sent is gone).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from attrs import frozen

from ceip_core.recording import BUCKETS_PER_OCTAVE, ZERO_BUCKET
from ceip_core.service.rollups import DAY_S
from ceip_core.service.storage import Storage

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
#: Reports a query folds before it answers, at most (the committer keeps the backlog around this size).
CATCH_UP_LIMIT = 20_000
_CATCH_UP_STEP = 5000


class QueryError(ValueError):
    """A query parameter that cannot be used; the message says which and what is expected."""


def parse_day(text: str, name: str) -> int:
    """A day (``2026-11-22``) or a timestamp with offset, as days since 1970-01-01 (UTC)."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text).toordinal() - date(1970, 1, 1).toordinal()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name}={text!r}: expected a date like 2026-11-22 or an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise QueryError(f"{name}={text!r}: a timestamp needs a UTC offset, e.g. 2026-11-22T12:00:00+00:00")
    return int(moment.timestamp() // DAY_S)


def day_text(day: int) -> str:
    return date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()


def _time_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@frozen
class Filters:
    """Which reports a query looks at: all of them unless narrowed."""

    product: str | None = None
    version: str | None = None
    since: int | None = None
    """First day included (days since the epoch)."""
    until: int | None = None
    """Last day included."""

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        """From query parameters ``product``, ``version``, ``since`` and ``until``."""
        since, until = params.get("since"), params.get("until")
        return cls(
            product=params.get("product") or None,
            version=params.get("version") or None,
            since=parse_day(since, "since") if since else None,
            until=parse_day(until, "until") if until else None,
        )

    def where(self, *, version: bool = True) -> str:
        """The SQL condition, with ``:product``, ``:version``, ``:since`` and ``:until`` parameters."""
        terms = ["1 = 1"]
        if self.product is not None:
            terms.append("product = :product")
        if version and self.version is not None:
            terms.append("version = :version")
        if self.since is not None:
            terms.append("day >= :since")
        if self.until is not None:
            terms.append("day <= :until")
        return " AND ".join(terms)

    def params(self) -> dict[str, Any]:
        found = {"product": self.product, "version": self.version, "since": self.since, "until": self.until}
        return {k: v for k, v in found.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "version": self.version,
            "since": None if self.since is None else day_text(self.since),
            "until": None if self.until is None else day_text(self.until),
        }


async def catch_up(storage: Storage) -> None:
    """Fold queued reports into the rollups, so an answer includes every acknowledged report.

    Bounded, so a query under sustained overload still answers in time: the group committer folds in
    the background and forces folding once the backlog passes the same size, so normally nothing is left.
    """
    for _ in range(CATCH_UP_LIMIT // _CATCH_UP_STEP):
        if not await storage.roll_up(_CATCH_UP_STEP, wait=True):
            return


def _answer(name: str, rows: list[dict[str, Any]], hidden: int, k: int, filters: Filters) -> dict[str, Any]:
    return {name: rows, "hidden": hidden, "k": k, "filters": filters.describe()}


async def problems(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Problems ranked by distinct machines, then occurrences, with first/last seen and versions affected."""
    await catch_up(storage)
    where, params = filters.where(), filters.params()
    found = await storage.query(
        "SELECT product, kind, signature, COUNT(DISTINCT guid) AS machines, SUM(occurrences) AS occurrences, "
        f"MIN(first_seen), MAX(last_seen) FROM problem_days WHERE {where} GROUP BY product, kind, signature "
        "ORDER BY machines DESC, occurrences DESC, product, kind, signature",
        params,
    )
    versions: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for product, kind, signature, version in await storage.query(
        f"SELECT DISTINCT product, kind, signature, version FROM problem_days WHERE {where} ORDER BY version", params
    ):
        versions[product, kind, signature].append(version)
    rows = [
        {
            "product": product,
            "kind": kind,
            "signature": signature,
            "machines": machines,
            "occurrences": occurrences,
            "first_seen": _time_text(first),
            "last_seen": _time_text(last),
            "versions": versions[product, kind, signature],
        }
        for product, kind, signature, machines, occurrences, first, last in found
        if machines >= k
    ]
    return _answer("problems", rows, len(found) - len(rows), k, filters)


async def _active(storage: Storage, filters: Filters) -> dict[str, int]:
    found = await storage.query(
        f"SELECT product, COUNT(DISTINCT guid) FROM machine_days WHERE {filters.where()} GROUP BY product",
        filters.params(),
    )
    return dict(found)


async def features(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Adoption (the share of active machines that used a feature) and uses per active machine.

    One row per feature (``label`` null) and, for labelled features, one per label.
    """
    await catch_up(storage)
    active = await _active(storage, filters)
    where, params = filters.where(), filters.params()
    found = await storage.query(
        "SELECT product, name, NULL, COUNT(DISTINCT guid), SUM(uses) FROM counter_days "
        f"WHERE {where} GROUP BY product, name",
        params,
    )
    found += await storage.query(
        "SELECT product, name, label, COUNT(DISTINCT guid), SUM(uses) FROM counter_days "
        f"WHERE {where} AND label <> '' GROUP BY product, name, label",
        params,
    )
    rows = []
    for product, name, label, machines, uses in found:
        total = active.get(product, 0)
        if machines < k or total < k:
            continue
        rows.append(
            {
                "product": product,
                "name": name,
                "label": label,
                "machines": machines,
                "active_machines": total,
                "adoption": machines / total,
                "uses": uses,
                "uses_per_active_machine": uses / total,
            }
        )
    rows.sort(key=lambda r: (r["product"], -r["adoption"], r["name"], r["label"] or ""))
    return _answer("features", rows, len(found) - len(rows), k, filters)


async def config(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Distributions of system information (``system.*``) and configuration values (``config.*``).

    Values held by fewer than ``k`` machines fold into ``"other"``; an ``"other"`` (or a whole key) under
    ``k`` machines is hidden.
    """
    await catch_up(storage)
    where, params = filters.where(), filters.params()
    totals = dict(
        ((p, key), n)
        for p, key, n in await storage.query(
            f"SELECT product, key, COUNT(DISTINCT guid) FROM config_days WHERE {where} GROUP BY product, key",
            params,
        )
    )
    values = await storage.query(
        "SELECT product, key, value, COUNT(DISTINCT guid) AS machines FROM config_days "
        f"WHERE {where} GROUP BY product, key, value ORDER BY product, key, machines DESC, value",
        params,
    )
    by_key: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for product, key, value, machines in values:
        by_key[product, key].append((value, machines))
    rows, hidden = [], 0
    for (product, key), found in by_key.items():
        total = totals[product, key]
        shown = [(v, n) for v, n in found if n >= k]
        other = total - sum(n for _, n in shown)
        hidden += len(found) - len(shown)
        if other >= k:
            shown.append(("other", other))
        for value, machines in shown:
            rows.append(
                {"product": product, "key": key, "value": value, "machines": machines, "share": machines / total}
            )
    return _answer("config", rows, hidden, k, filters)


def percentile(buckets: Mapping[int, int], q: float) -> float:
    """The ``q`` quantile estimated from log buckets: the geometric middle of the bucket it falls in."""
    total = sum(buckets.values())
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= q * total:
            return 0.0 if index == ZERO_BUCKET else 2 ** ((index + 0.5) / BUCKETS_PER_OCTAVE)
    return 0.0


async def timings(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """p50, p90 and p99 per timing (histogram) metric and product version."""
    await catch_up(storage)
    where, params = filters.where(), filters.params()
    groups = await storage.query(
        "SELECT product, name, version, COUNT(DISTINCT guid), SUM(count) FROM histogram_days "
        f"WHERE {where} GROUP BY product, name, version ORDER BY product, name, version",
        params,
    )
    buckets: dict[tuple[str, str, str], dict[int, int]] = defaultdict(dict)
    for product, name, version, bucket, count in await storage.query(
        "SELECT product, name, version, bucket, SUM(count) FROM histogram_buckets "
        f"WHERE {where} GROUP BY product, name, version, bucket",
        params,
    ):
        buckets[product, name, version][bucket] = count
    rows = [
        {
            "product": product,
            "name": name,
            "version": version,
            "machines": machines,
            "count": count,
            **{q: percentile(buckets[product, name, version], f) for q, f in QUANTILES.items()},
        }
        for product, name, version, machines, count in groups
        if machines >= k
    ]
    return _answer("timings", rows, len(groups) - len(rows), k, filters)


async def participation(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Active machines per day per product, and deletion requests (opt-outs) per day per product."""
    await catch_up(storage)
    found = await storage.query(
        f"SELECT product, day, COUNT(DISTINCT guid) FROM machine_days WHERE {filters.where()} "
        "GROUP BY product, day ORDER BY product, day",
        filters.params(),
    )
    rows = [{"product": p, "day": day_text(d), "active_machines": n} for p, d, n in found if n >= k]
    deletions = await storage.query(
        f"SELECT product, day, COUNT(*) FROM deletions WHERE {filters.where(version=False)} "
        "GROUP BY product, day ORDER BY product, day",
        {k: v for k, v in filters.params().items() if k != "version"},
    )
    answer = _answer("active", rows, len(found) - len(rows), k, filters)
    answer["deletions"] = [{"product": p, "day": day_text(d), "requests": n} for p, d, n in deletions]
    return answer


QUERIES = {
    "problems": problems,
    "features": features,
    "config": config,
    "timings": timings,
    "participation": participation,
}
"""Every query by name: the API path ``/v1/query/<name>`` and ``ceip report <name>``."""

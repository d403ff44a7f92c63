"""What the vendor asks: problems ranked by distinct machines, their trend per day, feature adoption,
configuration distributions, timing percentiles, participation and versions. One implementation for the
query API, ``ceip report`` and the dashboard, so they always show the same numbers.

Every query reads the rollups (``ceip_core.service.rollups``), never raw reports or per-machine rows:
distinct machines come from ``reach`` (see ``ceip_core.service.reach``), sums from the totals, so a query
costs the same for a hundred machines as for a million. Answers hold aggregates only: no answer contains
a GUID or a report. k-anonymity: a group of fewer than ``k`` machines is never published; configuration
values fold into ``"other"``, everything else is hidden and counted in ``hidden``. Deletion requests per
day are published as they are: a count of opt-outs holds nothing about any machine (what the machine had
sent is gone).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import attrs
from attrs import frozen

from ceip_core.service.rollups import DAY_S
from ceip_core.service.storage import Storage
from ceip_core.session_data import BUCKETS_PER_OCTAVE, ZERO_BUCKET

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
#: Reports a query folds before it answers, at most (the committer keeps the backlog around this size).
CATCH_UP_LIMIT = 20_000
_CATCH_UP_STEP = 5000


class QueryError(ValueError):
    """A query parameter that cannot be used; the message says which and what is expected."""


#: The days a query may name: from the epoch to the last day whose every hour stays in year 9999.
FIRST_DAY = 0
LAST_DAY = date(9999, 12, 30).toordinal() - date(1970, 1, 1).toordinal()


def parse_day(text: str, name: str) -> int:
    """A day (``2026-11-22``) or a timestamp with offset, as days since 1970-01-01 (UTC).

    Days outside ``FIRST_DAY``..``LAST_DAY`` are refused: ``9999-12-31T23:00:00-14:00`` is a valid
    timestamp whose UTC day no ``date`` can hold, and the rollups hold nothing before 1970.
    """
    expected = f"{name}={text!r}: expected a date like 2026-11-22 or an ISO 8601 timestamp"
    try:
        moment = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(expected) from None
    if not isinstance(moment, datetime):
        day = moment.toordinal() - date(1970, 1, 1).toordinal()
    elif moment.tzinfo is None:
        raise QueryError(f"{name}={text!r}: a timestamp needs a UTC offset, e.g. 2026-11-22T12:00:00+00:00")
    else:
        try:
            day = int(moment.timestamp() // DAY_S)
        except (ValueError, OverflowError):  # the UTC moment falls outside what datetime can hold
            raise QueryError(expected) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise QueryError(f"{name}={text!r}: expected a day from {day_text(FIRST_DAY)} to {day_text(LAST_DAY)}")
    return day


def day_text(day: int) -> str:
    return date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()


def _time_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _text(params: Mapping[str, str], name: str) -> str | None:
    """A text parameter, or None if it is empty. One that no stored value can equal is refused rather than
    sent to the database, which may fail on it (PostgreSQL refuses NUL characters)."""
    value = params.get(name) or None
    if value is not None and ("\x00" in value or len(value) > 255):
        raise QueryError(f"{name}: expected text of at most 255 characters, without NUL")
    return value


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
            product=_text(params, "product"),
            version=_text(params, "version"),
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

    def reach(
        self, family: str, *, per_day: bool = False, per_version: bool = False, skip_scans: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """The SQL condition and parameters on ``reach`` rows of ``family``.

        Counts are across versions unless the filters name one or ``per_version`` asks for them by
        version. By default the rows sum to distinct machines over the range; ``per_day``: per day.
        ``skip_scans``: the store's planner may skip-scan a key (``Storage.skip_scans``).
        """
        terms = ["family = :family", "scope = :scope"]
        params: dict[str, Any] = {"family": family, "scope": "version" if per_version or self.version else "all"}
        # The key is (family, scope, version, product, day, ...). SQLite with statistics (ANALYZE, or an
        # operator's PRAGMA optimize), given a condition on product or day but none on version, skip-scans
        # the key's leading columns to reach them, which drops the family and scope equalities from the
        # search: 20-85 ms per family at 5 M reports in bench/dashboard.py, against 1-16 ms searching by the
        # prefix. So a count across versions names the version it is filed under (''), and a count by every
        # version, which cannot, writes product and day there as expressions, which the key cannot serve:
        # they filter the rows of the (family, scope) search. (PostgreSQL's planner keeps the equalities and
        # uses the later columns as index conditions, which the expressions would cost it.)
        # tests/service/test_queries.py holds every query's plan on SQLite to that.
        every_version = self.version is None and params["scope"] == "version"
        product, day = ("product || ''", "day + 0") if every_version and skip_scans else ("product", "day")
        if self.product is not None:
            terms.append(f"{product} = :product")
            params["product"] = self.product
        if not every_version:
            terms.append("version = :version")
            params["version"] = self.version if self.version is not None else ""
        if self.since is not None:
            terms.append(f"{day} >= :since")
            params["since"] = self.since
        if self.until is not None:
            terms.append(f"{day} <= :until")
            params["until"] = self.until
        if not per_day:  # each machine's first active day in the range, only
            terms.append("prev < :first")
            params["first"] = self.since or 0
        return " AND ".join(terms), params

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


async def _reach(
    storage: Storage,
    filters: Filters,
    family: str,
    columns: tuple[str, ...] = (),
    *,
    per_day: bool = False,
    per_version: bool = False,
) -> dict[tuple[Any, ...], int]:
    """Distinct machines of ``family`` by product and ``columns`` (over the range, or ``per_day``)."""
    where, params = filters.reach(family, per_day=per_day, per_version=per_version, skip_scans=storage.skip_scans)
    group = ", ".join(("product", *columns))
    found = await storage.query(
        f"SELECT {group}, SUM(machines) FROM reach WHERE {where} GROUP BY {group} HAVING SUM(machines) > 0", params
    )
    return {tuple(row[:-1]): row[-1] for row in found}


async def _problems(storage: Storage, filters: Filters, k: int) -> tuple[list[dict[str, Any]], int]:
    """The problem rows of at least ``k`` machines, ranked, and how many were hidden."""
    machines = await _reach(storage, filters, "problem", ("name", "value"))
    where, params = filters.where(), filters.params()
    totals = {
        (product, kind, signature): rest
        for product, kind, signature, *rest in await storage.query(
            "SELECT product, kind, signature, SUM(occurrences), MIN(first_seen), MAX(last_seen) FROM problem_totals "
            f"WHERE {where} GROUP BY product, kind, signature",
            params,
        )
    }
    versions: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for product, kind, signature, version in await storage.query(
        f"SELECT DISTINCT product, kind, signature, version FROM problem_totals WHERE {where} ORDER BY version", params
    ):
        versions[product, kind, signature].append(version)
    rows = []
    for (product, kind, signature), n in machines.items():
        if n < k:
            continue
        occurrences, first, last = totals[product, kind, signature]
        rows.append(
            {
                "product": product,
                "kind": kind,
                "signature": signature,
                "machines": n,
                "occurrences": occurrences,
                "first_seen": _time_text(first),
                "last_seen": _time_text(last),
                "versions": versions[product, kind, signature],
            }
        )
    rows.sort(key=lambda r: (-r["machines"], -r["occurrences"], r["product"], r["kind"], r["signature"]))
    return rows, len(machines) - len(rows)


async def problems(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Problems ranked by distinct machines, then occurrences, with first/last seen and versions affected."""
    await catch_up(storage)
    rows, hidden = await _problems(storage, filters, k)
    return _answer("problems", rows, hidden, k, filters)


async def trends(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Machines per day for each problem that ``problems`` shows; days without machines are left out.

    A day of fewer than ``k`` machines has ``machines`` null (counted in ``hidden``): that there were
    some is shown, how many is not.
    """
    await catch_up(storage)
    shown = {(r["product"], r["kind"], r["signature"]) for r in (await _problems(storage, filters, k))[0]}
    per_day = await _reach(storage, filters, "problem", ("name", "value", "day"), per_day=True)
    rows = [
        {"product": p, "kind": kind, "signature": sig, "day": day_text(day), "machines": n if n >= k else None}
        for (p, kind, sig, day), n in sorted(per_day.items())
        if (p, kind, sig) in shown
    ]
    return _answer("trends", rows, sum(r["machines"] is None for r in rows), k, filters)


async def features(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Adoption (the share of active machines that used a feature) and uses per active machine.

    One row per feature (``label`` null) and, for labelled features, one per label.
    """
    await catch_up(storage)
    active = {product: n for (product,), n in (await _reach(storage, filters, "active")).items()}
    where, params = filters.where(), filters.params()
    uses = {
        (product, name, label or None): n
        for product, name, label, n in await storage.query(
            f"SELECT product, name, '', SUM(uses) FROM counter_totals WHERE {where} GROUP BY product, name "
            "UNION ALL "
            f"SELECT product, name, label, SUM(uses) FROM counter_totals WHERE {where} AND label <> '' "
            "GROUP BY product, name, label",
            params,
        )
    }
    found = [((p, name, None), n) for (p, name), n in (await _reach(storage, filters, "feature", ("name",))).items()]
    found += list((await _reach(storage, filters, "feature_label", ("name", "value"))).items())
    rows = []
    for (product, name, label), machines in found:
        total = active.get(product, 0)
        if machines < k or total < k:
            continue
        used = uses.get((product, name, label), 0)
        rows.append(
            {
                "product": product,
                "name": name,
                "label": label,
                "machines": machines,
                "active_machines": total,
                "adoption": machines / total,
                "uses": used,
                "uses_per_active_machine": used / total,
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
    totals = await _reach(storage, filters, "config_key", ("name",))
    by_key: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for (product, key, value), machines in sorted(
        (await _reach(storage, filters, "config", ("name", "value"))).items(), key=lambda kv: (kv[0][:2], -kv[1], kv[0])
    ):
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
    """p50, p90 and p99 per timing (histogram) metric and product version.

    ``count`` is the number of observations the percentiles are estimated from.
    """
    await catch_up(storage)
    machines = await _reach(storage, filters, "timing", ("name", "version"), per_version=True)
    buckets: dict[tuple[str, str, str], dict[int, int]] = defaultdict(dict)
    for product, name, version, bucket, count in await storage.query(
        "SELECT product, name, version, bucket, SUM(count) FROM histogram_buckets "
        f"WHERE {filters.where()} GROUP BY product, name, version, bucket",
        filters.params(),
    ):
        buckets[product, name, version][bucket] = count
    rows = [
        {
            "product": product,
            "name": name,
            "version": version,
            "machines": n,
            "count": sum(buckets[product, name, version].values()),
            **{q: percentile(buckets[product, name, version], f) for q, f in QUANTILES.items()},
        }
        for (product, name, version), n in sorted(machines.items())
        if n >= k
    ]
    return _answer("timings", rows, len(machines) - len(rows), k, filters)


async def participation(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Active machines per day per product, and deletion requests (opt-outs) per day per product."""
    await catch_up(storage)
    found = await _reach(storage, filters, "active", ("day",), per_day=True)
    rows = [{"product": p, "day": day_text(d), "active_machines": n} for (p, d), n in sorted(found.items()) if n >= k]
    deletions = await storage.query(
        f"SELECT product, day, COUNT(*) FROM deletions WHERE {filters.where(version=False)} "
        "GROUP BY product, day ORDER BY product, day",
        {k: v for k, v in filters.params().items() if k != "version"},
    )
    answer = _answer("active", rows, len(found) - len(rows), k, filters)
    answer["deletions"] = [{"product": p, "day": day_text(d), "requests": n} for p, d, n in deletions]
    return answer


async def versions(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Active machines per product (``version`` null) and per product version, over the range."""
    await catch_up(storage)
    every = attrs.evolve(filters, version=None)
    found = [((p, None), n) for (p,), n in (await _reach(storage, every, "active")).items()]
    found += list((await _reach(storage, filters, "active", ("version",), per_version=True)).items())
    rows = [{"product": p, "version": v, "machines": n} for (p, v), n in found if n >= k]
    rows.sort(key=lambda r: (r["product"], r["version"] is not None, r["version"] or ""))
    return _answer("versions", rows, len(found) - len(rows), k, filters)


def _version_order(version: str) -> tuple[tuple[int, int | str], ...]:
    """Versions in release order as people number them: ``2.9`` before ``2.10``, numbers before words."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|[^\d.\-_+]+", version))


async def problem_versions(storage: Storage, filters: Filters, k: int) -> dict[str, Any]:
    """Machines per product version for each problem that ``problems`` shows, beside that version's active
    machines: a fix that worked shows as a share that drops in the version that has it.

    One row per problem and version of at least ``k`` active machines in the range (the versions that
    ``versions`` lists), in the problems' rank and then release order; ``machines`` 0 is a version none of
    whose machines had the problem. A version where fewer than ``k`` machines had it has ``machines`` and
    ``share`` null (counted in ``hidden``): that some had it is shown, how many is not.
    """
    await catch_up(storage)
    ranked = (await _problems(storage, filters, k))[0]
    active = await _reach(storage, filters, "active", ("version",), per_version=True)
    hit = await _reach(storage, filters, "problem", ("name", "value", "version"), per_version=True)
    by_product: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (product, version), n in sorted(active.items(), key=lambda kv: (kv[0][0], _version_order(kv[0][1]))):
        if n >= k:
            by_product[product].append((version, n))
    rows = []
    for r in ranked:
        product, kind, signature = r["product"], r["kind"], r["signature"]
        for version, total in by_product[product]:
            n = hit.get((product, kind, signature, version), 0)
            shown = n if n == 0 or n >= k else None
            rows.append(
                {
                    "product": product,
                    "kind": kind,
                    "signature": signature,
                    "version": version,
                    "machines": shown,
                    "active_machines": total,
                    "share": None if shown is None else shown / total,
                }
            )
    return _answer("problem_versions", rows, sum(r["machines"] is None for r in rows), k, filters)


QUERIES = {
    "problems": problems,
    "trends": trends,
    "features": features,
    "config": config,
    "timings": timings,
    "participation": participation,
    "versions": versions,
    "problem_versions": problem_versions,
}
"""Every query by name: the API path ``/v1/query/<name>`` and ``ceip report <name>``."""

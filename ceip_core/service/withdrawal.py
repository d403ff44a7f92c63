"""A deletion request for some categories only: what of one machine's data of a product goes, and how.

A person who narrows their consent (``ceip consent out analyst --only performance``) sends a deletion
request naming the categories withdrawn (``DeletionRequest.categories``). The service then deletes, for
that (guid, product), everything of those categories and nothing else, in the same transaction on SQLite
and PostgreSQL (the stores run the statements here):

- the **raw reports** are rewritten without those parts, by the one rule (``records.only_categories``):
  decoded by the ingest decoder, filtered, encoded by the client's encoder, so a rebuild of the rollups
  gives the answers the rollups give after the withdrawal. A report that no longer decodes (quarantined)
  cannot be filtered, so it is deleted whole. A rewritten report keeps its envelope: that the machine ran
  the product version on that day is part of every report, whatever its categories;
- the per-machine rows of the withdrawn problems (``problem_days``) go, and ``problem_totals`` is
  recomputed;
- the feature uses and timing totals (``counter_totals``, ``histogram_buckets``) lose the machine's
  folded uses and timings of withdrawn metrics, read from its raw reports before they are rewritten
  (``storage.totals_removal`` with :meth:`Withdrawal.withdrawn`);
- **reach** loses the machine's entries in every group of a withdrawn metric or configuration value (and
  of the system information, when configuration is withdrawn); its state keeps the rest;
- a **category tombstone** per withdrawn category (below).

Which metric is of which category comes from the product's declarations this service knows; a metric one
of them puts in a withdrawn category, or that none declares, is withdrawn (fail closed). The request is
recorded in ``withdrawals`` (not ``deletions``, which counts opt-outs), so it is applied once.

Each withdrawn category leaves a **category tombstone** (``category_tombstones``): a report of the pair
recorded by then that still claims the category (``categories`` absent or naming it: a copy made before
the narrowing, in an exported bundle say) is refused as the full tombstone refuses one (:func:`stale`).
The client rewrites what it still queues with the narrower categories, so those reports pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from attrs import frozen

from ceip_core import wire
from ceip_core.records import SYSTEM_CATEGORY, Category, ProductSpec, only_categories
from ceip_core.service import reach
from ceip_core.service.validation import Rejection, decode_stored, to_record

#: Requests applied, by id: what makes a repeated request a duplicate.
WITHDRAWALS_DDL = (
    "CREATE TABLE IF NOT EXISTS withdrawals (request_id TEXT PRIMARY KEY, product TEXT NOT NULL, "
    "day BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL)"
)
#: The diagnostics key of a stored report rewritten by a withdrawal: how many parts were taken out.
WITHDRAWN_KEY = "service.withdrawn"

#: Per (guid, product, category withdrawn), the newest such request's ``requested`` time.
CATEGORY_TOMBSTONES_DDL = (
    "CREATE TABLE IF NOT EXISTS category_tombstones (guid TEXT NOT NULL, product TEXT NOT NULL, "
    "category TEXT NOT NULL, requested DOUBLE PRECISION NOT NULL, PRIMARY KEY (guid, product, category))"
)
CATEGORY_TOMBSTONE_SQL = (
    "INSERT INTO category_tombstones (guid, product, category, requested) VALUES (:guid, :product, :category, "
    ":requested) ON CONFLICT (guid, product, category) DO UPDATE SET requested = CASE WHEN excluded.requested > "
    "category_tombstones.requested THEN excluded.requested ELSE category_tombstones.requested END"
)

_MINE = "guid = :guid AND product = :product"
_MY_DAYS = f"day IN (SELECT day FROM machine_days WHERE {_MINE})"
#: Every stored report of the pair, and which of them are quarantined (those are deleted whole).
MY_REPORTS = f"SELECT seq, body FROM reports WHERE {_MINE} AND seq NOT IN (SELECT seq FROM quarantine)"
MY_QUARANTINED = f"SELECT seq FROM reports WHERE {_MINE} AND seq IN (SELECT seq FROM quarantine)"
REWRITE = "UPDATE reports SET body = :body WHERE seq = :seq"
MY_PROBLEMS = f"SELECT day, kind, signature, version FROM problem_days WHERE {_MINE} AND {_MY_DAYS}"
DELETE_PROBLEM = (
    "DELETE FROM problem_days WHERE guid = :guid AND product = :product AND day = :day AND kind = :kind "
    "AND signature = :signature AND version = :version"
)
UPDATE_STATE = "UPDATE reach_state SET runs = :runs WHERE product = :product AND guid = :guid"


@frozen
class Withdrawal:
    """What a deletion request for some categories takes out: everything not of a category in ``keep``."""

    keep: frozenset[Category]
    category_of: Mapping[str, Category]
    """Each metric's category, as the product's declarations say (see the module docstring)."""

    @property
    def categories(self) -> list[Category]:
        """The categories withdrawn, in the enum's order."""
        return [c for c in Category if c not in self.keep]

    def withdrawn(self, name: str) -> bool:
        """Whether the declared metric ``name`` (a counter, timing, problem kind or configuration key) goes."""
        return self.category_of.get(name) not in self.keep

    def group_withdrawn(self, family: str, name: str) -> bool:
        """Whether a reach group (``reach._named``) is about withdrawn data."""
        if family == "active":
            return False
        if family in ("config", "config_key"):
            if name.startswith("config."):
                return self.withdrawn(name.removeprefix("config."))
            return SYSTEM_CATEGORY not in self.keep  # system.*
        return self.withdrawn(name)

    def rewritten(self, body: str) -> str | None:
        """A stored report without the withdrawn parts (``body`` itself if it holds none), or None if it no
        longer decodes and must go whole."""
        item = decode_stored(body.encode())
        if isinstance(item, Rejection):
            return None
        record = to_record(item)
        stripped, n = only_categories(record, self.category_of.get, self.keep)
        had = frozenset(Category) if record.categories is None else frozenset(record.categories)
        if not n and had <= self.keep:
            return body
        diagnostics = dict(stripped.diagnostics)
        if n:
            diagnostics[WITHDRAWN_KEY] = diagnostics.get(WITHDRAWN_KEY, 0) + n
        stripped = attrs.evolve(stripped, categories=had & self.keep, diagnostics=dict(sorted(diagnostics.items())))
        return wire.encode_item(stripped).decode()

    def reach_removal(self, state: reach.State) -> tuple[list[tuple[Any, ...]], reach.State]:
        """The ``reach`` rows (negative counts) taking the machine's withdrawn groups out of its ``state``, and
        the state without them (to store)."""
        gone, kept = state.split(lambda key: self.group_withdrawn(key[0], key[3]))
        deltas = reach.Deltas()
        reach.remove(gone, deltas)
        return reach.rows(deltas), kept


def stale(reports: Iterable[Any], tombstones: Mapping[tuple[str, str], Iterable[tuple[str, float]]]) -> set[str]:
    """The ids of ``reports`` (``storage.NewReport``) recorded before a withdrawal of a category they still
    claim: ``tombstones`` holds, per (guid, product), each withdrawn category's value and ``requested``."""
    found = set()
    for r in reports:
        for category, requested in tombstones.get((r.guid, r.product), ()):
            claimed = r.item.categories
            if (claimed is None or category in claimed) and r.item.period.end.timestamp() <= requested:
                found.add(r.report_id)
    return found


def of(withdrawn: Iterable[Category], declarations: Iterable[ProductSpec]) -> Withdrawal:
    """The withdrawal of the ``withdrawn`` categories, by the product's known ``declarations``."""
    keep = frozenset(Category) - frozenset(withdrawn)
    category_of: dict[str, Category] = {}
    for spec in declarations:
        for metric in spec.metrics:
            if metric.name not in category_of or metric.category not in keep:
                category_of[metric.name] = metric.category
    return Withdrawal(keep, category_of)

"""From raw batch items to per-item results: validate, store once, answer. One path for every way in.

The HTTP handlers (``POST /v1/reports``, ``POST /v1/deletions``) and ``ceip import`` both call
:meth:`Ingest.check` and :meth:`Ingest.store`, so a report carried on a USB stick gets exactly the
validation and de-duplication of one sent over the network. (The handlers rate-limit in between.)

Before it is stored every valid report gets the second pass (``ceip_core.service.screening``): the
published kill switch and sample, the product's declaration, and the client's scrubbers, run again.

:attr:`Ingest.counts` is a plain mapping of what was refused and removed, by reason, since the process
started (docs/operations.md, "Counters"): ``rejected:<reason>`` per refused item,
``scrubbed:<scrubber>.<reason>`` per value the second pass dropped or replaced, ``spec:none-named`` and
``spec:unknown`` per report checked against its product's current declaration because it named none or
one this service does not know, and ``config:reloaded`` / ``config:reload-failed``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ceip_core.plugins import get_plugins
from ceip_core.records import Category
from ceip_core.scrubbing import Scrubber
from ceip_core.service import withdrawal
from ceip_core.service.config import Declarations, LiveConfig, ServiceConfig
from ceip_core.service.groupcommit import GroupCommitter
from ceip_core.service.rollups import DAY_S
from ceip_core.service.screening import screen
from ceip_core.service.storage import Deletion, NewReport, Write
from ceip_core.service.validation import Bounds, Rejection, Valid, check_items, item_id_of
from ceip_core.service.withdrawal import Withdrawal


def guids_of(verdicts: Sequence[Valid | Rejection]) -> dict[str, int]:
    """How many valid items each machine (GUID) has in a batch: what the rate limiter charges."""
    found: dict[str, int] = {}
    for v in verdicts:
        if isinstance(v, Valid):
            found[v.item.guid] = found.get(v.item.guid, 0) + 1
    return found


def _to_write(valid: Valid, received: float, config: ServiceConfig | None = None) -> Write:
    """The storage write for a valid item; ``config`` names the declarations a deletion request for some
    categories is resolved by (without it, no metric's category is known, and all of them go: fail closed)."""
    item = valid.item
    if valid.is_report:
        return NewReport(
            report_id=item.report_id,
            guid=item.guid,
            product=item.product,
            version=item.product_version,
            day=int(item.period.end.timestamp() // DAY_S),
            received=received,
            body=valid.raw.decode(),
            item=item,
        )
    return Deletion(
        request_id=item.request_id,
        guid=item.guid,
        product=item.product,
        day=int(received // DAY_S),
        received=received,
        requested=item.requested.timestamp(),
        withdrawal=_withdrawal(item.categories, item.product, config),
    )


def _withdrawal(categories: Sequence[str] | None, product: str, config: ServiceConfig | None) -> Withdrawal | None:
    """What a deletion request naming ``categories`` takes out (None: everything, as when it names all)."""
    named = frozenset(map(Category, categories)) if categories is not None else frozenset(Category)
    if named >= frozenset(Category):
        return None
    known = config.declarations if config is not None else Declarations()
    specs = [s for s in known.by_digest.values() if s.id == product] + [s for s in [known.current.get(product)] if s]
    return withdrawal.of(named, specs)


def installed_scrubbers() -> tuple[Scrubber, ...]:
    """The scrubbers of the installed plugins, in pipeline order: the ones the client runs."""
    return get_plugins().scrubbers


class Ingest:
    """Validates batch items, screens the reports and stores the good ones through the group committer.

    :param config: the configuration at start; its files are re-read when they change (``LiveConfig``).
    :param scrubbers: the second pass's pipeline (default: the installed plugins' scrubbers).
    :param clock: seconds since the epoch, for the reload poll of :attr:`config`.
    """

    def __init__(
        self,
        config: ServiceConfig,
        committer: GroupCommitter,
        scrubbers: Sequence[Scrubber] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.committer = committer
        self.counts: Counter[str] = Counter()
        """What was refused and removed, by reason (see the module docstring)."""
        self.live = LiveConfig(config, self.counts)
        self.scrubbers = tuple(installed_scrubbers() if scrubbers is None else scrubbers)
        self._clock = clock

    @property
    def config(self) -> ServiceConfig:
        """The configuration in force now."""
        return self.live.current(self._clock())

    def check(self, raws: Sequence[msgspec.Raw], kind: str | None, received: float) -> list[Valid | Rejection]:
        """Validate every item (see ``validation.check_items``) against the service's clock ``received``."""
        config = self.live.current(received)
        verdicts = check_items(raws, kind, Bounds.at(received, config.limits), config.allowlist)
        for verdict in verdicts:
            if isinstance(verdict, Rejection):
                self.counts[f"rejected:{verdict.reason}"] += 1
        return verdicts

    def screen(self, verdicts: Sequence[Valid | Rejection], received: float) -> list[Valid | Rejection]:
        """The second pass over every valid report (``screening.screen``); other verdicts as they were."""
        config = self.live.current(received)
        out: list[Valid | Rejection] = []
        for verdict in verdicts:
            if isinstance(verdict, Valid) and verdict.is_report:
                verdict = screen(verdict, config, self.scrubbers, self.counts)
                if isinstance(verdict, Rejection):
                    self.counts[f"rejected:{verdict.reason}"] += 1
            out.append(verdict)
        return out

    async def store(
        self, raws: Sequence[msgspec.Raw], verdicts: Sequence[Valid | Rejection], received: float
    ) -> list[dict[str, Any]]:
        """Screen the valid reports (:meth:`screen`: after validation and the rate limit, so that a machine
        over its rate costs no scrubbing), store what passes; one result per item, in order:
        ``{"id", "status": accepted|duplicate|rejected, "reason", "detail"}``.

        Raises ``StorageUnavailable`` if the transaction failed: then nothing of the batch is acknowledged.
        """
        verdicts = self.screen(verdicts, received)
        config = self.live.current(received)
        writes = [_to_write(v, received, config) for v in verdicts if isinstance(v, Valid)]
        stored = iter(await self.committer.submit(writes) if writes else [])
        results: list[dict[str, Any]] = []
        for raw, verdict in zip(raws, verdicts, strict=True):
            result: dict[str, Any] = {"id": item_id_of(raw, verdict)}
            if isinstance(verdict, Valid):
                result["status"] = "accepted" if next(stored) else "duplicate"
            else:
                result.update(status="rejected", reason=verdict.reason, detail=verdict.detail)
            results.append(result)
        return results

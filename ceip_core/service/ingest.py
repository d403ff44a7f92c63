"""From raw batch items to per-item results: validate, store once, answer. One path for every way in.

The HTTP handlers (``POST /v1/reports``, ``POST /v1/deletions``) and ``ceip import`` both call
:meth:`Ingest.check` and :meth:`Ingest.store`, so a report carried on a USB stick gets exactly the
validation and de-duplication of one sent over the network. (The handlers rate-limit in between.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from attrs import frozen

from ceip_core.service.config import ServiceConfig
from ceip_core.service.groupcommit import GroupCommitter
from ceip_core.service.rollups import DAY_S
from ceip_core.service.storage import Deletion, NewReport, Write
from ceip_core.service.validation import Bounds, Rejection, Valid, check_items, item_id_of


def guids_of(verdicts: Sequence[Valid | Rejection]) -> dict[str, int]:
    """How many valid items each machine (GUID) has in a batch: what the rate limiter charges."""
    found: dict[str, int] = {}
    for v in verdicts:
        if isinstance(v, Valid):
            found[v.item.guid] = found.get(v.item.guid, 0) + 1
    return found


def _to_write(valid: Valid, received: float) -> Write:
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
    )


@frozen
class Ingest:
    """Validates batch items and stores the good ones through the group committer."""

    config: ServiceConfig
    committer: GroupCommitter

    def check(self, raws: Sequence[msgspec.Raw], kind: str | None, received: float) -> list[Valid | Rejection]:
        """Validate every item (see ``validation.check_items``) against the service's clock ``received``."""
        return check_items(raws, kind, Bounds.at(received, self.config.limits), self.config.allowlist)

    async def store(
        self, raws: Sequence[msgspec.Raw], verdicts: Sequence[Valid | Rejection], received: float
    ) -> list[dict[str, Any]]:
        """One result per item, in order: ``{"id", "status": accepted|duplicate|rejected, "reason", "detail"}``.

        Raises ``StorageUnavailable`` if the transaction failed: then nothing of the batch is acknowledged.
        """
        writes = [_to_write(v, received) for v in verdicts if isinstance(v, Valid)]
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

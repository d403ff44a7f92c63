"""Group commit: the writes of every request waiting at a moment go into one transaction.

A request is answered only after its reports are committed, and a durable commit costs a disk flush;
one flush per request would cap the service at the disk's flush rate. So requests hand their writes to
one committer task and wait; while one transaction commits, the next requests queue up, and the next
transaction takes all of them. Under load transactions grow, with no timer and no added latency when
idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from ceip_core.service.aging import Aging
from ceip_core.service.storage import Storage, Write

log = logging.getLogger(__name__)

#: Most writes in one transaction; a bigger backlog is split so no transaction holds locks for long.
MAX_GROUP = 2000
#: Queued reports beyond which a fold step goes before the next commit (see :class:`GroupCommitter`).
MAX_BACKLOG = 1000


class GroupCommitter:
    """Commits writes for many concurrent callers in shared transactions; folds rollups when the load eases.

    One task does both, and acknowledgements come first while the fold keeps up: queued reports are
    folded into the rollups once no commit has been needed for ``idle_s``, in small steps, so a burst is
    acknowledged at full speed and aggregated just after. Once more than ``max_backlog`` reports wait, a
    fold step goes before the next commit, so under a load the fold cannot keep up with, ingest and fold
    share the process and the fold lag stays bounded (about ``max_backlog`` reports) instead of growing
    with the length of the load. The bound and one commit group fit in what a store holds decoded
    (``storage.MAX_HELD``), so the fold takes them from memory rather than decoding them again. Queries
    fold whatever is still queued before they answer, so they never miss a report.
    """

    def __init__(
        self,
        storage: Storage,
        rollup_batch: int = 500,
        idle_s: float = 0.05,
        max_backlog: int = MAX_BACKLOG,
        aging: Aging | None = None,
    ) -> None:
        """:param aging: what ages data out; its bounded steps run when nothing is pending or queued."""
        self.storage = storage
        self.aging = aging
        self.rollup_batch = rollup_batch
        self.idle_s = idle_s
        self.max_backlog = max_backlog
        self._pending: list[tuple[Sequence[Write], asyncio.Future[list[bool]]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backlog = max_backlog  # unknown at start: reports may be queued from an earlier run

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Commit what is pending, then stop (reports not yet folded stay queued for the next run)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._pending:
            await self._commit_pending()

    async def submit(self, writes: Sequence[Write]) -> list[bool]:
        """Apply ``writes`` in a shared durable transaction; the per-write results of ``Storage.write``.

        One submission is never split over two transactions, however large (``ceip import`` relies on it
        to store all of an import or nothing); only the submissions grouped with it are bounded.

        Raises what the storage raised (e.g. ``StorageUnavailable``) if that transaction failed. Cancelling
        the caller does not cancel the transaction: a request that times out may still have been stored,
        which the retry then sees as a duplicate.
        """
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((writes, future))
        self._wake.set()
        return await asyncio.shield(future)

    async def _commit_pending(self) -> None:
        group: list[tuple[Sequence[Write], asyncio.Future[list[bool]]]] = []
        size = 0
        while self._pending and (not group or size + len(self._pending[0][0]) <= MAX_GROUP):
            entry = self._pending.pop(0)
            group.append(entry)
            size += len(entry[0])
        writes = [w for ws, _ in group for w in ws]
        try:
            results = await self.storage.write(writes)
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self._backlog += sum(results)
        at = 0
        for ws, future in group:
            if not future.done():
                future.set_result(results[at : at + len(ws)])
            at += len(ws)

    async def _fold(self) -> None:
        try:
            folded = await self.storage.roll_up(self.rollup_batch)
        except Exception:
            log.exception("folding reports into the rollups failed; trying again after the next commit")
            self._backlog = 0
            return
        # A short step emptied the queue; a full one leaves (about) the rest.
        self._backlog = max(self._backlog - folded, 1) if folded == self.rollup_batch else 0

    async def _age(self) -> None:
        assert self.aging is not None
        try:
            await self.aging.step()
        except Exception:
            log.exception("aging data out failed; trying again later")
            self.aging.postpone()

    def _aging_wait(self) -> float | None:
        """Seconds until aging is due (it is looked at again then), or None without aging."""
        return None if self.aging is None else max(self.aging.wait(), self.idle_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_commit = -self.idle_s
        while True:
            if self._backlog > self.max_backlog:  # behind: the fold goes first, so the lag stays bounded
                await self._fold()
                continue
            if self._pending:
                await self._commit_pending()
                last_commit = loop.time()
                continue
            quiet = loop.time() - last_commit
            if self._backlog and quiet >= self.idle_s:
                await self._fold()
                continue
            if self.aging is not None and self.aging.due() and quiet >= self.idle_s:
                await self._age()
                continue
            timeout = self.idle_s - quiet if self._backlog else self._aging_wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()

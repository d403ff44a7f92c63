"""The process observer (built-in collector): sessions of allowlisted executables, seen from outside.

What it reads, and nothing more:

- of every process on the machine, only its short name as the kernel keeps it (``/proc/<pid>/comm``,
  at most 15 characters). No ``psutil.Process`` is made for a process whose name is not an allowlisted
  executable's. psutil's ``process_iter(attrs=["name"])`` is avoided on purpose: on POSIX, psutil's
  ``name()`` reads the *command line* of every process whose name is 15 characters or longer, and
  ``process_iter`` keeps a ``Process`` object, with what it read, for every process on the machine.
- of a process with an allowlisted name: its start time and, only if the allowlist gives a path pattern
  or a hash for that name, the path of its executable (and the SHA-256 of that file);
- of a process that matched (observed): CPU time and resident memory, in one ``oneshot()`` per poll,
  and when it has ended, its exit status, while the kernel still keeps it.

It never calls ``cmdline()``, ``environ()``, ``username()`` or ``open_files()`` on any process.

How a session ended is known only while the ended process is a zombie, i.e. before its parent collects
the exit status: the kernel then shows the status in ``/proc/<pid>/stat`` to processes allowed to inspect
it (the same user, or root). Exit code 0, or a stop asked for with SIGTERM, SIGINT or SIGHUP, is
``normal``; any other exit code or signal is ``crashed``. A process that is gone before a poll sees it
as a zombie (a shell or desktop usually collects its children at once) ended ``unknown``. Durations are
accurate to one polling interval, and a process that ends before any poll saw it running is not seen.

Linux only for now: elsewhere the observer logs once that it cannot observe, and observes nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psutil

from ceip_core.allowlist import Entry
from ceip_core.collectors import CollectContext, Collector, Observation, SessionObserved
from ceip_core.hookspecs import hookimpl
from ceip_core.records import EndKind, ProcessSession

log = logging.getLogger(__name__)

#: The kernel keeps the first 15 bytes of a process's name (TASK_COMM_LEN - 1).
COMM_LEN = 15
#: Signals that ask a process to stop: ending by one of them is a normal end, not a crash.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: Field 52 of /proc/<pid>/stat, the exit status in waitpid(2) form (Linux 3.5 and later), counted
#: among the fields after the process name, which start at field 3.
_EXIT_CODE_FIELD = 52 - 3

SUPPORTED = sys.platform.startswith("linux")


def process_names() -> Iterator[tuple[int, str]]:
    """``(pid, short name)`` of every process: the one thing the observer reads of every process."""
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/comm", "rb") as handle:
                name = handle.read().rstrip(b"\n")
        except OSError:  # gone meanwhile
            continue
        yield pid, name.decode("utf-8", "replace")


def end_kind(pid: int) -> EndKind:
    """How the zombie ``pid`` ended, from the exit status the kernel keeps until its parent collects it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        status = int(fields[_EXIT_CODE_FIELD])
    except (OSError, IndexError, ValueError):
        return EndKind.UNKNOWN
    signo, code = status & 0x7F, (status >> 8) & 0xFF
    if signo:
        return EndKind.NORMAL if signo in STOP_SIGNALS else EndKind.CRASHED
    return EndKind.NORMAL if code == 0 else EndKind.CRASHED


@dataclass
class _Tracked:
    """One observed process: its handle, the allowlist entry it matched, and what was measured so far."""

    proc: psutil.Process
    entry: Entry
    started: float
    last_alive: float
    cpu_s: float | None = None
    peak_rss: int | None = None

    def session(self, ended: EndKind, until: float) -> SessionObserved:
        return SessionObserved(
            self.entry.product,
            ProcessSession(
                executable=self.entry.name,
                started=datetime.fromtimestamp(round(self.started), UTC),  # a second is precise enough
                duration_s=round(max(0.0, until - self.started), 3),
                cpu_s=None if self.cpu_s is None else round(self.cpu_s, 3),
                peak_rss_bytes=self.peak_rss,
                ended=ended,
            ),
        )


class ProcessObserver:
    """Follows the processes of allowlisted executables from start to end (see the module docstring).

    Each :meth:`observe` returns a ``running`` snapshot of every observed process, and, once, the ended
    session of every process that ended since the previous call.
    """

    name = "process-observer"
    interval_s = 2.0

    def __init__(self) -> None:
        self.tracked: dict[int, _Tracked] = {}
        """The observed processes by pid: the only processes the observer holds anything about."""
        self._hashes: dict[tuple[int, int, int, int], str] = {}
        self._warned = False
        self._psutil_boot = psutil.boot_time() if SUPPORTED else 0.0

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        import asyncio  # here, not at the top: sealing in a product's process loads this module

        return await asyncio.to_thread(self.observe, ctx.executables)

    def observe(self, entries: Iterable[Entry], now: float | None = None) -> list[SessionObserved]:
        """One pass over the machine's processes, watching only ``entries``."""
        if not SUPPORTED:
            if not self._warned:
                log.warning("the process observer supports Linux only; observing nothing on %s", sys.platform)
                self._warned = True
            return []
        now = time.time() if now is None else now
        # psutil dates a process from the boot time in whole seconds (/proc/stat); the boot clock makes
        # start times, and so durations, as exact as the kernel's clock ticks.
        clock_offset = now - time.clock_gettime(time.CLOCK_BOOTTIME) - self._psutil_boot
        allowed = dict.fromkeys(entries)  # in the allowlist's order: the first entry a process matches counts
        by_comm: dict[str, list[Entry]] = {}
        for entry in allowed:
            by_comm.setdefault(entry.name[:COMM_LEN], []).append(entry)
        # Forget at once what is no longer allowed (an opt-out, an allowlist change): nothing is reported.
        for pid in [pid for pid, t in self.tracked.items() if t.entry not in allowed]:
            del self.tracked[pid]
        present: set[int] = set()
        if by_comm:
            for pid, comm in process_names():
                candidates = by_comm.get(comm)
                if candidates is None:
                    continue
                present.add(pid)
                if pid not in self.tracked:
                    self._start(pid, candidates, now, clock_offset)
        out: list[SessionObserved] = []
        for pid, tracked in list(self.tracked.items()):
            seen = (
                self._sample(tracked, now) if pid in present else tracked.session(EndKind.UNKNOWN, tracked.last_alive)
            )
            if seen.session.ended is not EndKind.RUNNING:
                del self.tracked[pid]
            out.append(seen)
        if len(self._hashes) > 256:
            self._hashes.clear()
        return out

    # -- one process ----------------------------------------------------------------------------------

    def _start(self, pid: int, candidates: list[Entry], now: float, clock_offset: float) -> None:
        """Track ``pid`` if it matches one of ``candidates`` (same short name); otherwise keep nothing."""
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                started = proc.create_time() + clock_offset
                if proc.status() == psutil.STATUS_ZOMBIE:  # ended before any poll saw it running
                    return
            entry = self._match(proc, candidates)
        except psutil.Error:
            return
        if entry is not None:
            self.tracked[pid] = _Tracked(proc, entry, started, now)

    def _match(self, proc: psutil.Process, candidates: list[Entry]) -> Entry | None:
        """The first entry whose path pattern and hash the process's executable satisfies."""
        if all(e.path is None and e.sha256 is None for e in candidates):
            return candidates[0]
        try:
            exe = proc.exe()
        except psutil.AccessDenied:  # another user's process: its executable cannot be checked
            return None
        if not exe:
            return None
        for entry in candidates:
            if entry.path is not None and not fnmatch.fnmatch(exe, entry.path):
                continue
            if entry.sha256 is not None and self._sha256(exe) != entry.sha256:
                continue
            return entry
        return None

    def _sha256(self, path: str) -> str | None:
        """The SHA-256 of the file at ``path``, computed once per version of the file."""
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                digest = self._hashes.get(key)
                if digest is None:
                    digest = self._hashes[key] = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:
            return None
        return digest

    def _sample(self, tracked: _Tracked, now: float) -> SessionObserved:
        """Measure a tracked process that is still listed; its session, running or ended."""
        try:
            if not tracked.proc.is_running():  # the pid now belongs to another process
                return tracked.session(EndKind.UNKNOWN, tracked.last_alive)
            with tracked.proc.oneshot():
                cpu = tracked.proc.cpu_times()  # a zombie keeps its final CPU times
                tracked.cpu_s = cpu.user + cpu.system
                if tracked.proc.status() == psutil.STATUS_ZOMBIE:
                    return tracked.session(end_kind(tracked.proc.pid), now)
                rss = tracked.proc.memory_info().rss
        except psutil.NoSuchProcess:
            return tracked.session(EndKind.UNKNOWN, tracked.last_alive)
        except psutil.AccessDenied:
            return tracked.session(EndKind.RUNNING, now)
        tracked.peak_rss = max(tracked.peak_rss or 0, rss)
        tracked.last_alive = now
        return tracked.session(EndKind.RUNNING, now)


@hookimpl
def ceip_register_collectors(register: Callable[[Collector], None]) -> None:
    register(ProcessObserver())

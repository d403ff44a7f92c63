"""The process observer (built-in collector): sessions of allowlisted executables, seen from outside.

What it reads, and nothing more:

- of every process on the machine, only its short name, as the OS keeps it (see "per platform" below).
  No ``psutil.Process`` is made for a process whose name is not an allowlisted executable's.
  ``psutil.process_iter(attrs=["name"])`` and ``psutil.Process.name()`` are avoided on purpose: on every
  POSIX system, ``psutil.Process.name()`` reads the *command line* of a process whose short name is 15
  characters or longer, and ``process_iter`` keeps a ``Process`` object, with what it read, for every
  process on the machine.
- of a process with an allowlisted name: its start time and, only if the allowlist gives a path pattern
  or a hash for that name, the path of its executable (and the SHA-256 of that file). The path is read
  from the OS's own record (:func:`executable`), never guessed from the command line as
  ``psutil.Process.exe()`` does when the OS refuses or has no path;
- of a process that matched (observed): CPU time and resident memory (on Windows, the working set), in
  one ``oneshot()`` per poll, and, on Linux, when it has ended, its exit status while the kernel keeps it.

It never calls ``cmdline()``, ``environ()``, ``username()`` or ``open_files()`` on any process.

Per platform, two ways to list the names (a :class:`ProcessTable`):

- :class:`ProcTable`, Linux's fast path: ``/proc/<pid>/comm``, at most 15 characters.
- :class:`PsutilTable`, the portable path (every other platform, and on Linux when forced): psutil's
  per-platform implementation object (``psutil._psplatform.Process``, which ``psutil.Process`` wraps),
  whose ``name()`` reads the short name only: on macOS the kernel's ``p_comm`` (``sysctl`` of
  ``KERN_PROC_PID``, at most 16 characters); on Windows the last part of the image path that the kernel
  keeps for the process (``NtQuerySystemInformation``, no handle on the process; the path, which can name
  a user's folder, is read into memory there and only its last part kept); on Linux ``/proc/<pid>/stat``.
  On Windows names are compared without case and without ``.exe``.

How a session ended is known on Linux only, and only while the ended process is a zombie, i.e. before
its parent collects the exit status: the kernel then shows the status in ``/proc/<pid>/stat`` to
processes allowed to inspect it (the same user, or root). Exit code 0, or a stop asked for with SIGTERM,
SIGINT or SIGHUP, is ``normal``; any other exit code or signal is ``crashed``. A process that is gone
before a poll sees it as a zombie (a shell or desktop usually collects its children at once), and every
ended process on the portable path, ended ``unknown``: psutil does not tell another process's exit
status. Durations are accurate to one polling interval, and a process that ends before any poll saw it
running is not seen.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import psutil

from ceip_core.allowlist import Entry
from ceip_core.collectors import CollectContext, Collector, Observation, SessionObserved
from ceip_core.hookspecs import hookimpl
from ceip_core.records import EndKind, ProcessSession

#: How many characters of a process's name the OS keeps, where it truncates them: Linux keeps 15 bytes
#: (TASK_COMM_LEN - 1), macOS 16 (MAXCOMLEN). Windows keeps the whole image name.
NAME_LENGTHS = {"linux": 15, "darwin": 16}
#: Signals that ask a process to stop: ending by one of them is a normal end, not a crash. Linux's
#: numbers (SIGHUP, SIGINT, SIGTERM), as /proc shows them: the ``signal`` module has no SIGHUP on Windows.
STOP_SIGNALS = frozenset({1, 2, 15})
#: Field 52 of /proc/<pid>/stat, the exit status in waitpid(2) form (Linux 3.5 and later), counted
#: among the fields after the process name, which start at field 3.
_EXIT_CODE_FIELD = 52 - 3


def os_family(platform: str = sys.platform) -> str:
    """``linux``, ``darwin``, ``win32`` or the platform itself: the key of the per-platform rules."""
    return "linux" if platform.startswith("linux") else platform


def name_key(name: str, platform: str) -> str:
    """What the names of ``name``'s processes look like, on ``platform``, as the OS lists them: the
    first characters the kernel keeps, or on Windows the name without case and without ``.exe``."""
    if platform == "win32":
        return name.lower().removesuffix(".exe")
    length = NAME_LENGTHS.get(platform)
    return name if length is None else name[:length]


def executable(pid: int) -> str:
    """The path of ``pid``'s executable as the OS records it (``""`` if it records none).

    psutil's platform object, not ``psutil.Process.exe()``: that one reads the command line, to guess a
    path, when the OS refuses the path (another user's process) or has none.

    :raises psutil.Error: the process is gone, or the OS refuses the path.
    """
    return str(psutil._psplatform.Process(pid).exe())


def end_kind(pid: int) -> EndKind:
    """How the zombie ``pid`` ended, from the exit status Linux keeps until its parent collects it."""
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


class ProcessTable(Protocol):
    """The platform-specific part of the observer: what it reads of every process, and what the OS
    tells beyond psutil. Everything else the observer does is the same on every platform."""

    platform: str
    """Whose naming rules apply (:func:`name_key`)."""
    start_error_s: float
    """How far a start time (and so a duration) may be off, by the precision of the OS's clock for it."""

    def names(self) -> Iterator[tuple[int, str]]:
        """``(pid, short name)`` of every process: the one thing the observer reads of every process."""
        ...

    def clock_offset(self, now: float) -> float:
        """What to add to psutil's start times to put them on the clock that gave ``now``."""
        ...

    def end_kind(self, pid: int) -> EndKind:
        """How the ended (zombie) process ``pid`` ended, if the OS tells."""
        ...


class ProcTable:
    """Linux's fast path: names from ``/proc/<pid>/comm``, exact start times, exit statuses of zombies."""

    platform = "linux"
    start_error_s = 0.0  # a clock tick, counted by the tests

    def __init__(self) -> None:
        self._psutil_boot = psutil.boot_time()

    def names(self) -> Iterator[tuple[int, str]]:
        for pid in psutil.pids():
            try:
                with open(f"/proc/{pid}/comm", "rb") as handle:
                    name = handle.read().rstrip(b"\n")
            except OSError:  # gone meanwhile
                continue
            yield pid, name.decode("utf-8", "replace")

    def clock_offset(self, now: float) -> float:
        # psutil dates a process from the boot time in whole seconds (/proc/stat); the boot clock makes
        # start times, and so durations, as exact as the kernel's clock ticks.
        if sys.platform != "linux":
            raise RuntimeError("the /proc table is Linux's")
        return now - time.clock_gettime(time.CLOCK_BOOTTIME) - float(self._psutil_boot)

    def end_kind(self, pid: int) -> EndKind:
        return end_kind(pid)


class PsutilTable:
    """The portable path: psutil alone, reading the short name only (see the module docstring)."""

    def __init__(self, platform: str | None = None) -> None:
        self.platform = os_family() if platform is None else platform
        # On Linux psutil adds the boot time in whole seconds to each start; elsewhere the OS dates
        # processes to the microsecond (macOS) or 100 ns (Windows).
        self.start_error_s = 1.0 if psutil.LINUX else 0.0

    def names(self) -> Iterator[tuple[int, str]]:
        native = psutil._psplatform.Process  # per process: one short-lived object, dropped at once
        for pid in psutil.pids():
            try:
                yield pid, str(native(pid).name())
            except psutil.Error:  # gone meanwhile, or (Windows) a protected process
                continue

    def clock_offset(self, now: float) -> float:
        return 0.0

    def end_kind(self, pid: int) -> EndKind:
        return EndKind.UNKNOWN  # psutil does not tell how another process ended


def process_table() -> ProcessTable:
    """This platform's table: the ``/proc`` fast path on Linux, psutil alone elsewhere."""
    return ProcTable() if sys.platform.startswith("linux") else PsutilTable()


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

    def __init__(self, table: ProcessTable | None = None) -> None:
        self.table = process_table() if table is None else table
        """Where the names come from (tests force :class:`PsutilTable` on Linux)."""
        self.tracked: dict[int, _Tracked] = {}
        """The observed processes by pid: the only processes the observer holds anything about."""
        self._hashes: dict[tuple[int, int, int, int], str] = {}

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        import asyncio  # here, not at the top: sealing in a product's process loads this module

        return await asyncio.to_thread(self.observe, ctx.executables)

    def observe(self, entries: Iterable[Entry], now: float | None = None) -> list[SessionObserved]:
        """One pass over the machine's processes, watching only ``entries``."""
        now = time.time() if now is None else now
        clock_offset = self.table.clock_offset(now)
        allowed = dict.fromkeys(entries)  # in the allowlist's order: the first entry a process matches counts
        by_name: dict[str, list[Entry]] = {}
        for entry in allowed:
            by_name.setdefault(name_key(entry.name, self.table.platform), []).append(entry)
        # Forget at once what is no longer allowed (an opt-out, an allowlist change): nothing is reported.
        for pid in [pid for pid, t in self.tracked.items() if t.entry not in allowed]:
            del self.tracked[pid]
        present: set[int] = set()
        if by_name:
            windows = self.table.platform == "win32"
            for pid, name in self.table.names():
                candidates = by_name.get(name_key(name, "win32") if windows else name)
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
            exe = executable(proc.pid)
        except psutil.Error:  # another user's process (its executable cannot be checked), or gone
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
                    return tracked.session(self.table.end_kind(tracked.proc.pid), now)
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

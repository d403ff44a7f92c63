"""The recording API a product calls in its own process.

Cheap by construction: each call updates an in-memory aggregate (counters, log-bucket histograms,
problem signatures, configuration values) and does nothing else: no disk, no network, no heavy import.
It never raises into the product; a call it cannot honour is counted in the report's diagnostics.
Nothing is kept while the product is not opted in, and an opt-out made by any process on the machine
switches recording off within a fraction of a second (see ``ConsentWatcher``).

On ``close()`` (also on leaving a ``with`` block) the session is sealed into a report, scrubbed and
written to the spool by ``ceip_core.sealing``, which is where the heavy imports happen. At interpreter
exit the session is handed to a sealing process instead (``ceip_core.detached.seal_detached``), so that
the product's exit does not wait for those imports. Before any report is written, whichever process seals
it checks, once, that the recording process is one of the product's declared, allowlisted executables
(``ceip_core.executables``); in any other process (a plain ``python`` script recording as a product)
nothing is kept and the reason is counted. Uploading is left to the agent or a detached uploader: the
product never waits on the network.

This module imports only the standard library; ``python -X importtime`` shows it.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import threading
import time
from pathlib import Path

from ceip_core.lazylog import LazyLogger
from ceip_core.session_data import SessionData as SessionData  # what a seal hands on; importable here too
from ceip_core.session_data import add_value, valid_value

TYPE_CHECKING = False  # typing, dataclasses and logging together cost more than the import budget
if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType
    from typing import Any

log = LazyLogger(__name__)

#: State folders this process spooled reports into; when it exits, their uploads start in the background.
_sealed_here: set[Path] = set()


def _upload_when_exiting(folder: Path, *, now: bool) -> None:
    """Send what this process sealed once it exits ("after the product closes"), or ``now`` if it is already
    exiting. A session handed to a sealing process is that process's to send (``ceip_core.detached``)."""
    if now:
        from ceip_core.detached import upload_after_exit

        upload_after_exit(folder)
        return
    if not _sealed_here:
        atexit.register(_upload_at_exit)
    _sealed_here.add(folder)


def _upload_at_exit() -> None:
    from ceip_core.detached import upload_after_exit

    for folder in sorted(_sealed_here):
        upload_after_exit(folder)


#: Most distinct series (name and label pairs) of each kind one session keeps; more are counted errors.
MAX_SERIES = 1000


class _Shard:
    """One thread's feature counters. Only that thread writes ``uses`` (so ``+= 1`` needs no lock and
    loses nothing, with or without a GIL); a seal reads a copy and keeps it as ``sealed``, so that the
    next seal reports the difference. Nothing is ever swapped away from under a writer."""

    __slots__ = ("sealed", "thread", "uses")

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.uses: dict[Any, int] = {}
        self.sealed: dict[Any, int] = {}


class _ThreadCounters(threading.local):
    """The calling thread's shard, created (and listed for sealing) on the thread's first call."""

    def __init__(self, shards: list[_Shard], lock: threading.Lock) -> None:
        shard = _Shard(threading.current_thread())
        self.uses = shard.uses
        with lock:
            shards.append(shard)


class Recorder:
    """Records one product's use in this process. Create it with :func:`ceip_core.recorder`.

    Exact under concurrency: ``feature()`` counts into the calling thread's own counters, merged at a
    seal; the other calls update shared aggregates under a lock."""

    def __init__(
        self,
        product: str,
        version: str = "",
        *,
        home: str | os.PathLike[str] | None = None,
        seal_every: float | None = 86400.0,
        watch: bool = True,
    ) -> None:
        self.product = product
        self.version = version
        self._home = Path(home) if home is not None else None
        self._lock = threading.Lock()
        self._active = False
        self._epoch: int | None = None
        self._closed = False
        self._refused: str | None = None
        self._checked = False
        self._errors: dict[str, int] = {}
        self._shards: list[_Shard] = []
        self._threads = _ThreadCounters(self._shards, self._lock)  # never touched under the lock
        self._series: set[Any] = set()
        """Every counter series admitted so far (they live as long as the recorder: see ``_Shard``)."""
        self._reset(time.time())
        self._timer: threading.Timer | None = None
        self._seal_every = seal_every
        if not isinstance(product, str) or not isinstance(version, str):
            self._error("invalid_recorder_args")
            return
        try:
            if watch:
                from ceip_core.consent import ConsentWatcher  # standard library only

                self._epoch = ConsentWatcher.shared(self.folder).subscribe(self).get(product)
                self._active = self._epoch is not None
        except Exception:
            log.exception("ceip: cannot read consent for %s; not recording", product)
            self._active = False
        atexit.register(self._close_at_exit)
        self._arm_timer()

    @property
    def folder(self) -> Path:
        """The state folder this recorder seals into."""
        if self._home is None:
            from ceip_core.statedb import state_dir

            self._home = state_dir()
        return self._home

    @property
    def active(self) -> bool:
        """True while the product is opted in, this process is one of its executables, and the recorder
        is open."""
        return self._active

    @property
    def refused(self) -> str | None:
        """Why this process may not record for the product (``ceip_core.executables``), or None. Known
        from the first seal on."""
        return self._refused

    def _may_seal(self) -> bool:
        """Whether this process is one of the product's declared, allowlisted executables: checked once, at
        the first seal, where the plugins and the allowlist are loaded anyway (the recording path stays
        free of them). A refusal discards what was recorded, stops recording and is counted once in the
        spool's drop counts, under its reason. Never raises."""
        if not self._checked:
            self._checked = True
            try:
                from ceip_core import executables

                self._refused = executables.refusal(self.product, self.folder)
            except Exception:
                log.exception("ceip: cannot check this process's executable for %s; not recording", self.product)
                self._refused = "process-check-failed"
            if self._refused is not None:
                self._active = False
                from ceip_core import executables

                executables.count_refusal(self.folder, self.product, self._refused)
        return self._refused is None

    # -- recording (the hot path) -------------------------------------------------------------------

    def feature(self, name: str, label: str | None = None) -> None:
        """Count one use of a feature, e.g. ``rec.feature("export", "pdf")``."""
        if self._active:
            try:
                self._threads.uses[name if label is None else (name, label)] += 1
            except KeyError:
                self._first_use(name, label)
            except Exception:
                self._error("invalid_call")

    def count(self, name: str, n: int = 1, label: str | None = None) -> None:
        """Add ``n`` (a non-negative int) to a counter, e.g. packages built."""
        if not self._active:
            return
        if type(n) is not int or n < 0:
            self._error("invalid_value")
            return
        key = name if label is None else (name, label)
        try:
            with self._lock:
                if key in self._extra:
                    self._extra[key] += n
                elif key in self._series or self._valid_series(name, label, self._series):
                    self._series.add(key)
                    self._extra[key] = n
        except Exception:
            self._error("invalid_call")

    def observe(self, name: str, value: float, label: str | None = None) -> None:
        """Add a value (non-negative, finite) to a histogram, e.g. a duration in ms or a size in bytes."""
        if not self._active:
            return
        if not valid_value(value):
            self._error("invalid_value")
            return
        key = (name, label)
        try:
            with self._lock:
                h = self._hists.get(key)
                if h is None:
                    if not self._valid_series(name, label, self._hists.keys()):
                        return
                    h = self._hists[key] = [0, 0.0, value, value, {}]
                add_value(h, value)
        except Exception:
            self._error("invalid_call")

    def timed(self, name: str, label: str | None = None) -> _Timer:
        """Time a ``with`` block into the histogram ``name``, in milliseconds."""
        return _Timer(self, name, label)

    def problem(self, signature: str, kind: str = "error") -> None:
        """Count one occurrence of a problem, e.g. ``rec.problem("ValueError@render.py:88")``."""
        if not self._active:
            return
        if not isinstance(signature, str) or not isinstance(kind, str):
            self._error("invalid_name")
            return
        key = (kind, signature)
        try:
            with self._lock:
                if key in self._problems:
                    self._problems[key] += 1
                elif len(self._problems) < MAX_SERIES:
                    self._problems[key] = 1
                else:
                    self._errors["too_many_series"] = self._errors.get("too_many_series", 0) + 1
        except Exception:
            self._error("invalid_call")

    def config(self, name: str, value: str | int | float | bool) -> None:
        """Set a configuration value; the last one set wins."""
        if not self._active:
            return
        if not isinstance(name, str) or type(value) not in (str, int, float, bool):
            self._error("invalid_value")
            return
        if isinstance(value, float) and not math.isfinite(value):
            self._error("invalid_value")
            return
        with self._lock:
            if name in self._config or len(self._config) < MAX_SERIES:
                self._config[name] = value
            else:
                self._errors["too_many_series"] = self._errors.get("too_many_series", 0) + 1

    # -- the slow paths of recording ------------------------------------------------------------------

    def _first_use(self, name: Any, label: Any) -> None:
        """A series' first use in this thread: admit it (once per recorder), then count it."""
        try:
            uses = self._threads.uses
            key = name if label is None else (name, label)
            with self._lock:
                if key not in self._series:
                    if not self._valid_series(name, label, self._series):
                        return
                    self._series.add(key)
            uses[key] = uses.get(key, 0) + 1
        except Exception:
            self._error("invalid_call")

    def _valid_series(self, name: Any, label: Any, existing: Any) -> bool:
        """Check a new series (called under the lock); count why it is refused."""
        reason = None
        if not isinstance(name, str):
            reason = "invalid_name"
        elif label is not None and not isinstance(label, str):
            reason = "invalid_label"
        elif len(existing) >= MAX_SERIES:
            reason = "too_many_series"
        if reason:
            self._errors[reason] = self._errors.get(reason, 0) + 1
            return False
        return True

    def _error(self, reason: str) -> None:
        """Count a call that could not be honoured (benign races may lose a count; never raises)."""
        with contextlib.suppress(Exception):
            self._errors[reason] = self._errors.get(reason, 0) + 1

    # -- sealing ------------------------------------------------------------------------------------

    def _reset(self, now: float) -> None:
        """Start a new period (called under the lock, or before any other thread can see the recorder)."""
        self._start = now
        self._extra: dict[Any, int] = {}
        self._hists: dict[tuple[Any, Any], list[Any]] = {}
        self._problems: dict[tuple[str, str], int] = {}
        self._config: dict[str, Any] = {}
        self._errors = {}

    def _take(self) -> SessionData:
        """Swap in empty aggregates and return what was recorded since the last seal."""
        now = time.time()
        counters: dict[tuple[Any, Any], int] = {}
        with self._lock:
            for shard in list(self._shards):
                alive = shard.thread.is_alive()  # before the copy: a dead thread's counts are final
                uses = shard.uses.copy()
                for key, n in uses.items():
                    if n != shard.sealed.get(key, 0):
                        k = key if isinstance(key, tuple) else (key, None)
                        counters[k] = counters.get(k, 0) + n - shard.sealed.get(key, 0)
                shard.sealed = uses
                if not alive:
                    self._shards.remove(shard)
            extra, hists = self._extra, self._hists
            data = SessionData(
                self.product,
                self.version,
                self._start,
                now,
                problems=self._problems,
                config=self._config,
                errors=self._errors,
                consent_epoch=self._epoch,
            )
            self._reset(now)
        for key, n in extra.items():
            k = key if isinstance(key, tuple) else (key, None)
            counters[k] = counters.get(k, 0) + n
        data.counters = counters
        data.histograms = hists
        return data

    def flush(self, *, detach: bool = False) -> bool:
        """Seal what was recorded so far into a report in the spool, and start a new period.
        Returns True if a report was queued (with ``detach``: handed to a sealing process). Never raises."""
        try:
            data = self._take()
            if not self._active or data.is_empty():
                return False
            if detach:
                # Standard library only, and light. The sealer checks this process's executable, which
                # costs the plugins' import: the product's exit does not wait for that either.
                from ceip_core.detached import seal_detached
                from ceip_core.executables import this_process

                if seal_detached(data, self.folder, this_process()):
                    return True
            if not self._may_seal():
                return False
            from ceip_core.sealing import seal_session  # the heavy part, loaded on first seal

            sealed = seal_session(data, self.folder)
            if sealed:
                _upload_when_exiting(self.folder, now=detach)
            return sealed
        except Exception:
            log.exception("ceip: sealing a session of %s failed", self.product)
            return False

    def close(self, *, detach: bool = False) -> bool:
        """Seal the session and stop recording. Safe to call more than once. Never raises. With
        ``detach`` the session goes to a process of its own that seals it (see
        ``ceip_core.detached.seal_detached``), so that the caller does not wait for it."""
        if self._closed:
            return False
        try:
            sealed = self.flush(detach=detach)
        finally:
            self._closed = True
            self._active = False
            if self._timer is not None:
                self._timer.cancel()
            atexit.unregister(self._close_at_exit)
        return sealed

    def _close_at_exit(self) -> None:
        """At interpreter exit the product is done: it must not wait for the seal."""
        self.close(detach=True)

    def _arm_timer(self) -> None:
        """Long-running products (servers) seal a report every ``seal_every`` seconds."""
        if self._seal_every and not self._closed:
            self._timer = threading.Timer(self._seal_every, self._periodic_seal)
            self._timer.daemon = True
            self._timer.start()

    def _periodic_seal(self) -> None:
        self.flush()
        self._arm_timer()

    def consent_changed(self, allowed: Mapping[str, int]) -> None:
        """Called by the consent watcher. Any change of this product's consent (an opt-out, an opt-out
        and a new opt-in, other categories) discards what was recorded under the old consent; recording
        goes on only while the product is allowed. The recorder knows no categories (it loads no specs):
        sealing applies them."""
        epoch = allowed.get(self.product)
        if self._closed or epoch == self._epoch:
            return
        self._active = False
        with self._lock:
            for shard in self._shards:
                shard.sealed = shard.uses.copy()  # what was counted so far is discarded, not reported
            self._reset(time.time())
            self._epoch = epoch
        self._active = epoch is not None and self._refused is None

    # -- context manager ----------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and tb is not None:
            # A crash of the product's own code is worth knowing about: name the innermost frame.
            while tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            self.problem(f"{exc_type.__name__ if exc_type else 'Exception'}@{where}", kind="crash")
        self.close()


class _Timer:
    """What ``Recorder.timed`` returns: a context manager that observes the time its block took."""

    __slots__ = ("_label", "_name", "_recorder", "_start")

    def __init__(self, recorder: Recorder, name: str, label: str | None) -> None:
        self._recorder, self._name, self._label = recorder, name, label

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._recorder.observe(self._name, (time.perf_counter() - self._start) * 1000.0, self._label)

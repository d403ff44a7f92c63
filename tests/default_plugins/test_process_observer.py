"""The process observer, on real processes: it sees only allowlisted executables, reads nothing private of
any process, keeps nothing of the others, and tells how a session ended when the OS lets it.

Every test runs twice: on Linux's ``/proc`` fast path and on the portable psutil-only path that serves
Windows and macOS (forced here), so the portable observer's logic is tested code, not only its form."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from helpers import native_executable, unique_name, wait_for

from ceip_core.allowlist import Entry
from ceip_core.collectors import SessionObserved
from ceip_core.default_plugins.process_observer import (
    STOP_SIGNALS,
    ProcessObserver,
    ProcessTable,
    ProcTable,
    PsutilTable,
    name_key,
)
from ceip_core.records import EndKind

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tests start processes and wait on /proc (Linux)"
)

PRIVATE = ("cmdline", "environ", "username", "open_files")
#: Longer than the 15 characters the kernel keeps: psutil's name() reads the command line of such processes.
LONG_NAME = "a-process-with-a-long-name"


@pytest.fixture(params=["proc", "portable"])
def table(request: pytest.FixtureRequest) -> ProcessTable:
    """The observer's source of names: Linux's /proc fast path, or the portable psutil-only path."""
    return ProcTable() if request.param == "proc" else PsutilTable()


@pytest.fixture
def app() -> str:
    """This test's name for the ``sample`` product's executable, unlike any other test run's."""
    return unique_name("sample")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real processes; the test is their parent and collects them only at the end (so the
    observer can read how they ended), or when the test does."""
    started: list[subprocess.Popen[bytes]] = []

    def run(exe: Path | str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(exe), *args])
        started.append(proc)
        comm = Path(f"/proc/{proc.pid}/comm")
        wait_for(lambda: comm.read_text().strip() == Path(exe).name[:15], timeout=10)  # it has exec'd
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def sessions(observed: list[SessionObserved]) -> list[tuple[str, str, str]]:
    return sorted((o.product, o.session.executable, o.session.ended.value) for o in observed)


def test_only_allowlisted_executable_names_are_observed(tmp_path: Path, table: ProcessTable, start, app: str) -> None:
    observer = ProcessObserver(table)
    mine = start(native_executable(tmp_path / "bin", app), "30")
    start(native_executable(tmp_path / "bin", "unrelated"), "30")
    assert sessions(observer.observe([Entry("sample", app)])) == [("sample", app, "running")]
    assert set(observer.tracked) == {mine.pid}
    assert observer.observe([]) == [] and observer.tracked == {}  # opted out: forgotten at once, nothing said


def test_the_same_name_in_another_path_yields_nothing(tmp_path: Path, table: ProcessTable, start, app: str) -> None:
    good = native_executable(tmp_path / "opt" / "sample" / "bin", app)
    bad = native_executable(tmp_path / "home" / "bin", app)
    observer = ProcessObserver(table)
    entry = Entry("sample", app, path=str(tmp_path / "opt" / "*"))
    impostor = start(bad, "0.3")
    assert observer.observe([entry]) == [] and observer.tracked == {}
    impostor.wait()
    assert observer.observe([entry]) == []  # not even its end
    real = start(good, "30")
    assert sessions(observer.observe([entry])) == [("sample", app, "running")]
    assert set(observer.tracked) == {real.pid}


def test_a_wrong_hash_yields_nothing(tmp_path: Path, table: ProcessTable, start, app: str) -> None:
    exe = native_executable(tmp_path / "bin", app)
    right = hashlib.sha256(exe.read_bytes()).hexdigest()
    proc = start(exe, "30")
    observer = ProcessObserver(table)
    assert observer.observe([Entry("sample", app, sha256="0" * 64)]) == []
    assert observer.tracked == {}
    assert sessions(observer.observe([Entry("sample", app, sha256=right)])) == [("sample", app, "running")]
    assert set(observer.tracked) == {proc.pid}


def test_nothing_private_is_ever_read_and_nothing_kept_of_other_processes(
    tmp_path: Path, table: ProcessTable, start, monkeypatch: pytest.MonkeyPatch, app: str
) -> None:
    calls: list[str] = []
    for method in PRIVATE:

        def refuse(self: psutil.Process, *args: object, _name: str = method, **kwargs: object) -> None:
            calls.append(f"{_name}({self.pid})")
            raise AssertionError(f"{_name}() must never be called")

        monkeypatch.setattr(psutil.Process, method, refuse)
        if hasattr(psutil._psplatform.Process, method):  # what psutil.Process asks, and the portable path uses
            monkeypatch.setattr(psutil._psplatform.Process, method, refuse)
    # Positive control: psutil's own name() reads the command line of a long-named process, which is why
    # the observer never asks psutil.Process for names. The instrument works.
    other = start(native_executable(tmp_path / "bin", LONG_NAME), "30")
    with pytest.raises(AssertionError, match="cmdline"):
        psutil.Process(other.pid).name()
    calls.clear()
    # The platform object the portable path asks gives the short name and reads nothing more.
    assert psutil._psplatform.Process(other.pid).name() == LONG_NAME[:15] and calls == []

    gc.collect()
    before = [o for o in gc.get_objects() if isinstance(o, psutil.Process)]
    exe = native_executable(tmp_path / "bin", app)
    entries = [Entry("sample", app, path=str(exe), sha256=hashlib.sha256(exe.read_bytes()).hexdigest())]
    observer = ProcessObserver(table)
    short = start(exe, "0.5")
    long = start(exe, "30")
    seen: list[SessionObserved] = []

    def short_ended() -> bool:
        seen.extend(observer.observe(entries))
        return any(o.session.ended is not EndKind.RUNNING for o in seen)

    wait_for(short_ended, timeout=10)
    assert calls == []
    assert ("sample", app, "normal" if isinstance(table, ProcTable) else "unknown") in sessions(seen)
    assert set(observer.tracked) == {long.pid}
    gc.collect()
    held = [o for o in gc.get_objects() if isinstance(o, psutil.Process) and not any(o is b for b in before)]
    assert [p.pid for p in held] == [long.pid], "a psutil.Process is held for a process that is not observed"
    native = [o for o in gc.get_objects() if isinstance(o, psutil._psplatform.Process) and o.pid != other.pid]
    assert {p.pid for p in native} <= {long.pid} | {b.pid for b in before}, "a name lookup was kept"
    assert short.poll() == 0


def test_start_stop_and_crash_give_durations_and_end_kinds(
    tmp_path: Path, table: ProcessTable, start, app: str
) -> None:
    exe = native_executable(tmp_path / "bin", app)
    observer = ProcessObserver(table)
    entries = [Entry("sample", app)]
    launched = time.monotonic()
    normal = start(exe, "0.6")
    segv = start(exe, "30")
    term = start(exe, "30")
    reaped = subprocess.Popen(["sh", "-c", f"'{exe}' 0.6; true"])  # its shell collects it at once
    ended: list[SessionObserved] = []

    def look() -> int:
        """One pass; how many sessions were seen so far, running or ended."""
        ended.extend(o for o in observer.observe(entries) if o.session.ended is not EndKind.RUNNING)
        return len(observer.tracked) + len(ended)

    wait_for(lambda: look() == 4, timeout=10)
    seen = time.monotonic()
    wait_for(lambda: look() and time.monotonic() - seen >= 0.3)  # let the two to be stopped run a while
    segv.send_signal(signal.SIGSEGV)
    term.send_signal(signal.SIGTERM)
    wait_for(lambda: look() and len(ended) == 4, timeout=15)
    lifetime = time.monotonic() - launched
    reaped.wait()
    tick = 1 / os.sysconf("SC_CLK_TCK")  # the kernel dates process starts in clock ticks
    for o in ended:
        assert 0.3 <= o.session.duration_s <= lifetime + tick + table.start_error_s, o
        assert o.session.peak_rss_bytes and o.session.peak_rss_bytes > 0
        assert o.session.cpu_s is not None and o.session.cpu_s >= 0
    if isinstance(table, ProcTable):
        assert sorted(o.session.ended.value for o in ended) == ["crashed", "normal", "normal", "unknown"]
        by_kind = {o.session.ended: o.session for o in ended}
        assert 0.5 <= by_kind[EndKind.UNKNOWN].duration_s <= 0.75  # the shell's child ran 0.6 s
    else:  # psutil does not tell how another process ended
        assert [o.session.ended for o in ended] == [EndKind.UNKNOWN] * 4
    assert normal.poll() == 0 and segv.poll() == -signal.SIGSEGV and term.poll() == -signal.SIGTERM
    assert observer.tracked == {}


def test_a_process_of_another_product_whose_consent_ends_is_forgotten_without_a_word(
    tmp_path: Path, table: ProcessTable, start, app: str
) -> None:
    observer = ProcessObserver(table)
    other_app = unique_name("other")
    sample, other = Entry("sample", app), Entry("other", other_app)
    start(native_executable(tmp_path / "bin", app), "30")
    kept = start(native_executable(tmp_path / "bin", other_app), "30")
    assert len(observer.observe([sample, other])) == 2
    assert sessions(observer.observe([other])) == [("other", other_app, "running")]
    assert set(observer.tracked) == {kept.pid}
    assert os.path.basename(psutil.Process(kept.pid).exe()) == other_app


def test_an_executable_the_os_refuses_is_not_guessed_from_the_command_line(
    tmp_path: Path, table: ProcessTable, start, monkeypatch: pytest.MonkeyPatch, app: str
) -> None:
    """Another user's process: the OS refuses its executable's path. psutil.Process.exe() would then read
    the command line to guess one; the observer does not look further, and does not observe it."""
    exe = native_executable(tmp_path / "bin", app)
    start(exe, "30")
    read: list[int] = []

    def denied(self: object, *args: object) -> None:
        raise psutil.AccessDenied(getattr(self, "pid", None))

    def cmdline(self: object, *args: object) -> None:
        read.append(getattr(self, "pid", -1))
        raise AssertionError("cmdline() must never be called")

    monkeypatch.setattr(psutil._psplatform.Process, "exe", denied)
    monkeypatch.setattr(psutil._psplatform.Process, "cmdline", cmdline)
    monkeypatch.setattr(psutil.Process, "cmdline", cmdline)
    with pytest.raises(AssertionError, match="cmdline"):  # positive control: psutil.Process.exe() would read it
        psutil.Process(os.getpid()).exe()
    assert read == [os.getpid()]
    read.clear()
    observer = ProcessObserver(table)
    assert observer.observe([Entry("sample", app, path=str(exe))]) == [] and observer.tracked == {}
    assert read == []


def test_windows_names_compare_without_case_or_extension(tmp_path: Path, start, app: str) -> None:
    """The portable path with Windows' naming rules, on real processes: an allowlisted ``Sample.EXE`` is the
    process psutil names ``sample.exe`` (here, on Linux, ``sample``)."""
    start(native_executable(tmp_path / "bin", app), "30")
    windows = PsutilTable(platform="win32")
    assert sessions(ProcessObserver(windows).observe([Entry("sample", app.upper() + ".EXE")])) == [
        ("sample", app.upper() + ".EXE", "running")
    ]
    assert ProcessObserver(PsutilTable()).observe([Entry("sample", app.upper())]) == []  # Linux: case counts


@pytest.mark.parametrize(
    ("name", "platform", "key"),
    [
        ("a-process-with-a-long-name", "linux", "a-process-with-"),  # TASK_COMM_LEN - 1
        ("a-process-with-a-long-name", "darwin", "a-process-with-a"),  # MAXCOMLEN
        ("Analyst.EXE", "win32", "analyst"),
        ("analyst", "win32", "analyst"),
        ("a-process-with-a-long-name", "freebsd14", "a-process-with-a-long-name"),  # not truncated: fails closed
    ],
)
def test_name_keys_follow_each_platforms_naming(name: str, platform: str, key: str) -> None:
    assert name_key(name, platform) == key


def test_stop_signals_are_linuxs_numbers() -> None:
    assert {signal.SIGHUP, signal.SIGINT, signal.SIGTERM} == STOP_SIGNALS

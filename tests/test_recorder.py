"""The recording API: what it records, that it never raises, and that it stays light."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import epoch, run_python, wait_for

import ceip_core
from ceip_core import executables, wire
from ceip_core.allowlist import Allowlist, default_path, make_entry
from ceip_core.consent import Consent
from ceip_core.hookspecs import hookimpl
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec, Report
from ceip_core.session_data import ZERO_BUCKET, bucket_of
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.testing import TEST_EXECUTABLE


@pytest.fixture
def opted_in(sample, ceip_home: Path) -> Spool:
    Consent(StateDB(ceip_home)).opt_in("sample")
    return Spool(StateDB(ceip_home))


def queued_reports(spool: Spool) -> list[Report]:
    return [r for r in (wire.decode_item(i.data) for i in spool.items()) if isinstance(r, Report)]


def test_a_session_becomes_one_scrubbed_report(opted_in: Spool) -> None:
    with ceip_core.recorder("sample", "2.1") as rec:
        for _ in range(3):
            rec.feature("open_file")
        rec.feature("export", "pdf")
        rec.count("open_file", 2)
        rec.observe("render_ms", 10.0)
        with rec.timed("render_ms"):
            pass
        rec.problem("ValueError@render.py:88")
        rec.problem("ValueError@render.py:88")
        rec.config("theme", "dark")
    [report] = queued_reports(opted_in)
    assert report.product == "sample" and report.product_version == "2.1"
    assert report.guid == opted_in.consent.guid()
    counters = {(c.name, c.label): c.value for c in report.counters}
    assert counters == {("open_file", None): 5, ("export", "pdf"): 1}
    [hist] = report.histograms
    assert hist.name == "render_ms" and hist.count == 2 and hist.max == 10.0
    assert sum(hist.buckets.values()) == 2
    assert [(p.kind, p.signature, p.count) for p in report.problems] == [("error", "ValueError@render.py:88", 2)]
    assert report.config == {"theme": "dark"}
    assert report.period.start <= report.period.end


def test_bad_input_never_raises_and_is_counted(opted_in: Spool) -> None:
    rec = ceip_core.recorder("sample", "1.0")
    rec.feature("not_declared")  # undeclared: dropped by the declared-fields scrubber
    rec.feature(5)  # type: ignore[arg-type]
    rec.feature(["unhashable"])  # type: ignore[arg-type]
    rec.feature("tag", 7)  # type: ignore[arg-type]  # non-string label
    rec.feature("x" * 100_000)
    rec.count("open_file", -1)
    rec.count("open_file", 1.5)  # type: ignore[arg-type]
    rec.count("open_file", True)  # type: ignore[arg-type]
    for bad in (math.nan, -1.0, math.inf, "12", None):
        rec.observe("render_ms", bad)  # type: ignore[arg-type]
    rec.observe("open_file", 3.0)  # a counter used as a histogram: wrong kind
    rec.problem(None)  # type: ignore[arg-type]
    rec.config("theme", object())  # type: ignore[arg-type]
    rec.config("theme", math.nan)
    with rec.timed("render_ms"):
        pass
    assert rec.close() is True
    [report] = queued_reports(opted_in)
    diag = report.diagnostics
    assert diag["recorder.invalid_name"] == 2  # feature(5), problem(None)
    assert diag["recorder.invalid_call"] == 1  # unhashable name
    assert diag["recorder.invalid_label"] == 1
    assert diag["recorder.invalid_value"] == 3 + 5 + 2
    assert sum(v for k, v in diag.items() if k.startswith("scrub.declared")) >= 3  # not_declared, x*100000, wrong kind
    assert [h.count for h in report.histograms] == [1]
    assert report.counters == ()


def test_bounded_memory_for_endless_distinct_names(opted_in: Spool) -> None:
    rec = ceip_core.recorder("sample", "1.0")
    for i in range(5000):
        rec.feature(f"f{i}")
    assert len(rec._series) == 1000
    rec.close()
    [report] = queued_reports(opted_in)
    assert report.diagnostics["recorder.too_many_series"] == 4000


def test_crash_in_a_with_block_is_recorded_as_a_problem(opted_in: Spool) -> None:
    with pytest.raises(ZeroDivisionError), ceip_core.recorder("sample", "1.0"):
        1 / 0  # noqa: B018
    [report] = queued_reports(opted_in)
    [problem] = report.problems
    assert problem.kind == "crash" and problem.signature.startswith("ZeroDivisionError@test_recorder.py:")


def test_an_opt_out_in_this_process_stops_recording_at_once(opted_in: Spool, ceip_home: Path) -> None:
    rec = ceip_core.recorder("sample", "1.0")
    rec.feature("open_file")
    Consent(StateDB(ceip_home)).opt_out("sample")
    wait_for(lambda: not rec.active, timeout=1.0)
    rec.feature("open_file")
    assert rec._take().is_empty()
    assert rec.close() is False


def test_data_recorded_before_an_opt_out_is_never_sealed_after_a_re_opt_in(opted_in: Spool, ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("other")  # keeps the GUID alive across the opt-out
    rec = ceip_core.recorder("sample", "1.0")
    rec.feature("open_file")
    consent.opt_out("sample")
    consent.opt_in("sample")  # quicker than the watcher may notice the opt-out on its own
    rec.feature("export", "pdf")
    wait_for(lambda: rec._epoch == consent.epoch("sample"), timeout=1.0)
    rec.feature("export", "csv")
    assert rec.close() is True
    [report] = queued_reports(opted_in)
    assert [(c.name, c.label) for c in report.counters] == [("export", "csv")]


def test_long_running_products_seal_periodically(opted_in: Spool) -> None:
    rec = ceip_core.recorder("sample", "1.0", seal_every=0.05)
    rec.feature("open_file")
    wait_for(lambda: len(queued_reports(opted_in)) == 1, timeout=5)
    rec.feature("open_file")
    rec.close()
    assert len(queued_reports(opted_in)) == 2


def test_session_is_sealed_at_interpreter_exit(opted_in: Spool) -> None:
    run_python("import ceip_core\nrec = ceip_core.recorder('sample', '1.0')\nrec.feature('open_file')\n")
    [report] = wait_for(lambda: queued_reports(opted_in), timeout=30)  # sealed by a process of its own
    assert report.counters[0].value == 1


def test_at_exit_nothing_unscrubbed_reaches_the_disk(opted_in: Spool, tmp_path: Path) -> None:
    """The product exits at once; its session goes over a pipe to a sealing process, which scrubs before
    it writes. An undeclared name and a path in a user's home are recorded; once the report has arrived, no file the
    product or the sealer could have written (state folder, temporary folder, working folder) holds them."""
    marker = "zq" + secrets.token_hex(8)
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    code = (
        "import ceip_core\nrec = ceip_core.recorder('sample', '1.0')\nrec.feature('open_file')\n"
        f"rec.feature('undeclared_{marker}')\nrec.config('theme', '/home/{marker}/secret')\n"
    )
    run_python(code, cwd=work, env={**os.environ, "TMPDIR": str(tmp)})
    [report] = wait_for(lambda: queued_reports(opted_in), timeout=30)
    assert {(c.name, c.value) for c in report.counters} == {("open_file", 1)}
    assert report.config == {"theme": "~/secret"}
    assert marker not in wire.encode_item(report).decode()
    opted_in.db.close()  # checkpoint: everything the spool wrote is in its files now
    for folder in (opted_in.db.folder, work, tmp):
        for path in folder.rglob("*"):
            assert not path.is_file() or marker.encode() not in path.read_bytes(), path


def test_a_sealing_process_checks_consent_again(opted_in: Spool) -> None:
    """Consent withdrawn (and given again) between the product's exit and the seal: the session, recorded
    under the old consent, is refused by the sealer and the refusal is counted."""
    from ceip_core.detached import seal_detached
    from ceip_core.executables import this_process
    from ceip_core.session_data import SessionData

    recorded = epoch(opted_in, "sample")
    opted_in.consent.opt_out("sample")
    opted_in.consent.opt_in("sample")
    data = SessionData("sample", "1.0", 0.0, 1.0, counters={("open_file", None): 3}, consent_epoch=recorded)
    assert seal_detached(data, opted_in.db.folder, this_process())
    wait_for(lambda: opted_in.stats().drops.get("stale-consent:sample"), timeout=30)
    assert queued_reports(opted_in) == []


def test_a_sealing_process_checks_the_recording_process(opted_in: Spool) -> None:
    """At exit the session goes to a sealer; the sealer checks the *recording* process's executable (which
    it was handed), so a plain script recording as a product still queues nothing."""
    from ceip_core.detached import seal_detached
    from ceip_core.session_data import SessionData

    data = SessionData(
        "sample", "1.0", 0.0, 1.0, counters={("open_file", None): 3}, consent_epoch=epoch(opted_in, "sample")
    )
    assert seal_detached(data, opted_in.db.folder, ("not-the-product", "/usr/bin/not-the-product"))
    wait_for(lambda: opted_in.stats().drops.get("process-not-declared:sample"), timeout=30)
    assert queued_reports(opted_in) == []


@pytest.mark.parametrize(
    "code",
    [
        "import ceip_core",
        "import ceip_core; ceip_core.recorder('sample', '1.0').feature('open_file')",
    ],
)
def test_recording_path_imports_only_the_standard_library(opted_in: Spool, code: str) -> None:
    probe = code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    loaded = set(
        json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    )
    heavy = {"attrs", "attr", "cattrs", "pluggy", "aiohttp", "orjson", "psutil", "click", "platformdirs", "msgspec"}
    heavy |= {"logging", "typing", "dataclasses", "inspect"}  # stdlib, but each costs milliseconds
    assert loaded & heavy == set()
    light = {"ceip_core.recording", "ceip_core.consent", "ceip_core.statedb", "ceip_core.identity", "ceip_core.lazylog"}
    light.add("ceip_core.filelock")  # the state folder's lock: os, sys, time and fcntl
    light |= {"ceip_core.private_files"}  # os, stat and pathlib only
    light |= {"ceip_core.session_data"}  # what a seal hands on: math only
    light |= {"ceip_core.version"}  # one string
    assert {m for m in loaded if m.startswith("ceip_core.")} <= light


def test_session_data_stays_importable_from_the_recorder_module() -> None:
    from ceip_core import recording, session_data

    assert recording.SessionData is session_data.SessionData


def test_log_buckets() -> None:
    assert bucket_of(0) == ZERO_BUCKET
    assert bucket_of(1.0) == 0
    assert bucket_of(2.0) == 4
    assert bucket_of(1.99) == 3
    assert bucket_of(0.5) == -4
    assert bucket_of(1e-300) == ZERO_BUCKET


def test_a_recorder_created_right_after_an_opt_in_records_at_once(sample, ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("other")
    ceip_core.recorder("other", "1.0").close()  # the process-wide watcher is now running
    consent.opt_in("sample")  # no poll of the watcher can have seen this yet
    rec = ceip_core.recorder("sample", "1.0")
    assert rec.active
    rec.feature("open_file")
    assert rec.close() is True


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch every microsecond (instead of every 5 ms) for the test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_switching")
def test_counts_are_exact_while_threads_hammer_and_seals_happen(opted_in: Spool) -> None:
    """Every call counted exactly once across the reports, however the seals fall between the calls;
    threads that end before a seal are counted too. Threads switch every microsecond, so that a switch
    inside a call (between finding a counter and counting) happens many times."""
    rec = ceip_core.recorder("sample", "1.0", seal_every=None)
    threads_n, seals_wanted = 6, 20
    stop = threading.Event()
    done: list[int] = [0] * threads_n
    running = threading.Barrier(threads_n + 1)

    def hammer(n: int) -> None:
        running.wait()
        i = 0
        while not stop.is_set() or i < 1000:  # some threads end early: every one ends with a few more calls
            rec.feature("open_file")
            if i % 4 == 0:
                rec.feature("export", "pdf")
            if i % 100 == 0:
                rec.count("open_file", 2)
            i += 1
            if n == 0 and i == 5000:
                break
        done[n] = i

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(threads_n)]
    for worker in workers:
        worker.start()
    running.wait()
    seals = 0
    deadline = time.monotonic() + 60
    while seals < seals_wanted and time.monotonic() < deadline:  # each seal while the threads run: one report
        seals += rec.flush()
    stop.set()
    for worker in workers:
        worker.join(60)
    assert not any(w.is_alive() for w in workers)
    rec.close()
    totals: dict[tuple[str, str | None], int] = {}
    for report in queued_reports(opted_in):
        for c in report.counters:
            totals[(c.name, c.label)] = totals.get((c.name, c.label), 0) + c.value
    assert seals >= seals_wanted
    assert totals == {
        ("open_file", None): sum(i + 2 * ((i + 99) // 100) for i in done),
        ("export", "pdf"): sum((i + 3) // 4 for i in done),
    }


# --------------------------------------------------------------------------------------------------
# The allowlist in the product's own process
# --------------------------------------------------------------------------------------------------


class _Undeclared:
    """A product whose spec does not declare the test process: only its own executable may record."""

    @hookimpl
    def ceip_register_products(self, register):
        metric = MetricSpec("used", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Uses.")
        register(ProductSpec("strict", "Strict", ["strict-app"], [metric]))


def _record_once(product: str) -> str | None:
    """Record one use and seal; why the recorder refused, if it did."""
    with ceip_core.recorder(product, "1.0") as rec:
        rec.feature("used" if product == "strict" else "open_file")
    return rec.refused


def test_a_process_that_is_not_a_declared_executable_records_nothing(ceip_home: Path, ceip_plugins, ceip_allow) -> None:
    ceip_plugins(_Undeclared())
    ceip_allow("strict")
    Consent(StateDB(ceip_home)).opt_in("strict")
    spool = Spool(StateDB(ceip_home))
    rec = ceip_core.recorder("strict", "1.0")
    rec.feature("used")
    assert rec.close() is False
    assert rec.refused == "process-not-declared" and not rec.active
    assert queued_reports(spool) == []
    assert spool.stats().drops == {"process-not-declared": 1, "process-not-declared:strict": 1}


def test_a_python_script_cannot_record_as_a_product(sample, ceip_home: Path, monkeypatch) -> None:
    # The fixture products declare the test interpreter; a product that does not is refused in a script.
    plugin = Path(ceip_home) / "strict_plugin.py"
    plugin.write_text(
        "from ceip_core.hookspecs import hookimpl\n"
        "from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec\n"
        "@hookimpl\n"
        "def ceip_register_products(register):\n"
        "    m = MetricSpec('used', MetricKind.COUNTER, 'uses', Category.PROGRAM_USE, 'Uses.')\n"
        "    register(ProductSpec('strict', 'Strict', ['strict-app'], [m]))\n"
    )
    monkeypatch.setenv("PYTHONPATH", f"{ceip_home}{os.pathsep}{os.environ['PYTHONPATH']}")
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", "ceip_sample,strict_plugin")
    Allowlist.read(default_path()).add([make_entry("strict", "strict-app")]).write(default_path())
    Consent(StateDB(ceip_home)).opt_in("strict")
    run_python("import ceip_core\nwith ceip_core.recorder('strict', '1.0') as rec:\n    rec.feature('used')\n")
    spool = Spool(StateDB(ceip_home))
    assert queued_reports(spool) == []
    assert spool.stats().drops.get("process-not-declared:strict") == 1


@pytest.mark.parametrize(
    ("narrowing", "refused"),
    [
        ({"path": "/nowhere/*"}, "process-path-mismatch"),
        ({"sha256": "0" * 64}, "process-hash-mismatch"),
        ({"path": "*", "sha256": "right"}, None),
    ],
)
def test_the_allowlisted_path_and_hash_are_checked_in_process(
    opted_in: Spool, narrowing: dict[str, str], refused: str | None
) -> None:
    if narrowing.get("sha256") == "right":
        with open(executables.executable_path(), "rb") as handle:
            narrowing["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
    path = default_path()
    Allowlist.read(path).add([make_entry("sample", TEST_EXECUTABLE, **narrowing)]).write(path)
    why = _record_once("sample")
    assert why == refused
    assert len(queued_reports(opted_in)) == (1 if refused is None else 0)
    assert opted_in.stats().drops.get(f"{refused}:sample", 0) == (0 if refused is None else 1)


def test_the_process_is_checked_once_not_per_call(opted_in: Spool, monkeypatch) -> None:
    calls = []
    real = executables.refusal
    monkeypatch.setattr(executables, "refusal", lambda *a: calls.append(a) or real(*a))
    rec = ceip_core.recorder("sample", "1.0", seal_every=None)
    for _ in range(3):
        rec.feature("open_file")
        assert rec.flush()
    rec.close()
    assert len(calls) == 1
    assert len(queued_reports(opted_in)) == 3

"""Consent: nothing before opt-in, opt-out honoured by every process within a second, GUID lifecycle."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import wait_for

import ceip_core
from ceip_core import identity, wire
from ceip_core.consent import Consent, ConsentError, ConsentWatcher, Policy, State
from ceip_core.records import DeletionRequest
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB


def test_nothing_is_kept_or_queued_before_opt_in(sample, ceip_home: Path) -> None:
    rec = ceip_core.recorder("sample", "1.0")
    assert not rec.active
    rec.feature("open_file")
    rec.observe("render_ms", 12.0)
    rec.problem("ValueError@x.py:1")
    rec.config("theme", "dark")
    assert rec._take().is_empty()  # nothing was even held in memory
    assert rec.close() is False
    spool = Spool(StateDB(ceip_home))
    assert spool.items() == []
    assert spool.consent.guid() is None
    assert spool.consent.state("sample") is State.UNSET


def test_opt_in_creates_a_guid_and_backs_it_up(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    change = consent.opt_in("sample")
    assert change.guid_created and change.before is State.UNSET
    guid = consent.guid()
    assert guid is not None
    assert guid in (ceip_home / "identity.json").read_text()
    assert consent.opt_in("other").guid_created is False
    assert consent.guid() == guid


def test_guid_is_discarded_with_the_last_product_and_fresh_on_re_opt_in(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    consent.opt_in("other")
    first = consent.guid()
    assert consent.opt_out("sample").guid_discarded is False
    assert consent.guid() == first
    assert consent.opt_out("other").guid_discarded is True
    assert consent.guid() is None
    assert first not in (ceip_home / "identity.json").read_text()
    consent.opt_in("sample")
    assert consent.guid() not in (None, first)


def test_opt_out_queues_exactly_one_deletion_request_for_the_old_guid(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    guid = consent.guid()
    consent.opt_out("sample")
    consent.opt_out("sample")
    items = Spool(StateDB(ceip_home)).items()
    assert [i.kind for i in items] == ["deletion"]
    request = wire.decode_item(items[0].data)
    assert isinstance(request, DeletionRequest)
    assert (request.guid, request.product) == (guid, "sample")


def test_opting_out_of_a_product_never_opted_in_sends_nothing(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    assert consent.opt_out("sample").deletion_queued is False
    assert consent.state("sample") is State.OUT
    assert Spool(StateDB(ceip_home)).items() == []


def test_machine_policy_caps_participation(ceip_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[consent]\nforce_off_products = ["sample"]\n')
    monkeypatch.setenv("CEIP_POLICY_FILE", str(policy_file))
    consent = Consent(StateDB(ceip_home))
    with pytest.raises(ConsentError, match="switched off by machine policy"):
        consent.opt_in("sample")
    consent.opt_in("other")
    assert consent.allowed("other") and not consent.allowed("sample")

    monkeypatch.setenv("CEIP_CONSENT_CAP", "off")
    assert Policy.load().force_off
    assert not Consent(StateDB(ceip_home)).allowed("other")


def test_a_malformed_policy_file_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text("[consent\nforce_off = ")
    monkeypatch.setenv("CEIP_POLICY_FILE", str(policy_file))
    monkeypatch.delenv("CEIP_CONSENT_CAP", raising=False)
    policy = Policy.load()
    assert policy.force_off and "unreadable" in policy.source


def test_watcher_reports_changes_made_by_another_process(ceip_home: Path) -> None:
    class Listener:
        def __init__(self) -> None:
            self.seen: list[Mapping[str, int]] = []

        def consent_changed(self, allowed: Mapping[str, int]) -> None:
            self.seen.append(allowed)

    listener = Listener()
    assert ConsentWatcher.shared(ceip_home).subscribe(listener) == {}
    code = (
        "from ceip_core.consent import Consent; from ceip_core.statedb import StateDB; "
        f"Consent(StateDB({str(ceip_home)!r})).opt_in('sample')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    wait_for(lambda: listener.seen and list(listener.seen[-1]) == ["sample"], timeout=2)


RECORDING_PROCESS = """
import sys, time, ceip_core
rec = ceip_core.recorder("sample", "1.0")
assert rec.active, "not opted in"
sealed = 0
off_at = None
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    rec.feature("open_file")
    if rec.flush():
        sealed += 1
        print("sealed", sealed, time.time(), flush=True)
    if off_at is None and not rec.active:
        off_at = time.time()
        print("off", off_at, flush=True)
    if off_at is not None and time.time() - off_at > 1.5:
        break
    time.sleep(0.005)
print("done", sealed, flush=True)
"""


def test_opt_out_in_one_process_silences_a_recording_process_within_a_second(sample, ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    consent.opt_in("other")
    spool = Spool(StateDB(ceip_home))
    proc = subprocess.Popen([sys.executable, "-c", RECORDING_PROCESS], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        # Wait until process B has queued a few reports, then opt out here in process A.
        while len([line for line in lines if line.startswith("sealed")]) < 3:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"recording process ended early: {lines}"
            lines.append(line)
        assert spool.stats().by_product.get("sample", 0) >= 3
        change = consent.opt_out("sample")
        opted_out_at = time.time()
        assert change.reports_deleted >= 3 and change.deletion_queued
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    lines += out.splitlines()
    off = [float(line.split()[1]) for line in lines if line.startswith("off")]
    assert off, lines
    assert off[0] - opted_out_at <= 1.0
    late = [line for line in lines if line.startswith("sealed") and float(line.split()[2]) > opted_out_at]
    assert late == []
    # B kept calling flush() for 1.5 s after it noticed; the spool holds no report about the product.
    items = spool.items()
    assert [i for i in items if i.kind == "report"] == []
    assert [i.kind for i in items if i.product == "sample"] == ["deletion"]
    assert spool.consent.guid() is not None  # "other" is still opted in


class Listener:
    def __init__(self) -> None:
        self.seen: list[Mapping[str, int]] = []

    def consent_changed(self, allowed: Mapping[str, int]) -> None:
        self.seen.append(allowed)


def test_the_watcher_follows_a_database_another_process_replaced(ceip_home: Path) -> None:
    """After another process repaired the database (moved it aside, made a new one), an opt-out written to
    the new file reaches the watcher: it must not go on reading the file that was moved aside."""
    Consent(StateDB(ceip_home)).opt_in("sample")
    listener = Listener()
    watcher = ConsentWatcher(ceip_home)
    try:
        assert list(watcher.subscribe(listener)) == ["sample"]
        database = StateDB(ceip_home).path
        for part in database.parent.glob(database.name + "*"):
            part.rename(part.with_name("aside-" + part.name))
        for change in ("opt_out", "opt_in"):  # each written to the new file by another process
            code = (
                "from ceip_core.consent import Consent; from ceip_core.statedb import StateDB; "
                f"Consent(StateDB({str(ceip_home)!r})).{change}('sample')"
            )
            subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
            expected = [] if change == "opt_out" else ["sample"]
            wait_for(lambda: listener.seen and list(listener.seen[-1]) == expected, timeout=5)  # noqa: B023
    finally:
        watcher.stop()


def test_the_watcher_fails_closed_when_the_state_folder_cannot_be_used(ceip_home: Path, tmp_path: Path) -> None:
    """A consent database that cannot be read at all means nothing is allowed, never "as before"."""
    Consent(StateDB(ceip_home)).opt_in("sample")
    listener = Listener()
    watcher = ConsentWatcher(ceip_home)
    try:
        assert list(watcher.subscribe(listener)) == ["sample"]
        ceip_home.rename(tmp_path / "moved")
        ceip_home.write_text("a file where the state folder was")  # no database can be made here
        wait_for(lambda: listener.seen and listener.seen[-1] == {}, timeout=5)
    finally:
        watcher.stop()


def test_reset_id_queues_a_deletion_for_the_old_guid_per_participating_product(sample, ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home))
    consent.opt_in("sample")
    consent.opt_in("other")
    consent.opt_in("third")
    consent.opt_out("third")  # already deleted under the old GUID: no second request
    spool = Spool(StateDB(ceip_home))
    with ceip_core.recorder("sample", "1.0") as rec:
        rec.feature("open_file")
    old = consent.guid()
    before = [i.item_id for i in spool.items() if i.kind == "deletion"]

    new = consent.reset_id()

    assert new != old and consent.guid() == new
    items = spool.items()
    assert [i.kind for i in items if i.item_id not in before] == ["deletion", "deletion"]
    requests = [wire.decode_item(i.data) for i in items if i.item_id not in before]
    assert all(isinstance(r, DeletionRequest) and r.guid == old for r in requests)
    assert sorted(r.product for r in requests if isinstance(r, DeletionRequest)) == ["other", "sample"]
    # A report queued under the old GUID would bring it back after the deletion: it is dropped, counted.
    assert not [i for i in items if i.kind == "report"]
    assert spool.stats().drops["id-reset:sample"] == 1
    assert identity.read_backup(ceip_home)[0] == new


@pytest.mark.parametrize("spelling", ["{%s}", "%s\n", "urn:uuid:%s", " %s"])
def test_a_backed_up_guid_in_another_spelling_is_not_taken(ceip_home: Path, spelling: str) -> None:
    # The service would refuse every report carrying it; the backup is ignored instead.
    guid = "5b3c2b52-fa2e-401a-81ba-f870ef6da39a"
    identity.write_backup(ceip_home, spelling % guid, {"sample": "in"})
    assert identity.read_backup(ceip_home) == (None, {"sample": "in"})
    identity.write_backup(ceip_home, guid, {"sample": "in"})
    assert identity.read_backup(ceip_home) == (guid, {"sample": "in"})

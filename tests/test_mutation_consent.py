"""Consent edges that the mutation run (bench/mutation.sh) found untested: every way the machine policy
fails closed, what a change reports, the restore of a recreated database from the backup, and a watcher
that keeps listening after a listener fails or after an idle spell."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import wait_for

from ceip_core import identity
from ceip_core.consent import Consent, ConsentError, ConsentWatcher, Policy, State
from ceip_core.statedb import StateDB


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "policy.toml"
    monkeypatch.setenv("CEIP_POLICY_FILE", str(path))
    monkeypatch.delenv("CEIP_CONSENT_CAP", raising=False)
    return path


def test_a_policy_file_that_cannot_be_read_or_decoded_caps_everything(policy_file: Path) -> None:
    policy_file.mkdir()  # a folder where the file should be: OSError
    assert Policy.load().force_off and "unreadable" in Policy.load().source
    policy_file.rmdir()
    policy_file.write_bytes(b"[consent]\nforce_off_products = ['\xff']\n")  # not UTF-8
    assert Policy.load().force_off and "unreadable" in Policy.load().source


def test_a_consent_section_of_the_wrong_shape_caps_everything(policy_file: Path) -> None:
    policy_file.write_text('[consent]\nforce_off_products = "analyst"\n')
    policy = Policy.load()
    assert policy.force_off and "malformed" in policy.source


def test_force_off_true_caps_every_product_and_anything_else_caps_none(policy_file: Path) -> None:
    policy_file.write_text("[consent]\nforce_off = true\n")
    assert Policy.load().force_off and not Policy.load().allows("sample")
    policy_file.write_text('[consent]\nforce_off = "yes"\nforce_off_products = ["other"]\n')  # only `true` is true
    policy = Policy.load()
    assert not policy.force_off and policy.allows("sample") and not policy.allows("other")


def test_opting_in_a_product_the_policy_caps_is_refused_and_records_nothing(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home), Policy(off_products=frozenset({"sample"})))
    with pytest.raises(ConsentError, match="machine policy"):
        consent.opt_in("sample")
    assert consent.state("sample") is State.UNSET and consent.guid() is None
    assert consent.opt_in("other").after is State.IN


def test_a_change_reports_exactly_what_it_did(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home), Policy())
    first = consent.opt_in("sample")
    assert (first.guid_created, first.guid_discarded, first.reports_deleted, first.deletion_queued) == (
        True,
        False,
        0,
        False,
    )
    second = consent.opt_in("other")
    assert (second.guid_created, second.guid_discarded, second.deletion_queued) == (False, False, False)
    out = consent.opt_out("other")
    assert (out.before, out.guid_created, out.guid_discarded, out.deletion_queued) == (State.IN, False, False, True)
    never = consent.opt_out("third")
    assert (never.before, never.guid_created, never.guid_discarded, never.deletion_queued) == (
        State.UNSET,
        False,
        False,
        False,
    )


def _recreate(folder: Path) -> Consent:
    """The state database deleted (as a damaged one is moved aside), then opened afresh."""
    database = StateDB(folder).path
    for part in database.parent.glob(database.name + "*"):
        part.unlink()
    return Consent(StateDB(folder), Policy())


def test_a_recreated_database_gets_every_choice_and_the_guid_back_from_the_backup(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home), Policy())
    consent.opt_in("sample")
    consent.opt_in("other")
    consent.opt_out("other")
    guid = consent.guid()
    consent.db.close()
    again = _recreate(ceip_home)
    assert again.states() == {"sample": State.IN, "other": State.OUT}
    assert again.guid() == guid


def test_a_backup_without_a_guid_restores_no_opt_in(ceip_home: Path) -> None:
    """An opt-in without its identity would participate under no GUID: it is not brought back."""
    StateDB(ceip_home).close()
    identity.write_backup(ceip_home, None, {"sample": "in", "other": "out"})
    again = _recreate(ceip_home)
    assert again.states() == {"other": State.OUT}
    assert again.guid() is None and not again.allowed("sample")


class Listener:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[Mapping[str, int]] = []

    def consent_changed(self, allowed: Mapping[str, int]) -> None:
        self.seen.append(dict(allowed))
        if self.fail:
            raise RuntimeError("a listener that fails")


def test_a_failing_listener_neither_stops_the_watcher_nor_the_others(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home), Policy())
    watcher = ConsentWatcher(ceip_home, interval=0.01)
    bad, good = Listener(fail=True), Listener()
    watcher.subscribe(bad)
    watcher.subscribe(good)
    try:
        consent.opt_in("sample")
        wait_for(lambda: good.seen and "sample" in good.seen[-1], timeout=10)
        consent.opt_out("sample")  # after the failing listener raised at least once
        wait_for(lambda: good.seen[-1] == {}, timeout=10)
        assert bad.seen[-1] == {}
    finally:
        watcher.stop()


def test_one_watcher_thread_however_many_listeners_and_still_listening_after_idle_spells(ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home), Policy())
    watcher = ConsentWatcher(ceip_home, interval=0.01)
    threads = lambda: {t for t in threading.enumerate() if t.name == "ceip-consent-watcher"}  # noqa: E731
    before = threads()
    listeners = [Listener() for _ in range(3)]
    try:
        for listener in listeners:
            assert watcher.subscribe(listener) == {}
        assert len(threads() - before) == 1  # (watchers of earlier tests may still be ending)
        time.sleep(0.3)  # thirty polls that find nothing new: the watcher must keep polling after them
        consent.opt_in("sample")
        wait_for(lambda: all(li.seen and "sample" in li.seen[-1] for li in listeners), timeout=10)
    finally:
        watcher.stop()


def test_a_backup_of_no_opt_in_brings_no_guid_back(ceip_home: Path) -> None:
    """A GUID is kept only while a product is opted in, so a restore without an opt-in discards it."""
    StateDB(ceip_home).close()
    identity.write_backup(ceip_home, "0d9b8c7a-6f5e-4d3c-8b2a-1908f7e6d5c4", {"sample": "out"})
    again = _recreate(ceip_home)
    assert again.states() == {"sample": State.OUT}
    assert again.guid() is None


def test_a_product_the_policy_caps_has_no_epoch_to_record_under(ceip_home: Path) -> None:
    Consent(StateDB(ceip_home), Policy()).opt_in("sample")
    Consent(StateDB(ceip_home), Policy()).opt_in("other")
    capped = Consent(StateDB(ceip_home), Policy(off_products=frozenset({"sample"})))
    assert capped.epoch("sample") is None
    assert isinstance(capped.epoch("other"), int)

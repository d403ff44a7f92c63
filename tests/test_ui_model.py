"""The feedback dialog's presenter, its first-run question and its catalogs, without a display."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_python

import ceip_core
from ceip_core.consent import Consent, State
from ceip_core.hookspecs import hookimpl
from ceip_core.statedb import StateDB
from ceip_core.ui import UIError, ask_once, i18n, po
from ceip_core.ui.model import FirstRun, OptionsModel


def model(home: Path, plugins, products: list[str] | None = None, **kw) -> OptionsModel:
    return OptionsModel(plugins, StateDB(home), products, **kw)


def on_disk(home: Path) -> tuple[dict[str, State], str | None, dict]:
    """Consent and GUID as a fresh reader of the state folder sees them, and the identity backup."""
    consent = Consent(StateDB(home))
    return consent.states(), consent.guid(), json.loads((home / "identity.json").read_text())


def record_session() -> None:
    with ceip_core.recorder("sample", "1.0") as rec:
        rec.feature("open_file")


def test_what_is_collected_is_the_data_dictionary_by_category(sample, ceip_home: Path) -> None:
    (view,) = model(ceip_home, sample, ["sample"]).products()
    assert (view.id, view.name, view.state, view.participating) == ("sample", "Sample", State.UNSET, False)
    headings = [c.heading for c in view.collected]
    assert headings == ["Configuration", "Performance and reliability", "Program use"]
    by_heading = {c.heading: c.items for c in view.collected}
    assert by_heading["Configuration"][0] == "The colour theme chosen."
    assert "coarse machine configuration" in by_heading["Configuration"][1]
    assert by_heading["Performance and reliability"] == (
        "Crashes by signature.",
        "Errors by signature.",
        "Time to render a view.",
    )
    assert by_heading["Program use"] == ("Exports, by format.", "Files opened.", "Free-form tags used.")


def test_all_products_by_default_and_an_unknown_one_is_named(sample, ceip_home: Path) -> None:
    assert [v.id for v in model(ceip_home, sample).products()] == ["other", "sample"]
    with pytest.raises(Exception, match="unknown product 'nope' \\(known: other, sample\\)"):
        model(ceip_home, sample, ["nope"])


class HookSpy:
    def __init__(self) -> None:
        self.calls: list[tuple[str, State]] = []

    @hookimpl
    def ceip_consent_changed(self, product: str, state: State) -> None:
        self.calls.append((product, state))


def test_opt_in_queue_opt_out_as_the_cli_does(sample, ceip_home: Path, ceip_plugins) -> None:
    spy = HookSpy()
    import ceip_sample

    plugins = ceip_plugins(ceip_sample, spy)
    m = model(ceip_home, plugins, ["sample"])
    assert m.machine_id_text() == "Machine ID: none (no product takes part)"
    said = m.set_participation("sample", True)
    assert said == "Sample: taking part. Thank you. A new random machine ID was created."
    states, guid, backup = on_disk(ceip_home)
    assert states == {"sample": State.IN} and guid and backup == {"guid": guid, "consent": {"sample": "in"}}
    assert m.machine_id_text() == f"Machine ID: {guid}"

    record_session()
    (view,) = m.products()
    assert view.participating and view.queued == 1 and m.queued_text(view) == "Reports waiting to be sent: 1"
    assert m.sending_text().splitlines() == [
        "Waiting to be sent: 1 report(s), 0 deletion request(s).",
        "Sent in the last 30 days: 0 report(s), 0 deletion request(s).",
        "Nothing has been sent from this computer yet.",
        "To see exactly what is waiting, run: ceip review; what was sent: ceip review --sent",
    ]

    said = m.set_participation("sample", False)
    assert said == (
        "Sample: not taking part. Deleted the reports that were waiting: 1. A request to delete what was "
        "already sent is queued. No product takes part any more, so the machine ID was deleted."
    )
    states, guid, backup = on_disk(ceip_home)
    assert states == {"sample": State.OUT} and guid is None and backup["guid"] is None
    assert [i.kind for i in m.spool.items()] == ["deletion"]
    assert spy.calls == [("sample", State.IN), ("sample", State.OUT)]
    assert m.state_text(m.products()[0]) == "Not taking part."


def test_what_was_sent_recently_and_the_last_upload_time_are_shown(sample, ceip_home: Path) -> None:
    sent_at = 1_780_000_000.0
    m = model(ceip_home, sample, ["sample"], clock=lambda: sent_at + 3600)
    m.set_participation("sample", True)
    record_session()
    lease = m.spool.lease()
    m.spool.settle(lease, accepted=[i.item_id for i in lease.items], now=sent_at)
    assert m.sending_text().splitlines()[:3] == [
        "Waiting to be sent: 0 report(s), 0 deletion request(s).",
        "Sent in the last 30 days: 1 report(s), 0 deletion request(s).",
        "Last sent: 2026-05-28 20:26 UTC",
    ]
    month_later = model(ceip_home, sample, ["sample"], clock=lambda: sent_at + 31 * 86400)
    assert month_later.sending_text().splitlines()[1] == "Sent in the last 30 days: 0 report(s), 0 deletion request(s)."


def queued_metrics(m: OptionsModel) -> list[set[str]]:
    """The metric names of each queued report, as the wire decoder reads them."""
    from ceip_core.records import Report
    from ceip_core.wire import decode_item

    out = []
    for item in m.spool.items():
        report = decode_item(item.data)
        if isinstance(report, Report):
            names = {c.name for c in report.counters} | {h.name for h in report.histograms}
            out.append(names | {p.kind for p in report.problems} | set(report.config))
    return out


def test_categories_are_chosen_in_the_dialog_and_never_widened_unasked(sample, ceip_home: Path) -> None:
    from ceip_core.records import Category, DeletionRequest
    from ceip_core.wire import decode_item

    m = model(ceip_home, sample, ["sample"])
    assert m.set_category("sample", Category.PERFORMANCE, False) == "Choose to take part first."
    assert Consent(StateDB(ceip_home)).states() == {}
    m.set_participation("sample", True)
    assert m.products()[0].categories == frozenset(Category)  # yes means every category
    with ceip_core.recorder("sample", "1.0") as rec:
        rec.feature("open_file")
        rec.observe("render_ms", 12.0)
        rec.problem("E1", kind="error")
        rec.config("theme", "dark")
    assert queued_metrics(m) == [{"open_file", "render_ms", "error", "theme"}]

    said = m.set_category("sample", Category.PERFORMANCE, False)
    assert said == (
        "Sample: taking part. Thank you. No longer sent: Performance and reliability. Taken out of the reports "
        "that were waiting: 1. A request to delete what was already sent of it is queued."
    )
    assert Consent(StateDB(ceip_home)).categories("sample") == {Category.CONFIGURATION, Category.PROGRAM_USE}
    assert queued_metrics(m) == [{"open_file", "theme"}]  # the waiting report, rewritten without it
    (request,) = [decode_item(i.data) for i in m.spool.items() if i.kind == "deletion"]
    assert isinstance(request, DeletionRequest) and request.categories == (Category.PERFORMANCE,)
    (view,) = m.products()
    assert m.state_text(view) == "Taking part, with some kinds of information only: Configuration, Program use."

    assert m.set_participation("sample", True) == m.state_text(view)  # "yes" again changes nothing
    assert Consent(StateDB(ceip_home)).categories("sample") == {Category.CONFIGURATION, Category.PROGRAM_USE}

    epoch = Consent(StateDB(ceip_home)).epoch("sample")
    m.set_category("sample", Category.PERFORMANCE, False)  # asks for what is so already: changes nothing
    assert Consent(StateDB(ceip_home)).epoch("sample") == epoch
    m.set_category("sample", Category.PERFORMANCE, True)
    assert Consent(StateDB(ceip_home)).categories("sample") == frozenset(Category)
    for category in Category:  # unticking every kind of information is an opt-out
        said = m.set_category("sample", category, False)
    assert Consent(StateDB(ceip_home)).state("sample") is State.OUT
    assert said.startswith("Sample: not taking part.")
    assert queued_metrics(m) == []


def test_a_capped_product_has_no_categories_to_choose(sample, ceip_home: Path, monkeypatch) -> None:
    from ceip_core.records import Category

    m = model(ceip_home, sample, ["sample"])
    m.set_participation("sample", True)
    monkeypatch.setenv("CEIP_CONSENT_CAP", "off")
    m = model(ceip_home, sample, ["sample"])
    (view,) = m.products()
    assert view.categories == frozenset() and not view.participating
    assert m.set_category("sample", Category.CONFIGURATION, True) == "Choose to take part first."


def test_reset_id(sample, ceip_home: Path) -> None:
    m = model(ceip_home, sample, ["sample"])
    assert m.reset_id() == "There is no machine ID to reset: no product takes part."
    m.set_participation("sample", True)
    before = m.machine_id()
    assert m.reset_id().startswith("The machine has a new random ID")
    _, guid, backup = on_disk(ceip_home)
    assert guid not in (None, before) and backup["guid"] == guid


def test_a_policy_cap_is_shown_and_cannot_be_overridden(sample, ceip_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("CEIP_CONSENT_CAP", "off")
    m = model(ceip_home, sample, ["sample"])
    (view,) = m.products()
    assert view.capped and m.state_text(view) == "Switched off for this computer by its administrator."
    assert m.set_participation("sample", True).startswith("Could not change this: participation for 'sample'")
    assert Consent(StateDB(ceip_home)).states() == {}


def test_first_run_asks_once_and_never_again(sample, ceip_home: Path) -> None:
    first = FirstRun(model(ceip_home, sample, ["sample"]), "sample")
    assert first.should_ask() and first.title() == "Help improve Sample?"
    first.mark_asked()
    # remembered in the state folder: another process (a new model on the same folder) does not ask
    assert not FirstRun(model(ceip_home, sample, ["sample"]), "sample").should_ask()
    # per product
    assert FirstRun(model(ceip_home, sample, ["other"]), "other").should_ask()


def test_first_run_does_not_ask_after_a_choice_made_elsewhere(sample, ceip_home: Path, monkeypatch) -> None:
    Consent(StateDB(ceip_home)).opt_in("other")
    assert not FirstRun(model(ceip_home, sample), "other").should_ask()
    monkeypatch.setenv("CEIP_CONSENT_CAP", "off")
    assert not FirstRun(model(ceip_home, sample), "sample").should_ask()


@pytest.mark.parametrize(("yes", "state"), [(True, State.IN), (False, State.OUT)])
def test_first_run_answer_is_a_choice(sample, ceip_home: Path, yes: bool, state: State) -> None:
    first = FirstRun(model(ceip_home, sample, ["sample"]), "sample")
    first.answer(yes)
    assert Consent(StateDB(ceip_home)).states() == {"sample": state}
    assert not first.should_ask()


def test_ask_once_opens_nothing_when_it_need_not_ask(sample, ceip_home: Path, monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)  # a window would fail here
    Consent(StateDB(ceip_home)).opt_in("sample")
    assert ask_once("sample", plugins=sample) is False
    with pytest.raises(UIError, match="unknown product 'nope'"):
        ask_once("nope", plugins=sample)


def test_ceip_import_loads_no_tkinter() -> None:
    run_python(
        "import sys, ceip_core, ceip_core.cli, ceip_core.ui\n"
        "ceip_core.recorder('sample', '1.0').feature('x')\n"
        "assert 'tkinter' not in sys.modules, 'tkinter imported'"
    )


# -- the words: gettext ------------------------------------------------------------------------------


def test_german_under_language_de(sample, ceip_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("LANGUAGE", "de")
    m = model(ceip_home, sample, ["sample"], translations=i18n.translations())
    assert m.title() == "Optionen für Kundenfeedback"
    (view,) = m.products()
    assert [c.heading for c in view.collected] == ["Konfiguration", "Leistung und Zuverlässigkeit", "Programmnutzung"]
    assert (
        m.set_participation("sample", True)
        == "Sample: nimmt teil. Vielen Dank. Eine neue zufällige Rechner-ID wurde erzeugt."
    )
    monkeypatch.setenv("LANGUAGE", "fr")  # no French catalog: the English in the code
    assert model(ceip_home, sample, translations=i18n.translations()).title() == "Customer Feedback Options"


def test_committed_catalogs_match_their_sources() -> None:
    """ceip.pot holds every string of the dialog, and each .mo is its .po compiled: run
    ``python -m ceip_core.ui.po`` after changing either."""
    for path, data in po.build().items():
        assert path.read_bytes() == data, f"{path} is stale: run python -m ceip_core.ui.po"


def test_every_language_translates_every_string_and_keeps_its_placeholders() -> None:
    import string

    ids = [m for m, _ in po.messages()]
    catalogs = sorted(i18n.LOCALE_DIR.glob("*/LC_MESSAGES/ceip.po"))
    assert [c.parts[-3] for c in catalogs] == ["de"]
    for path in catalogs:
        catalog = po.parse_po(path)
        assert [m for m in ids if m not in catalog] == [], path
        for msgid in ids:
            fields = {f for _, f, _, _ in string.Formatter().parse(msgid) if f}
            assert {f for _, f, _, _ in string.Formatter().parse(catalog[msgid]) if f} == fields, msgid


def test_the_compiler_reads_what_msgfmt_reads(tmp_path: Path) -> None:
    src = tmp_path / "x.po"
    src.write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        '#, fuzzy\nmsgid "Close"\nmsgstr "Zu"\n\n'
        'msgid "Two\\n"\n"lines"\nmsgstr ""\n"Zwei\\n"\n"Zeilen \\"!\\""\n\nmsgid "Untranslated"\nmsgstr ""\n',
        encoding="utf-8",
    )
    catalog = po.parse_po(src)
    assert catalog == {"": "Content-Type: text/plain; charset=UTF-8\n", "Two\nlines": 'Zwei\nZeilen "!"'}
    import gettext
    import io

    t = gettext.GNUTranslations(io.BytesIO(po.mo(catalog)))
    assert (t.gettext("Two\nlines"), t.gettext("Close"), t.gettext("Untranslated")) == (
        'Zwei\nZeilen "!"',
        "Close",
        "Untranslated",
    )
    src.write_text('msgid "a"\nmsgstr "b"\nmsgctxt "menu"\n')
    with pytest.raises(po.CatalogError, match=r"x.po:3: cannot read"):
        po.parse_po(src)


def test_ceip_options_names_what_is_wrong(sample) -> None:
    """In a fresh process: tk in this one may still hold a test display open, and would use it."""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    for args, message in (
        (["nope"], "Error: unknown product 'nope' (known: other, sample)"),
        (["sample"], "Error: cannot open a window: "),
    ):
        cmd = [sys.executable, "-m", "ceip_core", "options", *args]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr, done.stderr

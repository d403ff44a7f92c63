"""The template's one test: a session recorded through the recording API becomes a report in the spool,
with nothing undeclared in it. Keep it passing as you change the plugin."""

from __future__ import annotations

import json

from ceip_myproduct import plugin

import ceip_core
from ceip_core.testing import queued_reports


def test_a_recorded_session_becomes_a_report(ceip_participating) -> None:
    # The built-ins plus this plugin (not installed), the product allowlisted (without that it is inert)
    # and opted in (nothing is recorded before), in a fresh state folder.
    spool = ceip_participating(plugin, "myproduct")
    with ceip_core.recorder("myproduct", "1.0") as rec:
        rec.feature("export", "pdf")
        rec.observe("open_file_ms", 41.5)
        rec.config("theme", "dark")
        rec.feature("not_declared")  # dropped and counted, never stored
    [report] = queued_reports(spool)  # exactly what the receiving service would get
    assert [(c["name"], c["label"], c["value"]) for c in report["counters"]] == [("export", "pdf", 1)]
    assert report["config"] == {"theme": "dark"}
    assert report["diagnostics"] == {"scrub.declared.undeclared_counter": 1}


def test_the_collector_reports_what_is_new_in_the_status_file(
    ceip_participating, ceip_agent_once, tmp_path, monkeypatch
) -> None:
    # The agent's whole cycle, once, in the test's state folder: the collector runs as it would on a machine.
    ceip_participating(plugin, "myproduct")
    status = tmp_path / "status.json"
    monkeypatch.setenv("MYPRODUCT_STATUS", str(status))
    status.write_text(json.dumps({"exports": {"pdf": 3, "docx": 1}, "last_open_ms": 20}))
    [report] = [r for r in ceip_agent_once() if r["product"] == "myproduct"]
    # docx is not a declared label: it is counted under "__other__", never stored by name.
    counted = [(c["name"], c["label"], c["value"]) for c in report["counters"]]
    assert counted == [("export", "__other__", 1), ("export", "pdf", 3)]
    assert [h["name"] for h in report["histograms"]] == ["open_file_ms"]

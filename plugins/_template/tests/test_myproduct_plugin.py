"""The template's one test: a session recorded through the recording API becomes a report in the spool,
with nothing undeclared in it. Keep it passing as you change the plugin."""

from __future__ import annotations

from pathlib import Path

import orjson
from ceip_myproduct import plugin

import ceip_core
from ceip_core.consent import Consent
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB


def test_a_recorded_session_becomes_a_report(ceip_home: Path, ceip_plugins, ceip_allow) -> None:
    ceip_plugins(plugin)  # the built-ins plus this plugin, without installing it
    ceip_allow("myproduct")  # the maintainers' allowlist: without it the product is inert
    Consent(StateDB(ceip_home)).opt_in("myproduct")  # nothing is recorded before an opt-in
    with ceip_core.recorder("myproduct", "1.0") as rec:
        rec.feature("export", "pdf")
        rec.observe("open_file_ms", 41.5)
        rec.config("theme", "dark")
        rec.feature("not_declared")  # dropped and counted, never stored
    [item] = Spool(StateDB(ceip_home)).items()
    report = orjson.loads(item.data)
    assert [(c["name"], c["label"], c["value"]) for c in report["counters"]] == [("export", "pdf", 1)]
    assert report["config"] == {"theme": "dark"}
    assert report["diagnostics"] == {"scrub.declared.undeclared_counter": 1}

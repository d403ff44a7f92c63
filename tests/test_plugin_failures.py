"""A plugin set that cannot load (a module that raises on import, a registration hook that raises, a hook
that does not exist) is one ``PluginError`` naming the plugin: commands say so in a line, an opt-out goes
on without the plugins (failing closed on what it cannot sort by category), and recording drops and counts
what it cannot scrub. docs/plugin-hooks.md, "When a plugin fails to load"."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import ceip_core
from ceip_core.cli import cli
from ceip_core.consent import Consent, State
from ceip_core.default_plugins.file_transport import SUFFIX
from ceip_core.hookspecs import hookimpl
from ceip_core.plugins import PluginError, Plugins, set_plugins
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            "ceip_broken_import",
            "plugin module 'ceip_broken_import' (named by CEIP_PLUGIN_MODULES) cannot be imported: "
            "RuntimeError: this plugin is broken on purpose",
        ),
        ("ceip_not_there", "plugin module 'ceip_not_there' (named by CEIP_PLUGIN_MODULES) cannot be imported"),
    ],
)
def test_a_module_that_fails_to_import_is_a_plugin_error_naming_it(
    ceip_home: Path, monkeypatch: pytest.MonkeyPatch, module: str, message: str
) -> None:
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", module)
    with pytest.raises(PluginError) as caught:
        Plugins.load(entry_points=False)
    assert str(caught.value).startswith(message)


def test_a_registration_that_raises_is_a_plugin_error_naming_the_plugin(
    ceip_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", "ceip_broken_registration")
    plugins = Plugins.load(entry_points=False)
    failed = "plugin ceip_broken_registration failed in ceip_register_products: ValueError: no products today"
    with pytest.raises(PluginError, match=failed):
        assert plugins.products


def test_a_failing_ceip_plugins_loaded_hook_is_a_plugin_error(ceip_home: Path) -> None:
    class Failing:
        @hookimpl
        def ceip_plugins_loaded(self, plugins: Plugins) -> None:
            raise OSError("no disk")

    with pytest.raises(PluginError, match="a ceip_plugins_loaded hook failed: OSError: no disk"):
        Plugins.load(entry_points=False, extra=[Failing()])


def _break_the_plugins(monkeypatch: pytest.MonkeyPatch, module: str = "ceip_broken_import") -> None:
    """From now on the process-wide plugin set (loaded again on next use) holds a broken plugin."""
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", f"ceip_sample,{module}")
    set_plugins(None)


def _record(product: str = "sample") -> None:
    with ceip_core.recorder(product, "1.0") as rec:
        rec.feature("open_file")


@pytest.mark.parametrize("module", ["ceip_broken_import", "ceip_broken_registration"])
def test_commands_say_the_plugins_cannot_load_in_one_line(sample, monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    _break_the_plugins(monkeypatch, module)
    for args in (["consent", "in", "sample"], ["consent", "status"], ["plugins"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert result.output.startswith(f"Error: cannot load plugins: plugin {'module ' * (module.endswith('import'))}")
        assert "Traceback" not in result.output


def test_an_opt_out_goes_on_without_the_plugins_and_fails_closed(
    sample, ceip_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["consent", "in", "sample", "other"]).exit_code == 0
    _record("sample")
    _record("other")
    spool = Spool(StateDB(ceip_home))
    assert spool.stats().by_product == {"other": 1, "sample": 1}
    _break_the_plugins(monkeypatch)

    narrowed = runner.invoke(cli, ["consent", "out", "sample", "--only", "use"])
    assert narrowed.exit_code == 0, narrowed.output
    assert "warning: cannot load plugins: plugin module 'ceip_broken_import'" in narrowed.output
    # No declaration says which of the queued data is program use: the product's queued reports go whole.
    assert "1 queued report(s) deleted" in narrowed.output
    consent = Consent(StateDB(ceip_home))
    assert consent.states() == {"other": State.IN, "sample": State.IN}
    assert spool.stats().by_product == {"other": 1} and spool.stats().deletions == 1

    _record("other")  # recording cannot scrub without the whole plugin set: dropped, and counted
    assert spool.stats().by_product == {"other": 1}
    assert spool.stats().drops.get("plugins-failed") == 1

    everything = runner.invoke(cli, ["consent", "out", "--all"])
    assert everything.exit_code == 0, everything.output
    assert consent.states() == {"other": State.OUT, "sample": State.OUT}
    assert spool.stats().reports == 0 and consent.guid() is None
    # What is queued was scrubbed when it was sealed: the built-in transports still carry the deletion requests.
    sent = runner.invoke(cli, ["upload", "--to", f"file://{tmp_path / 'drop'}"])
    assert sent.exit_code == 0, sent.output
    assert "sending with the built-in transports only" in sent.output and "Sent 3 item(s)" in sent.output
    (batch,) = (tmp_path / "drop").glob(f"*{SUFFIX}")
    items = json.loads(gzip.decompress(batch.read_bytes()))["items"]
    assert sorted((i["type"], i["product"], i.get("categories") or []) for i in items) == [
        ("deletion", "other", []),
        ("deletion", "sample", []),
        ("deletion", "sample", ["program use"]),
    ]
    unknown = runner.invoke(cli, ["consent", "out", "nope"])
    assert unknown.exit_code == 2 and "unknown product 'nope' (known: other, sample)" in unknown.output

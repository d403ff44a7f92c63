"""The plugin index (ceip_core.plugin_index): written by a full load, trusted only for the environment it
describes, and what lets ``ceip consent out`` skip loading plugins when none listens for consent changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ceip_core import plugin_index
from ceip_core.plugins import Plugins

HOOK = "ceip_consent_changed"

LISTENER = """
from ceip_core import hookimpl

@hookimpl
def ceip_consent_changed(product, state):
    with open({log!r}, "a") as f:
        f.write(f"{{product}}:{{state.value}}\\n")
"""


def cli(home: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``ceip`` in a fresh interpreter, run from a folder nobody writes to (it is first on ``sys.path``)."""
    return subprocess.run(
        [sys.executable, "-m", "ceip_core", *args],
        cwd=cwd,
        env={**os.environ, "CEIP_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_full_load_writes_the_index_of_its_environment(ceip_home: Path) -> None:
    assert plugin_index.implementers(ceip_home, HOOK) is None  # nothing written yet
    Plugins.load(entry_points=True)
    assert plugin_index.implementers(ceip_home, HOOK) == []
    assert plugin_index.implementers(ceip_home, "ceip_register_scrubbers") == [
        "ceip_core.default_plugins.declared",
        "ceip_core.default_plugins.identifiers",
        "ceip_core.default_plugins.limits",
    ]
    assert oct(plugin_index.index_path(ceip_home).stat().st_mode & 0o777) == "0o600"


def test_loading_plugins_never_creates_a_state_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEIP_HOME", str(tmp_path / "absent"))
    Plugins.load(entry_points=True)
    assert not (tmp_path / "absent").exists()


def test_a_plugin_set_given_in_code_is_not_the_environments(ceip_home: Path) -> None:
    class Extra:
        pass

    Plugins.load(entry_points=True, extra=[Extra()])
    assert plugin_index.implementers(ceip_home, HOOK) is None


@pytest.mark.parametrize(
    "damage",
    [
        "not json",
        json.dumps({"format": plugin_index.FORMAT + 1}),
        json.dumps({"format": plugin_index.FORMAT, "key": "another environment", "plugins": {}}),
        json.dumps([1, 2]),
    ],
    ids=["garbage", "other format", "other environment", "wrong shape"],
)
def test_an_unusable_index_is_no_index(ceip_home: Path, damage: str) -> None:
    Plugins.load(entry_points=True)
    plugin_index.index_path(ceip_home).write_text(damage)
    assert plugin_index.implementers(ceip_home, HOOK) is None
    Plugins.load(entry_points=True)  # and the next full load replaces it
    assert plugin_index.implementers(ceip_home, HOOK) == []


def test_editing_a_plugin_module_makes_the_index_stale(
    ceip_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    module = folder / "ceip_index_probe.py"
    module.write_text("")
    monkeypatch.syspath_prepend(folder)
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", "ceip_index_probe")
    Plugins.load(entry_points=True)
    assert plugin_index.implementers(ceip_home, HOOK) == []
    module.write_text(LISTENER.format(log=str(tmp_path / "log")))  # the plugin now listens
    assert plugin_index.implementers(ceip_home, HOOK) is None


def test_installing_into_a_folder_on_the_path_makes_the_index_stale(
    ceip_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(site)
    Plugins.load(entry_points=True)
    assert plugin_index.implementers(ceip_home, HOOK) == []
    (site / "new_plugin-1.0.dist-info").mkdir()
    os.utime(site, ns=(0, 0))  # a folder's time moves when it gains an entry; make sure it differs here
    assert plugin_index.implementers(ceip_home, HOOK) is None


def test_consent_out_loads_no_plugin_when_none_listens(ceip_home: Path, tmp_path: Path) -> None:
    quiet = tmp_path / "cwd"
    quiet.mkdir()
    env = {"CEIP_PLUGIN_MODULES": "ceip_sample", "CEIP_LOAD_PLUGINS": "", "PYTHONPATH": _fixture_path()}
    assert cli(ceip_home, quiet, "consent", "in", "sample", **env).returncode == 0
    out = cli(ceip_home, quiet, "consent", "out", "sample", PYTHONPROFILEIMPORTTIME="1", **env)
    assert out.returncode == 0, out.stderr
    assert "sample: not participating." in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")}
    assert "ceip_core.consent" in imported  # the profile is there ...
    assert "ceip_core.plugins" not in imported  # ... and no plugin was loaded
    assert "ceip_sample" not in imported


def test_consent_out_tells_a_listening_plugin(ceip_home: Path, tmp_path: Path) -> None:
    quiet = tmp_path / "cwd"
    quiet.mkdir()
    folder = tmp_path / "plugins"
    folder.mkdir()
    log = tmp_path / "heard"
    (folder / "ceip_listener.py").write_text(LISTENER.format(log=str(log)))
    env = {
        "CEIP_PLUGIN_MODULES": "ceip_sample,ceip_listener",
        "CEIP_LOAD_PLUGINS": "",
        "PYTHONPATH": os.pathsep.join([_fixture_path(), str(folder)]),
    }
    assert cli(ceip_home, quiet, "consent", "in", "sample", **env).returncode == 0
    out = cli(ceip_home, quiet, "consent", "out", "sample", **env)
    assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines() == ["sample:in", "sample:out"]


def _fixture_path() -> str:
    return str(Path(__file__).parent / "fixture_plugins")

"""A pytest plugin for plugin authors and for ceip's own tests (registered as ``pytest11`` entry point).

Fixtures:
- ``ceip_home``: a fresh state folder for the test, isolated from the machine's policy and environment.
- ``ceip_plugins``: ``ceip_plugins(*plugins)`` loads a plugin set with the built-ins plus ``plugins`` and
  makes it the process-wide one; it is always unloaded after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ceip_core.plugins import Plugins, set_plugins


@pytest.fixture
def ceip_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new, empty state folder, set as ``CEIP_HOME``; no machine policy applies."""
    home = tmp_path / "ceip-home"
    home.mkdir()
    monkeypatch.setenv("CEIP_HOME", str(home))
    monkeypatch.setenv("CEIP_POLICY_FILE", str(tmp_path / "no-policy.toml"))
    for name in ("CEIP_CONSENT_CAP", "CEIP_LOAD_PLUGINS", "CEIP_BLOCK_PLUGINS", "CEIP_PLUGIN_MODULES"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def ceip_plugins() -> Iterator[Callable[..., Plugins]]:
    """Load built-ins plus the given plugins (no installed entry points unless asked)."""

    def load(*plugins: object, entry_points: bool = False) -> Plugins:
        loaded = Plugins.load(entry_points=entry_points, extra=plugins)
        set_plugins(loaded)
        return loaded

    try:
        yield load
    finally:
        set_plugins(None)

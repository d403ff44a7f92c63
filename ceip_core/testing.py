"""A pytest plugin for plugin authors and for ceip's own tests (registered as ``pytest11`` entry point).

Fixtures:
- ``ceip_home``: a fresh state folder for the test, isolated from the machine's policy and environment,
  with an empty allowlist of its own (``CEIP_ALLOWLIST``): every product is inert until allowlisted.
- ``ceip_plugins``: ``ceip_plugins(*plugins)`` loads a plugin set with the built-ins plus ``plugins`` and
  makes it the process-wide one; it is always unloaded after the test.
- ``ceip_allow``: ``ceip_allow(*products)`` allowlists every executable the given products declare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ceip_core.allowlist import Allowlist, default_path, make_entry
from ceip_core.plugins import Plugins, get_plugins, set_plugins


@pytest.fixture
def ceip_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new, empty state folder, set as ``CEIP_HOME``; no machine policy applies, nothing is allowlisted."""
    home = tmp_path / "ceip-home"
    home.mkdir()
    monkeypatch.setenv("CEIP_HOME", str(home))
    monkeypatch.setenv("CEIP_ALLOWLIST", str(tmp_path / "allowlist.toml"))
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


@pytest.fixture
def ceip_allow(ceip_home: Path) -> Callable[..., Allowlist]:
    """``ceip_allow(*products)`` allowlists every executable the products declare, in the test's allowlist
    (which subprocesses started by the test use too). The products must be in the process-wide plugin
    set, e.g. loaded with ``ceip_plugins``. Returns the allowlist now in force."""

    def allow(*products: str) -> Allowlist:
        specs = [get_plugins().product(product) for product in products]
        path = default_path()
        allowlist = Allowlist.read(path).add(make_entry(s.id, name) for s in specs for name in s.executables)
        allowlist.write(path)
        return allowlist

    return allow

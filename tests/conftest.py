"""Shared fixtures for the core tests. The ``ceip_home`` and ``ceip_plugins`` fixtures come from
``ceip_core.testing`` (the pytest plugin ceip ships for plugin authors)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FIXTURE_PLUGINS = Path(__file__).parent / "fixture_plugins"
sys.path.insert(0, str(FIXTURE_PLUGINS))

import ceip_sample  # noqa: E402
from fake_service import FakeService  # noqa: E402

from ceip_core.plugins import Plugins  # noqa: E402


@pytest.fixture
def sample(
    ceip_home: Path,
    ceip_plugins: Callable[..., Plugins],
    ceip_allow: Callable[..., object],
    monkeypatch: pytest.MonkeyPatch,
) -> Plugins:
    """Built-in plugins plus the fixture products ``sample`` and ``other``, allowlisted, in this process and
    in any subprocess the test starts (through ``CEIP_PLUGIN_MODULES``)."""
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", "ceip_sample")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(FIXTURE_PLUGINS), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("CEIP_LOAD_PLUGINS", "")
    plugins = ceip_plugins(ceip_sample)
    ceip_allow("sample", "other")
    return plugins


@pytest.fixture
def fake_service() -> Iterator[FakeService]:
    """A stand-in receiving service on 127.0.0.1 that can be told to fail (see tests/fake_service.py)."""
    svc = FakeService().start()
    try:
        yield svc
    finally:
        svc.close()

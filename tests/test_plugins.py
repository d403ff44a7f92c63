"""Loading a plugin set (``ceip_core/plugins.py``): the built-ins, entry points and development modules under
one blocking rule, the privacy scrubbers that no switch can block, and loading that fails loudly (a
misspelled hook, a duplicate registration naming both plugins). The hook specs themselves are tested in
test_hookspecs.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ceip_core.hookspecs import hookimpl
from ceip_core.plugins import PluginError, Plugins
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec

SPEC = ProductSpec(
    "every",
    "Every Hook",
    ["every-app"],
    [MetricSpec("used", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Times used.")],
)


def test_a_misspelled_hook_fails_loudly(ceip_home: Path, ceip_plugins) -> None:
    class Typo:
        @hookimpl
        def ceip_register_product(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match="invalid plugin: unknown hook 'ceip_register_product'"):
        ceip_plugins(Typo())


def test_duplicate_registrations_are_rejected(ceip_home: Path, ceip_plugins) -> None:
    class Twice:
        @hookimpl
        def ceip_register_products(self, register):
            register(SPEC)
            register(SPEC)

    with pytest.raises(PluginError, match="product 'every' is registered twice"):
        _ = ceip_plugins(Twice()).products


def test_a_product_two_plugins_register_names_both(ceip_home: Path, ceip_plugins) -> None:
    class First:
        @hookimpl
        def ceip_register_products(self, register):
            register(SPEC)

    class Second(First):
        pass

    first, second = First(), Second()
    plugins = ceip_plugins(first, second)
    with pytest.raises(PluginError, match="product 'every' is registered twice: by ") as refused:
        _ = plugins.products
    names = {plugins.pm.get_name(first), plugins.pm.get_name(second)}
    assert set(str(refused.value).split(": by ")[1].split(" and by ")) == names


def test_unknown_product_error_names_the_known_ones(sample: Plugins) -> None:
    with pytest.raises(PluginError, match=r"unknown product 'nope' \(known: other, sample\)"):
        sample.product("nope")


def test_environment_switches_block_and_add_plugins(ceip_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEIP_BLOCK_PLUGINS", "file_transport")
    monkeypatch.setenv("CEIP_PLUGIN_MODULES", "ceip_sample")
    monkeypatch.setenv("CEIP_LOAD_PLUGINS", "")
    plugins = Plugins.load()
    assert "file" not in plugins.transports and "https" in plugins.transports
    assert set(plugins.products) == {"sample", "other"}


def test_no_switch_blocks_the_privacy_scrubbers(
    ceip_home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CEIP_BLOCK_PLUGINS", "declared,identifiers,limits,ceip_core.default_plugins.identifiers")
    monkeypatch.setenv("CEIP_LOAD_PLUGINS", "")
    with caplog.at_level(logging.WARNING, logger="ceip_core.plugins"):
        plugins = Plugins.load()
    assert [s.name for s in plugins.scrubbers] == ["declared", "identifiers", "limits"]
    warned = [r.getMessage() for r in caplog.records if "no switch can block" in r.getMessage()]
    assert len(warned) == 3 and any("identifiers" in w for w in warned)


def test_tracing_logs_the_registration_hooks_and_the_lifecycle_hooks(sample, monkeypatch, caplog) -> None:
    """``sample`` names the fixture products' module in CEIP_PLUGIN_MODULES; this loads it again, traced."""
    monkeypatch.setenv("CEIP_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="ceip_core.plugins"):
        plugins = Plugins.load(entry_points=False)
        assert set(plugins.products) == {"sample", "other"}
        plugins.consent_changed("sample", "in")
    logged = [r.getMessage() for r in caplog.records]
    assert "ceip_register_products [hook] of ceip_sample" in logged
    assert "  ceip_sample registered product 'sample'" in logged
    assert any(m.strip().startswith("ceip_consent_changed [hook]") for m in logged), logged

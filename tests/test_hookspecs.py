"""Hook specs (``ceip_core/hookspecs.py``): every hook is typed, documented and called in a known order, and the
marker is exported by the package. Loading a plugin set is tested in test_plugins.py."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import ceip_core
from ceip_core import hookspecs
from ceip_core.cli import cli
from ceip_core.consent import Consent, State
from ceip_core.hookspecs import hookimpl
from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec
from ceip_core.statedb import StateDB

DOCS = Path(__file__).parents[1] / "docs" / "plugin-hooks.md"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("ceip_"))

SPEC = ProductSpec(
    "every",
    "Every Hook",
    ["every-app"],
    [MetricSpec("used", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Times used.")],
)


class Identity:
    name = "identity"
    order = 500

    def scrub(self, report, ctx):
        return report


class NullTransport:
    def __init__(self, url: str) -> None:
        self.url = url

    async def send(self, batch):
        return []

    async def flush(self, timeout=None):
        return True

    async def close(self):
        return None


class NullCollector:
    name = "null"
    interval_s = 60.0

    async def collect(self, ctx):
        return []


class EveryHook:
    """Implements every hook and records the order they are called in."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def ceip_register_products(self, register):
        self.calls.append("ceip_register_products")
        register(SPEC)

    @hookimpl
    def ceip_register_scrubbers(self, register):
        self.calls.append("ceip_register_scrubbers")
        register(Identity())

    @hookimpl
    def ceip_register_transports(self, register):
        self.calls.append("ceip_register_transports")
        register("null", NullTransport)

    @hookimpl
    def ceip_register_collectors(self, register):
        self.calls.append("ceip_register_collectors")
        register(NullCollector())

    @hookimpl
    def ceip_plugins_loaded(self, plugins):
        self.calls.append("ceip_plugins_loaded")

    @hookimpl
    def ceip_report_spooled(self, report):
        self.calls.append("ceip_report_spooled")

    @hookimpl
    def ceip_consent_changed(self, product, state):
        self.calls.append(f"ceip_consent_changed:{product}:{state.value}")


def test_a_plugin_implementing_every_hook_is_called_in_lifecycle_order(
    ceip_home: Path, ceip_plugins, ceip_allow
) -> None:
    plugin = EveryHook()
    assert {name for name in dir(plugin) if name.startswith("ceip_")} == set(HOOKS)
    plugins = ceip_plugins(plugin, test_process=True)  # the test records as "every" in its own process
    assert plugin.calls == ["ceip_plugins_loaded"]

    ceip_allow("every")
    result = CliRunner().invoke(cli, ["consent", "in", "every"])
    assert result.exit_code == 0, result.output
    with ceip_core.recorder("every", "1.0") as rec:
        rec.feature("used")
    assert plugins.transport_for("null://x").url == "null://x"
    assert [c.name for c in plugins.collectors] == ["null", "process-observer", "system"]

    assert plugin.calls == [
        "ceip_plugins_loaded",
        "ceip_register_products",  # the allowlist fixture looks the product up
        "ceip_consent_changed:every:in",
        "ceip_register_scrubbers",  # sealing needs the pipeline
        "ceip_report_spooled",
        "ceip_register_transports",
        "ceip_register_collectors",
    ]
    assert [s.name for s in plugins.scrubbers] == ["declared", "identifiers", "limits", "identity"]
    assert Consent(StateDB(ceip_home)).state("every") is State.IN


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    assert re.search(rf"^### `{hook}\(", DOCS.read_text(), re.M), f"{hook} is missing from {DOCS.name}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_is_typed_and_documents_its_parameters(hook: str) -> None:
    func = getattr(hookspecs, hook)
    signature = inspect.signature(func)
    doc = inspect.getdoc(func) or ""
    assert signature.return_annotation != inspect.Signature.empty
    for name, param in signature.parameters.items():
        assert param.annotation != inspect.Parameter.empty, name
        assert f":param {name}:" in doc
    assert ":returns:" in doc


def test_hookimpl_is_exported_by_the_package_without_loading_pluggy_on_import() -> None:
    import ceip_core

    assert ceip_core.hookimpl is hookimpl
    probe = "import ceip_core, sys; print('pluggy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"

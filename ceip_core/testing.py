"""A pytest plugin for plugin authors and for ceip's own tests (registered as ``pytest11`` entry point).

Fixtures:
- ``ceip_home``: a fresh state folder for the test, isolated from the machine's policy and environment
  (the ``CEIP_*`` switches, the proxy variables), with an empty allowlist of its own (``CEIP_ALLOWLIST``):
  every product is inert until allowlisted.
- ``ceip_plugins``: ``ceip_plugins(*plugins)`` loads a plugin set with the built-ins plus ``plugins`` and
  makes it the process-wide one; it is always unloaded after the test.
- ``ceip_allow``: ``ceip_allow(*products)`` allowlists every executable the given products declare.
- ``ceip_participating``: ``ceip_participating(plugin, product)`` does all three for one product plugin and
  opts the product in; it returns the spool, where ``queued_reports(spool)`` shows what would be sent. The
  test process is declared as one of the product's executables (see below), so that a recorder made in
  the test itself records.

Recording in the test process. A recorder records only in a process that is one of its product's declared
and allowlisted executables (``ceip_core.executables``), and a test runs in ``python``, not in the
product. Declare the test process instead of weakening the check: ``TEST_EXECUTABLE`` is the name the
test interpreter has (the same in every interpreter the test starts with ``sys.executable``), and

- a test-only product plugin lists it among its spec's ``executables`` (``declare_test_process(spec)``
  returns the spec with it added), so that subprocesses that load the plugin see it declared too;
- ``ceip_plugins(plugin, test_process=True)`` declares it for every product of the plugins it loads, in
  this process only (what ``ceip_participating`` does).

``ceip_allow`` then allowlists it with the product's other declared executables.

And a helper for stand-in executables: ``wait_for_process_name(pid, name)``.

For transport authors, the conformance suite (``ceip_core.conformance``): subclass ``TransportConformance``
in a test module and give it the fixture ``ceip_transport_under_test``, a ``TransportHarness`` on your
transport and a real destination of its protocol (docs/transports.md, "Testing a transport").
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

from ceip_core.allowlist import Allowlist, default_path, make_entry
from ceip_core.conformance import NotApplicable as NotApplicable
from ceip_core.conformance import TransportConformance as TransportConformance
from ceip_core.conformance import TransportHarness as TransportHarness
from ceip_core.consent import Consent
from ceip_core.executables import process_name
from ceip_core.plugins import Plugins, get_plugins, set_plugins
from ceip_core.records import ProductSpec
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB

#: The name of the test process (and of any interpreter a test starts with ``sys.executable``), as a
#: recorder checks it against the product's declared executables: e.g. ``python3.12``.
TEST_EXECUTABLE = process_name()


#: The proxy settings the HTTPS transport reads: a test's uploads to loopback must not go to the machine's proxy.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")


def declare_test_process(spec: ProductSpec) -> ProductSpec:
    """``spec`` with the test process among its declared executables, for products that exist only in
    tests (or for a test that records as a real product in its own process)."""
    if TEST_EXECUTABLE in spec.executables:
        return spec
    return attrs.evolve(spec, executables=(*spec.executables, TEST_EXECUTABLE))


class _DeclaringTestProcess(Plugins):
    """A plugin set whose products all declare the test process (``ceip_plugins(test_process=True)``)."""

    @functools.cached_property
    def products(self) -> dict[str, ProductSpec]:
        declared = Plugins.products.func(self)  # type: ignore[attr-defined]  # the uncached registrations
        return {k: declare_test_process(spec) for k, spec in declared.items()}


@pytest.fixture
def ceip_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new, empty state folder, set as ``CEIP_HOME``; no machine policy applies, nothing is allowlisted."""
    home = tmp_path / "ceip-home"
    home.mkdir()
    monkeypatch.setenv("CEIP_HOME", str(home))
    monkeypatch.setenv("CEIP_ALLOWLIST", str(tmp_path / "allowlist.toml"))
    monkeypatch.setenv("CEIP_POLICY_FILE", str(tmp_path / "no-policy.toml"))
    switches = (
        "CEIP_CONSENT_CAP",
        "CEIP_LOAD_PLUGINS",
        "CEIP_BLOCK_PLUGINS",
        "CEIP_PLUGIN_MODULES",
        "CEIP_TRACE_PLUGINS",
    )
    for name in (*switches, *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def ceip_plugins() -> Iterator[Callable[..., Plugins]]:
    """Load built-ins plus the given plugins (no installed entry points unless asked); with
    ``test_process=True`` every product declares the test process among its executables."""

    def load(*plugins: object, entry_points: bool = False, test_process: bool = False) -> Plugins:
        loaded = (_DeclaringTestProcess if test_process else Plugins).load(entry_points=entry_points, extra=plugins)
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


@pytest.fixture
def ceip_participating(
    ceip_home: Path, ceip_plugins: Callable[..., Plugins], ceip_allow: Callable[..., Allowlist]
) -> Callable[[object, str], Spool]:
    """``ceip_participating(plugin, product)``: the built-ins plus ``plugin``, ``product`` allowlisted and
    opted in, in the test's fresh state folder, with the test process declared as one of its executables.
    Returns that folder's spool."""

    def participate(plugin: object, product: str) -> Spool:
        ceip_plugins(plugin, test_process=True)
        ceip_allow(product)
        Consent(StateDB(ceip_home)).opt_in(product)
        return Spool(StateDB(ceip_home))

    return participate


@pytest.fixture
def ceip_agent_once(ceip_home: Path) -> Callable[[], list[dict[str, Any]]]:
    """``ceip_agent_once()``: run the agent's whole cycle once in the test's state folder, as ``ceip agent
    --once`` would (every registered collector, a product's own in its worker thread with its time budget,
    then a seal of everything held: every run seals), with the process-wide plugin set; returns the
    reports queued, as ``queued_reports`` does. For testing a product's collector end to end."""

    def run() -> list[dict[str, Any]]:
        from ceip_core.agent import AgentConfig, run_agent

        run_agent(AgentConfig(folder=ceip_home, once=True, seal_every=0.0), get_plugins())
        return queued_reports(Spool(StateDB(ceip_home)))

    return run


def queued_reports(spool: Spool) -> list[dict[str, Any]]:
    """The queued reports, as the JSON the receiving service would get."""
    return [orjson.loads(item.data) for item in spool.items() if item.kind == "report"]


def wait_for_process_name(pid: int, name: str, timeout: float = 10.0) -> bool:
    """Wait until the kernel knows process ``pid`` as ``name`` (what the process observer matches on
    Linux); True at once elsewhere, where there is no /proc to ask."""
    if not sys.platform.startswith("linux"):
        return True
    comm = Path(f"/proc/{pid}/comm")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if comm.read_text().strip() == name[:15]:
            return True
        time.sleep(0.01)
    return False

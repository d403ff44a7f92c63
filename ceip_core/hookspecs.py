"""Hook specifications: every way a plugin can extend ceip. The single source of truth for the reference
in docs/plugin-hooks.md (a test fails when a hook is missing there).

Registration hooks hand the plugin a ``register`` callback instead of collecting return values: it is
typed, and it rejects duplicates with a clear error. Hooks are synchronous; asynchronous work lives on
the objects plugins register (a Transport's ``send``, a Collector's ``collect``). Impls may accept fewer
arguments than the spec names; the core always calls hooks with keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ceip_core.collectors import Collector
    from ceip_core.consent import State
    from ceip_core.plugins import Plugins
    from ceip_core.records import ProductSpec, Report
    from ceip_core.scrubbing import Scrubber
    from ceip_core.transport import TransportFactory

PROJECT = "ceip"
_hookspec = pluggy.HookspecMarker(PROJECT)  # private: only this module declares hooks
hookimpl = pluggy.HookimplMarker(PROJECT)
"""The marker a plugin decorates its hook implementations with (also ``from ceip_core import hookimpl``)."""

# The ``register`` callback each registration hook hands a plugin, typed per kind, for plugin authors'
# annotations: ``def ceip_register_products(register: RegisterProducts) -> None``.
RegisterProducts = Callable[["ProductSpec"], None]
"""``register(spec)``: one product. .. versionadded:: 0.1"""
RegisterScrubbers = Callable[["Scrubber"], None]
"""``register(scrubber)``: one scrubber. .. versionadded:: 0.1"""
RegisterTransports = Callable[[str, "TransportFactory"], None]
"""``register(scheme, factory)``: one URL scheme and the factory of its transports. .. versionadded:: 0.1"""
RegisterCollectors = Callable[["Collector"], None]
"""``register(collector)``: one collector (a product's own, with ``product`` set, since 0.2).
.. versionadded:: 0.1"""


# --------------------------------------------------------------------------------------------------
# Registration: what plugins add
# --------------------------------------------------------------------------------------------------


@_hookspec
def ceip_register_products(register: RegisterProducts) -> None:
    """Register the products this plugin describes.

    A product is inert until it is registered here: nothing is recorded, observed or sent for a
    product id that no plugin registers. Its :class:`~ceip_core.records.ProductSpec` lists the
    executables the agent may observe and every metric the product may record.

    :param register: call once per product with its ``ProductSpec``. Registering an id twice (from
        any plugins) raises ``PluginError``.
    :returns: nothing. Not async.
    """


@_hookspec
def ceip_register_scrubbers(register: RegisterScrubbers) -> None:
    """Register scrubbers, which transform every report before it is written to disk.

    The pipeline runs all scrubbers sorted by ``(order, name)``; the built-in ones use orders 100
    (declared fields only), 200 (identifiers) and 300 (limits). A scrubber returns a new report or None
    to drop it; one that raises drops the report (fail closed).

    :param register: call once per :class:`~ceip_core.scrubbing.Scrubber`. A duplicate name raises.
    :returns: nothing. Not async.
    """


@_hookspec
def ceip_register_transports(register: RegisterTransports) -> None:
    """Register transports by URL scheme (``file``, ``https``, or one of your own).

    The uploader picks the transport whose scheme matches the configured destination URL and calls
    the factory with that URL. The transport object's ``send`` is async.

    :param register: call as ``register(scheme, factory)``; ``factory(url) -> Transport``. A scheme
        registered twice raises.
    :returns: nothing. Not async.
    """


@_hookspec
def ceip_register_collectors(register: RegisterCollectors) -> None:
    """Register collectors that the agent runs on their schedules.

    Collectors run in the agent only, and see only products that are allowlisted and opted in.

    :param register: call once per :class:`~ceip_core.collectors.Collector`. A duplicate name raises.
    :returns: nothing. Not async (the collector's ``collect`` is).
    """


# --------------------------------------------------------------------------------------------------
# Lifecycle: what plugins hear about
# --------------------------------------------------------------------------------------------------


@_hookspec
def ceip_plugins_loaded(plugins: Plugins) -> None:
    """Called once all plugins are registered and checked, before anything uses them.

    :param plugins: the loaded plugin set (products, scrubbers, transports, collectors).
    :returns: nothing. Not async.
    """


@_hookspec
def ceip_report_spooled(report: Report) -> None:
    """Called after a scrubbed report was durably written to the spool.

    Runs in whatever process sealed the report (a product's or the agent), so keep it fast and never
    raise: an exception is logged and otherwise ignored.

    :param report: the report exactly as stored.
    :returns: nothing. Not async.
    """


@_hookspec
def ceip_consent_changed(product: str, state: State) -> None:
    """Called in the process that changed a product's consent, after the change is committed.

    Other processes learn of the change by watching the state folder (within one second); this hook is
    for plugins that keep their own state about a product.

    :param product: the product id.
    :param state: the new state (``State.IN`` or ``State.OUT``).
    :returns: nothing. Not async.
    """


__all__ = [
    "PROJECT",
    "RegisterCollectors",
    "RegisterProducts",
    "RegisterScrubbers",
    "RegisterTransports",
    "ceip_consent_changed",
    "ceip_plugins_loaded",
    "ceip_register_collectors",
    "ceip_register_products",
    "ceip_register_scrubbers",
    "ceip_register_transports",
    "ceip_report_spooled",
    "hookimpl",
]

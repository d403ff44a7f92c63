"""Loading plugins, and a typed facade over ``pm.hook`` so that call sites are checked.

Built-in behaviour is registered exactly like a third-party plugin: the modules listed in
``ceip_core.default_plugins.DEFAULT_PLUGINS`` first, then every entry point in the ``ceip`` group.

Environment switches (read at load time):
- ``CEIP_LOAD_PLUGINS``: comma-separated entry-point names to load; others are skipped ("" loads none).
- ``CEIP_BLOCK_PLUGINS``: comma-separated plugin names (entry points or built-ins) not to load; the
  privacy scrubbers (``default_plugins.ESSENTIAL``) stay, with a warning.
- ``CEIP_PLUGIN_MODULES``: comma-separated importable modules to register as plugins without installing
  them (for plugin development and tests, like ``pytest -p``).
- ``CEIP_TRACE_PLUGINS=1``: log every hook call and result at DEBUG level on ``ceip_core.plugins``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from functools import cached_property, partial
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pluggy

from ceip_core import hookspecs
from ceip_core.collectors import Collector
from ceip_core.records import ProductSpec, Report
from ceip_core.scrubbing import Scrubber, ordered
from ceip_core.transport import Transport, TransportFactory

log = logging.getLogger(__name__)


class PluginError(Exception):
    """A plugin set that cannot work: a plugin that fails to import or to register, a duplicate
    registration, an unknown hook, a missing product. Whatever a plugin raised while loading becomes one,
    naming the plugin, so every command can say so in a line instead of a traceback."""


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def make_manager(
    *, entry_points: bool = True, modules: bool = True, extra: Iterable[object] = ()
) -> pluggy.PluginManager:
    """A plugin manager with the built-ins, the installed entry points, the ``CEIP_PLUGIN_MODULES`` (unless
    ``modules`` is false) and ``extra`` plugins.

    ``check_pending()`` runs last, so a misspelled hook implementation fails here, loudly.
    """
    from ceip_core.default_plugins import DEFAULT_PLUGINS, ESSENTIAL

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = _env_list("CEIP_BLOCK_PLUGINS") or set()
    for name in DEFAULT_PLUGINS:
        if name not in blocked and name.rsplit(".", 1)[-1] not in blocked:
            _register_module(pm, name, "built in")
        elif name in ESSENTIAL:
            log.warning("CEIP_BLOCK_PLUGINS names %s, a privacy scrubber no switch can block; it stays", name)
            _register_module(pm, name, "built in")
    if entry_points:
        allowed = _env_list("CEIP_LOAD_PLUGINS")
        for name in blocked - ESSENTIAL:  # pluggy's block would also unregister a built-in of that name
            pm.set_blocked(name)
        for entry in [None] if allowed is None else sorted(allowed):
            _load_entry_points(pm, entry)
    for name in sorted((_env_list("CEIP_PLUGIN_MODULES") if modules else None) or ()):
        if name not in blocked:
            _register_module(pm, name, "named by CEIP_PLUGIN_MODULES")
    for plugin in extra:
        if not pm.is_registered(plugin):
            _registered(pm, plugin, partial(pm.register, plugin))
    _registered(pm, "a plugin", pm.check_pending)
    if os.environ.get("CEIP_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda text: log.debug("%s", text.rstrip()))
        pm.enable_tracing()
    return pm


def _failed(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _register_module(pm: pluggy.PluginManager, name: str, origin: str) -> None:
    """Import and register the plugin module ``name`` (``origin`` says where it was listed)."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise PluginError(f"plugin module {name!r} ({origin}) cannot be imported: {_failed(exc)}") from exc
    _registered(pm, name, partial(pm.register, module, name=name))


def _registered(pm: pluggy.PluginManager, plugin: object, register: Callable[[], object]) -> None:
    """Run ``register`` (a registration, or the check of what was registered): a hook implementation that
    names no hook, or takes arguments its hook does not give, is a PluginError."""
    try:
        register()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"invalid plugin: {exc}") from exc
    except Exception as exc:
        raise PluginError(f"plugin {plugin!s} cannot be registered: {_failed(exc)}") from exc


def _load_entry_points(pm: pluggy.PluginManager, name: str | None) -> None:
    """Load the installed plugins (the entry point ``name``, or all); one that fails is a PluginError that
    names the entry points not loaded, the failing one among them, and how to skip one."""
    try:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT, name=name)
    except Exception as exc:
        from importlib.metadata import entry_points

        left = sorted(
            {
                ep.name
                for ep in entry_points(group=hookspecs.PROJECT)
                if (name is None or ep.name == name) and not pm.has_plugin(ep.name) and not pm.is_blocked(ep.name)
            }
        )
        detail = exc if isinstance(exc, pluggy.PluginValidationError) else _failed(exc)
        raise PluginError(
            f"an installed plugin cannot be loaded (not loaded: {', '.join(left) or '?'}): {detail}; "
            "CEIP_BLOCK_PLUGINS=<name> skips one"
        ) from exc


def _collect(caller: pluggy.HookCaller, what: str, key: Callable[[Any], str]) -> dict[str, tuple[str, Any]]:
    """Run a registration hook, one plugin at a time, so that each registration is known with the plugin
    that made it (``{key: (plugin name, item)}``) and a second one under the same key names both.

    The implementations are called here, not through pluggy's hook call, so ``CEIP_TRACE_PLUGINS`` is
    honoured here too: each call and each registration is logged at DEBUG level."""
    found: dict[str, tuple[str, Any]] = {}
    trace = bool(os.environ.get("CEIP_TRACE_PLUGINS"))
    for impl in caller.get_hookimpls():
        if trace:
            log.debug("%s [hook] of %s", caller.name, impl.plugin_name)

        def register(obj: Any, *more: Any, plugin: str = impl.plugin_name) -> None:
            item = (obj, *more) if more else obj
            name = key(item)
            if name in found:
                raise PluginError(f"{what} {name!r} is registered twice: by {found[name][0]} and by {plugin}")
            found[name] = (plugin, item)
            if trace:
                log.debug("  %s registered %s %r", plugin, what, name)

        try:
            impl.function(**({"register": register} if "register" in impl.argnames else {}))
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name} failed in {caller.name}: {_failed(exc)}") from exc
    return found


class Plugins:
    """The loaded plugin set, with one typed method or property per hook."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.hook = pm.hook

    @classmethod
    def load(cls, *, entry_points: bool = True, modules: bool = True, extra: Iterable[object] = ()) -> Plugins:
        """Load, check and announce a plugin set (see :func:`make_manager`)."""
        plugins = cls(make_manager(entry_points=entry_points, modules=modules, extra=extra))
        try:
            plugins.hook.ceip_plugins_loaded(plugins=plugins)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"a ceip_plugins_loaded hook failed: {_failed(exc)}") from exc
        if entry_points and modules and not extra:  # the environment's own plugin set: worth remembering
            plugins._remember()
        return plugins

    def _remember(self) -> None:
        """Write this environment's plugin index (``ceip_core.plugin_index``), so that a later process can
        tell which plugins implement a lifecycle hook without loading them. Never raises."""
        try:
            from ceip_core import plugin_index
            from ceip_core.statedb import state_dir

            hooks: dict[str, tuple[str | None, list[str]]] = {}
            for name, plugin in self.pm.list_name_plugin():
                if plugin is None:  # blocked
                    continue
                module = plugin if isinstance(plugin, ModuleType) else sys.modules.get(type(plugin).__module__)
                file = getattr(module, "__file__", None)
                hooks[name] = (file, [h.name for h in self.pm.get_hookcallers(plugin) or ()])
            plugin_index.refresh(state_dir(), hooks)
        except Exception:
            log.exception("could not write the plugin index")

    # -- registrations ------------------------------------------------------------------------------

    @cached_property
    def _products(self) -> dict[str, tuple[str, ProductSpec]]:
        return dict(sorted(_collect(self.hook.ceip_register_products, "product", lambda s: s.id).items()))

    @cached_property
    def products(self) -> dict[str, ProductSpec]:
        """Registered products by id."""
        return {product: spec for product, (_, spec) in self._products.items()}

    @cached_property
    def scrubbers(self) -> tuple[Scrubber, ...]:
        """Registered scrubbers in pipeline order."""
        found = _collect(self.hook.ceip_register_scrubbers, "scrubber", lambda s: s.name)
        return tuple(ordered(scrubber for _, scrubber in found.values()))

    @cached_property
    def transports(self) -> dict[str, TransportFactory]:
        """Transport factories by URL scheme."""
        found = _collect(self.hook.ceip_register_transports, "transport scheme", lambda pair: pair[0])
        return {scheme: factory for scheme, (_, (_, factory)) in sorted(found.items())}

    @cached_property
    def collectors(self) -> tuple[Collector, ...]:
        """Registered collectors, by name. A product's collector (``product`` set) must come from the plugin
        that registers that product, and one collector at most gives machine facts (``machine_facts``):
        anything else is a :class:`PluginError` naming the plugins."""
        found = _collect(self.hook.ceip_register_collectors, "collector", lambda c: c.name)
        facts = [(plugin, c.name) for plugin, c in found.values() if getattr(c, "machine_facts", False)]
        if len(facts) > 1:
            named = " and ".join(f"{c!r} of {plugin}" for plugin, c in sorted(facts))
            raise PluginError(f"machine facts are collected twice: by {named}; only one collector may give them")
        for plugin, collector in found.values():
            product = getattr(collector, "product", None)
            if product is None:
                continue
            owner = self._products.get(product, (None,))[0]
            if owner is None:
                raise PluginError(
                    f"collector {collector.name!r} of {plugin} is for {product!r}, which no plugin registers"
                )
            if owner != plugin:
                raise PluginError(
                    f"collector {collector.name!r} of {plugin} is for {product!r}, which {owner} registers: "
                    "only a product's own plugin may collect its metrics"
                )
        return tuple(found[name][1] for name in sorted(found))

    def product(self, product_id: str) -> ProductSpec:
        """The spec of ``product_id``; the error names the products that are known."""
        try:
            return self.products[product_id]
        except KeyError:
            known = ", ".join(self.products) or "none: install a product plugin"
            raise PluginError(f"unknown product {product_id!r} (known: {known})") from None

    def transport_for(self, url: str) -> Transport:
        """A transport for ``url``, chosen by its scheme. A URL must name its scheme: a bare word or path
        is refused, never taken for a folder (``file:///path`` names one)."""
        scheme = urlsplit(url).scheme
        factory = self.transports.get(scheme)
        known = ", ".join(f"{s}://" for s in self.transports)
        if not scheme:
            raise PluginError(f"{url!r} is not a URL: give one with a scheme (known: {known}), e.g. file:///path")
        if factory is None:
            raise PluginError(f"no transport for {scheme!r} URLs like {url!r} (known schemes: {known})")
        return factory(url)

    # -- lifecycle ----------------------------------------------------------------------------------

    def report_spooled(self, report: Report) -> None:
        """Announce a spooled report; a failing plugin is logged, never propagated to the caller."""
        try:
            self.hook.ceip_report_spooled(report=report)
        except Exception:
            log.exception("a ceip_report_spooled hook failed")

    def consent_changed(self, product: str, state: object) -> None:
        try:
            self.hook.ceip_consent_changed(product=product, state=state)
        except Exception:
            log.exception("a ceip_consent_changed hook failed")

    # -- introspection ------------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """Loaded plugins with their distribution version and the hooks they implement."""
        versions = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda pair: pair[0]):
            if plugin is None:
                continue
            dist = versions.get(id(plugin))
            out.append(
                {
                    "name": name,
                    "version": dist.version if dist is not None else None,
                    "distribution": dist.project_name if dist is not None else None,
                    "builtin": isinstance(plugin, ModuleType) and plugin.__name__.startswith("ceip_core."),
                    "hooks": sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()),
                }
            )
        return out


_loaded: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _loaded
    if _loaded is None:
        _loaded = Plugins.load()
    return _loaded


def set_plugins(plugins: Plugins | None) -> None:
    """Replace the process-wide plugin set (tests and embedders; None reloads on next use)."""
    global _loaded
    _loaded = plugins

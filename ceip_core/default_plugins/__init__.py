"""Built-in behaviour, registered through the same hooks as any third-party plugin."""

DEFAULT_PLUGINS: tuple[str, ...] = (
    "ceip_core.default_plugins.declared",
    "ceip_core.default_plugins.identifiers",
    "ceip_core.default_plugins.limits",
    "ceip_core.default_plugins.file_transport",
    "ceip_core.default_plugins.http_transport",
    "ceip_core.default_plugins.system_collector",
    "ceip_core.default_plugins.process_observer",
)
"""Module names of the built-in plugins, loaded before entry points. Block one with
``CEIP_BLOCK_PLUGINS=<last part of its name>``, except the :data:`ESSENTIAL` ones."""

ESSENTIAL: frozenset[str] = frozenset(
    {
        "ceip_core.default_plugins.declared",
        "ceip_core.default_plugins.identifiers",
        "ceip_core.default_plugins.limits",
    }
)
"""The privacy scrubbers: no switch blocks them (as pytest keeps plugins no ``-p no:`` removes). Without
them whatever a product records, identifiers and undeclared names included, would reach the disk."""

"""A plugin whose product registration raises (tests/test_plugin_failures.py)."""

from collections.abc import Callable

from ceip_core.hookspecs import hookimpl
from ceip_core.records import ProductSpec


@hookimpl
def ceip_register_products(register: Callable[[ProductSpec], None]) -> None:
    raise ValueError("no products today")

"""A plugin whose scrubber registration raises (tests/service/test_serve.py)."""

from collections.abc import Callable

from ceip_core.hookspecs import hookimpl
from ceip_core.scrubbing import Scrubber


@hookimpl
def ceip_register_scrubbers(register: Callable[[Scrubber], None]) -> None:
    raise ValueError("no scrubbers today")

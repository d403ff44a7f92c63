"""A logger that imports :mod:`logging` only when something is logged.

The recording path (recording, consent, statedb, identity) has to import in a few milliseconds, and
``logging`` alone costs several; those modules log only when something goes wrong.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class LazyLogger:
    """Stands in for ``logging.getLogger(name)``; the real logger is fetched on first use."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        return getattr(logging.getLogger(self._name), attr)

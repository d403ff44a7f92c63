"""ceip: a Customer Experience Improvement Program framework.

Products record usage with :func:`recorder`; everything else (plugins, spool, agent, receiving service)
lives in submodules. Importing this package loads nothing but the standard library, so that a product
pays almost nothing to carry it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ceip_core.recording import Recorder

__version__ = "0.1.0"


def recorder(
    product: str, version: str = "", *, home: str | os.PathLike[str] | None = None, seal_every: float | None = 86400.0
) -> Recorder:
    """Start recording ``product`` in this process; see :class:`ceip_core.recording.Recorder`.

    ``home`` overrides the state folder (default ``$CEIP_HOME`` or the platform's data folder);
    ``seal_every`` seals a report periodically for long-running products (None: only on close).
    Never raises: if consent cannot be read, the recorder simply records nothing.
    """
    from ceip_core.recording import Recorder

    return Recorder(product, version, home=home, seal_every=seal_every)


__all__ = ["__version__", "recorder"]

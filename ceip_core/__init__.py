"""ceip: a Customer Experience Improvement Program framework.

Products record usage with :func:`recorder`; what they sealed is sent by a background process after they
exit, without their calling anything (:func:`spawn_uploader` starts it by hand). Everything else (plugins,
spool, agent, receiving service) lives in submodules. Importing this package loads nothing but the
standard library, so that a product pays almost nothing to carry it.
"""

from __future__ import annotations

import os

from ceip_core.version import __version__ as __version__

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would cost more than all of this package
if TYPE_CHECKING:
    from ceip_core.hookspecs import hookimpl as hookimpl  # for type checkers; at run time see __getattr__
    from ceip_core.recording import Recorder


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


def spawn_uploader(url: str | None = None, *, home: str | os.PathLike[str] | None = None) -> bool:
    """Upload what is queued in a detached background process, so the product can exit at once.

    The recorder already starts one after the product exits; call this to send sooner, or to another
    ``url``. ``url`` defaults to the ``upload-url`` setting
    (``ceip config set upload-url URL``). Returns True if an upload was started; never raises and never
    waits on the network. See :func:`ceip_core.detached.spawn_uploader`.
    """
    from ceip_core.detached import spawn_uploader as spawn

    return spawn(url, home=home)


def __getattr__(name: str) -> object:
    """``from ceip_core import hookimpl``: the marker a product's plugin decorates its hooks with, as
    pluggy's own example, pytest and datasette export theirs. Loaded on first use, so that importing
    ``ceip_core`` (what a product does) stays standard-library only."""
    if name == "hookimpl":
        from ceip_core.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'ceip_core' has no attribute {name!r}")


__all__ = ["__version__", "hookimpl", "recorder", "spawn_uploader"]

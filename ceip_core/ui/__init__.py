"""A ready "Customer Feedback Options" dialog for a product's Help menu, and the first-run question.

    from ceip_core import ui
    ui.ask_once("analyst", master=root)       # at start-up: asks once per product, never again
    ui.show_options("analyst", master=root)   # Help > Customer Feedback Options; returns when closed

Both use tkinter from the standard library, loaded only when a window is shown (``import ceip_core`` never
loads it), and change consent only through ``ceip_core.consent``, as the ``ceip`` command does. Without a
``master`` they open their own tk root (``ceip options`` does that). The words go through gettext's ``ceip``
domain (:mod:`ceip_core.ui.i18n`); pass ``translations`` to use a product's own catalog.
"""

from __future__ import annotations

import gettext
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ceip_core.plugins import PluginError, Plugins, get_plugins
from ceip_core.statedb import StateDB, state_dir
from ceip_core.ui import i18n
from ceip_core.ui.model import FirstRun, OptionsModel

if TYPE_CHECKING:
    import tkinter as tk


class UIError(Exception):
    """A dialog that cannot be shown (no display, unknown product), with the reason in words."""


class _Dialog(Protocol):
    window: tk.Toplevel


def _options_model(
    products: list[str] | None, plugins: Plugins | None, translations: gettext.NullTranslations | None
) -> OptionsModel:
    try:
        return OptionsModel(
            plugins or get_plugins(), StateDB(state_dir()), products, translations or i18n.translations()
        )
    except PluginError as exc:
        raise UIError(str(exc)) from None


def _show(master: tk.Misc | None, build: Callable[[tk.Misc], _Dialog]) -> None:
    """Build the dialog in ``master`` (or in a hidden root of our own) and wait until it is closed."""
    try:
        import tkinter as tk
    except ImportError as exc:  # a Python built without Tk (see docs/users.md)
        raise UIError(f"cannot open a window: this Python has no tkinter ({exc})") from None

    if master is not None:
        master.wait_window(build(master).window)
        return
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        raise UIError(f"cannot open a window: {exc}") from None
    root.withdraw()
    try:
        root.wait_window(build(root).window)
    finally:
        root.destroy()


def show_options(
    product: str | None = None,
    *,
    master: tk.Misc | None = None,
    translations: gettext.NullTranslations | None = None,
    plugins: Plugins | None = None,
) -> None:
    """Show the "Customer Feedback Options" for ``product`` (default: every installed product) until the
    person closes it."""
    from ceip_core.ui.view import OptionsDialog

    model = _options_model(None if product is None else [product], plugins, translations)
    _show(master, lambda parent: OptionsDialog(parent, model))


def ask_once(
    product: str,
    *,
    master: tk.Misc | None = None,
    translations: gettext.NullTranslations | None = None,
    plugins: Plugins | None = None,
) -> bool:
    """At a product's start: ask whether the person wants to take part, unless they were asked before or
    already chose (anywhere), or the machine's policy has participation off. Returns whether it asked;
    when it does not ask it opens no window and needs no display."""
    first_run = FirstRun(_options_model([product], plugins, translations), product)
    if not first_run.should_ask():
        return False
    from ceip_core.ui.view import FirstRunDialog

    _show(master, lambda parent: FirstRunDialog(parent, first_run))
    return True


__all__ = ["UIError", "ask_once", "show_options"]

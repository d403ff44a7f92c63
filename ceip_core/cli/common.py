"""What the ``ceip`` commands share: JSON output, times in words, the plugin set, the spool, settings and
transports, each turned into a clear message when it cannot be had."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from ceip_core import settings
from ceip_core.printable import shown
from ceip_core.spool import Spool, SpoolStats
from ceip_core.statedb import StateDB, state_dir

if TYPE_CHECKING:
    from ceip_core.plugins import Plugins
    from ceip_core.transport import Transport


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def when(ts: float | None) -> str:
    return "never" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def load_plugins() -> Plugins:
    """The plugin set; pluggy, the records and every plugin load here, for the commands that need them."""
    from ceip_core.plugins import PluginError, get_plugins

    try:
        plugins = get_plugins()
        _ = plugins.products  # every command reads them: a plugin failing to register one fails here, in a line
    except PluginError as exc:
        raise click.ClickException(f"cannot load plugins: {exc}") from None
    return plugins


def open_spool() -> Spool:
    return Spool(StateDB(state_dir()))


def check_product(product: str | None, spool: Spool) -> None:
    """Refuse a product this machine knows nothing of: no plugin declares it, no choice was made for it
    and nothing is queued for it (a typo would otherwise show or delete nothing, and say so calmly)."""
    if product is None:
        return
    known = set(load_plugins().products) | set(spool.consent.states()) | spool.products()
    if product not in known:
        raise click.UsageError(f"unknown product {product!r} (known: {', '.join(sorted(known)) or 'none'})")


def setting(name: str) -> str | None:
    return StateDB(state_dir()).read(lambda conn: settings.get(conn, name))


def transport_for(url: str) -> Transport:
    """The transport that sends to ``url``. Sending needs no product plugin and no scrubber (what is queued
    was scrubbed when it was sealed), so if the plugin set cannot load, the built-in transports carry the
    queue, with a warning: an opt-out's deletion request leaves even then (docs/plugin-hooks.md)."""
    from ceip_core.plugins import PluginError, Plugins

    try:
        plugins = load_plugins()
    except click.ClickException as exc:
        click.echo(f"warning: {exc.message}; sending with the built-in transports only", err=True)
        try:
            plugins = Plugins.load(entry_points=False, modules=False)
        except PluginError as inner:
            raise click.ClickException(f"cannot load plugins: {inner}") from None
    try:
        return plugins.transport_for(url)
    except (PluginError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None


def retry_state(stats: SpoolStats) -> dict[str, Any] | None:
    """Items waiting out a retry delay, and the last error, unless an upload succeeded since it."""
    failing = stats.last_error_at is not None and (stats.last_upload is None or stats.last_error_at > stats.last_upload)
    if not stats.waiting and not failing:
        return None
    return {
        "waiting": stats.waiting,
        "next_try": stats.next_attempt,
        "last_error": stats.last_error if failing else None,
        "last_error_at": stats.last_error_at if failing else None,
    }


def describe_retry(stats: SpoolStats) -> str:
    state = retry_state(stats) or {}
    text = f"{stats.waiting} item(s) wait for a retry"
    if stats.waiting:
        text += f"; the next try is at {when(stats.next_attempt)}"
    if state.get("last_error"):
        text += f"; last error: {shown(state['last_error'])} (at {when(state['last_error_at'])})"
    return text


#: What the receiving service needs beyond the client: the ``service`` extra of the distribution.
SERVICE_PACKAGES = ("msgspec", "asyncpg", "jinja2")


def require_service(command: str) -> None:
    """Stop ``ceip COMMAND`` with one line saying what to install when this is a client-only install
    (``pip install ceip`` carries no receiving service; ``pip install 'ceip[service]'`` does)."""
    import importlib

    missing = []
    for name in SERVICE_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise click.ClickException(
            f"ceip {command} needs the receiving service, which this install lacks (missing: "
            f"{', '.join(missing)}): install it with pip install 'ceip[service]'"
        )

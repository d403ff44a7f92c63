"""The ``ceip`` commands that send what is queued, for the person at the machine: where to
(``config``), now (``upload``) or by carrying a folder (``export``).

The client side of the receiving service. Uploads run in the foreground, or detached so that a product
never waits on the network (:mod:`ceip_core.detached`); export carries the queue to an air-gapped service.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ceip_core import settings
from ceip_core.cli.common import describe_retry, emit, open_spool, setting, transport_for
from ceip_core.printable import shown
from ceip_core.statedb import StateDB, state_dir

if TYPE_CHECKING:
    from ceip_core.transport import Transport
    from ceip_core.upload import UploadSummary

# -- sending: where to (ceip config), upload, export -----------------------------------------------------
# The client side of the receiving service. Uploads run in the foreground, or detached so that a product
# never waits on the network (ceip_core.detached); export carries the queue to an air-gapped service.


@click.group("config")
def config() -> None:
    """Settings kept in the state folder (e.g. where to upload)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def config_show(as_json: bool) -> None:
    """Show every setting and its value."""
    values = {name: setting(name) for name in settings.SETTINGS}
    if as_json:
        emit(values)
        return
    for name, about in settings.SETTINGS.items():
        click.echo(f"{name:<12} {shown(values[name] or '(not set)')}    # {about}")


@config.command("set")
@click.argument("name", type=click.Choice(list(settings.SETTINGS)))
@click.argument("value")
def config_set(name: str, value: str) -> None:
    """Set NAME to VALUE, e.g. ceip config set upload-url https://ceip.example.com"""
    if name == "upload-url":
        transport_for(value)  # refuses what no transport takes (unknown scheme, plain http to a remote host ...)
    StateDB(state_dir()).write(lambda conn: settings.put(conn, name, value))
    click.echo(f"{name} = {value}")


@config.command("unset")
@click.argument("name", type=click.Choice(list(settings.SETTINGS)))
def config_unset(name: str) -> None:
    """Remove the setting NAME."""
    StateDB(state_dir()).write(lambda conn: settings.delete(conn, name))
    click.echo(f"{name} is not set.")


def _drain(transport: Transport, url: str, *, waiting_too: bool = False) -> UploadSummary:
    """Send (or export) what is queued; asyncio and the upload loop load here, not with ``ceip config``."""
    import asyncio

    from ceip_core.upload import drain

    async def run() -> UploadSummary:
        try:
            return await drain(open_spool(), transport, waiting_too=waiting_too, destination=url)
        finally:
            await transport.close()

    return asyncio.run(run())


@click.command("upload")
@click.option("--to", "url", help="Destination URL (default: the upload-url setting), e.g. https://ceip.example.com")
@click.option("--detach", is_flag=True, help="Upload in a background process and return at once.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def upload(url: str | None, detach: bool, as_json: bool) -> None:
    """Send what is queued now. One upload runs at a time per state folder."""
    from ceip_core.detached import spawn_uploader, uploader_lock

    url = url or setting("upload-url")
    if not url:
        raise click.UsageError("no upload URL: give --to URL, or set one with 'ceip config set upload-url URL'")
    transport = transport_for(url)  # a bad URL is refused here, before anything is detached or sent
    if detach:
        started = spawn_uploader(url, home=state_dir())
        if as_json:
            emit({"started": started})
        else:
            click.echo("Uploading in the background." if started else "Nothing is due, or an upload is running.")
        return
    with uploader_lock(state_dir()) as free:
        if not free:
            if as_json:
                emit({"busy": True})
            else:
                click.echo("Another upload is running for this state folder; nothing done.")
            return
        summary = _drain(transport, url)
    stats = open_spool().stats()
    headline = f"Sent {summary.accepted} item(s) in {summary.batches} batch(es)."
    _show(summary, as_json, headline, waiting=stats.waiting, next_try=stats.next_attempt)
    if summary.retried or stats.waiting:
        # Not everything went: say so in the exit status, so that a script or cron job notices.
        if not as_json:
            click.echo(describe_retry(stats) + ". They stay queued.")
        sys.exit(1)


def _show(summary: UploadSummary, as_json: bool, headline: str, **extra: Any) -> None:
    if as_json:
        emit({**vars(summary), "retried": summary.retried, **extra})
        return
    click.echo(headline)
    for reason, n in sorted(summary.retry_reasons.items()):
        click.echo(f"  {n} kept to retry later: {reason}")
    for reason, n in sorted(summary.rejected.items()):
        click.echo(f"  {n} refused for good by the receiver: {reason}")


@click.command("export")
@click.option(
    "--to",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the bundle into (created if missing).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def export(folder: Path, as_json: bool) -> None:
    """Move everything queued into a bundle folder of batch files, for a machine with no network: carry the
    folder to the receiving service and run 'ceip import FOLDER' there."""
    url = folder.resolve().as_uri()
    summary = _drain(transport_for(url), url, waiting_too=True)
    _show(summary, as_json, f"Exported {summary.accepted} item(s) into {folder}.", folder=str(folder))

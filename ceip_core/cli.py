"""The ``ceip`` command: what the person at the machine uses to see and control participation.

Human output by default, ``--json`` for scripts. Bad input gets a message that names the problem and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ceip_core import dictionary, settings, statedb, wire
from ceip_core.agent import read_status as read_agent_status
from ceip_core.allowlist import Allowlist, AllowlistError, default_path, make_entry
from ceip_core.consent import Change, Consent, ConsentError, State
from ceip_core.plugins import PluginError, Plugins, get_plugins
from ceip_core.printable import shown
from ceip_core.records import DeletionRequest, Report, UnknownItem
from ceip_core.spool import Spool, SpoolStats
from ceip_core.statedb import StateDB, StateFolderError, folder_error, state_dir
from ceip_core.transport import Transport
from ceip_core.upload import UploadSummary, drain


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _when(ts: float | None) -> str:
    return "never" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plugins() -> Plugins:
    try:
        return get_plugins()
    except PluginError as exc:
        raise click.ClickException(f"cannot load plugins: {exc}") from None


def _spool() -> Spool:
    return Spool(StateDB(state_dir()))


class _Commands(click.Group):
    """The command group; a state folder this user cannot use ends any command with a message naming
    the folder and the fix, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            folder = state_dir()
            in_folder = exc.filename is not None and Path(os.fsdecode(exc.filename)).is_relative_to(folder)
            unusable = folder_error(folder, exc) if isinstance(exc, StateFolderError) or in_folder else None
            if unusable is None:
                raise
            raise click.ClickException(str(unusable)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CEIP_HOME",
    help="State folder (default: $CEIP_HOME, else the platform's data folder).",
)
@click.version_option(package_name="ceip")
def cli(home: Path | None) -> None:
    """ceip: see and control what this machine shares to improve the products you use."""
    if home is not None:
        os.environ["CEIP_HOME"] = str(home)


# -- consent -----------------------------------------------------------------------------------------


@cli.group()
def consent() -> None:
    """Show or change participation, per product."""


def _targets(
    products: Iterable[str], all_: bool, plugins: Plugins, known_states: dict[str, State], opting_in: bool
) -> list[str]:
    products = list(products)
    if all_ and products:
        raise click.UsageError("give product names or --all, not both")
    if all_:
        return sorted(plugins.products) if opting_in else sorted(set(plugins.products) | set(known_states))
    if not products:
        raise click.UsageError("name at least one product, or use --all")
    for product in products:
        # An opt-out is never refused for a product we hold a choice for, even if its plugin is gone.
        if product not in plugins.products and (opting_in or product not in known_states):
            known = ", ".join(plugins.products) or "none installed"
            raise click.UsageError(f"unknown product {product!r} (known: {known})")
    return products


@consent.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def consent_status(as_json: bool) -> None:
    """Show each product's participation."""
    plugins = _plugins()
    c = Consent(StateDB(state_dir()))
    states = c.states()
    allowlist = Allowlist.current()
    rows = []
    for product in sorted(set(plugins.products) | set(states)):
        state = states.get(product, State.UNSET)
        spec = plugins.products.get(product)
        rows.append(
            {
                "product": product,
                "name": spec.display_name if spec is not None else "(not installed)",
                "state": state.value,
                "capped_by_policy": not c.policy.allows(product),
                "allowlisted": spec is not None and allowlist.allows(spec),
                "participating": state is State.IN and c.policy.allows(product),
            }
        )
    if as_json:
        _emit(rows)
        return
    if not rows:
        click.echo("No products installed.")
    for row in rows:
        note = "  (switched off by machine policy)" if row["capped_by_policy"] else ""
        if row["product"] in plugins.products and not row["allowlisted"]:
            note += "  (inert: not allowlisted)"
        label = {
            "in": "participating",
            "out": "not participating (opted out)",
            "unset": "not participating (not asked yet)",
        }[str(row["state"])]
        click.echo(f"{row['product']:<16} {row['name']:<24} {label}{note}")


def _change(products: tuple[str, ...], all_: bool, opting_in: bool, as_json: bool) -> None:
    plugins = _plugins()
    c = Consent(StateDB(state_dir()))
    changes: list[Change] = []
    for product in _targets(products, all_, plugins, c.states(), opting_in):
        try:
            change = c.opt_in(product) if opting_in else c.opt_out(product)
        except ConsentError as exc:
            raise click.ClickException(str(exc)) from None
        plugins.consent_changed(product, change.after)
        changes.append(change)
    if as_json:
        _emit([{**vars(ch), "before": ch.before.value, "after": ch.after.value} for ch in changes])
        return
    for ch in changes:
        if opting_in:
            click.echo(
                f"{ch.product}: participating." + (" A new random machine ID was created." if ch.guid_created else "")
            )
        else:
            parts = [f"{ch.product}: not participating."]
            if ch.reports_deleted:
                parts.append(f"{ch.reports_deleted} queued report(s) deleted.")
            if ch.deletion_queued:
                parts.append("A request to delete what was already sent is queued.")
            if ch.guid_discarded:
                parts.append("No product participates any more; the machine ID was discarded.")
            click.echo(" ".join(parts))


@consent.command("in")
@click.argument("products", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every installed product.")
@click.option("--json", "as_json", is_flag=True)
def consent_in(products: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Take part in the program for PRODUCTS."""
    _change(products, all_, True, as_json)


@consent.command("out")
@click.argument("products", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every product.")
@click.option("--json", "as_json", is_flag=True)
def consent_out(products: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Stop taking part for PRODUCTS: queued reports are deleted and a deletion request is sent."""
    _change(products, all_, False, as_json)


# -- status and review -------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Show the machine ID, the queue, the last upload and what was dropped."""
    spool = _spool()
    stats = spool.stats()
    states = spool.consent.states()
    participating = sorted(p for p, s in states.items() if s is State.IN and spool.consent.policy.allows(p))
    agent = read_agent_status(spool.db.folder)
    data = {
        "state_folder": str(spool.db.folder),
        "guid": spool.consent.guid(),
        "participating": participating,
        "policy": spool.consent.policy.source,
        "queued_reports": stats.reports,
        "queued_deletions": stats.deletions,
        "queued_bytes": stats.bytes,
        "disk_bytes": stats.disk_bytes,
        "quotas": vars(spool.quotas),
        "queued_by_product": stats.by_product,
        "last_upload": stats.last_upload,
        "retry": _retry_state(stats),
        "drops": stats.drops,
        "agent": agent,
    }
    if as_json:
        _emit(data)
        return
    click.echo(f"State folder:   {data['state_folder']}")
    click.echo(f"Machine ID:     {data['guid'] or '(none: no product participates)'}")
    click.echo(f"Participating:  {', '.join(participating) or 'nothing'}")
    click.echo(f"Queued:         {stats.reports} report(s), {stats.deletions} deletion request(s), {stats.bytes} bytes")
    for product, n in sorted(stats.by_product.items()):
        click.echo(f"  {product:<14} {n}")
    q = spool.quotas
    click.echo(
        f"Limits:         {q.max_reports:,} reports, {q.max_bytes / 1e6:g} MB on disk (now "
        f"{stats.disk_bytes / 1e6:.1f} MB), {q.max_age_s / 86400:g} days; beyond them the oldest go first"
    )
    click.echo(f"Last upload:    {_when(stats.last_upload)}")
    if data["retry"] is not None:
        click.echo(f"Retrying:       {_describe_retry(stats)}")
    totals = {
        k: v
        for k, v in stats.drops.items()
        if ":" not in k or k.startswith(("rejected:", "scrubbed:", "scrubber-error:"))
    }
    click.echo("Dropped:        " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "nothing"))
    if stats.drops.get(statedb.DAMAGED):
        click.echo(f"Damaged spool:  {_describe_damage(stats.drops)}")
    click.echo(f"Agent:          {_describe_agent(agent)}")


def _retry_state(stats: SpoolStats) -> dict[str, Any] | None:
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


def _describe_retry(stats: SpoolStats) -> str:
    state = _retry_state(stats) or {}
    text = f"{stats.waiting} item(s) wait for a retry"
    if stats.waiting:
        text += f"; the next try is at {_when(stats.next_attempt)}"
    if state.get("last_error"):
        text += f"; last error: {state['last_error']} (at {_when(state['last_error_at'])})"
    return text


def _describe_damage(drops: dict[str, int]) -> str:
    unmeasured = drops.get(statedb.LOST_UNKNOWN, 0)
    lost = []
    if drops.get(statedb.LOST_REPORTS) or not unmeasured:
        lost.append(f"{drops.get(statedb.LOST_REPORTS, 0)} queued report(s) lost")
    if unmeasured:
        lost.append(f"{unmeasured} time(s) the queue was unreadable or gone: an unknown number of reports lost")
    if drops.get(statedb.LOST_DELETIONS):
        lost.append(f"{drops[statedb.LOST_DELETIONS]} deletion request(s) lost")
    return f"repaired {drops[statedb.DAMAGED]} time(s); " + ", ".join(lost)


def _describe_agent(agent: dict[str, Any]) -> str:
    state = agent["state"]
    if state == "never run":
        return "not running (start it with: ceip agent)"
    sealed = f"{agent.get('reports_sealed', 0)} report(s) sealed, the last {_when(agent.get('last_seal'))}"
    troubles = agent.get("collector_troubles") or {}
    if troubles:  # a product's collector that fails, overruns its budget or gives what it may not
        told = {name: ", ".join(f"{what} {n}" for what, n in sorted(c.items())) for name, c in troubles.items()}
        sealed += "; collector troubles: " + ", ".join(f"{name} ({told[name]})" for name in sorted(told))
    if state in ("starting", "running"):
        observing = ", ".join(agent.get("observing") or {}) or "nothing"
        return f"{state} (pid {agent['pid']}) since {_when(agent.get('started'))}; observing {observing}; {sealed}"
    return f"{state} at {_when(agent.get('updated'))}; {sealed}"


def _describe_item(item: Report | DeletionRequest | UnknownItem) -> list[str]:
    if isinstance(item, DeletionRequest):
        return [f"deletion request {item.request_id}: delete everything held for this machine and {item.product}"]
    if isinstance(item, UnknownItem):
        return [f"item of unknown type {item.type!r}"]
    lines = [
        f"report {item.report_id}  {item.product} {item.product_version}  "
        f"{item.period.start:%Y-%m-%d %H:%M} .. {item.period.end:%Y-%m-%d %H:%M} UTC  machine {item.guid}"
    ]
    for c in item.counters:
        lines.append(f"  count     {c.name}{f' [{c.label}]' if c.label else ''} = {c.value}")
    for h in item.histograms:
        label = f" [{h.label}]" if h.label else ""
        mean = h.sum / h.count if h.count else 0.0
        spread = f"min {h.min:.3g}, mean {mean:.3g}, max {h.max:.3g}"
        lines.append(f"  histogram {h.name}{label}: {h.count} values, {spread}")
    for p in item.problems:
        lines.append(f"  problem   {p.kind}: {p.signature} x{p.count}")
    for k, v in item.config.items():
        lines.append(f"  config    {k} = {v!r}")
    for s in item.sessions:
        lines.append(f"  session   {s.executable} {s.duration_s:.1f}s ended {s.ended.value}")
    if item.system is not None:
        si = item.system
        lines.append(f"  system    {si.os} {si.os_version} {si.arch}, {si.cpu_logical} CPUs, {si.memory_bucket}")
    for k, v in item.diagnostics.items():
        lines.append(f"  diagnostic {k} = {v}")
    return lines


@cli.command()
@click.option("--product", help="Only this product.")
@click.option("--json", "as_json", is_flag=True, help="Exactly the JSON the receiving service will get.")
@click.option("--sent", is_flag=True, help="What was sent in the last 30 days instead, as the receiver got it.")
def review(product: str | None, as_json: bool, sent: bool) -> None:
    """Show exactly what is queued to be sent (with --sent: what was sent)."""
    spool = _spool()
    _check_product(product, spool)
    if sent:
        _review_sent(spool, product, as_json)
        return
    items = spool.items(product)
    decoded = []
    for queued in items:
        try:
            decoded.append(wire.decode_item(queued.data))
        except wire.WireError as exc:
            decoded.append(UnknownItem(type=f"undecodable ({exc.reason})", item_id=queued.item_id))
    if as_json:
        _emit([json.loads(q.data) for q in items])
        return
    if not items:
        click.echo("Nothing is queued." + (f" (for {product})" if product else ""))
        return
    by_product: dict[str, list[str]] = {}
    for queued, item in zip(items, decoded, strict=True):
        by_product.setdefault(queued.product, []).extend(_describe_item(item))
    for prod, lines in sorted(by_product.items()):
        click.echo(f"== {prod} ==")
        for line in lines:
            click.echo(line)


def _review_sent(spool: Spool, product: str | None, as_json: bool) -> None:
    """``review --sent``: the sent history, oldest first; with ``--json`` a JSON line per item:
    ``{"sent": <UTC time>, "destination": ..., "item": <the item exactly as sent>}``."""
    from ceip_core.sent_history import read_sent

    shown_any = False
    for item in spool.db.read(lambda conn: list(read_sent(conn, time.time(), product))):
        shown_any = True
        if as_json:
            entry = {"sent": _when(item.sent), "destination": item.destination, "item": json.loads(item.data)}
            click.echo(json.dumps(entry, sort_keys=True))
            continue
        try:
            decoded: Report | DeletionRequest | UnknownItem = wire.decode_item(item.data)
        except wire.WireError as exc:
            decoded = UnknownItem(type=f"undecodable ({exc.reason})", item_id=item.item_id)
        click.echo(f"== {shown(item.product)}: sent {_when(item.sent)} to {shown(item.destination)} ==")
        for line in _describe_item(decoded):
            click.echo(shown(line))
    if not shown_any and not as_json:
        click.echo("Nothing was sent in the last 30 days." + (f" (for {product})" if product else ""))


def _check_product(product: str | None, spool: Spool) -> None:
    """Refuse a product this machine knows nothing of: no plugin declares it, no choice was made for it
    and nothing is queued for it (a typo would otherwise show or delete nothing, and say so calmly)."""
    if product is None:
        return
    known = set(_plugins().products) | set(spool.consent.states()) | spool.products()
    if product not in known:
        raise click.UsageError(f"unknown product {product!r} (known: {', '.join(sorted(known)) or 'none'})")


# -- identity and purge ----------------------------------------------------------------------------------


@cli.command("reset-id")
def reset_id() -> None:
    """Replace the machine ID with a new random one."""
    try:
        guid = Consent(StateDB(state_dir())).reset_id()
    except ConsentError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"New machine ID: {guid}. Future reports cannot be linked to earlier ones, which will be deleted.")


@cli.command()
@click.option("--product", help="Only this product's reports.")
@click.option("--yes", is_flag=True, help="Do not ask.")
def purge(product: str | None, yes: bool) -> None:
    """Delete queued reports without sending them (deletion requests stay)."""
    spool = _spool()
    _check_product(product, spool)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete every queued report{f' of {product}' if product else ''}?", abort=True)
    n = spool.purge(product)
    click.echo(f"Deleted {n} queued report(s).")


@cli.command()
@click.argument("product", required=False)
def options(product: str | None) -> None:
    """Open the Customer Feedback Options window for PRODUCT (default: every installed product)."""
    from ceip_core import ui  # tkinter loads only here

    try:
        ui.show_options(product, plugins=_plugins())
    except ui.UIError as exc:
        raise click.ClickException(str(exc)) from None


# -- sending: where to (ceip config), upload, export -----------------------------------------------------
# The client side of the receiving service. Uploads run in the foreground, or detached so that a product
# never waits on the network (ceip_core.detached); export carries the queue to an air-gapped service.


@cli.group()
def config() -> None:
    """Settings kept in the state folder (e.g. where to upload)."""


def _setting(name: str) -> str | None:
    return StateDB(state_dir()).read(lambda conn: settings.get(conn, name))


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
def config_show(as_json: bool) -> None:
    """Show every setting and its value."""
    values = {name: _setting(name) for name in settings.SETTINGS}
    if as_json:
        _emit(values)
        return
    for name, about in settings.SETTINGS.items():
        click.echo(f"{name:<12} {values[name] or '(not set)'}    # {about}")


@config.command("set")
@click.argument("name", type=click.Choice(list(settings.SETTINGS)))
@click.argument("value")
def config_set(name: str, value: str) -> None:
    """Set NAME to VALUE, e.g. ceip config set upload-url https://ceip.example.com"""
    if name == "upload-url":
        _transport(value)  # refuses what no transport takes (unknown scheme, plain http to a remote host ...)
    StateDB(state_dir()).write(lambda conn: settings.put(conn, name, value))
    click.echo(f"{name} = {value}")


@config.command("unset")
@click.argument("name", type=click.Choice(list(settings.SETTINGS)))
def config_unset(name: str) -> None:
    """Remove the setting NAME."""
    StateDB(state_dir()).write(lambda conn: settings.delete(conn, name))
    click.echo(f"{name} is not set.")


def _transport(url: str) -> Transport:
    try:
        return _plugins().transport_for(url)
    except (PluginError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None


def _drain(transport: Transport, url: str, *, waiting_too: bool = False) -> UploadSummary:
    async def run() -> UploadSummary:
        try:
            return await drain(_spool(), transport, waiting_too=waiting_too, destination=url)
        finally:
            await transport.close()

    return asyncio.run(run())


@cli.command()
@click.option("--to", "url", help="Destination URL (default: the upload-url setting), e.g. https://ceip.example.com")
@click.option("--detach", is_flag=True, help="Upload in a background process and return at once.")
@click.option("--json", "as_json", is_flag=True)
def upload(url: str | None, detach: bool, as_json: bool) -> None:
    """Send what is queued now. One upload runs at a time per state folder."""
    from ceip_core.detached import spawn_uploader, uploader_lock

    url = url or _setting("upload-url")
    if not url:
        raise click.UsageError("no upload URL: give --to URL, or set one with 'ceip config set upload-url URL'")
    transport = _transport(url)  # a bad URL is refused here, before anything is detached or sent
    if detach:
        started = spawn_uploader(url, home=state_dir())
        if as_json:
            _emit({"started": started})
        else:
            click.echo("Uploading in the background." if started else "Nothing is due, or an upload is running.")
        return
    with uploader_lock(state_dir()) as free:
        if not free:
            if as_json:
                _emit({"busy": True})
            else:
                click.echo("Another upload is running for this state folder; nothing done.")
            return
        summary = _drain(transport, url)
    stats = _spool().stats()
    headline = f"Sent {summary.accepted} item(s) in {summary.batches} batch(es)."
    _show(summary, as_json, headline, waiting=stats.waiting, next_try=stats.next_attempt)
    if summary.retried or stats.waiting:
        # Not everything went: say so in the exit status, so that a script or cron job notices.
        if not as_json:
            click.echo(_describe_retry(stats) + ". They stay queued.")
        sys.exit(1)


def _show(summary: UploadSummary, as_json: bool, headline: str, **extra: Any) -> None:
    if as_json:
        _emit({**vars(summary), "retried": summary.retried, **extra})
        return
    click.echo(headline)
    for reason, n in sorted(summary.retry_reasons.items()):
        click.echo(f"  {n} kept to retry later: {reason}")
    for reason, n in sorted(summary.rejected.items()):
        click.echo(f"  {n} refused for good by the receiver: {reason}")


@cli.command()
@click.option(
    "--to",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the bundle into (created if missing).",
)
@click.option("--json", "as_json", is_flag=True)
def export(folder: Path, as_json: bool) -> None:
    """Move everything queued into a bundle folder of batch files, for a machine with no network: carry the
    folder to the receiving service and run 'ceip import FOLDER' there."""
    url = folder.resolve().as_uri()
    summary = _drain(_transport(url), url, waiting_too=True)
    _show(summary, as_json, f"Exported {summary.accepted} item(s) into {folder}.", folder=str(folder))


# -- what is collected, and by which plugins ----------------------------------------------------------


@cli.command()
@click.option("--product", help="Only this product.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The declarations as JSON instead: the specs file `ceip serve --specs` reads (docs/wire-format.md).",
)
def describe(product: str | None, as_json: bool) -> None:
    """Print the data dictionary (Markdown): everything each product may collect."""
    plugins = _plugins()
    if product is not None:
        try:
            specs = [plugins.product(product)]
        except PluginError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        specs = list(plugins.products.values())
    if as_json:
        click.echo(json.dumps(wire.specs_document(specs), indent=2))
        return
    click.echo(dictionary.markdown(specs), nl=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """List loaded plugins, their versions and the hooks they implement."""
    rows = _plugins().describe()
    if as_json:
        _emit(rows)
        return
    for row in rows:
        origin = "built-in" if row["builtin"] else f"{row['distribution'] or '?'} {row['version'] or ''}".strip()
        click.echo(f"{row['name']}  ({origin})")
        click.echo(f"    {', '.join(row['hooks'])}")


@cli.command()
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.5, max=60),
    default=2.0,
    show_default=True,
    help="How long each product runs.",
)
@click.option("--no-wait", is_flag=True, help="Stop the service and exit once the dashboard is ready (for scripts).")
def demo(seconds: float, no_wait: bool) -> None:
    """The real thing on this machine: the agent observes the stand-in products, then review, status and
    the vendor's dashboard.

    Opts the installed products in and allowlists them, starts `ceip agent`, launches each product's
    stand-in executable (and one that crashes), waits until the agent has seen them end, stops it, and
    says what was queued (`ceip review` shows it). Then starts `ceip serve` on 127.0.0.1, sends it a
    simulated fleet of 200 machines and a copy of this machine's reports over HTTP (they stay queued), and
    prints the dashboard's address and login token; it serves until Ctrl-C.
    Use it with a throw-away state folder: ceip --home ./demo-home demo
    """
    from ceip_core import demo as demo_run

    if "CEIP_HOME" not in os.environ:
        raise click.UsageError("give a throw-away state folder, e.g. 'ceip --home ./demo-home demo'")
    plugins = _plugins()
    if not plugins.products:
        raise click.ClickException("no product plugins are installed: pip install -e plugins/ceip-analyst")
    try:
        demo_run.run(plugins, state_dir(), seconds, click.echo)
    except demo_run.DemoError as exc:
        raise click.ClickException(str(exc)) from None
    home = f"ceip --home {state_dir()}"
    click.echo(f"Queued on this machine: {demo_run.queued(state_dir())}. See them: {home} review (the machine: "
               f"{home} status).\n")  # fmt: skip
    service_dir = state_dir() / demo_run.SERVICE_FOLDER
    try:
        with demo_run.running_service(service_dir, click.echo) as service:
            demo_run.populate(plugins, state_dir(), service.url, service.token, click.echo)
            click.echo(f"\nDashboard: {service.url}/dashboard")
            click.echo(f"Log in with the query token: {service.token}")
            click.echo(f"To serve it again later: ceip serve --data {service_dir}")
            if no_wait:
                return
            click.echo("Serving until Ctrl-C.")
            with contextlib.suppress(KeyboardInterrupt):
                service.process.wait()
            click.echo("Stopped the service.")
    except demo_run.DemoError as exc:
        raise click.ClickException(str(exc)) from None


# -- maintainers: the allowlist; the agent ----------------------------------------------------------------


def _read_allowlist() -> tuple[Allowlist, Path]:
    path = default_path(state_dir())
    try:
        return Allowlist.read(path), path
    except AllowlistError as exc:
        raise click.ClickException(str(exc)) from None


@cli.group("allowlist")
def allowlist_group() -> None:
    """Maintainers: which products and executables may report on this machine.

    A product none of whose executables is allowlisted is inert: nothing it records is queued, and the
    agent does not observe it. The file is $CEIP_ALLOWLIST, else allowlist.toml in the state folder.
    """


@allowlist_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def allowlist_list(as_json: bool) -> None:
    """Show the allowlisted executables."""
    allowlist, path = _read_allowlist()
    if as_json:
        _emit({"file": str(path), "executables": [dataclasses.asdict(e) for e in allowlist.entries]})
        return
    if not allowlist.entries:
        click.echo(f"Nothing is allowlisted in {path}: no product may report.")
        return
    click.echo(f"Allowlisted in {path}:")
    for entry in allowlist.entries:
        click.echo(f"  {entry.product:<16} {entry.describe()}")


@allowlist_group.command("add")
@click.argument("product")
@click.option("--executable", "name", help="Only this executable (default: every one the product declares).")
@click.option("--path", "pattern", help="A glob the executable's full path must match, e.g. '/opt/analyst/bin/*'.")
@click.option("--sha256", help="The SHA-256 the executable file must have (64 hexadecimal digits).")
@click.option("--yes", is_flag=True, help="Allow without showing the product's data dictionary and asking.")
def allowlist_add(product: str, name: str | None, pattern: str | None, sha256: str | None, yes: bool) -> None:
    """Let PRODUCT report, and the agent observe its executables.

    Shows what PRODUCT may collect (its part of the data dictionary) and asks first, unless --yes. The
    declaration seen is recorded, so that `ceip allowlist check` flags the product when a new version of
    its plugin declares something else."""
    try:
        spec = _plugins().product(product)
    except PluginError as exc:
        raise click.UsageError(str(exc)) from None
    if name is None and (pattern is not None or sha256 is not None):
        raise click.UsageError("--path and --sha256 apply to one executable: name it with --executable")
    if name is not None and name not in spec.executables:
        declared = ", ".join(spec.executables)
        raise click.UsageError(f"{product} declares no executable {name!r} (declared: {declared})")
    try:
        entries = [make_entry(product, n, pattern, sha256) for n in ([name] if name else spec.executables)]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    allowlist, path = _read_allowlist()
    if not yes:
        click.echo(f"{product} may collect, once allowlisted and opted in by the person at the machine:\n")
        click.echo("\n".join(shown(line) for line in dictionary.product_section(spec)))
        try:
            if not click.confirm(f"Allow {product} to report on this machine?"):
                raise click.ClickException(f"{product}: not allowlisted")
        except click.Abort:
            raise click.ClickException(f"{product}: no answer, not allowlisted (--yes allows without asking)") from None
    allowlist.add(entries, reviewed=(product, wire.spec_digest(spec))).write(path)
    click.echo(f"{product}: allowlisted {', '.join(e.describe() for e in entries)} in {path}.")


@allowlist_group.command("remove")
@click.argument("product")
@click.option("--executable", "name", help="Only this executable (default: all of the product's).")
def allowlist_remove(product: str, name: str | None) -> None:
    """Make PRODUCT inert again (or stop observing one of its executables)."""
    allowlist, path = _read_allowlist()
    kept = allowlist.remove(product, name)
    if kept == allowlist:
        listed = ", ".join(sorted({e.product for e in allowlist.entries})) or "nothing"
        what = f"{product!r} executable {name!r}" if name else repr(product)
        raise click.UsageError(f"{what} is not in the allowlist (allowlisted: {listed})")
    kept.write(path)
    click.echo(f"{product}: removed {len(allowlist.entries) - len(kept.entries)} executable(s) from {path}.")


@allowlist_group.command("check")
@click.option("--json", "as_json", is_flag=True)
def allowlist_check(as_json: bool) -> None:
    """Say, for each installed product, whether it is active (allowlisted and opted in) and why not."""
    plugins = _plugins()
    allowlist, path = _read_allowlist()
    consent = Consent(StateDB(state_dir()))
    rows: list[dict[str, Any]] = []
    for product, spec in plugins.products.items():
        why_not = []
        inert = allowlist.why_inert(spec)
        if inert is not None:
            why_not.append(f"inert: {inert} (ceip allowlist add {product})")
        if not consent.policy.allows(product):
            why_not.append(f"switched off by machine policy ({consent.policy.source})")
        elif consent.state(product) is not State.IN:
            why_not.append(f"not opted in (ceip consent in {product})")
        observed = [e.describe() for e in allowlist.executables(spec)]
        changed = allowlist.declaration_changed(product, wire.spec_digest(spec))
        rows.append(
            {
                "product": product,
                "active": not why_not,
                "executables": observed,
                "why_not": why_not,
                "declaration_changed": changed,
            }
        )
    strangers = sorted({e.product for e in allowlist.entries} - set(plugins.products))
    if as_json:
        _emit({"file": str(path), "products": rows, "not_installed": strangers})
        return
    for row in rows:
        if row["active"]:
            click.echo(f"{row['product']:<16} active: observing {', '.join(row['executables'])}")
        else:
            click.echo(f"{row['product']:<16} not active: {'; '.join(row['why_not'])}")
        if row["declaration_changed"]:
            click.echo(
                f"{'':<16} its plugin now declares other data than when it was allowed: review it with "
                f"ceip allowlist add {row['product']}"
            )
    if strangers:
        click.echo(f"The allowlist also names {', '.join(strangers)}, which no installed plugin declares (ignored).")


#: ``ceip agent --upload-to none``: queue only, even if the upload-url setting names a destination.
NO_UPLOAD = "none"


@cli.command()
@click.option("--once", is_flag=True, help="Run one full cycle (collect, seal, upload) and exit: for cron and tests.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the running processes.",
)
@click.option(
    "--seal-every",
    type=click.FloatRange(min=0.1),
    default=86400.0,
    show_default=True,
    help="Seconds between two periodic reports per product (machine configuration, running sessions).",
)
@click.option(
    "--upload-to",
    "url",
    help="Send what is queued to this URL after each report (default: the upload-url setting; 'none': keep it).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
def agent(once: bool, interval: float, seal_every: float, url: str | None, verbose: bool) -> None:
    """Observe the allowlisted, opted-in products and this machine, and queue reports (one agent per machine).

    Runs until SIGTERM or Ctrl-C, then seals what it holds. Logs to stderr.
    """
    from ceip_core.agent import AgentConfig, AgentError, run_agent
    from ceip_core.default_plugins.process_observer import ProcessObserver

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    plugins = _plugins()
    url = None if url == NO_UPLOAD else url or _setting("upload-url")
    if url is not None:
        asyncio.run(_transport(url).close())  # a bad URL is refused now, not after the first report
    config = AgentConfig(state_dir(), {ProcessObserver.name: interval}, seal_every, url, once)
    try:
        run_agent(config, plugins)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from None


# -- the receiving service: serve, report, import (ceip_core/service/commands.py) -------------------------

from ceip_core.service.commands import COMMANDS as _SERVICE_COMMANDS  # noqa: E402

for _command in _SERVICE_COMMANDS:
    cli.add_command(_command)

# -- the agent's start with the machine: ceip agent install / uninstall (ceip_core/autostart.py) ----------

from ceip_core.autostart import with_autostart  # noqa: E402

cli.add_command(with_autostart(agent))


def main() -> None:
    cli(prog_name="ceip")

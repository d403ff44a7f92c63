"""The ``ceip`` command: what the person at the machine uses to see and control participation.

Human output by default, ``--json`` for scripts. Bad input gets a message that names the problem and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ceip_core import dictionary, wire
from ceip_core.consent import Change, Consent, ConsentError, State
from ceip_core.plugins import PluginError, Plugins, get_plugins
from ceip_core.records import DeletionRequest, Report, UnknownItem
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB, state_dir


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    rows = []
    for product in sorted(set(plugins.products) | set(states)):
        state = states.get(product, State.UNSET)
        rows.append(
            {
                "product": product,
                "name": plugins.products[product].display_name if product in plugins.products else "(not installed)",
                "state": state.value,
                "capped_by_policy": not c.policy.allows(product),
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
        label = {
            "in": "participating",
            "out": "not participating (opted out)",
            "unset": "not participating (not asked yet)",
        }
        click.echo(f"{row['product']:<16} {row['name']:<24} {label[row['state']]}{note}")


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
    data = {
        "state_folder": str(spool.db.folder),
        "guid": spool.consent.guid(),
        "participating": sorted(p for p, s in states.items() if s is State.IN and spool.consent.policy.allows(p)),
        "policy": spool.consent.policy.source,
        "queued_reports": stats.reports,
        "queued_deletions": stats.deletions,
        "queued_bytes": stats.bytes,
        "queued_by_product": stats.by_product,
        "last_upload": stats.last_upload,
        "drops": stats.drops,
    }
    if as_json:
        _emit(data)
        return
    click.echo(f"State folder:   {data['state_folder']}")
    click.echo(f"Machine ID:     {data['guid'] or '(none: no product participates)'}")
    click.echo(f"Participating:  {', '.join(data['participating']) or 'nothing'}")
    click.echo(f"Queued:         {stats.reports} report(s), {stats.deletions} deletion request(s), {stats.bytes} bytes")
    for product, n in sorted(stats.by_product.items()):
        click.echo(f"  {product:<14} {n}")
    click.echo(f"Last upload:    {_when(stats.last_upload)}")
    totals = {
        k: v
        for k, v in stats.drops.items()
        if ":" not in k or k.startswith(("rejected:", "scrubbed:", "scrubber-error:"))
    }
    click.echo("Dropped:        " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "nothing"))


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
        s = item.system
        lines.append(f"  system    {s.os} {s.os_version} {s.arch}, {s.cpu_logical} CPUs, {s.memory_bucket}")
    for k, v in item.diagnostics.items():
        lines.append(f"  diagnostic {k} = {v}")
    return lines


@cli.command()
@click.option("--product", help="Only this product.")
@click.option("--json", "as_json", is_flag=True, help="Exactly the JSON the receiving service will get.")
def review(product: str | None, as_json: bool) -> None:
    """Show exactly what is queued to be sent."""
    items = _spool().items(product)
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


# -- identity, purge, upload -----------------------------------------------------------------------------


@cli.command("reset-id")
def reset_id() -> None:
    """Replace the machine ID with a new random one."""
    try:
        guid = Consent(StateDB(state_dir())).reset_id()
    except ConsentError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"New machine ID: {guid}. Future reports cannot be linked to earlier ones.")


@cli.command()
@click.option("--product", help="Only this product's reports.")
@click.option("--yes", is_flag=True, help="Do not ask.")
def purge(product: str | None, yes: bool) -> None:
    """Delete queued reports without sending them (deletion requests stay)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete every queued report{f' of {product}' if product else ''}?", abort=True)
    n = _spool().purge(product)
    click.echo(f"Deleted {n} queued report(s).")


@cli.command()
@click.option("--to", "url", required=True, help="Destination URL, e.g. file:///media/usb/ceip or https://...")
@click.option("--json", "as_json", is_flag=True)
def upload(url: str, as_json: bool) -> None:
    """Send what is queued now, through the transport for URL."""
    from ceip_core.upload import drain

    plugins = _plugins()
    try:
        transport = plugins.transport_for(url)
    except (PluginError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None

    async def run() -> Any:
        try:
            return await drain(_spool(), transport)
        finally:
            await transport.close()

    summary = asyncio.run(run())
    if as_json:
        _emit(vars(summary))
    else:
        click.echo(
            f"Sent {summary.accepted} item(s) in {summary.batches} batch(es); {summary.retried} to retry later; "
            f"{sum(summary.rejected.values())} rejected."
        )


# -- what is collected, and by which plugins ----------------------------------------------------------


@cli.command()
@click.option("--product", help="Only this product.")
def describe(product: str | None) -> None:
    """Print the data dictionary (Markdown): everything each product may collect."""
    plugins = _plugins()
    if product is not None:
        try:
            specs = [plugins.product(product)]
        except PluginError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        specs = list(plugins.products.values())
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
@click.option("--sessions", default=3, show_default=True, help="Sessions to play per product.")
def demo(sessions: int) -> None:
    """Opt the installed products in, play a few sessions through the recording API, show the queue.

    Use it with a throw-away state folder: ceip --home ./demo-home demo
    """
    from ceip_core import demo as demo_run

    if "CEIP_HOME" not in os.environ:
        raise click.UsageError("give a throw-away state folder, e.g. 'ceip --home ./demo-home demo'")
    plugins = _plugins()
    if not plugins.products:
        raise click.ClickException("no product plugins are installed: pip install -e plugins/ceip-analyst")
    c = Consent(StateDB(state_dir()))
    for product in plugins.products:
        c.opt_in(product)
    played = demo_run.run(plugins.products.values(), sessions)
    click.echo(f"Opted in {', '.join(plugins.products)}; played {played} session(s) through the recording API.\n")
    ctx = click.get_current_context()
    ctx.invoke(review, product=None, as_json=False)
    click.echo("")
    ctx.invoke(status, as_json=False)


def main() -> None:
    cli(prog_name="ceip")

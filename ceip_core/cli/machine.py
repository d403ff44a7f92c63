"""The ``ceip`` commands of the person at the machine: participation (``consent``), the queue and what
happened to it (``status``, ``purge``), the machine ID (``reset-id``) and the options window
(``options``). What is queued is shown by :mod:`ceip_core.cli.review`; sending (``config``, ``upload``,
``export``) is in :mod:`ceip_core.cli.sending`.

Standard library and click only at import: ``ceip status`` and ``ceip consent out X`` must answer at once,
and the plugins load only where a command asks for them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from ceip_core import participation, plugin_index, statedb
from ceip_core.agent_status import AgentStatus
from ceip_core.agent_status import read_status as read_agent_status
from ceip_core.cli.common import check_product, describe_retry, emit, load_plugins, open_spool, retry_state, when
from ceip_core.consent import ALL_CATEGORIES, Change, Consent, ConsentError, State
from ceip_core.printable import shown
from ceip_core.statedb import StateDB, state_dir

if TYPE_CHECKING:
    from ceip_core.plugins import Plugins
    from ceip_core.records import Category

# -- consent -----------------------------------------------------------------------------------------


@click.group("consent")
def consent() -> None:
    """Show or change participation, per product."""


def _targets(
    products: Iterable[str], all_: bool, plugins: Plugins | None, known_states: dict[str, State], opting_in: bool
) -> list[str]:
    """The products a consent change is for. ``plugins`` is None only for an opt-out whose plugins could not
    load: then the products known are those with a recorded choice."""
    installed = {} if plugins is None else plugins.products
    products = list(products)
    if all_ and products:
        raise click.UsageError("give product names or --all, not both")
    if all_:
        return sorted(installed) if opting_in else sorted(set(installed) | set(known_states))
    if not products:
        raise click.UsageError("name at least one product, or use --all")
    for product in products:
        # An opt-out is never refused for a product we hold a choice for, even if its plugin is gone.
        if product not in installed and (opting_in or product not in known_states):
            known = ", ".join(installed if plugins is not None else known_states) or "none installed"
            raise click.UsageError(f"unknown product {product!r} (known: {known})")
    return products


@consent.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def consent_status(as_json: bool) -> None:
    """Show each product's participation."""
    from ceip_core.allowlist import Allowlist  # the TOML reader and logging: not for ceip status
    from ceip_core.records import Category

    plugins = load_plugins()
    rows = []
    for p in participation.survey(Consent(StateDB(state_dir())), Allowlist.current(), plugins.products):
        spec = plugins.products.get(p.product)
        rows.append(
            {
                "product": p.product,
                "name": spec.display_name if spec is not None else "(not installed)",
                "state": p.state.value,
                "categories": [
                    c.short
                    for c in Category
                    if p.state is State.IN and (p.categories is None or c.value in p.categories)
                ],
                "capped_by_policy": p.policy is not None,
                "allowlisted": p.installed and p.inert is None,
                "participating": p.active,
                "why_not": p.why_not(),
            }
        )
    if as_json:
        emit(rows)
        return
    if not rows:
        click.echo("No products installed.")
    for row in rows:
        note = "  (switched off by machine policy)" if row["capped_by_policy"] else ""
        if row["product"] in plugins.products and not row["allowlisted"]:
            note += "  (inert: not allowlisted)"
        label = (
            "participating"
            if row["participating"]
            else {
                "in": "opted in, not participating",
                "out": "not participating (opted out)",
                "unset": "not participating (not asked yet)",
            }[str(row["state"])]
        )
        chosen = [str(c) for c in row["categories"]]  # type: ignore[union-attr]
        if row["state"] == "in" and len(chosen) < len(Category):
            label += f" ({', '.join(chosen)} only)"
        click.echo(f"{shown(row['product']):<16} {shown(row['name']):<24} {label}{note}")


def _categories(_ctx: click.Context, _param: click.Parameter, value: str | None) -> frozenset[Category] | None:
    """``--only configuration,performance``: the categories named (short names or full ones), or None."""
    if value is None:
        return None
    from ceip_core.records import parse_category  # attrs: only for a command that names categories

    names = [name for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("name at least one category (configuration, performance, use)")
    try:
        return frozenset(parse_category(name) for name in names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_ONLY_HELP = (
    "Comma-separated categories: configuration, performance (performance and reliability), use (program use). "
    "With 'in': take part with these only. With 'out': withdraw these only; their queued data is removed and "
    "a request to delete what was sent of them is queued."
)


def _change(
    products: tuple[str, ...], all_: bool, opting_in: bool, as_json: bool, only: frozenset[Category] | None = None
) -> None:
    c = Consent(StateDB(state_dir()))
    known = c.states()
    # An opt-out of products with a recorded choice needs no plugin to name them: it commits before the
    # plugins load, so that recording stops at once (issue 11), and the plugins hear of it after. Withdrawing
    # some categories needs the product's declaration, to rewrite its queued reports without them.
    quick = not opting_in and only is None and not all_ and bool(products) and set(products) <= set(known)
    plugins = None if quick else load_plugins() if opting_in else _plugins_if_they_load()
    targets = products if quick else _targets(products, all_, plugins, known, opting_in)
    changes: list[Change] = []
    for product in targets:
        spec = None if plugins is None else plugins.products.get(product)
        try:
            change = c.opt_in(product, only, spec=spec) if opting_in else c.opt_out(product, only, spec=spec)
        except ConsentError as exc:
            raise click.ClickException(str(exc)) from None
        changes.append(change)
    # The plugins' index may tell that none of them listens: then nothing needs loading (ceip_core.plugin_index).
    if plugins is not None or (quick and plugin_index.implementers(c.db.folder, "ceip_consent_changed") != []):
        _announce(changes, plugins)
    if as_json:
        from ceip_core.records import Category

        def short(values: Iterable[str]) -> list[str]:
            return [Category(v).short for v in values]

        emit(
            [
                {
                    **vars(ch),
                    "before": ch.before.value,
                    "after": ch.after.value,
                    "categories": short(ch.categories or (ALL_CATEGORIES if ch.after is State.IN else ())),
                    "removed": short(ch.removed),
                }
                for ch in changes
            ]
        )
        return
    for ch in changes:
        click.echo(_said(ch))


def _said(ch: Change) -> str:
    """What a consent change did, in one line."""

    def short(values: Iterable[str]) -> str:
        from ceip_core.records import Category  # attrs: only when there are categories to name

        return ", ".join(c.short for c in Category if c.value in set(values))

    if ch.after is State.IN:
        parts = [f"{ch.product}: participating" + (f" with {short(ch.categories)} only." if ch.categories else ".")]
        if ch.guid_created:
            parts.append("A new random machine ID was created.")
        if ch.removed:
            parts.append(f"Withdrawn: {short(ch.removed)}.")
            if ch.reports_rewritten:
                parts.append(f"{ch.reports_rewritten} queued report(s) rewritten without it.")
    else:
        parts = [f"{ch.product}: not participating."]
    if ch.reports_deleted:
        parts.append(f"{ch.reports_deleted} queued report(s) deleted.")
    if ch.deletion_queued:
        parts.append("A request to delete what was already sent" + (" of it" if ch.removed else "") + " is queued.")
    if ch.guid_discarded:
        parts.append("No product participates any more; the machine ID was discarded.")
    return " ".join(parts)


def _plugins_if_they_load() -> Plugins | None:
    """The plugins, for an opt-out; None, with a warning, if they cannot load. An opt-out never waits for a
    working plugin set: without one it takes the products with a recorded choice, and withdrawing some
    categories deletes those products' queued reports whole, since no declaration says what to keep."""
    try:
        return load_plugins()
    except click.ClickException as exc:
        click.echo(
            f"warning: {exc.message}; opting out without them (queued reports are deleted whole, "
            "and the plugins are not told of the change)",
            err=True,
        )
        return None


def _announce(changes: list[Change], plugins: Plugins | None) -> None:
    """Tell the plugins of consent changes already committed. A plugin set that cannot load is a warning:
    the choice is recorded whatever the plugins."""
    try:
        plugins = plugins or load_plugins()
    except click.ClickException as exc:
        click.echo(f"warning: {exc.message}; the plugins were not told of the change", err=True)
        return
    for ch in changes:
        plugins.consent_changed(ch.product, ch.after)


@consent.command("in")
@click.argument("products", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every installed product.")
@click.option("--only", callback=_categories, metavar="CATEGORIES", help=_ONLY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def consent_in(products: tuple[str, ...], all_: bool, only: frozenset[Category] | None, as_json: bool) -> None:
    """Take part in the program for PRODUCTS (in every category, unless --only names some)."""
    _change(products, all_, True, as_json, only)


@consent.command("out")
@click.argument("products", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every product.")
@click.option("--only", callback=_categories, metavar="CATEGORIES", help=_ONLY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def consent_out(products: tuple[str, ...], all_: bool, only: frozenset[Category] | None, as_json: bool) -> None:
    """Stop taking part for PRODUCTS: queued reports are deleted and a deletion request is sent (with
    --only, for those categories alone)."""
    _change(products, all_, False, as_json, only)


# -- status --------------------------------------------------------------------------------------


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show the machine ID, the queue, the last upload and what was dropped."""
    spool = open_spool()
    stats = spool.stats()
    opted_in = participation.opted_in(spool.consent)
    agent = read_agent_status(spool.db.folder)
    data = {
        "state_folder": str(spool.db.folder),
        "guid": spool.consent.guid(),
        "opted_in": opted_in,
        "policy": spool.consent.policy.source,
        "queued_reports": stats.reports,
        "queued_deletions": stats.deletions,
        "queued_bytes": stats.bytes,
        "disk_bytes": stats.disk_bytes,
        "quotas": vars(spool.quotas),
        "queued_by_product": stats.by_product,
        "last_upload": stats.last_upload,
        "retry": retry_state(stats),
        "drops": stats.drops,
        "agent": agent.as_json(),
    }
    if as_json:
        emit(data)
        return
    click.echo(f"State folder:   {shown(data['state_folder'])}")
    click.echo(f"Machine ID:     {data['guid'] or '(none: no product participates)'}")
    active = "; which are active: ceip allowlist check" if opted_in else ""
    click.echo(f"Opted in:       {shown(', '.join(opted_in)) or 'nothing'}{active}")
    click.echo(f"Queued:         {stats.reports} report(s), {stats.deletions} deletion request(s), {stats.bytes} bytes")
    for product, n in sorted(stats.by_product.items()):
        click.echo(f"  {shown(product):<14} {n}")
    q = spool.quotas
    click.echo(
        f"Limits:         {q.max_reports:,} reports, {q.max_bytes / 1e6:g} MB on disk (now "
        f"{stats.disk_bytes / 1e6:.1f} MB), {q.max_age_s / 86400:g} days; beyond them the oldest go first"
    )
    click.echo(f"Last upload:    {when(stats.last_upload)}")
    if data["retry"] is not None:
        click.echo(f"Retrying:       {describe_retry(stats)}")
    totals = {
        k: v
        for k, v in stats.drops.items()
        if ":" not in k or k.startswith(("rejected:", "scrubbed:", "scrubber-error:"))
    }
    click.echo("Dropped:        " + (", ".join(f"{shown(k)} {v}" for k, v in sorted(totals.items())) or "nothing"))
    if stats.drops.get(statedb.DAMAGED):
        click.echo(f"Damaged spool:  {_describe_damage(stats.drops)}")
    click.echo(f"Agent:          {_describe_agent(agent)}")


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


def _describe_agent(agent: AgentStatus) -> str:
    unreadable = f" ({shown(agent.unreadable)})" if agent.unreadable else ""
    if agent.state == "never run":
        return f"not running (start it with: ceip agent){unreadable}"
    sealed = f"{agent.reports_sealed} report(s) sealed, the last {when(agent.last_seal)}"
    if agent.collector_troubles:  # a product's collector that fails, overruns its budget or gives what it may not
        told = {
            name: ", ".join(f"{what} {n}" for what, n in sorted(c.items()))
            for name, c in agent.collector_troubles.items()
        }
        sealed += "; collector troubles: " + shown(", ".join(f"{name} ({told[name]})" for name in sorted(told)))
    if agent.state in ("starting", "running"):
        observing = shown(", ".join(agent.observing)) or "nothing"
        return (
            f"{agent.state} (pid {agent.pid}) since {when(agent.started)}; observing {observing}; {sealed}{unreadable}"
        )
    return f"{agent.state} at {when(agent.updated)}; {sealed}"


# -- identity and purge ----------------------------------------------------------------------------------


@click.command("reset-id")
def reset_id() -> None:
    """Replace the machine ID with a new random one."""
    try:
        guid = Consent(StateDB(state_dir())).reset_id()
    except ConsentError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"New machine ID: {guid}. Future reports cannot be linked to earlier ones, which will be deleted.")


@click.command("purge")
@click.option("--product", help="Only this product's reports.")
@click.option("--yes", is_flag=True, help="Do not ask.")
def purge(product: str | None, yes: bool) -> None:
    """Delete queued reports without sending them (deletion requests stay)."""
    spool = open_spool()
    check_product(product, spool)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete every queued report{f' of {product}' if product else ''}?", abort=True)
    n = spool.purge(product)
    click.echo(f"Deleted {n} queued report(s).")


@click.command("options")
@click.argument("product", required=False)
def options(product: str | None) -> None:
    """Open the Customer Feedback Options window for PRODUCT (default: every installed product)."""
    from ceip_core import ui  # tkinter loads only here

    try:
        ui.show_options(product, plugins=load_plugins())
    except ui.UIError as exc:
        raise click.ClickException(str(exc)) from None

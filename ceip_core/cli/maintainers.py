"""The ``ceip`` commands of the maintainers: which products may report on this machine (``allowlist``),
what each may collect (``describe``) and which plugins are loaded (``plugins``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from ceip_core import participation
from ceip_core.allowlist import Allowlist, AllowlistError, default_path, make_entry
from ceip_core.cli.common import emit, load_plugins
from ceip_core.consent import Consent
from ceip_core.plugins import PluginError
from ceip_core.printable import shown
from ceip_core.statedb import StateDB, state_dir

# -- what is collected, and by which plugins ----------------------------------------------------------


@click.command("describe")
@click.option("--product", help="Only this product.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The declarations as JSON instead: the specs file `ceip serve --specs` reads (docs/wire-format.md).",
)
def describe(product: str | None, as_json: bool) -> None:
    """Print the data dictionary (Markdown): everything each product may collect."""
    from ceip_core import dictionary, wire  # the dictionary imports every built-in plugin: only here

    plugins = load_plugins()
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
    # Declared by plugins: every line shown with its control characters escaped (tabs among them).
    click.echo("\n".join(shown(line) for line in dictionary.markdown(specs).split("\n")), nl=False)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List loaded plugins, their versions and the hooks they implement."""
    rows = load_plugins().describe()
    if as_json:
        emit(rows)
        return
    for row in rows:
        origin = "built-in" if row["builtin"] else f"{row['distribution'] or '?'} {row['version'] or ''}".strip()
        click.echo(f"{shown(row['name'])}  ({shown(origin)})")
        click.echo(f"    {', '.join(row['hooks'])}")


# -- maintainers: the allowlist; the agent ----------------------------------------------------------------


def _read_allowlist() -> tuple[Allowlist, Path]:
    path = default_path(state_dir())
    try:
        return Allowlist.read(path), path
    except AllowlistError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("allowlist")
def allowlist_group() -> None:
    """Maintainers: which products and executables may report on this machine.

    A product none of whose executables is allowlisted is inert: nothing it records is queued, and the
    agent does not observe it. The file is $CEIP_ALLOWLIST, else allowlist.toml in the state folder.
    """


@allowlist_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def allowlist_list(as_json: bool) -> None:
    """Show the allowlisted executables."""
    allowlist, path = _read_allowlist()
    if as_json:
        emit({"file": str(path), "executables": [dataclasses.asdict(e) for e in allowlist.entries]})
        return
    if not allowlist.entries:
        click.echo(f"Nothing is allowlisted in {shown(path)}: no product may report.")
        return
    click.echo(f"Allowlisted in {shown(path)}:")
    for entry in allowlist.entries:
        click.echo(f"  {shown(entry.product):<16} {shown(entry.describe())}")


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
        spec = load_plugins().product(product)
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
    from ceip_core import dictionary, wire  # here, as for describe: they load the plugins' modules

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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def allowlist_check(as_json: bool) -> None:
    """Say, for each installed product, whether it is active (allowlisted and opted in) and why not."""
    from ceip_core import wire  # here: spec digests need the records' converter

    plugins = load_plugins()
    allowlist, path = _read_allowlist()
    consent = Consent(StateDB(state_dir()))
    rows: list[dict[str, Any]] = []
    for p in participation.survey(consent, allowlist, plugins.products):
        if p.installed:
            spec = plugins.products[p.product]
            observed = [e.describe() for e in allowlist.executables(spec)]
            changed = allowlist.declaration_changed(p.product, wire.spec_digest(spec))
            rows.append(
                {
                    "product": p.product,
                    "active": p.active,
                    "executables": observed,
                    "why_not": p.why_not(),
                    "declaration_changed": changed,
                }
            )
    strangers = sorted({e.product for e in allowlist.entries} - set(plugins.products))
    if as_json:
        emit({"file": str(path), "products": rows, "not_installed": strangers})
        return
    for row in rows:
        if row["active"]:
            click.echo(f"{shown(row['product']):<16} active: observing {shown(', '.join(row['executables']))}")
        else:
            click.echo(f"{shown(row['product']):<16} not active: {shown('; '.join(row['why_not']))}")
        if row["declaration_changed"]:
            click.echo(
                f"{'':<16} its plugin now declares other data than when it was allowed: review it with "
                f"ceip allowlist add {shown(row['product'])}"
            )
    if strangers:
        names = shown(", ".join(strangers))
        click.echo(f"The allowlist also names {names}, which no installed plugin declares (ignored).")


#: ``ceip agent --upload-to none``: queue only, even if the upload-url setting names a destination.

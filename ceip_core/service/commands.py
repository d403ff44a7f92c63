"""The vendor's commands: ``ceip serve``, ``ceip report ...`` and ``ceip import``, added to the ``ceip`` group.

They share the service's data folder (``--data``, ``$CEIP_SERVICE_DATA``, default: the platform's data
folder for ``ceip-service``), which holds the query token and the default SQLite database, and the
database URL (``--db``, ``$CEIP_SERVICE_DB``). ``ceip report`` reads the database directly with the same
query code as the HTTP API, so both print the same numbers (give it the service's ``--k``); it needs
access to the database, not the token. Heavy imports happen inside the commands, so ``ceip`` stays quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
import platformdirs
from click.core import ParameterSource

from ceip_core.printable import shown

_DATA = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CEIP_SERVICE_DATA",
    default=lambda: platformdirs.user_data_path("ceip-service"),
    show_default="the platform's data folder for ceip-service",
    help="The service's data folder: query token, default SQLite database.",
)
_DB = click.option(
    "--db",
    "database",
    envvar="CEIP_SERVICE_DB",
    help="Database URL: sqlite:relative.db, sqlite:///absolute/path.db or postgresql://user@host/db "
    "(default: reports.db in --data).",
)
_K = click.option(
    "--k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Hide groups of fewer machines."
)


def _database(database: str | None, data_dir: Path) -> str:
    """The database URL, with a SQLite file's path made absolute: ``sqlite:ceip.db`` is in the current
    folder, ``sqlite:///srv/ceip.db`` absolute (so ``sqlite:///ceip.db`` is at the filesystem's root)."""
    from urllib.parse import quote

    from ceip_core.service.sqlite_store import path_of
    from ceip_core.service.storage import StorageError
    from ceip_core.service.stores import is_sqlite

    if not database:
        return f"sqlite://{quote(str((data_dir / 'reports.db').absolute()))}"
    try:
        if not is_sqlite(database):
            return database
        return f"sqlite://{quote(str(path_of(database).absolute()))}"
    except StorageError as exc:
        raise click.BadParameter(str(exc), param_hint="--db") from None


def _existing_database(url: str) -> str:
    """``url`` if it names a database that exists: only ``ceip serve`` creates one, so that a mistyped
    ``--db`` is an error and not an empty answer from a new, empty database."""
    from ceip_core.service.sqlite_store import path_of
    from ceip_core.service.stores import is_sqlite

    if is_sqlite(url) and not (path := path_of(url)).is_file():
        raise click.ClickException(
            f"no database at {path}: check --db (sqlite:relative.db or sqlite:///absolute/path.db); "
            "ceip serve creates it"
        )
    return url


def _service_config(allowlist: Path | None, policy: Path | None, specs: Iterable[Path], k: int, **limits: Any) -> Any:
    """The configuration from the files given and the installed product plugins' declarations. The plugins'
    scrubbers are loaded here too, for the second pass: a plugin failing to register one fails the start in
    a line, not in a worker's traceback."""
    from ceip_core.plugins import PluginError, get_plugins
    from ceip_core.service.config import AdmissionLimits, ConfigError, ConfigFiles

    try:
        plugins = get_plugins()
        _ = plugins.scrubbers
        files = ConfigFiles(allowlist, policy, tuple(specs), tuple(plugins.products.values()))
        config = files.load(k, AdmissionLimits(**limits))
    except (ConfigError, PluginError) as exc:
        raise click.ClickException(str(exc)) from None
    if not config.allowlist:
        raise click.ClickException(
            "no product may report: give --allowlist FILE and --specs FILE, or install product plugins"
        )
    return config


_SPECS = click.option(
    "--specs",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSON from `ceip describe --json`: product declarations (repeatable; re-read when changed).",
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free port.")
@_DB
@_DATA
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes on the port.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="PEM certificate chain.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="PEM private key.")
@click.option(
    "--allowlist",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TOML: products (and executables) that may report (re-read when changed). Default: the declared ones.",
)
@click.option(
    "--policy",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TOML: kill switch, sampling (re-read when changed).",
)
@_SPECS
@_K
@click.option(
    "--token",
    envvar="CEIP_SERVICE_TOKEN",
    help="Query API token, at least 16 characters (default: generated into --data). Prefer $CEIP_SERVICE_TOKEN "
    "or --token-file: other local users see a command line.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A file whose first line is the query token.",
)
@click.option("--allow-short-token", is_flag=True, help="Take a query token shorter than 16 characters.")
@click.option("--request-timeout", type=click.FloatRange(min=1), default=30, show_default=True, help="Seconds.")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.1),
    default=20,
    show_default=True,
    help="Seconds a connection may wait for a complete request head (new, or kept alive after an answer).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Open connections per worker; more are answered 503.",
)
@click.option(
    "--rate-burst",
    type=click.FloatRange(min=1),
    default=1000,
    show_default=True,
    help="Items one machine may send at once ...",
)
@click.option(
    "--rate",
    "rate_per_s",
    type=click.FloatRange(min=0),
    default=25,
    show_default=True,
    help="... and then per second (per worker); more get 429.",
)
@click.option(
    "--max-items",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Items one batch may hold; more: 413 (clients then split their batches).",
)
@click.option(
    "--source-burst",
    type=click.FloatRange(min=0),
    default=10_000,
    show_default=True,
    help="Requests plus items one connection source (address; IPv6: its /64) may send at once; 0: no limit ...",
)
@click.option(
    "--source-rate",
    "source_per_s",
    type=click.FloatRange(min=0),
    default=250,
    show_default=True,
    help="... and then per second (per worker); more get 429. Behind a reverse proxy: --source-burst 0.",
)
@click.option("--access-log", is_flag=True, help="Log each request (never with the sender's address).")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--retention-days",
    type=click.IntRange(min=0),
    default=90,
    show_default=True,
    help="Days raw reports and per-machine rows are kept (rollups stay); 0: for ever.",
)
def serve(
    host: str,
    port: int,
    database: str | None,
    data_dir: Path,
    workers: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    allowlist: Path | None,
    policy: Path | None,
    specs: tuple[Path, ...],
    k: int,
    token: str | None,
    token_file: Path | None,
    allow_short_token: bool,
    request_timeout: float,
    idle_timeout: float,
    max_connections: int,
    rate_burst: float,
    rate_per_s: float,
    max_items: int,
    source_burst: float,
    source_per_s: float,
    access_log: bool,
    log_level: str,
    retention_days: int,
) -> None:
    """Run the receiving service: machines upload here; the query API answers with aggregates."""
    import attrs

    from ceip_core.service.auth import TOKEN_FILE, check_token, load_or_create_token
    from ceip_core.service.serve import ServeError, ServeOptions
    from ceip_core.service.serve import serve as run
    from ceip_core.service.storage import StorageError

    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    token = _given_token(token, token_file, allow_short_token)
    config = _service_config(
        allowlist,
        policy,
        specs,
        k,
        request_timeout_s=request_timeout,
        idle_timeout_s=idle_timeout,
        max_connections=max_connections,
        rate_burst=rate_burst,
        rate_per_s=rate_per_s,
        max_items=max_items,
        source_burst=source_burst,
        source_per_s=source_per_s,
    )
    config = attrs.evolve(config, retention_days=retention_days)
    database = _database(database, data_dir)  # before a token is made: a mistyped --db leaves nothing behind
    if token is None:
        try:
            token = check_token(load_or_create_token(data_dir), str(data_dir / TOKEN_FILE), allow_short_token)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"Query API token: in {data_dir / TOKEN_FILE}")
    options = ServeOptions(
        config=config,
        database=database,
        token=token,
        host=host,
        port=port,
        workers=workers,
        tls_cert=tls_cert,
        tls_key=tls_key,
        access_log=access_log,
        log_level=log_level.upper(),
    )
    try:
        status = run(options, announce=click.echo)
    except (ServeError, StorageError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(status)


def _given_token(token: str | None, token_file: Path | None, allow_short: bool) -> str | None:
    """The query token given to ``ceip serve``, checked; None if none was (then the data folder's is used).
    A token typed on the command line gets a warning: other local users see it in ``ps``."""
    from ceip_core.service.auth import TokenError, check_token, read_token_file

    source = click.get_current_context().get_parameter_source("token")
    if token_file is not None:
        if token is not None:
            raise click.UsageError("give the query token once: --token-file, or --token / $CEIP_SERVICE_TOKEN")
        token, where = read_token_file(token_file), f"--token-file {token_file}"
        if os.name == "posix" and token_file.stat().st_mode & 0o077:
            click.echo(
                f"ceip serve: warning: other users may read {token_file}: run `chmod 600 {token_file}`", err=True
            )
    elif token is None:
        return None
    elif source is ParameterSource.COMMANDLINE:
        where = "--token"
        click.echo(
            "ceip serve: warning: a token given with --token is visible to other users of this machine "
            "(ps, /proc); set $CEIP_SERVICE_TOKEN or give --token-file instead",
            err=True,
        )
    else:
        where = "$CEIP_SERVICE_TOKEN"
    try:
        return check_token(token, where, allow_short)
    except TokenError as exc:
        raise click.UsageError(str(exc)) from None


def _print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(nothing to show)")
        return
    text = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in text)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _cell(value: Any) -> str:
    """A table cell; values came from reports, so control characters are shown escaped."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return shown(",".join(map(str, value)))
    return "" if value is None else shown(value)


_COLUMNS = {
    "problems": (
        "problems",
        ["product", "kind", "signature", "machines", "occurrences", "first_seen", "last_seen", "versions"],
    ),
    "trends": ("trends", ["product", "kind", "signature", "day", "machines"]),
    "features": ("features", ["product", "name", "label", "machines", "adoption", "uses_per_active_machine"]),
    "config": ("config", ["product", "key", "value", "machines", "share"]),
    "timings": ("timings", ["product", "name", "version", "machines", "count", "p50", "p90", "p99"]),
    "participation": ("active", ["product", "day", "active_machines"]),
    "versions": ("versions", ["product", "version", "machines"]),
    "problem_versions": (
        "problem_versions",
        ["product", "kind", "signature", "version", "machines", "active_machines", "share"],
    ),
}


async def _with_storage(database: str, fn: Callable[[Any], Any]) -> Any:
    from ceip_core.service.stores import open_storage

    storage = open_storage(database)
    await storage.open()
    try:
        return await fn(storage)
    finally:
        await storage.close()


def _print_storage(found: dict[str, Any]) -> None:
    from ceip_core.service.storage import EXPIRED, TOMBSTONED

    click.echo(f"database size: {found['bytes'] / 1e6:.1f} MB")
    lag = f"{found['fold_lag_s']:.1f} s" if found["queued"] else "none"
    click.echo(f"fold backlog: {found['queued']} report(s), lag {lag}; quarantined: {found['quarantined']}")
    counters = found["counters"]
    click.echo(f"refused by a tombstone: {counters.get(TOMBSTONED, 0)}; rows aged out: {counters.get(EXPIRED, 0)}")
    _print_rows([{"table": t, "rows": n} for t, n in found["rows"].items()], ["table", "rows"])


@click.command()
@click.argument("what", type=click.Choice([*_COLUMNS, "storage"]))
@click.option("--product", help="Only this product.")
@click.option("--version", help="Only this product version.")
@click.option("--since", help="First day, e.g. 2026-11-01.")
@click.option("--until", help="Last day, e.g. 2026-11-30.")
@_DB
@_DATA
@_K
@click.option("--json", "as_json", is_flag=True, help="The same JSON as GET /v1/query/<what>.")
def report(
    what: str,
    product: str | None,
    version: str | None,
    since: str | None,
    until: str | None,
    database: str | None,
    data_dir: Path,
    k: int,
    as_json: bool,
) -> None:
    """Print what the query API answers: problems, trends, features, config, timings, participation, versions
    or problem_versions; or 'storage': database size, rows per table, fold lag and counters (what
    'GET /metrics' exports)."""
    from ceip_core.service import metrics, queries
    from ceip_core.service.storage import StorageError, StorageUnavailable, redact
    from ceip_core.service.stores import open_storage

    if what == "storage":
        try:
            found = asyncio.run(_with_storage(_database(database, data_dir), lambda s: metrics.figures(s, time.time())))
        except (StorageError, StorageUnavailable) as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(found, indent=2))
        else:
            _print_storage(found)
        return

    params = {"product": product, "version": version, "since": since, "until": until}
    try:
        filters = queries.Filters.parse({name: value for name, value in params.items() if value})
    except queries.QueryError as exc:
        raise click.UsageError(str(exc)) from None

    url = _existing_database(_database(database, data_dir))

    async def run() -> dict[str, Any]:
        storage = open_storage(url)
        await storage.open()
        try:
            return await queries.QUERIES[what](storage, filters, k)
        finally:
            await storage.close()

    try:
        answer = asyncio.run(run())
    except (StorageError, StorageUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise click.ClickException(f"{redact(url)} is not a ceip database: {exc}") from None
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    key, columns = _COLUMNS[what]
    _print_rows(answer[key], columns)
    if answer["hidden"]:
        click.echo(f"({answer['hidden']} group(s) of fewer than {k} machines hidden)")
    if what == "participation":
        click.echo("\nDeletion requests (opt-outs) per day:")
        _print_rows(answer["deletions"], ["product", "day", "requests"])


def bundle_files(paths: Iterable[Path]) -> list[Path]:
    """The batch files named, and those in the folders named (drop folders), in name order."""
    from ceip_core.default_plugins.file_transport import SUFFIX

    found: list[Path] = []
    for path in paths:
        found += sorted(path.glob(f"*{SUFFIX}")) if path.is_dir() else [path]
    return found


async def import_files(
    files: list[Path], database: str, config: Any, progress: Callable[[int], None] = lambda _: None
) -> tuple[Counter[str], dict[str, str]]:
    """Ingest batch files exactly as ``POST /v1/reports`` and ``/v1/deletions`` would, all or nothing.

    Every file is read and validated before anything is stored. If one cannot be read as a batch (not
    gzip, not JSON, nested too deeply ...), nothing is stored: a half import would keep the reports of the
    files before it and lose the deletions read so far, and importing the fixed folder again is cheap
    (duplicates are recognised). Otherwise the valid items of every file are stored in one transaction,
    deletions after reports; items refused one by one are counted, as the HTTP answer would list them.

    :param progress: called with the bytes of each file once it is read.
    :returns: counts by outcome (``accepted``, ``duplicate``, ``rejected:<reason>``) and, per file that
        could not be read as a batch, why (then the counts are empty: nothing was stored).
    """
    from ceip_core import wire
    from ceip_core.service.groupcommit import GroupCommitter
    from ceip_core.service.ingest import Ingest
    from ceip_core.service.stores import open_storage
    from ceip_core.service.validation import BatchError, Valid, decode_batch

    storage = open_storage(database)
    committer = GroupCommitter(storage)
    ingest = Ingest(config, committer)
    received = time.time()
    failed: dict[str, str] = {}
    items: list[tuple[Any, Any]] = []
    deletions: list[tuple[Any, Any]] = []
    for path in files:
        try:
            data = path.read_bytes()
            raws = decode_batch(wire.inflate(data, max_expanded=config.limits.max_expanded))
        except (OSError, wire.WireError, BatchError) as exc:
            failed[str(path)] = str(exc)
            continue
        for raw, verdict in zip(raws, ingest.check(raws, None, received), strict=True):
            # Deletions go last, whatever the file order: a deletion is the person's latest word, and a
            # report of the same pair in a later file must not bring deleted data back.
            is_deletion = isinstance(verdict, Valid) and not verdict.is_report
            (deletions if is_deletion else items).append((raw, verdict))
        progress(len(data))
    outcomes: Counter[str] = Counter()
    if failed or not (items or deletions):
        return outcomes, failed
    await storage.open()
    committer.start()
    try:
        every, verdicts = zip(*items, *deletions, strict=True)
        for result in await ingest.store(every, verdicts, received):  # one submission: one transaction
            status = result["status"]
            outcomes[f"rejected:{result['reason']}" if status == "rejected" else status] += 1
    finally:
        await committer.stop()
        await storage.close()
    return outcomes, failed


@click.command("import")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_DB
@_DATA
@click.option("--allowlist", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="As for ceip serve.")
@click.option("--policy", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="As for ceip serve.")
@_SPECS
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def import_bundles(
    bundles: tuple[Path, ...],
    database: str | None,
    data_dir: Path,
    allowlist: Path | None,
    policy: Path | None,
    specs: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Ingest BUNDLES (batch files or drop folders carried from air-gapped machines), validated and de-duplicated.

    All or nothing: if one file cannot be read as a batch, nothing is stored; fix or remove it and run again.
    """
    from ceip_core.service.storage import StorageError, StorageUnavailable

    config = _service_config(allowlist, policy, specs, 5)
    files = bundle_files(bundles)
    total = sum(f.stat().st_size for f in files if f.is_file())
    with click.progressbar(length=total, label="Importing", file=sys.stderr) as bar:
        try:
            outcomes, failed = asyncio.run(import_files(files, _database(database, data_dir), config, bar.update))
        except (StorageError, StorageUnavailable) as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        summary = {"files": len(files), "stored": not failed, "outcomes": dict(outcomes), "failed": failed}
        click.echo(json.dumps(summary, indent=2))
    elif not failed:
        click.echo(
            f"{len(files)} file(s): {outcomes['accepted']} accepted, {outcomes['duplicate']} duplicate(s), "
            f"{sum(n for o, n in outcomes.items() if o.startswith('rejected:'))} rejected."
        )
        for outcome, n in sorted(outcomes.items()):
            if outcome.startswith("rejected:"):
                click.echo(f"  {outcome}: {n}")
    if failed:
        click.echo(
            f"Error: nothing imported: {len(failed)} of {len(files)} file(s) cannot be read as a batch "
            "(fix or remove them, then import again):",
            err=True,
        )
        for path, why in failed.items():
            click.echo(f"  {path}: {why}", err=True)
        raise SystemExit(1)


@click.command("rebuild-rollups")
@_DB
@_DATA
def rebuild_rollups(database: str | None, data_dir: Path) -> None:
    """Fold every stored raw report into the rollups again (days that aged out keep theirs).

    The rollups commit without waiting for the disk, since they can be rebuilt from the raw reports, which
    do: after a power cut, or any doubt, this gives exactly the answers the stored reports give. Workers
    may keep serving meanwhile; queries wait for the fold.
    """
    from ceip_core.service.storage import StorageError, StorageUnavailable

    try:
        folded = asyncio.run(_with_storage(_database(database, data_dir), lambda s: s.rebuild()))
    except (StorageError, StorageUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"rollups rebuilt from {folded} stored report(s)")

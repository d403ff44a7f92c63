"""``ceip import`` of drop-folder bundles, ``ceip report``, and what the database holds (never an address)."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
from click.testing import CliRunner
from service.factory import GZIP, body, deletion, report, specs_file

from ceip_core.cli import cli
from ceip_core.default_plugins.file_transport import write_atomically


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_import_ingests_a_drop_folder_with_the_same_validation_and_dedupe(tmp_path: Path, database: str) -> None:
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    folder = tmp_path / "usb-stick"
    fleet = [report(problems={"E@x.py:1": 1}) for _ in range(6)]
    write_atomically(folder, body(*fleet[:3]))
    write_atomically(folder, body(*fleet[3:], report(product="unknown")))
    common = [
        "--db",
        database,
        "--data",
        str(tmp_path),
        "--allowlist",
        str(allowlist),
        "--specs",
        str(specs_file(tmp_path)),
    ]

    first = run("import", str(folder), *common, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["outcomes"] == {"accepted": 6, "rejected:not-allowlisted": 1} and summary["stored"]

    write_atomically(folder, body(deletion(fleet[0]["guid"])))
    again = run("import", str(folder), *common)
    assert again.exit_code == 0, again.output
    assert "6 duplicate(s)" in again.stdout

    problems = run("report", "problems", "--db", database, "--data", str(tmp_path), "--json")
    assert json.loads(problems.stdout)["problems"][0]["machines"] == 5  # six machines, one deleted
    table = run("report", "problems", "--db", database, "--data", str(tmp_path))
    assert "E@x.py:1" in table.stdout and "machines" in table.stdout


def test_an_import_with_a_file_that_is_not_a_batch_stores_nothing(tmp_path: Path, database: str) -> None:
    """All or nothing: never the reports of the files before the bad one without the deletions read so far."""
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    folder = tmp_path / "usb-stick"
    kept, deleted = report(problems={"E@x.py:1": 1}), report(problems={"E@x.py:1": 1})
    (folder / "a.ceip.json.gz").parent.mkdir()
    (folder / "a.ceip.json.gz").write_bytes(body(kept, deleted))
    deep = b'{"schema": 1, "items": [' + b"[" * 5000 + b"]" * 5000 + b"]}"
    (folder / "b.ceip.json.gz").write_bytes(gzip.compress(deep))
    (folder / "c.ceip.json.gz").write_bytes(b"not gzip")
    (folder / "d.ceip.json.gz").write_bytes(body(deletion(deleted["guid"])))
    common = [
        "--db",
        database,
        "--data",
        str(tmp_path),
        "--allowlist",
        str(allowlist),
        "--specs",
        str(specs_file(tmp_path)),
    ]

    failed = run("import", str(folder), *common)
    assert failed.exit_code == 1
    assert "nothing imported: 2 of 4 file(s)" in failed.stderr
    assert f"{folder / 'b.ceip.json.gz'}: malformed-json: JSON nests too deeply" in failed.stderr
    assert f"{folder / 'c.ceip.json.gz'}: bad-gzip" in failed.stderr
    as_json = json.loads(run("import", str(folder), *common, "--json").stdout)
    assert as_json["stored"] is False and as_json["outcomes"] == {} and len(as_json["failed"]) == 2
    if database.startswith("sqlite"):
        assert not Path(database.removeprefix("sqlite://")).exists()  # not even opened

    (folder / "b.ceip.json.gz").unlink()
    (folder / "c.ceip.json.gz").unlink()
    done = run("import", str(folder), *common, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["outcomes"] == {"accepted": 3}
    versions = json.loads(run("report", "versions", *common[:4], "--k", "1", "--json").stdout)
    assert versions["versions"][0]["machines"] == 1  # the deletion applied after its pair's report


async def dump(database: str) -> str:
    """Every value in every table of the database, as one string."""
    if database.startswith("sqlite"):
        db = sqlite3.connect(database[len("sqlite://") :])
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return repr([db.execute(f"SELECT * FROM {t}").fetchall() for t in tables])
    conn = await asyncpg.connect(database)
    try:
        schema = await conn.fetchval("SELECT current_schema()")
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        return repr([await conn.fetch(f"SELECT * FROM {t['tablename']}") for t in tables])
    finally:
        await conn.close()


async def test_the_senders_address_is_never_stored(client: Any, database: str) -> None:
    response = await client.post(
        "/v1/reports",
        data=body(*(report() for _ in range(3))),
        headers={**GZIP, "X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"},
    )
    assert response.status == 200
    await client.post("/v1/deletions", data=body(deletion(report()["guid"])), headers=GZIP)
    stored = await dump(database)
    assert "report_id" in stored  # the reports are there ...
    for address in ("127.0.0.1", "203.0.113.7", "203.0.113.8", "localhost"):
        assert address not in stored  # ... and no address

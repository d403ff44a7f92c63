"""``ceip report`` prints what reports carried with control characters escaped (issue 16, item 3): a
problem signature with an escape sequence and ``\\r\\n`` once set the terminal's title and forged rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from service.factory import body, report, specs_file
from service.test_queries import machines

from ceip_core.cli import cli
from ceip_core.default_plugins.file_transport import write_atomically
from ceip_core.service.sqlite_store import path_of

HOSTILE = "E@x.py:1\x1b]0;pwned\x07\r\nsample  error  forged  99"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_ceip_report_escapes_a_hostile_signature(tmp_path: Path, database: str) -> None:
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    folder = tmp_path / "bundle"
    write_atomically(folder, body(*(report(g, problems={HOSTILE: 1}) for g in machines(5))))
    common = ["--db", database, "--data", str(tmp_path)]
    imported = run("import", str(folder), *common, "--allowlist", str(allowlist), "--specs", str(specs_file(tmp_path)))
    assert imported.exit_code == 0, imported.output
    assert run("report", "problems", *common).exit_code == 0  # folds what was imported
    # The service's scrubbers take control characters out of what it stores; a database written another
    # way (an older version, a tool) may still hold them, and the view must survive that too.
    with sqlite3.connect(path_of(database)) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            if "signature" in {column[1] for column in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"UPDATE {table} SET signature = ?", (HOSTILE,))
        conn.execute("UPDATE reach SET value = ? WHERE family = 'problem'", (HOSTILE,))
    conn.close()
    answer = json.loads(run("report", "problems", *common, "--json").stdout)
    assert [p["signature"] for p in answer["problems"]] == [HOSTILE]  # the JSON answer escapes it itself
    table = run("report", "problems", *common).stdout
    assert "\x1b" not in table and "\x07" not in table and "\r" not in table
    assert "E@x.py:1\\x1b]0;pwned\\x07\\r\\nsample  error  forged  99" in table
    assert len(table.splitlines()) == 2  # the header and one row: none forged

"""``--db`` as a person types it: a relative SQLite file, a typo, a file that is not a database."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import wait_for
from service.factory import specs_file

from ceip_core.cli import cli


def report(tmp_path: Path, db: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["report", "problems", "--db", db, "--data", str(tmp_path / "data")])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_report_never_creates_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = report(tmp_path, "sqlite:typo/x.db")
    assert code != 0
    assert f"no database at {tmp_path / 'typo' / 'x.db'}" in output and "ceip serve creates it" in output
    assert not (tmp_path / "typo").exists()
    code, output = report(tmp_path, f"sqlite://{tmp_path}/typo.db")  # sqlite:/// and the path
    assert code != 0 and f"no database at {tmp_path / 'typo.db'}" in output
    assert not (tmp_path / "typo.db").exists()


def test_report_names_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("these are my notes, not a database\n" * 100)
    code, output = report(tmp_path, f"sqlite:{notes}")
    assert code != 0 and "Traceback" not in output
    assert str(notes) in output and "not a ceip database" in output
    assert notes.read_text().startswith("these are my notes")


def test_serve_takes_a_relative_sqlite_file_and_names_its_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "allowlist.toml").write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    out = tmp_path / "out.txt"
    command = [sys.executable, "-m", "ceip_core", "serve", "--port", "0", "--db", "sqlite:ceip.db"]
    command += ["--data", str(tmp_path / "data"), "--allowlist", "allowlist.toml", "--token", "test-token-0000001"]
    command += ["--specs", str(specs_file(tmp_path))]
    with out.open("w") as stdout:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=stdout, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: re.search(r"database .*\(SQLite\)", out.read_text()), timeout=60)
        assert f"database {tmp_path / 'ceip.db'} (SQLite)" in out.read_text()
        assert (tmp_path / "ceip.db").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    code, output = report(tmp_path, f"sqlite:{tmp_path / 'ceip.db'}")
    assert code == 0 and "(nothing to show)" in output

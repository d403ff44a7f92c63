"""Raw reports, GUIDs and the query token are readable by their owner only, whatever the umask: the client's
state folder and files, the service's data folder, database and token (docs/security.md, "Files")."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ceip_core.consent import Consent
from ceip_core.private_files import private_folder
from ceip_core.service.auth import load_or_create_token
from ceip_core.service.sqlite_store import SQLiteStorage
from ceip_core.statedb import StateDB

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX modes")


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_client_state_folder_and_its_files_are_private(tmp_path: Path, umask: int, sample: object) -> None:
    home = tmp_path / "parent" / "ceip"
    db = StateDB(home)
    Consent(db).opt_in("sample")  # the database, its write-ahead log, and the identity backup
    Consent(db).opt_out("sample")  # the deletion journal
    conn = db.connect()
    conn.execute("SELECT 1").fetchone()
    assert mode(home) == 0o700
    files = {p.name: mode(p) for p in home.iterdir() if p.is_file() and not p.name.endswith(".lock")}
    assert {"ceip.db", "ceip.db-wal", "ceip.db-shm", "identity.json", "deletions.journal"} <= set(files)
    assert set(files.values()) == {0o600}, files
    db.close()


def test_the_service_data_folder_database_and_token_are_private(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "service"
    load_or_create_token(data)
    storage = SQLiteStorage(f"sqlite://{data / 'reports.db'}")

    async def open_and_close() -> dict[str, int]:
        await storage.open()
        try:
            return {p.name: mode(p) for p in data.iterdir()}
        finally:
            await storage.close()

    files = asyncio.run(open_and_close())
    assert mode(data) == 0o700
    assert {"query-token", "reports.db", "reports.db-wal", "reports.db-shm"} <= set(files)
    assert set(files.values()) == {0o600}, files


def test_an_existing_database_is_tightened_and_an_open_folder_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "shared"
    data.mkdir()
    os.chmod(data, 0o755)  # made by an older ceip, or shared on purpose: left as it is ...
    (data / "reports.db").touch()
    os.chmod(data / "reports.db", 0o644)
    storage = SQLiteStorage(f"sqlite://{data / 'reports.db'}")

    async def open_and_close() -> None:
        await storage.open()
        await storage.close()

    with caplog.at_level(logging.WARNING, logger="ceip_core.service.sqlite_store"):
        asyncio.run(open_and_close())
    assert mode(data) == 0o755
    assert mode(data / "reports.db") == 0o600  # ... but the raw reports are not readable by others any more
    assert f"{data} is open to other users (mode 0755)" in caplog.text and f"chmod 700 {data}" in caplog.text
    assert private_folder(data) is not None
    os.chmod(data, 0o700)
    assert private_folder(data) is None


def test_the_default_state_folder_is_tightened_and_a_chosen_one_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ceip_core.statedb import state_dir

    monkeypatch.delenv("CEIP_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    default = state_dir()
    default.mkdir(parents=True)
    os.chmod(default, 0o755)  # made by an older ceip
    StateDB(default).connect()
    assert mode(default) == 0o700
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    os.chmod(chosen, 0o755)
    monkeypatch.setenv("CEIP_HOME", str(chosen))
    StateDB(chosen).connect()
    assert mode(chosen) == 0o755 and mode(chosen / "ceip.db") == 0o600

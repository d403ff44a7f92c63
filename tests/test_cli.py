"""The ``ceip`` command, as the person at the machine uses it."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from helpers import as_unprivileged

import ceip_core
from ceip_core.cli import cli
from ceip_core.default_plugins.file_transport import SUFFIX
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB


def ceip(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result.output


def record_session(version: str = "1.0") -> None:
    with ceip_core.recorder("sample", version) as rec:
        rec.feature("open_file")
        rec.feature("export", "pdf")
        rec.problem("KeyError@load.py:12 for alice@example.com")


def test_consent_in_status_out(sample) -> None:
    assert "sample" in ceip("consent", "status")
    assert "not asked yet" in ceip("consent", "status")
    assert "A new random machine ID was created" in ceip("consent", "in", "sample")
    rows = json.loads(ceip("consent", "status", "--json"))
    assert {r["product"]: r["state"] for r in rows} == {"other": "unset", "sample": "in"}
    record_session()
    out = ceip("consent", "out", "sample")
    assert "1 queued report(s) deleted" in out
    assert "request to delete what was already sent is queued" in out
    assert "machine ID was discarded" in out


def test_consent_all(sample) -> None:
    changes = json.loads(ceip("consent", "in", "--all", "--json"))
    assert sorted(c["product"] for c in changes) == ["other", "sample"]
    changes = json.loads(ceip("consent", "out", "--all", "--json"))
    assert [c["deletion_queued"] for c in changes] == [True, True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["consent", "in", "nope"], "unknown product 'nope' (known: other, sample)"),
        (["consent", "in"], "name at least one product"),
        (["consent", "in", "sample", "--all"], "not both"),
        (["describe", "--product", "nope"], "unknown product 'nope'"),
        (["upload", "--to", "carrier-pigeon://x"], "no transport for 'carrier-pigeon'"),
        (["review", "--product", "nope"], "unknown product 'nope' (known: other, sample)"),
        (["purge", "--product", "nope", "--yes"], "unknown product 'nope' (known: other, sample)"),
        (["consent", "maybe"], "No such command 'maybe'"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_2(sample, args: list[str], message: str) -> None:
    assert message in ceip(*args, code=2)


@pytest.mark.parametrize(
    "args", [["upload", "--to"], ["agent", "--once", "--upload-to"], ["config", "set", "upload-url"]]
)
@pytest.mark.parametrize("target", ["notaurl", "outbox/sub", "None"])
def test_a_destination_without_a_scheme_is_refused_not_taken_for_a_folder(
    sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], target: str
) -> None:
    """Regression: ``ceip upload --to notaurl`` moved the whole queue into ./notaurl and said "Sent"."""
    monkeypatch.chdir(tmp_path)
    ceip("consent", "in", "sample")
    record_session()
    out = " ".join(ceip(*args, target, code=2).split())
    assert f"{target!r} is not a URL: give one with a scheme (known: file://, http://, https://" in out
    assert not (tmp_path / target.split("/")[0]).exists()  # no folder made
    assert json.loads(ceip("status", "--json"))["queued_reports"] == 1


def test_review_and_purge_take_a_product_that_is_only_queued(sample, ceip_plugins) -> None:
    ceip("consent", "in", "sample")
    record_session()
    ceip_plugins()  # the sample plugin is gone, its report is still queued
    assert "== sample ==" in ceip("review", "--product", "sample")
    assert "Deleted 1 queued report(s)." in ceip("purge", "--product", "sample", "--yes")


def test_an_uninstalled_product_can_still_be_opted_out(sample, ceip_plugins) -> None:
    ceip("consent", "in", "sample")
    ceip_plugins()  # the sample plugin is gone now
    assert "not participating" in ceip("consent", "out", "sample")


def test_status_shows_guid_queue_and_drops(sample) -> None:
    ceip("consent", "in", "sample")
    record_session()
    data = json.loads(ceip("status", "--json"))
    assert data["guid"] and data["queued_reports"] == 1 and data["queued_by_product"] == {"sample": 1}
    ceip("purge", "--yes")
    data = json.loads(ceip("status", "--json"))
    assert data["queued_reports"] == 0 and data["drops"]["purged"] == 1
    assert "purged 1" in ceip("status")


def test_review_shows_exactly_what_will_be_sent(sample, ceip_home: Path) -> None:
    ceip("consent", "in", "sample")
    record_session("3.1")
    text = ceip("review")
    assert "== sample ==" in text and "count     open_file = 1" in text
    assert "alice@example.com" not in text and "<email>" in text
    [stored] = Spool(StateDB(ceip_home)).items()
    # JSON lines: each item exactly as stored (and sent).
    assert ceip("review", "--json").encode() == stored.data + b"\n"
    assert orjson.loads(stored.data)["type"] == "report"
    assert "Nothing is queued" in ceip("review", "--product", "other")


def test_upload_to_a_drop_folder_empties_the_queue(sample, tmp_path: Path) -> None:
    ceip("consent", "in", "sample")
    record_session()
    record_session()
    drop = tmp_path / "drop"
    assert "Sent 2 item(s) in 1 batch(es)" in ceip("upload", "--to", f"file://{drop}")
    [batch] = list(drop.glob(f"*{SUFFIX}"))
    body = json.loads(gzip.decompress(batch.read_bytes()))
    assert [i["type"] for i in body["items"]] == ["report", "report"]
    assert json.loads(ceip("status", "--json"))["queued_reports"] == 0
    assert json.loads(ceip("status", "--json"))["last_upload"] is not None


def test_reset_id(sample) -> None:
    assert "no product is opted in" in ceip("reset-id", code=1)
    ceip("consent", "in", "sample")
    before = json.loads(ceip("status", "--json"))["guid"]
    ceip("reset-id")
    assert json.loads(ceip("status", "--json"))["guid"] not in (None, before)


def test_describe_is_the_data_dictionary(sample) -> None:
    text = ceip("describe")
    assert "## Sample (`sample`)" in text
    assert "| `render_ms` | histogram | ms | Time to render a view. |" in text
    assert "### Configuration" in text and "Labels: pdf, csv" in text


def test_plugins_lists_builtins_and_hooks(sample) -> None:
    rows = json.loads(ceip("plugins", "--json"))
    by_name = {r["name"]: r for r in rows}
    assert by_name["ceip_core.default_plugins.file_transport"]["hooks"] == ["ceip_register_transports"]
    assert by_name["ceip_core.default_plugins.declared"]["builtin"] is True
    assert "ceip_sample" in by_name


def test_the_installed_console_script_runs(sample) -> None:
    exe = shutil.which("ceip", path=str(Path(sys.executable).parent))
    assert exe, "the ceip console script is not installed beside this interpreter"
    proc = subprocess.run([exe, "consent", "in", "nope"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown product 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- a state folder this user cannot use --------------------------------------------------------------------


FIX = (
    "Make it a folder this user can write to (check its owner and permissions), "
    "or choose another one with --home or CEIP_HOME"
)


@pytest.mark.parametrize(
    "args", [["status"], ["consent", "in", "sample"], ["upload", "--to", "file:///x"], ["agent", "--once"]]
)
def test_a_state_folder_in_the_way_of_a_file_is_named_with_the_fix(sample, tmp_path: Path, args: list[str]) -> None:
    """Regression: a CEIP_HOME that could not be used ended in a traceback."""
    (tmp_path / "a-file").write_text("")
    home = tmp_path / "a-file" / "home"
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    assert result.exit_code == 1, result.output
    assert f"Error: cannot use the state folder {home}: Not a directory" in result.output
    assert FIX in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("exists", [False, True], ids=["empty", "with-a-database"])
@pytest.mark.parametrize("args", [["consent", "in", "sample"], ["status"], ["agent", "--once"]])
def test_a_read_only_state_folder_is_named_with_the_fix(sample, tmp_path: Path, args: list[str], exists: bool) -> None:
    home = tmp_path / "home"
    home.mkdir()
    if exists:
        ceip("--home", str(home), "status")
    home.chmod(0o555)
    try:
        proc = subprocess.run(
            as_unprivileged([sys.executable, "-m", "ceip_core", "--home", str(home), *args]),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        home.chmod(0o755)
    if exists and args == ["status"]:  # reading needs no write access
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 1, proc.stderr
    assert f"Error: cannot use the state folder {home}: " in proc.stderr and FIX in proc.stderr
    assert "Traceback" not in proc.stderr

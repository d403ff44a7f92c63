"""The agent's status record: the one encoder and decoder of ``agent.json``, what a reader makes of the lock,
and what ``ceip status`` shows of a file that is damaged, older or newer than this version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ceip_core.agent_state import STATUS_FILE
from ceip_core.agent_status import AgentStatus, LastUpload, decode, encode, read_status, write_status
from ceip_core.cli import cli

FULL = AgentStatus(
    state="running",
    pid=4242,
    started=1_700_000_000.5,
    updated=1_700_000_100.25,
    observing={"analyst": ["analyst", "analyst-cli"], "packager": []},
    sessions_ended=3,
    reports_sealed=2,
    last_seal=1_700_000_090.0,
    last_periodic_seal=1_699_990_000.0,
    upload_to="https://127.0.0.1:8443",
    last_upload=LastUpload(at=1_700_000_095.0, accepted=2, retried=1),
    collector_troubles={"hub-server": {"failed": 1, "overrun": 2}},
)


def test_what_is_written_reads_back_the_same() -> None:
    assert decode(encode(FULL)) == FULL
    assert "unreadable" not in json.loads(encode(FULL))  # the reader's verdict, never the writer's


def test_the_file_keeps_the_shape_agents_have_always_written() -> None:
    """``ceip status --json`` shows these keys under ``agent``: renaming one breaks its readers."""
    assert json.loads(encode(FULL)) == {
        "state": "running",
        "pid": 4242,
        "started": 1_700_000_000.5,
        "updated": 1_700_000_100.25,
        "observing": {"analyst": ["analyst", "analyst-cli"], "packager": []},
        "sessions_ended": 3,
        "reports_sealed": 2,
        "last_seal": 1_700_000_090.0,
        "last_periodic_seal": 1_699_990_000.0,
        "upload_to": "https://127.0.0.1:8443",
        "last_upload": {"at": 1_700_000_095.0, "accepted": 2, "retried": 1},
        "collector_troubles": {"hub-server": {"failed": 1, "overrun": 2}},
    }


def test_an_older_file_reads_with_defaults_and_a_newer_ones_extra_fields_are_ignored() -> None:
    older = {"state": "stopped", "pid": 7, "started": 1_700_000_000, "reports_sealed": 4, "last_upload": None}
    status = decode(json.dumps({**older, "a_field_of_a_later_version": {"x": 1}}))
    assert status == AgentStatus(state="stopped", pid=7, started=1_700_000_000.0, reports_sealed=4)
    assert isinstance(status.started, float)  # JSON has one kind of number


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[1, 2]", "not a JSON object but list"),
        ("{}", "'state' is None, not one of starting, running, stopped"),
        ('{"state": "never run"}', "'state' is 'never run', not one of starting, running, stopped"),
        ('{"state": "running", "reports_sealed": "3"}', "'reports_sealed' is '3', not a whole number"),
        ('{"state": "running", "sessions_ended": true}', "'sessions_ended' is True, not a whole number"),
        ('{"state": "running", "started": "today"}', "'started' is 'today', not a time in seconds"),
        ('{"state": "running", "observing": {"analyst": "analyst"}}', "'observing.analyst' is 'analyst', not a list"),
        ('{"state": "running", "observing": {"analyst": [1]}}', "'observing.analyst' is [1], not a list of names"),
        ('{"state": "running", "last_upload": {"at": 1, "accepted": 1.5}}', "'last_upload.accepted' is 1.5"),
        ('{"state": "running", "collector_troubles": {"x": {"failed": "1"}}}', "'collector_troubles.x.failed'"),
        ('{"state": "running", "collector_troubles": {"x": 3}}', "'collector_troubles.x' is 3, not an object"),
    ],
)
def test_a_malformed_file_is_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        decode(text)


def test_a_damaged_file_reads_as_unreadable_never_raises(tmp_path: Path) -> None:
    (tmp_path / STATUS_FILE).write_bytes(b'{"state": "running", "pid": "\xff"}')
    status = read_status(tmp_path)
    assert status.state == "never run" and status.pid is None
    assert status.unreadable is not None and status.unreadable.startswith(f"{tmp_path / STATUS_FILE} is not")

    (tmp_path / STATUS_FILE).write_text('{"state": "running", "reports_sealed": "3"}')
    assert read_status(tmp_path).unreadable == (
        f"{tmp_path / STATUS_FILE} is not what an agent writes: 'reports_sealed' is '3', not a whole number"
    )


def test_without_a_file_the_agent_never_ran(tmp_path: Path) -> None:
    assert read_status(tmp_path) == AgentStatus(state="never run")


def test_the_state_is_checked_against_the_lock(tmp_path: Path) -> None:
    write_status(tmp_path, AgentStatus(state="running", pid=1))
    assert read_status(tmp_path).state == "stopped unexpectedly"  # it said running, and nobody holds the lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from ceip_core.agent_state import agent_lock\n"
            "with agent_lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # the file of an agent that died while running (pid 1), the lock now held by a new one: starting
        assert read_status(tmp_path) == AgentStatus(state="starting", pid=holder.pid)
        write_status(tmp_path, AgentStatus(state="running", pid=holder.pid))
        assert read_status(tmp_path) == AgentStatus(state="running", pid=holder.pid)
        write_status(tmp_path, AgentStatus(state="starting", pid=1))
        assert read_status(tmp_path) == AgentStatus(state="starting", pid=holder.pid)
        (tmp_path / STATUS_FILE).write_text("not json")  # a lock held and a damaged file: starting, and why
        damaged = read_status(tmp_path)
        assert (damaged.state, damaged.pid) == ("starting", holder.pid) and damaged.unreadable
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    write_status(tmp_path, AgentStatus(state="stopped", pid=1))
    assert read_status(tmp_path).state == "stopped"


def test_ceip_status_names_a_damaged_status_file_and_goes_on(ceip_home: Path) -> None:
    (ceip_home / STATUS_FILE).write_text('{"state": "running", "observing": []}')
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 0, result.output
    assert (
        "Agent:          not running (start it with: ceip agent) "
        f"({ceip_home / STATUS_FILE} is not what an agent writes: 'observing' is [], not an object)"
    ) in result.output
    shown = CliRunner().invoke(cli, ["status", "--json"])
    assert shown.exit_code == 0, shown.output
    agent = json.loads(shown.output)["agent"]
    assert agent["state"] == "never run" and "'observing' is []" in agent["unreadable"]


def test_ceip_status_json_shows_the_record(ceip_home: Path) -> None:
    write_status(ceip_home, FULL)
    result = CliRunner().invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["agent"] == {
        **json.loads(encode(FULL)),
        "state": "stopped unexpectedly",
        "unreadable": None,
    }

"""The query token ``ceip serve`` takes: at least 16 characters unless asked for, from the environment or a
file by preference, and a warning when it is on the command line, where other local users see it.

Each run stops right after the token is taken: the allowlist file names no product, which ``ceip serve``
refuses next, so that a run that gets that far proves the token was accepted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ceip_core.cli import cli

LONG = "a-token-of-24-characters"
WARNING = "visible to other users of this machine"


@pytest.fixture
def serve(tmp_path: Path) -> Any:
    empty = tmp_path / "allowlist.toml"
    empty.write_text("")

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        command = ["serve", "--data", str(tmp_path / "data"), "--allowlist", str(empty), *args]
        environment: dict[str, str | None] = {"CEIP_SERVICE_TOKEN": None, "CEIP_SERVICE_DB": None, **(env or {})}
        return CliRunner().invoke(cli, command, env=environment)

    return run


def accepted(result: Result) -> bool:
    """True if ``ceip serve`` got past the token to the (empty) allowlist."""
    assert result.exit_code in (1, 2), result.output
    return result.exit_code == 1 and "token" not in result.stdout.lower()


def test_a_short_token_is_refused_unless_asked_for(serve: Any) -> None:
    result = serve("--token", "short")
    assert result.exit_code == 2
    assert "has 5 characters; use at least 16" in result.stderr and "--allow-short-token" in result.stderr
    assert accepted(serve("--token", "short", "--allow-short-token"))
    result = serve(env={"CEIP_SERVICE_TOKEN": "short"})
    assert result.exit_code == 2 and "$CEIP_SERVICE_TOKEN" in result.stderr


def test_a_token_on_the_command_line_gets_a_warning_and_one_from_the_environment_none(serve: Any) -> None:
    result = serve("--token", LONG)
    assert accepted(result) and WARNING in result.stderr
    result = serve(env={"CEIP_SERVICE_TOKEN": LONG})
    assert accepted(result) and WARNING not in result.stderr


def test_the_token_can_come_from_a_file(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(LONG + "\n")
    os.chmod(path, 0o600)
    result = serve("--token-file", str(path))
    assert accepted(result) and WARNING not in result.stderr
    os.chmod(path, 0o644)
    result = serve("--token-file", str(path))
    assert accepted(result) and f"other users may read {path}: run `chmod 600 {path}`" in result.stderr
    path.write_text("short\n")
    result = serve("--token-file", str(path))
    assert result.exit_code == 2 and f"--token-file {path}" in result.stderr and "5 characters" in result.stderr
    result = serve("--token-file", str(path), "--token", LONG)
    assert result.exit_code == 2 and "give the query token once" in result.stderr


def test_a_token_with_spaces_around_it_is_refused(serve: Any) -> None:
    result = serve(env={"CEIP_SERVICE_TOKEN": LONG + " "})
    assert result.exit_code == 2 and "white space" in result.stderr

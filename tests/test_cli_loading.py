"""The ``ceip`` command loads a command only when it is invoked (issue 11's start-up; the figures are in
bench/cli.py): ``--help`` lists every command from ``ceip_core.cli.AUDIENCES`` without importing one."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from ceip_core.cli import AUDIENCES, cli

#: What the quick commands must not load: the event loop, HTTP, the wire codec, the records, the plugins.
HEAVY = ["asyncio", "aiohttp", "cattrs", "attrs", "pluggy", "psutil", "ceip_core.plugins", "ceip_core.wire"]


def loaded_by(*args: str, env: dict[str, str]) -> set[str]:
    """The modules a fresh interpreter has loaded after ``ceip ARGS`` ran (successfully)."""
    code = (
        "import json, sys\n"
        "from ceip_core.cli import cli\n"
        f"try:\n    cli({list(args)!r}, prog_name='ceip')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.splitlines()[-1]))


@pytest.fixture
def env(ceip_home) -> dict[str, str]:
    import os

    return {**os.environ, "CEIP_HOME": str(ceip_home)}


def test_help_imports_no_command(env) -> None:
    loaded = loaded_by("--help", env=env)
    commands = {where.partition(":")[0] for group in AUDIENCES.values() for where, _ in group.values()}
    assert not loaded & commands, loaded & commands
    assert not loaded & set(HEAVY)


def test_status_imports_nothing_heavy(env) -> None:
    loaded = loaded_by("status", env=env)
    assert "ceip_core.cli.machine" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert not loaded & {"ceip_core.cli.sending", "ceip_core.cli.review", "ceip_core.service.commands"}


def test_help_lists_every_command_by_audience_with_its_own_help() -> None:
    ctx = click.Context(cli)
    listed = {name: about for group in AUDIENCES.values() for name, (_, about) in group.items()}
    assert cli.list_commands(ctx) == sorted(listed)
    for name, about in listed.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        # The one-line help in AUDIENCES is the command's own first sentence: they cannot drift apart.
        assert command.get_short_help_str(limit=10_000) == about, name
    text = cli.get_help(ctx)
    assert [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")] == [
        "Options:",
        *(f"{audience}:" for audience in AUDIENCES),
    ]

"""docs/cli.md is what ``python -m ceip_core.cli.reference`` writes from the click commands, on any machine
and any terminal."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ceip_core.cli import cli
from ceip_core.cli.reference import reference

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "cli.md"
REGENERATE = ".venv/bin/python -m ceip_core.cli.reference > docs/cli.md"


def test_the_published_reference_is_what_the_commands_say() -> None:
    published = PUBLISHED.read_text(encoding="utf-8")
    assert published == reference(), f"docs/cli.md differs from the click commands: regenerate it with {REGENERATE}"


def _command_paths(ctx: click.Context) -> list[str]:
    paths = [ctx.command_path]
    if isinstance(ctx.command, click.Group):
        for name in ctx.command.list_commands(ctx):
            sub = ctx.command.get_command(ctx, name)
            assert sub is not None
            paths += _command_paths(click.Context(sub, info_name=name, parent=ctx))
    return paths


def test_every_command_has_its_section() -> None:
    paths = _command_paths(click.Context(cli, info_name="ceip"))
    headings = re.findall(r"^#{2,4} (ceip\b.*)$", reference(), flags=re.MULTILINE)
    assert headings == sorted(headings, key=paths.index)  # in the group's order
    assert set(headings) == set(paths)
    assert {"ceip consent in", "ceip allowlist add", "ceip agent install", "ceip report", "ceip serve"} <= set(paths)


@pytest.mark.parametrize("columns", ["40", "250"])
def test_the_reference_does_not_depend_on_the_terminal_or_the_machine(columns: str, tmp_path: Path) -> None:
    """Made in a narrow and a wide terminal, from another folder with another home and state folder: the
    same page, naming no path or user of this machine."""
    env = {**os.environ, "COLUMNS": columns, "LINES": "10", "HOME": str(tmp_path), "CEIP_HOME": str(tmp_path)}
    made = subprocess.run(
        [sys.executable, "-m", "ceip_core.cli.reference"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert made == reference()
    for local in {str(tmp_path), str(Path.home()), str(ROOT), sys.prefix}:
        assert local not in made
    user = getpass.getuser()
    assert not re.search(rf"/(home|Users)/{re.escape(user)}\b", made)

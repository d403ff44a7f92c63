"""The ``ceip`` command: what the person at the machine uses to see and control participation.

Human output by default, ``--json`` for scripts. Bad input gets a message that names the problem and a
non-zero exit, never a traceback. The commands are grouped by who uses them: the person at the machine
(:mod:`ceip_core.cli.machine`, :mod:`ceip_core.cli.sending`), maintainers
(:mod:`ceip_core.cli.maintainers`), operators (:mod:`ceip_core.cli.operators`) and the vendor
(:mod:`ceip_core.service.commands`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ceip_core.statedb import StateFolderError, folder_error, state_dir


class _Commands(click.Group):
    """The command group; a state folder this user cannot use ends any command with a message naming
    the folder and the fix, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            folder = state_dir()
            in_folder = exc.filename is not None and Path(os.fsdecode(exc.filename)).is_relative_to(folder)
            unusable = folder_error(folder, exc) if isinstance(exc, StateFolderError) or in_folder else None
            if unusable is None:
                raise
            raise click.ClickException(str(unusable)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CEIP_HOME",
    help="State folder (default: $CEIP_HOME, else the platform's data folder).",
)
@click.version_option(package_name="ceip")
def cli(home: Path | None) -> None:
    """ceip: see and control what this machine shares to improve the products you use."""
    if home is not None:
        os.environ["CEIP_HOME"] = str(home)


from ceip_core.cli import machine, maintainers, operators, sending  # noqa: E402
from ceip_core.service.commands import COMMANDS as _SERVICE_COMMANDS  # noqa: E402

for _command in (
    machine.consent,
    machine.status,
    machine.review,
    machine.reset_id,
    machine.purge,
    machine.options,
    sending.config,
    sending.upload,
    sending.export,
    maintainers.describe,
    maintainers.plugins,
    operators.demo,
    maintainers.allowlist_group,
    operators.agent_group,
    *_SERVICE_COMMANDS,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="ceip")

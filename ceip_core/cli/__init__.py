"""The ``ceip`` command: what the person at the machine uses to see and control participation.

Human output by default, ``--json`` for scripts. Bad input gets a message that names the problem and a
non-zero exit, never a traceback.

The commands are grouped by who uses them (:data:`AUDIENCES`), and each is imported only when it is
invoked: start-up is most of what a command costs, and ``ceip --help``, ``ceip status`` or
``ceip consent out X`` must not pay for the agent, the upload loop or the receiving service. This module
imports click and the standard library only.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

#: Every command, by audience: its name, where it lives (``module:attribute``) and its one-line help,
#: which ``ceip --help`` lists without importing the commands (a test keeps it equal to each command's own).
AUDIENCES: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "At the machine": {
        "consent": ("ceip_core.cli.machine:consent", "Show or change participation, per product."),
        "status": (
            "ceip_core.cli.machine:status",
            "Show the machine ID, the queue, the last upload and what was dropped.",
        ),
        "review": (
            "ceip_core.cli.review:review",
            "Show exactly what is queued to be sent (with --sent: what was sent).",
        ),
        "purge": (
            "ceip_core.cli.machine:purge",
            "Delete queued reports without sending them (deletion requests stay).",
        ),
        "reset-id": ("ceip_core.cli.machine:reset_id", "Replace the machine ID with a new random one."),
        "options": (
            "ceip_core.cli.machine:options",
            "Open the Customer Feedback Options window for PRODUCT (default: every installed product).",
        ),
        "config": ("ceip_core.cli.sending:config", "Settings kept in the state folder (e.g. where to upload)."),
        "upload": ("ceip_core.cli.sending:upload", "Send what is queued now."),
        "export": (
            "ceip_core.cli.sending:export",
            "Move everything queued into a bundle folder of batch files, for a machine with no network: carry "
            "the folder to the receiving service and run 'ceip import FOLDER' there.",
        ),
    },
    "Maintainers": {
        "allowlist": (
            "ceip_core.cli.maintainers:allowlist_group",
            "Maintainers: which products and executables may report on this machine.",
        ),
        "describe": (
            "ceip_core.cli.maintainers:describe",
            "Print the data dictionary (Markdown): everything each product may collect.",
        ),
        "plugins": (
            "ceip_core.cli.maintainers:plugins",
            "List loaded plugins, their versions and the hooks they implement.",
        ),
    },
    "Operators": {
        "agent": (
            "ceip_core.cli.operators:agent_group",
            "Observe the allowlisted, opted-in products and this machine, and queue reports (one agent per machine).",
        ),
        "demo": (
            "ceip_core.cli.operators:demo",
            "The real thing on this machine: the agent observes the stand-in products, then review, status and "
            "the vendor's dashboard.",
        ),
    },
    "The receiving service (the vendor's)": {
        "serve": (
            "ceip_core.service.commands:serve",
            "Run the receiving service: machines upload here; the query API answers with aggregates.",
        ),
        "report": (
            "ceip_core.service.commands:report",
            "Print what the query API answers: problems, trends, features, config, timings, participation, "
            "versions or problem_versions; or 'storage': database size, rows per table, fold lag and counters "
            "(what 'GET /metrics' exports).",
        ),
        "import": (
            "ceip_core.service.commands:import_bundles",
            "Ingest BUNDLES (batch files or drop folders carried from air-gapped machines), validated and "
            "de-duplicated.",
        ),
        "rebuild-rollups": (
            "ceip_core.service.commands:rebuild_rollups",
            "Fold every stored raw report into the rollups again (days that aged out keep theirs).",
        ),
    },
}


#: The commands that run the receiving service (``pip install 'ceip[service]'``), the demo included.
NEEDS_SERVICE = frozenset({"serve", "report", "import", "rebuild-rollups", "demo"})


class _Commands(click.Group):
    """The command group. It imports a command only when it is invoked (``--help`` lists the names and
    one-line helps of :data:`AUDIENCES`, by audience), and a state folder this user cannot use ends any
    command with a message naming the folder and the fix, not a traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = {name: where for commands in AUDIENCES.values() for name, where in commands.items()}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, _, attribute = self.lazy[cmd_name][0].partition(":")
            if cmd_name in NEEDS_SERVICE:  # a client-only install: say what to install, not a traceback
                from ceip_core.cli.common import require_service

                require_service(cmd_name)
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = max(map(len, self.lazy))
        limit = formatter.width - 6 - width
        for audience, commands in AUDIENCES.items():
            with formatter.section(audience):
                formatter.write_dl(
                    [(name.ljust(width), _shortened(about, limit)) for name, (_, about) in commands.items()]
                )

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            from ceip_core.statedb import StateFolderError, folder_error, state_dir

            folder = state_dir()
            in_folder = exc.filename is not None and Path(os.fsdecode(exc.filename)).is_relative_to(folder)
            unusable = folder_error(folder, exc) if isinstance(exc, StateFolderError) or in_folder else None
            if unusable is None:
                raise
            raise click.ClickException(str(unusable)) from None


def _shortened(text: str, limit: int) -> str:
    """``text`` cut at a word to fit ``limit`` characters, as click shortens a command's help."""
    if len(text) <= limit:
        return text
    import textwrap

    return textwrap.shorten(text, max(limit, 3), placeholder="...", break_on_hyphens=False)


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


def main() -> None:
    cli(prog_name="ceip")

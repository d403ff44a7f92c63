"""The CLI reference, ``docs/cli.md``, written from the click commands themselves so that it cannot drift.

Regenerate it with ``python -m ceip_core.cli.reference > docs/cli.md``; ``tests/docs/test_cli_reference.py``
fails while the published copy differs. Each command gets its ``--help`` text exactly as ``ceip`` prints
it, at a fixed width, so the page does not depend on the terminal it was made in; every default shown is
a literal of the command's definition (or a sentence, never a path of this machine).
"""

from __future__ import annotations

import click

from ceip_core.cli import AUDIENCES, cli

#: The width of the help texts in the page: a wide terminal's, so that option tables keep to one line.
WIDTH = 100

_HEADER = """\
# The `ceip` command

<!-- Generated from the click commands by `python -m ceip_core.cli.reference > docs/cli.md`: do not edit by
hand; tests/docs/test_cli_reference.py fails while this page and the commands differ. -->

Every command and option of `ceip`, as `ceip COMMAND --help` prints it. The guides say when to use them:
[users.md](users.md) (the person at the machine), [maintainers.md](maintainers.md) (the allowlist),
[agent.md](agent.md), [operations.md](operations.md) (the receiving service).
"""


def reference() -> str:
    """The Markdown of ``docs/cli.md``: a contents list by audience, then every command, its subcommands
    after it, depth first."""
    root = click.Context(cli, info_name="ceip", terminal_width=WIDTH, max_content_width=WIDTH, **cli.context_settings)
    parts = [_HEADER, "## Contents\n"]
    for audience, commands in AUDIENCES.items():
        names = ", ".join(f"[`{name}`](#{anchor('ceip ' + name)})" for name in commands)
        parts.append(f"- {audience}: {names}")
    parts.append("")
    parts.extend(_section(root, depth=2))
    return "\n".join(parts)


def _section(ctx: click.Context, depth: int) -> list[str]:
    """The section of ``ctx``'s command and, for a group, of each of its subcommands after it."""
    command = ctx.command
    lines = [f"{'#' * depth} {ctx.command_path}", "", "```text", command.get_help(ctx).rstrip(), "```", ""]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)  # as make_context does
                lines.extend(_section(sub_ctx, min(depth + 1, 4)))
    return lines


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, spaces as hyphens, punctuation other than ``-`` gone."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def main() -> None:
    click.echo(reference(), nl=False)


if __name__ == "__main__":
    main()

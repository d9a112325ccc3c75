"""The command-line reference: every command's ``--help``, as Markdown (docs/cli.md is this
output; a test keeps the two equal)."""

from __future__ import annotations

import click

WIDTH = 100
"""Columns of the help text (fixed, so that the output does not depend on the terminal)."""


def help_reference(command: click.Command | None = None, name: str = "spikegrad") -> str:
    """Markdown with the ``--help`` of ``command`` (default: ``spikegrad``) and of every
    command below it, depth first in the order ``--help`` lists them."""
    if command is None:
        from spikegrad.cli import main as command

    sections = ["# Command-line reference\n\n"
                "Every command's `--help`, generated from the commands themselves "
                "(`spikegrad.cli.help_reference()`; a test keeps this file equal to it):\n\n"
                "```\npython -c \"import spikegrad.cli as c; print(c.help_reference(), end='')\""
                " > docs/cli.md\n```\n"]
    _add_sections(sections, command, name, None)
    return "\n".join(sections)


def _add_sections(sections: list[str], command: click.Command, name: str,
                  parent: click.Context | None) -> None:
    context = command.make_context(name, [], parent=parent, resilient_parsing=True,
                                   terminal_width=WIDTH, max_content_width=WIDTH)
    with context:
        sections.append(f"## `{context.command_path}`\n\n```text\n"
                        f"{command.get_help(context)}\n```\n")
        if isinstance(command, click.Group):
            for sub_name in command.list_commands(context):
                _add_sections(sections, command.get_command(context, sub_name), sub_name,
                              context)

"""The ``spikegrad`` command line: every command, and nothing else (no logic of its own; each
command is a thin shell over the library).

One module per command: :mod:`~spikegrad.cli.train`, :mod:`~spikegrad.cli.config`,
:mod:`~spikegrad.cli.data`, :mod:`~spikegrad.cli.study`, :mod:`~spikegrad.cli.reproduce`,
:mod:`~spikegrad.cli.bench`, :mod:`~spikegrad.cli.export`; what they share (one-line
errors, JSON output, ``--set``) is in :mod:`~spikegrad.cli.support`.

Every error a user can cause (a :class:`~spikegrad.errors.SpikegradError`, or a value that
click's checks refuse) ends with one line on stderr, ``spikegrad: error: ...``, and exit
code 2.
"""

from __future__ import annotations

from importlib import import_module

import click

from spikegrad.cli.reference import help_reference
from spikegrad.cli.support import fail

__all__ = ["help_reference", "main"]

COMMANDS = ("bench", "config", "data", "export", "reproduce", "study", "train")
"""The commands, in the order of ``--help``; each is the function of that name in the module of
that name."""


class _Commands(click.Group):
    """The commands, each imported when it runs (or when ``--help`` lists them): a command that
    trains nothing (``study run``'s driver, ``config``, ``data``) starts without importing torch,
    which takes seconds."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return getattr(import_module(f"spikegrad.cli.{name}"), name)

    def invoke(self, ctx: click.Context):
        """What click's own checks refuse (a file where a folder is needed, a number out of
        range, a missing or unknown option) is one line too, as the commands' own errors; a
        group called without a command still shows its help."""
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # click >= 8.2
                raise
            command = f" (see {error.ctx.command_path} --help)" if error.ctx else ""
            fail(error.format_message().splitlines()[0] + command)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikegrad")
def main() -> None:
    """spikegrad: train spiking networks with surrogate gradients and reproduce
    the robustness studies of Zenke & Vogels (2021)."""

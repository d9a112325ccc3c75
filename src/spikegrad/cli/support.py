"""What every ``spikegrad`` command shares: one-line user errors (exit code 2), JSON output
and the ``--set`` option."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn

import click

from spikegrad.errors import GridTooLargeError, RunFolderError, SpikegradError, first_line
from spikegrad.io import strict_json

EXIT_USAGE = 2


def fail(message: str) -> NoReturn:
    """One line on stderr, ``spikegrad: error: <message>``, and exit code 2."""
    click.echo(f"spikegrad: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def message(error: SpikegradError) -> str:
    """The first line of a library error, with the command's flags in place of the
    library's arguments where it says what to do."""
    if isinstance(error, RunFolderError):
        return error.problem + ("; pass --resume or choose another --out" if error.resumable
                                else "; choose another --out")
    if isinstance(error, GridTooLargeError):
        return error.problem + "; pass --force to expand it anyway"
    return first_line(error)


def user_errors(function: Callable) -> Callable:
    """Turn the library's user-facing errors (:class:`~spikegrad.errors.SpikegradError`)
    into one line and exit code 2; any other exception is a bug and keeps its traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SpikegradError as error:
            fail(message(error))

    return wrapper


def print_json(obj) -> None:
    click.echo(strict_json(obj, sort_keys=False))


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=20 --set model.hidden.0.size=200.",
)

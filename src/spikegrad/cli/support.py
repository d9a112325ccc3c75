"""What every ``spikegrad`` command shares: one-line user errors (exit code 2), JSON output
and the ``--set`` option."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import NoReturn

import click

from spikegrad.config import ConfigError
from spikegrad.io import strict_json

EXIT_USAGE = 2


def fail(message: str) -> NoReturn:
    """One line on stderr, ``spikegrad: error: <message>``, and exit code 2."""
    click.echo(f"spikegrad: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def user_errors(function: Callable) -> Callable:
    """Turn the library's user-facing errors into one line and exit code 2."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ConfigError, FileNotFoundError, ValueError) as error:
            fail(str(error).splitlines()[0] if str(error) else type(error).__name__)

    return wrapper


def print_json(obj) -> None:
    click.echo(strict_json(obj, sort_keys=False))


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=20 --set model.hidden.0.size=200.",
)

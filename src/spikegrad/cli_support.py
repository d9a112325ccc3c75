"""What every ``spikegrad`` command shares: one-line user errors (exit code 2), JSON output
and the ``--set`` option. Command modules import this, never :mod:`spikegrad.cli`."""

from __future__ import annotations

import functools
import json
import math
import sys

import click

from spikegrad.config import ConfigError

EXIT_USAGE = 2


def fail(message: str) -> None:
    click.echo(f"spikegrad: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def user_errors(function):
    """Turn the library's user-facing errors into one line and exit code 2."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ConfigError, FileNotFoundError, ValueError) as error:
            fail(str(error).splitlines()[0] if str(error) else type(error).__name__)

    return wrapper


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def print_json(obj) -> None:
    click.echo(json.dumps(_json_safe(obj), sort_keys=False))


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=20 --set model.hidden.0.size=200.",
)

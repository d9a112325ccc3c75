"""``spikegrad config ...``: list, show and document experiment configs."""

from __future__ import annotations

import click

from spikegrad.cli.support import set_option, user_errors


@click.group()
def config() -> None:
    """List, show and check experiment configs."""


@config.command("list")
def config_list() -> None:
    """Names of the built-in configs."""
    from spikegrad.config import builtin_config_names

    for name in builtin_config_names():
        click.echo(name)


@config.command("show")
@click.argument("config")
@set_option
@user_errors
def config_show(config: str, overrides: tuple[str, ...]) -> None:
    """Print the full, validated CONFIG (with defaults filled in) as YAML."""
    from spikegrad.config import load_config

    click.echo(load_config(config, list(overrides)).to_yaml(), nl=False)


@config.command("reference")
def config_reference_command() -> None:
    """Print every config field with its default and meaning (Markdown; docs/config.md)."""
    from spikegrad.config import config_reference

    click.echo(config_reference(), nl=False)

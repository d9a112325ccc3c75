"""The ``spikegrad`` command line: a thin shell over the library (no logic of its own).

Every error a user can cause ends with one line on stderr, ``spikegrad: error: ...``,
and exit code 2.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import click

from spikegrad.config import ConfigError, builtin_config_names, load_config

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikegrad")
def main() -> None:
    """spikegrad: train spiking networks with surrogate gradients and reproduce
    the robustness studies of Zenke & Vogels (2021)."""


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=20 --set model.hidden.0.size=200.",
)


@main.command()
@click.argument("config")
@set_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for config.yaml, metrics.jsonl, result.json and checkpoint.pt.")
@click.option("--resume", is_flag=True, help="Continue the run whose checkpoint is in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def train(config: str, overrides: tuple[str, ...], out_dir: Path | None, resume: bool,
          as_json: bool, quiet: bool) -> None:
    """Train the network of CONFIG (a YAML file or a built-in name such as 'randman')."""
    from spikegrad.training import train as run_training

    if resume and out_dir is None:
        raise ConfigError("--resume needs --out (the folder of the run to continue)")
    experiment = load_config(config, list(overrides))
    result = run_training(experiment, out_dir=out_dir, resume=resume, progress=not quiet)
    if as_json:
        print_json(result)
        return
    spikes = ", ".join(f"{s:.2f}" for s in result["hidden_spikes_per_neuron"])
    click.echo(
        f"{result['name']}: status {result['status']}, test accuracy "
        f"{result['test_accuracy']:.4f} (valid {result['valid_accuracy']:.4f}, train "
        f"{result['train_accuracy']:.4f}, best epoch {result['best_epoch']}), hidden spikes per "
        f"neuron [{spikes}], {result['wall_time_s']:.1f} s"
    )
    if result["status"] == "diverged":
        click.echo(f"diverged in epoch {result['diverged_epoch']}: {result['divergence_reason']}")


@main.group()
def config() -> None:
    """List, show and check experiment configs."""


@config.command("list")
def config_list() -> None:
    """Names of the built-in configs."""
    for name in builtin_config_names():
        click.echo(name)


@config.command("show")
@click.argument("config")
@set_option
@user_errors
def config_show(config: str, overrides: tuple[str, ...]) -> None:
    """Print the full, validated CONFIG (with defaults filled in) as YAML."""
    click.echo(load_config(config, list(overrides)).to_yaml(), nl=False)


from spikegrad.reproduce.commands import reproduce  # noqa: E402 - needs the helpers above
from spikegrad.studies.commands import study  # noqa: E402 - needs the helpers above

main.add_command(study)
main.add_command(reproduce)


from spikegrad.commands_data import data as data_commands  # noqa: E402

main.add_command(data_commands)

from spikegrad.bench import bench  # noqa: E402

main.add_command(bench)

if __name__ == "__main__":
    main()

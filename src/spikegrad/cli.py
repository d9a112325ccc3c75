"""The ``spikegrad`` command line: a thin shell over the library (no logic of its own).

Every error a user can cause ends with one line on stderr, ``spikegrad: error: ...``,
and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spikegrad.bench import bench
from spikegrad.cli_support import print_json, set_option, user_errors
from spikegrad.commands_data import data as data_commands
from spikegrad.config import ConfigError, builtin_config_names, config_reference, load_config
from spikegrad.interop.commands import export
from spikegrad.reproduce.commands import reproduce
from spikegrad.studies.commands import study


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikegrad")
def main() -> None:
    """spikegrad: train spiking networks with surrogate gradients and reproduce
    the robustness studies of Zenke & Vogels (2021)."""


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
    try:
        result = run_training(experiment, out_dir=out_dir, resume=resume, progress=not quiet)
    except KeyboardInterrupt:
        hint = ("nothing was kept (without --out)" if out_dir is None else
                "run the same command again to continue" if resume else
                "run the same command with --resume to continue")
        click.echo(f"spikegrad: interrupted; {hint}", err=True)
        sys.exit(130)
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


@config.command("reference")
def config_reference_command() -> None:
    """Print every config field with its default and meaning (Markdown; docs/config.md)."""
    click.echo(config_reference(), nl=False)


main.add_command(data_commands)
main.add_command(study)
main.add_command(reproduce)
main.add_command(bench)
main.add_command(export)


if __name__ == "__main__":
    main()

"""``spikegrad train``: train the network of a config, optionally into a run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spikegrad.cli.support import fail, print_json, set_option, user_errors


@click.command()
@click.argument("config")
@set_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for config.yaml, metrics.jsonl, result.json and checkpoint.pt.")
@click.option("--resume", is_flag=True,
              help="Continue the run whose checkpoint is in --out (a new run if it has none).")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def train(config: str, overrides: tuple[str, ...], out_dir: Path | None, resume: bool,
          as_json: bool, quiet: bool) -> None:
    """Train the network of CONFIG (a YAML file or a built-in name such as 'randman')."""
    from spikegrad.config import load_config
    from spikegrad.run_files import RunFolder
    from spikegrad.training import train as run_training

    if resume and out_dir is None:
        fail("--resume needs --out (the folder of the run to continue)")
    experiment = load_config(config, list(overrides))
    if resume and not RunFolder(out_dir).holds_run():  # e.g. a mistyped folder
        click.echo(f"spikegrad: {out_dir}: no checkpoint to continue, a new run starts",
                   err=True)
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

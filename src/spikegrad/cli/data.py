"""``spikegrad data ...``: list, download, synthesise and look at data sets (thin shell)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spikegrad.cli.support import set_option, user_errors
from spikegrad.data import DOWNLOADS, data_set_summaries, download


@click.group()
def data() -> None:
    """List, download, synthesise and show data sets."""


@data.command("list")
def data_list() -> None:
    """Names of the data sets (``data.name`` in a config) and what they are."""
    for name, summary in data_set_summaries().items():
        click.echo(f"{name:22s} {summary}")


@data.command("download")
@click.argument("name", type=click.Choice(list(DOWNLOADS)))
@click.option("--path", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the files (default: the spikegrad cache).")
@user_errors
def data_download(name: str, path: Path | None) -> None:
    """Download the official files of NAME and verify their checksums (needs internet)."""
    folder = download(name, path)
    click.echo(f"{name}: files in {folder}")


@data.command("make-spoken-digits")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: the cache, where the spoken-digits configs look).")
@click.option("--small", is_flag=True, help="A tiny set (8 speakers, 80 utterances) for tests.")
@click.option("--german", is_flag=True, help="Also German digits (labels 10-19, as in SHD).")
@click.option("--speakers", type=click.IntRange(2), help="Number of speakers per language.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def make_spoken_digits(out_dir: Path | None, small: bool, german: bool, speakers: int | None,
                       seed: int, workers: int, quiet: bool) -> None:
    """Synthesise spoken digits with espeak-ng: audio plus an SHD-format spike file."""
    from spikegrad.data.spoken_digits import SynthesisOptions, default_folder
    from spikegrad.data.spoken_digits import make_spoken_digits as make

    overrides = {"german": german, "seed": seed, "workers": workers}
    if speakers is not None:
        overrides["n_speakers"] = speakers
    options = SynthesisOptions.small(**overrides) if small else SynthesisOptions(**overrides)
    try:
        folder = make(out_dir or default_folder(), options, progress=not quiet)
    except KeyboardInterrupt:
        click.echo("spikegrad: interrupted; the folder's files are as they were", err=True)
        sys.exit(130)
    click.echo(f"spoken digits in {folder}")


@data.command("show")
@click.argument("config")
@set_option
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="train",
              show_default=True)
@click.option("--index", type=int, default=0, show_default=True, help="Sample number.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Picture file (default: <config name>-<split>-<index>.png).")
@user_errors
def show(config: str, overrides: tuple[str, ...], split: str, index: int,
         out_file: Path | None) -> None:
    """Save a picture of one sample of the data of CONFIG (a built-in name or YAML file)."""
    from spikegrad.config import load_config
    from spikegrad.data import build_data
    from spikegrad.data.show import save_sample_picture

    experiment = load_config(config, list(overrides))
    splits = build_data(experiment.data, experiment.time.n_steps, experiment.time.dt_ms)
    out_file = out_file or Path(f"{experiment.name}-{split}-{index}.png")
    save_sample_picture(splits, out_file, index, split, experiment.time.dt_ms)
    click.echo(f"saved {out_file}")

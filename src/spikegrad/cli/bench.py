"""``spikegrad bench``: milliseconds per training step against the peers, or trials per hour
of a study (the measurements are in :mod:`spikegrad.bench`)."""

from __future__ import annotations

import json

import click

CASES = ("shd", "randman", "long")
LIBRARIES = ("fast", "reference", "snntorch", "norse")
"""The names of :mod:`spikegrad.bench`'s cases and libraries (a test holds them equal), here so
that listing the commands does not import torch, which the benchmarks need."""


@click.command("bench")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option("--case", "cases", multiple=True, type=click.Choice([*CASES, "study", "trial"]),
              help="Case to run (repeatable; default: shd, randman, long); `study` (alone): "
                   "trials per hour of a study; `trial` (alone): where one study trial's "
                   "time goes.")
@click.option("--library", "libraries", multiple=True, type=click.Choice(LIBRARIES),
              help="Library to run (repeatable; default: all).")
@click.option("--repeats", default=7, show_default=True, help="Timed steps per library.")
@click.option("--long-repeats", default=3, show_default=True,
              help="Timed steps per library in the long case.")
@click.option("--warmup", default=1, show_default=True, help="Untimed steps first.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
@click.option("--background-load", is_flag=True,
              help="Run every case idle, then again while a single-threaded busy process "
                   "occupies one core; report both.")
@click.option("--study-epochs", default=10, show_default=True,
              help="Epochs per trial in the study and trial cases.")
@click.option("--baseline", "baselines", multiple=True, metavar="PYTHON",
              help="The python of another spikegrad install (e.g. a previous release in its "
                   "own venv) to run the study case with too (repeatable).")
@click.option("--workers", type=int, default=None,
              help="Worker processes in the study case (default: one per core).")
def bench(as_json: bool, cases: tuple[str, ...], libraries: tuple[str, ...], repeats: int,
          long_repeats: int, warmup: int, device: str, background_load: bool,
          study_epochs: int, baselines: tuple[str, ...], workers: int | None) -> None:
    """Milliseconds per training step and peak memory: fast engine, reference, peers.

    ``--case study`` instead trains a fixed 24-trial Randman grid through the study runner
    and reports trials per hour (with ``--baseline PYTHON``: side by side with another
    install); ``--case trial`` trains the grid's first trial on one thread and reports where
    its time goes, and the start-up of a fresh process."""
    for alone in ("study", "trial"):
        if alone in cases and len(cases) > 1:
            raise click.UsageError(f"--case {alone} runs alone")
    if "trial" in cases:
        from spikegrad import trial_profile

        try:
            report = trial_profile.profile_trial(study_epochs)
        except trial_profile.TrialProfileError as error:
            raise click.ClickException(str(error)) from None
        click.echo(json.dumps(report) if as_json else trial_profile.format_profile(report))
        return
    from spikegrad import bench as benchmarks

    if "study" in cases:
        try:
            report = benchmarks.run_study_case(study_epochs, list(baselines), workers)
        except benchmarks.StudyCaseError as error:
            raise click.ClickException(str(error)) from None
        click.echo(json.dumps(report) if as_json else benchmarks.format_study(report))
        return
    run = benchmarks.run_with_background_load if background_load else benchmarks.run_bench
    report = run(list(cases) or list(CASES), list(libraries) or list(LIBRARIES),
                 repeats, warmup, device, long_repeats)
    click.echo(json.dumps(report) if as_json else benchmarks.format_table(report))

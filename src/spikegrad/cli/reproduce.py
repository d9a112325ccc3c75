"""``spikegrad reproduce``: run the paper's studies and write the report."""

from __future__ import annotations

from pathlib import Path

import click

from spikegrad.cli.support import fail, print_json, user_errors
from spikegrad.reproduce.studies import EXTENSION_NAMES, PROFILES, STUDY_NAMES


def _seed_list(text: str) -> list[int]:
    """'5,6,7' or '5-9' (or a mix: '0-2,7') as a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    except ValueError:
        fail(f"--seeds: expected numbers like 5,6,7 or 5-9, got {text!r}")
    return seeds


@click.command()
@click.argument("studies", nargs=-1, type=click.Choice(STUDY_NAMES + EXTENSION_NAMES))
@click.option("--profile", type=click.Choice(list(PROFILES)), default="default",
              show_default=True,
              help="default: the paper's studies with its networks and Randman size, 5 "
                   "seeds, in about half an hour on 2 cores (init: 3 seeds, a smaller Randman; "
                   "docs/init-study.md); paper: the paper's grids, 10 seeds (for a cluster); "
                   "smoke: seconds, for tests.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              default="spikegrad-results.sqlite", show_default=True,
              help="Results database; finished trials in it are not trained again.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default="spikegrad-report", show_default=True,
              help="Folder for report.html, report.md and the figures (PNG and SVG).")
@click.option("--address", default=None, help="Run the trials on the Ray cluster at ADDRESS.")
@click.option("--workers", type=int, default=None, help="Local worker processes (default: cores).")
@click.option("--seeds", default=None, metavar="LIST",
              help="Seeds instead of the profile's, e.g. 5,6,7,8,9 or 5-9 (a second run on "
                   "other seeds; its studies are named after them).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def reproduce(studies: tuple[str, ...], profile: str, db_path: Path, out_dir: Path,
              address: str | None, workers: int | None, seeds: str | None, as_json: bool,
              quiet: bool) -> None:
    """Reproduce the studies of Zenke & Vogels (2021): STUDIES is any of shape-slope,
    scale, readout, regularisation (default: all four), or init, the study beyond the paper
    (fluctuation-driven initialisation over σ_U and depth, Rossbroich, Gygax & Zenke 2022;
    `spikegrad reproduce init`). Writes OUT/report.html (self-contained) and OUT/report.md
    with the figures and a table of the claims, each with a verdict computed from the
    measured trials."""
    from spikegrad.reproduce import reproduce as run

    summary = run(list(studies) or None, profile=profile, db_path=db_path, out_dir=out_dir,
                  address=address, workers=workers, progress=not quiet,
                  seeds=_seed_list(seeds) if seeds else None)
    if as_json:
        print_json(summary)
        return
    click.echo(f"report: {summary['report']['html']} (and {summary['report']['markdown']})")
    for claim in summary["claims"]:
        click.echo(f"  [{claim['verdict']}] {claim['statement']}")
    click.echo(f"done in {summary['wall_time_s']:.0f} s")

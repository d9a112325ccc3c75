"""``spikegrad study ...``: run, inspect and export studies (a thin shell over the library)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from spikegrad.cli.support import fail, print_json, set_option, user_errors
from spikegrad.errors import ConfigError

db_option = click.option("--db", "db_path", required=True, metavar="FILE",
                         type=click.Path(dir_okay=False, path_type=Path),
                         help="The results database (SQLite).")
force_option = click.option(
    "--force", is_flag=True,
    help="Expand a grid of more than 100000 trials (refused otherwise: it takes minutes and GBs).")
study_option = click.option("--study", "study_name", metavar="NAME",
                            help="Only this study (default: all studies in the database).")


def _open_db(path: Path):
    """The database at ``path``, opened read-only (commands that only read it also work on
    a read-only disk, and never change it)."""
    from spikegrad.studies.db import ResultsDB

    return ResultsDB(path, create=False, read_only=True)


def _study_names(db, db_path: Path, study_name: str | None) -> list[str]:
    """The studies a command reads: ``study_name`` (which must be in the database), or all."""
    names = [s["name"] for s in db.studies()]
    if not names:
        fail(f"{db_path}: holds no studies yet")
    if study_name is not None and study_name not in names:
        fail(f"--study {study_name}: no such study in {db_path} (studies: {', '.join(names)})")
    return [study_name] if study_name is not None else names


def _axes_label(axes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in axes.items())


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@click.group()
def study() -> None:
    """Sweep grids of training runs into a results database; resume, query, export."""


@study.command("list")
def study_list() -> None:
    """Names of the built-in study specs."""
    from spikegrad.studies.spec import builtin_study_names

    for name in builtin_study_names():
        click.echo(name)


@study.command("show")
@click.argument("spec")
@set_option
@click.option("--trials", "list_trials", is_flag=True, help="List every trial and its hash.")
@force_option
@user_errors
def study_show(spec: str, overrides: tuple[str, ...], list_trials: bool, force: bool) -> None:
    """Print the validated SPEC (a YAML file or a built-in name) and its number of trials."""
    from spikegrad.studies.spec import dump_spec_yaml, load_study_spec

    loaded = load_study_spec(spec, list(overrides), force=force)
    trials = loaded.trials()
    click.echo(dump_spec_yaml(loaded), nl=False)
    click.echo(f"# {len(trials)} trials over {', '.join(loaded.axis_names()) or 'no axes'}")
    if list_trials:
        for trial in trials:
            click.echo(f"{trial.config_hash()}  {_axes_label(trial.axes)}")


@study.command("run")
@click.argument("spec")
@db_option
@set_option
@click.option("--workers", type=int, help="Local worker processes (default: one per core).")
@click.option("--address", metavar="ADDR",
              help="Run on the Ray cluster at ADDR (host:port, e.g. 127.0.0.1:6379; "
                   "'local' starts a throwaway one).")
@click.option("--retry-failed", is_flag=True, help="Run failed and crashed trials again.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@force_option
@user_errors
def study_run(spec: str, db_path: Path, overrides: tuple[str, ...], workers: int | None,
              address: str | None, retry_failed: bool, quiet: bool, as_json: bool,
              force: bool) -> None:
    """Run every unfinished trial of SPEC (a YAML file or a built-in name) into --db.

    Finished trials are skipped, so the same command resumes a stopped study.
    --set KEY=VALUE changes the base config of every trial.
    """
    from spikegrad.studies.runner import run_study
    from spikegrad.studies.spec import load_study_spec

    loaded = load_study_spec(spec, list(overrides), force=force)
    try:
        summary = run_study(loaded, db_path, workers=workers, address=address,
                            progress=not quiet, retry_failed=retry_failed)
    except KeyboardInterrupt:
        click.echo("spikegrad: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    if as_json:
        print_json(summary)
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    click.echo(f"{summary['study']}: {summary['trials']} trials ({summary['already_finished']} "
               f"already finished, {summary['ran']} run in {summary['wall_time_s']:.1f} s): "
               f"{counts}")
    failure = summary["first_failure"]
    if failure is not None:  # the reason, without a second command
        click.echo(f"{failure['status']}: {_axes_label(failure['axes'])}: {failure['error']} "
                   f"(every one: spikegrad study status --db {db_path})")
    best = summary["best"]
    if best is not None:
        metric = loaded.metric
        click.echo(f"best {metric} {best[metric]:.4f}: {_axes_label(best['axes'])} "
                   f"({best['config_hash']})")


@study.command("status")
@db_option
@study_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@user_errors
def study_status(db_path: Path, study_name: str | None, as_json: bool) -> None:
    """Counts per status, progress and failures of the studies in --db.

    Trials that a stopped driver had started are counted as "interrupted" (they run
    again when the study is resumed).
    """
    from spikegrad.studies.runner import study_status

    with _open_db(db_path) as db:
        reports = study_status(db, _study_names(db, db_path, study_name))
    if as_json:
        print_json(reports[study_name] if study_name else
                   {"studies": {name: {k: v for k, v in r.items() if k != "studies"}
                                for name, r in reports.items()}})
        return
    for name, report in reports.items():
        counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
        click.echo(f"{name}: {report['total']} trials, {report['finished']} finished "
                   f"({100 * report['progress']:.1f}%): {counts}")
        for problem in report["failures"]:
            click.echo(f"  {problem['status']:<8} {problem['config_hash']}  "
                       f"{_axes_label(problem['axes'])}: {problem['error']}")


@study.command("export")
@db_option
@study_option
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (default for csv: standard output).")
@click.option("--epochs", is_flag=True, help="One row per trial and epoch instead of per trial.")
@user_errors
def study_export(db_path: Path, study_name: str | None, fmt: str, out_path: Path | None,
                 epochs: bool) -> None:
    """Export the trials of --db (axes, status, metrics, timings, config) as a table."""
    if fmt == "parquet" and out_path is None:
        fail("--format parquet: needs --out FILE")
    with _open_db(db_path) as db:
        _study_names(db, db_path, study_name)
        if out_path is None:
            db.to_dataframe(study=study_name, epochs=epochs).to_csv(sys.stdout, index=False)
            return
        rows, columns = db.write_table(out_path, fmt, study=study_name, epochs=epochs)
    click.echo(f"{out_path}: {rows} rows, {columns} columns", err=True)


@study.command("best")
@db_option
@study_option
@click.option("--by", "group_by", multiple=True, metavar="FIELD",
              help="Best per value of FIELD (a config path such as surrogate.name); repeatable.")
@click.option("--metric", help="Metric to rank by (default: the study's, e.g. test_accuracy).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@user_errors
def study_best(db_path: Path, study_name: str | None, group_by: tuple[str, ...],
               metric: str | None, as_json: bool) -> None:
    """The best trial (by --metric), overall or per value of each --by FIELD."""
    from spikegrad.studies.spec import METRICS
    from spikegrad.studies.tables import best_by

    with _open_db(db_path) as db:
        _study_names(db, db_path, study_name)
        metric = metric or db.ranking_metric(study_name)
        trials = db.trials(study=study_name)
    if metric not in METRICS:
        fail(f"--metric {metric}: unknown metric (known: {', '.join(METRICS)})")
    try:
        rows = best_by(trials, list(group_by), metric)
    except ConfigError as error:  # a field that is not in the trials' configs
        fail(f"--by {error}")
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"no trial has a {metric} yet")
        return
    for row in rows:
        group = _axes_label(row["group"]) or "all trials"
        click.echo(f"{group}: best {metric} {row['best']:.4f} (mean {row['mean']:.4f} over "
                   f"{row['n']} trials) from {_axes_label(row['axes'])} ({row['config_hash']})")


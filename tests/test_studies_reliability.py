"""Study databases and specs that must be refused, or read without being changed: foreign
SQLite files, other schema versions, grids too large to expand, read-only reading."""

from __future__ import annotations

import resource
import sqlite3
import time

import pytest

from spikegrad.config import ConfigError
from spikegrad.studies import ResultsDB, load_study_spec, run_study
from spikegrad.studies import spec as spec_module
from spikegrad.studies.db import ResultsDBError
from test_studies import tiny_spec


def never_called(payload):
    raise AssertionError("no trial may run")


def files_beside(path):
    return sorted(p.name for p in path.parent.iterdir())


def foreign_database(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (name TEXT, born INTEGER)")
    conn.execute("INSERT INTO people VALUES ('Ada', 1815)")
    conn.commit()
    conn.close()
    return path


# --- files that are not ours ------------------------------------------------------------------


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = foreign_database(tmp_path / "theirs.sqlite")
    before, beside = path.read_bytes(), files_beside(path)
    with pytest.raises(ResultsDBError, match=r"theirs.sqlite: not a spikegrad results database "
                                             r"\(it holds other tables: people\)"):
        run_study(tiny_spec(), path, workers=1, progress=False, trial_function=never_called)
    assert path.read_bytes() == before and files_beside(path) == beside
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")] == ["people"]
    conn.close()


def test_another_schema_version_is_refused_untouched(tmp_path):
    path = tmp_path / "newer.sqlite"
    with ResultsDB(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    for open_it in (lambda: ResultsDB(path), lambda: ResultsDB(path, create=False,
                                                               read_only=True)):
        with pytest.raises(ResultsDBError, match="schema version 99; this spikegrad reads "
                                                 "version 1"):
            open_it()
    assert path.read_bytes() == before


def test_a_file_that_is_no_database_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("shopping: milk, eggs\n" * 100)
    with pytest.raises(ResultsDBError, match="notes.sqlite: not a results database"):
        run_study(tiny_spec(), path, workers=1, progress=False, trial_function=never_called)
    assert path.read_text() == "shopping: milk, eggs\n" * 100


def test_an_empty_file_becomes_a_results_database(tmp_path):
    path = tmp_path / "new.sqlite"
    path.write_bytes(b"")
    with ResultsDB(path) as db:
        assert db.studies() == []


# --- grids too large ----------------------------------------------------------------------------


def test_a_huge_grid_is_refused_before_it_is_expanded():
    spec = tiny_spec(axes={"training.learning_rate": {"log": [1e-4, 1e-1], "num": 10_000},
                           "surrogate.slope": {"log": [1, 100], "num": 100}},
                     seeds=list(range(10)))
    memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="the grid has 10,000,000 trials, more than 100,000; "
                                          r"pass force=True"):
        load_study_spec(spec)
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory < 200_000  # KiB


def test_force_expands_a_grid_above_the_limit(monkeypatch):
    monkeypatch.setattr(spec_module, "MAX_TRIALS", 3)
    spec = tiny_spec()  # 2 surrogates x 2 seeds
    with pytest.raises(ConfigError, match="the grid has 4 trials, more than 3"):
        load_study_spec(spec)
    assert len(load_study_spec(spec, force=True).trials()) == 4
    zipped = tiny_spec(axes={}, zip=[{"surrogate.name": ["esser", "sigmoid"],
                                      "surrogate.slope": [1, 2]}], seeds=[0, 1])
    assert load_study_spec(zipped, force=True).grid_size() == 4
    repeats = tiny_spec(seeds=None, repeats=2, select={
        "axis": "training.learning_rate", "values": [1e-3, 2e-3], "rung_epochs": 1})
    assert load_study_spec(repeats, force=True).grid_size() == 8


# --- reading never writes ---------------------------------------------------------------------


def finished_database(path):
    spec = load_study_spec(tiny_spec())
    with ResultsDB(path) as db:
        db.register_study(spec.name, spec.to_dict(), spec.trials())
        for i, trial in enumerate(spec.trials()):
            db.record_result(trial.config_hash(), {
                "status": "completed", "result": {"test_accuracy": 0.5 + i / 10},
                "history": [{"epoch": 1, "valid_accuracy": 0.5}]})
    return path


def test_reading_commands_open_the_database_read_only(tmp_path):
    from click.testing import CliRunner

    from spikegrad.cli import main

    path = finished_database(tmp_path / "done.sqlite")
    before = path.read_bytes()
    with ResultsDB(path, create=False, read_only=True) as db:
        assert len(db.trials()) == 4
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.conn.execute("DELETE FROM trials")
    runner = CliRunner()
    for args in (["status"], ["best"], ["export"], ["status", "--study", "tiny-study"]):
        done = runner.invoke(main, ["study", *args, "--db", str(path)])
        assert done.exit_code == 0, done.output
    assert path.read_bytes() == before


def test_status_of_a_database_without_studies_says_so(tmp_path):
    from click.testing import CliRunner

    from spikegrad.cli import main

    path = tmp_path / "fresh.sqlite"
    with ResultsDB(path):
        pass
    for command in ("status", "best", "export"):
        done = CliRunner().invoke(main, ["study", command, "--db", str(path)])
        assert done.exit_code == 2
        assert done.output.strip() == f"spikegrad: error: {path}: holds no studies yet"


def test_status_counts_the_trials_of_a_stopped_driver_as_interrupted(tmp_path):
    from spikegrad.io import ExclusiveLock
    from spikegrad.studies.runner import study_status

    spec = load_study_spec("randman-smoke")
    db_path = tmp_path / "results.sqlite"
    with ResultsDB(db_path) as db:
        db.register_study(spec.name, spec.to_dict(), spec.trials())
        db.mark_running(spec.trials()[0].config_hash())
        assert study_status(db, [spec.name])[spec.name]["counts"]["interrupted"] == 1
        with ExclusiveLock(tmp_path / "results.sqlite.lock", "a driver holds it"):
            counts = study_status(db, [spec.name])[spec.name]["counts"]
        assert counts["running"] == 1 and "interrupted" not in counts

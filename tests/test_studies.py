"""Studies: spec validation, grid expansion, the local runner, the database and the CLI."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from spikegrad.cli import main
from spikegrad.config import ConfigError, load_config
from spikegrad.studies import ResultsDB, load_study_spec, run_study
from spikegrad.studies.worker import run_trial
from spikegrad.training import train

SPIKEGRAD = str(Path(sys.executable).with_name("spikegrad"))

# a tiny Randman task: a trial takes about a second
TINY_BASE = {
    "name": "tiny",
    "seed": 0,
    "time": {"dt_ms": 1.0, "n_steps": 20},
    "data": {"name": "randman", "n_classes": 3, "n_units": 10, "samples_per_class": 30,
             "seed": 7},
    "model": {"hidden": [{"size": 20}],
              "init": {kind: {"scheme": "gaussian", "scale": 3.0}
                       for kind in ("feedforward", "recurrent", "readout")}},
    "training": {"batch_size": 16, "epochs": 2},
}


def tiny_spec(**changes) -> dict:
    spec = {
        "name": "tiny-study",
        "base": json.loads(json.dumps(TINY_BASE)),
        "axes": {"surrogate.name": ["superspike", "esser"]},
        "seeds": [0, 1],
    }
    spec.update(changes)
    return spec


def spec_error(spec: dict, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_study_spec(spec, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------
# Spec validation: every error is one line naming the field


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"axis": {}}, "axis: unknown key"),
        ({"base": None}, "base:"),
        ({"name": ""}, "name:"),
        ({"metric": "accuracy"}, "metric: unknown metric 'accuracy'"),
        ({"seeds": [0], "repeats": 2}, "seeds and repeats"),
        ({"seeds": []}, "seeds: the list is empty"),
        ({"repeats": 0}, "repeats:"),
        ({"cpus_per_trial": 0}, "cpus_per_trial:"),
        ({"axes": {"surrogate.slope": {"log": [0, 10], "num": 3}}},
         "axes.surrogate.slope: log range needs positive ends"),
        ({"axes": {"surrogate.slope": {"log": [1, 10]}}}, "axes.surrogate.slope.num:"),
        ({"axes": {"surrogate.slope": {"log": [1, 10], "linear": [1, 2], "num": 2}}},
         "exactly one of log"),
        ({"axes": {"surrogate.slope": {"logg": [1, 10], "num": 2}}},
         "axes.surrogate.slope.logg: unknown key"),
        ({"axes": {"surrogate.slope": []}}, "axis 'surrogate.slope' has no values"),
        ({"zip": [{"surrogate.slope": [1, 2], "surrogate.scale": [1]}]},
         "zip: group 0: zipped axes need equal lengths"),
        ({"axes": {"seed": [1, 2]}}, "'seed' is also an axis"),
        ({"axes": {"surrogate.slope": [1]}, "zip": [{"surrogate.slope": [2]}]},
         "'surrogate.slope' is swept more than once"),
        ({"early_stopping": {"rule": "asha"}}, "early_stopping.rule:"),
        ({"select": {"axis": "training.learning_rate", "values": [], "rung_epochs": 1}},
         "select: no values to choose from for 'training.learning_rate'"),
        ({"seeds": None, "select": {"axis": "training.learning_rate", "values": [0.1, 0.2],
                                    "rung_epochs": 1}},
         "select: rung_seeds is 2, but the spec has 1 seed"),
    ],
)
def test_spec_errors_name_the_field(change, expected):
    assert expected in spec_error(tiny_spec(**change))


def test_trial_config_errors_name_the_field_and_the_trial():
    message = spec_error(tiny_spec(axes={"surrogate.slop": [1, 2]}))
    assert "surrogate.slop: unknown key" in message and "trial surrogate.slop=1" in message
    message = spec_error(tiny_spec(axes={"surrogate.name": ["superspike", "nope"]}))
    assert "surrogate.name: unknown surrogate 'nope'" in message
    assert "surrogate.name=nope" in message
    message = spec_error(tiny_spec(axes={"surrogate.slope": [1.0, -2.0]}))
    assert "surrogate.slope:" in message and "-2.0" in message
    assert "training.epochs:" in spec_error(tiny_spec(), ["training.epochs=0"])
    assert "model.hidden.3: no list entry" in spec_error(tiny_spec(axes={
        "model.hidden.3.size": [1]}))


def test_spec_sources(tmp_path):
    assert "no such study spec file" in spec_error_source(tmp_path / "missing.yaml")
    assert "built-in study" in spec_error_source("no-such-study")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert "invalid YAML" in spec_error_source(bad)
    bad.write_text("- a list\n")
    assert "top level must be a mapping" in spec_error_source(bad)
    # a base given as a path is found next to the spec file
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(TINY_BASE))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**tiny_spec(), "base": "base.yaml"}))
    assert len(load_study_spec(spec).trials()) == 4
    assert "no such config file" in spec_error_source_dict({**tiny_spec(), "base": "nope.yaml"})


def spec_error_source(source) -> str:
    with pytest.raises(ConfigError) as info:
        load_study_spec(source)
    return str(info.value)


def spec_error_source_dict(spec) -> str:
    return spec_error(spec)


def test_cli_reports_a_bad_spec_in_one_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(metric="speed")))
    result = CliRunner().invoke(main, ["study", "run", str(spec), "--db", str(tmp_path / "db")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("spikegrad: error: ")
    assert "metric: unknown metric 'speed'" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------
# Grid expansion


def test_product_order_seeds_and_axis_values():
    spec = load_study_spec(tiny_spec(
        axes={"surrogate.name": ["superspike", "sigmoid", "esser"],
              "surrogate.slope": [1, 10]},
        seeds=[3, 4],
    ))
    trials = spec.trials()
    assert len(trials) == 3 * 2 * 2
    assert trials[0].axes == {"surrogate.name": "superspike", "surrogate.slope": 1.0, "seed": 3}
    assert trials[1].axes == {"surrogate.name": "superspike", "surrogate.slope": 1.0, "seed": 4}
    assert trials[2].axes["surrogate.slope"] == 10.0
    assert trials[-1].axes == {"surrogate.name": "esser", "surrogate.slope": 10.0, "seed": 4}
    for trial in trials:
        assert trial.surrogate.name == trial.axes["surrogate.name"]
        assert trial.seed == trial.axes["seed"]
        assert trial.study == "tiny-study"
        # a trial hashes like the plain config it describes
        assert trial.config_hash() == load_config(trial.to_dict()).config_hash()
    assert len({t.config_hash() for t in trials}) == len(trials)
    assert spec.axis_names() == ["surrogate.name", "surrogate.slope", "seed"]


def test_log_and_linear_ranges():
    spec = load_study_spec(tiny_spec(
        axes={"surrogate.slope": {"log": [0.1, 1000], "num": 5},
              "training.learning_rate": {"linear": [0.001, 0.003], "num": 3},
              "model.hidden.0.size": {"linear": [10, 30], "num": 3, "integer": True}},
        seeds=None,
    ))
    trials = spec.trials()
    assert len(trials) == 5 * 3 * 3
    slopes = sorted({t.surrogate.slope for t in trials})
    assert slopes == [0.1, 1.0, 10.0, 100.0, 1000.0]
    assert sorted({t.training.learning_rate for t in trials}) == [0.001, 0.002, 0.003]
    assert sorted({t.model.hidden[0].size for t in trials}) == [10, 20, 30]
    eight = load_study_spec(tiny_spec(axes={"surrogate.slope": {"log": [0.1, 1000], "num": 8}}))
    values = sorted({t.surrogate.slope for t in eight.trials()})
    assert len(values) == 8 and values[0] == 0.1 and values[-1] == 1000.0
    ratios = [b / a for a, b in zip(values, values[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-9


def test_zip_groups_vary_together():
    spec = load_study_spec(tiny_spec(
        axes={"surrogate.name": ["superspike", "esser"]},
        zip=[{"model.hidden.0.size": [10, 20, 30], "training.batch_size": [8, 16, 32]}],
        seeds=None,
    ))
    trials = spec.trials()
    assert len(trials) == 2 * 3
    pairs = {(t.model.hidden[0].size, t.training.batch_size) for t in trials}
    assert pairs == {(10, 8), (20, 16), (30, 32)}
    assert trials[0].axes == {"surrogate.name": "superspike", "model.hidden.0.size": 10,
                              "training.batch_size": 8}


def test_repeats_duplicates_overrides_and_set():
    spec = load_study_spec(tiny_spec(seeds=None, repeats=3, set={"seed": 10}))
    assert [t.seed for t in spec.trials()] == [10, 11, 12] * 2
    # configs that hash alike collapse: slope 10 and 10.0 are the same trial
    spec = load_study_spec(tiny_spec(axes={"surrogate.slope": [10, 10.0, 5]}, seeds=None))
    assert len(spec.trials()) == 2
    # overrides change every trial's base, after the spec's own "set"
    spec = load_study_spec(tiny_spec(set={"training.epochs": 3}), ["training.epochs=1",
                                                                  "model.hidden.0.size=7"])
    assert {(t.training.epochs, t.model.hidden[0].size) for t in spec.trials()} == {(1, 7)}
    spec = load_study_spec(tiny_spec(set={"training": {"epochs": 4}}), {"data.n_units": 12})
    assert {(t.training.epochs, t.data.n_units) for t in spec.trials()} == {(4, 12)}


def test_shape_slope_study_and_builtin_studies():
    """The shape x slope study is defined once, by ``spikegrad reproduce shape-slope``."""
    from spikegrad.reproduce.studies import PROFILES, study_specs

    profile = PROFILES["default"]
    raw = study_specs("default", ["shape-slope"])["shape-slope"]["shape-slope"]
    trials = load_study_spec(raw).trials()
    assert len(trials) == 3 * len(profile.slopes) * len(profile.learning_rates) * 5
    assert {t.surrogate.name for t in trials} == {"superspike", "sigmoid", "esser"}
    assert len({t.surrogate.slope for t in trials}) == len(profile.slopes)
    assert {t.seed for t in trials} == set(profile.seeds)
    result = CliRunner().invoke(main, ["study", "list"])
    assert "randman-smoke" in result.output.split()
    assert "randman-surrogates" not in result.output.split()


# ---------------------------------------------------------------------------------------
# Running studies


def comparable(trial: dict) -> dict:
    """What must be identical between two runs of the same trial (no timings)."""
    keys = ("config_hash", "study", "position", "axes", "status", "train_accuracy",
            "valid_accuracy", "test_accuracy", "train_loss", "valid_loss", "test_loss",
            "hidden_spikes_per_neuron", "epochs_completed", "best_epoch", "diverged_epoch",
            "divergence_reason", "config")
    return {k: trial[k] for k in keys}


def comparable_epochs(db: ResultsDB, config_hash: str) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "epoch_time_s"} for e in db.epochs(config_hash)]


def database_snapshot(path) -> dict:
    with ResultsDB(path, create=False) as db:
        trials = db.trials()
        return {t["config_hash"]: {**comparable(t),
                                   "epochs": comparable_epochs(db, t["config_hash"])}
                for t in trials}


def test_small_study_end_to_end(tmp_path):
    db_path = tmp_path / "study.sqlite"
    spec = load_study_spec(tiny_spec())
    summary = run_study(spec, db_path, workers=2, progress=False)
    assert summary["trials"] == 4 and summary["ran"] == 4 and summary["already_finished"] == 0
    assert summary["counts"] == {"completed": 4}
    assert summary["best"]["test_accuracy"] == max(
        t["test_accuracy"] for t in ResultsDB(db_path).trials())
    with ResultsDB(db_path) as db:
        trials = db.trials(study="tiny-study")
        assert [t["axes"] for t in trials] == [t.axes for t in spec.trials()]
        for trial in trials:
            assert trial["status"] == "completed" and trial["attempts"] == 1
            assert trial["versions"]["torch"] and trial["host"]
            assert trial["wall_time_s"] > 0 and trial["trial_time_s"] >= trial["wall_time_s"]
            epochs = db.epochs(trial["config_hash"])
            assert [e["epoch"] for e in epochs] == [1, 2]
        # the study's numbers are those of a plain training run of the same config
        first = trials[0]
        direct = train(load_config(first["config"]))
        for key in ("test_accuracy", "valid_accuracy", "train_loss", "hidden_spikes_per_neuron"):
            assert first[key] == direct[key]
        assert db.trials(status="diverged") == []
        status = db.status("tiny-study")
        assert status["finished"] == 4 and status["progress"] == 1.0
    # running the same spec again skips every finished trial
    again = run_study(tiny_spec(), db_path, workers=2, progress=False)
    assert again["ran"] == 0 and again["already_finished"] == 4
    # a wider spec runs only the new trials
    wider = run_study(tiny_spec(seeds=[0, 1, 2]), db_path, workers=2, progress=False)
    assert wider["ran"] == 2 and wider["already_finished"] == 4 and wider["trials"] == 6

    # CLI: status, best, export
    runner = CliRunner()
    result = runner.invoke(main, ["study", "status", "--db", str(db_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["studies"]["tiny-study"]
    assert report["counts"] == {"completed": 6} and report["total"] == 6
    result = runner.invoke(main, ["study", "best", "--db", str(db_path),
                                  "--by", "surrogate.name", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert sorted(r["group"]["surrogate.name"] for r in rows) == ["esser", "superspike"]
    assert all(r["n"] == 3 and r["best"] >= r["mean"] for r in rows)
    result = runner.invoke(main, ["study", "best", "--db", str(db_path), "--by", "nope.field"])
    assert result.exit_code == 2 and "--by nope.field: no such config field" in result.output
    parquet = tmp_path / "trials.parquet"
    result = runner.invoke(main, ["study", "export", "--db", str(db_path), "--format",
                                  "parquet", "--out", str(parquet)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_parquet(parquet)
    assert len(frame) == 6
    assert {"surrogate.name", "seed", "status", "test_accuracy", "config_hash",
            "hidden_spikes_per_neuron.0", "config"} <= set(frame.columns)
    csv = tmp_path / "epochs.csv"
    result = runner.invoke(main, ["study", "export", "--db", str(db_path), "--epochs",
                                  "--out", str(csv)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(csv)) == 6 * 2
    result = runner.invoke(main, ["study", "status", "--db", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 2 and "no such results database" in result.output


def test_diverging_failing_and_crashing_trials_are_recorded(tmp_path):
    # zip: a normal trial; a surrogate scale of 1e38 whose gradients overflow (NaN/inf
    # weights: "diverged"); an Adam step so large that torch cannot take it ("failed")
    spec = tiny_spec(
        axes={},
        zip=[{"surrogate.scale": [1.0, 1e38, 1.0],
              "training.optimizer": ["adam", "sgd", "adam"],
              "training.learning_rate": [0.002, 1e10, 1e39]}],
        seeds=[0, 1],
    )
    db_path = tmp_path / "study.sqlite"
    summary = run_study(spec, db_path, workers=2, progress=False,
                        trial_function=crash_on_seed_one_of_normal_trials)
    assert summary["counts"] == {"completed": 1, "diverged": 2, "failed": 2, "crashed": 1}
    assert summary["first_failure"]["status"] in ("failed", "crashed")  # not "diverged"
    with ResultsDB(db_path) as db:
        by_status = {}
        for trial in db.trials():
            by_status.setdefault(trial["status"], []).append(trial)
        for trial in by_status["diverged"]:
            assert trial["axes"]["surrogate.scale"] == 1e38
            assert trial["diverged_epoch"] == 1 and "diverged in epoch 1" in trial["error"]
            assert trial["test_accuracy"] is None
        for trial in by_status["failed"]:
            assert trial["axes"]["training.learning_rate"] == 1e39
            assert trial["error"].startswith("ConfigError: training.learning_rate: the adam "
                                             "step failed in epoch 1")
        (crashed,) = by_status["crashed"]
        assert crashed["axes"]["seed"] == 1 and "worker process died (exit code 3)" in \
            crashed["error"]
        assert {p["status"] for p in db.status()["failures"]} == {"diverged", "failed",
                                                                  "crashed"}
    result = CliRunner().invoke(main, ["study", "status", "--db", str(db_path)])
    assert "crashed" in result.output and "diverged in epoch 1" in result.output
    # failed and crashed trials are finished: a re-run skips them, --retry-failed does not
    assert run_study(spec, db_path, workers=1, progress=False)["ran"] == 0
    again = run_study(spec, db_path, workers=1, progress=False, retry_failed=True)
    assert again["ran"] == 3
    assert again["counts"] == {"completed": 2, "diverged": 2, "failed": 2}


def crash_on_seed_one_of_normal_trials(payload):
    """A trial function whose worker process dies for one trial (runs in the worker)."""
    config = payload["config"]
    if config["seed"] == 1 and config["training"]["learning_rate"] == 0.002:
        os._exit(3)
    return run_trial(payload)


def test_early_stopping_median_rule(tmp_path):
    from spikegrad.studies.worker import cached_data, median_stopping
    from spikegrad.training import Trainer

    config = load_config(TINY_BASE, {"training.epochs": 4})
    # no finished trial can be beaten: stopped after the grace epochs, best weights kept
    trainer = Trainer(config, data=cached_data(config), progress=False)
    result = trainer.fit(epoch_callback=median_stopping([1.1] * 4, 2, 4))
    assert result["status"] == "stopped" and result["epochs_completed"] == 2
    assert math.isfinite(result["test_accuracy"])
    # no medians (off, or too few finished trials): the trial runs to the end
    trainer = Trainer(config, data=cached_data(config), progress=False)
    assert trainer.fit(epoch_callback=median_stopping(None, 1, 4))["status"] == "completed"
    # in a study: with one worker, later trials are compared with the finished ones
    spec = tiny_spec(early_stopping={"grace_epochs": 1, "min_trials": 1},
                     set={"training.epochs": 3})
    summary = run_study(spec, tmp_path / "db.sqlite", workers=1, progress=False)
    assert sum(summary["counts"].values()) == 4
    assert set(summary["counts"]) <= {"completed", "stopped"}


def test_one_driver_per_database(tmp_path):
    from spikegrad.studies.runner import _DriverLock

    db_path = tmp_path / "study.sqlite"
    with _DriverLock(db_path), pytest.raises(ConfigError, match="another study driver"):
        run_study(tiny_spec(), db_path, workers=1, progress=False)


# ---------------------------------------------------------------------------------------
# Fault tolerance: SIGKILL the driver at random moments, resume, compare


def worker_processes(tag: str) -> list[int]:
    """Processes (workers included) whose environment carries ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if tag.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def completed_trials(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(
                "SELECT count(*) FROM trials WHERE status = 'completed'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_sigkilled_driver_resumes_to_the_uninterrupted_result(tmp_path):
    # trials of about half a second once a worker is warm, so that kills land mid-study
    spec = tiny_spec(axes={"surrogate.name": ["superspike", "esser"],
                           "surrogate.slope": [5.0, 20.0, 50.0]},
                     set={"training.epochs": 10, "data.samples_per_class": 100,
                          "time.n_steps": 40})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    def command(db):
        return [SPIKEGRAD, "study", "run", str(spec_path), "--db", str(db), "--workers", "2",
                "--quiet"]

    reference = tmp_path / "reference.sqlite"
    subprocess.run(command(reference), check=True, capture_output=True, timeout=300)
    with ResultsDB(reference, create=False) as db:
        trial_time = statistics.median(t["wall_time_s"] for t in db.trials())

    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    interrupted = tmp_path / "interrupted.sqlite"
    finished_counts = []
    for _ in range(3):
        tag = f"SPIKEGRAD_TEST_{uuid.uuid4().hex}"
        env = {**os.environ, tag: "1"}
        before = completed_trials(interrupted)
        driver = subprocess.Popen(command(interrupted), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        # a random moment after this driver has finished at least one trial, within about
        # two trials' time, so that every kill lands mid-study whatever the machine's speed
        # (while training, writing to the database or starting workers) ...
        deadline = time.monotonic() + 120
        while completed_trials(interrupted) <= before and time.monotonic() < deadline:
            if driver.poll() is not None:  # a very fast machine finished the whole study
                break
            time.sleep(0.05)
        # ... and before it has finished three (work is left for the resumed run)
        kill_at = time.monotonic() + rng.uniform(0.0, 2 * trial_time)
        while time.monotonic() < kill_at and completed_trials(interrupted) < before + 3:
            time.sleep(0.01)
        driver.send_signal(signal.SIGKILL)  # harmless if it has already ended
        driver.wait(timeout=30)
        # the workers of a killed driver end themselves
        deadline = time.monotonic() + 15
        while worker_processes(tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker_processes(tag) == [], f"orphaned workers (random seed {seed})"
        finished_counts.append(completed_trials(interrupted))
    # with no driver, the trials the killed one had started are reported as interrupted
    report = CliRunner().invoke(main, ["study", "status", "--db", str(interrupted), "--json"])
    counts = json.loads(report.output)["studies"]["tiny-study"]["counts"]
    assert "running" not in counts and counts["completed"] == finished_counts[-1], counts
    result = subprocess.run(command(interrupted), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert finished_counts == sorted(finished_counts), finished_counts
    assert 0 < finished_counts[0] and finished_counts[-1] < 12, finished_counts
    print(f"completed trials after each kill: {finished_counts} (random seed {seed})")

    expected, actual = database_snapshot(reference), database_snapshot(interrupted)
    assert sorted(actual) == sorted(expected), f"random seed {seed}"
    for config_hash, trial in expected.items():
        assert actual[config_hash] == trial, f"trial {config_hash} differs (random seed {seed})"
    with sqlite3.connect(interrupted) as conn:
        assert conn.execute("SELECT count(*) FROM trials").fetchone()[0] == 12
        assert conn.execute("SELECT count(*) FROM study_trials").fetchone()[0] == 12
        assert conn.execute("SELECT count(*) FROM epochs").fetchone()[0] == 12 * 10


@pytest.mark.slow
def test_ray_path_on_a_throwaway_local_ray(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    # a local cluster on this machine only: no auth token (Ray would write ~/.ray/auth_token)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    db_path = tmp_path / "ray.sqlite"
    summary = run_study(tiny_spec(), db_path, address="local", progress=False)
    assert summary["counts"] == {"completed": 4} and summary["address"] == "local"
    local = tmp_path / "local.sqlite"
    run_study(tiny_spec(), local, workers=2, progress=False)
    on_ray, here = database_snapshot(db_path), database_snapshot(local)
    assert on_ray == here


def test_spec_round_trip_and_show(tmp_path):
    spec = load_study_spec(tiny_spec(axes={"surrogate.slope": {"log": [1, 100], "num": 3}},
                                     zip=[{"training.batch_size": [8, 16]}]))
    again = load_study_spec(spec.to_dict())
    assert [t.config_hash() for t in again.trials()] == [t.config_hash() for t in spec.trials()]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    result = CliRunner().invoke(main, ["study", "show", str(path), "--trials",
                                       "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    assert "# 12 trials over surrogate.slope, training.batch_size, seed" in result.output
    lines = [line for line in result.output.splitlines() if "surrogate.slope=" in line]
    assert len(lines) == 12
    assert lines[0].endswith("surrogate.slope=1, training.batch_size=8, seed=0")


def scripted_accuracy(payload):
    """A trial function (runs in the worker) whose validation accuracy favours learning rate
    0.01 while its test accuracy favours 0.05: a selection must follow validation. At
    learning rates 0.002 and 0.003 every trial stays at chance; 0.003 has the lower loss."""
    config = payload["config"]
    rate = config["training"]["learning_rate"]
    epochs = payload.get("stop_after") or config["training"]["epochs"]
    valid = {0.01: 0.8, 0.05: 0.6, 0.002: 0.1, 0.003: 0.1}[rate] + 0.01 * config["seed"] * (
        rate > 0.005)
    test = {0.01: 0.5, 0.05: 0.9, 0.002: 0.9, 0.003: 0.1}[rate]
    loss = {0.002: 2.3, 0.003: 2.2}.get(rate, 1.0)
    history = [{"epoch": e, "valid_accuracy": valid * e / epochs, "valid_loss": loss,
                "train_loss": 1.0} for e in range(1, epochs + 1)]
    result = {"status": "paused" if payload.get("stop_after") else "completed",
              "valid_accuracy": valid, "test_accuracy": test, "epochs_completed": epochs}
    return {"status": result["status"], "result": result, "history": history, "error": None,
            "trial_time_s": 0.0}


def test_selection_chooses_on_validation_and_runs_the_chosen_value(tmp_path):
    spec = tiny_spec(seeds=[0, 1, 2], set={"training.epochs": 4},
                     select={"axis": "training.learning_rate", "values": [0.05, 0.01],
                             "rung_epochs": 2, "rung_seeds": 2})
    db_path = tmp_path / "db.sqlite"
    summary = run_study(spec, db_path, workers=1, progress=False,
                        trial_function=scripted_accuracy)
    # one choice per condition (surrogate), by validation: 0.01, although test favours 0.05
    assert sorted(summary["selections"].values()) == [0.01, 0.01]
    with ResultsDB(db_path) as db:
        trials = db.trials(study="tiny-study")
        chosen = [t for t in trials if t["axes"]["training.learning_rate"] == 0.01]
        rungs = [t for t in trials if t["axes"]["training.learning_rate"] == 0.05]
        assert len(chosen) == 6 and all(t["status"] == "completed" for t in chosen)
        assert len(rungs) == 4 and all(t["status"] == "paused" for t in rungs)
        assert {t["axes"]["seed"] for t in rungs} == {0, 1}  # rung seeds only
        scores = next(iter(db.selections("tiny-study").values()))["scores"]
        assert {v: s["valid_accuracy"] for v, s in scores.items()} == {
            "0.05": pytest.approx(0.605), "0.01": pytest.approx(0.805)}
    again = run_study(spec, db_path, workers=1, progress=False, trial_function=scripted_accuracy)
    assert again["ran"] == 0 and again["counts"] == summary["counts"]


def test_selection_breaks_a_tie_by_validation_loss(tmp_path):
    spec = tiny_spec(axes={}, seeds=[0, 1], set={"training.epochs": 2},
                     select={"axis": "training.learning_rate", "values": [0.002, 0.003],
                             "rung_epochs": 1, "rung_seeds": 2})
    summary = run_study(spec, tmp_path / "db.sqlite", workers=1, progress=False,
                        trial_function=scripted_accuracy)
    assert summary["selections"] == {"{}": 0.003}  # equal accuracy, lower loss


def test_selection_with_real_training_pauses_and_finishes(tmp_path):
    """The rung trials pause after rung_epochs; the chosen ones train to their end."""
    spec = tiny_spec(axes={}, seeds=[0, 1], set={"training.epochs": 3},
                     select={"axis": "training.learning_rate", "values": [0.001, 0.02],
                             "rung_epochs": 1, "rung_seeds": 1})
    db_path = tmp_path / "db.sqlite"
    summary = run_study(spec, db_path, workers=2, progress=False)
    with ResultsDB(db_path) as db:
        trials = db.trials(study="tiny-study")
    value = summary["selections"]["{}"]
    for trial in trials:
        if trial["axes"]["training.learning_rate"] == value:
            assert trial["status"] == "completed" and trial["epochs_completed"] == 3
        else:
            assert trial["status"] == "paused" and trial["epochs_completed"] == 1
    assert len(trials) == 3  # both values on seed 0, the chosen one on seed 1


def test_chosen_rung_trials_continue_from_their_checkpoints(tmp_path):
    """A chosen rung trial continues from its checkpoint: its first epochs are not trained
    again, and it ends with exactly the result of a run from scratch."""
    spec = tiny_spec(axes={}, seeds=[0], set={"training.epochs": 3},
                     select={"axis": "training.learning_rate", "values": [0.02],
                             "rung_epochs": 1, "rung_seeds": 1})
    db_path = tmp_path / "db.sqlite"
    run_study(spec, db_path, workers=1, progress=False)
    with ResultsDB(db_path) as db:
        (trial,) = db.trials(study="tiny-study")
        epochs = db.epochs(trial["config_hash"])
    assert trial["status"] == "completed" and trial["epochs_completed"] == 3
    assert not (tmp_path / "db.sqlite.checkpoints").exists()  # removed once all finished
    direct = train(load_config(TINY_BASE, {"training.epochs": 3, "training.learning_rate": 0.02}))
    assert trial["test_accuracy"] == direct["test_accuracy"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]


def test_worker_continues_a_paused_trial_from_its_checkpoint(tmp_path):
    config = load_config(TINY_BASE, {"training.epochs": 3}).to_dict()
    paused = run_trial({"config": config, "stop_after": 1, "checkpoint_dir": str(tmp_path)})
    assert paused["status"] == "paused" and len(paused["history"]) == 1
    finished = run_trial({"config": config, "checkpoint_dir": str(tmp_path)})
    assert finished["status"] == "completed" and len(finished["history"]) == 3
    # epoch 1 comes from the checkpoint, measured time included: it was not trained again
    assert finished["history"][0] == paused["history"][0]


def test_study_run_says_why_a_trial_failed(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(axes={}, seeds=[0],
                                             set={"training.learning_rate": 1e39})))
    result = CliRunner().invoke(main, ["study", "run", str(spec), "--db",
                                       str(tmp_path / "db"), "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "failed 1" in result.output
    assert "failed: seed=0: ConfigError: training.learning_rate: the adam step failed" in \
        result.output and f"spikegrad study status --db {tmp_path / 'db'}" in result.output

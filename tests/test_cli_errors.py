"""Every bad input to the command line: exit code 2, exactly one line on stderr that names
the problem (file, field or value), no traceback, and nothing already written changed.

Each case prepares a folder (files that exist before the command), runs the command in it
and compares the folder before and after.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from spikegrad.cli import main
from spikegrad.io import ExclusiveLock
from spikegrad.studies.db import ResultsDB
from test_data_images import small_mnist, write_mnist
from test_data_shd import write_raw_shd

TINY = ["--set", "training.epochs=1", "--set", "time.n_steps=20", "--set", "data.n_classes=3",
        "--set", "data.samples_per_class=30", "--set", "model.hidden.0.size=8",
        "--set", "training.batch_size=16", "--quiet"]
SHD = ["--set", "time.n_steps=20", "--set", "model.hidden.0.size=4", "--quiet"]


@dataclass
class Case:
    name: str
    args: list[str]
    message: str  # "{d}" stands for the case's folder
    prepare: Callable[[Path], None] = lambda d: None
    env: dict[str, str] = field(default_factory=dict)
    hold_lock: str | None = None  # a file whose lock another process holds


def file_at(relative: str, content: bytes = b"") -> Callable[[Path], None]:
    def prepare(d: Path) -> None:
        (d / relative).parent.mkdir(parents=True, exist_ok=True)
        (d / relative).write_bytes(content)

    return prepare


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def prepare(d: Path) -> None:
        for step in steps:
            step(d)

    return prepare


def finished_run(d: Path) -> None:
    for name, text in (("checkpoint.pt", b"weights"), ("result.json", b"{}\n"),
                       ("config.yaml", b"name: x\n")):
        file_at(f"run/{name}", text)(d)


def run_without_checkpoint(d: Path) -> None:
    """A finished run whose checkpoint was deleted: its metrics and result are still there."""
    for name, text in (("metrics.jsonl", b'{"epoch": 1}\n'), ("result.json", b"{}\n"),
                       ("config.yaml", b"name: x\n")):
        file_at(f"run/{name}", text)(d)


def checkpoint_with(**changes) -> Callable[[Path], None]:
    """A checkpoint of the TINY randman run (its config's hash) with ``changes`` (None: the
    key removed), as one written by another version might be."""

    def prepare(d: Path) -> None:
        import torch

        from spikegrad.config import load_config
        from spikegrad.training import Trainer

        overrides = [a for a in TINY if a not in ("--set", "--quiet")]
        trainer = Trainer(load_config("randman", overrides), progress=False)
        saved = {"config_hash": trainer.config.config_hash(),
                 "model": trainer.model.state_dict(),
                 "optimizer": trainer.optimizer.state_dict(),
                 "shuffle_generator": trainer.shuffle_generator.get_state(),
                 "state": {"epoch": 1}}
        for key, value in changes.items():
            if value is None:
                del saved[key]
            else:
                saved[key] = value
        (d / "run").mkdir()
        torch.save(saved, d / "run" / "checkpoint.pt")

    return prepare


def foreign_db(d: Path) -> None:
    conn = sqlite3.connect(d / "theirs.sqlite")
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.commit()
    conn.close()


def newer_db(d: Path) -> None:
    with ResultsDB(d / "newer.sqlite"):
        pass
    conn = sqlite3.connect(d / "newer.sqlite")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def results_db(d: Path) -> None:
    from spikegrad.studies import load_study_spec

    spec = load_study_spec("randman-smoke")
    with ResultsDB(d / "results.sqlite") as db:
        db.register_study(spec.name, spec.to_dict(), spec.trials())


def empty_results_db(d: Path) -> None:
    with ResultsDB(d / "empty.sqlite"):
        pass


def shd_files(samples: int) -> Callable[[Path], None]:
    def prepare(d: Path) -> None:
        (d / "shd").mkdir()
        times = [np.array([0.001, 0.002])] * samples
        units = [np.array([1, 2])] * samples
        write_raw_shd(d / "shd" / "shd_train.h5", times, units, np.zeros(samples, int))
        write_raw_shd(d / "shd" / "shd_test.h5", times, units, np.zeros(samples, int))

    return prepare


def mnist_with_small_test_images(d: Path) -> None:
    rng = np.random.default_rng(0)
    train_images, train_labels, _, test_labels = small_mnist(rng)
    write_mnist(d / "mnist", train_images, train_labels,
                rng.integers(0, 256, (10, 20, 20)).astype(np.uint8), test_labels)


def audio_with_nan(d: Path) -> None:
    tone = (0.3 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    for label in ("a", "b"):
        for i in range(3):
            (d / "audio" / label).mkdir(parents=True, exist_ok=True)
            soundfile.write(d / "audio" / label / f"{i}.wav", tone, 16000, subtype="FLOAT")
    bad = tone.copy()
    bad[7] = np.nan
    soundfile.write(d / "audio" / "b" / "nan.wav", bad, 16000, subtype="FLOAT")


HUGE_SPEC = (b"name: huge\nbase: randman\naxes:\n"
             b"  training.learning_rate: {log: [1.0e-4, 1.0e-1], num: 100000}\n"
             b"  surrogate.slope: {log: [1, 100], num: 100}\n")

CASES = [
    # configs: non-finite numbers, booleans, duplicate keys, binary files, folders
    Case("nan learning rate", ["train", "randman", "--set", "training.learning_rate=.nan"],
         "training.learning_rate: Input should be a finite number (got nan)"),
    Case("infinite slope", ["train", "randman", "--set", "surrogate.slope=.inf"],
         "surrogate.slope: Input should be a finite number (got inf)"),
    Case("nan time constant", ["train", "randman", "--set", "model.hidden.0.tau_mem_ms=nan"],
         "model.hidden.0.tau_mem_ms: Input should be a finite number (got 'nan')"),
    Case("learning rate beyond float32", ["train", "randman", *TINY, "--set",
                                          "training.learning_rate=1e39"],
         "training.learning_rate: the adam step failed in epoch 1 at learning rate 1e+39"),
    Case("seed true", ["train", "randman", "--set", "seed=true"],
         "seed: must be a number, not true (got True)"),
    Case("duplicate key", ["train", "{d}/run.yaml"],
         "{d}/run.yaml: invalid YAML: duplicate key 'training' (line 3, column 1)",
         file_at("run.yaml", b"training: {epochs: 1}\ndata: {name: randman}\n"
                             b"training: {epochs: 2}\n")),
    Case("binary config", ["config", "show", "{d}/photo.yaml"],
         "{d}/photo.yaml: not a text file (byte 0x89 at offset 0 is not UTF-8)",
         file_at("photo.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")),
    Case("folder as config", ["train", "{d}/runs"], "{d}/runs: is a folder, not a config file",
         file_at("runs/old.txt", b"keep")),
    Case("field of a config file", ["train", "{d}/run.yaml"],
         "{d}/run.yaml: training.epochs: Input should be greater than or equal to 1 (got 0)",
         file_at("run.yaml", b"name: x\ndata: {name: randman}\ntraining: {epochs: 0}\n")),
    # runs the machine cannot hold
    Case("hidden size 1e7", ["train", "randman", "--set", "model.hidden.0.size=10000000"],
         "hidden sizes [10000000]), more than the"),
    Case("1e9 steps", ["train", "randman", "--set", "time.n_steps=1000000000"],
         "this run needs about"),
    # the run folder
    Case("out under a file", ["train", "randman", *TINY, "--out", "{d}/file/run"],
         "{d}/file: is a file, where a folder is needed", file_at("file", b"x")),
    Case("busy out folder", ["train", "randman", *TINY, "--out", "{d}/run"],
         "{d}/run: another run is training into this folder; choose another --out",
         file_at("run/notes.txt", b"mine"), hold_lock="run/.lock"),
    Case("finished out folder", ["train", "randman", *TINY, "--out", "{d}/run"],
         "{d}/run: already holds a run; pass --resume or choose another --out", finished_run),
    Case("out folder with a run's metrics, no checkpoint", ["train", "randman", *TINY, "--out",
                                                             "{d}/run"],
         "{d}/run: already holds a run; pass --resume", run_without_checkpoint),
    Case("resume a run without checkpoint", ["train", "randman", *TINY, "--out", "{d}/run",
                                             "--resume"],
         "{d}/run: holds a run's metrics or result but no checkpoint.pt to continue from",
         run_without_checkpoint),
    Case("checkpoint without optimiser", ["train", "randman", *TINY, "--out", "{d}/run",
                                          "--resume"],
         "{d}/run/checkpoint.pt: cannot read checkpoint (KeyError: 'optimizer')",
         checkpoint_with(optimizer=None)),
    Case("checkpoint with a text epoch", ["train", "randman", *TINY, "--out", "{d}/run",
                                          "--resume"],
         "{d}/run/checkpoint.pt: cannot read checkpoint (TypeError: state.epoch is 'x')",
         checkpoint_with(state={"epoch": "x"})),
    Case("checkpoint of other weights", ["train", "randman", *TINY, "--out", "{d}/run",
                                         "--resume"],
         "{d}/run/checkpoint.pt: cannot read checkpoint (RuntimeError: Error(s) in loading",
         checkpoint_with(model={})),
    Case("empty dict as checkpoint", ["train", "randman", *TINY, "--out", "{d}/run",
                                      "--resume"],
         "{d}/run/checkpoint.pt: cannot read checkpoint (KeyError: 'config_hash')",
         checkpoint_with(config_hash=None, model=None, optimizer=None, state=None,
                         shuffle_generator=None)),
    # what click's checks refuse: one line too
    Case("out is a file", ["train", "randman", *TINY, "--out", "{d}/file"],
         "Invalid value for '--out': Directory '{d}/file' is a file. (see ",
         file_at("file", b"x")),
    Case("unknown option", ["train", "randman", "--epochs", "3"],
         "No such option '--epochs'"),
    Case("missing database", ["study", "status"], "Missing option '--db'"),
    # data
    Case("picture under a file", ["data", "show", "randman", "--set",
                                  "data.samples_per_class=5", "--out", "{d}/file/x.png"],
         "{d}/file: is a file, where a folder is needed", file_at("file", b"x")),
    Case("picture format", ["data", "show", "randman", "--set", "data.samples_per_class=5",
                            "--out", "{d}/x.badext"],
         "{d}/x.badext: matplotlib cannot save a picture as '.badext' (formats: "),
    Case("cache under a file", ["train", "shd", "--set", "data.path={d}/shd", *SHD],
         "{d}/file: is a file, where a folder is needed",
         both(shd_files(5), file_at("file", b"x")), env={"SPIKEGRAD_CACHE": "{d}/file/cache"}),
    Case("one-sample SHD file", ["train", "shd", "--set", "data.path={d}/shd", *SHD],
         "{d}/shd/shd_train.h5: 1 sample(s): too few to hold out a validation split",
         shd_files(1), env={"SPIKEGRAD_CACHE": "{d}/cache"}),
    Case("MNIST test images 20x20", ["train", "mnist", "--set", "data.path={d}/mnist",
                                     "--set", "data.valid_size=5", "--quiet"],
         "{d}/mnist/t10k-images-idx3-ubyte.gz: images of size 20 x 20, but the training "
         "images (train-images-idx3-ubyte.gz) are 28 x 28",
         mnist_with_small_test_images, env={"SPIKEGRAD_CACHE": "{d}/cache"}),
    Case("NaN in a WAV file", ["train", "spoken-digits-current", "--set",
                               "data={name: audio, path: {d}/audio}", "--quiet"],
         "{d}/audio/b/nan.wav: audio file holds non-finite samples (NaN or infinity)",
         audio_with_nan, env={"SPIKEGRAD_CACHE": "{d}/cache"}),
    # study databases
    Case("foreign database", ["study", "run", "randman-smoke", "--db", "{d}/theirs.sqlite"],
         "{d}/theirs.sqlite: not a spikegrad results database (it holds other tables: people)",
         foreign_db),
    Case("newer database", ["study", "status", "--db", "{d}/newer.sqlite"],
         "{d}/newer.sqlite: a results database of schema version 2; this spikegrad reads "
         "version 1", newer_db),
    Case("text file as database", ["study", "best", "--db", "{d}/notes.sqlite"],
         "{d}/notes.sqlite: not a results database (file is not a database)",
         file_at("notes.sqlite", b"milk, eggs\n" * 200)),
    Case("database under a file", ["study", "run", "randman-smoke", "--db", "{d}/file/db"],
         "{d}/file: is a file, where a folder is needed", file_at("file", b"x")),
    Case("busy database", ["study", "run", "randman-smoke", "--db", "{d}/results.sqlite"],
         "{d}/results.sqlite: another study driver is running on this database",
         results_db, hold_lock="results.sqlite.lock"),
    Case("export unknown study", ["study", "export", "--db", "{d}/results.sqlite",
                                  "--study", "nope"],
         "--study nope: no such study in {d}/results.sqlite (studies: randman-smoke)",
         results_db),
    Case("export under a file", ["study", "export", "--db", "{d}/results.sqlite", "--out",
                                 "{d}/file/table.csv"],
         "{d}/file: is a file, where a folder is needed",
         both(results_db, file_at("file", b"x"))),
    Case("status of an empty database", ["study", "status", "--db", "{d}/empty.sqlite"],
         "{d}/empty.sqlite: holds no studies yet", empty_results_db),
    # study specs
    Case("huge grid, show", ["study", "show", "{d}/huge.yaml"],
         "{d}/huge.yaml: the grid has 10,000,000 trials, more than 100,000; pass --force",
         file_at("huge.yaml", HUGE_SPEC)),
    Case("huge grid, run", ["study", "run", "{d}/huge.yaml", "--db", "{d}/huge.sqlite"],
         "{d}/huge.yaml: the grid has 10,000,000 trials", file_at("huge.yaml", HUGE_SPEC)),
    # the engine choice and the network
    Case("unknown engine", ["train", "randman", "--set", "model.engine=gpu"],
         "model.engine: Input should be 'reference' or 'fast' (got 'gpu')"),
    Case("no hidden layer", ["train", "randman", "--set", "model.hidden=[]"],
         "model.hidden: List should have at least 1 item"),
    Case("unknown kernels in the environment", ["train", "randman", *TINY],
         "SPIKEGRAD_ENGINE='gpu': expected one of auto, cpp, torch",
         env={"SPIKEGRAD_ENGINE": "gpu"}),
]


def contents(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, monkeypatch):
    d = tmp_path / "work"
    d.mkdir()
    case.prepare(d)
    monkeypatch.chdir(d)
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.replace("{d}", str(d)))
    before = contents(d)
    args = [a.replace("{d}", str(d)) for a in case.args]
    runner = CliRunner()
    if case.hold_lock is not None:
        with ExclusiveLock(d / case.hold_lock, "held by the test"):
            before = contents(d)
            result = runner.invoke(main, args)
    else:
        result = runner.invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, lines
    message = case.message.replace("{d}", str(d))
    assert lines[0].startswith("spikegrad: error: ") and message in lines[0], lines[0]
    after = contents(d)
    assert {p: after.get(p) for p in before} == before


def test_refusing_a_picture_format_leaves_the_users_figures_open(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikegrad.config import load_config
    from spikegrad.data import build_data
    from spikegrad.data.show import save_sample_picture
    from spikegrad.errors import ArgumentError

    config = load_config("randman", {"data.samples_per_class": 5})
    data = build_data(config.data, config.time.n_steps, config.time.dt_ms)
    mine = plt.figure()
    try:
        with pytest.raises(ArgumentError, match="cannot save a picture as '.badext'"):
            save_sample_picture(data, tmp_path / "x.badext")
        assert save_sample_picture(data, tmp_path / "x.png").stat().st_size > 0
        assert plt.get_fignums() == [mine.number]
    finally:
        plt.close(mine)

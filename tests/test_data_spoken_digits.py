"""Synthesised spoken digits (espeak-ng), the audio-to-spike conversion and the data CLI."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from spikegrad.cli import main
from spikegrad.config import load_config
from spikegrad.data import build_data
from spikegrad.data.configs import SpokenDigitsAudioConfig, SpokenDigitsConfig
from spikegrad.data.files import MissingDataError
from spikegrad.data.spoken_digits import (
    SAMPLE_RATE,
    SynthesisOptions,
    audio_to_spikes,
    make_spoken_digits,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    folder = tmp_path_factory.mktemp("spoken")
    make_spoken_digits(folder, SynthesisOptions.small(n_speakers=4), progress=False)
    return folder


def test_audio_to_spikes_follows_band_levels():
    t = np.arange(int(0.5 * SAMPLE_RATE)) / SAMPLE_RATE
    samples = (np.sin(2 * np.pi * 1000 * t) * (t > 0.2)).astype(np.float32)
    options = SynthesisOptions()
    times, units = audio_to_spikes(samples, options, np.random.default_rng(0))
    assert np.all(np.diff(times) >= 0) and units.max() < 700
    assert times.min() > 0.2 - 0.02  # silence (first 200 ms, minus half a window) is silent
    # the channels tuned near 1 kHz fire most, at up to max_rate_hz
    counts = np.bincount(units, minlength=700)
    from spikegrad.data.spoken_digits import erb_filterbank

    freqs = np.fft.rfftfreq(512, 1 / SAMPLE_RATE)
    centres = freqs[np.argmax(erb_filterbank(700, 512, SAMPLE_RATE), axis=1)]
    assert abs(centres[np.argmax(counts)] - 1000) < 100
    assert counts.max() <= options.max_rate_hz * 0.3 + 1


@needs_espeak
def test_synthesis_writes_audio_lists_and_shd_files(spoken):
    info = json.loads((spoken / "speakers.json").read_text())
    test_voices = {s["voice"] for s in info["speakers"] if s["split"] == "test"}
    train_voices = {s["voice"] for s in info["speakers"] if s["split"] == "train"}
    assert test_voices and train_voices and not test_voices & train_voices  # held-out voices
    train_files = (spoken / "train_filenames.txt").read_text().split()
    assert len(train_files) == 30 and all((spoken / "audio" / f).is_file() for f in train_files)
    with h5py.File(spoken / "spoken_digits_train.h5") as f:
        assert f["spikes/times"].dtype.metadata["vlen"] == np.float16
        assert f["spikes/units"].dtype.metadata["vlen"] == np.uint16
        assert f["labels"].dtype == np.uint16 and len(f["labels"]) == 30
        assert sorted(set(f["labels"][:].tolist())) == list(range(10))
        assert f["extra/keys"][3] == b"three" and len(f["extra/speaker"]) == 30
        assert max(len(t) for t in f["spikes/times"][:]) > 100


@needs_espeak
def test_both_paradigms_load_the_synthesised_set(spoken):
    spikes = build_data(SpokenDigitsConfig(path=str(spoken), valid_fraction=0.2), 100, 10.0)
    assert spikes.n_inputs == 700 and spikes.n_classes == 10 and spikes.input_kind == "spikes"
    assert (len(spikes.train), len(spikes.valid), len(spikes.test)) == (24, 6, 10)
    x, _ = spikes.test.batch(range(10))
    assert x.shape == (10, 100, 700) and x.sum() > 1000
    current = build_data(SpokenDigitsAudioConfig(path=str(spoken), valid_fraction=0.2), 100,
                         10.0)
    assert current.input_kind == "current" and current.n_inputs == 64
    assert current.n_classes == 10 and len(current.test) == 10
    assert current.test.labels.tolist() == spikes.test.labels.tolist()


@needs_espeak
def test_cli_make_and_show(tmp_path, spoken):
    runner = CliRunner()
    result = runner.invoke(main, ["data", "show", "spoken-digits", "--set",
                                  f"data.path={spoken}", "--out", str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.png").stat().st_size > 1000
    result = runner.invoke(main, ["data", "show", "spoken-digits-current", "--set",
                                  f"data.path={spoken}", "--split", "test", "--index", "3",
                                  "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.png").stat().st_size > 1000


@needs_espeak
def test_spike_and_current_pipelines_train_end_to_end(tmp_path, spoken):
    from spikegrad.training import train

    small = ["training.epochs=1", "training.batch_size=16", "model.hidden.0.size=16",
             f"data.path={spoken}"]
    for name in ("spoken-digits", "spoken-digits-current"):
        result = train(load_config(name, small), out_dir=tmp_path / name, progress=False)
        assert result["status"] == "completed" and 0 <= result["test_accuracy"] <= 1


def test_missing_espeak_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingDataError, match="apt-get install espeak-ng"):
        make_spoken_digits(tmp_path / "x", SynthesisOptions.small())
    result = CliRunner().invoke(main, ["data", "make-spoken-digits", "--small", "--out",
                                       str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("spikegrad: error: espeak-ng is not installed")
    assert len(result.output.strip().splitlines()) == 1


def test_cli_list_show_and_one_line_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["data", "list"])
    assert result.exit_code == 0
    for name in ("digits", "mnist", "fashion-mnist", "shd", "ssc", "spoken-digits", "audio"):
        assert f"\n{name} " in "\n" + result.output
    result = runner.invoke(main, ["data", "show", "digits", "--out", str(tmp_path / "d.png")])
    assert result.exit_code == 0 and (tmp_path / "d.png").is_file()
    result = runner.invoke(main, ["data", "show", "mnist", "--set", f"data.path={tmp_path}"])
    assert result.exit_code == 2 and "no train-images-idx3-ubyte" in result.output
    (tmp_path / "shd_train.h5").write_text("garbage")
    (tmp_path / "shd_test.h5").write_text("garbage")
    result = runner.invoke(main, ["train", "shd", "--set", f"data.path={tmp_path}"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"spikegrad: error: {tmp_path / 'shd_train.h5'}: not a readable HDF5 file "
        + result.output.split("not a readable HDF5 file ", 1)[1].strip()]


def test_every_dataset_has_a_builtin_config():
    expected = {"digits": "digits", "mnist": "mnist", "fashion-mnist": "fashion-mnist",
                "shd": "shd", "ssc": "ssc", "spoken-digits": "spoken-digits",
                "spoken-digits-current": "spoken-digits-audio",
                "heidelberg-digits-current": "audio"}
    for config, data_name in expected.items():
        assert load_config(config).data.name == data_name


def test_digits_training_learns(tmp_path):
    """`spikegrad train digits`, cut to a few epochs, is well above chance (0.1). With the
    paper's initialisation the hidden layer starts silent: the first epochs wake it up."""
    from spikegrad.training import train

    config = load_config("digits", ["training.epochs=8"])
    result = train(config, out_dir=tmp_path / "run", progress=False)
    assert result["test_accuracy"] > 0.4


@pytest.mark.slow
def test_digits_full_run_reaches_090(tmp_path):
    from spikegrad.training import train

    result = train(load_config("digits"), out_dir=tmp_path / "run", progress=False)
    assert result["test_accuracy"] >= 0.90


@needs_espeak
def test_an_interrupted_remake_leaves_the_set_as_it_was(spoken, tmp_path, monkeypatch):
    from spikegrad.data import spoken_digits

    folder = tmp_path / "set"
    shutil.copytree(spoken, folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    made = []

    def interrupted(samples, options, rng):
        made.append(1)
        if len(made) == 5:  # a few files of the new set are written by now
            raise KeyboardInterrupt
        return audio_to_spikes(samples, options, rng)

    monkeypatch.setattr(spoken_digits, "audio_to_spikes", interrupted)
    result = CliRunner().invoke(main, ["data", "make-spoken-digits", "--small", "--seed", "7",
                                       "--out", str(folder), "--quiet"])
    assert result.exit_code == 130
    assert result.stderr == "spikegrad: interrupted; the folder's files are as they were\n"
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before  # no file changed, none added (the staging folder is gone)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []

"""Training runs that must end cleanly: one run per folder, empty splits, divergence without
warnings and with strict JSON, Ctrl-C, runs too large for the machine, the thread count."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from conftest import TINY
from spikegrad.config import ConfigError, load_config
from spikegrad.data import build_data
from spikegrad.data.base import CurrentDataset, DataSplits
from spikegrad.data.files import DataFileError
from spikegrad.data.spike_file import write_spike_file
from spikegrad.engine import cpp
from spikegrad.engine import threads as thread_settings
from spikegrad.engine.threads import ThreadGovernor
from spikegrad.io import ExclusiveLock, atomic_torch_save
from spikegrad.run_files import RunFolder
from spikegrad.studies.worker import run_trial
from spikegrad.training import Trainer, check_memory, memory_need, train


def tiny(**changes):
    raw = copy.deepcopy(TINY)
    for path, value in changes.items():
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[last] = value
    return load_config(raw)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def strict_loads(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# --- one run per folder -----------------------------------------------------------------


def test_a_second_run_into_a_busy_folder_is_refused_before_it_writes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    with ExclusiveLock(out / ".lock", "held by the test"):  # what a running `train` holds
        with pytest.raises(ConfigError, match="another run is training into this folder"):
            train(tiny(), out_dir=out)
    after = snapshot(out)
    assert after == {**before, **{k: v for k, v in after.items() if k.name == ".lock"}}
    # once the folder is free, the run goes ahead
    assert train(tiny(**{"training.epochs": 1}), out_dir=out)["status"] == "completed"


def test_the_folder_is_locked_while_training(tmp_path):
    out = tmp_path / "run"
    seen = []

    def look(state):
        seen.append(ExclusiveLock(out / ".lock", "").held_elsewhere() or _locked(out))
        return False

    Trainer(tiny(**{"training.epochs": 2}), out_dir=out, progress=False).fit(
        epoch_callback=look)
    assert seen == [True, True]
    with ExclusiveLock(out / ".lock", "free again"):
        pass


def _locked(out):
    try:
        with ExclusiveLock(out / ".lock", "busy"):
            return False
    except ConfigError:
        return True


# --- empty splits -------------------------------------------------------------------------


def test_one_sample_shd_file_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    one = [np.array([0.01, 0.02])], [np.array([1, 2])], np.array([0])
    write_spike_file(tmp_path / "shd_train.h5", *one)
    write_spike_file(tmp_path / "shd_test.h5", *one)
    config = load_config("shd", [f"data.path={tmp_path}", "time.n_steps=20",
                                 "model.hidden.0.size=4"])
    with pytest.raises(DataFileError, match="shd_train.h5: 1 sample"):
        train(config)


def test_an_empty_training_split_is_a_config_error(tiny_config):
    data = build_data(tiny_config.data, tiny_config.time.n_steps, tiny_config.time.dt_ms)
    for split in ("train", "valid", "test"):
        parts = {s: getattr(data, s) for s in ("train", "valid", "test")}
        parts[split] = parts[split].subset([])
        empty = DataSplits(name="randman", **parts, n_inputs=data.n_inputs,
                           n_classes=data.n_classes, n_steps=data.n_steps)
        with pytest.raises(ConfigError, match=f"the {split} split of randman has no samples"):
            Trainer(tiny_config, data=empty, progress=False).fit()


# --- divergence -----------------------------------------------------------------------------


def test_divergence_writes_strict_json_and_prints_no_warning(tmp_path):
    config = tiny(**{"model.hidden.0.activity": {"lower_rate": 1e10, "lower_strength": 1e38}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config, out_dir=tmp_path / "run")
    assert [str(w.message) for w in caught] == []
    assert result["status"] == "diverged" and result["divergence_reason"] == "loss is inf"
    written = strict_loads((tmp_path / "run" / "result.json").read_text())
    assert written["test_accuracy"] is None and written["hidden_spikes_per_neuron"] == [None]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_step_that_leaves_a_weight_not_finite_ends_the_run(value):
    config = tiny(**{"training.epochs": 3})
    trainer = Trainer(config, progress=False)
    step = trainer.optimizer.step

    def poisoning_step():
        step()
        if trainer.state.epoch == 1:  # the second epoch's first step
            with torch.no_grad():
                trainer.model.readout.weight.view(-1)[-1] = value

    trainer.optimizer.step = poisoning_step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = trainer.fit()
    assert [str(w.message) for w in caught] == []
    assert result["status"] == "diverged" and result["diverged_epoch"] == 2
    assert result["divergence_reason"] == "weights are not finite"


def test_metrics_lines_are_strict_json(tmp_path):
    history = [{"epoch": 1, "valid_loss": float("inf"), "train_loss": float("nan")}]
    RunFolder(tmp_path).write_metrics(history)
    line = strict_loads((tmp_path / "metrics.jsonl").read_text())
    assert line == {"epoch": 1, "valid_loss": None, "train_loss": None}


def test_an_optimizer_step_beyond_float32_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^training.learning_rate: the adam step failed in "
                                          r"epoch 1 at learning rate 1e\+38 \(value cannot"):
        train(tiny(**{"training.learning_rate": 1e38}))


# --- Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_exits_130_with_a_resume_hint(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "spikegrad.cli", "train", "randman", "--quiet", "--out",
            str(out), "--set", "training.epochs=100000", "--set", "training.patience=null",
            "--set", "time.n_steps=20",
            "--set", "data.samples_per_class=30", "--set", "model.hidden.0.size=8"]
    # SIGINT back to its default in the child: a test run started in the background (nohup,
    # `&`) ignores it, and Python keeps an ignored SIGINT ignored
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:  # never leave the 100000-epoch run behind
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert stderr.splitlines() == [
        "spikegrad: interrupted; run the same command with --resume to continue"]


class InterruptsWhilePickled:
    """Sends this process SIGINT while torch.save pickles it, as a Ctrl-C during a
    checkpoint would."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return (dict, ())


def test_ctrl_c_during_a_checkpoint_finishes_it_then_interrupts(tmp_path):
    """A KeyboardInterrupt inside torch.save's writer came out as a RuntimeError (a crash with
    a traceback, exit 1, instead of the resume hint); now the checkpoint is written whole and
    the KeyboardInterrupt follows it."""
    path = tmp_path / "checkpoint.pt"
    weights = torch.arange(100_000.0)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"first": weights, "signal": InterruptsWhilePickled(),
                           "last": weights + 1}, path)
    saved = torch.load(path, weights_only=False)
    assert torch.equal(saved["last"], weights + 1) and saved["signal"] == {}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left
    # a second Ctrl-C stops the write at once: the old checkpoint stays, no temporary file
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"signals": [InterruptsWhilePickled(), InterruptsWhilePickled()],
                           "last": weights}, path)
    assert torch.equal(torch.load(path, weights_only=False)["last"], weights + 1)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("override", ["model.hidden.0.size=10000000", "time.n_steps=1000000000"])
def test_runs_beyond_the_machine_are_refused_before_building_data(override, monkeypatch):
    import spikegrad.training as training

    monkeypatch.setattr(training, "build_data", lambda *a, **k: pytest.fail("data built"))
    config = load_config("randman", [override])
    with pytest.raises(ConfigError, match=r"this run needs about [\d,.]+ GiB of memory"):
        Trainer(config, progress=False)
    outcome = run_trial({"config": config.to_dict()})
    assert outcome["status"] == "failed" and "needs about" in outcome["error"]


def test_built_in_configs_fit_in_a_few_gib():
    from spikegrad.config import builtin_config_names

    for name in builtin_config_names():
        config = load_config(name)
        assert memory_need(config) < 2**31, name
        check_memory(config)


# --- thread count ----------------------------------------------------------------------------


def test_every_run_records_its_thread_count(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_THREADS", "1")
    result = train(tiny(**{"training.epochs": 1}), out_dir=tmp_path / "run")
    assert result["threads"] == 1 and result["thread_setting"] == "1"
    assert strict_loads((tmp_path / "run" / "result.json").read_text())["threads"] == 1
    monkeypatch.delenv("SPIKEGRAD_THREADS")
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)  # as a study worker does
            monkeypatch.setattr(thread_settings, "GOVERNOR", ThreadGovernor())
            outcome = run_trial({"config": tiny(**{"training.epochs": 1}).to_dict()})
            assert outcome["versions"]["threads"] == str(threads)
            assert outcome["versions"]["thread_setting"] == "auto"
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("input_kind", ["spikes", "current"])
def test_the_thread_count_changes_no_result(tmp_path, monkeypatch, input_kind):
    """The governor lowers the thread count while other processes keep cores busy, so a
    run's results must not depend on it: a network of two hidden layers (the gradient dx W
    sent back to the first), on Randman's spikes or on a dense input current (no sparse
    form: its weight gradient is summed by the kernels, its projection is PyTorch's), trained
    on 1 and 2 threads, gives the same losses, accuracies, spike counts and final weights.
    (The 10 neurons of the first layer: MKL's product for that weight gradient gives other
    bits on 1 and 2 threads.)"""
    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    data = None
    if input_kind == "current":
        generator = torch.Generator().manual_seed(0)

        def split(n):
            return CurrentDataset(torch.randn(n, 50, 20, generator=generator),
                                  torch.randint(3, (n,), generator=generator))

        data = DataSplits("currents", split(96), split(32), split(32), n_inputs=20,
                          n_classes=3, n_steps=50, input_kind="current")
    outcomes, dense_tmm, calls = [], cpp.dense_tmm, []
    monkeypatch.setattr(cpp, "dense_tmm", lambda x, g: calls.append(1) or dense_tmm(x, g))
    for threads in (1, 2):
        monkeypatch.setenv("SPIKEGRAD_THREADS", str(threads))
        config = tiny(**{"model.hidden": [{"size": 10}, {"size": 64}], "training.epochs": 2})
        calls.clear()
        result = train(config, out_dir=tmp_path / f"run{threads}", data=data)
        assert result["threads"] == threads and result["kernels"] == "cpp"
        assert bool(calls) == (input_kind == "current")
        weights = torch.load(tmp_path / f"run{threads}" / "checkpoint.pt",
                             weights_only=False)["model"]
        for timing in ("threads", "thread_setting", "wall_time_s"):
            result.pop(timing)
        outcomes.append((result, weights))
    (first, first_weights), (second, second_weights) = outcomes
    assert first == second
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)


def test_every_run_records_its_kernels_and_recompute(tmp_path, monkeypatch):
    monkeypatch.delenv("SPIKEGRAD_ENGINE", raising=False)
    monkeypatch.setenv("SPIKEGRAD_RECOMPUTE", "1")  # overrides model.recompute
    config = tiny(**{"training.epochs": 1, "model.engine": "fast", "model.kernels": "torch"})
    result = train(config, out_dir=tmp_path / "run")
    assert (result["kernels"], result["recompute"]) == ("torch", True)
    saved = strict_loads((tmp_path / "run" / "result.json").read_text())
    assert (saved["kernels"], saved["recompute"]) == ("torch", True)
    outcome = run_trial({"config": config.to_dict()})
    assert (outcome["versions"]["kernels"], outcome["versions"]["recompute"]) == ("torch", "True")
    monkeypatch.delenv("SPIKEGRAD_RECOMPUTE")
    small_evaluation = {"training.eval_batch_size": 1}

    def need(recompute, recurrent):
        return memory_need(tiny(**small_evaluation, **{"model.recompute": recompute,
                                                       "model.hidden.0.recurrent": recurrent}))

    for recurrent in (False, True):  # auto keeps the state of recurrent layers only
        assert need(False, recurrent) > need(True, recurrent)
        assert need("auto", recurrent) == need(recurrent is False, recurrent)

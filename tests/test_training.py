import json
import os
import signal
import subprocess
import sys
import time

import pytest

from spikegrad.config import ConfigError, load_config
from spikegrad.training import Trainer, train


def test_learns_above_chance(tiny_config):
    config = load_config(tiny_config, {"training.epochs": 20})
    result = train(config)
    assert result["status"] == "completed"
    assert result["train_accuracy"] > 0.6  # chance is 1/3
    assert len(result["hidden_spikes_per_neuron"]) == 1


def test_same_seed_same_metrics(tiny_config):
    first, second = train(tiny_config), train(tiny_config)
    for result in (first, second):
        result.pop("wall_time_s")
    assert first == second
    third = train(load_config(tiny_config, {"seed": 4}))
    assert third["train_loss"] != first["train_loss"]


def test_per_epoch_records_and_files(tiny_config, tmp_path):
    trainer = Trainer(tiny_config, out_dir=tmp_path)
    result = trainer.fit()
    assert [r["epoch"] for r in trainer.state.history] == [1, 2, 3]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "hidden_spikes_per_neuron" in json.loads(lines[0])
    assert json.loads((tmp_path / "result.json").read_text())["test_accuracy"] == result[
        "test_accuracy"]
    assert load_config(tmp_path / "config.yaml") == tiny_config
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_config, out_dir=tmp_path).fit()
    with pytest.raises(ConfigError, match="different config"):
        Trainer(load_config(tiny_config, {"seed": 9}), out_dir=tmp_path).fit(resume=True)


def test_divergence_is_reported_not_raised(tiny_config):
    # exploding gradients: a huge surrogate scale and plain SGD with a huge step
    config = load_config(tiny_config, {"training.optimizer": "sgd", "training.learning_rate": 1e10,
                                       "surrogate.scale": 1e38})
    result = train(config)
    assert result["status"] == "diverged"
    assert result["diverged_epoch"] == 1
    assert result["divergence_reason"] == "weights are not finite"
    assert result["test_accuracy"] != result["test_accuracy"]  # NaN: no epoch finished


def test_resume_after_interruption_matches_uninterrupted(tiny_config, tmp_path):
    config = load_config(tiny_config, {"training.epochs": 4})
    full = train(config)
    trainer = Trainer(config, out_dir=tmp_path)
    original = trainer._train_epoch

    def interrupted():
        if trainer.state.epoch == 2:
            raise KeyboardInterrupt
        return original()

    trainer._train_epoch = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    resumed = Trainer(config, out_dir=tmp_path).fit(resume=True)
    for result in (full, resumed):
        result.pop("wall_time_s")
    assert resumed == full


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    """SIGKILL a real `spikegrad train` mid-way, resume it, compare with an uninterrupted run."""
    overrides = ["--set", "training.epochs=12", "--set", "time.n_steps=40",
                 "--set", "data.samples_per_class=60", "--set", "data.n_classes=4",
                 "--set", "model.init.feedforward.scheme=gaussian",
                 "--set", "model.init.feedforward.scale=7",
                 "--set", "model.hidden.0.size=32", "--set", "training.batch_size=20"]
    command = [sys.executable, "-m", "spikegrad.cli", "train", "randman", *overrides, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], env=env)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < 12, "the run should have been killed mid-way"
    assert not (tmp_path / "killed" / "result.json").exists()
    subprocess.run([*command, "--out", str(tmp_path / "killed"), "--resume"], env=env,
                   check=True)
    subprocess.run([*command, "--out", str(tmp_path / "whole")], env=env, check=True)
    resumed = json.loads((tmp_path / "killed" / "result.json").read_text())
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    for result in (resumed, whole):
        result.pop("wall_time_s")
    assert resumed == whole
    history = [json.loads(x) for x in metrics.read_text().splitlines()]
    whole_history = [json.loads(x) for x in
                     (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(history, whole_history, strict=True):
        a.pop("epoch_time_s"), b.pop("epoch_time_s")
        assert a == b


def test_patience_ends_training(tiny_config):
    """Keras' rule: after `patience` epochs whose validation accuracy does not beat the
    reference by more than min_delta, training is complete; the best weights are kept."""
    config = load_config(tiny_config, {"training.epochs": 40, "training.patience": 3,
                                       "training.min_delta": 0.5})  # nothing improves by 0.5
    trainer = Trainer(config)
    result = trainer.fit()
    assert result["status"] == "completed" and result["stop_reason"] == "patience"
    assert result["epochs_completed"] == 4  # the first epoch sets the reference, then 3 more
    assert result["best_epoch"] <= 4
    free = train(load_config(tiny_config, {"training.epochs": 5}))
    assert free["stop_reason"] == "epochs" and free["epochs_completed"] == 5


def test_pause_and_resume_give_the_uninterrupted_result(tiny_config, tmp_path):
    config = load_config(tiny_config, {"training.epochs": 6, "training.patience": 50})
    full = train(config)
    paused = Trainer(config, out_dir=tmp_path).fit(stop_after=2)
    assert paused["status"] == "paused" and paused["epochs_completed"] == 2
    resumed = Trainer(config, out_dir=tmp_path).fit(resume=True)
    for result in (full, resumed):
        result.pop("wall_time_s")
    assert resumed == full

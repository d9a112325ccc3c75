import json
import subprocess
import sys

import pytest

TINY = ["--set", "training.epochs=2", "--set", "time.n_steps=20", "--set", "data.n_classes=3",
        "--set", "data.samples_per_class=30", "--set", "model.hidden.0.size=8",
        "--set", "training.batch_size=16"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "spikegrad.cli", *args], capture_output=True,
                          text=True)


def test_train_json_output(tmp_path):
    done = run("train", "randman", *TINY, "--json", "--quiet", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("test_accuracy", "valid_accuracy", "train_accuracy", "hidden_spikes_per_neuron",
                "status", "wall_time_s"):
        assert key in result
    assert result["status"] == "completed" and len(result["hidden_spikes_per_neuron"]) == 1
    for name in ("config.yaml", "metrics.jsonl", "result.json", "checkpoint.pt"):
        assert (tmp_path / "run" / name).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "randman", "--set", "model.hidden.0.tau_mem_ms=0.5"],
         "model.hidden.0.tau_mem_ms: must be greater than time.dt_ms"),
        (["train", "randman", "--set", "model.hidden.0.size=0"], "model.hidden.0.size"),
        (["train", "randman", "--set", "surrogate.name=wiggle"], "unknown surrogate 'wiggle'"),
        (["train", "randman", "--set", "training.colour=blue"], "training.colour: unknown key"),
        (["train", "no-such-config"], "no such config file or built-in config"),
        (["train", "randman", "--resume"], "--resume needs --out"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikegrad: error: ") and message in lines[0]


def test_help_on_every_command():
    for args in (["--help"], ["train", "--help"], ["config", "--help"], ["config", "show", "-h"]):
        done = run(*args)
        assert done.returncode == 0 and "Usage" in done.stdout

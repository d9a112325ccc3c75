"""Shared fixtures: a tiny Randman experiment that trains in about a second."""

from __future__ import annotations

import pytest

from spikegrad.config import load_config

# every matrix N(0, (7/√fan_in)^2): a tiny network that fires from the start
GAUSSIAN_INIT_7 = {kind: {"scheme": "gaussian", "scale": 7.0}
                   for kind in ("feedforward", "recurrent", "readout")}

TINY = {
    "name": "tiny",
    "seed": 3,
    "time": {"dt_ms": 1.0, "n_steps": 50},
    "data": {"name": "randman", "n_classes": 3, "n_units": 20, "samples_per_class": 60,
             "alpha": 2.0, "seed": 1},
    "model": {"hidden": [{"size": 16}], "init": GAUSSIAN_INIT_7},
    "training": {"epochs": 3, "batch_size": 16, "learning_rate": 0.01},
}


@pytest.fixture
def tiny_config():
    return load_config(TINY)

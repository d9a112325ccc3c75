"""One way to build a network: ``SNN.from_config``; ``SNN.build`` and training go through it,
so their defaults are the config's."""

from __future__ import annotations

import pytest
import torch

from spikegrad.config import NetworkConfig, load_config
from spikegrad.model import SNN
from spikegrad.surrogates import Surrogate
from spikegrad.training import Trainer


def _same_network(a: SNN, b: SNN) -> None:
    assert repr(a) == repr(b)
    assert [m.engine for m in a.modules() if hasattr(m, "engine")] == \
        [m.engine for m in b.modules() if hasattr(m, "engine")]
    for layer_a, layer_b in zip(a.hidden, b.hidden, strict=True):
        assert layer_a.dynamics == layer_b.dynamics
    assert a.readout.dynamics == b.readout.dynamics
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_build_defaults_are_the_config_defaults():
    built = SNN.build(20, [100], 10, generator=torch.Generator().manual_seed(0))
    configured = SNN.from_config(NetworkConfig(n_inputs=20, n_outputs=10),
                                 generator=torch.Generator().manual_seed(0))
    _same_network(built, configured)
    assert built.hidden[0].engine == "fast"


def test_build_is_from_config_of_the_same_settings():
    settings = {"time.dt_ms": 0.5, "model.hidden": [
        {"size": 30, "recurrent": True, "tau_mem_ms": 7.0, "tau_syn_ms": 3.0,
         "detach_reset": False}, {"size": 25, "tau_mem_ms": 7.0, "tau_syn_ms": 3.0,
                                  "detach_reset": False}],
        "model.readout": {"tau_mem_ms": 13.0, "tau_syn_ms": 3.0, "initial_membrane": -0.01},
        "model.engine": "reference", "surrogate": {"name": "sigmoid", "slope": 4.0, "scale": 2.0}}
    config = load_config("randman", settings)
    built = SNN.build(20, [30, 25], 5, recurrent=[True, False], dt_ms=0.5, tau_mem_ms=7.0,
                      tau_syn_ms=3.0, tau_out_ms=13.0, readout_initial_membrane=-0.01,
                      surrogate=Surrogate("sigmoid", 4.0, 2.0), detach_reset=False,
                      engine="reference", generator=torch.Generator().manual_seed(3))
    _same_network(built, SNN.from_config(config, 20, 5,
                                         generator=torch.Generator().manual_seed(3)))


def test_an_experiment_network_is_seeded_by_the_config(tiny_config):
    trainer = Trainer(tiny_config, progress=False)
    data = trainer.data
    _same_network(trainer.model, SNN.from_config(tiny_config, data.n_inputs, data.n_classes))
    again = SNN.from_config(tiny_config, data.n_inputs, data.n_classes)
    _same_network(trainer.model, again)
    other = SNN.from_config(load_config(tiny_config, {"seed": 1}), data.n_inputs,
                            data.n_classes)
    assert not torch.equal(other.hidden[0].weight, again.hidden[0].weight)


def test_sizes_come_from_the_data_or_the_network_config(tiny_config):
    with pytest.raises(TypeError, match="n_inputs is needed with an experiment config"):
        SNN.from_config(tiny_config)
    network = NetworkConfig(n_inputs=4, n_outputs=3)
    assert SNN.from_config(network, 4, 3).readout.weight.shape == (3, 100)
    with pytest.raises(ValueError, match="n_outputs 2 differs from the config's 3"):
        SNN.from_config(network, n_outputs=2)

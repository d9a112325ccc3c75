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


def test_one_time_constant_per_layer_by_default():
    """The default network holds no per-neuron τ: the same parameters and buffers as before
    model.time_constants existed, and its config hash leaves the section out."""
    config = load_config("randman")
    net = SNN.from_config(config, 20, 10)
    assert set(net.state_dict()) == {"hidden.0.weight", "readout.weight"}
    assert net.hidden[0].time_constants() is None
    assert net.hidden[0].neuron_dynamics() is net.hidden[0].dynamics
    explicit = load_config("randman", {"model.time_constants": {"distribution": "homogeneous",
                                                                "learn": False}})
    assert explicit.config_hash() == config.config_hash()
    assert load_config("randman", {"model.time_constants.learn": True}).config_hash() != \
        config.config_hash()


def test_gamma_time_constants_around_the_layer_mean():
    """Gamma-distributed τ: mean the layer's τ, coefficient of variation 1/√k, drawn after the
    weights (which stay those of the homogeneous network), the same for the same seed."""
    hidden = [{"size": 4000, "tau_mem_ms": 20.0, "tau_syn_ms": 8.0}, {"size": 3000}]
    plain = load_config("randman", {"model.hidden": hidden})
    config = load_config(plain, {"model.time_constants": {"distribution": "gamma",
                                                          "gamma_shape": 4.0}})
    net, again = SNN.from_config(config, 20, 10), SNN.from_config(config, 20, 10)
    homogeneous = SNN.from_config(plain, 20, 10)
    for layer, mean_mem, mean_syn in zip(net.hidden, (20.0, 10.0), (8.0, 5.0), strict=True):
        for tau, mean in zip(layer.time_constants(), (mean_mem, mean_syn), strict=True):
            assert abs(tau.mean().item() / mean - 1) < 0.05
            assert abs(tau.std().item() / tau.mean().item() - 0.5) < 0.05
    state, weights = net.state_dict(), homogeneous.state_dict()
    assert all(torch.equal(state[name], value) for name, value in weights.items())
    assert set(state) - set(weights) == {f"hidden.{i}.log_tau_{kind}" for i in (0, 1)
                                         for kind in ("mem", "syn")}  # buffers: not trained
    assert dict(net.named_parameters()).keys() == dict(homogeneous.named_parameters()).keys()
    assert all(torch.equal(value, again.state_dict()[name]) for name, value in state.items())
    other = SNN.from_config(load_config(config, {"seed": 1}), 20, 10)
    assert not torch.equal(other.hidden[0].log_tau_mem, net.hidden[0].log_tau_mem)


def test_learned_time_constants_are_trained(tiny_config):
    """With learn, every hidden neuron's log τ_mem and log τ_syn are parameters the optimiser
    moves (from a homogeneous start too), to the same bits for the same seed, and a saved
    state restores them."""
    config = load_config(tiny_config, {"model.time_constants.learn": True,
                                       "training.epochs": 1})
    trainer = Trainer(config, progress=False)
    layer = trainer.model.hidden[0]
    start = [t.detach().clone() for t in layer.time_constants()]
    assert all(torch.equal(t, t[:1].expand_as(t)) for t in start)  # homogeneous start
    trainer.fit()
    moved = layer.time_constants()
    assert all(not torch.equal(a, b) for a, b in zip(start, moved, strict=True))
    again = Trainer(config, progress=False)
    again.fit()
    assert all(torch.equal(a, b) for a, b in zip(again.model.hidden[0].time_constants(), moved,
                                                 strict=True))
    rebuilt = SNN.from_config(config, trainer.data.n_inputs, trainer.data.n_classes,
                              load_only=True)
    rebuilt.load_state_dict(trainer.model.state_dict())
    assert torch.equal(rebuilt.hidden[0].time_constants()[0], moved[0])

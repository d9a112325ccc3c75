"""Dale's law: excitatory and inhibitory neurons, weights that keep their neuron's sign."""

from __future__ import annotations

import pytest
import torch

from spikegrad.config import ConfigError, NetworkConfig, load_config, validate_section
from spikegrad.engine import cpp
from spikegrad.model import SNN, neuron_signs
from spikegrad.studies import load_study_spec
from spikegrad.training import Trainer
from test_engine import assert_close


def network(recurrent: bool, engine: str = "fast", layers: int = 2, balance: bool = True,
            afferents: bool = True, seed: int = 0, time_constants: dict | None = None,
            kernels: str = "auto", **dale_fields) -> SNN:
    dale = {"excitatory_fraction": 0.75, "balance": balance, "excitatory_afferents": afferents,
            **dale_fields}
    config = validate_section(NetworkConfig, {
        "n_inputs": 12, "n_outputs": 3,
        "model": {"hidden": [{"size": 8, "recurrent": recurrent, "dale": dale}] * layers,
                  "init": {kind: {"scheme": "gaussian", "scale": 5.0}
                           for kind in ("feedforward", "recurrent", "readout")},
                  "time_constants": time_constants or {},
                  "engine": engine, "kernels": kernels},
    })
    return SNN.from_config(config, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=["cpp", "torch"])
def kernels(request) -> str:
    """Both kernel sets of the fast engine (the compiled one where it builds)."""
    if request.param == "cpp" and not cpp.available():
        pytest.skip("compiled kernels unavailable")
    return request.param


def test_neuron_signs():
    assert neuron_signs(8, 0.75).tolist() == [1] * 6 + [-1] * 2
    assert neuron_signs(3, 0.01).tolist() == [1, -1, -1]  # at least one excitatory
    assert neuron_signs(4, 1.0).tolist() == [1] * 4


@pytest.mark.parametrize("recurrent", [False, True])
def test_weights_take_their_neurons_signs_at_init(recurrent):
    net = network(recurrent)
    constraints = net.sign_constraints()
    # the data's weights into layer 0, layer 1's W, the readout, and each V
    assert len(constraints) == 3 + 2 * recurrent
    assert constraints[0].weight is net.hidden[0].weight
    assert bool((net.hidden[0].weight >= 0).all())  # excitatory afferents
    for weight, sign, _ in constraints[1:]:
        assert bool((weight[:, sign > 0] >= 0).all()) and bool((weight[:, sign < 0] <= 0).all())
        # balance: the 2 inhibitory columns carry 6/2 times the excitatory magnitudes
        ratio = (weight[:, sign < 0].abs().mean() / weight[:, sign > 0].abs().mean()).detach()
        assert 1.5 < float(ratio) < 6.0
    free = network(recurrent, afferents=False)
    assert len(free.sign_constraints()) == 2 + 2 * recurrent
    assert bool((free.hidden[0].weight < 0).any())
    unbalanced = network(recurrent, balance=False).readout.weight
    plain = network(recurrent).readout.weight
    assert torch.equal(unbalanced[:, 6:] * 3, plain[:, 6:])


def test_no_constraints_without_dale():
    net = SNN.build(12, [8, 8], 3, recurrent=True)
    assert net.sign_constraints() == []
    before = [p.detach().clone() for p in net.parameters()]
    net.enforce_signs()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_enforce_signs_is_a_projection():
    net = network(recurrent=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    flipped = sum(int((w * s < 0).sum()) for w, s, _ in net.sign_constraints())
    assert flipped > 0
    kept = [w.detach().clone() for w, _, _ in net.sign_constraints()]
    net.enforce_signs()
    for (weight, sign, _), old in zip(net.sign_constraints(), kept, strict=True):
        assert bool((weight * sign >= 0).all())
        right = old * sign >= 0
        assert torch.equal(weight[right], old[right])  # the right signs are left as they were
        assert bool((weight[~right] == 0).all())


@pytest.mark.parametrize("recurrent", [False, True])
def test_fast_engine_matches_the_reference_on_ei_networks(recurrent, kernels):
    inputs = (torch.rand(5, 30, 12, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    results = []
    for engine in ("reference", "fast"):
        net = network(recurrent, engine, kernels=kernels)
        out = net(inputs)
        loss = out.readout.max(1).values.pow(2).sum() + sum(c.pow(2).sum() * 0.01
                                                            for c in out.spike_counts)
        results.append((out.hidden_spikes, torch.autograd.grad(loss, list(net.parameters()))))
    (spikes_ref, grads_ref), (spikes_fast, grads_fast) = results
    assert any(bool(s.any()) for s in spikes_ref)  # the network is not silent
    for a, b in zip(spikes_fast, spikes_ref, strict=True):
        assert torch.equal(a, b)
    for i, (a, b) in enumerate(zip(grads_fast, grads_ref, strict=True)):
        assert_close(a, b, f"gradient {i}")


@pytest.mark.parametrize("learn", [False, True])
def test_inhibitory_neurons_with_their_own_time_constants(learn, kernels):
    inputs = (torch.rand(4, 30, 12, generator=torch.Generator().manual_seed(3)) < 0.2).float()
    own = {"inhibitory_tau_mem_ms": 4.0, "inhibitory_tau_syn_ms": 2.0}
    results = []
    for engine in ("reference", "fast"):
        net = network(True, engine, time_constants={"learn": learn}, kernels=kernels, **own)
        tau_mem, tau_syn = net.hidden[0].time_constants()
        assert torch.allclose(tau_mem, torch.tensor([10.0] * 6 + [4.0] * 2).to(tau_mem))
        assert torch.allclose(tau_syn, torch.tensor([5.0] * 6 + [2.0] * 2).to(tau_syn))
        out = net(inputs)
        assert bool(out.hidden_spikes[0].any())
        loss = out.readout.max(1).values.pow(2).sum()
        results.append(torch.autograd.grad(loss, list(net.parameters())))
    assert len(results[0]) == 5 + 4 * learn  # W, V of both layers, W_out; and their log τ
    for i, (a, b) in enumerate(zip(results[1], results[0], strict=True)):
        assert_close(a, b, f"gradient {i}")
    gamma = network(False, time_constants={"distribution": "gamma"}, **own).hidden[0]
    tau_mem, _ = gamma.time_constants()
    assert not torch.equal(tau_mem[:6], torch.full((6,), 10.0).to(tau_mem))  # drawn around
    with pytest.raises(ConfigError, match="model.hidden.0.dale.inhibitory_tau_mem_ms"):
        load_config("randman", {"model.hidden.0.dale": {"inhibitory_tau_mem_ms": 0.5}})


def test_training_keeps_the_signs(tiny_config):
    config = load_config(tiny_config, {"model.hidden.0.dale": {"excitatory_fraction": 0.75},
                                       "model.hidden.0.recurrent": True,
                                       "training.epochs": 2})
    trainer = Trainer(config)
    result = trainer.fit()
    assert result["status"] == "completed"
    constraints = trainer.model.sign_constraints()
    assert len(constraints) == 3
    for weight, sign, _ in constraints:
        assert bool((weight * sign >= 0).all())
    # the optimiser pushed some weights across zero, and the projection stopped them there
    assert sum(int((w == 0).sum()) for w, _, _ in constraints) > 0


def test_the_built_in_ei_study_is_valid():
    spec = load_study_spec("dale-spoken-digits")
    assert spec.base == "spoken-digits-current"
    dale = {str(trial.model.hidden[0].dale) for trial in spec.trials()}
    inits = {(t.model.init.feedforward.scheme, t.model.init.recurrent.scheme)
             for t in spec.trials()}
    assert inits == {("uniform", "uniform"), ("fluctuation", "fluctuation")}
    assert len(dale) == 3 and len(spec.trials()) == 3 * 2 * 5 * 6  # networks, inits, seeds, rates


def test_config_rules(tiny_config):
    assert load_config(tiny_config).config_hash() == load_config(
        tiny_config, {"model.hidden.0.dale": None}).config_hash()
    with pytest.raises(ConfigError, match="model.hidden.0.dale.excitatory_fraction"):
        load_config(tiny_config, {"model.hidden.0.dale": {"excitatory_fraction": 0.0}})
    with pytest.raises(ConfigError, match="fluctuation"):
        load_config(tiny_config, {"model.hidden.0.dale": {},
                                  "model.init.feedforward.scheme": "fluctuation"})

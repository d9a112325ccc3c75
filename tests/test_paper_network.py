"""The paper's network at initialisation: silent hidden layer, yet non-zero gradients."""

from __future__ import annotations

import math

import pytest
import torch

from spikegrad import engine, functional
from spikegrad.config import load_config
from spikegrad.data import build_data
from spikegrad.functional import ReadoutDynamics
from spikegrad.losses import classification_loss, reduce_readout
from spikegrad.model import SNN
from spikegrad.training import activity_penalty


def test_readout_decays_from_its_initial_membrane():
    """No input: U_out[n] = u_0 β^n for n = 1..T, on both paths."""
    dynamics = ReadoutDynamics(0.9, 0.8, initial_membrane=-1e-3)
    silent = torch.zeros(2, 6, 3, dtype=torch.float64)
    weight = torch.randn(4, 3, dtype=torch.float64)
    expected = torch.tensor([-1e-3 * 0.9**n for n in range(1, 7)], dtype=torch.float64)
    for impl in (functional, engine):
        trace = impl.readout_layer(silent, weight, dynamics)
        assert trace.shape == (2, 6, 4)
        assert torch.allclose(trace, expected[None, :, None].expand(2, 6, 4), rtol=1e-12)


def _paper_network_gradients(overrides: list[str]) -> tuple[float, list[torch.Tensor]]:
    config = load_config("randman", ["data.samples_per_class=20", *overrides])
    data = build_data(config.data, config.time.n_steps, config.time.dt_ms)
    model = SNN.from_config(config, data.n_inputs, data.n_classes).double()
    inputs, labels = data.train.batch(range(len(data.train)))
    output = model(inputs.double())
    loss = classification_loss(reduce_readout(output.readout, "max"), labels)
    loss = loss + activity_penalty(config, output.spike_counts)
    loss.backward()
    spikes = float(output.hidden_spikes[0].detach().sum())
    return spikes, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("engine_name", ["reference", "fast"])
def test_silent_paper_network_has_gradients(engine_name):
    """The paper's uniform init leaves the hidden layer silent on Randman; with the readout
    starting at -1e-3 (and the lower-bound regulariser) every weight still gets a gradient.
    With U_out[0] = 0 and no regulariser, max over time picks a step that depends on no
    weight: every gradient is exactly zero (why the initial membrane is not 0)."""
    engine_set = f"model.engine={engine_name}"
    spikes, grads = _paper_network_gradients([engine_set])
    assert spikes == 0.0, "the paper's init should leave the hidden layer silent on Randman"
    hidden_w, readout_w = grads
    assert hidden_w.abs().sum() > 0 and math.isfinite(float(hidden_w.abs().sum()))
    assert readout_w.abs().sum() == 0  # no hidden spike reaches the readout yet

    # the readout's initial membrane alone is enough
    _, grads = _paper_network_gradients([engine_set, "model.hidden.0.activity.lower_strength=0"])
    assert grads[0].abs().sum() > 0
    # neither: nothing at all
    _, grads = _paper_network_gradients([engine_set, "model.hidden.0.activity.lower_strength=0",
                                         "model.readout.initial_membrane=0"])
    assert all(float(g.abs().sum()) == 0.0 for g in grads)

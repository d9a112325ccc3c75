"""Both engines check their tensors at the entry and agree on what they accept.

Wrong widths, ranks, dtypes and devices are an :class:`InputError` with the same message
from the reference path and the fast engine (either kernel set); one step works on both;
a network on the meta device gives meta tensors (values and gradients) on both.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from spikegrad import engine, functional
from spikegrad.engine import cpp, torch_kernels
from spikegrad.functional import InputError, LIFDynamics, ReadoutDynamics
from spikegrad.model import SNN

DYNAMICS = LIFDynamics.from_time_constants(10.0, 5.0, 1.0)
READOUT = ReadoutDynamics.from_time_constants(20.0, 5.0, 1.0)


@pytest.fixture(params=["reference", "cpp", "torch"])
def implementation(request, monkeypatch):
    """The reference path, or the fast engine on one of its kernel sets."""
    if request.param == "cpp":
        if not cpp.available():
            pytest.skip("compiled kernels unavailable")
        monkeypatch.setattr(engine, "kernels_for", lambda tensor, choice="auto": cpp)
    elif request.param == "torch":
        monkeypatch.setattr(engine, "kernels_for", lambda tensor, choice="auto": torch_kernels)
    return request.param


def run_layer(implementation, inputs, weight, recurrent=None, readout=None):
    if implementation == "reference":
        spikes = functional.lif_layer(inputs, weight, DYNAMICS, recurrent)
        return functional.readout_layer(spikes, readout, READOUT) if readout is not None \
            else spikes
    if readout is not None:
        return engine.lif_readout(inputs, weight, DYNAMICS, readout, READOUT, recurrent)[1]
    return engine.lif_layer(inputs, weight, DYNAMICS, recurrent)


def sparse_inputs(width: int) -> torch.Tensor:
    x = torch.zeros(2, 10, width)
    x[:, 3, -1] = 1
    return x


W = torch.full((100, 20), 0.5)
EXPECTED = "inputs: expected [batch, time >= 1, 20] float32 on cpu, got "


@pytest.mark.parametrize("inputs, got", [
    (sparse_inputs(21), "[2, 10, 21] float32 on cpu"),
    (sparse_inputs(500), "[2, 10, 500] float32 on cpu"),
    (sparse_inputs(19), "[2, 10, 19] float32 on cpu"),
    (torch.zeros(2, 20), "[2, 20] float32 on cpu"),
    (torch.zeros(2, 3, 10, 20), "[2, 3, 10, 20] float32 on cpu"),
    (torch.zeros(2, 0, 20), "[2, 0, 20] float32 on cpu"),
    (torch.zeros(2, 10, 20, dtype=torch.int64), "[2, 10, 20] int64 on cpu"),
    (torch.zeros(2, 10, 20, dtype=torch.bool), "[2, 10, 20] bool on cpu"),
    (torch.zeros(2, 10, 20, dtype=torch.float64), "[2, 10, 20] float64 on cpu"),
    (torch.zeros(2, 10, 20, device="meta"), "[2, 10, 20] float32 on meta"),
    ([[0.0] * 20] * 10, "a list"),
])
@pytest.mark.parametrize("with_readout", [False, True])
def test_bad_inputs_same_message_on_every_engine(implementation, inputs, got, with_readout):
    readout = torch.ones(3, 100) if with_readout else None
    with pytest.raises(InputError) as error:
        run_layer(implementation, inputs, W, readout=readout)
    assert str(error.value) == EXPECTED + got


@pytest.mark.parametrize("recurrent, message", [
    (torch.ones(100, 99),
     "recurrent_weight: expected [100, 100] float32 on cpu, got [100, 99] float32 on cpu"),
    (torch.ones(100, 100, dtype=torch.float64),
     "recurrent_weight: expected [100, 100] float32 on cpu, got [100, 100] float64 on cpu"),
])
def test_bad_recurrent_weight_is_named(implementation, recurrent, message):
    with pytest.raises(InputError) as error:
        run_layer(implementation, torch.zeros(2, 10, 20), W, recurrent)
    assert str(error.value) == message


def test_readout_narrower_than_the_layer_is_named(implementation):
    spikes, readout = torch.zeros(2, 10, 100), torch.ones(3, 50)
    readout_layer = functional.readout_layer if implementation == "reference" \
        else engine.readout_layer
    with pytest.raises(InputError) as error:
        readout_layer(spikes, readout, READOUT)
    assert str(error.value) == ("inputs: expected [batch, time >= 1, 50] float32 on cpu, got "
                                "[2, 10, 100] float32 on cpu")
    if implementation != "reference":
        with pytest.raises(InputError) as error:
            engine.lif_readout(torch.zeros(2, 10, 20), W, DYNAMICS, readout, READOUT)
        assert str(error.value) == ("readout_weight: expected [out, 100] float32 on cpu, got "
                                    "[3, 50] float32 on cpu")


def test_sparse_input_wider_than_the_weight_is_refused_not_read_out_of_bounds():
    """The issue's example: it crashed the interpreter (a read far past the weight)."""
    code = ("import torch, spikegrad as sg\n"
            "x = torch.zeros(2, 10, 100000); x[:, 3, -1] = 1\n"
            "try:\n"
            "    sg.SNN.build(20, [100], 10, engine='fast')(x)\n"
            "except sg.functional.InputError as error:\n"
            "    print(error)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == EXPECTED + "[2, 10, 100000] float32 on cpu"


@pytest.mark.parametrize("engine_name", ["reference", "fast"])
def test_network_refuses_inputs_the_config_would_not_make(engine_name):
    net = SNN.build(20, [30], 4, engine=engine_name)
    with pytest.raises(InputError, match=r"expected \[batch, time >= 1, 20\]"):
        net(torch.zeros(3, 5, 21))


@pytest.mark.parametrize("steps", [1, 2])
def test_one_or_two_steps_work_and_agree(implementation, steps):
    g = torch.Generator().manual_seed(0)
    inputs = (torch.rand(4, steps, 20, generator=g) < 0.5).float()
    weight, readout = torch.randn(100, 20, generator=g) * 2, torch.randn(3, 100, generator=g)
    spikes = run_layer(implementation, inputs, weight)
    trace = run_layer(implementation, inputs, weight, readout=readout)
    assert spikes.shape == (4, steps, 100) and trace.shape == (4, steps, 3)
    reference = functional.lif_layer(inputs, weight, DYNAMICS)
    torch.testing.assert_close(spikes, reference)
    torch.testing.assert_close(trace, functional.readout_layer(reference, readout, READOUT))


@pytest.mark.parametrize("engine_name", ["reference", "fast"])
@pytest.mark.parametrize("record_spikes", [True, False])
def test_meta_device_gives_meta_tensors(engine_name, record_spikes):
    net = SNN.build(20, [30, 30], 10, engine=engine_name, recurrent=[False, True]).to("meta")
    inputs = torch.zeros(2, 10, 20, device="meta", requires_grad=True)
    out = net(inputs, record_spikes=record_spikes)
    outputs = [out.readout, *out.hidden_spikes, *out.spike_counts]
    assert all(t.device.type == "meta" for t in outputs)
    assert out.readout.shape == (2, 10, 10) and out.spike_counts[1].shape == (2, 30)
    (out.readout.sum() + out.spike_counts[0].sum()).backward()
    assert inputs.grad.device.type == "meta"
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in net.parameters())


def coo(indices, shape, coalesced=None):
    index = torch.tensor(indices).t()
    return torch.sparse_coo_tensor(index, torch.ones(index.shape[1]), shape,
                                   is_coalesced=coalesced, check_invariants=False)


@pytest.mark.parametrize("kernels", ["cpp", "torch"])
@pytest.mark.parametrize("entry", [(0, -1, 2), (3, 1, 0), (0, 12, 1), (1, 2, 5)])
def test_sparse_entries_outside_the_shape_are_refused(kernels, entry):
    """PyTorch leaves a COO tensor's indices unchecked: out of range, the compiled kernels
    wrote out of bounds (a crash, or a spike in another sample) and PyTorch's dropped it."""
    if kernels == "cpp" and not cpp.available():
        pytest.skip("compiled kernels unavailable")
    x = coo([(0, 1, 2), (1, 3, 4), entry], (3, 12, 5))
    with pytest.raises(InputError, match="inputs: "):
        engine.lif_layer(x, torch.full((4, 5), 30.0), DYNAMICS, kernels=kernels)


def test_sparse_tensor_marked_coalesced_out_of_order_is_refused():
    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    x = coo([(1, 3, 4), (0, 1, 2)], (3, 12, 5), coalesced=True)
    with pytest.raises(InputError, match="not in order"):
        engine.lif_layer(x, torch.full((4, 5), 30.0), DYNAMICS, kernels="cpp")
    good = coo([(1, 3, 4), (0, 1, 2)], (3, 12, 5))  # not marked: the engine coalesces it
    good = engine.lif_layer(good, torch.full((4, 5), 30.0), DYNAMICS, kernels="cpp")
    assert good.shape == (3, 12, 4)


def test_hybrid_sparse_input_is_refused_in_one_line():
    x = torch.zeros(2, 10, 5)
    x[0, 3, 1] = 1
    with pytest.raises(InputError, match="its 3 dimensions sparse"):
        engine.lif_layer(x.to_sparse(2), torch.ones(4, 5), DYNAMICS)


def test_the_engine_refuses_unknown_choices_and_decays():
    from spikegrad.errors import ConfigError

    x, w = torch.zeros(2, 10, 5), torch.ones(4, 5)
    with pytest.raises(ConfigError, match="kernels: expected one of auto, cpp, torch, got 'gpu'"):
        engine.lif_layer(x, w, DYNAMICS, kernels="gpu")
    with pytest.raises(ConfigError, match="recompute: expected True, False, 'auto' or None"):
        engine.lif_layer(x.requires_grad_(), w, DYNAMICS, recompute="sometimes")
    for beta in (float("nan"), 1.5, -0.1, "0.9"):
        with pytest.raises(InputError, match="dynamics.beta_mem: expected a decay in"):
            LIFDynamics(beta, 0.8)
    with pytest.raises(InputError, match="dynamics.beta_syn"):
        ReadoutDynamics(0.9, 2.0)
    with pytest.raises(ValueError, match="unknown readout reduction 'median'"):
        SNN.build(5, [4], 3, engine="fast")(torch.rand(2, 10, 5), reduction="median")


@pytest.mark.parametrize("kernels", ["cpp", "torch"])
def test_fast_readout_takes_an_empty_batch(kernels):
    if kernels == "cpp" and not cpp.available():
        pytest.skip("compiled kernels unavailable")
    x = torch.zeros(0, 10, 4, requires_grad=True)
    w = torch.ones(3, 4, requires_grad=True)
    y = engine.readout_layer(x, w, READOUT, kernels=kernels)
    y.sum().backward()
    assert y.shape == (0, 10, 3) and x.grad.shape == x.shape and w.grad.shape == w.shape


def test_a_layer_without_neurons_is_refused_alike(implementation):
    with pytest.raises(InputError, match="weight: expected a floating-point \\[out >= 1, in\\]"):
        run_layer(implementation, torch.zeros(2, 10, 5), torch.zeros(0, 5))


@pytest.mark.parametrize("engine_name", ["reference", "fast"])
def test_a_network_refuses_a_list_as_input(engine_name):
    net = SNN.build(5, [4], 3, engine=engine_name)
    with pytest.raises(InputError, match="inputs: expected \\[batch, time >= 1, 5\\]"):
        net([[0.0] * 5] * 10)

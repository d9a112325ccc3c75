"""The LIF and readout equations, checked against values and gradients derived by hand."""

import math

import pytest
import torch

from spikegrad.functional import (
    LIFDynamics,
    ReadoutDynamics,
    decay_factor,
    lif_layer,
    readout_layer,
)
from spikegrad.surrogates import Surrogate

BM, BS = math.exp(-1 / 10), math.exp(-1 / 5)
SURROGATE = Surrogate("superspike", 10.0)


def sigma(x: float) -> float:
    return 1.0 / (10.0 * abs(x) + 1.0) ** 2


def single_input_spike(steps: int = 4) -> torch.Tensor:
    x = torch.zeros(1, steps, 1, dtype=torch.float64)
    x[0, 0, 0] = 1.0
    return x


def test_decay_factor():
    assert decay_factor(10.0, 1.0) == pytest.approx(math.exp(-0.1))
    assert decay_factor(5.0, 0.5) == pytest.approx(math.exp(-0.1))


def test_membrane_trace_by_hand():
    w = torch.tensor([[2.0]], dtype=torch.float64)
    dyn = LIFDynamics(BM, BS, SURROGATE)
    spikes, membrane = lif_layer(single_input_spike(5), w, dyn, record_membrane=True)
    u = membrane[0, :, 0].tolist()
    # U[0] = U[1] = 0; I[1] = w; U[2] = (1-bm) w; I[2] = bs w; U[3] = bm U[2] + (1-bm) bs w
    expected = [0.0, 0.0, (1 - BM) * 2, BM * (1 - BM) * 2 + (1 - BM) * BS * 2]
    expected.append(BM * expected[3] + (1 - BM) * BS**2 * 2)
    assert u == pytest.approx(expected)
    assert spikes.sum() == 0


def test_gradient_without_spikes_by_hand():
    w = torch.tensor([[1.0]], dtype=torch.float64, requires_grad=True)
    spikes = lif_layer(single_input_spike(4), w, LIFDynamics(BM, BS, SURROGATE))
    spikes.sum().backward()
    u2 = (1 - BM) * 1.0
    u3 = (1 - BM) * (BM + BS) * 1.0
    expected = sigma(-1.0) * 0 + sigma(u2 - 1) * (1 - BM) + sigma(u3 - 1) * (1 - BM) * (BM + BS)
    assert float(w.grad) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("detach_reset", [True, False])
def test_gradient_through_reset_by_hand(detach_reset):
    w0 = 12.0  # U[2] = (1 - bm) * 12 > 1: a spike at step 2, then U[3] = 0
    w = torch.tensor([[w0]], dtype=torch.float64, requires_grad=True)
    dyn = LIFDynamics(BM, BS, SURROGATE, detach_reset=detach_reset)
    spikes = lif_layer(single_input_spike(4), w, dyn)
    assert spikes[0, :, 0].tolist() == [0.0, 0.0, 1.0, 0.0]
    spikes.sum().backward()
    u2 = (1 - BM) * w0
    a = (1 - BM) * (BM + BS) * w0  # U[3] before the reset
    expected = sigma(u2 - 1) * (1 - BM)
    if not detach_reset:  # dU3/dw = -a dS2/dw
        expected += sigma(0.0 - 1) * (-a * sigma(u2 - 1) * (1 - BM))
    assert float(w.grad) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("recurrent_gradient", [True, False])
def test_recurrent_gradient_by_hand(recurrent_gradient):
    # two neurons: neuron 0 gets a strong input spike at n = 0 and fires at n = 2;
    # neuron 1 only gets recurrent input v from neuron 0. Loss = U-driven spike count of
    # neuron 1 at n = 4 (through its surrogate).
    w = torch.tensor([[12.0], [0.0]], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    dyn = LIFDynamics(BM, BS, SURROGATE, recurrent_gradient=recurrent_gradient)
    spikes, membrane = lif_layer(single_input_spike(5), w, dyn, v, record_membrane=True)
    assert spikes[0, :, 0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    spikes[0, 4, 1].backward()
    # I1[3] = v S0[2]; U1[4] = (1 - bm) v S0[2]
    u14 = (1 - BM) * 0.5
    assert float(membrane[0, 4, 1].detach()) == pytest.approx(u14)
    assert float(v.grad[1, 0]) == pytest.approx(sigma(u14 - 1) * (1 - BM), rel=1e-12)
    u02 = (1 - BM) * 12.0
    via_recurrence = sigma(u14 - 1) * (1 - BM) * 0.5 * sigma(u02 - 1) * (1 - BM)
    expected_w = via_recurrence if recurrent_gradient else 0.0
    assert float(w.grad[0, 0]) == pytest.approx(expected_w, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("u0", [0.0, -1e-3])
def test_readout_by_hand(u0):
    w = torch.tensor([[3.0]], dtype=torch.float64, requires_grad=True)
    bo = math.exp(-1 / 20)
    trace = readout_layer(single_input_spike(4), w, ReadoutDynamics(bo, BS, initial_membrane=u0))
    # U_out[1] = bo u0, U_out[2] = bo^2 u0 + (1-bo) w, U_out[3] = bo U[2] + (1-bo) bs w, ...
    u2 = bo**2 * u0 + (1 - bo) * 3
    u3 = bo * u2 + (1 - bo) * BS * 3
    u4 = bo * u3 + (1 - bo) * BS**2 * 3
    assert trace[0, :, 0].tolist() == pytest.approx([bo * u0, u2, u3, u4], rel=1e-12)
    trace[0, -1, 0].backward()
    assert float(w.grad) == pytest.approx((u4 - bo**4 * u0) / 3)


def test_membrane_never_exceeds_reset_after_spike():
    torch.manual_seed(0)
    x = (torch.rand(8, 50, 30) < 0.2).float()
    w = torch.randn(40, 30)
    spikes, membrane = lif_layer(x, w, LIFDynamics(BM, BS, SURROGATE), record_membrane=True)
    after_spike = membrane[:, 1:][spikes[:, :-1] > 0]
    assert torch.all(after_spike == 0)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}

import torch

from spikegrad.diagnostics import membrane_gradient_norms
from spikegrad.model import SNN
from spikegrad.surrogates import Surrogate


def _batch():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(6, 30, 12, generator=g) < 0.2).float(), torch.tensor([0, 1, 2, 0, 1, 2])


def test_gradient_norms_per_layer_and_step():
    inputs, labels = _batch()
    net = SNN.build(12, [20, 10], 3, init="gaussian", init_scale=7.0,
                    generator=torch.Generator().manual_seed(1))
    norms = membrane_gradient_norms(net, inputs, labels)
    assert [n.shape for n in norms] == [(30,), (30,)]
    assert float(norms[0].sum()) > 0 and float(norms[1].sum()) > 0
    assert all(p.grad is None for p in net.parameters())  # parameters untouched


def test_true_gradient_gives_zero_hidden_gradient():
    inputs, labels = _batch()
    net = SNN.build(12, [20], 3, surrogate=Surrogate("true"), init="gaussian", init_scale=7.0)
    assert float(membrane_gradient_norms(net, inputs, labels)[0].sum()) == 0.0


def test_larger_scale_grows_gradients_through_the_reset():
    inputs, labels = _batch()
    sums = []
    for scale in (1.0, 50.0):
        net = SNN.build(12, [20, 20], 3, surrogate=Surrogate("superspike", 10.0, scale),
                        detach_reset=False, init="gaussian", init_scale=7.0,
                        generator=torch.Generator().manual_seed(2))
        sums.append(float(membrane_gradient_norms(net, inputs, labels)[0].sum()))
    assert sums[1] > 10 * sums[0]

"""Gradient diagnostics: how large dL/dU[n] is at each time step of each hidden layer.

Surrogates with a large scale (peak height) can make gradients explode or vanish
through BPTT when they flow through the reset or the recurrent connections; the
norm of dL/dU[n] over time shows it directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spikegrad import functional
from spikegrad.losses import classification_loss, reduce_readout
from spikegrad.model import SNN


def membrane_gradient_norms(
    model: SNN, inputs: Tensor, labels: Tensor, reduction: str = "max"
) -> list[Tensor]:
    """Per hidden layer, ‖dL/dU[n]‖ (Frobenius over batch and neurons) for n = 0..T-1.

    Runs the reference path (whatever ``model.engine``) so that every U[n] is a node
    of the autograd graph; the model's parameters get no gradient.
    """
    steps_per_layer: list[list[Tensor]] = []
    x = inputs
    for layer in model.hidden:
        steps: list[Tensor] = []
        x = functional.lif_layer(x, layer.weight, layer.neuron_dynamics(),
                                 layer.recurrent_weight, membrane_steps=steps)
        for membrane in steps:
            if membrane.requires_grad:
                membrane.retain_grad()
        steps_per_layer.append(steps)
    readout = functional.readout_layer(x, model.readout.weight, model.readout.dynamics)
    loss = classification_loss(reduce_readout(readout, reduction), labels)
    parameters = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in parameters]
    loss.backward()
    for p, grad in zip(parameters, saved, strict=True):
        p.grad = grad
    return [
        torch.stack([
            m.grad.norm() if m.grad is not None else m.new_zeros(()) for m in steps
        ]).detach()
        for steps in steps_per_layer
    ]

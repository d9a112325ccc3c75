"""Readout reductions, the classification loss and the activity regularisers.

Readout: the membrane trace U_out [B, T, K] is reduced over time to one logit per
class, then passed to softmax cross-entropy:

- ``max``  : max_n U_out[n]      (the paper's default)
- ``sum``  : Σ_n U_out[n]
- ``mean`` : (1/T) Σ_n U_out[n]
- ``last`` : U_out[T]

Activity regularisation (protocol section 5), with ζ_i the spike count of hidden
neuron i on one sample and N neurons in the layer, averaged over the batch:

- upper bound on the population rate: g_upper = λ_upper ([ (1/N) Σ_i ζ_i - ν_upper ]_+)^L
- lower bound per neuron:             g_lower = (λ_lower / N) Σ_i ([ν_lower - ζ_i]_+)^2
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from spikegrad.schema import ReadoutReduction

READOUT_REDUCTIONS: tuple[str, ...] = get_args(ReadoutReduction)


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless ``reduction`` is one of :data:`READOUT_REDUCTIONS`."""
    if reduction not in READOUT_REDUCTIONS:
        raise ValueError(f"unknown readout reduction {reduction!r} (known: "
                         f"{READOUT_REDUCTIONS})")


def reduce_readout(membrane: Tensor, reduction: ReadoutReduction) -> Tensor:
    """Reduce a readout trace [B, T, K] over time to logits [B, K]."""
    check_reduction(reduction)
    if reduction == "max":
        return membrane.max(dim=1).values
    if reduction == "sum":
        return membrane.sum(dim=1)
    if reduction == "mean":
        return membrane.mean(dim=1)
    return membrane[:, -1]  # "last"


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy, averaged over the batch."""
    return F.cross_entropy(logits, labels)


def upper_rate_penalty(
    spike_counts: Tensor, strength: float, rate_threshold: float, exponent: float = 2.0
) -> Tensor:
    """λ ([(1/N) Σ_i ζ_i - ν]_+)^L averaged over the batch; ``spike_counts`` is [B, N]."""
    population_mean = spike_counts.mean(dim=1)
    return strength * torch.relu(population_mean - rate_threshold).pow(exponent).mean()


def lower_rate_penalty(spike_counts: Tensor, strength: float, rate_threshold: float) -> Tensor:
    """(λ / N) Σ_i ([ν - ζ_i]_+)^2 averaged over the batch; ``spike_counts`` is [B, N]."""
    per_sample = torch.relu(rate_threshold - spike_counts).pow(2).mean(dim=1)
    return strength * per_sample.mean()

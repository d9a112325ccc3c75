"""The neuron and synapse equations as plain functions (the reference path).

Discrete time with step ``dt``; all layers start at rest (U[0] = I[0] = 0).
For a hidden leaky integrate-and-fire (LIF) layer with current-based synapses::

    S[n]   = Θ(U[n] - 1)                                   threshold 1, Θ(0) = 0
    U[n+1] = (β_mem U[n] + (1 - β_mem) I[n]) (1 - S[n])    multiplicative reset to 0
    I[n+1] = β_syn I[n] + W S_in[n] (+ V S[n] if recurrent)
    β      = exp(-dt / τ)

β_mem and β_syn are one number for the whole layer, or one per neuron ([N] tensors:
heterogeneous time constants, Perez-Nieves et al. 2021, Nat. Commun. 12:5791), which may be
trained: the gradient reaches τ through β = exp(-dt / τ) (:func:`decay_factor`).

The layer's output is the spike train S[0..T-1]. In the backward pass Θ' is
replaced by a surrogate (``spikegrad.surrogates``); the reset factor (1 - S[n])
is detached from the graph unless ``detach_reset`` is False, and the recurrent
term V S[n] carries gradient unless ``recurrent_gradient`` is False.

The readout is a leaky, non-spiking unit with the same current dynamics::

    U_out[n+1] = β_out U_out[n] + (1 - β_out) I_out[n]
    I_out[n+1] = β_syn I_out[n] + W_out S[n]

starting from U_out[0] = u_0 (``initial_membrane``, default -1e-3 as in the lab's stork
readout) and I_out[0] = 0; its recorded trace is U_out[1..T] (the state after each of the T
steps). The initial membrane matters: with a silent hidden layer and u_0 = 0 every U_out[n]
is 0, max over time is a tie resolved at step 1, whose value depends on no weight, and every
gradient is exactly zero; with u_0 < 0 the trace rises towards 0 and the maximum is at the
last step, which depends on the hidden spikes through W_out and the surrogate.

Tensors are batch first: inputs ``[batch, time, features]``; weights follow
``torch.nn.Linear``: ``[out_features, in_features]``. Both engines check their tensors at
the entry (:func:`check_layer_tensors`): inputs of at least one step, as wide as the weight,
of the weight's floating-point dtype and on its device; anything else is an
:class:`InputError` that names what was expected and what was given.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from spikegrad.errors import SpikegradError
from spikegrad.schema import READOUT_INITIAL_MEMBRANE
from spikegrad.surrogates import Surrogate, spike

THRESHOLD = 1.0


class InputError(SpikegradError, ValueError):
    """Tensors a layer cannot take; the message names what was expected and what was given."""


def describe_tensor(t: object) -> str:
    """``[2, 10, 20] float32 on cpu`` (or the type of something that is no tensor)."""
    if not isinstance(t, Tensor):
        return f"a {type(t).__name__}"
    shape = ", ".join(str(s) for s in t.shape)
    return f"[{shape}] {str(t.dtype).removeprefix('torch.')} on {t.device}"


def check_layer_tensors(
    inputs: Tensor, weight: Tensor, recurrent_weight: Tensor | None = None,
    readout_weight: Tensor | None = None,
) -> None:
    """Raise :class:`InputError` unless ``weight`` is a floating-point [N, C] matrix and
    ``inputs`` is [batch, time >= 1, C] of the same dtype on the same device (and the
    recurrent weight is [N, N], the readout weight [K, N], both alike)."""
    if (not isinstance(weight, Tensor) or weight.ndim != 2 or not weight.is_floating_point()
            or weight.shape[0] == 0):
        raise InputError(f"weight: expected a floating-point [out >= 1, in] matrix, got "
                         f"{describe_tensor(weight)}")
    n, c = weight.shape
    kind = f"{str(weight.dtype).removeprefix('torch.')} on {weight.device}"
    if not (isinstance(inputs, Tensor) and inputs.ndim == 3 and inputs.shape[1] >= 1
            and inputs.shape[2] == c and inputs.dtype == weight.dtype
            and inputs.device == weight.device):
        raise InputError(f"inputs: expected [batch, time >= 1, {c}] {kind}, got "
                         f"{describe_tensor(inputs)}")
    for name, matrix, rows in (("recurrent_weight", recurrent_weight, n),
                               ("readout_weight", readout_weight, None)):
        if matrix is None:
            continue
        if not (isinstance(matrix, Tensor) and matrix.ndim == 2 and matrix.shape[1] == n
                and (rows is None or matrix.shape[0] == rows) and matrix.dtype == weight.dtype
                and matrix.device == weight.device):
            expected = f"[{n if rows is not None else 'out'}, {n}] {kind}"
            raise InputError(f"{name}: expected {expected}, got {describe_tensor(matrix)}")


def decay_factor(tau_ms: float | Tensor, dt_ms: float) -> float | Tensor:
    """β = exp(-dt / τ): the per-step decay of a leaky variable with time constant τ (a
    number, or a tensor of one τ per neuron, through which gradients reach τ)."""
    if isinstance(tau_ms, Tensor):
        return torch.exp(-dt_ms / tau_ms)
    return math.exp(-dt_ms / tau_ms)


Decay = float | Tensor
"""β of a layer: one number, or one per neuron (an [N] tensor)."""


@dataclass(frozen=True)
class LIFDynamics:
    """Everything, besides weights, that defines how a hidden LIF layer evolves. ``beta_mem``
    and ``beta_syn`` are numbers, or [N] tensors (one per neuron; see
    :func:`per_neuron_decays`)."""

    beta_mem: Decay
    beta_syn: Decay
    surrogate: Surrogate = field(default_factory=Surrogate)
    detach_reset: bool = True
    recurrent_gradient: bool = True

    @classmethod
    def from_time_constants(
        cls, tau_mem_ms: float | Tensor, tau_syn_ms: float | Tensor, dt_ms: float, **kwargs
    ) -> LIFDynamics:
        return cls(decay_factor(tau_mem_ms, dt_ms), decay_factor(tau_syn_ms, dt_ms), **kwargs)

    def with_time_constants(self, tau_mem_ms: float | Tensor, tau_syn_ms: float | Tensor,
                            dt_ms: float) -> LIFDynamics:
        """The same dynamics with the decays of these time constants (per neuron: [N]
        tensors, through which gradients reach τ)."""
        return replace(self, beta_mem=decay_factor(tau_mem_ms, dt_ms),
                       beta_syn=decay_factor(tau_syn_ms, dt_ms))

    def __post_init__(self) -> None:
        _check_decays(self)

    @property
    def per_neuron(self) -> bool:
        """Whether the decays are per neuron (tensors) rather than one for the layer."""
        return isinstance(self.beta_mem, Tensor) or isinstance(self.beta_syn, Tensor)


def per_neuron_decays(dynamics: LIFDynamics, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(β_mem, β_syn) of a layer of ``n`` neurons as [n] tensors of ``like``'s dtype and
    device (a number becomes n equal entries); an :class:`InputError` for tensors of another
    shape, dtype or device."""
    decays = []
    for name in ("beta_mem", "beta_syn"):
        beta = getattr(dynamics, name)
        if not isinstance(beta, Tensor):
            decays.append(like.new_full((n,), beta))
            continue
        if beta.shape != (n,) or beta.dtype != like.dtype or beta.device != like.device:
            kind = f"{str(like.dtype).removeprefix('torch.')} on {like.device}"
            raise InputError(f"dynamics.{name}: expected a number or [{n}] {kind}, got "
                             f"{describe_tensor(beta)}")
        decays.append(beta)
    return decays[0], decays[1]


def _check_decays(dynamics) -> None:
    """A decay (``beta_mem``, ``beta_syn``) that is a number must be a finite one in [0, 1]
    (one that is a tensor is checked where it is used, :func:`per_neuron_decays`)."""
    for name in ("beta_mem", "beta_syn"):
        beta = getattr(dynamics, name)
        if not isinstance(beta, Tensor) and not (isinstance(beta, numbers.Real)
                                                 and 0.0 <= beta <= 1.0):
            raise InputError(f"dynamics.{name}: expected a decay in [0, 1], got {beta!r}")


@dataclass(frozen=True)
class ReadoutDynamics:
    beta_mem: float
    beta_syn: float
    initial_membrane: float = READOUT_INITIAL_MEMBRANE

    def __post_init__(self) -> None:
        _check_decays(self)
        if not math.isfinite(self.initial_membrane):
            raise InputError(f"dynamics.initial_membrane: expected a finite number, got "
                             f"{self.initial_membrane!r}")

    @classmethod
    def from_time_constants(cls, tau_mem_ms: float, tau_syn_ms: float, dt_ms: float,
                            initial_membrane: float = READOUT_INITIAL_MEMBRANE):
        return cls(decay_factor(tau_mem_ms, dt_ms), decay_factor(tau_syn_ms, dt_ms),
                   initial_membrane)


def leaky_membrane(membrane: Tensor | float, current: Tensor | float, beta_mem) -> Tensor:
    """The membrane one step on, before a reset: β_m U[n] + (1 - β_m) I[n] (LIF and readout)."""
    return beta_mem * membrane + (1.0 - beta_mem) * current


def synaptic_current(current: Tensor | float, synaptic_input: Tensor | float, beta_syn) -> Tensor:
    """The current one step on: β_s I[n] + x[n] (the recurrent input is added after)."""
    return beta_syn * current + synaptic_input


def lif_step(
    feedforward_input: Tensor,
    membrane: Tensor,
    current: Tensor,
    dynamics: LIFDynamics,
    recurrent_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One time step n of a LIF layer.

    Takes the feed-forward synaptic input W S_in[n], U[n] and I[n]; returns
    (S[n], U[n+1], I[n+1]).
    """
    spikes = spike(membrane - THRESHOLD, dynamics.surrogate)
    reset = spikes.detach() if dynamics.detach_reset else spikes
    next_membrane = leaky_membrane(membrane, current, dynamics.beta_mem) * (1.0 - reset)
    next_current = synaptic_current(current, feedforward_input, dynamics.beta_syn)
    if recurrent_weight is not None:
        recurrent_spikes = spikes if dynamics.recurrent_gradient else spikes.detach()
        next_current = next_current + recurrent_spikes @ recurrent_weight.t()
    return spikes, next_membrane, next_current


def lif_layer(
    inputs: Tensor,
    weight: Tensor,
    dynamics: LIFDynamics,
    recurrent_weight: Tensor | None = None,
    record_membrane: bool = False,
    membrane_steps: list[Tensor] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run a LIF layer over all T steps of ``inputs`` [B, T, C_in]; returns spikes [B, T, N].

    The feed-forward projection of all steps is one matrix product; the time loop
    then calls :func:`lif_step`. With ``record_membrane`` also returns U[0..T-1] as
    [B, T, N]; a ``membrane_steps`` list receives the graph's own U[n] tensors (for
    gradient diagnostics: ``retain_grad()`` on them gives dL/dU[n]).
    """
    check_layer_tensors(inputs, weight, recurrent_weight)
    if dynamics.per_neuron:
        per_neuron_decays(dynamics, weight.shape[0], weight)  # checked, as by the fast engine
    batch, steps, _ = inputs.shape
    feedforward = inputs @ weight.t()
    membrane = feedforward.new_zeros(batch, weight.shape[0])
    current = feedforward.new_zeros(batch, weight.shape[0])
    spikes, membranes = [], []
    for n in range(steps):
        membranes.append(membrane)
        s, membrane, current = lif_step(
            feedforward[:, n], membrane, current, dynamics, recurrent_weight
        )
        spikes.append(s)
    if membrane_steps is not None:
        membrane_steps.extend(membranes)
    spike_train = torch.stack(spikes, dim=1)
    if record_membrane:
        return spike_train, torch.stack(membranes, dim=1)
    return spike_train


def readout_step(
    feedforward_input: Tensor, membrane: Tensor, current: Tensor, dynamics: ReadoutDynamics
) -> tuple[Tensor, Tensor]:
    """One step of the leaky readout: returns (U_out[n+1], I_out[n+1])."""
    next_membrane = leaky_membrane(membrane, current, dynamics.beta_mem)
    next_current = synaptic_current(current, feedforward_input, dynamics.beta_syn)
    return next_membrane, next_current


def readout_layer(inputs: Tensor, weight: Tensor, dynamics: ReadoutDynamics) -> Tensor:
    """Run the readout over all T steps; returns the membrane trace U_out[1..T] as [B, T, K]."""
    check_layer_tensors(inputs, weight)
    batch, steps, _ = inputs.shape
    feedforward = inputs @ weight.t()
    membrane = feedforward.new_full((batch, weight.shape[0]), dynamics.initial_membrane)
    current = feedforward.new_zeros(batch, weight.shape[0])
    trace = []
    for n in range(steps):
        membrane, current = readout_step(feedforward[:, n], membrane, current, dynamics)
        trace.append(membrane)
    return torch.stack(trace, dim=1)


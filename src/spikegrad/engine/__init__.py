"""The fast engine: a LIF layer or a readout over all T steps as one autograd operation.

Same semantics as :mod:`spikegrad.functional` (the reference path and the oracle of the
tests), but the forward pass runs the time loop without building an autograd graph and the
backward pass runs the hand-derived BPTT recursion. Forward, from U[0] = I[0] = 0::

    x[n]   = W S_in[n]                                     all steps in one (sparse) product
    S[n]   = Θ(U[n] - 1)
    P[n]   = β_m U[n] + (1 - β_m) I[n],   U[n+1] = P[n] (1 - S[n])
    I[n+1] = β_s I[n] + x[n] + V S[n]                      V S[n] only visits spiking neurons

Backward, with the adjoints dU[n] = dL/dU[n], dI[n] = dL/dI[n], zero at n = T, and the
surrogate σ'[n] = σ'(U[n] - 1) evaluated for all steps at once::

    g[n]   = dL/dS[n] + dI[n+1] V  (gradient through the recurrence, unless disabled)
                      - dU[n+1] P[n]  (differentiable reset only)
    a[n]   = dU[n+1] (1 - S[n])
    dU[n]  = β_m a[n] + σ'[n] g[n]
    dI[n]  = (1 - β_m) a[n] + β_s dI[n+1]
    dx[n]  = dI[n+1],   dW = Σ_n dx[n]^T S_in[n],   dV = Σ_n dx[n]^T S[n],   dS_in = dx W

The weight gradients only visit the non-zero entries of S_in and S; the compiled kernels
project the input inside the forward loop and sum the weight gradients inside the backward
loop, so neither x nor dx is ever stored for sparse inputs. The readout is the linear
filter U[n+1] = β_m U[n] + (1 - β_m) I[n], I[n+1] = β_s I[n] + x[n] from rest, whose adjoint
runs the same filter backwards in time; the decay of its initial membrane
(:func:`spikegrad.functional.initial_membrane_trace`) is added to that.

Only U (and P for a differentiable reset) are saved besides the spikes; with ``recompute``
(or ``SPIKEGRAD_RECOMPUTE=1``) not even those: the backward pass re-runs the forward loop.
The layer's results (S, and U and P kept for the backward pass) are [B, T, N] tensors
stored time-major (``t.transpose(0, 1)`` is contiguous), so that each step of both loops
reads and writes contiguous memory; everything else accepts any layout.
On CPU the loops run in compiled kernels (:mod:`spikegrad.engine.cpp`); elsewhere, or when
no compiler is available, in PyTorch (:mod:`spikegrad.engine.torch_kernels`).
"""

from __future__ import annotations

import os
from types import ModuleType

import torch
from torch import Tensor

from spikegrad.engine import cpp, torch_kernels
from spikegrad.functional import LIFDynamics, ReadoutDynamics, initial_membrane_trace

__all__ = ["lif_layer", "readout_layer", "kernels_for", "MAX_SPARSE_DENSITY"]

MAX_SPARSE_DENSITY = 0.1
"""Inputs with at most this fraction of non-zeros are multiplied as sparse matrices."""


def kernels_for(tensor: Tensor) -> ModuleType:
    """The compiled kernels for float32/float64 CPU tensors when available, else PyTorch's."""
    if tensor.device.type == "cpu" and tensor.dtype in cpp.DTYPES and cpp.available():
        return cpp
    return torch_kernels


def _sparse_form(kernels: ModuleType, inputs: Tensor, time_major: bool = False):
    """The CSR form of ``inputs`` [B, T, C] as [B*T, C], or None when too dense (or when the
    kernels multiply densely). Its rows are b T + n (step n of batch entry b), or with
    ``time_major`` n B + b, the order in which the time loops visit them.

    Spikes made by this engine carry both (as long as they are not modified); other inputs
    are scanned for it.
    """
    version, *forms = getattr(inputs, "_spikegrad_sparse", (None, None, None))
    if version == inputs._version:
        return forms[1 if time_major else 0]
    flat = inputs.reshape(-1, inputs.shape[-1]).contiguous()
    return kernels.to_sparse(flat, MAX_SPARSE_DENSITY, inputs.shape[0] if time_major else 0)


def _project(kernels: ModuleType, inputs: Tensor, weight: Tensor):
    """x = inputs W^T [B, T, N] for all steps at once, and the sparse form of the inputs."""
    sparse = _sparse_form(kernels, inputs)
    if sparse is None:
        return _matmul(inputs, weight.t()), None
    x = kernels.sparse_mm(sparse, weight.t())
    return x.view(*inputs.shape[:-1], weight.shape[0]), sparse


def _is_time_major(t: Tensor) -> bool:
    return t.transpose(0, 1).is_contiguous()


def _time_major(t: Tensor) -> Tensor:
    """``t`` [B, T, N] stored time-major (a copy only when it is not already)."""
    return t if _is_time_major(t) else t.transpose(0, 1).contiguous().transpose(0, 1)


def _matmul(a: Tensor, matrix: Tensor) -> Tensor:
    """a [B, T, K] @ matrix [K, M], in the layout of ``a`` (time-major stays time-major)."""
    if _is_time_major(a) and not a.is_contiguous():
        return (a.transpose(0, 1) @ matrix).transpose(0, 1)
    return a @ matrix


def _matmul_time_major(a: Tensor, matrix: Tensor) -> Tensor:
    """a [B, T, K] @ matrix [K, M], stored time-major whatever the layout of ``a``."""
    return (a.transpose(0, 1) @ matrix).transpose(0, 1)


def _weight_grad(kernels: ModuleType, dx: Tensor, inputs: Tensor, sparse) -> Tensor:
    """Σ over batch and steps of dx[b, n]^T inputs[b, n] ([N, C]) for dx [B, T, N] and
    inputs [B, T, C] in any layout; only the non-zeros of the inputs when ``sparse``."""
    if sparse is not None:
        return kernels.sparse_tmm(sparse, dx.reshape(-1, dx.shape[-1]), inputs.shape[-1]).t()
    dx_tm, in_tm = _time_major(dx).transpose(0, 1), _time_major(inputs).transpose(0, 1)
    return dx_tm.reshape(-1, dx.shape[-1]).t() @ in_tm.reshape(-1, inputs.shape[-1])


class _LIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, weight, recurrent_weight, dynamics: LIFDynamics, recompute: bool):
        kernels = kernels_for(inputs)
        ctx.dynamics, ctx.kernels, ctx.recompute = dynamics, kernels, recompute
        ctx.sparse_tm = _sparse_form(kernels, inputs, time_major=True)
        s, u, p, sparse_s, ctx.sparse_s_tm = _LIF.run_forward(ctx, inputs, weight,
                                                              recurrent_weight)
        ctx.state = None if recompute else (u, p)
        ctx.save_for_backward(inputs, weight, recurrent_weight, s)
        if sparse_s is not None:
            s._spikegrad_sparse = (s._version, sparse_s, ctx.sparse_s_tm)
        return s

    @staticmethod
    def run_forward(ctx, inputs, weight, recurrent_weight):
        """The forward loop: projected in the kernels from the sparse form, if there is one."""
        batch, steps, _ = inputs.shape
        sparse = ctx.sparse_tm
        x = _matmul_time_major(inputs, weight.detach().t()) if sparse is None else None
        d = ctx.dynamics
        return ctx.kernels.lif_forward(x, sparse, weight, recurrent_weight, d.beta_mem,
                                       d.beta_syn, not d.detach_reset, batch, steps)

    @staticmethod
    def backward(ctx, grad_s):
        inputs, weight, v, s = ctx.saved_tensors
        d, kernels = ctx.dynamics, ctx.kernels
        if ctx.recompute:
            _, u, p, _, _ = _LIF.run_forward(ctx, inputs, weight, v)
        else:
            u, p = ctx.state
            ctx.state = None
        grad_s = _time_major(grad_s)
        want_w = ctx.needs_input_grad[1]
        want_v = v is not None and ctx.needs_input_grad[2]
        sparse_w = ctx.sparse_tm if want_w else None
        sparse_v = ctx.sparse_s_tm if want_v else None
        want_dx = (ctx.needs_input_grad[0] or (want_w and sparse_w is None)
                   or (want_v and sparse_v is None))
        through_recurrence = v if (v is not None and d.recurrent_gradient) else None
        dx, grad_w, grad_v = kernels.lif_backward(
            grad_s, s, u, p, through_recurrence, d.beta_mem, d.beta_syn, d.surrogate,
            kernels.last_active_step(grad_s), sparse_w, sparse_v, inputs.shape[-1], want_dx,
        )
        del u, p
        grad_in = _matmul_time_major(dx, weight) if ctx.needs_input_grad[0] else None
        if want_w and grad_w is None:  # no sparse form: the kernels left it to a dense product
            grad_w = _weight_grad(kernels, dx, inputs, None)
        if want_v and grad_v is None:
            grad_v = _weight_grad(kernels, dx, s, None)
        return grad_in, grad_w if want_w else None, grad_v if want_v else None, None, None


class _Readout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, weight, dynamics: ReadoutDynamics):
        kernels = kernels_for(inputs)
        x, sparse = _project(kernels, inputs, weight)
        ctx.dynamics, ctx.kernels, ctx.sparse = dynamics, kernels, sparse
        ctx.save_for_backward(inputs, weight)
        return kernels.leaky_filter(x, dynamics.beta_mem, dynamics.beta_syn)

    @staticmethod
    def backward(ctx, grad_y):
        inputs, weight = ctx.saved_tensors
        d, kernels = ctx.dynamics, ctx.kernels
        dx = kernels.leaky_filter_backward(grad_y, d.beta_mem, d.beta_syn)
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:  # in the layout of the inputs (time-major spikes stay so)
            grad_in = _matmul(_time_major(dx) if _is_time_major(inputs) else dx, weight)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(kernels, dx, inputs, ctx.sparse)
        return grad_in, grad_w, None


def lif_layer(
    inputs: Tensor,
    weight: Tensor,
    dynamics: LIFDynamics,
    recurrent_weight: Tensor | None = None,
    recompute: bool | None = None,
) -> Tensor:
    """Spikes [B, T, N] of a LIF layer driven by ``inputs`` [B, T, C_in] (spikes or current).

    Same values and gradients as :func:`spikegrad.functional.lif_layer`. ``recompute``
    trades a second forward loop in the backward pass for not keeping U between the two
    (default: the environment variable ``SPIKEGRAD_RECOMPUTE``).
    """
    if recompute is None:
        recompute = os.environ.get("SPIKEGRAD_RECOMPUTE", "0") not in ("", "0")
    return _LIF.apply(inputs, weight, recurrent_weight, dynamics, recompute)


def readout_layer(inputs: Tensor, weight: Tensor, dynamics: ReadoutDynamics) -> Tensor:
    """Membrane trace U_out[1..T] [B, T, K] of the leaky readout (as the reference path)."""
    trace = _Readout.apply(inputs, weight, dynamics)
    if dynamics.initial_membrane == 0:
        return trace
    return trace + initial_membrane_trace(dynamics, inputs.shape[1], trace)

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

The weight gradients are one product over all steps that only visits the non-zero entries
of S_in and S. The readout is the linear filter U[n+1] = β_m U[n] + (1 - β_m) I[n],
I[n+1] = β_s I[n] + x[n], whose adjoint runs the same filter backwards in time.

Only U (and P for a differentiable reset) are saved besides the spikes; with ``recompute``
(or ``SPIKEGRAD_RECOMPUTE=1``) not even those: the backward pass re-runs the forward loop.
On CPU the loops run in compiled kernels (:mod:`spikegrad.engine.cpp`); elsewhere, or when
no compiler is available, in PyTorch (:mod:`spikegrad.engine.torch_kernels`).
"""

from __future__ import annotations

import os
from types import ModuleType

import torch
from torch import Tensor

from spikegrad.engine import cpp, torch_kernels
from spikegrad.functional import LIFDynamics, ReadoutDynamics

__all__ = ["lif_layer", "readout_layer", "kernels_for", "MAX_SPARSE_DENSITY"]

MAX_SPARSE_DENSITY = 0.1
"""Inputs with at most this fraction of non-zeros are multiplied as sparse matrices."""


def kernels_for(tensor: Tensor) -> ModuleType:
    """The compiled kernels for float32/float64 CPU tensors when available, else PyTorch's."""
    if tensor.device.type == "cpu" and tensor.dtype in cpp.DTYPES and cpp.available():
        return cpp
    return torch_kernels


def _project(kernels: ModuleType, inputs: Tensor, weight: Tensor):
    """x = inputs W^T for all steps at once; also returns the sparse form of the inputs.

    Spikes made by this engine carry their sparse form (as long as they are not modified);
    other inputs are scanned for it, and multiplied densely when too dense.
    """
    flat = inputs.reshape(-1, inputs.shape[-1]).contiguous()
    version, sparse = getattr(inputs, "_spikegrad_sparse", (None, None))
    if version != inputs._version:
        sparse = kernels.to_sparse(flat, MAX_SPARSE_DENSITY)
    x = flat @ weight.t() if sparse is None else kernels.sparse_mm(sparse, weight.t())
    return x.view(*inputs.shape[:-1], weight.shape[0]), sparse


def _weight_grad(kernels: ModuleType, dx: Tensor, inputs: Tensor, sparse) -> Tensor:
    """Σ over batch and steps of dx^T inputs, with dx [B*T, N] and inputs [B*T, C]."""
    if sparse is None:
        return dx.t() @ inputs
    return kernels.sparse_tmm(sparse, dx, inputs.shape[-1]).t()


class _LIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, weight, recurrent_weight, dynamics: LIFDynamics, recompute: bool):
        kernels = kernels_for(inputs)
        x, sparse = _project(kernels, inputs, weight)
        keep_p = not dynamics.detach_reset
        s, u, p, sparse_s = kernels.lif_forward(
            x, recurrent_weight, dynamics.beta_mem, dynamics.beta_syn, keep_p
        )
        del x
        ctx.dynamics, ctx.kernels, ctx.recompute = dynamics, kernels, recompute
        ctx.sparse, ctx.sparse_s = sparse, sparse_s
        saved = (None, None) if recompute else (u, p)
        ctx.save_for_backward(inputs, weight, recurrent_weight, s, *saved)
        if sparse_s is not None:
            s._spikegrad_sparse = (s._version, sparse_s)
        return s

    @staticmethod
    def backward(ctx, grad_s):
        inputs, weight, v, s, u, p = ctx.saved_tensors
        d, kernels, sparse = ctx.dynamics, ctx.kernels, ctx.sparse
        if ctx.recompute:
            x = _project(kernels, inputs, weight)[0]
            _, u, p, _ = kernels.lif_forward(x, v, d.beta_mem, d.beta_syn, not d.detach_reset)
            del x
        through_recurrence = v if (v is not None and d.recurrent_gradient) else None
        dx = kernels.lif_backward(
            grad_s, s, u, p, through_recurrence, d.beta_mem, d.beta_syn, d.surrogate,
            kernels.last_active_step(grad_s),
        )
        del u, p
        flat_dx = dx.reshape(-1, dx.shape[-1])
        flat_in = inputs.reshape(-1, inputs.shape[-1])
        grad_in = grad_w = grad_v = None
        if ctx.needs_input_grad[0]:
            grad_in = (flat_dx @ weight).view_as(inputs)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(kernels, flat_dx, flat_in, sparse)
        if v is not None and ctx.needs_input_grad[2]:
            flat_s = s.reshape(-1, s.shape[-1])
            grad_v = _weight_grad(kernels, flat_dx, flat_s, ctx.sparse_s)
        return grad_in, grad_w, grad_v, None, None


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
        flat_dx = dx.reshape(-1, dx.shape[-1])
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_in = (flat_dx @ weight).view_as(inputs)
        if ctx.needs_input_grad[1]:
            flat_in = inputs.reshape(-1, inputs.shape[-1])
            grad_w = _weight_grad(kernels, flat_dx, flat_in, ctx.sparse)
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
    return _Readout.apply(inputs, weight, dynamics)

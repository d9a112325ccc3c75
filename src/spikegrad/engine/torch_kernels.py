"""Pure-PyTorch kernels of the fast engine: same signatures as :mod:`spikegrad.engine.cpp`.

They run on any device (the GPU path) and wherever the compiled kernels are unavailable.
The time loops are plain tensor operations without autograd; the equations are in
:mod:`spikegrad.engine`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spikegrad.functional import THRESHOLD
from spikegrad.surrogates import Surrogate


def to_sparse(x: Tensor, max_density: float, time_major_batch: int = 0) -> None:
    """Dense products only (a GPU multiplies dense matrices faster than it gathers rows)."""
    return None


def empty_time_major(batch: int, steps: int, n: int, like: Tensor) -> Tensor:
    """An uninitialised [B, T, N] tensor stored time-major (each step a contiguous [B, N])."""
    return like.new_empty(steps, batch, n).transpose(0, 1)


def lif_forward(
    x: Tensor | None, sparse_input: None, weight: Tensor, recurrent_weight: Tensor | None,
    beta_mem: float, beta_syn: float, keep_pre_reset: bool, batch: int, steps: int,
) -> tuple[Tensor, Tensor, Tensor | None, None, None]:
    """S, U and (optionally) P[n] = β_m U[n] + (1 - β_m) I[n] from x = W S_in [B, T, N].

    ``sparse_input`` is always None here (see :func:`to_sparse`), and so are the last two
    elements of the result (the sparse forms of S in the compiled kernels). Results are
    stored time-major, like the compiled kernels'.
    """
    n = x.shape[-1]
    s_all, u_all = empty_time_major(batch, steps, n, x), empty_time_major(batch, steps, n, x)
    p_all = empty_time_major(batch, steps, n, x) if keep_pre_reset else None
    u, i = x.new_zeros(batch, n), x.new_zeros(batch, n)
    for t in range(steps):
        s = (u > 1.0).to(x.dtype)
        u_all[:, t], s_all[:, t] = u, s
        p = beta_mem * u + (1.0 - beta_mem) * i
        if p_all is not None:
            p_all[:, t] = p
        u = p * (1.0 - s)
        i = beta_syn * i + x[:, t]
        if recurrent_weight is not None:
            i = i + s @ recurrent_weight.detach().t()
    return s_all, u_all, p_all, None, None


def lif_backward(
    grad: Tensor, s: Tensor, u: Tensor, p: Tensor | None, v: Tensor | None,
    beta_mem: float, beta_syn: float, surrogate: Surrogate, steps: int,
    sparse_input: None, sparse_spikes: None, input_columns: int, want_dx: bool,
) -> tuple[Tensor, None, None]:
    """dL/dx (dx[n] = dI[n+1]) from dL/dS by the adjoint recursion, backwards in time.

    σ'(U - 1) comes from ``surrogate``; dL/dS is zero from step ``steps`` on. The weight
    gradients are left to the caller (no sparse forms here).
    """
    batch, total, n = grad.shape
    dx = empty_time_major(batch, total, n, grad)
    dx[:, steps:] = 0
    du, di = grad.new_zeros(batch, n), grad.new_zeros(batch, n)
    v = None if v is None else v.detach()
    for t in reversed(range(steps)):
        dx[:, t] = di
        g = grad[:, t]
        if v is not None:
            g = g + di @ v
        if p is not None:
            g = g - du * p[:, t]
        a = du * (1.0 - s[:, t])
        du = beta_mem * a + g * surrogate.derivative(u[:, t] - THRESHOLD)
        di = (1.0 - beta_mem) * a + beta_syn * di
    return dx, None, None


def last_active_step(grad: Tensor) -> int:
    """1 + the last step at which dL/dS is non-zero (0 when it is zero everywhere)."""
    active = grad.ne(0).any(dim=-1).any(dim=0).nonzero()
    return int(active[-1]) + 1 if len(active) else 0


def leaky_filter(x: Tensor, beta_mem: float, beta_syn: float) -> Tensor:
    """U[1..T] of U[n+1] = β_m U[n] + (1 - β_m) I[n], I[n+1] = β_s I[n] + x[n]."""
    y = torch.empty_like(x)
    u, i = torch.zeros_like(x[:, 0]), torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        u = beta_mem * u + (1.0 - beta_mem) * i
        i = beta_syn * i + x[:, t]
        y[:, t] = u
    return y


def leaky_filter_backward(dy: Tensor, beta_mem: float, beta_syn: float) -> Tensor:
    """dL/dx from dL/dU[1..T] (the adjoint of :func:`leaky_filter`)."""
    dx = torch.empty_like(dy)
    lu, li = torch.zeros_like(dy[:, 0]), torch.zeros_like(dy[:, 0])
    for t in reversed(range(dy.shape[1])):
        lu = lu + dy[:, t]
        dx[:, t] = li
        lu, li = beta_mem * lu, (1.0 - beta_mem) * lu + beta_syn * li
    return dx

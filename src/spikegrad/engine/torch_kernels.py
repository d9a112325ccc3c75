"""Pure-PyTorch kernels of the fast engine: same signatures as :mod:`spikegrad.engine.cpp`.

They run on any device (the GPU path) and wherever the compiled kernels are unavailable.
The time loops are plain tensor operations without autograd; the equations are in
:mod:`spikegrad.engine`. Products are dense (a GPU multiplies dense matrices faster than it
gathers rows), so there are no sparse forms here and weight gradients are the caller's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spikegrad.engine.contract import Forward
from spikegrad.functional import (
    THRESHOLD,
    LIFDynamics,
    ReadoutDynamics,
    leaky_membrane,
    synaptic_current,
)
from spikegrad.losses import reduce_readout

READS_SPARSE_FORMS = False
"""Products are dense (see the module docstring)."""


def to_sparse(x: Tensor, max_density: float) -> None:
    """Dense products only (see the module docstring)."""
    return None


def sparse_form_of_coo(x: Tensor, max_density: float) -> None:
    """Dense products only: sparse COO inputs reach these kernels dense."""
    return None


def dense_tmm(x: Tensor, g: Tensor) -> Tensor:
    """x [R, C]^T g [R, N] ([C, N]): PyTorch's product (on the user's thread count, see
    :mod:`spikegrad.engine.threads`), as g^T x transposed."""
    return (g.t() @ x).t()


def empty_time_major(batch: int, steps: int, n: int, like: Tensor) -> Tensor:
    """An uninitialised [B, T, N] tensor stored time-major (each step a contiguous [B, N])."""
    return like.new_empty(steps, batch, n).transpose(0, 1)


def lif_forward(
    x: Tensor, sparse_input: None, weight: Tensor, recurrent_weight: Tensor | None,
    readout_weight: Tensor | None, dynamics: LIFDynamics, readout: ReadoutDynamics | None,
    keep_state: bool, batch: int, steps: int, write_spikes: bool = True,
    reduction: str | None = None, write_trace: bool = True, keep_current: bool = False,
) -> Forward:
    """S, U, P[n] = β_m U[n] + (1 - β_m) I[n] (for a differentiable reset), I (with
    ``keep_current``), the spike counts [B, N] and, with a readout weight, the readout trace
    and its logits, from x = W S_in [B, T, N]; stored time-major like the compiled kernels'
    results (S and the trace are always computed here). The decays are numbers or [N]
    tensors (per neuron)."""
    n = x.shape[-1]
    beta_mem, beta_syn = _decays(dynamics)
    s_all = empty_time_major(batch, steps, n, x)
    u_all = empty_time_major(batch, steps, n, x) if keep_state else None
    keep_p = keep_state and not dynamics.detach_reset
    p_all = empty_time_major(batch, steps, n, x) if keep_p else None
    i_all = empty_time_major(batch, steps, n, x) if keep_state and keep_current else None
    u, i = x.new_zeros(batch, n), x.new_zeros(batch, n)
    for t in range(steps):
        s = (u > THRESHOLD).to(x.dtype)
        s_all[:, t] = s
        if u_all is not None:
            u_all[:, t] = u
        if i_all is not None:
            i_all[:, t] = i
        p = leaky_membrane(u, i, beta_mem)
        if p_all is not None:
            p_all[:, t] = p
        u = p * (1.0 - s)
        i = synaptic_current(i, x[:, t], beta_syn)
        if recurrent_weight is not None:
            i = i + s @ recurrent_weight.detach().t()
    counts = s_all.transpose(0, 1).sum(0)
    if readout_weight is None:
        return Forward(s_all, u_all, p_all, i_all, counts, None, None, None, None)
    x_out = (s_all.transpose(0, 1) @ readout_weight.detach().t()).transpose(0, 1)
    trace = leaky_filter(x_out, readout)
    logits = argmax = None
    if reduction == "max":
        logits, argmax = trace.max(dim=1)
    elif reduction is not None:
        logits = reduce_readout(trace, reduction)
    return Forward(s_all, u_all, p_all, i_all, counts, None, trace, logits, argmax)


def _decays(dynamics: LIFDynamics) -> tuple[float | Tensor, float | Tensor]:
    """β_m and β_s of a layer: numbers, or [N] tensors (detached: the kernels' gradients
    are their own)."""
    return tuple(b.detach() if isinstance(b, Tensor) else b
                 for b in (dynamics.beta_mem, dynamics.beta_syn))


def logits_gradient(grad_logits: Tensor, argmax: Tensor | None, reduction: str,
                    steps: int) -> Tensor:
    """dL/dU_out[1..T] [B, T, K] from the gradient of the logits [B, K]."""
    batch, k = grad_logits.shape
    if reduction == "max":
        dy = grad_logits.new_zeros(batch, steps, k)
        return dy.scatter_(1, argmax.long().unsqueeze(1), grad_logits.unsqueeze(1))
    if reduction == "last":
        dy = grad_logits.new_zeros(batch, steps, k)
        dy[:, -1] = grad_logits
        return dy
    scale = 1.0 / steps if reduction == "mean" else 1.0
    return (grad_logits * scale).unsqueeze(1).expand(batch, steps, k)


def recomputes_state(surrogate) -> bool:
    """The backward loop here always reads U computed by a forward pass."""
    return False


def lif_backward(
    x: Tensor | None, sparse_input: None, weight: Tensor, recurrent_weight: Tensor | None,
    grad: Tensor | None, grad_const: Tensor | None, dy: Tensor | None,
    readout_weight: Tensor | None, u: Tensor, p: Tensor | None, v: Tensor | None,
    dynamics: LIFDynamics, readout: ReadoutDynamics | None, batch: int, time_steps: int,
    steps: int, want_w: bool, want_v: bool, want_wo: bool, want_dx: bool,
    grad_logits: Tensor | None = None, argmax: Tensor | None = None,
    reduction: str | None = None, current: Tensor | None = None, want_decays: bool = False,
) -> tuple[Tensor | None, ...]:
    """dL/dx (dx[n] = dI[n+1]), dV, dW_out and, with ``want_decays``, dL/dβ_m and dL/dβ_s
    ([N] each; from I, ``current``) by the adjoint recursions, backwards in time.

    dL/dS is ``grad`` plus ``grad_const`` plus, with a readout, dx_out W_out; it is zero from
    step ``steps`` on. dW is left to the caller (no sparse forms here)."""
    n = weight.shape[0]
    s = (u > THRESHOLD).to(u.dtype)
    beta_mem, beta_syn = _decays(dynamics)
    if want_decays and current is None:
        raise ValueError("lif_backward: the decays' gradients need the current I kept with U")
    grad_beta_mem = u.new_zeros(n) if want_decays else None
    grad_beta_syn = u.new_zeros(n) if want_decays else None
    grad_s = u.new_zeros(batch, time_steps, n) if grad is None else grad
    if grad_const is not None:
        grad_s = grad_s + grad_const[:, None]
    grad_wo = None
    if grad_logits is not None:
        from_logits = logits_gradient(grad_logits, argmax, reduction, time_steps)
        dy = from_logits if dy is None else dy + from_logits
    if dy is not None:
        dx_out = leaky_filter_backward(dy, readout)
        grad_s = grad_s + dx_out @ readout_weight.detach()
        if want_wo:
            grad_wo = torch.einsum("btk,btn->kn", dx_out, s)
    dx = empty_time_major(batch, time_steps, n, u)
    dx[:, steps:] = 0
    du, di = u.new_zeros(batch, n), u.new_zeros(batch, n)
    v = None if v is None else v.detach()
    for t in reversed(range(steps)):
        dx[:, t] = di
        g = grad_s[:, t]
        if v is not None:
            g = g + di @ v
        if p is not None:
            g = g - du * p[:, t]
        a = du * (1.0 - s[:, t])
        if want_decays:  # P[n] = β_m U[n] + (1 - β_m) I[n], I[n+1] = β_s I[n] + ...
            grad_beta_mem += (a * (u[:, t] - current[:, t])).sum(0)
            grad_beta_syn += (di * current[:, t]).sum(0)
        du = beta_mem * a + g * dynamics.surrogate.derivative(u[:, t] - THRESHOLD)
        di = (1.0 - beta_mem) * a + beta_syn * di
    grad_v = None
    if want_v:  # Σ_n dx[n]^T S[n], dx[n] = dI[n+1] (V S[n] enters I[n+1])
        grad_v = torch.einsum("btn,btk->nk", dx, s)
    return dx, None, grad_v, grad_wo, grad_beta_mem, grad_beta_syn


def last_active_step(t: Tensor) -> int:
    """1 + the last step at which ``t`` [B, T, M] is non-zero (0 when it is zero everywhere;
    T on the meta device, which holds no values)."""
    if t.device.type == "meta":
        return t.shape[1]
    active = t.ne(0).any(dim=-1).any(dim=0).nonzero()
    return int(active[-1]) + 1 if len(active) else 0


def leaky_filter(x: Tensor, dynamics: ReadoutDynamics) -> Tensor:
    """U[1..T] of U[n+1] = β_m U[n] + (1 - β_m) I[n], I[n+1] = β_s I[n] + x[n], from
    U[0] = u_0, I[0] = 0 (time-major)."""
    batch, steps, k = x.shape
    y = empty_time_major(batch, steps, k, x)
    u = torch.full_like(x[:, 0], dynamics.initial_membrane)
    i = torch.zeros_like(x[:, 0])
    for t in range(steps):
        u = leaky_membrane(u, i, dynamics.beta_mem)
        i = synaptic_current(i, x[:, t], dynamics.beta_syn)
        y[:, t] = u
    return y


def leaky_filter_backward(dy: Tensor, dynamics: ReadoutDynamics) -> Tensor:
    """dL/dx from dL/dU[1..T] (the adjoint of :func:`leaky_filter`), time-major."""
    batch, steps, k = dy.shape
    dx = empty_time_major(batch, steps, k, dy)
    lu, li = torch.zeros_like(dy[:, 0]), torch.zeros_like(dy[:, 0])
    for t in reversed(range(steps)):
        lu = lu + dy[:, t]
        dx[:, t] = li
        lu, li = dynamics.beta_mem * lu, (1.0 - dynamics.beta_mem) * lu + dynamics.beta_syn * li
    return dx

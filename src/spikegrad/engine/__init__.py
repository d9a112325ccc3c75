"""The fast engine: a LIF layer (with the readout that reads it) over all T steps as one
autograd operation.

Same semantics as :mod:`spikegrad.functional` (the reference path and the oracle of the
tests), but the forward pass runs the time loop without building an autograd graph and the
backward pass runs the hand-derived BPTT recursion. Forward, from U[0] = I[0] = 0::

    x[n]   = W S_in[n]                                     projected inside the loop
    S[n]   = Θ(U[n] - 1)
    P[n]   = β_m U[n] + (1 - β_m) I[n],   U[n+1] = P[n] (1 - S[n])
    I[n+1] = β_s I[n] + x[n] + V S[n]                      V S[n] only visits spiking neurons

Backward, with the adjoints dU[n] = dL/dU[n], dI[n] = dL/dI[n], zero at n = T, and the
surrogate σ'[n] = σ'(U[n] - 1)::

    g[n]   = dL/dS[n] + dI[n+1] V  (gradient through the recurrence, unless disabled)
                      - dU[n+1] P[n]  (differentiable reset only)
    a[n]   = dU[n+1] (1 - S[n])
    dU[n]  = β_m a[n] + σ'[n] g[n]
    dI[n]  = (1 - β_m) a[n] + β_s dI[n+1]
    dx[n]  = dI[n+1],   dW = Σ_n dx[n]^T S_in[n],   dV = Σ_n dx[n]^T S[n],   dS_in = dx W

β_m and β_s are numbers, or one per neuron ([N] tensors: heterogeneous time constants),
whose gradients, when they are trained, are summed over the batch and the steps from the
adjoint a[n] = dU[n+1] (1 - S[n]) that reaches P[n] and the adjoint dI[n+1]::

    dL/dβ_m = Σ_n a[n] (U[n] - I[n]),   dL/dβ_s = Σ_n dI[n+1] I[n]

I is then kept with U (or recomputed with it); autograd carries the gradient on to τ through
β = exp(-dt / τ).

The readout is the linear filter U[n+1] = β_m U[n] + (1 - β_m) I[n], I[n+1] = β_s I[n] +
x_out[n] with x_out[n] = W_out S[n], from U[0] = u_0, I[0] = 0; its adjoint runs the same
filter backwards in time: with λ_U, λ_I the adjoints of U[n+1], I[n+1] and dy = dL/dU[1..T],
u = λ_U + dy[n], dx_out[n] = λ_I, λ_U <- β_m u, λ_I <- (1 - β_m) u + β_s λ_I, and the
gradient it sends to the hidden spikes is dx_out[n] W_out.

:func:`lif_readout` runs the last hidden layer and the readout as one operation: the readout
is updated inside the layer's forward loop and its adjoint inside the layer's backward loop,
so neither its input x_out, nor the gradient it sends to the spikes, is ever stored. The
weight gradients only visit the non-zero entries of S_in and S (sparse inputs are projected
inside the forward loop and their weight gradient summed inside the backward loop). Only U
(and P for a differentiable reset, I for learned decays) are saved besides the spikes; with
``recompute`` (the config's ``model.recompute``) not even those: the backward pass re-runs
the forward loop, one block of batch entries at a time (one entry at a time in the compiled
kernels' float32 layers without recurrence whose time constants are not trained), into a
buffer that stays close in cache. Both ways give the same bits (the weight gradients are
summed in the same order), so ``recompute`` changes time and memory alone: ``auto`` (the
default) recomputes the layers without recurrence, whose forward loop costs less than
writing U to memory and reading it back (for a recurrent layer the product V S[n] would be
computed twice), where the compiled kernels recompute in the backward loop (built-in
surrogates).
Steps after the last one that receives a gradient are skipped. The compiled kernels run a
float32 layer without recurrence by neurons: its neurons do not act on each other, so each
batch entry runs all steps for a few vectors of neurons at a time with their state in
registers (and the readout's), the same operations on each element in the same order.

Threads: on CPU the thread count follows the load of the machine (:mod:`.threads`); results
do not depend on it.

Layout: a layer's spikes and saved state are [B, T, N] tensors stored time-major
(``t.transpose(0, 1)`` is contiguous), so that each step of both loops reads and writes
contiguous memory; everything else accepts any layout. Spikes made here carry their sparse
form, so the next layer does not scan them again.

On CPU the loops run in compiled kernels (:mod:`spikegrad.engine.cpp`); elsewhere, or when
no compiler is available, in PyTorch (:mod:`spikegrad.engine.torch_kernels`). ``kernels``
(the config's ``model.kernels``) chooses: ``auto`` as just said, ``cpp`` or ``torch``.

The environment variables ``SPIKEGRAD_ENGINE`` (``auto``, ``cpp``, ``torch``) and
``SPIKEGRAD_RECOMPUTE`` (``1``, ``0``, ``auto``), when set, override ``kernels`` and ``recompute``
wherever they are given; :func:`engine_info` says what a run used, for its record.
"""

from __future__ import annotations

import os
from dataclasses import replace
from types import ModuleType
from typing import Any, NamedTuple, get_args

import torch
from torch import Tensor

from spikegrad.engine import cpp, torch_kernels
from spikegrad.engine.threads import GOVERNOR
from spikegrad.errors import ConfigError, KernelsUnavailableError, first_line
from spikegrad.functional import (
    InputError,
    LIFDynamics,
    ReadoutDynamics,
    check_layer_tensors,
    per_neuron_decays,
)
from spikegrad.losses import check_reduction
from spikegrad.schema import KernelChoice, RecomputeChoice

__all__ = ["lif_layer", "lif_readout", "readout_layer", "kernels_for", "kernel_setting",
           "recompute_setting", "recomputes", "engine_info", "KernelChoice", "RecomputeChoice",
           "LayerOutput",
           "MAX_SPARSE_DENSITY"]

MAX_SPARSE_DENSITY = 0.1
"""Inputs with at most this fraction of non-zeros are multiplied as sparse matrices."""

KERNELS_VARIABLE = "SPIKEGRAD_ENGINE"
RECOMPUTE_VARIABLE = "SPIKEGRAD_RECOMPUTE"


def kernel_setting(kernels: KernelChoice = "auto") -> KernelChoice:
    """The kernels asked for: ``SPIKEGRAD_ENGINE`` when it is set, else ``kernels``."""
    override = os.environ.get(KERNELS_VARIABLE, "").strip().lower()
    if not override:
        if kernels not in get_args(KernelChoice):
            raise ConfigError(f"kernels: expected one of {', '.join(get_args(KernelChoice))}, "
                              f"got {kernels!r}")
        return kernels
    if override not in get_args(KernelChoice):
        raise ConfigError(f"{KERNELS_VARIABLE}={override!r}: expected one of "
                         f"{', '.join(get_args(KernelChoice))}")
    return override  # type: ignore[return-value]


def recompute_setting(recompute: RecomputeChoice | None = "auto") -> RecomputeChoice:
    """Whether to recompute (True, False or ``auto``): ``SPIKEGRAD_RECOMPUTE`` when it is set
    (``0``: no, ``auto``, anything else: yes), else ``recompute`` (None: no)."""
    override = os.environ.get(RECOMPUTE_VARIABLE, "").strip().lower()
    if override:
        return "auto" if override == "auto" else override != "0"
    if recompute not in (True, False, "auto", None):
        raise ConfigError(f"recompute: expected True, False, 'auto' or None, got {recompute!r}")
    return "auto" if recompute == "auto" else bool(recompute)


def recomputes(setting: RecomputeChoice, recurrent: bool, in_backward_loop: bool) -> bool:
    """Whether a layer recomputes U under ``setting`` (:func:`recompute_setting`): ``auto``
    recomputes a layer without recurrence where its kernels recompute U inside the backward
    loop (``in_backward_loop``: the compiled ones, built-in surrogates)."""
    if setting == "auto":
        return not recurrent and in_backward_loop
    return bool(setting)


def _compiled_kernels_run_on(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu" and tensor.dtype in cpp.DTYPES


def kernels_for(tensor: Tensor, kernels: KernelChoice = "auto") -> ModuleType:
    """The kernels for ``tensor``: with ``auto``, the compiled kernels for float32/float64 CPU
    tensors when they are available, else PyTorch's; ``cpp`` and ``torch`` insist
    (``SPIKEGRAD_ENGINE`` overrides the choice, :func:`kernel_setting`)."""
    choice = kernel_setting(kernels)
    if choice == "torch":
        return torch_kernels
    if choice == "cpp":
        if not _compiled_kernels_run_on(tensor):
            raise ConfigError(f"kernels 'cpp': the compiled kernels take float32 or float64 CPU "
                              f"tensors, got {tensor.dtype} on {tensor.device.type}")
        if not cpp.available():
            raise KernelsUnavailableError("kernels 'cpp': the compiled kernels are unavailable "
                                          "(the warning above says why); use 'auto' or 'torch'")
        return cpp
    if _compiled_kernels_run_on(tensor) and cpp.available():
        return cpp
    return torch_kernels


def engine_info(model: Any, dtype: torch.dtype = torch.float32, device: str = "cpu"
                ) -> dict[str, Any]:
    """How a network of the config's ``model`` section (its ``engine``, ``kernels`` and
    ``recompute``) computes, for a run's record: ``kernels``, the kernels the fast engine
    uses on tensors of ``dtype`` on ``device`` (``cpp`` or ``torch``), and ``recompute``,
    environment overrides applied; both None under the reference engine."""
    if model.engine != "fast":
        return {"kernels": None, "recompute": None}
    used = kernels_for(torch.empty(0, dtype=dtype, device=device), model.kernels)
    return {"kernels": "cpp" if used is cpp else "torch",
            "recompute": recompute_setting(model.recompute)}


def _sparse_form(kernels: ModuleType, inputs: Tensor):
    """The sparse form of ``inputs`` [B, T, C] (rows time-major, see ``kernels.cpp``), or
    None when too dense (or when the kernels multiply densely). Spikes made by this engine
    carry it (as long as they are not modified); a sparse COO input gives it directly; other
    inputs are scanned for it."""
    if not kernels.READS_SPARSE_FORMS:
        return None
    version, form = getattr(inputs, "_spikegrad_sparse", (None, None))
    if version == inputs._version:
        return form
    if inputs.is_sparse:  # a sparse COO batch (spike events): its entries as they are
        return kernels.sparse_form_of_coo(inputs.detach(), MAX_SPARSE_DENSITY)
    return kernels.to_sparse(inputs.detach(), MAX_SPARSE_DENSITY)


def _attach_sparse_form(spikes: Tensor, form) -> None:
    if form is not None:
        spikes._spikegrad_sparse = (spikes._version, form)


def _is_time_major(t: Tensor) -> bool:
    return t.transpose(0, 1).is_contiguous()


def _time_major(t: Tensor) -> Tensor:
    """``t`` [B, T, N] stored time-major (a copy only when it is not already)."""
    return t if _is_time_major(t) else t.transpose(0, 1).contiguous().transpose(0, 1)


def _matmul_time_major(a: Tensor, matrix: Tensor) -> Tensor:
    """a [B, T, K] @ matrix [K, M], stored time-major whatever the layout of ``a``."""
    return (a.transpose(0, 1) @ matrix).transpose(0, 1)


def _weight_grad(kernels: ModuleType, dx: Tensor, inputs: Tensor, sparse) -> Tensor:
    """Σ over batch and steps of dx[b, n]^T inputs[b, n] ([N, C]) for dx [B, T, N] (time-major)
    and inputs [B, T, C] in any layout; only the non-zeros of the inputs when ``sparse``."""
    dx_rows = _time_major(dx).transpose(0, 1).reshape(-1, dx.shape[-1])
    if sparse is not None:
        return kernels.sparse_tmm(sparse, dx_rows, inputs.shape[-1]).t()
    in_rows = _time_major(inputs).transpose(0, 1).reshape(-1, inputs.shape[-1])
    return kernels.dense_tmm(in_rows, dx_rows).t()


def _any_nonzero(t: Tensor) -> bool:
    """Whether ``t`` has a non-zero entry (assumed so on the meta device, which holds no
    values)."""
    return t.device.type == "meta" or bool(t.any())


def _spike_gradient(grad_s: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """dL/dS as (a time-major [B, T, N] tensor, or a [B, N] tensor that holds at every step).

    The second form is what a loss on spike counts gives (``spikes.sum(1)``): no copy of the
    same values at every step is made."""
    if grad_s is None:
        return None, None
    if grad_s.stride(1) == 0:
        return None, grad_s[:, 0].contiguous()
    return _time_major(grad_s), None


def _decay_inputs(dynamics: LIFDynamics, weight: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """The per-neuron decays (β_m, β_s) as inputs of the autograd operation ([N] tensors, so
    that gradients reach them), or (None, None) for decays that are numbers."""
    if not dynamics.per_neuron:
        return None, None
    return per_neuron_decays(dynamics, weight.shape[0], weight)


class _Layer(torch.autograd.Function):
    """A LIF layer, and with a readout weight the leaky readout that reads it:
    (S, U_out, spike counts [B, N], logits [B, K]); S, U_out and the logits are empty
    tensors where not asked for. ``beta_mem`` and ``beta_syn`` are the per-neuron decays
    ([N]), or None for the numbers of ``dynamics``."""

    @staticmethod
    def forward(ctx, inputs, weight, recurrent_weight, readout_weight, beta_mem, beta_syn,
                dynamics: LIFDynamics, readout: ReadoutDynamics | None,
                recompute: RecomputeChoice,
                write_spikes: bool, reduction: str | None, write_trace: bool,
                choice: KernelChoice):
        ctx.set_materialize_grads(False)
        kernels = kernels_for(inputs, choice)
        if beta_mem is not None:
            dynamics = replace(dynamics, beta_mem=beta_mem.detach(), beta_syn=beta_syn.detach())
        ctx.dynamics, ctx.readout, ctx.kernels = dynamics, readout, kernels
        ctx.sparse = _sparse_form(kernels, inputs)
        # with ``recompute`` U is not kept: the backward pass computes it again
        keep_state = (any(ctx.needs_input_grad[:6]) and
                      not recomputes(recompute, recurrent_weight is not None,
                                     kernels.recomputes_state(dynamics.surrogate)))
        ctx.want_decays = beta_mem is not None and any(ctx.needs_input_grad[4:6])
        x = _Layer.projected_input(ctx, inputs, weight)
        result = kernels.lif_forward(
            x, ctx.sparse, weight, recurrent_weight, readout_weight, dynamics, readout,
            keep_state, *inputs.shape[:2], write_spikes, reduction, write_trace,
            keep_current=ctx.want_decays)
        ctx.state = ((result.membrane, result.pre_reset, result.current) if keep_state
                     else None)
        ctx.shape = (*inputs.shape[:2], weight.shape[0])
        ctx.reduction, ctx.argmax = reduction, result.argmax
        ctx.save_for_backward(inputs, weight, recurrent_weight, readout_weight)
        outputs = []
        for value in (result.spikes, result.trace, result.counts, result.logits):
            if value is None:
                value = weight.new_empty(0)
                ctx.mark_non_differentiable(value)
            outputs.append(value)
        _attach_sparse_form(outputs[0], result.sparse)
        return tuple(outputs)

    @staticmethod
    def projected_input(ctx, inputs: Tensor, weight: Tensor) -> Tensor | None:
        """x = W S_in (time-major) where the input has no sparse form; else None."""
        if ctx.sparse is not None:
            return None
        return _matmul_time_major(inputs, weight.detach().t())

    @staticmethod
    def backward(ctx, grad_s, grad_y, grad_counts, grad_logits):
        inputs, weight, v, wo = ctx.saved_tensors
        d, kernels = ctx.dynamics, ctx.kernels
        batch, time_steps, _ = ctx.shape
        x = _Layer.projected_input(ctx, inputs, weight)
        if ctx.state is not None:
            u, p, current = ctx.state
            ctx.state = None
        elif kernels.recomputes_state(d.surrogate):  # a block of batch entries at a time
            u = p = current = None
        else:  # one more forward pass, keeping U this time
            again = kernels.lif_forward(x, ctx.sparse, weight, v, None, d, None, True, batch,
                                        time_steps, keep_current=ctx.want_decays)
            u, p, current = again.membrane, again.pre_reset, again.current
        grad, grad_const = _spike_gradient(grad_s if grad_s is not None and grad_s.numel()
                                           else None)
        if grad_counts is not None:  # a count's gradient reaches S at every step
            # (contiguous: the gradient of counts.sum() is one value expanded to [B, N])
            grad_counts = grad_counts.contiguous()
            grad_const = grad_counts if grad_const is None else grad_const + grad_counts
        dy = (_time_major(grad_y) if wo is not None and grad_y is not None and grad_y.numel()
              else None)
        grad_logits = grad_logits if grad_logits is not None and grad_logits.numel() else None
        steps = max(kernels.last_active_step(grad) if grad is not None else 0,
                    time_steps if grad_const is not None and _any_nonzero(grad_const) else 0,
                    kernels.last_active_step(dy) if dy is not None else 0,
                    time_steps if grad_logits is not None else 0)
        want_w = ctx.needs_input_grad[1]
        want_v = v is not None and ctx.needs_input_grad[2]
        to_readout = wo is not None and (dy is not None or grad_logits is not None)
        want_wo = ctx.needs_input_grad[3] and to_readout
        want_dx = ctx.needs_input_grad[0] or (want_w and ctx.sparse is None)
        through_recurrence = v if (v is not None and d.recurrent_gradient) else None
        dx, grad_w, grad_v, grad_wo, grad_beta_mem, grad_beta_syn = kernels.lif_backward(
            x, ctx.sparse, weight, v, grad, grad_const, dy, wo, u, p, through_recurrence, d,
            ctx.readout, batch, time_steps, steps, want_w, want_v, want_wo, want_dx,
            grad_logits, ctx.argmax, ctx.reduction, current=current,
            want_decays=ctx.want_decays,
        )
        del u, p, x, current
        grad_in = _matmul_time_major(dx, weight) if ctx.needs_input_grad[0] else None
        if want_w and grad_w is None:  # no sparse form: the kernels left it to a dense product
            grad_w = _weight_grad(kernels, dx, inputs, None)
        wants_wo = wo is not None and ctx.needs_input_grad[3]
        if wants_wo and grad_wo is None:
            grad_wo = torch.zeros_like(wo)
        return (grad_in, grad_w if want_w else None, grad_v if want_v else None,
                grad_wo if wants_wo else None,
                grad_beta_mem if ctx.needs_input_grad[4] else None,
                grad_beta_syn if ctx.needs_input_grad[5] else None,
                None, None, None, None, None, None, None)


class _Readout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, weight, dynamics: ReadoutDynamics, choice: KernelChoice):
        kernels = kernels_for(inputs, choice)
        sparse = _sparse_form(kernels, inputs)
        if sparse is None:
            x = _matmul_time_major(inputs, weight.detach().t())
        else:
            x = kernels.sparse_mm(sparse, weight.detach().t())
            x = x.view(inputs.shape[1], inputs.shape[0], weight.shape[0]).transpose(0, 1)
        ctx.dynamics, ctx.kernels, ctx.sparse = dynamics, kernels, sparse
        ctx.save_for_backward(inputs, weight)
        return kernels.leaky_filter(x, dynamics)

    @staticmethod
    def backward(ctx, grad_y):
        inputs, weight = ctx.saved_tensors
        kernels = ctx.kernels
        dx = kernels.leaky_filter_backward(_time_major(grad_y), ctx.dynamics)
        grad_in = grad_w = None
        if ctx.needs_input_grad[0]:  # time-major, like the spikes of this engine
            grad_in = _matmul_time_major(dx, weight)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(kernels, dx, inputs, ctx.sparse)
        return grad_in, grad_w, None, None


def _readable(inputs: Tensor, kernels: KernelChoice) -> Tensor:
    """``inputs`` as the chosen kernels read them: a sparse COO tensor stays sparse for the
    compiled kernels, with its sparse form attached, unless it is too dense for it (as
    :func:`_sparse_form` decides for a dense one); else, and for PyTorch's kernels (dense
    products only), it is made dense."""
    if not inputs.is_sparse:
        return inputs
    if inputs.sparse_dim() != 3:
        raise InputError(f"inputs: a sparse COO tensor needs its 3 dimensions sparse (batch, "
                         f"time, channel), got {inputs.sparse_dim()} sparse and "
                         f"{inputs.dense_dim()} dense")
    chosen = kernels_for(inputs, kernels)
    form = _sparse_form(chosen, inputs)  # None for PyTorch's; checks the indices
    if form is None:
        if not chosen.READS_SPARSE_FORMS:  # the indices, checked before to_dense reads them
            try:
                torch._validate_sparse_coo_tensor_args(inputs._indices(), inputs._values(),
                                                       inputs.shape)
            except RuntimeError as error:
                raise InputError(f"inputs: {first_line(error)}") from None
        return inputs.to_dense()
    _attach_sparse_form(inputs, form)
    return inputs


def _prepare(inputs: Tensor, recompute: RecomputeChoice | None,
             kernels: KernelChoice) -> RecomputeChoice:
    """Before an operation: the thread count (the compiled kernels: for the current load, as
    their results do not depend on it; PyTorch's kernels: the user's count throughout, as
    PyTorch's products can give other bits on other thread counts), and whether the forward
    pass keeps no state for the backward pass: ``recompute``, or no backward pass at all
    (under ``torch.no_grad``, where an autograd function still sees which of its inputs
    require gradients, and would otherwise keep U of a whole evaluation batch)."""
    if kernels_for(inputs, kernels) is cpp:
        GOVERNOR.update()
    else:
        GOVERNOR.release()
    if not torch.is_grad_enabled():
        return True
    return recompute_setting(recompute)


def lif_layer(
    inputs: Tensor,
    weight: Tensor,
    dynamics: LIFDynamics,
    recurrent_weight: Tensor | None = None,
    recompute: RecomputeChoice | None = "auto",
    kernels: KernelChoice = "auto",
) -> Tensor:
    """Spikes [B, T, N] of a LIF layer driven by ``inputs`` [B, T, C_in] (spikes or current).

    Same values and gradients as :func:`spikegrad.functional.lif_layer`. ``recompute``
    trades a second forward loop in the backward pass for not keeping U between the two;
    ``kernels`` chooses the kernels (:func:`kernels_for`); ``SPIKEGRAD_RECOMPUTE`` and
    ``SPIKEGRAD_ENGINE`` override both when set. Tensors are checked as by the reference
    path (:func:`spikegrad.functional.check_layer_tensors`).

    The spikes carry the list of their non-zeros for a next layer, which reads it instead of
    scanning them. An in-place change made through PyTorch (``spikes[...] = 0``, ``zero_()``)
    drops the list; a change that PyTorch does not see (through ``.data`` or a NumPy view,
    which autograd does not see either) does not: change a ``clone()`` instead.
    """
    check_layer_tensors(inputs, weight, recurrent_weight)
    inputs = _readable(inputs, kernels)
    spikes, *_ = _Layer.apply(inputs, weight, recurrent_weight, None,
                              *_decay_inputs(dynamics, weight), dynamics, None,
                              _prepare(inputs, recompute, kernels), True, None, False,
                              kernels)
    return spikes


class LayerOutput(NamedTuple):
    """What :func:`lif_readout` returns (None where not asked for)."""

    spikes: Tensor | None    # [B, T, N]
    trace: Tensor | None     # U_out[1..T] [B, T, K]
    counts: Tensor           # spikes per neuron and sample [B, N]
    logits: Tensor | None    # the trace reduced over time [B, K]


def lif_readout(
    inputs: Tensor,
    weight: Tensor,
    dynamics: LIFDynamics,
    readout_weight: Tensor,
    readout: ReadoutDynamics,
    recurrent_weight: Tensor | None = None,
    recompute: RecomputeChoice | None = "auto",
    spikes: bool = True,
    reduction: str | None = None,
    trace: bool = True,
    kernels: KernelChoice = "auto",
) -> LayerOutput:
    """A LIF layer and the leaky readout reading its spikes, as one operation: the spikes
    [B, T, N] (unless not ``spikes``: they are then never written), the readout trace
    U_out[1..T] [B, T, K] (unless not ``trace``), the spike count of every neuron on every
    sample [B, N] and, with a ``reduction`` (``max``, ``sum``, ``mean``, ``last``), the logits
    [B, K] that :func:`spikegrad.losses.reduce_readout` would give. Same values and gradients
    as :func:`lif_layer`, :func:`readout_layer`, ``spikes.sum(1)`` and ``reduce_readout``,
    faster; ``recompute`` and ``kernels`` as for :func:`lif_layer`."""
    check_layer_tensors(inputs, weight, recurrent_weight, readout_weight)
    if reduction is not None:
        check_reduction(reduction)
    inputs = _readable(inputs, kernels)
    s, y, counts, logits = _Layer.apply(inputs, weight, recurrent_weight, readout_weight,
                                        *_decay_inputs(dynamics, weight), dynamics, readout,
                                        _prepare(inputs, recompute, kernels), spikes, reduction,
                                        trace, kernels)
    return LayerOutput(s if spikes else None, y if trace else None, counts,
                       logits if reduction else None)


def readout_layer(inputs: Tensor, weight: Tensor, dynamics: ReadoutDynamics,
                  kernels: KernelChoice = "auto") -> Tensor:
    """Membrane trace U_out[1..T] [B, T, K] of the leaky readout (as the reference path);
    ``kernels`` as for :func:`lif_layer`."""
    check_layer_tensors(inputs, weight)
    return _Readout.apply(inputs, weight, dynamics, kernels)

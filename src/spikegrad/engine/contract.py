"""What the two kernel sets of the fast engine provide: the compiled CPU kernels
(:mod:`spikegrad.engine.cpp`) and the PyTorch ones for any device
(:mod:`spikegrad.engine.torch_kernels`). :mod:`spikegrad.engine` calls them only through
this contract; a test holds both to it."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from torch import Tensor

from spikegrad.functional import LIFDynamics, ReadoutDynamics
from spikegrad.surrogates import Surrogate

Sparse = tuple[Tensor, Tensor, Tensor, Tensor]
"""The sparse form of a [B, T, C] tensor: rows time-major (row n B + b), row q's entries at
[begin[q], end[q]) of cols (int32) and vals (see ``kernels.cpp``)."""

REDUCTIONS = {None: 0, "max": 1, "sum": 2, "mean": 3, "last": 4}
"""Readout reductions over time (:func:`spikegrad.losses.reduce_readout`) by kernel index."""


class Forward(NamedTuple):
    """What a layer's forward pass gives (None where not asked for or not applicable)."""

    spikes: Tensor | None
    membrane: Tensor | None    # U, kept for the backward pass
    pre_reset: Tensor | None   # P, for a differentiable reset
    current: Tensor | None     # I, for the gradients of per-neuron decays
    counts: Tensor             # spikes per neuron and sample [B, N]
    sparse: Sparse | None      # the spikes' sparse form (a layer without readout)
    trace: Tensor | None       # the readout's U_out[1..T] [B, T, K]
    logits: Tensor | None      # the trace reduced over time [B, K]
    argmax: Tensor | None      # for the maximum: its first step [B, K]


class Kernels(Protocol):
    """The functions a kernel set provides (signatures as in :mod:`spikegrad.engine.cpp`)."""

    READS_SPARSE_FORMS: bool
    """Whether its loops read inputs in their sparse form (else they multiply densely)."""

    def to_sparse(self, x: Tensor, max_density: float) -> Sparse | None: ...

    def sparse_form_of_coo(self, x: Tensor, max_density: float) -> Sparse | None: ...

    def recomputes_state(self, surrogate: Surrogate) -> bool: ...

    def lif_forward(
        self, x: Tensor | None, sparse_input: Sparse | None, weight: Tensor,
        recurrent_weight: Tensor | None, readout_weight: Tensor | None,
        dynamics: LIFDynamics, readout: ReadoutDynamics | None, keep_state: bool, batch: int,
        steps: int, write_spikes: bool = True, reduction: str | None = None,
        write_trace: bool = True, keep_current: bool = False,
    ) -> Forward: ...

    def lif_backward(
        self, x: Tensor | None, sparse_input: Sparse | None, weight: Tensor,
        recurrent_weight: Tensor | None, grad: Tensor | None, grad_const: Tensor | None,
        dy: Tensor | None, readout_weight: Tensor | None, u: Tensor | None,
        p: Tensor | None, v: Tensor | None, dynamics: LIFDynamics,
        readout: ReadoutDynamics | None, batch: int, time_steps: int, steps: int,
        want_w: bool, want_v: bool, want_wo: bool, want_dx: bool,
        grad_logits: Tensor | None = None, argmax: Tensor | None = None,
        reduction: str | None = None, current: Tensor | None = None, want_decays: bool = False,
    ) -> tuple[Tensor | None, ...]: ...

    def last_active_step(self, t: Tensor) -> int: ...

    def dense_tmm(self, x: Tensor, g: Tensor) -> Tensor:
        """x [R, C]^T g [R, N] ([C, N]): the weight gradient of an input without a sparse
        form; the compiled kernels' result does not depend on the thread count."""
        ...

    def leaky_filter(self, x: Tensor, dynamics: ReadoutDynamics) -> Tensor: ...

    def leaky_filter_backward(self, dy: Tensor, dynamics: ReadoutDynamics) -> Tensor: ...

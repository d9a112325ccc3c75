"""The compiled CPU kernels (``kernels.cpp``): built on first use, then cached.

The source is compiled with ``torch.utils.cpp_extension`` into the torch extensions
cache (``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) the first
time the engine runs on a CPU tensor (tens of seconds, once per machine and torch
version). When no compiler is available, or the config's ``model.kernels`` (or
``SPIKEGRAD_ENGINE``) is ``torch``, the engine uses the pure-PyTorch kernels of
:mod:`spikegrad.engine.torch_kernels` instead (:func:`spikegrad.engine.kernels_for`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import os
import shutil
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from spikegrad.engine.contract import REDUCTIONS, Forward, Sparse
from spikegrad.errors import first_line
from spikegrad.functional import (
    THRESHOLD,
    InputError,
    LIFDynamics,
    ReadoutDynamics,
    per_neuron_decays,
)

SOURCE = Path(__file__).with_name("kernels.cpp")
DTYPES = (torch.float32, torch.float64)  # what the kernels are compiled for


def keep_freed_memory() -> None:
    """Let glibc reuse freed buffers of up to 32 MiB instead of returning them to the system.

    The engine allocates a few whole-sequence buffers per step (spikes, membrane trace,
    adjoints); by default glibc maps each one afresh and the kernel zero-fills its pages,
    which costs more than the arithmetic. Raising the mmap and trim thresholds (the knob
    ``MALLOC_MMAP_THRESHOLD_`` sets) keeps them in the heap, ready for the next step.
    Set ``SPIKEGRAD_KEEP_MEMORY=0`` to leave the allocator alone.
    """
    if os.environ.get("SPIKEGRAD_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)  # the largest value glibc accepts
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


COMPILE_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"] + (
    ["-march=native"] if sys.platform == "linux" else [])
"""-ffp-contract=off: no fused multiply-adds the source does not ask for, so that the scalar
kernels round as PyTorch's element-wise operations (the reference path) do."""

LOCK_WAIT_S = 600.0
"""How long a process waits for another one that is compiling the kernels."""

LOCK_QUIET_S = 5.0
"""A wait shorter than this (another process loading the built kernels) is not announced."""


def build_name() -> str:
    """The kernels' build name: the source, flags, torch version and torch install folder
    hashed, so that different kernels, or the same kernels in two environments (whose build
    commands name each environment's include folders, so that each would find the other's
    build out of date), never rebuild each other's build."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(" ".join(COMPILE_FLAGS).encode())
    key.update(torch.__version__.encode())
    key.update(str(Path(torch.__file__).resolve().parent).encode())
    return f"spikegrad_engine_{key.hexdigest()[:12]}"


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """Hold an exclusive lock on the build folder for the time of one build.

    The lock is an ``flock`` on a file of our own, which the system releases when its holder
    dies (even by SIGKILL), so a killed build never blocks later ones. While it is held no
    other spikegrad process is building here, so a ``lock`` file that torch's own builder
    left behind (it stays when that builder is killed, and makes every later build wait
    forever) is stale, and is removed."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "spikegrad.lock", "w") as handle:
        deadline, told = time.monotonic() + LOCK_WAIT_S, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{build_dir}: another process has been compiling the "
                                       f"kernels for {LOCK_WAIT_S:.0f} s") from None
                if not told and time.monotonic() > deadline - LOCK_WAIT_S + LOCK_QUIET_S:
                    print(f"spikegrad: waiting for another process compiling the kernels in "
                          f"{build_dir}", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        try:
            (build_dir / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.cache
def available() -> bool:
    """Compile (or load the cached build of) the kernels; False when that is impossible."""
    keep_freed_memory()
    try:
        from torch.utils.cpp_extension import _get_build_directory, load

        scripts = sysconfig.get_path("scripts")  # where pip put ninja, if it did
        if shutil.which("ninja") is None and scripts:
            os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
        name = build_name()
        build_dir = Path(_get_build_directory(name, verbose=False))
        with _build_lock(build_dir):
            # compiled from a copy in the build folder: the same path for every install
            source = build_dir / SOURCE.name
            if not source.exists() or source.read_bytes() != SOURCE.read_bytes():
                shutil.copyfile(SOURCE, source)
            load(name=name, sources=[str(source)], extra_cflags=COMPILE_FLAGS,
                 extra_ldflags=["-fopenmp"], build_directory=str(build_dir),
                 is_python_module=False, verbose=False)
        _ops.name = name
        return True
    except Exception as error:  # no compiler, no ninja, unsupported platform ...
        warnings.warn(
            f"spikegrad: compiled kernels unavailable ({type(error).__name__}: "
            f"{first_line(error, empty='')}); using the PyTorch kernels",
            stacklevel=2,
        )
        return False


def _ops():
    return getattr(torch.ops, _ops.name)


_ops.name = "spikegrad_engine"


READS_SPARSE_FORMS = True
"""The loops project sparse inputs row by row (see ``kernels.cpp``)."""


def to_sparse(x: Tensor, max_density: float) -> Sparse | None:
    parts = _ops().to_sparse(x if x.stride(-1) == 1 else x.contiguous(), max_density)
    return tuple(parts) if parts else None


def sparse_form_of_coo(x: Tensor, max_density: float) -> Sparse | None:
    """The sparse form of a sparse COO [B, T, C] tensor (e.g. a batch of spike events),
    without a dense tensor; None when too dense, as :func:`to_sparse` would decide."""
    x = x if x.is_coalesced() else x.coalesce()
    try:
        parts = _ops().coo_to_sparse(x.indices(), x.values(), *x.shape, max_density)
    except RuntimeError as error:  # an entry outside the shape, or out of order
        if not str(error).startswith("inputs: "):
            raise
        raise InputError(first_line(error)) from None
    return tuple(parts) if parts else None


def sparse_mm(sparse: Sparse, wt: Tensor) -> Tensor:
    return _ops().sparse_mm(*sparse, wt.contiguous())


def sparse_tmm(sparse: Sparse, g: Tensor, columns: int) -> Tensor:
    return _ops().sparse_tmm(*sparse, g.contiguous(), columns)


def dense_tmm(x: Tensor, g: Tensor) -> Tensor:
    return _ops().dense_tmm(x if x.stride(-1) == 1 else x.contiguous(), g.contiguous())


def _sparse_args(sparse: Sparse | None, like: Tensor) -> Sparse:
    return sparse if sparse is not None else (like.new_empty(0),) * 4


def _decay_args(dynamics: LIFDynamics, like: Tensor) -> tuple:
    """The layer's decays as the kernels take them: β_m, 1 - β_m, β_s as numbers (0 when per
    neuron), then as [N] tensors (empty when one for the layer)."""
    if not dynamics.per_neuron:
        empty = like.new_empty(0)
        return (dynamics.beta_mem, 1.0 - dynamics.beta_mem, dynamics.beta_syn,
                empty, empty, empty)
    beta_mem, beta_syn = (b.detach().contiguous() for b in
                          per_neuron_decays(dynamics, like.shape[0], like))
    return 0.0, 0.0, 0.0, beta_mem, (1.0 - beta_mem).contiguous(), beta_syn


def _readout_args(readout: ReadoutDynamics | None) -> tuple[float, float, float]:
    if readout is None:
        return 0.0, 0.0, 0.0
    return readout.beta_mem, 1.0 - readout.beta_mem, readout.beta_syn


def lif_forward(
    x: Tensor | None, sparse_input: Sparse | None, weight: Tensor,
    recurrent_weight: Tensor | None, readout_weight: Tensor | None, dynamics: LIFDynamics,
    readout: ReadoutDynamics | None, keep_state: bool, batch: int, steps: int,
    write_spikes: bool = True, reduction: str | None = None, write_trace: bool = True,
    keep_current: bool = False,
) -> Forward:
    """A layer driven by x = W S_in ([B, T, N], time-major) or by the sparse form of S_in:
    S unless not ``write_spikes`` (with a readout only); U and P only with ``keep_state`` (P
    only for a differentiable reset), and I too with ``keep_current``; the sparse form only
    without a readout; with one its trace (when ``write_trace``) and its logits reduced by
    ``reduction``. The decays are the dynamics' numbers, or [N] tensors (per neuron)."""
    w = weight.detach()
    empty = w.new_empty(0)
    vt = empty if recurrent_weight is None else recurrent_weight.detach().t().contiguous()
    wt = empty if x is not None else w.t().contiguous()
    wot = empty if readout_weight is None else readout_weight.detach().t().contiguous()
    keep_pre_reset = not dynamics.detach_reset
    s, u, p, i, counts, *rest = _ops().lif_forward(
        empty if x is None else x, *_sparse_args(sparse_input, w), wt, vt, wot, batch, steps,
        *_decay_args(dynamics, w), keep_state, keep_pre_reset, keep_current, write_spikes,
        *_readout_args(readout), readout.initial_membrane if readout is not None else 0.0,
        REDUCTIONS[reduction], write_trace,
    )
    s = s if write_spikes else None
    u = u if keep_state else None
    p = p if keep_state and keep_pre_reset else None
    i = i if keep_state and keep_current else None
    if readout_weight is None:
        return Forward(s, u, p, i, counts, tuple(rest), None, None, None)
    trace, logits, argmax = rest
    return Forward(s, u, p, i, counts, None, trace if write_trace else None,
                   logits if reduction else None, argmax if reduction == "max" else None)


BLOCK_BYTES = 1 << 21
"""A surrogate the kernels do not know is evaluated by PyTorch on blocks of about this size."""


def recomputes_state(surrogate) -> bool:
    """Whether the backward loop can recompute U itself, a block of batch entries at a time (for
    ``recompute``): for the built-in surrogates, not for those PyTorch evaluates on U."""
    return surrogate.kernel_id != 0


def lif_backward(
    x: Tensor | None, sparse_input: Sparse | None, weight: Tensor,
    recurrent_weight: Tensor | None, grad: Tensor | None, grad_const: Tensor | None,
    dy: Tensor | None, readout_weight: Tensor | None, u: Tensor | None, p: Tensor | None,
    v: Tensor | None, dynamics: LIFDynamics, readout: ReadoutDynamics | None, batch: int,
    time_steps: int, steps: int, want_w: bool, want_v: bool, want_wo: bool, want_dx: bool,
    grad_logits: Tensor | None = None, argmax: Tensor | None = None,
    reduction: str | None = None, current: Tensor | None = None, want_decays: bool = False,
) -> tuple[Tensor | None, ...]:
    """(dL/dx, dW, dV, dW_out, dL/dβ_m, dL/dβ_s) of a layer (and its readout, when ``dy`` is
    given).

    The layer is driven as in :func:`lif_forward` (x, or the sparse input form with
    ``weight``; ``recurrent_weight``); U, P and I are ``u``, ``p``, ``current`` kept by the
    forward pass, or recomputed when ``u`` is None. dL/dx only with ``want_dx``; dW only from
    a sparse input form (else None: a dense product is the caller's); dV with ``want_v``;
    dW_out with ``want_wo``; the gradients of the per-neuron decays ([N] each) with
    ``want_decays`` (I is then needed with U). The gradient reaching S is ``grad``
    (time-major) plus ``grad_const`` ([B, N], the same at every step), either may be None;
    the readout's is ``dy`` (its trace's) plus what ``grad_logits`` of its ``reduction``
    gives; nothing reaches the layer after step ``steps``. ``v`` is V when gradients flow
    through the recurrence."""
    n = weight.shape[0]
    w = weight.detach()
    empty = w.new_empty(0)
    dx = empty
    if want_dx:
        dx = w.new_empty(time_steps, batch, n).transpose(0, 1)
        dx[:, steps:] = 0
    with_readout = dy is not None or grad_logits is not None
    k = readout_weight.shape[0] if with_readout else 0
    du, di = w.new_zeros(batch, n), w.new_zeros(batch, n)
    lu, li = w.new_zeros(batch, k), w.new_zeros(batch, k)
    surrogate = dynamics.surrogate
    shape = surrogate.kernel_id
    stored = u is not None
    reset_grad = not dynamics.detach_reset
    # W^T and V^T drive the forward loop, which runs again only when U is recomputed
    wt = w.t().contiguous() if x is None and sparse_input is not None and not stored else empty
    vt = (empty if recurrent_weight is None or stored
          else recurrent_weight.detach().t().contiguous())
    want_w = want_w and sparse_input is not None
    decays = _decay_args(dynamics, w)
    common = (
        empty if grad is None else grad, empty if grad_const is None else grad_const,
        empty if dy is None else dy, empty if grad_logits is None else grad_logits.contiguous(),
        empty.new_empty(0, dtype=torch.int32) if argmax is None else argmax,
        REDUCTIONS[reduction if grad_logits is not None else None],
        empty if not with_readout else readout_weight.detach().contiguous(),
        empty if x is None or stored else x, *_sparse_args(sparse_input, w), wt, vt,
    )
    tail = (empty if v is None else v.detach().contiguous(), du, di, lu, li, dx,
            weight.shape[1], time_steps, reset_grad, want_w, want_v, want_wo)
    betas = (*decays[:3], *_readout_args(readout))
    if not stored:
        parts = _ops().lif_backward(*common, empty, empty, empty, shape, surrogate.slope,
                                    surrogate.scale, *tail, 0, steps, *betas, *decays[3:],
                                    empty, want_decays)
        return _results(parts, want_dx, dx, want_w, want_v, want_wo, want_decays)
    if want_decays and current is None:
        raise ValueError("lif_backward: the decays' gradients need the current I kept with U")
    cur = current if want_decays else empty
    block = (max(1, steps) if shape else
             max(1, BLOCK_BYTES // max(1, batch * n * w.element_size())))
    total = None
    for stop in range(steps, 0, -block):
        start = max(0, stop - block)
        sg = empty if shape else surrogate.derivative_like(
            u.transpose(0, 1)[start:stop] - THRESHOLD)
        parts = _ops().lif_backward(*common, u, empty if p is None else p, sg, shape,
                                    surrogate.slope, surrogate.scale, *tail, start, stop,
                                    *betas, *decays[3:], cur, want_decays)
        total = parts if total is None else [a.add_(b) for a, b in zip(total, parts, strict=True)]
    if total is None:  # no gradient reaches the layer at all
        total = [w.new_zeros(weight.shape[1], n) if want_w else empty,
                 w.new_zeros(n, n) if want_v else empty,
                 w.new_zeros(n, k) if want_wo else empty,
                 *([w.new_zeros(n), w.new_zeros(n)] if want_decays else [empty, empty])]
    return _results(total, want_dx, dx, want_w, want_v, want_wo, want_decays)


def _results(parts, want_dx, dx, want_w, want_v, want_wo, want_decays):
    grad_w, grad_v, grad_wo, grad_beta_mem, grad_beta_syn = parts
    return (dx if want_dx else None, grad_w.t() if want_w else None,
            grad_v.t() if want_v else None, grad_wo.t() if want_wo else None,
            grad_beta_mem if want_decays else None, grad_beta_syn if want_decays else None)


def last_active_step(t: Tensor) -> int:
    return _ops().last_active_step(t)


def leaky_filter(x: Tensor, dynamics: ReadoutDynamics) -> Tensor:
    return _ops().leaky_filter(x, dynamics.beta_mem, 1.0 - dynamics.beta_mem,
                               dynamics.beta_syn, dynamics.initial_membrane)


def leaky_filter_backward(dy: Tensor, dynamics: ReadoutDynamics) -> Tensor:
    return _ops().leaky_filter_backward(dy, dynamics.beta_mem, 1.0 - dynamics.beta_mem,
                                        dynamics.beta_syn)

"""The compiled CPU kernels (``kernels.cpp``): built on first use, then cached.

The source is compiled with ``torch.utils.cpp_extension`` into the torch extensions
cache (``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) the first
time the engine runs on a CPU tensor (tens of seconds, once per machine and torch
version). When no compiler is available, or ``SPIKEGRAD_ENGINE=torch`` is set, the engine
uses the pure-PyTorch kernels of :mod:`spikegrad.engine.torch_kernels` instead.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import sys
import sysconfig
import warnings
from pathlib import Path

import torch
from torch import Tensor

from spikegrad import surrogates
from spikegrad.functional import THRESHOLD
from spikegrad.surrogates import Surrogate

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


@functools.cache
def available() -> bool:
    """Compile (or load the cached build of) the kernels; False when that is impossible."""
    if os.environ.get("SPIKEGRAD_ENGINE", "").lower() == "torch":
        return False
    keep_freed_memory()
    try:
        from torch.utils.cpp_extension import load

        scripts = sysconfig.get_path("scripts")  # where pip put ninja, if it did
        if shutil.which("ninja") is None and scripts:
            os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
        flags = ["-O3", "-fopenmp"] + (["-march=native"] if sys.platform == "linux" else [])
        load(
            name="spikegrad_engine",
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
        return True
    except Exception as error:  # no compiler, no ninja, unsupported platform ...
        warnings.warn(
            f"spikegrad: compiled kernels unavailable ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); using the PyTorch kernels",
            stacklevel=2,
        )
        return False


def _ops():
    return torch.ops.spikegrad_engine


def to_sparse(x: Tensor, max_density: float,
              time_major_batch: int = 0) -> tuple[Tensor, Tensor, Tensor] | None:
    parts = _ops().to_sparse(x, max_density, time_major_batch)
    return tuple(parts) if parts else None


def sparse_mm(sparse: tuple[Tensor, Tensor, Tensor], wt: Tensor) -> Tensor:
    return _ops().sparse_mm(*sparse, wt.contiguous())


def sparse_tmm(sparse: tuple[Tensor, Tensor, Tensor], g: Tensor, columns: int) -> Tensor:
    return _ops().sparse_tmm(*sparse, g.contiguous(), columns)


def _csr(sparse: tuple[Tensor, Tensor, Tensor] | None, like: Tensor) -> tuple[Tensor, ...]:
    return sparse if sparse is not None else (like.new_empty(0),) * 3


def lif_forward(
    x: Tensor | None, sparse_input: tuple[Tensor, Tensor, Tensor] | None, weight: Tensor,
    recurrent_weight: Tensor | None, beta_mem: float, beta_syn: float, keep_pre_reset: bool,
    batch: int, steps: int,
) -> tuple[Tensor, Tensor, Tensor | None, tuple[Tensor, ...], tuple[Tensor, ...]]:
    w = weight.detach()
    empty = w.new_empty(0)
    vt = empty if recurrent_weight is None else recurrent_weight.detach().t().contiguous()
    wt = empty if x is not None else w.t().contiguous()
    s, u, p, *sparse = _ops().lif_forward(
        empty if x is None else x, *_csr(sparse_input, w), wt, vt, batch, steps, beta_mem,
        1.0 - beta_mem, beta_syn, keep_pre_reset,
    )
    return s, u, p if keep_pre_reset else None, tuple(sparse[:3]), tuple(sparse[3:])


BLOCK_BYTES = 1 << 21
"""A surrogate the kernels do not know is evaluated by PyTorch on blocks of about this size."""

_BUILTIN_SHAPES = {
    surrogates.superspike: 1, surrogates.sigmoid_derivative: 2, surrogates.esser: 3,
    surrogates.superspike_asymptotic: 4, surrogates.exponential: 5, surrogates.arctan: 6,
    surrogates.gaussian: 7, surrogates.true_gradient: 8, surrogates.constant: 9,
}


def lif_backward(
    grad: Tensor, s: Tensor, u: Tensor, p: Tensor | None, v: Tensor | None,
    beta_mem: float, beta_syn: float, surrogate: Surrogate, steps: int,
    sparse_input: tuple[Tensor, Tensor, Tensor] | None,
    sparse_spikes: tuple[Tensor, Tensor, Tensor] | None, input_columns: int, want_dx: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    batch, _, n = grad.shape
    empty = grad.new_empty(0)
    dx = _empty_time_major(grad) if want_dx else empty
    if want_dx:
        dx[:, steps:] = 0
    du, di = grad.new_zeros(batch, n), grad.new_zeros(batch, n)
    p = empty if p is None else p
    v = empty if v is None else v.detach().contiguous()
    shape = _BUILTIN_SHAPES.get(surrogates.get_surrogate_shape(surrogate.name).derivative, 0)
    step_bytes = batch * n * grad.element_size()
    block = max(1, steps) if shape else max(1, BLOCK_BYTES // max(1, step_bytes))
    grad_w = None if sparse_input is None else grad.new_zeros(input_columns, n)
    grad_v = None if sparse_spikes is None else grad.new_zeros(n, n)
    for stop in range(steps, 0, -block):
        start = max(0, stop - block)
        sg = empty if shape else surrogate.derivative(
            u.transpose(0, 1)[start:stop] - THRESHOLD).contiguous()
        part_w, part_v = _ops().lif_backward(
            grad, s, sg, u, shape, surrogate.slope, surrogate.scale, p, v, du, di, dx,
            *_csr(sparse_input, grad), input_columns, *_csr(sparse_spikes, grad), start, stop,
            beta_mem, 1.0 - beta_mem, beta_syn,
        )
        if grad_w is not None:
            grad_w += part_w
        if grad_v is not None:
            grad_v += part_v
    return (dx if want_dx else None, None if grad_w is None else grad_w.t(),
            None if grad_v is None else grad_v.t())


def _empty_time_major(like: Tensor) -> Tensor:
    batch, steps, n = like.shape
    return like.new_empty(steps, batch, n).transpose(0, 1)


def last_active_step(grad: Tensor) -> int:
    return _ops().last_active_step(grad)


def leaky_filter(x: Tensor, beta_mem: float, beta_syn: float) -> Tensor:
    return _ops().leaky_filter(x.contiguous(), beta_mem, 1.0 - beta_mem, beta_syn)


def leaky_filter_backward(dy: Tensor, beta_mem: float, beta_syn: float) -> Tensor:
    return _ops().leaky_filter_backward(dy.contiguous(), beta_mem, 1.0 - beta_mem, beta_syn)

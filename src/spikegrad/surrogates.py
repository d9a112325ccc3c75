"""Surrogate derivatives of the spike non-linearity.

The forward pass of a spiking unit is always the exact Heaviside step
``S = Θ(x)`` with ``x = U - threshold`` and ``Θ(0) = 0``. Only the backward pass
replaces the derivative of Θ (zero almost everywhere) by a surrogate ``σ'(x)``.

Every surrogate is a plain function ``derivative(x, slope) -> Tensor`` in its
*natural* form (the formulas of Zenke & Vogels 2021, Table 1). A separate
``scale`` multiplies it, so the peak height of the surrogate actually used is
``scale * natural_peak(slope)``:

=========================  ==================================  ==============
name                       natural σ'(x)                       natural peak
=========================  ==================================  ==============
``superspike``             1 / (β|x| + 1)^2                    1
``sigmoid``                s(x)(1 - s(x)), s = 1/(1+e^{-βx})   1/4
``esser``                  max(0, 1 - β|x|)                    1
``superspike_asymptotic``  β / (β|x| + 1)^2                    β
``exponential``            exp(-β|x|)                          1
``arctan``                 1 / (1 + (π β x / 2)^2)             1
``gaussian``               exp(-(β x)^2 / 2)                   1
``true``                   0  (the true derivative, a.e.)      0
``constant``               1  (β is ignored)                   1
=========================  ==================================  ==============

Add your own with one decorated function::

    @spikegrad.register_surrogate("triangle_squared")
    def triangle_squared(x, slope):
        return torch.clamp(1 - slope * x.abs(), min=0) ** 2
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from spikegrad.errors import first_line

DerivativeFn = Callable[[Tensor, float], Tensor]


@dataclass(frozen=True)
class SurrogateShape:
    """A registered surrogate: its natural derivative, a description, and the index of the
    same formula in the fast engine's compiled kernels (``kernels.cpp``, enum ``Shape``;
    0 for surrogates the kernels do not know, which PyTorch evaluates instead)."""

    name: str
    derivative: DerivativeFn
    description: str
    kernel_id: int = 0

    def natural_peak(self, slope: float) -> float:
        """Height of the natural derivative at x = 0 (its maximum for all built-ins)."""
        return float(self.derivative(torch.zeros((), dtype=torch.float64), slope))


SURROGATES: dict[str, SurrogateShape] = {}


def register_surrogate(name: str, description: str | None = None, *, kernel_id: int = 0):
    """Decorator that adds ``fn(x, slope) -> σ'(x)`` to the registry under ``name``.

    ``kernel_id`` is for the built-ins only: the index of the same formula in the compiled
    kernels (a test holds each equal to its Python definition)."""

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"surrogate name: expected a non-empty string, got {name!r}")

    def decorator(fn: DerivativeFn) -> DerivativeFn:
        if name in SURROGATES:
            raise ValueError(f"surrogate {name!r} is already registered")
        if not callable(fn):
            raise TypeError(f"surrogate {name!r}: expected a function fn(x, slope), got {fn!r}")
        try:
            inspect.signature(fn).bind(None, None)
        except TypeError:
            raise TypeError(f"surrogate {name!r}: the function must take (x, slope)") from None
        except ValueError:  # no signature to inspect (some built-in callables)
            pass
        doc_lines = (fn.__doc__ or "").strip().splitlines()
        text = description or (doc_lines[0] if doc_lines else name)
        SURROGATES[name] = SurrogateShape(name=name, derivative=fn, description=text,
                                          kernel_id=kernel_id)
        return fn

    return decorator


def get_surrogate_shape(name: str) -> SurrogateShape:
    try:
        return SURROGATES[name]
    except KeyError:
        known = ", ".join(sorted(SURROGATES))
        raise ValueError(f"unknown surrogate {name!r} (known: {known})") from None


@register_surrogate("superspike", kernel_id=1)
def superspike(x: Tensor, slope: float) -> Tensor:
    """SuperSpike / fast sigmoid: 1 / (β|x| + 1)^2, peak 1."""
    return 1.0 / (slope * x.abs() + 1.0) ** 2


@register_surrogate("sigmoid", kernel_id=2)
def sigmoid_derivative(x: Tensor, slope: float) -> Tensor:
    """Derivative of the logistic sigmoid: s(x)(1 - s(x)), s(x) = 1/(1 + exp(-βx)), peak 1/4."""
    s = torch.sigmoid(slope * x)
    return s * (1.0 - s)


@register_surrogate("esser", kernel_id=3)
def esser(x: Tensor, slope: float) -> Tensor:
    """Piecewise linear (Esser et al. 2016): max(0, 1 - β|x|), peak 1."""
    return torch.clamp(1.0 - slope * x.abs(), min=0.0)


@register_surrogate("superspike_asymptotic", kernel_id=4)
def superspike_asymptotic(x: Tensor, slope: float) -> Tensor:
    """Asymptotic SuperSpike: β / (β|x| + 1)^2, peak β (tends to a delta as β grows)."""
    return slope / (slope * x.abs() + 1.0) ** 2


@register_surrogate("exponential", kernel_id=5)
def exponential(x: Tensor, slope: float) -> Tensor:
    """Exponential: exp(-β|x|), peak 1."""
    return torch.exp(-slope * x.abs())


@register_surrogate("arctan", kernel_id=6)
def arctan(x: Tensor, slope: float) -> Tensor:
    """Arctan derivative, normalised: 1 / (1 + (π β x / 2)^2), peak 1."""
    return 1.0 / (1.0 + (0.5 * math.pi * slope * x) ** 2)


@register_surrogate("gaussian", kernel_id=7)
def gaussian(x: Tensor, slope: float) -> Tensor:
    """Gaussian: exp(-(β x)^2 / 2), peak 1."""
    return torch.exp(-0.5 * (slope * x) ** 2)


@register_surrogate("true", kernel_id=8)
def true_gradient(x: Tensor, slope: float) -> Tensor:
    """The true derivative of the step function: zero almost everywhere (control)."""
    return torch.zeros_like(x)


@register_surrogate("constant", kernel_id=9)
def constant(x: Tensor, slope: float) -> Tensor:
    """Constant surrogate σ'(x) = 1 (β = 0 limit; control)."""
    return torch.ones_like(x)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate in use: shape name, slope β and scale (multiplies the natural form)."""

    name: str = "superspike"
    slope: float = 10.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        """Checked as the config's ``surrogate`` section is, with the same messages (a
        :class:`~spikegrad.config.ConfigError`)."""
        from spikegrad.config import SurrogateConfig, validate_section

        validate_section(SurrogateConfig, {"name": self.name, "slope": self.slope,
                                           "scale": self.scale}, "surrogate")

    def derivative(self, x: Tensor) -> Tensor:
        """σ'(x) = scale * natural_derivative(x, slope)."""
        return self.scale * get_surrogate_shape(self.name).derivative(x, self.slope)

    def derivative_like(self, x: Tensor) -> Tensor:
        """σ'(x) as a contiguous tensor of x's shape and dtype, as the compiled kernels read
        it: a user's function may return a number or a tensor that broadcasts to x (as the
        reference path's product would take it); anything else is a ValueError naming the
        surrogate."""
        value = self.derivative(x)
        try:
            value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            return torch.broadcast_to(value, x.shape).contiguous()
        except (RuntimeError, TypeError, ValueError) as error:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"surrogate {self.name!r}: its derivative of a {tuple(x.shape)} "
                             f"tensor returned {shape}, which is not of that shape "
                             f"({first_line(error)})") from None

    @property
    def kernel_id(self) -> int:
        """Index of this shape in the compiled kernels (0: evaluated by PyTorch)."""
        return get_surrogate_shape(self.name).kernel_id

    @property
    def peak(self) -> float:
        return self.scale * get_surrogate_shape(self.name).natural_peak(self.slope)


def heaviside(x: Tensor) -> Tensor:
    """The exact forward spike non-linearity Θ(x), with Θ(0) = 0."""
    return (x > 0).to(x.dtype)


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


def spike(x: Tensor, surrogate: Surrogate) -> Tensor:
    """S = Θ(x) in the forward pass; dS/dx = σ'(x) in the backward pass."""
    return _SpikeFunction.apply(x, surrogate)

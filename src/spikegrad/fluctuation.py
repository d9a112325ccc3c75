"""Fluctuation-driven initialisation (Rossbroich, Gygax & Zenke 2022, "Fluctuation-driven
initialization for spiking neural network training", Neuromorph. Comput. Eng. 2, 044016).

The weights of each hidden layer are drawn from N(μ_W, σ_W²) with μ_W and σ_W chosen so
that, at initialisation, the free membrane potential (the membrane without threshold and
reset, driven by the layer's synaptic input) has a target mean μ_U and standard deviation
σ_U (the threshold is 1). For a neuron with n inputs firing as Poisson processes of rate ν,
Campbell's theorem gives the mean and variance of its free membrane potential
U(t) = Σ_j W_j Σ_k ε(t - t_j^k), and their expectation over the weights is the paper's pair
of equations for μ_U and σ_U² (its theory section, from Campbell's theorem)::

    μ_U  = n μ_W ν ε̄                    ε̄ = ∫ ε(t) dt
    σ_U² = n (σ_W² + μ_W²) ν ε̂          ε̂ = ∫ ε(t)² dt

(this is the version with the mean term, as in the authors' stork library), so::

    μ_W  = μ_U / (n ν ε̄)
    σ_W² = σ_U² / (n ν ε̂) - μ_W²

ε is the discrete PSP kernel of this package's LIF dynamics (:mod:`spikegrad.functional`):
the free membrane's response to one unit input at step 0 (:func:`psp_kernel`); the
integrals are the sums ε̄ = Σ_n ε[n] dt and ε̂ = Σ_n ε[n]² dt at the configured dt. The rate
ν is estimated from a batch of the real data, layer by layer: the batch is propagated through
the layers already initialised below. For spike inputs ν ε̂ is the mean of S² per unit time,
which equals the rate for 0/1 spikes; the second moment is used for ε̂ (and the mean for ε̄)
so that current inputs and multi-spike bins are treated by the same formula.

A recurrent layer splits the variance between its feed-forward input W (a fraction α,
``recurrent_fraction``, 0.9 by default) and its recurrent input V (1 - α), with one μ_W for
both, as the paper does; here the split applies to the variance left after the mean
weight's own part (for Poisson inputs)::

    μ_W         = μ_U / ((n_ff ν_ff + n_rec ν_rec) ε̄)
    σ_W,ff²     = α (σ_U² - μ_W² (n_ff ν_ff + n_rec ν_rec) ε̂) / (n_ff ν_ff ε̂)
    σ_W,rec²    = (1 - α) (σ_U² - μ_W² (n_ff ν_ff + n_rec ν_rec) ε̂) / (n_rec ν_rec ε̂)

(stork's ``FluctuationDrivenNormalInitializer`` subtracts μ_W² from each part instead;
with α of the variance, that part can turn negative for a correlated recurrent input).

``moments="measured"`` (the config's default) keeps these formulas but measures the input
moments on the batch instead of deriving them from ν under the Poisson assumption: with x_j
input j filtered by ε, n ν ε̄ becomes Σ_j E[x_j], n ν ε̂ in the σ_W² term Σ_j Var[x_j] and
in the μ_W² term Var[Σ_j x_j] (moments over samples and time steps). For independent
Poisson inputs these are the same numbers; for real data (one spike per input and trial in
Randman, bursty and correlated hidden layers) they are what makes the targets hold
(:class:`InputStatistics`).

ν_rec is the layer's own output rate, which depends on V: it is found by a few fixed-point
passes (draw, run the layer, measure its rate, rescale the same draws).

This module depends only on :mod:`spikegrad.functional`; a network is anything with
``hidden`` layers that have ``weight``, ``recurrent_weight``, ``dynamics`` and a forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from spikegrad.errors import SpikegradError
from spikegrad.functional import leaky_membrane, synaptic_current

KERNEL_TOLERANCE = 1e-12
"""The kernel is simulated until it falls below this fraction of its peak (after its peak)."""
KERNEL_MAX_STEPS = 1_000_000
RECURRENT_PASSES = 3
"""Fixed-point passes for the rate of a recurrent layer's own output."""
BALANCED_RECURRENT_PASSES = 6
"""The same for a recurrent Dale layer, whose mean input is the difference of excitation and
inhibition and so depends more on its own rates (on Randman, three recurrent E/I layers:
membrane means -0.08 and -0.09 in the deeper two after 3 passes, -0.02 after 6)."""


class FluctuationInitError(SpikegradError, ValueError):
    """The targets cannot be met for a layer (silent inputs, or a σ_U too small for μ_U)."""


def psp_kernel(beta_mem: float, beta_syn: float) -> Tensor:
    """ε[n], n = 0, 1, ...: the free membrane's response to one unit input at step 0 under
    ``I[n+1] = β_syn I[n] + x[n]``, ``U[n+1] = β_mem U[n] + (1 - β_mem) I[n]``, from rest
    (float64; ε[0] = ε[1] = 0, simulated until the tail is below
    :data:`KERNEL_TOLERANCE` of the peak)."""
    values = []
    membrane, current, peak = 0.0, 0.0, 0.0
    for n in range(KERNEL_MAX_STEPS):
        values.append(membrane)
        peak = max(peak, membrane)
        if n > 2 and membrane < peak * KERNEL_TOLERANCE and current < peak * KERNEL_TOLERANCE:
            break
        membrane, current = (leaky_membrane(membrane, current, beta_mem),
                             synaptic_current(current, 1.0 if n == 0 else 0.0, beta_syn))
    return torch.tensor(values, dtype=torch.float64)


def psp_integrals(beta_mem: float, beta_syn: float, dt_ms: float) -> tuple[float, float]:
    """(ε̄, ε̂) = (Σ_n ε[n] dt, Σ_n ε[n]² dt) of :func:`psp_kernel`, in ms."""
    kernel = psp_kernel(beta_mem, beta_syn)
    return float(kernel.sum()) * dt_ms, float((kernel**2).sum()) * dt_ms


Moments = Literal["poisson", "measured"]


@dataclass(frozen=True)
class InputStatistics:
    """What the initialiser needs of one group of a layer's inputs (feed-forward or
    recurrent), as sums over its n inputs j of the PSP-filtered input x_j = ε * S_j:
    ``drive`` = Σ_j E[x_j] (membrane mean per unit weight), ``spread`` = Σ_j Var[x_j]
    (membrane variance per unit weight variance) and ``common`` = Var[Σ_j x_j] (membrane
    variance per squared mean weight). ``rate`` is the mean input per ms (spikes/ms)."""

    n: int
    rate: float
    drive: float
    spread: float
    common: float

    @classmethod
    def poisson(cls, inputs: Tensor, epsilon_bar: float, epsilon_hat: float,
                dt_ms: float) -> InputStatistics:
        """The paper's: inputs taken for independent Poisson trains of the batch's mean rate
        ν (Campbell's theorem): drive n ν ε̄, spread and common n ν₂ ε̂, where ν₂ is the mean
        square per ms (ν itself for 0/1 spikes)."""
        x = inputs.detach().to(torch.float64)
        n = int(inputs.shape[-1])
        rate, rate_2 = float(x.mean()) / dt_ms, float((x * x).mean()) / dt_ms
        return cls(n, rate, n * rate * epsilon_bar, n * rate_2 * epsilon_hat,
                   n * rate_2 * epsilon_hat)

    @classmethod
    def measured(cls, inputs: Tensor, beta_mem: float, beta_syn: float,
                 dt_ms: float) -> InputStatistics:
        """The same sums measured on the batch: each input filtered by the PSP kernel (the
        free membrane it alone would drive through a unit weight), moments over batch and
        time steps."""
        x = free_membrane(inputs.detach().to(torch.float64), beta_mem, beta_syn)
        return cls.from_filtered(inputs, x.reshape(-1, x.shape[-1]), dt_ms)

    @classmethod
    def from_filtered(cls, inputs: Tensor, flat: Tensor, dt_ms: float) -> InputStatistics:
        """:meth:`measured` of ``inputs`` [B, T, n] whose PSP-filtered form is ``flat``
        [B T, n] (filtered already, e.g. with more inputs than these)."""
        return cls(int(inputs.shape[-1]), float(inputs.detach().double().mean()) / dt_ms,
                   float(flat.mean(dim=0).sum()), float(flat.var(dim=0, correction=0).sum()),
                   float(flat.sum(dim=1).var(correction=0)))


@dataclass(frozen=True)
class LayerInit:
    """The fluctuation-driven parameters chosen for one hidden layer (rates in spikes/ms)."""

    layer: int
    rate: float
    mu_w: float
    sigma_w: float
    recurrent_rate: float | None = None
    recurrent_sigma_w: float | None = None
    inhibitory_scale: float | None = None
    """Dale's law: a_I, the mean magnitude of the inhibitory weights (μ_W is then 0 and
    ``sigma_w``, ``recurrent_sigma_w`` are the a_g of the excitatory or unconstrained inputs:
    an exponential distribution's mean, or a normal one's standard deviation)."""


def weight_moments(
    mu_u: float, sigma_u: float, feedforward: InputStatistics,
    recurrent: InputStatistics | None = None, recurrent_fraction: float = 0.9,
) -> tuple[float, float, float | None]:
    """(μ_W, σ_W of W, σ_W of V or None) for the targets μ_U, σ_U: μ_W = μ_U / Σ drive, and
    per group σ_W² = fraction (σ_U² - μ_W² Σ common) / spread, the fraction being 1 without
    recurrent inputs, else α for W and 1 - α for V (see the module docstring)."""
    parts = [(feedforward, recurrent_fraction if recurrent is not None else 1.0)]
    if recurrent is not None:
        parts.append((recurrent, 1.0 - recurrent_fraction))
    if feedforward.spread <= 0.0:
        raise FluctuationInitError("the layer's inputs are silent (or constant) in the batch: "
                                   "nothing to scale the weights by")
    mu_w = mu_u / sum(s.drive for s, _ in parts)
    left = sigma_u**2 - mu_w**2 * sum(s.common for s, _ in parts)
    if left < 0.0:
        raise FluctuationInitError(
            f"sigma_u {sigma_u} is too small for mu_u {mu_u}: the mean weight alone gives "
            f"more membrane variance than the target")
    sigmas = [math.sqrt(fraction * left / stats.spread)
              if stats.spread > 0.0 and fraction > 0.0 else 0.0 for stats, fraction in parts]
    return mu_w, sigmas[0], (sigmas[1] if recurrent is not None else None)


def input_statistics(inputs: Tensor, dynamics, dt_ms: float,
                     moments: Moments) -> InputStatistics:
    """:class:`InputStatistics` of ``inputs`` [B, T, C] for a layer of ``dynamics``."""
    if moments == "poisson":
        epsilon_bar, epsilon_hat = psp_integrals(dynamics.beta_mem, dynamics.beta_syn, dt_ms)
        return InputStatistics.poisson(inputs, epsilon_bar, epsilon_hat, dt_ms)
    if moments == "measured":
        return InputStatistics.measured(inputs, dynamics.beta_mem, dynamics.beta_syn, dt_ms)
    raise ValueError(f"unknown moments {moments!r} (known: poisson, measured)")


def free_membrane(current_input: Tensor, beta_mem: float, beta_syn: float) -> Tensor:
    """The free membrane U[0..T-1] [B, T, N] driven by the synaptic input x[n] [B, T, N]
    (the W S_in[n] (+ V S[n]) term), without threshold and reset, from rest."""
    batch, steps, width = current_input.shape
    membrane = current_input.new_zeros(batch, width)
    current = current_input.new_zeros(batch, width)
    trace = []
    for n in range(steps):
        trace.append(membrane)
        membrane, current = (leaky_membrane(membrane, current, beta_mem),
                             synaptic_current(current, current_input[:, n], beta_syn))
    return torch.stack(trace, dim=1)


def layer_free_membrane(layer, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """(free membrane [B, T, N], output spikes [B, T, N]) of a hidden layer on ``inputs``:
    the layer runs as usual (threshold, reset) and the free membrane is the linear response
    to its total synaptic input, W S_in and, in a recurrent layer, V S of its own spikes."""
    with torch.no_grad():
        spikes = layer(inputs)
        drive = inputs @ layer.weight.t()
        if layer.recurrent_weight is not None:
            drive = drive + spikes @ layer.recurrent_weight.t()
        d = layer.dynamics
        return free_membrane(drive, d.beta_mem, d.beta_syn), spikes


def fluctuation_init(
    model, inputs: Tensor, mu_u: float = 0.0, sigma_u: float = 1.0,
    recurrent_fraction: float = 0.9, dt_ms: float = 1.0, *, moments: Moments = "poisson",
    recurrent: bool = True, generator: torch.Generator | None = None,
) -> list[LayerInit]:
    """Initialise every hidden layer's W (and, with ``recurrent``, every recurrent V) of
    ``model`` in place so that its free membrane has mean ``mu_u`` and standard deviation
    ``sigma_u`` at init, from a batch of the real data ``inputs`` [B, T, C] propagated
    through the layers below, which are initialised first. ``dt_ms`` is the time step of
    the dynamics: it scales the reported rates (spikes/ms) and the kernel integrals (ms),
    not the weights, in which it cancels (ν ε̄ = mean input per step × Σ ε[n]). ``moments``
    is ``poisson`` (the paper's formulas from the input rate) or ``measured`` (the input
    moments measured on the batch).
    The readout and, without ``recurrent``, the V matrices are left as they are. Returns the
    parameters chosen per layer."""
    chosen = []
    x = inputs.detach()
    signs = ({id(c.weight): c.sign for c in model.sign_constraints()}
             if hasattr(model, "sign_constraints") else {})
    with torch.no_grad():
        for index, layer in enumerate(model.hidden):
            with_recurrent = recurrent and layer.recurrent_weight is not None
            ff_sign = signs.get(id(layer.weight))
            rec_sign = (signs.get(id(layer.recurrent_weight))
                        if layer.recurrent_weight is not None else None)
            try:
                if ff_sign is None and rec_sign is None:
                    x, info = _init_layer(layer, x, index, mu_u, sigma_u, recurrent_fraction,
                                          dt_ms, moments, with_recurrent, generator)
                else:
                    if mu_u != 0.0:
                        raise FluctuationInitError(
                            f"Dale's law: sign-constrained layers are initialised in the "
                            f"balanced state, mu_u 0 (got {mu_u})")
                    if rec_sign is not None and not with_recurrent:
                        raise FluctuationInitError(
                            "Dale's law: the sign-constrained V needs the fluctuation scheme "
                            "too (its inhibition balances the input)")
                    x, info = _init_signed_layer(layer, x, index, sigma_u, recurrent_fraction,
                                                 dt_ms, moments, ff_sign, rec_sign,
                                                 with_recurrent, generator)
            except FluctuationInitError as error:
                raise FluctuationInitError(f"hidden layer {index}: {error}") from None
            chosen.append(info)
    return chosen


def _init_layer(layer, x: Tensor, index: int, mu_u: float, sigma_u: float, fraction: float,
                dt_ms: float, moments: Moments, with_recurrent: bool,
                generator: torch.Generator | None) -> tuple[Tensor, LayerInit]:
    weight, d = layer.weight, layer.dynamics
    ff = input_statistics(x, d, dt_ms, moments)
    z_ff = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
    if not with_recurrent:
        mu_w, sigma_w, _ = weight_moments(mu_u, sigma_u, ff)
        weight.copy_((mu_w + sigma_w * z_ff).to(weight.dtype))
        return layer(x), LayerInit(index, ff.rate, mu_w, sigma_w)
    v = layer.recurrent_weight
    z_rec = torch.randn(v.shape, generator=generator, dtype=torch.float64)
    own = InputStatistics(v.shape[1], 0.0, 0.0, 0.0, 0.0)  # first pass: V = 0
    for _ in range(RECURRENT_PASSES + 1):
        used = own
        mu_w, sigma_w, sigma_rec = weight_moments(mu_u, sigma_u, ff, used, fraction)
        weight.copy_((mu_w + sigma_w * z_ff).to(weight.dtype))
        v.copy_(((mu_w if used.spread > 0.0 else 0.0) + sigma_rec * z_rec).to(v.dtype))
        spikes = layer(x)
        own = input_statistics(spikes, d, dt_ms, moments)
    return spikes, LayerInit(index, ff.rate, mu_w, sigma_w, used.rate, sigma_rec)


@dataclass(frozen=True)
class InputGroup:
    """One group of a layer's inputs under Dale's law: the excitatory (``sign`` +1) or
    inhibitory (-1) columns of W (``side`` feedforward) or V (recurrent), or all columns of an
    unconstrained matrix (``sign`` 0), with its :class:`InputStatistics` (D_g = ``drive``,
    S_g = ``spread``); ``total`` is the group sum X_g per sample and time step (measured
    moments) or None (Poisson: X_g independent of the others, of variance ``common``)."""

    side: Literal["feedforward", "recurrent"]
    sign: int
    columns: Tensor
    stats: InputStatistics
    total: Tensor | None


def input_groups(inputs: Tensor, sign: Tensor | None, side: Literal["feedforward", "recurrent"],
                 dynamics, dt_ms: float, moments: Moments) -> list[InputGroup]:
    """The :class:`InputGroup` s of ``inputs`` [B, T, C] into a layer of ``dynamics`` through a
    matrix whose columns have the signs ``sign`` (None: unconstrained, one group)."""
    x_in = inputs.detach().to(torch.float64)
    if sign is None:
        parts = [(0, torch.ones(x_in.shape[-1], dtype=torch.bool))]
    else:
        parts = [(value, sign.to(x_in) == value) for value in (1, -1)]
        parts = [(value, mask) for value, mask in parts if bool(mask.any())]
    if moments == "measured":  # filtered once for all groups
        flat = free_membrane(x_in, dynamics.beta_mem, dynamics.beta_syn)
        flat = flat.reshape(-1, flat.shape[-1])
    groups = []
    for value, mask in parts:
        inside = x_in[..., mask]
        if moments == "measured":
            x = flat[:, mask]
            groups.append(InputGroup(side, value, mask,
                                     InputStatistics.from_filtered(inside, x, dt_ms),
                                     x.sum(dim=1)))
        else:
            groups.append(InputGroup(side, value, mask,
                                     input_statistics(inside, dynamics, dt_ms, moments), None))
    return groups


def poisson_groups(sign: Tensor, rate_per_step: float, dynamics,
                   dt_ms: float) -> list[InputGroup]:
    """The recurrent groups of a layer whose own neurons are taken for independent Poisson
    trains of ``rate_per_step`` (the first pass, before any of its spikes are measured)."""
    epsilon_bar, epsilon_hat = psp_integrals(dynamics.beta_mem, dynamics.beta_syn, 1.0)
    groups = []
    for value in (1, -1):
        mask = sign == value
        n = int(mask.sum())
        if n:
            drive, spread = n * rate_per_step * epsilon_bar, n * rate_per_step * epsilon_hat
            stats = InputStatistics(n, rate_per_step / dt_ms, drive, spread, spread)
            groups.append(InputGroup("recurrent", value, mask, stats, None))
    return groups


def group_covariance(groups: list[InputGroup]) -> Tensor:
    """C_gh = Cov(X_g, X_h): measured where both group sums are, S_g on the diagonal of a
    Poisson group, 0 between a Poisson group and any other."""
    size = len(groups)
    covariance = torch.zeros(size, size, dtype=torch.float64)
    for g, first in enumerate(groups):
        for h, second in enumerate(groups):
            if first.total is not None and second.total is not None:
                a, b = first.total - first.total.mean(), second.total - second.total.mean()
                covariance[g, h] = (a * b).mean()
            elif g == h:
                covariance[g, h] = first.stats.common
    return covariance


def balanced_scales(groups: list[InputGroup], sigma_u: float,
                    recurrent_fraction: float) -> list[float]:
    """a_g per group (mean magnitude of a sign-constrained group's weights, standard deviation
    of an unconstrained one's) for μ_U = 0 and the target σ_U, by the rules of the module
    docstring."""
    covariance = group_covariance(groups)
    own = {"feedforward": 0.0, "recurrent": 0.0}
    for g, group in enumerate(groups):
        if group.sign >= 0:
            own[group.side] += (group.stats.spread
                                + (float(covariance[g, g]) if group.sign else 0.0))
    if own["feedforward"] <= 0.0:
        raise FluctuationInitError("the layer's inputs are silent (or constant) in the batch: "
                                   "nothing to scale the weights by")
    side_scale = {"feedforward": 1.0, "recurrent": 0.0}
    if own["recurrent"] > 0.0:
        side_scale["recurrent"] = math.sqrt(
            (1.0 - recurrent_fraction) / recurrent_fraction * own["feedforward"]
            / own["recurrent"])
    excitation = sum(side_scale[g.side] * g.stats.drive for g in groups if g.sign > 0)
    inhibition = sum(g.stats.drive for g in groups if g.sign < 0)
    if excitation > 0.0 and inhibition <= 0.0:
        raise FluctuationInitError(
            "Dale's law: no inhibitory input (or a silent one) to balance the excitatory input "
            "(a feed-forward layer on excitatory afferents needs recurrent inhibition, or "
            "free afferents)")
    inhibitory_scale = excitation / inhibition if inhibition > 0.0 else 0.0
    scales = [side_scale[g.side] if g.sign >= 0 else inhibitory_scale for g in groups]
    means = torch.tensor([g.sign * a for g, a in zip(groups, scales, strict=True)],
                         dtype=torch.float64)
    variance = (sum(a * a * g.stats.spread for g, a in zip(groups, scales, strict=True))
                + float(means @ covariance @ means))
    if variance <= 0.0:
        raise FluctuationInitError("the layer's inputs are silent (or constant) in the batch: "
                                   "nothing to scale the weights by")
    factor = sigma_u / math.sqrt(variance)
    return [factor * a for a in scales]


def _draw_base(shape: torch.Size, signed: bool, generator: torch.Generator | None) -> Tensor:
    """Exponential(1) magnitudes for a sign-constrained matrix, N(0, 1) for a free one."""
    if signed:
        return torch.empty(shape, dtype=torch.float64).exponential_(1.0, generator=generator)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _set_groups(weight: Tensor, base: Tensor, groups: list[InputGroup],
                scales: list[float]) -> None:
    """Write a_g × base (× the group's sign) into the columns of each group of ``weight``."""
    values = torch.zeros_like(base)
    for group, scale in zip(groups, scales, strict=True):
        values[:, group.columns] = base[:, group.columns] * scale * (group.sign or 1)
    weight.copy_(values.to(weight.dtype))


def _init_signed_layer(layer, x: Tensor, index: int, sigma_u: float, fraction: float,
                       dt_ms: float, moments: Moments, ff_sign: Tensor | None,
                       rec_sign: Tensor | None, with_recurrent: bool,
                       generator: torch.Generator | None) -> tuple[Tensor, LayerInit]:
    weight, d = layer.weight, layer.dynamics
    ff = input_groups(x, ff_sign, "feedforward", d, dt_ms, moments)
    base_ff = _draw_base(weight.shape, ff_sign is not None, generator)
    if not with_recurrent:
        scales = balanced_scales(ff, sigma_u, fraction)
        _set_groups(weight, base_ff, ff, scales)
        return layer(x), _signed_report(index, x, dt_ms, ff, [], scales, None)
    v = layer.recurrent_weight
    base_rec = _draw_base(v.shape, rec_sign is not None, generator)
    if rec_sign is not None:  # first pass: the layer's own spikes taken for Poisson trains
        recurrent_groups = poisson_groups(
            rec_sign, 0.5 * math.erfc(1.0 / (sigma_u * math.sqrt(2.0))), d, dt_ms)  # P(U > 1)
    else:  # an unconstrained V: first pass with V = 0, as in an unconstrained layer
        recurrent_groups = []
    for _ in range(BALANCED_RECURRENT_PASSES + 1):
        used = recurrent_groups
        scales = balanced_scales(ff + used, sigma_u, fraction)
        _set_groups(weight, base_ff, ff, scales[:len(ff)])
        _set_groups(v, base_rec, used, scales[len(ff):])
        spikes = layer(x)
        recurrent_groups = input_groups(spikes, rec_sign, "recurrent", d, dt_ms, moments)
    return spikes, _signed_report(index, x, dt_ms, ff, used, scales,
                                  float(spikes.detach().double().mean()) / dt_ms)


def _signed_report(index: int, x: Tensor, dt_ms: float, ff: list[InputGroup],
                   recurrent: list[InputGroup], scales: list[float],
                   recurrent_rate: float | None) -> LayerInit:
    chosen = list(zip([*ff, *recurrent], scales, strict=True))
    side = {name: [a for g, a in chosen if g.side == name and g.sign >= 0]
            for name in ("feedforward", "recurrent")}
    inhibitory = [a for g, a in chosen if g.sign < 0]
    rate = float(x.detach().double().mean()) / dt_ms  # as the unconstrained layers report it
    return LayerInit(index, rate, 0.0, side["feedforward"][0], recurrent_rate,
                     side["recurrent"][0] if side["recurrent"] else None,
                     inhibitory[0] if inhibitory else None)

"""Spiking network modules: thin ``torch.nn.Module`` shells around :mod:`spikegrad.functional`.

A network is a stack of hidden LIF layers (each feed-forward or recurrent)
followed by a leaky non-spiking readout::

    net = SNN.build(n_inputs=20, hidden_sizes=[100], n_outputs=10)
    output = net(spikes)            # spikes: [batch, time, 20]
    output.readout                  # U_out [batch, time, 10]
    output.hidden_spikes[0]         # S [batch, time, 100]

Every network is built by :meth:`SNN.from_config` from the ``time``, ``model`` and
``surrogate`` sections of a config (``SNN.build``'s arguments become a
:class:`~spikegrad.config.NetworkConfig`, training's come from its experiment config), so
both have the same defaults and checks.

The modules hold parameters and call the functional equations; ``engine`` picks
the implementation of the time loop: ``"reference"`` (a plain step-by-step
autograd loop) or ``"fast"`` (fused forward/backward, :mod:`spikegrad.engine`; the
config's default), whose ``kernels`` and ``recompute`` are the config's ``model.kernels`` and
``model.recompute``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from spikegrad import functional
from spikegrad.config import (
    ConfigError,
    ExperimentConfig,
    HiddenLayerConfig,
    ModelConfig,
    NetworkConfig,
    TimeConstantsConfig,
    validate_section,
)
from spikegrad.fluctuation import LayerInit, fluctuation_init
from spikegrad.functional import LIFDynamics, ReadoutDynamics
from spikegrad.losses import reduce_readout
from spikegrad.schema import KernelChoice, ReadoutReduction, RecomputeChoice
from spikegrad.surrogates import Surrogate

Engine = Literal["reference", "fast"]
InitScheme = Literal["uniform", "gaussian"]


def _size(config: ExperimentConfig | NetworkConfig, name: str, given: int | None) -> int:
    """``n_inputs`` or ``n_outputs`` of a network: a :class:`NetworkConfig`'s own (``given``
    must agree), or ``given`` for an experiment, whose data set decides it."""
    own = getattr(config, name, None)
    if given is None and own is None:
        raise TypeError(f"SNN.from_config: {name} is needed with an experiment config "
                        "(its data set decides it)")
    if given is not None and own is not None and given != own:
        raise ValueError(f"SNN.from_config: {name} {given} differs from the config's {own}")
    return given if given is not None else own


def check_engine(engine: str, kernels: str = "auto", recompute: RecomputeChoice = "auto"
                 ) -> None:
    """The config's rules for ``model.engine``, ``model.kernels`` and ``model.recompute``,
    with their messages."""
    validate_section(ModelConfig, {"engine": engine, "kernels": kernels, "recompute": recompute},
                     "model")


def _fast_engine():
    from spikegrad import engine  # imported on first use: compiles or loads the fast kernels

    return engine


class LIFLayer(nn.Module):
    """A hidden layer of LIF neurons; ``weight`` is [out, in], ``recurrent_weight`` [out, out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        dynamics: LIFDynamics,
        recurrent: bool = False,
        engine: Engine = "reference",
        kernels: KernelChoice = "auto",
        recompute: RecomputeChoice = "auto",
        excitatory_fraction: float | None = None,
        balance: bool = True,
        excitatory_afferents: bool = True,
    ) -> None:
        super().__init__()
        check_engine(engine, kernels, recompute)
        self.in_features, self.out_features = in_features, out_features
        self.dynamics = dynamics
        self.engine, self.kernels, self.recompute = engine, kernels, recompute
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.recurrent_weight = (
            nn.Parameter(torch.empty(out_features, out_features)) if recurrent else None
        )
        # Dale's law: +1 for the excitatory neurons, -1 for the inhibitory ones (None: no
        # constraint); derived from the config, so not part of the saved state
        self.neuron_sign: Tensor | None
        self.register_buffer("neuron_sign", None if excitatory_fraction is None else
                             neuron_signs(out_features, excitatory_fraction), persistent=False)
        self.balance, self.excitatory_afferents = balance, excitatory_afferents
        # per-neuron time constants, as log τ (ms): None until set_time_constants
        self.register_buffer("log_tau_mem", None)
        self.register_buffer("log_tau_syn", None)
        self.dt_ms: float | None = None
        init_weights(self, "uniform", 1.0)

    @property
    def recurrent(self) -> bool:
        return self.recurrent_weight is not None

    def set_time_constants(self, tau_mem_ms: Tensor, tau_syn_ms: Tensor, dt_ms: float,
                           learn: bool = False) -> None:
        """Give every neuron its own τ_mem and τ_syn ([out] tensors, ms; positive) at time
        step ``dt_ms``: the layer then runs with per-neuron decays β = exp(-dt/τ) instead of
        those of ``dynamics``. They are held as log τ, a parameter with ``learn`` (so that
        τ > 0 whatever the optimiser does), else a buffer."""
        for name, tau in (("tau_mem_ms", tau_mem_ms), ("tau_syn_ms", tau_syn_ms)):
            if tau.shape != (self.out_features,) or not bool((tau > 0).all()):
                raise ValueError(f"{name}: expected {self.out_features} positive time "
                                 f"constants, got {functional.describe_tensor(tau)}")
        for name, tau in (("log_tau_mem", tau_mem_ms), ("log_tau_syn", tau_syn_ms)):
            value = tau.detach().to(self.weight).log()
            delattr(self, name)  # a parameter or a buffer, whichever it was
            if learn:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.dt_ms = dt_ms

    def time_constants(self) -> tuple[Tensor, Tensor] | None:
        """(τ_mem, τ_syn) per neuron ([out] tensors, ms), or None for the layer's one τ."""
        if self.log_tau_mem is None:
            return None
        return self.log_tau_mem.exp(), self.log_tau_syn.exp()

    def neuron_dynamics(self) -> LIFDynamics:
        """The dynamics the layer runs: ``dynamics``, with per-neuron decays when it has
        time constants of its own (differentiable when they are learned)."""
        taus = self.time_constants()
        if taus is None:
            return self.dynamics
        return self.dynamics.with_time_constants(*taus, self.dt_ms)

    def forward(self, inputs: Tensor) -> Tensor:
        """Input spikes (or current) [B, T, in] -> output spikes [B, T, out]."""
        dynamics = self.neuron_dynamics()
        if self.engine == "fast":
            return _fast_engine().lif_layer(
                inputs, self.weight, dynamics, self.recurrent_weight, self.recompute,
                self.kernels,
            )
        if isinstance(inputs, Tensor) and inputs.is_sparse:  # the reference path: dense
            inputs = inputs.to_dense()
        return functional.lif_layer(inputs, self.weight, dynamics, self.recurrent_weight)

    def extra_repr(self) -> str:
        d = self.dynamics
        dale = ("" if self.neuron_sign is None else
                f", excitatory={int((self.neuron_sign > 0).sum())}/{self.out_features}")
        decays = (f"beta_mem={d.beta_mem:.4f}, beta_syn={d.beta_syn:.4f}"
                  if self.log_tau_mem is None else
                  f"per-neuron time constants (learned={self.log_tau_mem.requires_grad})")
        return (
            f"{self.in_features} -> {self.out_features}, recurrent={self.recurrent}, "
            f"{decays}, surrogate={d.surrogate}, "
            f"detach_reset={d.detach_reset}, recurrent_gradient={d.recurrent_gradient}{dale}"
        )


def neuron_signs(size: int, excitatory_fraction: float) -> Tensor:
    """Dale's law: +1 for the first round(excitatory_fraction · size) neurons (excitatory, at
    least one), -1 for the others (inhibitory)."""
    excitatory = min(size, max(1, round(excitatory_fraction * size)))
    return torch.cat([torch.ones(excitatory), -torch.ones(size - excitatory)])


class SignConstraint(NamedTuple):
    """A weight matrix [out, in] whose column j must have the sign ``sign[j]`` (Dale's law:
    the sign of presynaptic neuron j); ``balance``: scale the inhibitory columns at init by
    n_exc / n_inh."""

    weight: nn.Parameter
    sign: Tensor
    balance: bool


class LeakyReadout(nn.Module):
    """Leaky non-spiking readout units; ``weight`` is [out, in]."""

    def __init__(
        self, in_features: int, out_features: int, dynamics: ReadoutDynamics,
        engine: Engine = "reference", kernels: KernelChoice = "auto",
    ) -> None:
        super().__init__()
        check_engine(engine, kernels)
        self.in_features, self.out_features = in_features, out_features
        self.dynamics = dynamics
        self.engine, self.kernels = engine, kernels
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        init_weights(self, "uniform", 1.0)

    def forward(self, inputs: Tensor) -> Tensor:
        """Hidden spikes [B, T, in] -> membrane trace U_out[1..T] as [B, T, out]."""
        if self.engine == "fast":
            return _fast_engine().readout_layer(inputs, self.weight, self.dynamics,
                                                self.kernels)
        return functional.readout_layer(inputs, self.weight, self.dynamics)

    def extra_repr(self) -> str:
        d = self.dynamics
        return (f"{self.in_features} -> {self.out_features}, beta_mem={d.beta_mem:.4f}, "
                f"beta_syn={d.beta_syn:.4f}")


@dataclass
class SNNOutput:
    """What a forward pass returns: the readout trace U_out[1..T] [B, T, K], each hidden
    layer's spikes [B, T, N], each hidden layer's spike count per neuron and sample [B, N]
    (differentiable, for activity regularisers) and, when asked for, the logits [B, K]: the
    trace reduced over time (see :meth:`SNN.forward` for what is not recorded)."""

    readout: Tensor | None
    hidden_spikes: list[Tensor]
    spike_counts: list[Tensor]
    logits: Tensor | None = None


class SNN(nn.Module):
    """Hidden LIF layers followed by a leaky readout."""

    def __init__(self, hidden: Sequence[LIFLayer], readout: LeakyReadout) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(hidden)
        self.readout = readout
        # what a fluctuation-driven init chose per hidden layer (None for the other schemes)
        self.init_report: list[LayerInit] | None = None

    @classmethod
    def build(
        cls,
        n_inputs: int,
        hidden_sizes: Sequence[int],
        n_outputs: int,
        *,
        recurrent: bool | Sequence[bool] = False,
        dt_ms: float = 1.0,
        tau_mem_ms: float = 10.0,
        tau_syn_ms: float = 5.0,
        tau_out_ms: float = 20.0,
        readout_initial_membrane: float = functional.READOUT_INITIAL_MEMBRANE,
        surrogate: Surrogate | None = None,
        detach_reset: bool = True,
        recurrent_gradient: bool = True,
        engine: Engine = "fast",
        kernels: KernelChoice = "auto",
        recompute: RecomputeChoice = "auto",
        init: InitScheme = "uniform",
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> SNN:
        """A network whose hidden layers all share the same dynamics (the common case);
        every weight matrix is initialised by ``init`` at ``init_scale`` (see
        :func:`init_weights`). The defaults are the config's (:class:`NetworkConfig`).

        The arguments become a :class:`NetworkConfig`, checked by the rules of an experiment
        config, with its messages (a :class:`~spikegrad.config.ConfigError` naming the config
        field: ``tau_mem_ms`` is ``model.hidden.<i>.tau_mem_ms``, ``tau_out_ms`` is
        ``model.readout.tau_mem_ms``), and the network is :meth:`from_config`'s."""
        flags = [recurrent] * len(hidden_sizes) if isinstance(recurrent, bool) else list(recurrent)
        if len(flags) != len(hidden_sizes):
            raise ConfigError(f"recurrent: one flag per hidden layer ({len(hidden_sizes)}), "
                              f"got {len(flags)}")
        surrogate = surrogate or Surrogate()
        config = validate_section(NetworkConfig, {
            "n_inputs": n_inputs, "n_outputs": n_outputs, "time": {"dt_ms": dt_ms},
            "model": {
                "hidden": [{"size": size, "recurrent": flag, "tau_mem_ms": tau_mem_ms,
                            "tau_syn_ms": tau_syn_ms, "detach_reset": detach_reset,
                            "recurrent_gradient": recurrent_gradient}
                           for size, flag in zip(hidden_sizes, flags, strict=True)],
                "readout": {"tau_mem_ms": tau_out_ms, "tau_syn_ms": tau_syn_ms,
                            "initial_membrane": readout_initial_membrane},
                "init": {kind: {"scheme": init, "scale": init_scale}
                         for kind in ("feedforward", "recurrent", "readout")},
                "engine": engine,
                "kernels": kernels,
                "recompute": recompute,
            },
            "surrogate": {"name": surrogate.name, "slope": surrogate.slope,
                          "scale": surrogate.scale},
        })
        return cls.from_config(config, generator=generator)

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig | NetworkConfig,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        generator: torch.Generator | None = None,
        inputs: Tensor | None = None,
        load_only: bool = False,
    ) -> SNN:
        """The network a config describes (its ``time``, ``model`` and ``surrogate``): the
        one way a network is built from settings.

        The fluctuation-driven scheme (``model.init.*.scheme: fluctuation``) needs
        ``inputs``, a batch of the data [B, T, C] (training passes the first
        ``model.init.fluctuation.batch_size`` training samples); its matrices are drawn after
        all others, layer by layer (:func:`spikegrad.fluctuation.fluctuation_init`). With
        ``load_only`` (weights that a saved state replaces next) it is skipped and those
        matrices keep the layers' default uniform init.

        ``n_inputs`` and ``n_outputs`` come from the data set for an
        :class:`~spikegrad.config.ExperimentConfig` (its input width and classes); a
        :class:`NetworkConfig` holds its own. The weights are drawn from ``generator``, by
        default one seeded with the config's ``seed`` (a :class:`NetworkConfig` has none:
        PyTorch's global generator then, as for ``torch.nn`` layers)."""
        n_inputs = _size(config, "n_inputs", n_inputs)
        n_outputs = _size(config, "n_outputs", n_outputs)
        if generator is None and hasattr(config, "seed"):
            generator = torch.Generator().manual_seed(config.seed)
        dt = config.time.dt_ms
        surrogate = Surrogate(config.surrogate.name, config.surrogate.slope,
                              config.surrogate.scale)
        engine = config.model.engine
        layers, width = [], n_inputs
        for spec in config.model.hidden:
            dynamics = LIFDynamics.from_time_constants(
                spec.tau_mem_ms, spec.tau_syn_ms, dt, surrogate=surrogate,
                detach_reset=spec.detach_reset, recurrent_gradient=spec.recurrent_gradient,
            )
            dale = spec.dale
            layers.append(LIFLayer(width, spec.size, dynamics, spec.recurrent, engine,
                                   config.model.kernels, config.model.recompute,
                                   dale.excitatory_fraction if dale else None,
                                   dale.balance if dale else True,
                                   dale.excitatory_afferents if dale else True))
            width = spec.size
        readout_spec = config.model.readout
        readout = LeakyReadout(
            width, n_outputs,
            ReadoutDynamics.from_time_constants(readout_spec.tau_mem_ms, readout_spec.tau_syn_ms,
                                                dt, readout_spec.initial_membrane),
            engine, config.model.kernels,
        )
        net = cls(layers, readout)
        init = config.model.init
        init_weights(net, init.per_matrix(), generator=generator)
        sign_weights(net)
        if init.data_dependent and not load_only:
            if inputs is None:
                raise ConfigError("model.init.feedforward.scheme: fluctuation needs a batch of "
                                  "inputs (SNN.from_config(..., inputs=batch))")
            f = init.fluctuation
            net.init_report = fluctuation_init(
                net, inputs, f.mu_u, f.sigma_u, f.recurrent_fraction, dt, moments=f.moments,
                recurrent=init.recurrent.scheme == "fluctuation", generator=generator)
        time_constants = config.model.time_constants
        for layer, spec in zip(net.hidden, config.model.hidden, strict=True):
            inhibitory_taus = _inhibitory_time_constants(spec)
            if not time_constants.per_neuron and inhibitory_taus is None:
                continue
            taus = [draw_time_constants(mean, spec.size, time_constants, generator)
                    for mean in (spec.tau_mem_ms, spec.tau_syn_ms)]
            if inhibitory_taus is not None:  # the inhibitory population around its own τ
                inhibitory = layer.neuron_sign < 0
                for tau, mean, own in zip(taus, (spec.tau_mem_ms, spec.tau_syn_ms),
                                          inhibitory_taus, strict=True):
                    tau[inhibitory] *= own / mean
            layer.set_time_constants(*taus, dt, learn=time_constants.learn)
        return net

    def forward(self, inputs: Tensor, record_spikes: bool = True, record_trace: bool = True,
                reduction: ReadoutReduction | None = None) -> SNNOutput:
        """Inputs [B, T, C] to readout trace, spikes, spike counts and, with a
        ``reduction``, logits. Training needs only the logits and the counts: with
        ``record_spikes`` and ``record_trace`` False the fast engine writes neither the last
        layer's spike trains (``hidden_spikes`` then holds the other layers') nor the readout
        trace (``readout`` is None)."""
        hidden_spikes, counts = [], []
        x = inputs  # dense, or a sparse COO batch of spikes (EventDataset.batch(sparse=True))
        for layer in self.hidden[:-1]:
            x = layer(x)
            hidden_spikes.append(x)
            counts.append(x.sum(dim=1))
        last, readout = self.hidden[-1], self.readout
        if last.engine == "fast" and readout.engine == "fast":  # one fused operation
            out = _fast_engine().lif_readout(
                x, last.weight, last.neuron_dynamics(), readout.weight, readout.dynamics,
                last.recurrent_weight, last.recompute, spikes=record_spikes,
                reduction=reduction, trace=record_trace or reduction is None,
                kernels=last.kernels)
            if out.spikes is not None:
                hidden_spikes.append(out.spikes)
            return SNNOutput(out.trace, hidden_spikes, [*counts, out.counts], out.logits)
        x = last(x)
        trace = readout(x)
        logits = reduce_readout(trace, reduction) if reduction is not None else None
        return SNNOutput(trace, [*hidden_spikes, x], [*counts, x.sum(dim=1)], logits)

    def sign_constraints(self) -> list[SignConstraint]:
        """The weight matrices under Dale's law: those leaving a layer with excitatory and
        inhibitory neurons (the next layer's W, its own V, the readout's W_out: the signs of
        that layer's neurons) and the data's weights into such a first layer (excitatory
        afferents, non-negative, unless it says otherwise). Empty without Dale's law."""
        constraints = []
        first = self.hidden[0]
        if first.neuron_sign is not None and first.excitatory_afferents:
            constraints.append(SignConstraint(first.weight, torch.ones(first.in_features),
                                              False))
        for layer, after in zip(self.hidden, [*self.hidden[1:], self.readout], strict=True):
            if layer.neuron_sign is None:
                continue
            constraints.append(SignConstraint(after.weight, layer.neuron_sign, layer.balance))
            if layer.recurrent_weight is not None:
                constraints.append(SignConstraint(layer.recurrent_weight, layer.neuron_sign,
                                                  layer.balance))
        return constraints

    @torch.no_grad()
    def enforce_signs(self) -> None:
        """Dale's law after an optimiser step: weights of the wrong sign become 0 (the
        projection of projected gradient descent). Nothing without Dale's law."""
        for weight, sign, _ in self.sign_constraints():
            weight.copy_(torch.where(weight * sign.to(weight) < 0, 0.0, weight))

    def set_engine(self, engine: Engine) -> SNN:
        check_engine(engine)
        for module in self.modules():
            if isinstance(module, LIFLayer | LeakyReadout):
                module.engine = engine
        return self


MatrixKind = Literal["feedforward", "recurrent", "readout"]


def matrix_kind(name: str) -> MatrixKind:
    """Which kind of weight matrix a parameter name of an :class:`SNN` denotes."""
    if name.startswith("readout."):
        return "readout"
    return "recurrent" if name.endswith("recurrent_weight") else "feedforward"


def init_matrix(
    weight: Tensor, scheme: InitScheme = "uniform", scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> None:
    """Initialise one weight matrix in place (fan_in = its number of columns).

    ``uniform``: U(-scale/√fan_in, scale/√fan_in), PyTorch's default (and the paper's) at
    scale 1. ``gaussian``: N(0, (scale/√fan_in)^2), as in the SpyTorch tutorials.
    ``fluctuation`` depends on data: :func:`spikegrad.fluctuation.fluctuation_init`.
    """
    bound = scale / math.sqrt(weight.shape[1])
    with torch.no_grad():
        if scheme == "uniform":
            noise = torch.rand(weight.shape, generator=generator, dtype=weight.dtype)
            weight.copy_((2.0 * noise - 1.0) * bound)
        elif scheme == "gaussian":
            weight.copy_(torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
                         * bound)
        elif scheme == "fluctuation":
            raise ValueError("the fluctuation scheme needs data: use fluctuation_init(model, "
                             "inputs) or SNN.from_config(..., inputs=batch)")
        else:
            raise ValueError(f"unknown init scheme {scheme!r} (known: uniform, gaussian, "
                             "fluctuation)")


def _inhibitory_time_constants(spec: HiddenLayerConfig) -> tuple[float, float] | None:
    """(τ_mem, τ_syn) of a Dale layer's inhibitory neurons when either is its own, else None."""
    dale = spec.dale
    if dale is None or (dale.inhibitory_tau_mem_ms is None and dale.inhibitory_tau_syn_ms is None):
        return None
    return (dale.inhibitory_tau_mem_ms or spec.tau_mem_ms,
            dale.inhibitory_tau_syn_ms or spec.tau_syn_ms)


def draw_time_constants(mean_ms: float, n: int, config: TimeConstantsConfig,
                        generator: torch.Generator | None = None) -> Tensor:
    """``n`` time constants (ms, float64) for the neurons of a layer whose τ is ``mean_ms``,
    by ``config.distribution``: all equal (homogeneous), or drawn from a gamma distribution
    of mean ``mean_ms`` and shape k = ``config.gamma_shape`` (scale mean/k), as in
    Perez-Nieves et al. 2021. The gamma draws take one seed from ``generator`` (PyTorch's
    global generator when None) for NumPy's gamma sampler."""
    if config.distribution == "homogeneous":
        return torch.full((n,), float(mean_ms), dtype=torch.float64)
    if config.distribution == "gamma":
        seed = int(torch.randint(2**62, (1,), generator=generator))
        shape = config.gamma_shape
        draws = np.random.default_rng(seed).gamma(shape, mean_ms / shape, size=n)
        return torch.from_numpy(draws)
    raise ValueError(f"unknown time-constant distribution {config.distribution!r} (known: "
                     "homogeneous, gamma)")


def init_weights(
    module: nn.Module, scheme: InitScheme | dict[MatrixKind, tuple[InitScheme, float]] = "uniform",
    scale: float = 1.0, generator: torch.Generator | None = None,
) -> None:
    """Initialise every weight matrix in ``module``, in parameter order, by :func:`init_matrix`.

    ``scheme`` and ``scale`` apply to every matrix, or ``scheme`` maps each kind of matrix
    (``feedforward``, ``recurrent``, ``readout``) to its own (scheme, scale). In a mapping,
    matrices of the data-dependent ``fluctuation`` scheme are left as they are (and draw
    nothing from ``generator``): :func:`spikegrad.fluctuation.fluctuation_init` sets them.
    """
    for name, weight in module.named_parameters():
        if not name.endswith("weight"):
            continue
        kind_scheme, kind_scale = (scheme[matrix_kind(name)] if isinstance(scheme, dict)
                                   else (scheme, scale))
        if isinstance(scheme, dict) and kind_scheme == "fluctuation":
            continue
        init_matrix(weight, kind_scheme, kind_scale, generator)


@torch.no_grad()
def sign_weights(net: SNN) -> None:
    """Dale's law at init: each sign-constrained matrix (:meth:`SNN.sign_constraints`) keeps
    the magnitudes its scheme drew and takes its columns' signs; with ``balance`` the
    inhibitory columns are scaled by n_exc / n_inh, so that at equal rates the mean input
    from the two populations cancels."""
    for weight, sign, balance in net.sign_constraints():
        sign = sign.to(weight)
        magnitude = weight.abs()
        inhibitory = sign < 0
        if balance and bool(inhibitory.any()):
            magnitude[:, inhibitory] *= float((~inhibitory).sum()) / float(inhibitory.sum())
        weight.copy_(magnitude * sign)

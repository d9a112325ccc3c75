"""The experiment config: the single, validated, serialisable truth of a training run.

Load one from a YAML file or a built-in name, apply ``--set key=value``
overrides (dotted paths, list indices allowed: ``model.hidden.0.size=200``),
validate it, and store it next to every result::

    config = load_config("randman", ["training.epochs=20", "surrogate.slope=5"])
    config.to_yaml()
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from spikegrad.data.configs import DataConfig
from spikegrad.errors import ConfigError, first_line
from spikegrad.schema import (
    BUILTIN_SURROGATES,
    READOUT_INITIAL_MEMBRANE,
    Float,
    Fraction,
    KernelChoice,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ReadoutReduction,
    RecomputeChoice,
    Seed,
    Strict,
)


class TimeConfig(Strict):
    """The simulation grid shared by data and network."""

    dt_ms: PositiveFloat = 1.0
    """Simulation step (ms)."""
    n_steps: PositiveInt = 100
    """Steps per sample."""


class SurrogateConfig(Strict):
    """Surrogate derivative used in the backward pass of every hidden layer."""

    name: str = "superspike"
    """Surrogate shape (a registered name: superspike, sigmoid, esser, superspike_asymptotic,
    exponential, arctan, gaussian, true, constant, or your own)."""
    slope: NonNegativeFloat = 10.0
    """Slope β of the surrogate."""
    scale: NonNegativeFloat = 1.0
    """Multiplies the natural form: the peak used is scale × natural peak."""

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name in BUILTIN_SURROGATES:
            return name
        from spikegrad.surrogates import SURROGATES  # and those a user registered (torch)

        if name not in SURROGATES:
            raise ValueError(f"unknown surrogate {name!r} (known: {', '.join(sorted(SURROGATES))})")
        return name


class ActivityConfig(Strict):
    """Activity regularisation of one hidden layer; rates are spikes per neuron per sample.

    The lower bound is on by default with the paper's values (λ_lower = 100, ν_lower = 1e-3,
    listed among its default parameters, Table 1): it penalises silent neurons, and with the
    paper's uniform init, under which the hidden layer is silent at first, it is part of
    what starts learning. The upper bound is off unless a study varies it.
    """

    upper_strength: NonNegativeFloat = 0.0
    """λ_upper of the population-rate upper bound (0: off)."""
    upper_rate: NonNegativeFloat = 0.0
    """ν_upper: mean spikes per neuron per sample above which the upper bound acts."""
    upper_exponent: PositiveFloat = 2.0
    """L, the exponent of the upper bound."""
    lower_strength: NonNegativeFloat = 100.0
    """λ_lower of the per-neuron lower bound (the paper's 100; 0: off)."""
    lower_rate: NonNegativeFloat = 1e-3
    """ν_lower: spikes per neuron per sample below which the lower bound acts (the paper's 1e-3)."""


class DaleConfig(Strict):
    """Dale's law for a hidden layer: each neuron is excitatory or inhibitory, and every weight
    leaving it carries its sign (the layer's recurrent V, the next layer's W, the readout's
    W_out); weights from the data into the layer are excitatory (non-negative), as sensory
    afferents are (Cornford et al. 2021, "Learning to live with Dale's principle", ICLR),
    unless ``excitatory_afferents`` is false.
    Weights are drawn by the init scheme, then given their neuron's sign (the magnitude kept;
    the fluctuation scheme draws exponential magnitudes in the balanced state instead,
    :mod:`spikegrad.fluctuation`), and every optimiser step is followed by a projection that
    sets weights of the wrong sign to 0 (projected gradient descent: the magnitudes stay
    non-negative)."""

    excitatory_fraction: Fraction = 0.8
    """Share of the layer's neurons that are excitatory (the first ones); the cortex's
    4:1 ratio by default."""
    balance: bool = True
    """Scale the inhibitory neurons' outgoing weights at init by n_exc / n_inh, so that at
    equal rates the mean input from the two populations cancels (uniform and gaussian
    schemes; the fluctuation scheme balances the hidden matrices by the measured input)."""
    inhibitory_tau_mem_ms: PositiveFloat | None = None
    """τ_mem of the inhibitory neurons (ms; null: the layer's tau_mem_ms). Set, the layer's
    neurons get per-neuron time constants (model.time_constants draws and learns them around
    each population's own τ)."""
    inhibitory_tau_syn_ms: PositiveFloat | None = None
    """τ_syn of the inhibitory neurons (ms; null: the layer's tau_syn_ms)."""
    excitatory_afferents: bool = True
    """The data's weights into a first Dale layer are excitatory (non-negative), as sensory
    afferents are; false: left unconstrained (the data are not neurons of the model), so that
    a feed-forward layer can respond selectively without an inhibitory path."""

    @field_validator("excitatory_fraction")
    @classmethod
    def _both_populations(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError("must be in (0, 1] (some neurons excitatory)")
        return value


class HiddenLayerConfig(Strict):
    size: PositiveInt = 100
    """Neurons in the layer."""
    recurrent: bool = False
    """Explicit recurrent weights V within the layer."""
    tau_mem_ms: PositiveFloat = 10.0
    """Membrane time constant τ_mem (ms; must exceed dt)."""
    tau_syn_ms: PositiveFloat = 5.0
    """Synaptic time constant τ_syn (ms; must exceed dt)."""
    detach_reset: bool = True
    """No gradient through the reset factor (1 - S) (the paper's default); false: differentiable
    reset."""
    recurrent_gradient: bool = True
    """Gradients flow through the recurrent term V S[n] (false: detached)."""
    activity: ActivityConfig = Field(default_factory=ActivityConfig)
    """Activity regularisation of the layer."""
    dale: DaleConfig | None = None
    """Dale's law: excitatory and inhibitory neurons, sign-constrained weights (null: no
    constraint, the paper's)."""


class ReadoutConfig(Strict):
    """The leaky readout. ``initial_membrane`` is U_out[0]: -1e-3 as in the lab's stork
    readout (the paper does not state it); 0 makes every gradient of a silent network
    exactly zero under the max readout (see :mod:`spikegrad.functional`)."""

    tau_mem_ms: PositiveFloat = 20.0
    """Readout membrane time constant (ms)."""
    tau_syn_ms: PositiveFloat = 5.0
    """Readout synaptic time constant (ms)."""
    reduction: ReadoutReduction = "max"
    """How the readout trace becomes logits: max (the paper's), sum, mean or last over time."""
    initial_membrane: Float = READOUT_INITIAL_MEMBRANE
    """U_out[0] (the lab's -1e-3; 0 gives a silent network no gradient under max)."""


class MatrixInit(Strict):
    """Initialisation of one kind of weight matrix.

    ``uniform``: U(-scale·√k, scale·√k), k = 1/fan_in (PyTorch's default at scale 1, the
    paper's, Sec. 4.2.3). ``gaussian``: N(0, (scale/√fan_in)^2) (the SpyTorch tutorials',
    with scale 7(1 - β_mem) for a membrane without the (1 - β_mem) input factor).
    ``fluctuation``: fluctuation-driven, from a batch of the data (``model.init.fluctuation``;
    hidden W and V only).
    """

    scheme: Literal["uniform", "gaussian", "fluctuation"] = "uniform"
    """uniform: U(±scale/√fan_in); gaussian: N(0, (scale/√fan_in)²); fluctuation: N(μ_W, σ_W²)
    (Dale layers: signed exponential magnitudes, balanced) chosen from a batch of the data for
    the targets of model.init.fluctuation (feedforward and recurrent only; recurrent needs
    feedforward fluctuation too)."""
    scale: PositiveFloat = 1.0
    """Scale of the distribution (1: PyTorch's default, the paper's; not used by
    fluctuation)."""


class FluctuationInit(Strict):
    """Targets of the fluctuation-driven initialisation (Rossbroich, Gygax & Zenke 2022):
    each hidden layer's weights are drawn from N(μ_W, σ_W²) so that its free membrane
    potential (threshold 1) has mean ``mu_u`` and standard deviation ``sigma_u`` at init,
    layer by layer on a batch of training inputs (:mod:`spikegrad.fluctuation`)."""

    mu_u: Float = 0.0
    """Target mean μ_U of the free membrane potential (threshold 1; 0: the paper's centred
    version, and the only one for Dale layers: balanced state)."""
    sigma_u: PositiveFloat = 1.0
    """Target standard deviation σ_U of a neuron's free membrane potential over time and
    samples."""
    recurrent_fraction: Fraction = 0.9
    """α: the share of the membrane variance a recurrent layer takes from its feed-forward
    input W (1 - α from its recurrent input V)."""
    moments: Literal["measured", "poisson"] = "measured"
    """Input moments: poisson (the paper's formulas, inputs taken for Poisson trains of the
    batch's rate) or measured (the same formulas with the moments of the PSP-filtered inputs
    measured on the batch; equal for Poisson inputs)."""
    batch_size: PositiveInt = 256
    """Training samples (the first ones) used to estimate each layer's input statistics."""


class InitConfig(Strict):
    """Weight initialisation per matrix: feed-forward W (every hidden layer), recurrent V
    and the readout; the paper's uniform U(±1/√fan_in) for all three by default."""

    feedforward: MatrixInit = Field(default_factory=MatrixInit)
    """Initialisation of every hidden layer's W."""
    recurrent: MatrixInit = Field(default_factory=MatrixInit)
    """Initialisation of every recurrent V."""
    readout: MatrixInit = Field(default_factory=MatrixInit)
    """Initialisation of the readout's weights."""
    fluctuation: FluctuationInit = Field(default_factory=FluctuationInit)
    """Targets of the fluctuation scheme (used where a matrix's scheme is fluctuation)."""

    @model_validator(mode="after")
    def _fluctuation_where_it_applies(self) -> InitConfig:
        if self.readout.scheme == "fluctuation":
            raise ValueError("readout.scheme: fluctuation applies to hidden layers (feedforward "
                             "and recurrent) only")
        if self.recurrent.scheme == "fluctuation" and self.feedforward.scheme != "fluctuation":
            raise ValueError("recurrent.scheme: fluctuation needs feedforward.scheme "
                             "fluctuation too (the variance is split between them)")
        return self

    def per_matrix(self) -> dict[str, tuple[str, float]]:
        """{kind: (scheme, scale)} for :func:`spikegrad.model.init_weights`."""
        return {kind: (m.scheme, m.scale) for kind, m in
                (("feedforward", self.feedforward), ("recurrent", self.recurrent),
                 ("readout", self.readout))}

    @property
    def data_dependent(self) -> bool:
        """Whether a batch of inputs is needed (some matrix uses the fluctuation scheme)."""
        return self.feedforward.scheme == "fluctuation"


class TimeConstantsConfig(Strict):
    """Per-neuron time constants of the hidden layers, after Perez-Nieves, Leung, Dragotti &
    Goodman (2021, "Neural heterogeneity promotes robust learning", Nat. Commun. 12:5791):
    each neuron's τ_mem and τ_syn drawn around its layer's ``tau_mem_ms`` and ``tau_syn_ms``
    (heterogeneous initialisation) and, optionally, trained with the weights. The default
    (homogeneous, not learned) is one τ per layer. The readout keeps ``model.readout``'s.

    A learned τ is held as log τ, so that τ > 0 and β = exp(-dt/τ) stays in (0, 1) whatever
    the optimiser does; it is trained at the weights' learning rate. The draws come after
    every weight is initialised (the weights are those of the homogeneous network), from the
    same generator; a fluctuation-driven init uses the layers' configured τ."""

    distribution: Literal["homogeneous", "gamma"] = "homogeneous"
    """homogeneous: every neuron has its layer's τ; gamma: each neuron's τ_mem and τ_syn drawn
    from a gamma distribution whose mean is the layer's τ (Perez-Nieves et al. 2021)."""
    gamma_shape: PositiveFloat = 3.0
    """Shape k of the gamma distribution (coefficient of variation 1/√k: 0.58 for k = 3)."""
    learn: bool = False
    """Train each hidden neuron's τ_mem and τ_syn with the weights (from either
    distribution)."""

    @property
    def per_neuron(self) -> bool:
        """Whether hidden neurons get time constants of their own."""
        return self.distribution != "homogeneous" or self.learn


class ModelConfig(Strict):
    hidden: list[HiddenLayerConfig] = Field(default_factory=lambda: [HiddenLayerConfig()],
                                            min_length=1)
    """The hidden layers, input side first (at least one)."""
    readout: ReadoutConfig = Field(default_factory=ReadoutConfig)
    """The leaky readout."""
    init: InitConfig = Field(default_factory=InitConfig)
    """Weight initialisation per kind of matrix."""
    time_constants: TimeConstantsConfig = Field(default_factory=TimeConstantsConfig)
    """Per-neuron (heterogeneous, learnable) time constants of the hidden layers."""
    engine: Literal["reference", "fast"] = "fast"
    """fast: the fused BPTT engine; reference: the step-by-step autograd loop (the tests'
    oracle)."""
    kernels: KernelChoice = "auto"
    """Kernels of the fast engine: cpp (compiled; float32/float64 CPU tensors), torch
    (PyTorch operations, any device) or auto (cpp where it runs and compiles, else torch).
    The environment variable SPIKEGRAD_ENGINE, when set, overrides it; every run records
    the kernels it used (kernels in its result)."""
    recompute: RecomputeChoice = "auto"
    """Fast engine: recompute the membrane trace in the backward pass instead of keeping it
    (true: less memory, one more forward loop), keep it (false), or auto: recompute the
    layers without recurrence, whose forward loop costs less than storing the trace and
    reading it back (compiled kernels, built-in surrogates). The same results bit for bit
    either way. SPIKEGRAD_RECOMPUTE (1, 0 or auto), when set, overrides it; every run
    records it (recompute in its result)."""

    @field_validator("recompute", mode="wrap")
    @classmethod
    def _recompute_choice(cls, value: Any, handler: Any) -> RecomputeChoice:
        try:
            return handler(value)
        except ValidationError:  # one message for the union, not one per member
            raise ValueError("expected true, false or auto") from None

    @model_validator(mode="after")
    def _dale_with_fluctuation_init(self) -> ModelConfig:
        """The fluctuation scheme initialises Dale layers in the balanced state (μ_U = 0),
        their recurrent inhibition with it, and needs an inhibitory input to balance with
        (:mod:`spikegrad.fluctuation`)."""
        if self.init.feedforward.scheme != "fluctuation":
            return self
        for index, layer in enumerate(self.hidden):
            if layer.dale is None:
                continue
            if self.init.fluctuation.mu_u != 0.0:
                raise ValueError(f"hidden.{index}.dale: the fluctuation scheme initialises "
                                 "Dale layers in the balanced state: init.fluctuation.mu_u "
                                 f"must be 0 (got {self.init.fluctuation.mu_u})")
            if layer.recurrent and self.init.recurrent.scheme != "fluctuation":
                raise ValueError(f"hidden.{index}.dale: a recurrent Dale layer under the "
                                 "fluctuation scheme needs init.recurrent.scheme fluctuation "
                                 "too (its inhibition balances the input)")
            if index == 0 and layer.dale.excitatory_afferents and not layer.recurrent:
                raise ValueError("hidden.0.dale: on excitatory afferents a feed-forward Dale "
                                 "layer has no inhibitory input for the fluctuation scheme to "
                                 "balance (make it recurrent, or excitatory_afferents false)")
        return self


def check_time_constants(time: TimeConfig, model: ModelConfig) -> None:
    """Every time constant must exceed the time step (else β = exp(-dt/τ) makes no sense)."""
    dt = time.dt_ms
    taus = [
        (f"model.hidden.{i}.{name}", getattr(layer, name))
        for i, layer in enumerate(model.hidden)
        for name in ("tau_mem_ms", "tau_syn_ms")
    ] + [(f"model.readout.{name}", getattr(model.readout, name))
         for name in ("tau_mem_ms", "tau_syn_ms")]
    taus += [(f"model.hidden.{i}.dale.{name}", getattr(layer.dale, name))
             for i, layer in enumerate(model.hidden) if layer.dale is not None
             for name in ("inhibitory_tau_mem_ms", "inhibitory_tau_syn_ms")
             if getattr(layer.dale, name) is not None]
    for path, tau in taus:
        if tau <= dt:
            raise ValueError(f"{path}: must be greater than time.dt_ms ({dt}), got {tau}")


class NetworkConfig(Strict):
    """A network without its data and training: what :meth:`spikegrad.model.SNN.build`
    takes, in the config's terms, and :meth:`spikegrad.model.SNN.from_config` builds. It is
    validated by the same rules, with the same messages, as the network of an experiment
    config."""

    n_inputs: PositiveInt
    """Input channels."""
    n_outputs: PositiveInt
    """Readout units (classes)."""
    time: TimeConfig = Field(default_factory=TimeConfig)
    """The simulation grid."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The network."""
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    """The surrogate derivative of every hidden layer."""

    @model_validator(mode="after")
    def _time_constants_exceed_dt(self) -> NetworkConfig:
        check_time_constants(self.time, self.model)
        return self


class TrainingConfig(Strict):
    """Optimiser and schedule. ``epochs`` is the budget; with ``patience`` training also ends
    when the validation accuracy has not improved by more than ``min_delta`` for that many
    epochs in a row (Keras' early-stopping rule). The weights of the epoch with the best
    validation accuracy are the run's result either way."""

    optimizer: Literal["adam", "sgd"] = "adam"
    """adam (the paper's) or sgd."""
    learning_rate: PositiveFloat = 2e-3
    """Learning rate."""
    momentum: NonNegativeFloat = 0.0
    """SGD momentum."""
    batch_size: PositiveInt = 250
    """Samples per training step."""
    epochs: PositiveInt = 100
    """Epoch budget."""
    patience: PositiveInt | None = None
    """End training after this many epochs without a validation-accuracy gain above min_delta
    (null: never early)."""
    min_delta: NonNegativeFloat = 0.0
    """The gain in validation accuracy that counts as an improvement for patience."""
    eval_batch_size: PositiveInt = 1000
    """Samples per evaluation step."""


class ExperimentConfig(Strict):
    """Everything that defines a training run. Same config + seed: same result on CPU, on the
    same machine and thread count (what exactly is deterministic: :mod:`spikegrad.training`)."""

    name: str = "experiment"
    """Label of the run."""
    seed: Seed = 0
    """Weight initialisation and batch order (the data have their own data.seed)."""
    time: TimeConfig = Field(default_factory=TimeConfig)
    """The simulation grid shared by data and network."""
    data: DataConfig
    """The data set, chosen by data.name (see the data sets below)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The network."""
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    """The surrogate derivative of every hidden layer."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Optimiser and schedule."""

    @model_validator(mode="after")
    def _time_constants_exceed_dt(self) -> ExperimentConfig:
        check_time_constants(self.time, self.model)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def config_hash(self) -> str:
        """A stable hash of the full config (canonical JSON), used to identify runs; fields
        added since runs were first identified so are left out at their defaults
        (:data:`HASHED_UNLESS_DEFAULT`), so that those runs keep their hashes."""
        values = self.to_dict()
        for path, default in HASHED_UNLESS_DEFAULT.items():
            *sections, name = path.split(".")
            for section in _sections(values, sections):
                if section.get(name) == default:
                    del section[name]
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _sections(values: dict[str, Any], path: list[str]) -> list[dict[str, Any]]:
    """The sections of ``values`` at ``path``, where ``*`` stands for every list item."""
    found: list[Any] = [values]
    for key in path:
        if key == "*":
            found = [item for items in found for item in items]
        else:
            found = [section[key] for section in found]
    return found


HASHED_UNLESS_DEFAULT: dict[str, Any] = {
    "model.kernels": "auto", "model.recompute": "auto",
    "model.init.fluctuation": FluctuationInit().model_dump(mode="json"),
    "model.hidden.*.dale": None,
    "model.time_constants": TimeConstantsConfig().model_dump(mode="json"),
}
"""Config fields (dotted paths; ``*``: every item of a list) that count in
:meth:`ExperimentConfig.config_hash` only when they differ from these defaults."""


# ---------------------------------------------------------------------------------------
# Loading, overrides and error messages


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (the
    safe loader keeps the last value silently). Keys merged in with ``<<`` may be
    overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the safe loader's own error follows
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, origin: str) -> Any:
    """Parse YAML (safely, duplicate keys refused); errors are one-line
    :class:`ConfigError` s naming ``origin`` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or first_line(error)
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{origin}: invalid YAML: {problem}{where}") from None


def read_text_file(path: Path) -> str:
    """The UTF-8 text of a file; a binary or unreadable file is a :class:`ConfigError`
    naming it."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file (byte 0x{data[error.start]:02x} at offset "
                          f"{error.start} is not UTF-8)") from None


def builtin_names(folder: str) -> list[str]:
    """Names of the YAML files shipped in the package folder ``folder``."""
    files = resources.files("spikegrad") / folder
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def read_yaml_source(source: str | Path, folder: str, what: str, kind: str | None = None,
                     empty: bool = True) -> tuple[dict[str, Any] | None, str, Path | None]:
    """Read a YAML (or JSON) file, or the built-in of that name in the package folder
    ``folder`` (``configs``, ``studies``): (its content, where it came from, the folder of
    the file or None). ``what`` names the built-ins in messages (``config``, ``study``),
    ``kind`` the files (default: ``what``). The top level must be a mapping; an empty file
    gives None, or is an error unless ``empty``. Every problem is a one-line
    :class:`ConfigError` naming the file.

    A file wins over a built-in of the same name; a folder never does (a folder named
    ``shd`` does not hide the built-in ``shd``), and is never read as a file.
    """
    path = Path(source)
    known = builtin_names(folder)
    kind = kind or what
    if path.is_file():
        text, origin, parent = read_text_file(path), str(path), path.resolve().parent
    elif str(source) in known:
        text = (resources.files("spikegrad") / folder / f"{source}.yaml").read_text()
        origin, parent = f"built-in {what} {source!r}", None
    elif path.is_dir():
        raise ConfigError(f"{source}: is a folder, not a {kind} file")
    elif path.suffix in (".yaml", ".yml") or path.exists():
        raise ConfigError(f"{source}: no such {kind} file")
    else:
        raise ConfigError(f"{source}: no such {kind} file or built-in {what} (built-in: "
                          f"{', '.join(known)})")
    raw = load_yaml(text, origin)
    if (raw is not None or not empty) and not isinstance(raw, dict):
        raise ConfigError(f"{origin}: top level must be a mapping, got {type(raw).__name__}")
    return raw, origin, parent


def builtin_config_names() -> list[str]:
    return builtin_names("configs")


def read_config_source(source: str | Path) -> dict[str, Any]:
    """Read a YAML file, or the built-in config of that name, as a plain dict."""
    raw, _, _ = read_yaml_source(source, "configs", "config")
    return raw or {}


def parse_overrides(overrides: list[str] | dict[str, Any]) -> list[tuple[str, Any]]:
    """``--set`` overrides as (dotted path, value) pairs, in order: ``key.path=value`` texts
    (values parsed as YAML) or a mapping from paths to values."""
    if isinstance(overrides, dict):
        return list(overrides.items())
    if isinstance(overrides, str):
        raise ConfigError(f"overrides: expected a list of key=value texts or a mapping, got "
                          f"the text {overrides!r} (put it in a list)")
    items = []
    for text in overrides:
        if "=" not in text:
            raise ConfigError(f"override {text!r}: expected key=value")
        key, value = text.split("=", 1)
        items.append((key.strip(), load_yaml(value, f"override {text!r}")))
    return items


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key.path=value`` overrides (values parsed as YAML)."""
    result = copy.deepcopy(raw)
    for key, value in parse_overrides(overrides):
        set_path(result, key, value)
    return result


def flatten_paths(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted path: value} (the inverse of :func:`set_path`; empty
    mappings are values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_paths(value, path + "."))
        else:
            flat[path] = value
    return flat


def get_path(tree: Any, key: str) -> Any:
    """The value at a dotted path (list entries by index: ``model.hidden.0.size``)."""
    node = tree
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def set_path(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set the value at a dotted path, creating missing sections (a missing ``hidden`` list
    as one layer); a list entry must exist."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{key!r}: malformed key")
    node: Any = tree
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, here)]
            continue
        if part not in node or node[part] is None:
            node[part] = [{}] if part == "hidden" else {}
        node = node[part]
        if not isinstance(node, dict | list):
            raise ConfigError(f"{here}: is a value, cannot set {key}")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, path: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{path}: no list entry {part!r} (the list has {len(node)} entries)")
    return int(part)


_TYPE_MISMATCHES = ("list_type", "string_type", "dict_type", "model_type",
                   "model_attributes_type")
_TYPE_NAMES = frozenset({"str", "int", "float", "bool"})


def _union_branch(error: dict[str, Any], index: int) -> bool:
    """Whether entry ``index`` of the error's path names a branch of a union, not a field:
    pydantic puts the branch's type there (``str``, ``list[any]``, ``dict[str,any]``,
    ``function-after[..., AxisRange]``). The key of an unknown-key error is always a key."""
    part = error["loc"][index]
    if error["type"] == "extra_forbidden" and index == len(error["loc"]) - 1:
        return False
    return isinstance(part, str) and ("[" in part or part in _TYPE_NAMES)


def _in_union(error: dict[str, Any]) -> bool:
    return any(_union_branch(error, i) for i in range(len(error["loc"])))


def format_validation_error(error: ValidationError, prefix: str = "", source: str = "") -> str:
    """The first problem as one line, ``field.path: message (got value)``, after
    ``source: `` when a source (a file, a study spec) is named. ``prefix`` is the path of
    the section that was validated (``surrogate``).

    A union (a list or a range, a name or a mapping) reports every branch: the branch whose
    type matched the input is preferred, and the field is named, not the branch."""
    errors = error.errors()
    first = next((e for e in errors if not (e["type"] in _TYPE_MISMATCHES and _in_union(e))),
                 errors[0])
    loc = [part for i, part in enumerate(first["loc"]) if not _union_branch(first, i)]
    location = ".".join(str(p) for p in (*(prefix.split(".") if prefix else ()), *loc))
    # a discriminated union puts the tag in the path (data.randman.alpha): drop it
    if location.startswith("data.") and len(loc) > 2:
        location = "data." + ".".join(str(p) for p in loc[2:])
    message = _problem(first, location)
    return f"{source}: {message}" if source else message


def _problem(error: dict[str, Any], location: str) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    if error["type"] == "missing":
        return f"{location}: required field is missing"
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):  # data.name
        known = error.get("ctx", {}).get("expected_tags", "")
        got = error.get("ctx", {}).get("tag")
        problem = f"unknown data set {got!r}" if got is not None else "required field is missing"
        return f"{location}.name: {problem}" + (f" (known: {known})" if got is not None else "")
    got = error.get("input")
    if location and not isinstance(got, dict | list):
        return f"{location}: {message} (got {got!r})"
    if location:
        return f"{location}: {message}"
    return message


def validate_section(section: type[Strict], values: dict[str, Any], prefix: str = "") -> Any:
    """``values`` validated as the config section ``section`` found at ``prefix``; errors are
    the config's own one-line :class:`ConfigError` s."""
    try:
        return section.model_validate(values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix)) from None


def validate_config(raw: dict[str, Any]) -> ExperimentConfig:
    return validate_section(ExperimentConfig, raw)


def load_config(
    source: str | Path | dict[str, Any] | ExperimentConfig,
    overrides: list[str] | dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Load, override and validate a config. Raises :class:`ConfigError` with one line (that
    names the file, for a config read from one)."""
    if isinstance(source, ExperimentConfig | dict):
        raw = source.to_dict() if isinstance(source, ExperimentConfig) else source
        return validate_config(apply_overrides(raw, overrides or []))
    raw, origin, folder = read_yaml_source(source, "configs", "config")
    try:
        return validate_config(apply_overrides(raw or {}, overrides or []))
    except ConfigError as error:
        if folder is None:  # a built-in config: the message names the field
            raise
        raise ConfigError(f"{origin}: {error}") from None


# ---------------------------------------------------------------------------------------
# The reference of every field (docs/config.md is this, generated)


def config_reference() -> str:
    """Every config field with its default and meaning, as Markdown: the experiment's
    sections, then one table per data set (``data.name`` chooses one)."""
    from spikegrad.data.configs import DATA_CONFIGS

    lines = ["# Config reference", "",
             "Every field of an experiment config (`spikegrad config show CONFIG` prints a "
             "complete one), with its default and meaning. Generated from the config's own "
             "definitions by `spikegrad config reference`.", "",
             "| field | default | meaning |", "|---|---|---|"]
    lines += _field_rows(ExperimentConfig, "", skip={"data"})
    lines += ["", "## Data sets", "",
              "`data.name` chooses the data set; each has its own fields."]
    for model in DATA_CONFIGS:
        name = model.model_fields["name"].default
        lines += ["", f"### `{name}`", "", _first_line(model.__doc__), "",
                  "| field | default | meaning |", "|---|---|---|"]
        lines += _field_rows(model, "data.")
    return "\n".join(lines) + "\n"


def _first_line(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def _field_rows(model: type, prefix: str, skip: frozenset | set = frozenset()) -> list[str]:
    from pydantic import BaseModel

    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}{name}"
        annotation = field.annotation
        nested = getattr(annotation, "__args__", (None,))[0] if str(annotation).startswith(
            "list[") else annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            inner = f"{path}.0." if nested is not annotation else f"{path}."
            if field.description:
                rows.append(f"| `{path}` | | {' '.join(field.description.split())} |")
            rows += _field_rows(nested, inner)
            continue
        default = field.get_default(call_default_factory=True)
        shown = "—" if field.is_required() else json.dumps(default)
        rows.append(f"| `{path}` | `{shown}` | {' '.join((field.description or '').split())} |")
        optional = [arg for arg in getattr(annotation, "__args__", ())
                    if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if optional:  # a section that is off (null) by default: its fields when it is set
            rows += _field_rows(optional[0], f"{path}.")
    return rows

"""Export to and import from NIR, the Neuromorphic Intermediate Representation.

    import spikegrad as sg
    graph = sg.to_nir(model, dt=1e-3)          # a nir.NIRGraph
    sg.write_nir(model, "net.nir", dt=1e-3)    # the same, written to an HDF5 file
    model = sg.from_nir("net.nir")             # an SNN again

Needs the optional ``nir`` package (``pip install -e ".[nir]"``). Times in a NIR graph are
in seconds, so ``dt`` is the step in seconds (a config's ``time.dt_ms`` / 1000).

Graph layout
------------
A network with hidden layers 0..L-1 becomes the chain ``input -> fc_0 -> lif_0 -> ... ->
fc_out -> readout -> output``: ``fc_i`` are ``Linear`` nodes (weights [out, in], as
``torch.nn.Linear``; no biases), ``lif_i`` are ``CubaLIF`` nodes and ``readout`` is a
``CubaLI`` node. A recurrent layer ``lif_i`` is a sub-graph ``input -> lif <-> w_rec ->
output`` whose ``w_rec`` is a ``Linear`` node holding V. A layer whose synaptic decay is 0
(no synaptic filter) is written as ``LIF`` (``LI`` for the readout).

Mapping of the equations
------------------------
NIR's ``CubaLIF`` is continuous in time::

    tau_syn dI/dt = -I + w_in x(t)                x: the node's input, W S_in
    tau_mem dv/dt = (v_leak - v) + r I
    v > v_threshold:  spike, v <- v_reset

Integrate it on a grid of step dt with every input held constant over a step, each equation
exactly over the step with the other variable held ("exponential Euler"), and with
β = exp(-dt/τ)::

    I[n+1] = β_syn I[n] + (1 - β_syn) w_in x[n]
    v[n+1] = β_mem v[n] + (1 - β_mem) r I[n]

These are spikegrad's equations (``spikegrad.functional``) with U = v and I_spikegrad = r I
when ``v_leak = 0``, ``v_reset = 0``, ``v_threshold = 1`` and ``r w_in (1 - β_syn) = 1``.
The export writes, per neuron::

    tau_mem = -dt / ln β_mem          tau_syn = -dt / ln β_syn
    r = tau_mem / dt                  w_in = 1 / ((1 - β_syn) r)
    v_leak = 0                        v_threshold = 1              v_reset = 0

Only the product r w_in matters to a CubaLIF; this split is the one snnTorch's importer
accepts (it requires r = tau_mem / dt). The readout's ``CubaLI`` uses the same formulas
(tau_mem from β_out). A ``LIF``/``LI`` node (β_syn = 0) has r = 1.

Forward Euler, the integration snnTorch and Norse use when they import a graph, has decay
1 - dt/τ instead of exp(-dt/τ) (0.9 instead of 0.905 for τ = 10 dt; 0.8 instead of 0.819
for τ = 5 dt) and input factors dt/τ instead of 1 - β; steady state (r) and charge per input
spike (r w_in) are the same. ``discretisation="euler"`` writes ``tau = dt / (1 - β)``
instead, so that a forward-Euler simulator with the same dt reproduces β and both input
factors exactly (then dt/τ = 1 - β).

What NIR cannot carry
---------------------
- *Update order.* spikegrad takes S[n] from U[n] before the update, and the membrane sees
  I[n] only in the next update: an input spike at step n changes I[n+1] and U[n+2], so each
  hidden layer answers two steps after its input, and the recorded readout U_out[1..T] lags
  the last hidden layer by one more step. NIR's equations have no such delay; snnTorch and
  Norse update current, membrane and threshold within the step of the input.
- *Reset.* The factor (1 - S[n]) multiplies the whole update: after a spike the membrane stays
  at 0 for one step and that step's current is not integrated. NIR (and both peers' importers)
  reset v and go on integrating. (spikegrad's reset is snnTorch's ``reset_delay=True`` with
  ``reset_mechanism="zero"``; :mod:`spikegrad.interop.peers` imports into snnTorch and Norse
  with each peer's switch for it, which makes a feed-forward export run identically there.)
- *Initial readout membrane* (``initial_membrane``, default -1e-3): NIR has no initial state;
  other simulators start at 0. The offset u_0 β_out^(n+1) is the same for every readout unit.
- *Time step*: a NIR graph has none. spikegrad keeps dt in the graph's metadata; a reader must
  use the same step (snnTorch's importer assumes 1e-4 s: export with ``dt=1e-4`` for it;
  Norse's ``from_nir`` takes ``dt``).

Export warns (:class:`NIRApproximationWarning`, one line) about the update order, and about a
non-zero initial readout membrane. spikegrad's own values (the exact β, dt, the initial
membrane, the surrogate and the reset and recurrence gradient options) are kept as node
metadata, so spikegrad -> NIR -> spikegrad gives bit-identical spikes and readout.

Import reads CubaLIF, LIF, CubaLI, LI, Linear, Affine (zero bias) and recurrent sub-graphs
(a neuron node with a Linear/Affine from and to itself, flat or as a sub-graph), in a chain
that ends with a non-spiking layer (LI, CubaLI, or LIF/CubaLIF with an infinite threshold).
β comes from tau and dt by the chosen discretisation; per-neuron thresholds and gains
r w_in (1 - β_syn) / v_threshold are folded into the rows of the incoming weights. Time
constants that differ between the neurons of a hidden CubaLIF node become per-neuron time
constants (``LIFLayer.set_time_constants``, τ chosen so that exp(-dt/τ) is each neuron's
decay under either discretisation); spikegrad's own per-neuron layers keep their exact log τ
and whether they are learned in the node's metadata. Per-neuron τ in the readout or in a LIF
node without synaptic current, v_leak != 0, v_reset != 0 and biases have no spikegrad
counterpart and are refused, as is any other primitive, with one line naming it.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from spikegrad.config import ConfigError
from spikegrad.errors import ArgumentError, first_line
from spikegrad.functional import LIFDynamics, ReadoutDynamics
from spikegrad.io import atomic_write_bytes
from spikegrad.model import SNN, Engine, LeakyReadout, LIFLayer
from spikegrad.surrogates import Surrogate

if TYPE_CHECKING:
    import nir

Discretisation = Literal["exp", "euler"]
ReadoutNode = Literal["CubaLI", "CubaLIF"]
DISCRETISATIONS: tuple[str, ...] = ("exp", "euler")
WRITER = "spikegrad"
SUPPORTED = "CubaLIF, LIF, CubaLI, LI, Linear, Affine and recurrent sub-graphs"
BETA_MATCH = 1e-12
"""A β stored by spikegrad is used when the β the reader computes from tau and dt differs
from it by at most this much (the round trip is then exact)."""
GAIN_MATCH = 1e-9
"""Row gains within this of 1 leave the weights untouched."""


class NIRApproximationWarning(UserWarning):
    """A part of a network that NIR (or the other side) represents only approximately."""


def _nir():
    try:
        import nir
    except ImportError:
        raise ConfigError(
            'NIR support needs the nir package: pip install -e ".[nir]"') from None
    return nir


def time_constant(beta: float, dt: float, discretisation: Discretisation = "exp") -> float:
    """The τ (same unit as dt) whose decay over one step dt is ``beta``."""
    if not 0.0 < beta < 1.0:
        raise ArgumentError(f"decay factor must lie in (0, 1), got {beta}")
    if discretisation == "exp":
        return -dt / math.log(beta)
    if discretisation == "euler":
        return dt / (1.0 - beta)
    raise ArgumentError(f"unknown discretisation {discretisation!r} (known: exp, euler)")


def decay(tau: float, dt: float, discretisation: Discretisation = "exp") -> float:
    """The decay over one step dt of a leaky variable with time constant τ."""
    if not tau > 0.0:
        raise ArgumentError(f"time constant must be positive, got {tau}")
    if discretisation == "exp":
        return math.exp(-dt / tau)
    if discretisation == "euler":
        if tau < dt:
            raise ArgumentError(f"forward Euler needs tau >= dt, got tau {tau} < dt {dt}")
        return 1.0 - dt / tau
    raise ArgumentError(f"unknown discretisation {discretisation!r} (known: exp, euler)")


# ---------------------------------------------------------------------------------------
# Export


def _full(n: int, value: float) -> np.ndarray:
    return np.full(n, value, dtype=np.float64)


def _time_constants(betas: np.ndarray, dt: float, discretisation: Discretisation) -> np.ndarray:
    """:func:`time_constant` of every entry of ``betas``."""
    return np.array([time_constant(float(beta), dt, discretisation) for beta in betas])


def _neuron_node(n: int, beta_mem: float | np.ndarray, beta_syn: float | np.ndarray,
                 dt: float, discretisation: Discretisation, threshold: float | None,
                 metadata: dict[str, Any]):
    """CubaLIF/LIF (``threshold`` set) or CubaLI/LI (``threshold`` None) for one layer; the
    decays are one number for the layer or one per neuron ([n] arrays)."""
    nir = _nir()
    beta_mem = np.broadcast_to(np.asarray(beta_mem, dtype=np.float64), (n,))
    beta_syn = np.broadcast_to(np.asarray(beta_syn, dtype=np.float64), (n,))
    tau_mem = _time_constants(beta_mem, dt, discretisation)
    zeros = _full(n, 0.0)
    if np.all(beta_syn == 0.0):
        if threshold is None:
            return nir.LI(tau=tau_mem, r=_full(n, 1.0), v_leak=zeros, metadata=metadata)
        return nir.LIF(tau=tau_mem, r=_full(n, 1.0), v_leak=zeros,
                       v_threshold=_full(n, threshold), v_reset=_full(n, 0.0),
                       metadata=metadata)
    tau_syn = _time_constants(beta_syn, dt, discretisation)
    r = tau_mem / dt
    w_in = 1.0 / ((1.0 - beta_syn) * r)
    common = {"tau_syn": tau_syn, "tau_mem": tau_mem, "r": r, "v_leak": zeros, "w_in": w_in,
              "metadata": metadata}
    if threshold is None:
        return nir.CubaLI(**common)
    return nir.CubaLIF(v_threshold=_full(n, threshold), v_reset=_full(n, 0.0), **common)


def _weights(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def _numbers(tensor: torch.Tensor) -> np.ndarray:
    """A tensor's values as float64 (exact for float32 ones)."""
    return tensor.detach().cpu().double().numpy().copy()


def to_nir(model: SNN, dt: float = 1e-3, *, discretisation: Discretisation = "exp",
           readout_node: ReadoutNode = "CubaLI") -> nir.NIRGraph:
    """The NIR graph of ``model`` simulated with step ``dt`` (seconds).

    ``discretisation``: ``"exp"`` writes the continuous time constants τ = -dt / ln β (the
    exact equivalent of spikegrad's decays); ``"euler"`` writes τ = dt / (1 - β), which a
    forward-Euler simulator with the same dt turns back into β. ``readout_node``: the
    readout as ``CubaLI`` or, for simulators that import no leaky integrator (snnTorch 1.0,
    Norse 1.1), as a ``CubaLIF`` that never fires (threshold +inf) whose membrane is the
    readout. Warns (:class:`NIRApproximationWarning`) where NIR cannot carry the model
    exactly; see the module docstring for the full mapping.
    """
    nir = _nir()
    if not dt > 0.0:
        raise ArgumentError(f"dt must be positive, got {dt}")
    if discretisation not in DISCRETISATIONS:
        raise ArgumentError(f"unknown discretisation {discretisation!r} (known: exp, euler)")
    if readout_node not in ("CubaLI", "CubaLIF"):
        raise ArgumentError(f"unknown readout node {readout_node!r} (known: CubaLI, CubaLIF)")
    warnings.warn(
        "NIR has no counterpart of spikegrad's update order (each layer answers 2 steps after "
        "its input, the readout 1 step after the last layer) nor of its reset (no integration "
        "for a step after a spike): other simulators' spike times differ unless run as in "
        "docs/nir.md (spikegrad.interop.peers)",
        NIRApproximationWarning, stacklevel=2)
    n_inputs = model.hidden[0].in_features
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([n_inputs]))}
    chain = ["input"]
    for i, layer in enumerate(model.hidden):
        d = layer.dynamics
        n = layer.out_features
        metadata = {
            "beta_mem": float(d.beta_mem), "beta_syn": float(d.beta_syn),
            "surrogate": d.surrogate.name, "surrogate_slope": float(d.surrogate.slope),
            "surrogate_scale": float(d.surrogate.scale), "detach_reset": bool(d.detach_reset),
            "recurrent_gradient": bool(d.recurrent_gradient),
        }
        beta_mem, beta_syn = d.beta_mem, d.beta_syn
        if layer.time_constants() is not None:  # per-neuron τ: its decays, exact log τ kept
            decays = layer.neuron_dynamics()
            beta_mem, beta_syn = (_numbers(decays.beta_mem), _numbers(decays.beta_syn))
            metadata.update(log_tau_mem_ms=_numbers(layer.log_tau_mem),
                            log_tau_syn_ms=_numbers(layer.log_tau_syn),
                            dt_ms=float(layer.dt_ms),
                            learn_time_constants=bool(layer.log_tau_mem.requires_grad))
        nodes[f"fc_{i}"] = nir.Linear(weight=_weights(layer.weight))
        neuron = _neuron_node(n, beta_mem, beta_syn, dt, discretisation, 1.0, metadata)
        if layer.recurrent_weight is not None:
            neuron = nir.NIRGraph(
                nodes={"input": nir.Input(input_type=np.array([n])), "lif": neuron,
                       "w_rec": nir.Linear(weight=_weights(layer.recurrent_weight)),
                       "output": nir.Output(output_type=np.array([n]))},
                edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
                       ("lif", "output")],
                metadata={})
        nodes[f"lif_{i}"] = neuron
        chain += [f"fc_{i}", f"lif_{i}"]
    readout = model.readout
    d = readout.dynamics
    if d.initial_membrane != 0.0:
        warnings.warn(
            f"NIR has no initial state: the readout's initial membrane {d.initial_membrane:g} "
            "is kept as spikegrad metadata; other simulators start it at 0",
            NIRApproximationWarning, stacklevel=2)
    metadata = {"beta_mem": float(d.beta_mem), "beta_syn": float(d.beta_syn),
                "initial_membrane": float(d.initial_membrane)}
    threshold = math.inf if readout_node == "CubaLIF" else None
    nodes["fc_out"] = nir.Linear(weight=_weights(readout.weight))
    nodes["readout"] = _neuron_node(readout.out_features, d.beta_mem, d.beta_syn, dt,
                                    discretisation, threshold, metadata)
    nodes["output"] = nir.Output(output_type=np.array([readout.out_features]))
    chain += ["fc_out", "readout", "output"]
    from spikegrad import __version__

    return nir.NIRGraph(
        nodes=nodes, edges=list(zip(chain[:-1], chain[1:], strict=True)),
        metadata={"writer": WRITER, "spikegrad_version": __version__, "dt": float(dt),
                  "discretisation": discretisation})


def write_nir(model: SNN, path: str | Path, dt: float = 1e-3, *,
              discretisation: Discretisation = "exp",
              readout_node: ReadoutNode = "CubaLI") -> Path:
    """Write :func:`to_nir` of ``model`` to ``path`` (HDF5, written atomically)."""
    nir = _nir()
    graph = to_nir(model, dt, discretisation=discretisation, readout_node=readout_node)
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return atomic_write_bytes(path, buffer.getvalue())


def export_run(source: str | Path, out: str | Path, dt: float | None = None, *,
               discretisation: Discretisation = "exp",
               readout_node: ReadoutNode = "CubaLI") -> Path:
    """Write the best-validation weights of a run (its folder, or its ``checkpoint.pt`` with
    ``config.yaml`` beside it) as a NIR file; ``dt`` defaults to the run's step."""
    model, run_dt = load_run_model(source)
    return write_nir(model, out, run_dt if dt is None else dt,
                     discretisation=discretisation, readout_node=readout_node)


def load_run_model(source: str | Path) -> tuple[SNN, float]:
    """The network of a run with its best-validation weights, and the run's step in seconds."""
    from spikegrad.config import load_config
    from spikegrad.run_files import read_best_weights, run_files

    checkpoint, config_path = run_files(source)
    config = load_config(config_path)
    state = read_best_weights(checkpoint)
    if state is None:
        raise ConfigError(f"{checkpoint}: no validated weights yet (no epoch has finished)")
    n_inputs = state["hidden.0.weight"].shape[1]
    n_classes = state["readout.weight"].shape[0]
    model = SNN.from_config(config, n_inputs, n_classes, load_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(f"{checkpoint}: weights do not fit {config_path} "
                          f"({first_line(error)})") from None
    return model, config.time.dt_ms / 1000.0


# ---------------------------------------------------------------------------------------
# Import


@dataclass
class _Layer:
    """One neuron node of the chain, with its incoming and recurrent weights."""

    name: str
    node: Any
    weight: np.ndarray | None  # [out, in]; None: the identity
    recurrent: np.ndarray | None
    recurrent_name: str | None = None


def _node_type(node: Any) -> str:
    return type(node).__name__


def _scan_file(path: Path) -> None:
    """One-line errors for files that are not NIR graphs, before the nir reader sees them."""
    import h5py

    nir = _nir()
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise ConfigError(f"{path}: not a NIR file (not HDF5)")
    known = set(nir.ir.__all__)
    try:
        with h5py.File(path, "r") as f:
            if "node" not in f or not isinstance(f["node"], h5py.Group):
                raise ConfigError(f"{path}: not a NIR file (no 'node' group)")
            stack: list[tuple[str, Any]] = [("graph", f["node"])]
            while stack:
                name, group = stack.pop()
                if "type" not in group:
                    raise ConfigError(f"{path}: not a NIR file (node '{name}' has no type)")
                kind = group["type"][()]
                kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                if kind not in known:
                    raise ConfigError(f"{path}: unknown NIR primitive {kind!r} (node '{name}')")
                if kind == "NIRGraph" and "nodes" in group:
                    stack.extend(group["nodes"].items())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read HDF5 ({error})".splitlines()[0]) from None


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read a NIR file; every problem is a one-line :class:`ConfigError` naming the file."""
    nir = _nir()
    path = Path(path)
    _scan_file(path)
    try:
        return nir.read(path, type_check=False)
    except Exception as error:  # noqa: BLE001 - the reader raises many kinds; report one line
        message = first_line(error, empty="")
        raise ConfigError(f"{path}: malformed NIR graph ({type(error).__name__}"
                          f"{': ' + message if message else ''})") from None


def _check_primitives(graph: Any, where: str, prefix: str = "") -> None:
    nir = _nir()
    allowed = (nir.Input, nir.Output, nir.Linear, nir.Affine, nir.CubaLIF, nir.LIF,
               nir.CubaLI, nir.LI, nir.NIRGraph)
    for name, node in graph.nodes.items():
        if not isinstance(node, allowed):
            raise ConfigError(f"{where}: unsupported NIR primitive {_node_type(node)} (node "
                              f"'{prefix}{name}'); spikegrad imports {SUPPORTED}")
        if isinstance(node, nir.NIRGraph):
            _check_primitives(node, where, f"{prefix}{name}.")


def _matrix(node: Any, name: str, where: str) -> np.ndarray:
    nir = _nir()
    weight = np.asarray(node.weight)
    if weight.ndim != 2:
        raise ConfigError(f"{where}: node '{name}': weight must be a matrix, "
                          f"has shape {tuple(weight.shape)}")
    if isinstance(node, nir.Affine):
        bias = np.asarray(node.bias)
        if np.any(bias != 0):
            raise ConfigError(f"{where}: node '{name}': Affine with a non-zero bias "
                              "(spikegrad's layers have no biases)")
        if bias.size not in (1, weight.shape[0]):
            raise ConfigError(f"{where}: node '{name}': bias of {bias.size} for "
                              f"{weight.shape[0]} outputs")
    return weight


def _is_neuron(node: Any) -> bool:
    nir = _nir()
    return isinstance(node, nir.CubaLIF | nir.LIF | nir.CubaLI | nir.LI)


def _is_weight(node: Any) -> bool:
    nir = _nir()
    return isinstance(node, nir.Linear | nir.Affine)


def _recurrent_subgraph(graph: Any, name: str, where: str) -> tuple[str, Any, str, Any]:
    """(neuron name, neuron, weight name, weight) of a sub-graph input -> neuron <-> w -> output."""
    nir = _nir()
    nodes = graph.nodes
    neurons = [k for k, v in nodes.items() if _is_neuron(v)]
    weights = [k for k, v in nodes.items() if _is_weight(v)]
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [k for k, v in nodes.items() if isinstance(v, nir.Output)]
    shape_ok = (len(neurons) == len(weights) == len(inputs) == len(outputs) == 1
                and len(nodes) == 4)
    if shape_ok:
        (n,), (w,), (i,), (o,) = neurons, weights, inputs, outputs
        if set(map(tuple, graph.edges)) == {(i, n), (n, w), (w, n), (n, o)}:
            return n, nodes[n], w, nodes[w]
    raise ConfigError(f"{where}: sub-graph '{name}' is not a recurrent layer "
                      "(input -> neuron <-> Linear -> output)")


def _chain(graph: Any, where: str) -> list[_Layer]:
    """The neuron layers from the graph's input to its output, with their weights."""
    nir = _nir()
    nodes = graph.nodes
    edges = [tuple(e) for e in graph.edges]
    for source, target in edges:
        for end in (source, target):
            if end not in nodes:
                raise ConfigError(f"{where}: edge ({source!r}, {target!r}) names no node "
                                  f"{end!r}")
    successors: dict[str, list[str]] = {k: [] for k in nodes}
    predecessors: dict[str, list[str]] = {k: [] for k in nodes}
    for source, target in edges:
        successors[source].append(target)
        predecessors[target].append(source)
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise ConfigError(f"{where}: spikegrad imports graphs with one Input node, "
                          f"this one has {len(inputs)}")

    def recurrent_of(name: str) -> list[str]:
        return [s for s in successors[name] if _is_weight(nodes[s])
                and successors[s] == [name] and predecessors[s] == [name]]

    layers: list[_Layer] = []
    pending: tuple[str, Any] | None = None  # a weight node waiting for its neuron
    current, seen = inputs[0], {inputs[0]}
    while True:
        recurrent = recurrent_of(current) if _is_neuron(nodes[current]) else []
        forward = [s for s in successors[current] if s not in recurrent]
        if len(forward) != 1:
            raise ConfigError(f"{where}: node '{current}' feeds {len(forward)} nodes; spikegrad "
                              "imports a chain of layers")
        following = forward[0]
        incoming = [p for p in predecessors[following] if p not in recurrent_of(following)]
        if incoming != [current]:
            raise ConfigError(f"{where}: node '{following}' has {len(incoming)} inputs; "
                              "spikegrad imports a chain of layers")
        if following in seen:
            raise ConfigError(f"{where}: the graph has a cycle through '{following}' that is "
                              "not a recurrent layer")
        seen.add(following)
        node = nodes[following]
        if isinstance(node, nir.Output):
            if pending is not None:
                raise ConfigError(f"{where}: weights '{pending[0]}' feed the output directly; "
                                  "the last layer must be a neuron layer")
            break
        if isinstance(node, nir.Input):
            raise ConfigError(f"{where}: spikegrad imports graphs with one Input node")
        if _is_weight(node):
            if pending is not None:
                raise ConfigError(f"{where}: two weight nodes in a row ('{pending[0]}', "
                                  f"'{following}'); expected a neuron layer between them")
            pending = (following, _matrix(node, following, where))
        else:
            weight = pending[1] if pending is not None else None
            rec_weight, rec_name, neuron_name, neuron = None, None, following, node
            if isinstance(node, nir.NIRGraph):
                inner, neuron, rec_name, rec_node = _recurrent_subgraph(node, following, where)
                neuron_name = f"{following}.{inner}"
                rec_weight = _matrix(rec_node, f"{following}.{rec_name}", where)
                rec_name = f"{following}.{rec_name}"
            else:
                rec = recurrent_of(following)
                if len(rec) > 1:
                    raise ConfigError(f"{where}: node '{following}' has {len(rec)} recurrent "
                                      "weight nodes; spikegrad imports one")
                if rec:
                    rec_name = rec[0]
                    rec_weight = _matrix(nodes[rec_name], rec_name, where)
                    seen.add(rec_name)
            layers.append(_Layer(neuron_name, neuron, weight, rec_weight, rec_name))
            pending = None
        current = following
    unreached = set(nodes) - seen - {inputs[0]}
    if unreached:
        raise ConfigError(f"{where}: node '{sorted(unreached)[0]}' is not on the path from "
                          "input to output")
    if not layers:
        raise ConfigError(f"{where}: the graph has no neuron layer")
    return layers


def _parameter(node: Any, field: str, n: int, name: str, where: str) -> np.ndarray:
    """A neuron parameter as a float64 vector of n values (scalars are broadcast)."""
    value = np.asarray(getattr(node, field), dtype=np.float64)
    if value.ndim == 0 or value.size == 1:
        return np.full(n, float(value.reshape(-1)[0]))
    if value.ndim != 1 or value.size != n:
        raise ConfigError(f"{where}: node '{name}': {field} has shape {tuple(value.shape)} "
                          f"for {n} neurons")
    return value


def _uniform(values: np.ndarray, field: str, name: str, where: str) -> float:
    first = float(values[0])
    if np.any(np.abs(values - first) > 1e-12 * abs(first)):
        raise ConfigError(f"{where}: node '{name}': {field} differs between neurons "
                          "(spikegrad's readout has one time constant)")
    return first


def _node_size(node: Any) -> int | None:
    """Number of neurons a node's parameters give (None when they are all scalars)."""
    sizes = {np.asarray(v).size for k, v in vars(node).items()
             if k in ("tau", "tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset",
                      "w_in") and v is not None and np.asarray(v).ndim > 0}
    sizes.discard(1)
    if len(sizes) > 1:
        return -1
    return sizes.pop() if sizes else None


@dataclass
class _Dynamics:
    beta_mem: float | np.ndarray  # one decay for the layer, or one per neuron
    beta_syn: float | np.ndarray
    gain: np.ndarray  # per neuron: factor on the incoming weights' rows
    spiking: bool

    @property
    def per_neuron(self) -> bool:
        return isinstance(self.beta_mem, np.ndarray) or isinstance(self.beta_syn, np.ndarray)


def _dynamics(layer: _Layer, n: int, dt: float, discretisation: Discretisation,
              stored_betas: Mapping[str, Any] | None, where: str,
              per_neuron: bool = True) -> _Dynamics:
    """β (one number, or with ``per_neuron`` one per neuron where the node's τ differ
    between neurons) and the per-neuron row gain r w_in (1 - β_syn) / v_threshold of one
    neuron node."""
    nir = _nir()
    node, name = layer.node, layer.name

    def vector(field: str) -> np.ndarray:
        return _parameter(node, field, n, name, where)

    def beta(field: str, key: str) -> float | np.ndarray:
        taus = vector(field)
        try:
            if per_neuron and np.any(np.abs(taus - taus[0]) > 1e-12 * abs(taus[0])):
                return np.array([decay(float(tau), dt, discretisation) for tau in taus])
            value = decay(_uniform(taus, field, name, where), dt, discretisation)
        except ValueError as error:
            raise ConfigError(f"{where}: node '{name}': {error}") from None
        if stored_betas is not None and key in stored_betas and \
                abs(float(stored_betas[key]) - value) <= BETA_MATCH:
            return float(stored_betas[key])
        return value

    if np.any(vector("v_leak") != 0):
        raise ConfigError(f"{where}: node '{name}': v_leak != 0 (spikegrad's neurons rest at 0)")
    has_synapse = isinstance(node, nir.CubaLIF | nir.CubaLI)
    beta_mem = beta("tau_mem" if has_synapse else "tau", "beta_mem")
    beta_syn = beta("tau_syn", "beta_syn") if has_synapse else 0.0
    gain = vector("r").copy()
    if has_synapse:
        gain *= vector("w_in") * (1.0 - beta_syn)
    spiking = isinstance(node, nir.CubaLIF | nir.LIF)
    if spiking:
        threshold = vector("v_threshold")
        if np.all(np.isposinf(threshold)):
            spiking = False
        else:
            if np.any(~np.isfinite(threshold)) or np.any(threshold <= 0):
                raise ConfigError(f"{where}: node '{name}': v_threshold must be positive and "
                                  "finite (or +inf for every neuron of a readout)")
            if np.any(vector("v_reset") != 0):
                raise ConfigError(f"{where}: node '{name}': v_reset != 0 (spikegrad resets to 0)")
            gain /= threshold
    if not np.all(np.isfinite(gain)):
        raise ConfigError(f"{where}: node '{name}': r and w_in must be finite")
    return _Dynamics(beta_mem, beta_syn, gain, spiking)


def _scaled(weight: np.ndarray, gain: np.ndarray) -> torch.Tensor:
    if np.all(np.abs(gain - 1.0) <= GAIN_MATCH):
        return torch.from_numpy(np.array(weight, dtype=np.float32))
    return torch.from_numpy((np.asarray(weight, dtype=np.float64) * gain[:, None])
                            .astype(np.float32))


def _stored(metadata: Any, key: str, default: Any) -> Any:
    if not isinstance(metadata, Mapping) or key not in metadata:
        return default
    value = metadata[key]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic | np.ndarray):
        return value.item()
    return value


def from_nir(source: str | Path | nir.NIRGraph, dt: float | None = None, *,
             discretisation: Discretisation | None = None,
             engine: Engine = "reference") -> SNN:
    """An :class:`SNN` from a NIR graph or file.

    ``dt`` (seconds): the step to simulate; by default the one spikegrad stored in the graph
    (a graph from elsewhere carries none: pass it). ``discretisation``: how β follows from
    τ, ``"exp"`` (β = exp(-dt/τ)) or ``"euler"`` (β = 1 - dt/τ, as snnTorch and Norse
    simulate); by default the one spikegrad stored, else ``"exp"``. Graphs spikegrad wrote
    come back bit for bit; see the module docstring for the mapping and what is refused.
    Every problem is a one-line :class:`ConfigError`.
    """
    nir = _nir()
    if isinstance(source, str | Path):
        where = str(source)
        graph = read_nir(source)
    else:
        where = "NIR graph"
        graph = source
    if not isinstance(graph, nir.NIRGraph):
        raise ConfigError(f"{where}: expected a NIR graph, got {_node_type(graph)}")
    _check_primitives(graph, where)
    meta = graph.metadata if isinstance(graph.metadata, Mapping) else {}
    ours = _stored(meta, "writer", None) == WRITER
    if dt is None:
        dt = _stored(meta, "dt", None) if ours else None
        if dt is None:
            raise ConfigError(f"{where}: the graph does not give its time step; pass dt "
                              "(seconds)")
    dt = float(dt)
    if not dt > 0:
        raise ConfigError(f"{where}: dt must be positive, got {dt}")
    if discretisation is None:
        discretisation = _stored(meta, "discretisation", "exp") if ours else "exp"
    if discretisation not in DISCRETISATIONS:
        raise ConfigError(f"{where}: unknown discretisation {discretisation!r} "
                          "(known: exp, euler)")
    exact = ours and float(_stored(meta, "dt", math.nan)) == dt
    layers = _chain(graph, where)
    if not ours:
        warnings.warn(
            f"{where}: simulated with spikegrad's update order (each layer answers 2 steps "
            "after its input, no integration for a step after a spike) and "
            f"{discretisation} decays; spike times can differ from the source simulator's "
            "(docs/nir.md)", NIRApproximationWarning, stacklevel=2)

    hidden: list[LIFLayer] = []
    width: int | None = None
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        node_n = _node_size(layer.node)
        if node_n == -1:
            raise ConfigError(f"{where}: node '{layer.name}': parameters of different lengths")
        if layer.weight is None:
            if width is None:
                width = _input_width(graph, where)
            n_in = n = width
            weight = np.eye(n, dtype=np.float32)
        else:
            n, n_in = layer.weight.shape
            weight = layer.weight
            if width is not None and n_in != width:
                raise ConfigError(f"{where}: weights into '{layer.name}' take {n_in} inputs, "
                                  f"the layer before gives {width}")
            if width is None:
                expected = _input_width(graph, where, required=False)
                if expected is not None and expected != n_in:
                    raise ConfigError(f"{where}: the input has {expected} channels, weights "
                                      f"into '{layer.name}' take {n_in}")
        if node_n is not None and node_n != n:
            raise ConfigError(f"{where}: node '{layer.name}' has {node_n} neurons, its weights "
                              f"give {n}")
        if layer.recurrent is not None and layer.recurrent.shape != (n, n):
            raise ConfigError(f"{where}: recurrent weights '{layer.recurrent_name}' have shape "
                              f"{tuple(layer.recurrent.shape)} for {n} neurons")
        stored = layer.node.metadata if ours and isinstance(layer.node.metadata, Mapping) \
            else None
        dynamics = _dynamics(layer, n, dt, discretisation, stored if exact else None, where,
                             per_neuron=not last)
        if last:
            if dynamics.spiking:
                raise ConfigError(
                    f"{where}: the last layer '{layer.name}' ({_node_type(layer.node)}) fires "
                    "spikes; spikegrad's readout is non-spiking (LI, CubaLI, or LIF/CubaLIF "
                    "with v_threshold +inf)")
            if layer.recurrent is not None:
                raise ConfigError(f"{where}: the readout '{layer.name}' is recurrent; "
                                  "spikegrad's readout is not")
            readout = LeakyReadout(n_in, n, ReadoutDynamics(
                dynamics.beta_mem, dynamics.beta_syn,
                float(_stored(stored, "initial_membrane", 0.0))), engine)
            with torch.no_grad():
                readout.weight.copy_(_scaled(weight, dynamics.gain))
        else:
            if not dynamics.spiking:
                raise ConfigError(f"{where}: node '{layer.name}' ({_node_type(layer.node)}) "
                                  "does not fire but is followed by more layers")
            try:
                surrogate = Surrogate(
                    str(_stored(stored, "surrogate", Surrogate.name)),
                    float(_stored(stored, "surrogate_slope", Surrogate.slope)),
                    float(_stored(stored, "surrogate_scale", Surrogate.scale)))
            except (KeyError, ValueError) as error:
                raise ConfigError(f"{where}: node '{layer.name}': "
                                  f"{first_line(error)}") from None
            lif = LIFLayer(n_in, n, LIFDynamics(
                *_layer_decays(dynamics, stored if exact else None), surrogate,
                bool(_stored(stored, "detach_reset", True)),
                bool(_stored(stored, "recurrent_gradient", True))),
                recurrent=layer.recurrent is not None, engine=engine)
            if dynamics.per_neuron:
                _set_time_constants(lif, dynamics, dt, stored if exact else None,
                                    f"{where}: node '{layer.name}'")
            with torch.no_grad():
                lif.weight.copy_(_scaled(weight, dynamics.gain))
                if layer.recurrent is not None:
                    lif.recurrent_weight.copy_(_scaled(layer.recurrent, dynamics.gain))
            hidden.append(lif)
        width = n
    if not hidden:
        raise ConfigError(f"{where}: the graph has no spiking hidden layer before its readout")
    return SNN(hidden, readout)


def _layer_decays(dynamics: _Dynamics, stored: Mapping[str, Any] | None) -> tuple[float, float]:
    """The layer's own (β_mem, β_syn): those of the node, or for per-neuron τ the ones
    spikegrad stored, else the decays of the neurons' mean τ."""
    decays = []
    for key, beta in (("beta_mem", dynamics.beta_mem), ("beta_syn", dynamics.beta_syn)):
        if not isinstance(beta, np.ndarray):
            decays.append(beta)
        elif stored is not None and key in stored:
            decays.append(float(_stored(stored, key, 0.0)))
        else:
            decays.append(float(np.exp(np.mean(np.log(beta)))))
    return decays[0], decays[1]


def _set_time_constants(lif: LIFLayer, dynamics: _Dynamics, dt: float,
                        stored: Mapping[str, Any] | None, where: str) -> None:
    """Per-neuron τ for ``lif``: the log τ (ms) spikegrad stored, bit for bit, or else the τ
    whose exp(-dt/τ) is each neuron's decay (for ``euler`` graphs too)."""
    if np.any(np.asarray(dynamics.beta_syn) <= 0):
        raise ConfigError(f"{where}: per-neuron time constants without a synaptic current "
                          "(LIF): spikegrad's per-neuron layers have both τ_mem and τ_syn; "
                          "use CubaLIF")
    if stored is not None and "log_tau_mem_ms" in stored and "dt_ms" in stored:
        log_taus = [torch.as_tensor(np.asarray(stored[key], dtype=np.float64)).to(lif.weight)
                    for key in ("log_tau_mem_ms", "log_tau_syn_ms")]
        lif.set_time_constants(log_taus[0].exp(), log_taus[1].exp(), float(stored["dt_ms"]),
                               learn=bool(_stored(stored, "learn_time_constants", False)))
        with torch.no_grad():  # exactly the stored values (log of exp may round differently)
            lif.log_tau_mem.copy_(log_taus[0])
            lif.log_tau_syn.copy_(log_taus[1])
        return
    dt_ms = dt * 1000.0
    n = lif.out_features
    taus = [torch.as_tensor(-dt_ms / np.log(np.broadcast_to(beta, (n,))))
            for beta in (dynamics.beta_mem, dynamics.beta_syn)]
    lif.set_time_constants(taus[0], taus[1], dt_ms)


def _input_width(graph: Any, where: str, required: bool = True) -> int | None:
    nir = _nir()
    for node in graph.nodes.values():
        if isinstance(node, nir.Input):
            shape = np.asarray(node.input_type.get("input", [])).reshape(-1)
            if shape.size == 1:
                return int(shape[0])
    if required:
        raise ConfigError(f"{where}: the Input node does not give the number of input channels")
    return None

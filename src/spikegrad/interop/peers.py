"""spikegrad's NIR export run in snnTorch and Norse with spikegrad's reset rule.

Both peers import a NIR ``CubaLIF`` by forward Euler (step dt, decay 1 - dt/τ) and update
within the step of the input::

    I[m] = (1 - dt/τ_syn) I[m-1] + (dt/τ_syn) w_in x[m]       snnTorch: α syn + x, its
    v[m] = (1 - dt/τ_mem) v[m-1] + (dt/τ_mem) r I[m]          threshold divided by w_in dt/τ_syn
    z[m] = Θ(v[m] - v_threshold);  z[m] = 1:  v[m] <- 0

With ``to_nir(model, dt, discretisation="euler")`` these are spikegrad's equations
(``spikegrad.functional``) two steps earlier: a peer's step m is spikegrad's step m + 2, and
v[m] = U[m + 2] up to float rounding, until the first spike. What the importers then do
differently is the reset: spikegrad's factor (1 - S[n]) multiplies the whole update, so the
membrane stays at 0 for the step after a spike (U[n+1] = 0 whatever I[n]); both importers
reset v to 0 and integrate that same step's current. NIR's ``CubaLIF`` has no parameter
for this, so no graph makes the importers hold the membrane; each peer has its own switch:

- snnTorch: the neurons' ``reset_delay=True`` (snnTorch's default, which its importer turns
  off) zeroes the membrane in the step after the spike: v[m] = (β v[m-1] + I[m]) (1 - z[m-1]),
  spikegrad's rule. :func:`snntorch_from_nir` imports with snnTorch's importer and switches
  it back on.
- Norse: ``norse.torch.from_nir`` takes a reset rule ``(z, v, v_reset, v_th) -> v``. The rule
  :func:`hold_reset` sets a spiking neuron's membrane to the marker ``HELD`` (-1e30). In the
  next step Norse's Euler update gives β HELD + (1 - β) r I, far below threshold (no spike)
  and below ``HELD_BELOW``, which the rule turns into v_reset = 0: the membrane is held for one
  step, as in spikegrad. (Exact while β_mem > 1e-12 and |v| < 1e18; during the held step
  Norse's stored membrane reads about β HELD instead of 0.) :func:`norse_from_nir` imports
  with it.

Recurrent layers are not covered: snnTorch's importer feeds a layer's spikes back one step
later, so its loop S -> V S -> v takes one step where spikegrad's takes two (S[n] -> I[n+1]
-> U[n+2]), and NIR's ``Delay``, which would carry the extra step, is imported by neither
peer; Norse 1.1 imports no recurrent layer at all.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from spikegrad.config import ConfigError

if TYPE_CHECKING:
    import nir

HELD = -1e30
"""Membrane of a Norse neuron in the step after its spike (see :func:`hold_reset`)."""
HELD_BELOW = -1e18
"""A Norse membrane below this after its Euler update comes from ``HELD``: it is reset."""


def hold_reset(z: Tensor, v: Tensor, reset: Tensor, th: Tensor) -> Tensor:
    """spikegrad's reset as a Norse reset rule: a spike (z = 1) sets v to ``HELD``; a membrane
    that comes from ``HELD`` (v < ``HELD_BELOW``: the step after a spike, which Norse's
    threshold has already found silent) becomes ``reset``. Otherwise v is unchanged.

    ``th`` is part of Norse's signature (``ResetMethod``) and unused."""
    del th
    v = torch.where(v < HELD_BELOW, reset, v)
    return torch.where(z > 0, torch.full_like(v, HELD), v)


def snntorch_from_nir(graph: nir.NIRGraph) -> torch.nn.Module:
    """snnTorch's ``import_from_nir(graph)`` (its step is fixed at 1e-4 s: export with
    ``dt=1e-4``) with ``reset_delay=True`` on every imported neuron (snnTorch's default, and
    spikegrad's reset). The importer's printed conversions are suppressed."""
    try:
        import snntorch
        from snntorch.import_nir import import_from_nir
    except ImportError:
        raise ConfigError('running a graph in snnTorch needs snntorch: '
                          'pip install -e ".[bench]"') from None
    with contextlib.redirect_stdout(io.StringIO()):
        net = import_from_nir(graph)
    for module in net.modules():
        if isinstance(module, snntorch.SpikingNeuron):
            module.reset_delay = True
    return net


def norse_from_nir(graph: nir.NIRGraph, dt: float) -> torch.nn.Module:
    """``norse.torch.from_nir(graph, dt=dt, reset_method=hold_reset)``: Norse's importer with
    spikegrad's reset (``dt`` in seconds, the one the graph was exported for)."""
    try:
        import norse.torch as norse
    except ImportError:
        raise ConfigError('running a graph in Norse needs norse: '
                          'pip install -e ".[bench]"') from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Norse calls nirtorch.load
        return norse.from_nir(graph, dt=dt, reset_method=hold_reset)

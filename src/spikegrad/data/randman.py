"""Random manifolds (Randman): the paper's fully synthetic, tunable classification task.

Each class is a smooth random D-dimensional manifold embedded in M dimensions::

    f_i(x) = Π_{j=1..D} Σ_k s_k A_ijk sin(2π (k x_j B_ijk + C_ijk)),   A, B, C ~ U(0, 1)

with x ~ U(0, 1)^D. A sample of class c is one point f(x) on the manifold of c;
each of its M coordinates becomes the firing time of one input neuron (exactly one
spike per input neuron): coordinates are min-max standardised per class and per
unit over the class's samples, then scaled into the first ``step_frac`` of the trial.

The published formula and the authors' public generator (fzenke/randman) differ; both are
here, chosen with ``spectrum``:

- ``"generator"`` (default): frequencies k = 0 .. n_cutoff-1 with spectrum
  s_k = 1 / ((k + 1)^α + spectrum_offset); the k = 0 term is a constant, whose amplitude
  is set to 0 unless ``use_bias``. With ``spectrum_offset = 1`` (the default) this is the
  lab's ``Randman`` class (``TorchRandman``, the one its library stork calls; its
  ``init_spect`` computes 1 / (|k + 1 - β|^α + 1) with β = 0); with ``spectrum_offset = 0``
  it is the generator's NumPy variant (``NumpyRandman``), 1 / (k + 1)^α. The paper does
  not say which one its experiments ran; the lab's own library uses the first.
- ``"paper"``: frequencies k = 1 .. n_cutoff with s_k = k^(-α), as printed.

The number of frequencies is ``n_cutoff`` if given, else the generator's rule
min(ceil(precision^(-1/α)), max_cutoff) (1000 for α = 1 and precision 1e-3).

Firing times are continuous in [0, T·step_frac]; a spike at time t falls in bin
floor(t), clipped to the last bin inside the window (ceil(T·step_frac) - 1).

All randomness comes from ``numpy.random.default_rng(seed)``: the global numpy
and torch generators are never touched. The draws follow the generator's order
(one manifold seed per class first, then per class its points), but numbers are
not bit-identical to the public generator's, which uses the legacy global RNG.
"""

from __future__ import annotations

import math

import numpy as np

from spikegrad.data.base import DataSplits, EventDataset, split_indices
from spikegrad.data.configs import RandmanConfig
from spikegrad.data.files import cache_key, cached_arrays


def cutoff_frequency(alpha: float, precision: float = 1e-3, max_cutoff: int = 1000) -> int:
    """The generator's number of frequencies: min(ceil(precision^(-1/α)), max_cutoff)."""
    return int(min(math.ceil(precision ** (-1.0 / alpha)), max_cutoff))


class RandomManifold:
    """One random smooth manifold R^D -> R^M (see the module docstring for the formula)."""

    def __init__(
        self,
        embedding_dim: int,
        manifold_dim: int,
        alpha: float,
        n_cutoff: int,
        seed: int | np.random.Generator,
        spectrum: str = "generator",
        spectrum_offset: float = 1.0,
        use_bias: bool = False,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.embedding_dim, self.manifold_dim = embedding_dim, manifold_dim
        # A, B, C: [M, D, n_cutoff] each, all U(0, 1)
        params = rng.random((embedding_dim, manifold_dim, 3, n_cutoff))
        self.amplitude, self.frequency_jitter, self.phase = (params[:, :, i] for i in range(3))
        if spectrum == "generator":
            self.frequencies = np.arange(n_cutoff, dtype=np.float64)
            self.spectrum = 1.0 / ((self.frequencies + 1.0) ** alpha + spectrum_offset)
            if not use_bias:
                self.amplitude[:, :, 0] = 0.0
        elif spectrum == "paper":
            self.frequencies = np.arange(1, n_cutoff + 1, dtype=np.float64)
            self.spectrum = self.frequencies ** (-alpha)
        else:
            raise ValueError(f"unknown spectrum {spectrum!r} (known: generator, paper)")

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Evaluate f at ``points`` [S, D] in [0, 1]^D; returns [S, M]."""
        points = np.asarray(points, dtype=np.float64)
        out = np.ones((len(points), self.embedding_dim))
        weights = self.amplitude * self.spectrum  # [M, D, K]
        for i in range(self.embedding_dim):
            for j in range(self.manifold_dim):
                arg = np.outer(points[:, j], self.frequencies * self.frequency_jitter[i, j])
                arg += self.phase[i, j]
                out[:, i] *= np.sin(2.0 * np.pi * arg) @ weights[i, j]
        return out


def minmax_standardise(values: np.ndarray) -> np.ndarray:
    """Scale each column to [0, 1] over the rows (a constant column maps to 0)."""
    low, high = values.min(axis=0), values.max(axis=0)
    return (values - low) / np.maximum(high - low, 1e-12)


def randman_spike_times(config: RandmanConfig, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Firing times [N, M] (in steps) and labels [N], shuffled; N = classes × samples."""
    rng = np.random.default_rng(config.seed)
    n_cutoff = config.n_cutoff or cutoff_frequency(config.alpha, config.precision,
                                                   config.max_cutoff)
    manifold_seeds = rng.integers(np.iinfo(np.int64).max, size=config.n_classes)
    times, labels = [], []
    for label in range(config.n_classes):
        points = rng.random((config.samples_per_class, config.manifold_dim))
        manifold = RandomManifold(
            config.n_units, config.manifold_dim, config.alpha, n_cutoff,
            seed=int(manifold_seeds[label]), spectrum=config.spectrum,
            spectrum_offset=config.spectrum_offset, use_bias=config.use_bias,
        )
        times.append(minmax_standardise(manifold(points)) * n_steps * config.step_frac)
        labels.append(np.full(config.samples_per_class, label))
    order = rng.permutation(config.n_classes * config.samples_per_class)
    return np.concatenate(times)[order], np.concatenate(labels)[order]


def spike_bins(times: np.ndarray, n_steps: int, step_frac: float) -> np.ndarray:
    """Time bin of each firing time: floor(t), kept inside the first ceil(T·step_frac) bins."""
    last_bin = max(math.ceil(n_steps * step_frac) - 1, 0)
    return np.clip(np.floor(times).astype(np.int64), 0, last_bin)


RANDMAN_CACHE_VERSION = 1
"""Bumped whenever the generator's numbers change, so that old cache entries are not used."""


def cached_spike_times(config: RandmanConfig, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`randman_spike_times`, kept in the data cache (generating the paper's 10000
    samples over 1000 frequencies takes seconds; every worker and run would repeat it)."""
    params = {**config.model_dump(mode="json"), "n_steps": n_steps,
              "version": RANDMAN_CACHE_VERSION}
    arrays = cached_arrays(
        cache_key("randman", params),
        lambda: dict(zip(("times", "labels"), randman_spike_times(config, n_steps),
                         strict=True)),
        names=("times", "labels"))
    return arrays["times"], arrays["labels"]


def randman_dataset(config: RandmanConfig, n_steps: int) -> EventDataset:
    """The whole spiking Randman data set: one spike per input neuron per sample."""
    times, labels = cached_spike_times(config, n_steps)
    n_samples, n_units = times.shape
    offsets = np.arange(0, n_samples * n_units + 1, n_units)
    bins = spike_bins(times, n_steps, config.step_frac).ravel()
    units = np.tile(np.arange(n_units), n_samples)
    return EventDataset(offsets, bins, units, labels, n_steps, n_units, binary=True)


def build_randman(config: RandmanConfig, n_steps: int, dt_ms: float) -> DataSplits:
    """Randman split into train/valid/test by ``config.split`` (a seeded shuffle)."""
    dataset = randman_dataset(config, n_steps)
    rng = np.random.default_rng([config.seed, 1])
    fractions = (config.split.train, config.split.valid, config.split.test)
    train, valid, test = split_indices(len(dataset), fractions, rng)
    return DataSplits(
        name="randman", train=dataset.subset(train), valid=dataset.subset(valid),
        test=dataset.subset(test), n_inputs=config.n_units, n_classes=config.n_classes,
        n_steps=n_steps, input_kind="spikes",
    )

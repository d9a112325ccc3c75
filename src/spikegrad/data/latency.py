"""Latency coding of images (Zenke & Vogels 2021, section 4): one spike per bright pixel.

A pixel of intensity x in [0, 1] drives an input neuron with a constant current x;
the time that neuron needs to reach threshold θ from rest, with effective time
constant τ_eff, is its firing time::

    t(x) = τ_eff · ln(x / (x - θ))     for x > θ;   no spike for x <= θ

Bright pixels fire first (t(1) = τ_eff · ln(1 / (1 - θ))), pixels near θ fire late.
A spike at time t (ms) falls in bin floor(t / dt); spikes at or after T·dt are dropped.
So every input neuron spikes at most once per sample.
"""

from __future__ import annotations

import numpy as np

from spikegrad.data.base import EventDataset


def latency_times(intensity: np.ndarray, tau_eff_ms: float, threshold: float) -> np.ndarray:
    """Firing times in ms (same shape as ``intensity``); ``inf`` where x <= θ (no spike)."""
    x = np.asarray(intensity, dtype=np.float64)
    if np.any(x < 0) or np.any(x > 1):
        raise ValueError("intensities must lie in [0, 1]")
    times = np.full(x.shape, np.inf)
    fires = x > threshold
    times[fires] = tau_eff_ms * np.log(x[fires] / (x[fires] - threshold))
    return times


def latency_encode(
    intensity: np.ndarray, labels: np.ndarray, tau_eff_ms: float, threshold: float,
    n_steps: int, dt_ms: float,
) -> EventDataset:
    """Latency-code images ``intensity`` [N, ...] in [0, 1] into a spike data set.

    Input unit i is the i-th pixel of the flattened image; every pixel spikes at most
    once, in bin floor(t(x) / dt) if that bin is before ``n_steps``. Vectorised: the
    whole set is encoded with array operations.
    """
    flat = np.asarray(intensity).reshape(len(intensity), -1)
    bins = np.floor(latency_times(flat, tau_eff_ms, threshold) / dt_ms)
    sample, unit = np.nonzero(bins < n_steps)  # row-major: grouped by sample, units ascending
    counts = np.bincount(sample, minlength=len(flat))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return EventDataset(offsets, bins[sample, unit].astype(np.int64), unit, np.asarray(labels),
                        n_steps, flat.shape[1], binary=True)

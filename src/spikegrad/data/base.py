"""Data set containers shared by every data set: sparse spike events and dense currents.

Two kinds of input reach the network:

- *spikes*: per sample a list of events (time bin, input unit), kept sparse in
  compressed form (CSR over samples) and turned into a dense ``[B, T, C]`` tensor
  only when a batch is built, or into a sparse COO tensor of the same values
  (``batch(..., sparse=True)``, what the trainer asks for: the fast engine reads it
  without a dense batch ever existing). Events with the same (bin, unit) add up
  (counts); ``binary=True`` clips them to 1.
- *current*: a dense real-valued ``[N, T, C]`` tensor fed to the first layer as
  input current (e.g. a Mel spectrogram).

Both are ``torch.utils.data.Dataset`` s (``ds[i] -> (x [T, C], label)``) and also
build whole batches at once with ``ds.batch(indices)``, which is what the trainer
uses. Event arrays follow the tonic convention: structured numpy arrays with
fields ``t`` (time bin) and ``x`` (input unit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int64)])
InputKind = Literal["spikes", "current"]


class EventDataset(Dataset):
    """Spike events of many samples on a grid of ``n_steps`` bins × ``n_units`` inputs."""

    input_kind: InputKind = "spikes"

    def __init__(
        self,
        offsets: np.ndarray,
        time_bins: np.ndarray,
        units: np.ndarray,
        labels: np.ndarray,
        n_steps: int,
        n_units: int,
        binary: bool = False,
    ) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or len(offsets) != len(labels) + 1 or offsets[0] != 0:
            raise ValueError("offsets must have one entry per sample plus one, starting at 0")
        if offsets[-1] != len(time_bins) or len(time_bins) != len(units):
            raise ValueError("offsets, time_bins and units disagree in length")
        if len(time_bins) and (time_bins.min() < 0 or time_bins.max() >= n_steps):
            raise ValueError(f"time bins must lie in [0, {n_steps})")
        if len(units) and (units.min() < 0 or units.max() >= n_units):
            raise ValueError(f"units must lie in [0, {n_units})")
        self.offsets = offsets
        # integer arrays keep their (possibly compact) dtype: large sets such as SHD stay small
        self.time_bins = _as_integers(time_bins)
        self.units = _as_integers(units)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.n_steps = int(n_steps)
        self.n_units = int(n_units)
        self.binary = binary
        # every sample's distinct cells, sorted on the first sparse batch (_sorted_events)
        self._sorted: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None

    @classmethod
    def from_events(
        cls, events: Sequence[np.ndarray], labels: Sequence[int], n_steps: int, n_units: int,
        binary: bool = False,
    ) -> EventDataset:
        """Build from one structured array (fields ``t``, ``x``) per sample."""
        lengths = np.array([len(e) for e in events], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        time_bins = np.concatenate([np.asarray(e["t"]) for e in events]) if len(events) else []
        units = np.concatenate([np.asarray(e["x"]) for e in events]) if len(events) else []
        return cls(offsets, np.asarray(time_bins), np.asarray(units), np.asarray(labels),
                   n_steps, n_units, binary)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_inputs(self) -> int:
        return self.n_units

    def events(self, index: int) -> np.ndarray:
        """The events of one sample as a structured array with fields ``t`` and ``x``."""
        lo, hi = self.offsets[index], self.offsets[index + 1]
        out = np.empty(hi - lo, dtype=EVENT_DTYPE)
        out["t"], out["x"] = self.time_bins[lo:hi], self.units[lo:hi]
        return out

    def batch(self, indices: Sequence[int] | Tensor,
              sparse: bool = False) -> tuple[Tensor, Tensor]:
        """Spikes [B, T, C] (float32) and labels [B] for the given samples: a dense tensor,
        or with ``sparse`` a coalesced ``torch.sparse_coo_tensor`` of the same values (no
        dense batch is ever built: the fast engine reads it as it is)."""
        if sparse:
            return self._sparse_batch(indices)
        idx = np.asarray(indices, dtype=np.int64)
        sample_of_event, source = _gather(self.offsets, idx)
        total = len(source)
        flat = (sample_of_event * self.n_steps + self.time_bins[source].astype(np.int64))
        flat = flat * self.n_units + self.units[source].astype(np.int64)
        dense = torch.zeros(len(idx) * self.n_steps * self.n_units, dtype=torch.float32)
        dense.index_add_(0, torch.from_numpy(flat), torch.ones(total, dtype=torch.float32))
        if self.binary:
            dense.clamp_(max=1.0)
        return dense.view(len(idx), self.n_steps, self.n_units), self.labels[torch.as_tensor(idx)]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.batch([index])
        return x[0], y[0]

    def _sorted_events(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Every sample's distinct (bin, unit) cells in the order t C + x, with their
        values (the count of its events; None when binary: all 1), and the samples' offsets
        into them: sorted once, on first use."""
        if self._sorted is None:
            sample = np.repeat(np.arange(len(self.labels), dtype=np.int64),
                               np.diff(self.offsets))
            cell = self.time_bins.astype(np.int64) * self.n_units + self.units.astype(np.int64)
            key = sample * (self.n_steps * self.n_units) + cell
            key.sort()
            first = np.ones(len(key), dtype=bool)
            first[1:] = key[1:] != key[:-1]
            starts = np.flatnonzero(first)
            counts = np.diff(np.append(starts, len(key))).astype(np.float32)
            unique = key[starts]
            per_sample = unique // (self.n_steps * self.n_units)
            offsets = np.searchsorted(per_sample, np.arange(len(self.labels) + 1))
            cells = unique % (self.n_steps * self.n_units)
            if self.n_steps * self.n_units <= np.iinfo(np.int32).max:
                cells = cells.astype(np.int32)  # 4 bytes a cell: large sets stay small
            self._sorted = (cells, None if self.binary else counts, offsets)
        return self._sorted

    def _sparse_batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        cells, values, offsets = self._sorted_events()
        sample_of_cell, source = _gather(offsets, idx)
        chosen = cells[source]
        coordinates = np.stack([sample_of_cell, chosen // self.n_units, chosen % self.n_units])
        chosen_values = (torch.ones(len(source), dtype=torch.float32) if values is None
                         else torch.from_numpy(values[source]))
        x = torch.sparse_coo_tensor(torch.from_numpy(coordinates), chosen_values,
                                    (len(idx), self.n_steps, self.n_units), is_coalesced=True,
                                    check_invariants=False)
        return x, self.labels[torch.as_tensor(idx)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> EventDataset:
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.offsets[idx + 1] - self.offsets[idx]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        source = np.concatenate(
            [np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]
        ) if len(idx) else np.zeros(0, dtype=np.int64)
        return EventDataset(offsets, self.time_bins[source], self.units[source],
                            self.labels.numpy()[idx], self.n_steps, self.n_units, self.binary)


def _gather(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the samples idx (batch order) of a CSR layout with these offsets: each entry's
    position in the batch and its index in the CSR arrays, without a Python loop."""
    starts = offsets[idx]
    lengths = offsets[idx + 1] - starts
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(np.arange(len(idx)), lengths), np.repeat(starts, lengths) + within


def _as_integers(values) -> np.ndarray:
    values = np.asarray(values)
    return values if np.issubdtype(values.dtype, np.integer) else values.astype(np.int64)


class CurrentDataset(Dataset):
    """Dense real-valued input current [N, T, C] (the "current" data paradigm)."""

    input_kind: InputKind = "current"

    def __init__(self, inputs: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> None:
        self.inputs = torch.as_tensor(inputs, dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if self.inputs.ndim != 3 or len(self.inputs) != len(self.labels):
            raise ValueError("inputs must be [N, T, C] with one label per sample")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_inputs(self) -> int:
        return self.inputs.shape[2]

    @property
    def n_steps(self) -> int:
        return self.inputs.shape[1]

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.inputs[idx], self.labels[idx]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]

    def subset(self, indices: Sequence[int] | np.ndarray) -> CurrentDataset:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return CurrentDataset(self.inputs[idx], self.labels[idx])


SampleDataset = EventDataset | CurrentDataset


@dataclass
class DataSplits:
    """Train, validation and test sets of one task, with its shape."""

    name: str
    train: SampleDataset
    valid: SampleDataset
    test: SampleDataset
    n_inputs: int
    n_classes: int
    n_steps: int
    input_kind: InputKind = "spikes"


def iterate_batches(
    dataset: SampleDataset, batch_size: int, shuffle: bool = False,
    generator: torch.Generator | None = None, sparse: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (inputs, labels) batches; a seeded ``generator`` makes shuffling reproducible.
    ``sparse``: spike batches as sparse COO tensors (dense current stays dense)."""
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    sparse = sparse and isinstance(dataset, EventDataset)
    for start in range(0, n, batch_size):
        chosen = order[start : start + batch_size].numpy()
        yield dataset.batch(chosen, sparse=True) if sparse else dataset.batch(chosen)


def split_indices(
    n: int, fractions: tuple[float, float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle 0..n-1 with ``rng`` and cut it into train/valid/test by ``fractions``."""
    order = rng.permutation(n)
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    return order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :]

"""Files in the format of the Spiking Heidelberg Digits (HDF5, gzipped or not): read and
written here for every data set that uses it (:mod:`spikegrad.data.shd` reads SHD, SSC and
the synthesised spoken digits; :mod:`spikegrad.data.spoken_digits` writes the latter).

Per sample::

    spikes/times   variable-length float16 arrays, spike times in seconds
    spikes/units   variable-length uint16 arrays, the channel (0..699) of each spike
    labels         uint16 [N] (SHD: 0-9 English, 10-19 German digits; SSC: 0..34)
    extra/speaker, extra/keys, extra/meta_info/...   (not needed for training)
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikegrad.data.files import DataFileError, gunzipped
from spikegrad.errors import first_line

REQUIRED_KEYS = ("spikes/times", "spikes/units", "labels")


@dataclass
class SpikeFile:
    """The spikes of one SHD-format file, concatenated over samples (CSR by ``offsets``)."""

    times: np.ndarray  # seconds, as stored (float16 in SHD)
    units: np.ndarray  # channel ids, as stored (uint16 in SHD)
    offsets: np.ndarray  # int64 [N + 1]
    labels: np.ndarray  # int64 [N]


def read_spike_file(path: str | Path, n_units: int = 700,
                    n_classes: int | None = None) -> SpikeFile:
    """Read an SHD-format HDF5 file (gzipped or not); bad files raise :class:`DataFileError`."""
    import h5py

    path = Path(path)
    plain = gunzipped(path)
    try:
        handle = h5py.File(plain, "r")
    except (OSError, ValueError, RuntimeError) as error:
        raise DataFileError(path, f"not a readable HDF5 file (corrupt or truncated: "
                                  f"{first_line(error)})") from None
    try:
        with handle:
            missing = [key for key in REQUIRED_KEYS if key not in handle]
            if missing:
                raise DataFileError(path, f"missing HDF5 key(s) {', '.join(missing)}")
            times = _per_sample(path, "spikes/times", handle["spikes/times"])
            units = _per_sample(path, "spikes/units", handle["spikes/units"])
            labels = np.asarray(handle["labels"][()])
    except DataFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError,
            IndexError) as error:
        raise DataFileError(path, f"unreadable spikes or labels ({first_line(error)})"
                            ) from None
    except MemoryError:
        raise DataFileError(path, "spikes or labels too large to read (corrupt sizes?)") from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataFileError(path, "labels must be a 1-d integer array")
    if not (len(times) == len(units) == len(labels)):
        raise DataFileError(path, f"{len(times)} spike-time arrays, {len(units)} unit arrays "
                                  f"and {len(labels)} labels")
    lengths = np.fromiter((len(t) for t in times), np.int64, len(times))
    if not np.array_equal(lengths, np.fromiter((len(u) for u in units), np.int64, len(units))):
        raise DataFileError(path, "spikes/times and spikes/units differ in length for a sample")
    flat_times = np.concatenate(times) if len(times) else np.zeros(0, np.float16)
    flat_units = np.concatenate(units) if len(units) else np.zeros(0, np.uint16)
    if not np.issubdtype(flat_units.dtype, np.integer):
        raise DataFileError(path, f"spikes/units must be integers, got {flat_units.dtype}")
    if not np.issubdtype(flat_times.dtype, np.floating):
        raise DataFileError(path, f"spikes/times must be floats, got {flat_times.dtype}")
    if len(flat_units) and (flat_units.min() < 0 or flat_units.max() >= n_units):
        bad = flat_units.max() if flat_units.max() >= n_units else flat_units.min()
        raise DataFileError(path, f"unit id {bad} beyond the {n_units} channels")
    if len(flat_times) and not (np.isfinite(flat_times.max()) and flat_times.min() >= 0):
        raise DataFileError(path, "spike times must be finite and >= 0")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes)):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataFileError(path, f"label {bad} out of range 0..{(n_classes or 1) - 1}")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SpikeFile(flat_times, flat_units, offsets, labels)


def _per_sample(path: Path, name: str, dataset) -> list[np.ndarray]:
    """The arrays of one sample each that an HDF5 dataset holds: variable-length (the SHD
    layout) or the rows of a 2-d array; each a 1-d array of numbers."""
    if not hasattr(dataset, "shape") or not hasattr(dataset, "dtype"):
        raise DataFileError(path, f"{name} is not a dataset")
    values = dataset[()]
    if not isinstance(values, np.ndarray) or values.ndim not in (1, 2) or (
            values.ndim == 1 and values.dtype != object):
        raise DataFileError(path, f"{name} must hold one array per sample, got "
                                  f"{getattr(values, 'shape', ())} values of type "
                                  f"{getattr(values, 'dtype', type(values).__name__)}")
    rows = list(values)
    for row in rows:
        if not isinstance(row, np.ndarray) or row.ndim != 1 or row.dtype.kind not in "iuf":
            raise DataFileError(path, f"{name} must hold arrays of numbers, got "
                                      f"{type(row).__name__} {getattr(row, 'dtype', '')}".strip())
    return rows



def write_spike_file(
    path: str | Path, times: list[np.ndarray], units: list[np.ndarray], labels: np.ndarray,
    speakers: np.ndarray | None = None, keys: list[str] | None = None,
    meta_info: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write an HDF5 file in the exact SHD layout (float16 seconds, uint16 units and labels).

    ``speakers`` is one id per sample, ``keys`` the class names (one per label id, as in
    SHD's ``extra/keys``) and ``meta_info`` goes to ``extra/meta_info/<name>``.

    The file is written to a temporary name and renamed when complete.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        with h5py.File(temporary, "w") as f:
            times_ds = f.create_dataset("spikes/times", (len(times),),
                                        dtype=h5py.vlen_dtype(np.float16))
            units_ds = f.create_dataset("spikes/units", (len(units),),
                                        dtype=h5py.vlen_dtype(np.uint16))
            for i, (t, u) in enumerate(zip(times, units, strict=True)):
                times_ds[i] = np.asarray(t, dtype=np.float16)
                units_ds[i] = np.asarray(u, dtype=np.uint16)
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
            n = len(labels)
            f.create_dataset("extra/speaker", data=np.asarray(
                speakers if speakers is not None else np.zeros(n), dtype=np.uint16))
            names = keys or [str(i) for i in range(int(max(labels, default=-1)) + 1)]
            f.create_dataset("extra/keys", data=np.array([k.encode() for k in names]))
            for name, values in (meta_info or {}).items():
                f.create_dataset(f"extra/meta_info/{name}", data=values)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path

"""Spiking Heidelberg Digits (SHD), Spiking Speech Commands (SSC) and files in their format.

The official HDF5 files (Cramer et al. 2020; https://zenkelab.org/datasets/), gzipped
(``shd_train.h5.gz``) or not (``shd_train.h5``), hold per sample::

    spikes/times   variable-length float16 arrays, spike times in seconds
    spikes/units   variable-length uint16 arrays, the channel (0..699) of each spike
    labels         uint16 [N] (SHD: 0-9 English, 10-19 German digits; SSC: 0..34)
    extra/speaker, extra/keys, extra/meta_info/...   (not needed for training)

Files: ``shd_{train,test}.h5``, ``ssc_{train,valid,test}.h5``, and the synthesised
``spoken_digits_{train,test}.h5`` (``spikegrad data make-spoken-digits``).

Binning (vectorised over the concatenated spikes of all samples): a spike at time t
falls in bin floor(t / w); w = time.dt_ms / 1000 (the network's own grid) or, with
``max_time_s``, w = max_time_s / time.n_steps. Spikes in bins >= time.n_steps are
dropped; shorter samples simply have no spikes late in the trial. Several spikes of one
channel in one bin add up (counts) unless ``binary``. Events stay sparse (CSR over
samples, see :class:`~spikegrad.data.base.EventDataset`) until a batch is built, and
the binned events are cached, keyed by the files and every binning parameter.

Splits: the official train and test files; validation is ``valid_fraction`` of the
training file, chosen by a shuffle seeded with ``seed`` (or the official validation
file where one exists, as for SSC).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikegrad.data.base import DataSplits, EventDataset
from spikegrad.data.configs import SHDConfig
from spikegrad.data.files import (
    DataFileError,
    MissingDataError,
    cache_dir,
    cache_key,
    cached_arrays,
    download,
    find_file,
    gunzipped,
)

BASE_URL = "https://zenkelab.org/datasets/"
FILE_PREFIX = {"shd": "shd", "ssc": "ssc", "spoken-digits": "spoken_digits"}
OFFICIAL_CLASSES = {"shd": 20, "ssc": 35}
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
                                  f"{str(error).splitlines()[0]})") from None
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
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataFileError(path, f"unreadable spikes or labels ({first})") from None
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


def bin_spikes(spikes: SpikeFile, bin_width_s: float, n_steps: int) -> dict[str, np.ndarray]:
    """Time bins of all spikes (vectorised); spikes at or after ``n_steps`` bins are dropped.

    float16 times (the SHD format) take one of only 65536 values, so their bins come
    from a lookup table computed in float64: exactly floor(t / w), at the cost of one
    gather instead of floating-point work on every spike.
    """
    times = spikes.times
    if times.dtype == np.float16:
        table = bin_table(np.arange(1 << 16, dtype=np.uint16).view(np.float16), bin_width_s,
                          n_steps)
        bins = table[times.view(np.uint16)]
    else:
        bins = bin_table(times, bin_width_s, n_steps)
    kept = np.flatnonzero(bins < n_steps)
    return {
        "offsets": np.searchsorted(kept, spikes.offsets).astype(np.int64),
        "time_bins": bins[kept].astype(np.int16 if n_steps < (1 << 15) else np.int32),
        "units": spikes.units[kept], "labels": spikes.labels,
    }


def bin_table(times: np.ndarray, bin_width_s: float, n_steps: int) -> np.ndarray:
    """floor(t / w) as int32, with ``n_steps`` (dropped) for late, negative or non-finite t."""
    with np.errstate(invalid="ignore", over="ignore"):
        bins = np.floor(times.astype(np.float64) / bin_width_s)
        bins[~np.isfinite(bins) | (bins < 0) | (bins >= n_steps)] = n_steps
    return bins.astype(np.int32)


def load_binned(path: str | Path, bin_width_s: float, n_steps: int, n_units: int,
                n_classes: int | None, binary: bool = False,
                use_cache: bool = True) -> EventDataset:
    """Read and bin one SHD-format file into an :class:`EventDataset` (cached)."""
    params = {"bin_width_s": bin_width_s, "n_steps": n_steps, "n_units": n_units,
              "n_classes": n_classes, "version": 1}
    arrays = cached_arrays(
        cache_key("binned", params, [path]),
        lambda: bin_spikes(read_spike_file(path, n_units, n_classes), bin_width_s, n_steps),
        use_cache, names=("offsets", "time_bins", "units", "labels"),
    )
    return EventDataset(arrays["offsets"], arrays["time_bins"], arrays["units"],
                        arrays["labels"], n_steps, n_units, binary)


def download_shd(name: str, folder: str | Path, progress: bool = True) -> Path:
    """Download the official gzipped files of ``shd`` or ``ssc``, verified by the site's MD5s."""
    prefix = FILE_PREFIX[name]
    try:
        with urllib.request.urlopen(BASE_URL + "md5sums.txt", timeout=60) as response:
            lines = response.read().decode().splitlines()
    except OSError as error:
        raise MissingDataError(f"{BASE_URL}md5sums.txt: download failed ({error})") from None
    md5s = {parts[1]: parts[0] for parts in map(str.split, lines) if len(parts) == 2}
    splits = ("train", "valid", "test") if name == "ssc" else ("train", "test")
    for split in splits:
        filename = f"{prefix}_{split}.h5.gz"
        download(BASE_URL + filename, folder, md5s.get(filename), progress)
    return Path(folder)


def spike_files(name: str, folder: Path) -> dict[str, Path | None]:
    prefix = FILE_PREFIX[name]
    return {split: find_file(folder, [f"{prefix}_{split}.h5"])
            for split in ("train", "valid", "test")}


def data_folder(config) -> Path:
    """The folder of a data set: ``data.path``, or its default place in the cache."""
    return Path(config.path).expanduser() if config.path else cache_dir() / config.name


def build_shd(config: SHDConfig, n_steps: int, dt_ms: float) -> DataSplits:
    """SHD, SSC or synthesised spoken digits as binned spikes on the network's grid."""
    folder = data_folder(config)
    if config.download and config.name in OFFICIAL_CLASSES:
        download_shd(config.name, folder)
    if config.name == "spoken-digits" and config.path is None:
        from spikegrad.data.spoken_digits import ensure_spoken_digits

        ensure_spoken_digits(folder)
    files = spike_files(config.name, folder)
    for split in ("train", "test"):
        if files[split] is None:
            hint = ("run `spikegrad data make-spoken-digits`" if config.name == "spoken-digits"
                    else "set data.path to the folder with the official files, or "
                         "data.download=true")
            raise MissingDataError(f"{folder}: no {FILE_PREFIX[config.name]}_{split}.h5[.gz] "
                                   f"({hint})")
    width = config.max_time_s / n_steps if config.max_time_s else dt_ms / 1000.0
    n_classes = config.n_classes or OFFICIAL_CLASSES.get(config.name)

    def load(path):
        return load_binned(path, width, n_steps, config.n_units, n_classes, config.binary)

    train, test = load(files["train"]), load(files["test"])
    if n_classes is None:  # synthesised files: as many classes as labels found
        n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    if files["valid"] is not None:
        valid = load(files["valid"])
    else:
        order = np.random.default_rng(config.seed).permutation(len(train))
        n_valid = max(1, int(round(config.valid_fraction * len(train))))
        if n_valid >= len(train):
            raise DataFileError(files["train"], f"{len(train)} sample(s): too few to hold out "
                                f"a validation split (data.valid_fraction "
                                f"{config.valid_fraction}) and still train")
        valid, train = train.subset(np.sort(order[:n_valid])), train.subset(
            np.sort(order[n_valid:]))
    return DataSplits(name=config.name, train=train, valid=valid, test=test,
                      n_inputs=config.n_units, n_classes=n_classes, n_steps=n_steps,
                      input_kind="spikes")


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
    import os
    import tempfile

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

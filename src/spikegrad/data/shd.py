"""Spiking Heidelberg Digits (SHD), Spiking Speech Commands (SSC) and the synthesised spoken
digits, as binned spikes.

The official HDF5 files (Cramer et al. 2020; https://zenkelab.org/datasets/), gzipped
(``shd_train.h5.gz``) or not (``shd_train.h5``); their format is read and written by
:mod:`spikegrad.data.spike_file`.

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
from pathlib import Path

import numpy as np

from spikegrad.data.base import DataSplits, EventDataset
from spikegrad.data.configs import SHDConfig
from spikegrad.data.files import (
    DataFileError,
    MissingDataError,
    cache_key,
    cached_arrays,
    data_folder,
    download,
    find_file,
)
from spikegrad.data.spike_file import SpikeFile, read_spike_file
from spikegrad.data.spoken_digits import ensure_spoken_digits

BASE_URL = "https://zenkelab.org/datasets/"
FILE_PREFIX = {"shd": "shd", "ssc": "ssc", "spoken-digits": "spoken_digits"}
OFFICIAL_CLASSES = {"shd": 20, "ssc": 35}


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


def build_shd(config: SHDConfig, n_steps: int, dt_ms: float) -> DataSplits:
    """SHD, SSC or synthesised spoken digits as binned spikes on the network's grid."""
    folder = data_folder(config)
    if config.download and config.name in OFFICIAL_CLASSES:
        download_shd(config.name, folder)
    if config.name == "spoken-digits" and config.path is None:
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

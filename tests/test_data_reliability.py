"""Data files that must fail cleanly, or not at all: damaged cache entries, test images of
another size, non-finite audio, unwritable caches, SHD files of the wrong types."""

from __future__ import annotations

import gzip
import zipfile

import h5py
import numpy as np
import pytest
import soundfile

from spikegrad.config import ConfigError, load_config
from spikegrad.data import build_data
from spikegrad.data.audio import load_audio
from spikegrad.data.files import DataFileError, cache_dir, cached_arrays
from spikegrad.data.images import read_idx
from spikegrad.data.shd import load_binned
from spikegrad.data.spike_file import read_spike_file
from spikegrad.io import PathError
from test_data_images import idx_bytes, small_mnist, write_mnist
from test_data_shd import write_raw_shd


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))


def prepared_entries():
    return sorted((cache_dir() / "prepared").glob("*.npz"))


# --- the cache of prepared data -------------------------------------------------------------


def test_truncated_cache_entry_is_recomputed(tmp_path):
    path = write_raw_shd(tmp_path / "shd_train.h5")
    first = load_binned(path, 0.25, 4, 700, 20)
    (entry,) = prepared_entries()
    data = entry.read_bytes()
    for cut in (len(data) // 2, 30, 0):
        entry.write_bytes(data[:cut])
        again = load_binned(path, 0.25, 4, 700, 20)
        assert again.offsets.tolist() == first.offsets.tolist()
        assert again.units.tolist() == first.units.tolist()
        assert entry.read_bytes() == data  # rewritten whole
        zipfile.ZipFile(entry).testzip()


def test_cache_entry_with_other_arrays_is_recomputed(tmp_path):
    path = write_raw_shd(tmp_path / "shd_train.h5")
    first = load_binned(path, 0.25, 4, 700, 20)
    (entry,) = prepared_entries()
    np.savez(entry, something=np.arange(3))
    again = load_binned(path, 0.25, 4, 700, 20)
    assert again.time_bins.tolist() == first.time_bins.tolist()
    with np.load(entry) as stored:
        assert {"offsets", "time_bins", "units", "labels"} <= set(stored.files)


def test_cached_arrays_recomputes_entries_without_the_names_asked_for():
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(2)}

    cached_arrays("k", compute, names=("a",))
    cached_arrays("k", compute, names=("a",))
    assert len(calls) == 1
    assert cached_arrays("k", compute, names=("a", "b")) == {"a": pytest.approx(np.arange(2))}
    assert len(calls) == 2


def test_an_unwritable_cache_is_an_error_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(blocker / "cache"))
    path = write_raw_shd(tmp_path / "shd_train.h5")
    with pytest.raises(PathError) as error:
        load_binned(path, 0.25, 4, 700, 20)
    assert str(error.value) == f"{blocker}: is a file, where a folder is needed"
    gz = write_raw_shd(tmp_path / "shd_test.h5.gz", gz=True)
    with pytest.raises(PathError, match="a-file: is a file, where a folder is needed"):
        read_spike_file(gz)


# --- MNIST: test images of another size -----------------------------------------------------


@pytest.mark.parametrize("size", [20, 30])
def test_test_images_of_another_size_are_an_error_naming_the_file(tmp_path, size):
    rng = np.random.default_rng(0)
    train_images, train_labels, _, test_labels = small_mnist(rng)
    test_images = rng.integers(0, 256, (10, size, size)).astype(np.uint8)
    write_mnist(tmp_path / "m", train_images, train_labels, test_images, test_labels)
    config = load_config("mnist", [f"data.path={tmp_path / 'm'}", "data.valid_size=5"])
    with pytest.raises(DataFileError) as error:
        build_data(config.data, config.time.n_steps, config.time.dt_ms)
    assert str(error.value) == (f"{tmp_path / 'm' / 't10k-images-idx3-ubyte.gz'}: images of "
                                f"size {size} x {size}, but the training images "
                                f"(train-images-idx3-ubyte.gz) are 28 x 28")


def test_a_validation_split_larger_than_the_training_file_names_it(tmp_path):
    write_mnist(tmp_path / "m", *small_mnist(np.random.default_rng(0)))
    config = load_config("mnist", [f"data.path={tmp_path / 'm'}", "data.valid_size=30"])
    with pytest.raises(ConfigError, match=r"data.valid_size: must be smaller than the 30 "
                                          r"training images of .*train-images"):
        build_data(config.data, config.time.n_steps, config.time.dt_ms)


@pytest.mark.parametrize("header, problem", [
    (bytes([0, 0, 8, 3]) + (-1).to_bytes(4, "big", signed=True) + bytes(8), "negative size"),
    (bytes([0, 0, 8, 3]) + (2**31 - 1).to_bytes(4, "big") * 3, "truncated or oversized"),
    (bytes([0, 0, 8, 3]) + (1).to_bytes(4, "big") + bytes(8), "no pixels"),
])
def test_idx_headers_that_claim_impossible_sizes(tmp_path, header, problem):
    from spikegrad.data.images import read_image_split

    folder = tmp_path / "m"
    write_mnist(folder, *small_mnist(np.random.default_rng(0)), gz=False)
    (folder / "train-images-idx3-ubyte").write_bytes(header)
    with pytest.raises(DataFileError, match=problem):
        read_image_split(folder, "train")


def test_idx_sizes_do_not_overflow(tmp_path):
    path = tmp_path / "big-idx3"
    # 2^16 * 2^16 * 2^32 overflows int64 to 0, which would match an empty payload
    path.write_bytes(bytes([0, 0, 8, 3]) + (1 << 16).to_bytes(4, "big") * 2
                     + (1 << 30).to_bytes(4, "big"))
    with pytest.raises(DataFileError, match="truncated or oversized"):
        read_idx(path, 3)
    path.write_bytes(idx_bytes(np.zeros((2, 3, 4))))
    assert read_idx(path, 3).shape == (2, 3, 4)


# --- audio ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_audio_is_an_error_naming_the_file(tmp_path, bad):
    samples = np.zeros(1600, dtype=np.float32)
    samples[100] = bad
    path = tmp_path / "x.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(DataFileError, match=f"^{path}: audio file holds non-finite samples"):
        load_audio(path, 16000)


# --- SHD files with other types --------------------------------------------------------------


def shd_with(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if isinstance(value, tuple):  # (vlen base dtype, rows)
                dtype, rows = value
                ds = f.create_dataset(name, (len(rows),), h5py.vlen_dtype(dtype))
                for i, row in enumerate(rows):
                    ds[i] = np.asarray(row, dtype)
            else:
                f.create_dataset(name, data=value)
    return path


TIMES = (np.float16, [[0.1, 0.2], [0.3]])
UNITS = (np.uint16, [[1, 2], [3]])
LABELS = np.array([0, 1], np.uint16)


@pytest.mark.parametrize("datasets, problem", [
    ({"spikes/times": np.array([0.1, 0.2]), "spikes/units": UNITS, "labels": LABELS},
     "spikes/times must hold one array per sample"),
    ({"spikes/times": TIMES, "spikes/units": np.array([1.5, 2.5]), "labels": LABELS},
     "spikes/units must hold one array per sample"),
    ({"spikes/times": TIMES, "spikes/units": (np.float32, [[1, 2], [3]]), "labels": LABELS},
     "spikes/units must be integers"),
    ({"spikes/times": (np.int32, [[1, 2], [3]]), "spikes/units": UNITS, "labels": LABELS},
     "spikes/times must be floats"),
    ({"spikes/times": TIMES, "spikes/units": UNITS, "labels": np.array([0.5, 1.5])},
     "labels must be a 1-d integer array"),
    ({"spikes/times": TIMES, "spikes/units": UNITS, "labels": np.zeros((2, 2), np.uint16)},
     "labels must be a 1-d integer array"),
    ({"spikes/times": TIMES, "spikes/units": UNITS, "labels": np.uint16(3)},
     "labels must be a 1-d integer array"),
    ({"spikes/times": TIMES, "spikes/units": UNITS, "labels": np.array([b"a", b"b"])},
     "labels must be a 1-d integer array"),
    ({"spikes/times": (h5py.string_dtype(), [["a"], ["b"]]), "spikes/units": UNITS,
      "labels": LABELS}, "spikes/times must hold arrays of numbers"),
    ({"spikes/times/x": np.zeros(2), "spikes/units": UNITS, "labels": LABELS},
     "spikes/times is not a dataset"),
])
def test_shd_datasets_of_other_types_are_errors_naming_the_file(tmp_path, datasets, problem):
    path = shd_with(tmp_path / "shd_train.h5", **datasets)
    with pytest.raises(DataFileError) as error:
        read_spike_file(path, 700, 20)
    assert str(error.value).startswith(f"{path}: ") and problem in str(error.value)


def test_shd_two_dimensional_spike_arrays_are_read_as_rows(tmp_path):
    path = shd_with(tmp_path / "shd_train.h5", **{
        "spikes/times": np.array([[0.1, 0.2], [0.3, 0.4]], np.float32),
        "spikes/units": np.array([[1, 2], [3, 4]], np.uint16), "labels": LABELS})
    spikes = read_spike_file(path, 700, 20)
    assert spikes.offsets.tolist() == [0, 2, 4] and spikes.units.tolist() == [1, 2, 3, 4]


def test_gzip_that_is_not_hdf5_names_the_file(tmp_path):
    path = tmp_path / "shd_train.h5.gz"
    path.write_bytes(gzip.compress(b"not hdf5 at all"))
    with pytest.raises(DataFileError, match=f"^{path}: not a readable HDF5 file"):
        read_spike_file(path)


def test_download_knows_which_data_sets_have_official_files(tmp_path, monkeypatch):
    from spikegrad import data
    from spikegrad.errors import ArgumentError

    with pytest.raises(ArgumentError, match="randman: no official files to download"):
        data.download("randman", tmp_path)
    called = []
    monkeypatch.setattr("spikegrad.data.shd.download_shd",
                        lambda name, folder, progress: called.append((name, folder)))
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    assert data.download("ssc") == tmp_path / "cache" / "ssc"  # where its config looks
    assert called == [("ssc", tmp_path / "cache" / "ssc")]
    assert set(data.data_set_summaries()) == set(data.DATA_SETS)

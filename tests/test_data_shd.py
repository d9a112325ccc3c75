"""SHD-format HDF5 files: exact reading and binning, splits, caching and bad files."""

from __future__ import annotations

import gzip

import h5py
import numpy as np
import pytest

from spikegrad.config import load_config
from spikegrad.data import build_data
from spikegrad.data.configs import SHDConfig, SSCConfig
from spikegrad.data.files import DataFileError, MissingDataError, cache_dir
from spikegrad.data.shd import bin_spikes, load_binned
from spikegrad.data.spike_file import read_spike_file, write_spike_file


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))


# float16-exact times (seconds) and channels of three samples of different lengths
TIMES = [np.array([0.0, 0.25, 0.5, 0.5, 1.375]), np.array([0.125]), np.array([])]
UNITS = [np.array([3, 0, 699, 699, 5]), np.array([1]), np.array([])]
LABELS = np.array([4, 19, 0])


def write_raw_shd(path, times=TIMES, units=UNITS, labels=LABELS, gz=False, drop=()):
    """An SHD file written directly with h5py, exactly like the official ones."""
    plain = path.with_suffix("") if gz else path
    with h5py.File(plain, "w") as f:
        if "spikes/times" not in drop:
            ds = f.create_dataset("spikes/times", (len(times),), h5py.vlen_dtype(np.float16))
            for i, t in enumerate(times):
                ds[i] = np.asarray(t, np.float16)
        if "spikes/units" not in drop:
            ds = f.create_dataset("spikes/units", (len(units),), h5py.vlen_dtype(np.uint16))
            for i, u in enumerate(units):
                ds[i] = np.asarray(u, np.uint16)
        if "labels" not in drop:
            f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        f.create_dataset("extra/speaker", data=np.arange(len(labels), dtype=np.uint16))
        f.create_dataset("extra/keys", data=np.array([b"zero", b"one"]))
        f.create_dataset("extra/meta_info/gender", data=np.array([b"female"]))
    if gz:
        path.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_read_exact(tmp_path, gz):
    path = write_raw_shd(tmp_path / ("shd_train.h5.gz" if gz else "shd_train.h5"), gz=gz)
    spikes = read_spike_file(path, 700, 20)
    assert spikes.offsets.tolist() == [0, 5, 6, 6]
    assert spikes.times.dtype == np.float16
    np.testing.assert_array_equal(spikes.times, np.concatenate(TIMES))
    np.testing.assert_array_equal(spikes.units, np.concatenate(UNITS))
    assert spikes.labels.tolist() == [4, 19, 0]


def test_binning_to_network_grid_counts_and_binary(tmp_path):
    path = write_raw_shd(tmp_path / "shd_train.h5")
    # bins of 250 ms, 4 of them: 0.0 -> 0, 0.25 -> 1, 0.5 -> 2 (twice), 1.375 -> dropped
    ds = load_binned(path, 0.25, 4, 700, 20)
    assert ds.offsets.tolist() == [0, 4, 5, 5]
    assert ds.time_bins.tolist() == [0, 1, 2, 2, 0]
    assert ds.units.tolist() == [3, 0, 699, 699, 1]
    x, y = ds.batch([0, 1, 2])
    assert x.shape == (3, 4, 700) and y.tolist() == [4, 19, 0]
    assert x[0, 2, 699] == 2 and x[0, 0, 3] == 1 and x[0, 1, 0] == 1 and x.sum() == 5
    assert x[2].sum() == 0  # an empty sample stays empty
    binary = load_binned(path, 0.25, 4, 700, 20, binary=True)
    assert binary.batch([0])[0][0, 2, 699] == 1


def test_bin_edges_are_floor_of_time_over_width():
    from spikegrad.data.spike_file import SpikeFile

    times = np.arange(0, 2048, dtype=np.float64).astype(np.float16) / np.float16(1024)
    times = times.astype(np.float16)
    spikes = SpikeFile(times, np.zeros(len(times), np.uint16), np.array([0, len(times)]),
                       np.array([0]))
    width, n_steps = 0.014, 100
    binned = bin_spikes(spikes, width, n_steps)
    expected = np.floor(times.astype(np.float64) / width)
    keep = expected < n_steps
    np.testing.assert_array_equal(binned["time_bins"], expected[keep])
    # the same with float32 times takes the arithmetic path and agrees
    spikes32 = SpikeFile(times.astype(np.float32), spikes.units, spikes.offsets, spikes.labels)
    np.testing.assert_array_equal(bin_spikes(spikes32, width, n_steps)["time_bins"],
                                  expected[keep])


def test_builder_official_split_validation_and_max_time(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    times = [np.sort(rng.random(rng.integers(0, 50)) * 1.4) for _ in range(n)]
    units = [rng.integers(0, 700, len(t)) for t in times]
    labels = rng.integers(0, 20, n)
    write_spike_file(tmp_path / "shd_train.h5", times, units, labels)
    write_raw_shd(tmp_path / "shd_test.h5.gz", gz=True)
    config = SHDConfig(path=str(tmp_path), max_time_s=1.4, valid_fraction=0.25)
    splits = build_data(config, n_steps=100, dt_ms=14.0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (30, 10, 3)
    assert splits.n_inputs == 700 and splits.n_classes == 20
    assert sorted(splits.train.labels.tolist() + splits.valid.labels.tolist()) == sorted(
        labels.tolist())
    # max_time_s: 100 bins of 14 ms; the test file's 1.375 s spike lands in bin 98
    x, _ = splits.test.batch([0])
    assert x[0, 98, 5] == 1
    # the binned events were cached, keyed by parameters
    cached = list((cache_dir() / "prepared").glob("binned-*.npz"))
    assert len(cached) == 2
    build_data(config, n_steps=100, dt_ms=14.0)
    assert len(list((cache_dir() / "prepared").glob("binned-*.npz"))) == 2
    build_data(config.model_copy(update={"max_time_s": 1.0}), n_steps=100, dt_ms=14.0)
    assert len(list((cache_dir() / "prepared").glob("binned-*.npz"))) == 4


def test_ssc_uses_official_validation_file(tmp_path):
    for split in ("train", "valid", "test"):
        write_raw_shd(tmp_path / f"ssc_{split}.h5", labels=np.array([34, 0, 1]))
    splits = build_data(SSCConfig(path=str(tmp_path)), n_steps=10, dt_ms=100.0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3, 3, 3)
    assert splits.n_classes == 35


def test_builtin_shd_config_reads_a_folder(tmp_path):
    write_raw_shd(tmp_path / "shd_train.h5")
    write_raw_shd(tmp_path / "shd_test.h5")
    config = load_config("shd", [f"data.path={tmp_path}"])
    splits = build_data(config.data, config.time.n_steps, config.time.dt_ms)
    assert splits.n_steps == 100 and len(splits.test) == 3


def one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_files_fail_with_one_line(tmp_path):
    good = write_raw_shd(tmp_path / "good.h5")
    (tmp_path / "truncated.h5").write_bytes(good.read_bytes()[:1000])
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    (tmp_path / "broken.h5.gz").write_bytes(gzip.compress(good.read_bytes())[:500])
    for name, problem in (("truncated.h5", "HDF5"), ("text.h5", "HDF5"),
                          ("broken.h5.gz", "gzip")):
        with pytest.raises(DataFileError) as excinfo:
            read_spike_file(tmp_path / name)
        one_line(excinfo, name, problem)
    write_raw_shd(tmp_path / "nolabels.h5", drop=("labels",))
    with pytest.raises(DataFileError) as excinfo:
        read_spike_file(tmp_path / "nolabels.h5")
    one_line(excinfo, "nolabels.h5", "missing HDF5 key", "labels")
    write_raw_shd(tmp_path / "units.h5", units=[np.array([0, 1, 2, 3, 700]), [1], []])
    with pytest.raises(DataFileError) as excinfo:
        read_spike_file(tmp_path / "units.h5", n_units=700)
    one_line(excinfo, "units.h5", "unit id 700 beyond the 700 channels")
    write_raw_shd(tmp_path / "labels.h5", labels=np.array([4, 20, 0]))
    with pytest.raises(DataFileError) as excinfo:
        read_spike_file(tmp_path / "labels.h5", n_classes=20)
    one_line(excinfo, "labels.h5", "label 20 out of range 0..19")
    write_raw_shd(tmp_path / "lengths.h5", units=[np.array([0, 1]), [1], []])
    with pytest.raises(DataFileError) as excinfo:
        read_spike_file(tmp_path / "lengths.h5")
    one_line(excinfo, "lengths.h5", "differ in length")
    write_raw_shd(tmp_path / "count.h5", labels=np.array([1, 2]))
    with pytest.raises(DataFileError) as excinfo:
        read_spike_file(tmp_path / "count.h5")
    one_line(excinfo, "count.h5", "2 labels")


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(MissingDataError, match="data.path"):
        build_data(SHDConfig(path=str(tmp_path)), n_steps=10, dt_ms=1.0)


def test_full_size_binning_is_fast(tmp_path):
    """A file the size of SHD's training set (8156 samples) loads and bins in seconds."""
    import time

    rng = np.random.default_rng(0)
    n, per_sample = 8156, 2000
    lengths = rng.integers(per_sample // 2, per_sample * 3 // 2, n)
    path = tmp_path / "shd_train.h5"
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), h5py.vlen_dtype(np.float16))
        units = f.create_dataset("spikes/units", (n,), h5py.vlen_dtype(np.uint16))
        all_times = (rng.random(lengths.sum()) * 1.4).astype(np.float16)
        all_units = rng.integers(0, 700, lengths.sum()).astype(np.uint16)
        pieces = np.cumsum(lengths)[:-1]
        times[:] = np.array(np.split(all_times, pieces) + [None], object)[:-1]
        units[:] = np.array(np.split(all_units, pieces) + [None], object)[:-1]
        f.create_dataset("labels", data=rng.integers(0, 20, n).astype(np.uint16))
    start = time.perf_counter()
    ds = load_binned(path, 0.014, 100, 700, 20, use_cache=False)
    elapsed = time.perf_counter() - start
    assert len(ds) == n and len(ds.units) == lengths.sum() - (all_times >= 1.4).sum()
    assert elapsed < 20, f"binning {lengths.sum()} spikes took {elapsed:.1f} s"

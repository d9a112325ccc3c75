"""Latency encoder, IDX reader (MNIST format) and the offline 8x8 digits task."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest

from spikegrad.config import load_config
from spikegrad.data import build_data
from spikegrad.data.configs import MNISTConfig
from spikegrad.data.files import DataFileError, MissingDataError
from spikegrad.data.images import build_mnist, read_idx, read_image_split
from spikegrad.data.latency import latency_encode, latency_times


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))


def idx_bytes(array: np.ndarray, type_code: int = 0x08, magic: bytes | None = None) -> bytes:
    """The IDX encoding of ``array`` (big-endian header, row-major values)."""
    header = magic or bytes([0, 0, type_code, array.ndim])
    dims = struct.pack(f">{array.ndim}i", *array.shape)
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    return header + dims + array.astype(dtype).tobytes()


def write_mnist(folder, train_images, train_labels, test_images, test_labels, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", train_images),
                        ("train-labels-idx1-ubyte", train_labels),
                        ("t10k-images-idx3-ubyte", test_images),
                        ("t10k-labels-idx1-ubyte", test_labels)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def small_mnist(rng, n_train=30, n_test=10):
    return (rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
            rng.integers(0, 10, n_train).astype(np.uint8),
            rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
            rng.integers(0, 10, n_test).astype(np.uint8))


# --- latency encoder ---------------------------------------------------------------------


def test_latency_times_follow_the_formula():
    x = np.array([0.0, 0.2, 0.25, 0.5, 1.0])
    t = latency_times(x, tau_eff_ms=20.0, threshold=0.2)
    assert np.isinf(t[:2]).all()  # x <= theta: no spike
    assert t[2] == pytest.approx(20 * math.log(0.25 / 0.05))
    assert t[4] == pytest.approx(20 * math.log(1 / 0.8))
    assert t[4] < t[3] < t[2]  # brighter fires earlier


def test_latency_encode_bins_and_drops_late_spikes():
    images = np.array([[1.0, 0.25, 0.1, 0.5], [0.0, 0.0, 0.0, 1.0]])
    ds = latency_encode(images, [3, 7], tau_eff_ms=20.0, threshold=0.2, n_steps=10, dt_ms=2.0)
    # t(1) = 4.46 ms -> bin 2; t(0.5) = 10.2 ms -> bin 5; t(0.25) = 32.2 ms -> dropped
    assert ds.n_units == 4 and ds.n_steps == 10 and ds.binary
    assert ds.events(0).tolist() == [(2, 0), (5, 3)]
    assert ds.events(1).tolist() == [(2, 3)]
    x, y = ds.batch([0, 1])
    assert x.shape == (2, 10, 4) and x.sum() == 3 and y.tolist() == [3, 7]
    assert x.amax() == 1  # at most one spike per pixel


def test_latency_encode_rejects_out_of_range_intensities():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        latency_encode(np.array([[1.5]]), [0], 20.0, 0.2, 10, 1.0)


# --- IDX files ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_exact(tmp_path, gz):
    rng = np.random.default_rng(0)
    train_images, train_labels, test_images, test_labels = small_mnist(rng)
    write_mnist(tmp_path / "m", train_images, train_labels, test_images, test_labels, gz=gz)
    images, labels = read_image_split(tmp_path / "m", "train")
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28)
    np.testing.assert_array_equal(images, train_images)
    np.testing.assert_array_equal(labels, train_labels)


def test_idx_other_types(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    (tmp_path / "f.idx").write_bytes(idx_bytes(values, 0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), values)
    shorts = np.array([-3, 1000], dtype=np.int16)
    (tmp_path / "s.idx").write_bytes(idx_bytes(shorts, 0x0B))
    np.testing.assert_array_equal(read_idx(tmp_path / "s.idx"), shorts)


def test_mnist_builder_split_and_encoding(tmp_path):
    rng = np.random.default_rng(1)
    arrays = small_mnist(rng)
    write_mnist(tmp_path / "m", *arrays)
    config = MNISTConfig(path=str(tmp_path / "m"), valid_size=5, train_size=20)
    splits = build_mnist(config, n_steps=100, dt_ms=1.0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (20, 5, 10)
    assert splits.n_inputs == 784 and splits.n_classes == 10
    np.testing.assert_array_equal(splits.test.labels.numpy(), arrays[3])
    # the test set is encoded pixel by pixel with the protocol's formula
    expected = latency_encode(arrays[2] / 255.0, arrays[3], 20.0, 0.2, 100, 1.0)
    np.testing.assert_array_equal(splits.test.batch(range(10))[0],
                                  expected.batch(range(10))[0])
    # the encoded splits are cached, keyed by the parameters
    from spikegrad.data.files import cache_dir

    assert len(list((cache_dir() / "prepared").glob("mnist-*.npz"))) == 1
    again = build_mnist(config, n_steps=100, dt_ms=1.0)
    np.testing.assert_array_equal(again.train.batch(range(20))[0], splits.train.batch(range(20))[0])
    build_mnist(config.model_copy(update={"valid_size": 6}), n_steps=100, dt_ms=1.0)
    assert len(list((cache_dir() / "prepared").glob("mnist-*.npz"))) == 2


def one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_idx_files_fail_with_one_line(tmp_path):
    rng = np.random.default_rng(2)
    images, labels, _, _ = small_mnist(rng, 4, 1)
    good = idx_bytes(images)
    cases = {
        "magic.idx": idx_bytes(images, magic=b"\x12\x34\x08\x03"),
        "truncated.idx": good[:-10],
        "header.idx": good[:6],
        "empty.idx": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataFileError) as excinfo:
            read_idx(tmp_path / name, expected_ndim=3)
        one_line_error(excinfo, name)
    (tmp_path / "labels-as-images.idx").write_bytes(idx_bytes(labels))
    with pytest.raises(DataFileError) as excinfo:
        read_idx(tmp_path / "labels-as-images.idx", expected_ndim=3)
    one_line_error(excinfo, "labels-as-images.idx", "magic number")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(DataFileError) as excinfo:
        read_idx(tmp_path / "broken.gz")
    one_line_error(excinfo, "broken.gz", "gzip")


def test_mismatched_mnist_files_fail_clearly(tmp_path):
    rng = np.random.default_rng(3)
    images, labels, test_images, test_labels = small_mnist(rng)
    write_mnist(tmp_path / "count", images, labels[:-1], test_images, test_labels)
    with pytest.raises(DataFileError) as excinfo:
        read_image_split(tmp_path / "count", "train")
    one_line_error(excinfo, "train-labels-idx1-ubyte.gz", "29 labels for 30 images")
    bad_labels = labels.copy()
    bad_labels[3] = 12
    write_mnist(tmp_path / "range", images, bad_labels, test_images, test_labels)
    with pytest.raises(DataFileError) as excinfo:
        read_image_split(tmp_path / "range", "train")
    one_line_error(excinfo, "train-labels-idx1-ubyte.gz", "label 12 out of range")
    with pytest.raises(MissingDataError, match="data.download"):
        read_image_split(tmp_path / "nowhere", "train")


# --- offline digits ----------------------------------------------------------------------


def test_digits_builder_is_latency_coded_and_split():
    config = load_config("digits")
    splits = build_data(config.data, config.time.n_steps, config.time.dt_ms)
    assert splits.n_inputs == 64 and splits.n_classes == 10 and splits.input_kind == "spikes"
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 1797
    assert len(splits.test) == 360
    x, _ = splits.train.batch(range(50))
    assert x.amax() == 1 and x.sum(dim=1).amax() == 1  # at most one spike per pixel
    assert x[:, 40:].sum() == 0  # the dimmest firing pixel (x = 4/16) fires at 27.7 ms


def test_download_verifies_checksums(tmp_path):
    import hashlib

    from spikegrad.data.files import download

    source = tmp_path / "src" / "train-labels-idx1-ubyte.gz"
    source.parent.mkdir()
    source.write_bytes(gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8))))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    target = download(source.as_uri(), tmp_path / "dl", md5, progress=False)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(DataFileError, match="checksum mismatch"):
        download(source.as_uri(), tmp_path / "bad", "0" * 32, progress=False)
    assert not any((tmp_path / "bad").iterdir())  # nothing half-downloaded is left
    with pytest.raises(MissingDataError, match="download failed"):
        download((tmp_path / "missing.gz").as_uri(), tmp_path / "dl2", progress=False)

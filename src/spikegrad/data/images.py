"""Image data sets, latency-coded (protocol section 4): MNIST, Fashion-MNIST and 8x8 digits.

MNIST and Fashion-MNIST are read from the standard IDX files, gzipped or not::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

IDX format (big-endian): two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed
byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of
dimensions d, then d int32 sizes, then the values in row-major order. Images are
``uint8`` [N, 28, 28] (magic 0x00000803), labels ``uint8`` [N] (magic 0x00000801).

``download_images(name, folder)`` fetches the four files from the official mirrors and
checks their published MD5 checksums. The offline image task is scikit-learn's bundled
8x8 digits (1797 images, intensities 0..16), no download needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from spikegrad.data.base import DataSplits, EventDataset, split_indices
from spikegrad.data.configs import DigitsConfig, MNISTConfig
from spikegrad.data.files import (
    DataFileError,
    MissingDataError,
    cache_key,
    cached_arrays,
    data_folder,
    download,
    find_file,
    read_maybe_gzip,
)
from spikegrad.data.latency import latency_encode
from spikegrad.errors import ConfigError

IDX_TYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
# Official sources of the gzipped IDX files and their published MD5 checksums.
IMAGE_SOURCES: dict[str, dict] = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "http://yann.lecun.com/exdb/mnist/"],
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) exactly; bad files raise :class:`DataFileError`."""
    data = read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataFileError(path, f"not an IDX file (bad magic number {data[:4].hex() or 'none'})")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataFileError(path, f"wrong magic number 0x{data[:4].hex()}: {ndim} dimensions, "
                                  f"expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(path, "truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, ">i4", count=ndim, offset=4))
    if min(shape, default=0) < 0:
        raise DataFileError(path, f"negative size in the IDX header (shape {shape})")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise DataFileError(path, f"truncated or oversized: {len(data) - header} data bytes, "
                                  f"header says {expected} for shape {shape}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def image_file(folder: str | Path, split: str, kind: str) -> Path:
    """The IDX file of ``kind`` (``images``, ``labels``) of a ``train`` or ``test`` split."""
    path = find_file(folder, [IDX_FILES[f"{split}_{kind}"]])
    if path is None:
        raise MissingDataError(
            f"{folder}: no {IDX_FILES[f'{split}_{kind}']}[.gz] (set data.path to the folder "
            f"with the IDX files, or data.download=true)")
    return path


def read_image_split(folder: str | Path, split: str, n_classes: int = 10):
    """Images [N, H, W] (uint8) and labels [N] of the ``train`` or ``t10k`` IDX pair."""
    paths = [(image_file(folder, split, kind), ndim) for kind, ndim in (("images", 3),
                                                                          ("labels", 1))]
    images, labels = (read_idx(p, ndim) for p, ndim in paths)
    if images.dtype != np.uint8:
        raise DataFileError(paths[0][0], f"images must be unsigned bytes, got {images.dtype}")
    if labels.dtype != np.uint8:
        raise DataFileError(paths[1][0], f"labels must be unsigned bytes, got {labels.dtype}")
    if min(images.shape[1:]) == 0:
        raise DataFileError(paths[0][0], f"images of size {_size(images)} have no pixels")
    if len(images) != len(labels):
        raise DataFileError(paths[1][0], f"{len(labels)} labels for {len(images)} images")
    if len(labels) and labels.max() >= n_classes:
        raise DataFileError(paths[1][0], f"label {labels.max()} out of range 0..{n_classes - 1}")
    return images, labels


def download_images(name: str, folder: str | Path, progress: bool = True) -> Path:
    """Download the four IDX files of ``mnist`` or ``fashion-mnist`` and verify their MD5."""
    source = IMAGE_SOURCES[name]
    for filename, md5 in source["md5"].items():
        errors = []
        for mirror in source["mirrors"]:
            try:
                download(mirror + filename, folder, md5, progress)
                break
            except (MissingDataError, DataFileError) as error:
                errors.append(str(error))
        else:
            raise MissingDataError(errors[-1])
    return Path(folder)


def build_mnist(config: MNISTConfig, n_steps: int, dt_ms: float) -> DataSplits:
    """Latency-coded MNIST or Fashion-MNIST: standard train/test, seeded validation split.

    The encoded splits are cached, keyed by the IDX files and every parameter.
    """
    folder = data_folder(config)
    if config.download:
        download_images(config.name, folder)
    sources = [find_file(folder, [name]) for name in IDX_FILES.values()]
    if any(source is None for source in sources):
        read_image_split(folder, "train")
        read_image_split(folder, "test")  # raises the error that names the missing file
    params = {"config": config.model_dump(exclude={"path", "download"}), "n_steps": n_steps,
              "dt_ms": dt_ms, "version": 1}
    names = ["n_inputs"] + [f"{split}_{part}" for split in ("train", "valid", "test")
                            for part in ("offsets", "time_bins", "units", "labels")]
    arrays = cached_arrays(cache_key(config.name, params, sources),
                           lambda: encode_mnist(config, folder, n_steps, dt_ms), names=names)
    n_inputs = int(arrays["n_inputs"])

    def split(name):
        return EventDataset(arrays[f"{name}_offsets"], arrays[f"{name}_time_bins"],
                            arrays[f"{name}_units"], arrays[f"{name}_labels"], n_steps, n_inputs,
                            binary=True)

    return DataSplits(name=config.name, train=split("train"), valid=split("valid"),
                      test=split("test"), n_inputs=n_inputs, n_classes=10, n_steps=n_steps,
                      input_kind="spikes")


def encode_mnist(config: MNISTConfig, folder: Path, n_steps: int,
                 dt_ms: float) -> dict[str, np.ndarray]:
    """Read and latency-code the train/valid/test splits into plain arrays (for the cache)."""
    train_images, train_labels = read_image_split(folder, "train")
    test_images, test_labels = read_image_split(folder, "test")
    if test_images.shape[1:] != train_images.shape[1:]:
        raise DataFileError(image_file(folder, "test", "images"),
                            f"images of size {_size(test_images)}, but the training images "
                            f"({image_file(folder, 'train', 'images').name}) are "
                            f"{_size(train_images)}")
    if config.valid_size >= len(train_images):
        raise ConfigError(f"data.valid_size: must be smaller than the {len(train_images)} "
                          f"training images of {image_file(folder, 'train', 'images')}, got "
                          f"{config.valid_size}")
    order = np.random.default_rng(config.seed).permutation(len(train_images))
    valid, train = order[: config.valid_size], order[config.valid_size :]
    if config.train_size is not None:
        train = train[: config.train_size]
    enc = config.encoding
    arrays = {"n_inputs": np.array(int(np.prod(train_images.shape[1:])))}
    for name, images, labels in (("train", train_images[train], train_labels[train]),
                                 ("valid", train_images[valid], train_labels[valid]),
                                 ("test", test_images, test_labels)):
        ds = latency_encode(images / 255.0, labels, enc.tau_eff_ms, enc.threshold, n_steps,
                            dt_ms)
        arrays.update({f"{name}_offsets": ds.offsets,
                       f"{name}_time_bins": ds.time_bins.astype(np.int16 if n_steps < 32768
                                                                else np.int32),
                       f"{name}_units": ds.units.astype(np.uint16 if ds.n_units <= 1 << 16
                                                        else np.uint32),
                       f"{name}_labels": ds.labels.numpy()})
    return arrays


def _size(images: np.ndarray) -> str:
    return " x ".join(str(n) for n in images.shape[1:])


def build_digits(config: DigitsConfig, n_steps: int, dt_ms: float) -> DataSplits:
    """scikit-learn's 8x8 digits (x = pixel / 16), latency-coded, seeded train/valid/test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    enc = config.encoding
    dataset = latency_encode(digits.data / 16.0, digits.target, enc.tau_eff_ms, enc.threshold,
                             n_steps, dt_ms)
    fractions = (config.split.train, config.split.valid, config.split.test)
    train, valid, test = split_indices(len(dataset), fractions, np.random.default_rng(config.seed))
    return DataSplits(
        name="digits", train=dataset.subset(train), valid=dataset.subset(valid),
        test=dataset.subset(test), n_inputs=64, n_classes=10, n_steps=n_steps,
        input_kind="spikes",
    )

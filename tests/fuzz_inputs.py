"""Random mutations of valid input files, fed to the library (run by ``test_fuzz.py`` in a
process of its own, so that a crash or a hang fails that test instead of ending the run).

    python fuzz_inputs.py FOLDER SEED COUNT

Makes COUNT mutations (truncations, bit flips, values and datasets of other types) of a
valid YAML config, study spec, SHD file and MNIST IDX folder, in turns, under FOLDER; reads
each as a user's command would (config and spec validation; SHD binning; the whole MNIST
pipeline) and prints one JSON line per case: its kind and description, and either ``ok``, or
the error's type and message, with the traceback of an error of any other type than the
library's own (which name the problem in one line).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import yaml

CASE_TIMEOUT_S = 30
OWN_ERRORS = ("ConfigError", "DataFileError", "MissingDataError", "PathError")
KINDS = ("config", "spec", "shd", "idx")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no answer within {CASE_TIMEOUT_S} s")


# --- mutations ------------------------------------------------------------------------------


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.randrange(len(data))
    return data[:cut], f"truncated to {cut} of {len(data)} bytes"


def flip_bits(data: bytes, rng: random.Random, start: int = 0) -> tuple[bytes, str]:
    data = bytearray(data)
    flips = rng.randint(1, 12)
    where = [rng.randrange(start, len(data)) for _ in range(flips)]
    for position in where:
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data), f"{flips} bit flips at {sorted(where)}"


ODD_VALUES = [True, False, None, "text", "", [1, 2], {"a": 1}, -1, 0, 2**70, 1e308, -1e-300,
              float("nan"), float("inf"), 3.5, [], {}, "1e400", "nan", [[]]]


def leaves(tree, prefix=()):
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        if isinstance(value, dict | list) and value:
            yield from leaves(value, (*prefix, key))
        yield (*prefix, key)


def other_types(text: str, rng: random.Random) -> tuple[bytes, str]:
    tree = yaml.safe_load(text)
    changes = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(leaves(tree)))
        node = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value = rng.choice(ODD_VALUES)
        changes.append(f"{'.'.join(map(str, path))}={value!r}")
    return yaml.safe_dump(tree).encode(), "values of other types: " + ", ".join(changes)


def mutate_text(text: str, rng: random.Random) -> tuple[bytes, str]:
    how = rng.choice(["truncate", "flip", "types", "types", "duplicate"])
    data = text.encode()
    if how == "truncate":
        return truncate(data, rng)
    if how == "flip":
        return flip_bits(data, rng)
    if how == "duplicate":
        lines = text.splitlines(keepends=True)
        top = [line for line in lines if line[:1].isalpha()]
        line = rng.choice(top)
        return (text + line).encode(), f"top-level line repeated: {line.strip()!r}"
    return other_types(text, rng)


def write_shd(path: Path, rng: random.Random, odd: bool) -> str:
    """A small SHD file; with ``odd`` one or two of its datasets of another type or shape."""
    n = rng.randint(2, 6)
    times = [np.sort(rng.uniform(0, 0.05) * np.arange(rng.randint(0, 6))) for _ in range(n)]
    units = [np.array([rng.randrange(700) for _ in t]) for t in times]
    labels = np.array([rng.randrange(20) for _ in range(n)])
    datasets = {
        "spikes/times": ("vlen", np.float16, times), "spikes/units": ("vlen", np.uint16, units),
        "labels": ("plain", np.uint16, labels),
    }
    notes = []
    if odd:
        for name in rng.sample(sorted(datasets), rng.randint(1, 2)):
            choice = rng.choice(["float", "int", "string", "plain", "2d", "scalar", "missing",
                                 "negative", "huge"])
            notes.append(f"{name} {choice}")
            layout, dtype, values = datasets[name]
            if choice == "missing":
                del datasets[name]
            elif choice == "float":
                datasets[name] = (layout, np.float64, values)
            elif choice == "int":
                datasets[name] = (layout, np.int8, values)
            elif choice == "negative":
                datasets[name] = (layout, np.int32, [-np.asarray(v) - 1 for v in values])
            elif choice == "huge":
                datasets[name] = (layout, np.float64, [np.asarray(v) * 1e300 for v in values])
            elif choice == "string":
                datasets[name] = ("plain", h5py.string_dtype(), np.array(["x"] * n, object))
            elif choice == "plain":
                datasets[name] = ("plain", np.float32, np.arange(n, dtype=np.float32))
            elif choice == "2d":
                datasets[name] = ("plain", np.float32, np.ones((n, 3), np.float32))
            else:
                datasets[name] = ("plain", np.uint16, np.uint16(1))
    with h5py.File(path, "w") as f:
        for name, (layout, dtype, values) in datasets.items():
            if layout == "vlen":
                ds = f.create_dataset(name, (len(values),), h5py.vlen_dtype(dtype))
                for i, row in enumerate(values):
                    ds[i] = np.asarray(row).astype(dtype)
            else:
                f.create_dataset(name, data=np.asarray(values).astype(dtype)
                                 if dtype is not h5py.string_dtype() else values, dtype=dtype)
    return "datasets of other types: " + ", ".join(notes) if notes else "valid"


def idx(array: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    return (bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">i4").tobytes()
            + array.astype(dtype).tobytes())


IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def write_idx_folder(folder: Path, rng: random.Random) -> str:
    """Valid small MNIST files, then one of them mutated."""
    nrng = np.random.default_rng(rng.randrange(2**32))
    arrays = {"train_images": nrng.integers(0, 256, (20, 28, 28)),
              "train_labels": nrng.integers(0, 10, 20),
              "test_images": nrng.integers(0, 256, (6, 28, 28)),
              "test_labels": nrng.integers(0, 10, 6)}
    folder.mkdir(parents=True)
    target = rng.choice(sorted(arrays))
    how = rng.choice(["truncate", "flip-header", "flip", "type", "shape", "gzip-truncate"])
    for name, array in arrays.items():
        data = idx(array)
        note = ""
        if name == target:
            if how == "truncate":
                data, note = truncate(data, rng)
            elif how == "flip-header":
                data, note = flip_bits(data[:16], rng)
                data += idx(array)[16:]
            elif how == "flip":
                data, note = flip_bits(data, rng)
            elif how == "type":
                code = rng.choice([0x09, 0x0B, 0x0C, 0x0D, 0x0E])
                data, note = idx(array, code), f"type 0x{code:02x}"
            elif how == "shape":
                shape = tuple(rng.randint(0, 40) for _ in range(rng.randint(1, 4)))
                data = idx(nrng.integers(0, 256, shape))
                note = f"shape {shape}"
        path = folder / IDX_NAMES[name]
        if how == "gzip-truncate" and name == target:
            packed = gzip.compress(data)
            data, note = truncate(packed, rng)
            path = path.with_name(path.name + ".gz")
        path.write_bytes(data)
        if note:
            description = f"{path.name}: {note}"
    return description


# --- reading, as the commands do -------------------------------------------------------------


def read_config(path: Path) -> None:
    from spikegrad.config import load_config
    from spikegrad.training import memory_need

    memory_need(load_config(path))


def read_spec(path: Path) -> None:
    from spikegrad.studies.spec import load_study_spec

    load_study_spec(path).trials()


def read_shd(path: Path) -> None:
    from spikegrad.data.shd import load_binned

    dataset = load_binned(path, 0.001, 50, 700, 20)
    if len(dataset):
        dataset.batch(list(range(len(dataset))))


def read_idx_folder(folder: Path) -> None:
    from spikegrad.config import load_config
    from spikegrad.data import build_data
    from spikegrad.training import check_splits

    config = load_config("mnist", [f"data.path={folder}", "data.valid_size=4",
                                   "time.n_steps=30"])
    data = build_data(config.data, config.time.n_steps, config.time.dt_ms)
    check_splits(data)
    data.train.batch(list(range(len(data.train))))


def make_case(kind: str, index: int, folder: Path, rng: random.Random
              ) -> tuple[Path, str, Callable[[Path], None]]:
    if kind in ("config", "spec"):
        source = rng.choice(["randman", "shd", "mnist"]) if kind == "config" else "randman-smoke"
        text = (resources.files("spikegrad") / ("configs" if kind == "config" else "studies")
                / f"{source}.yaml").read_text()
        data, note = mutate_text(text, rng)
        path = folder / f"{index:03d}-{source}.yaml"
        path.write_bytes(data)
        return path, f"{source}.yaml {note}", read_config if kind == "config" else read_spec
    if kind == "shd":
        path = folder / f"{index:03d}-shd_train.h5"
        how = rng.choice(["truncate", "flip", "flip", "types", "types", "gzip"])
        note = write_shd(path, rng, odd=how == "types")
        if how in ("truncate", "flip"):
            data, note = (truncate if how == "truncate" else flip_bits)(path.read_bytes(), rng)
            path.write_bytes(data)
        elif how == "gzip":
            data, note = rng.choice([truncate, flip_bits])(gzip.compress(path.read_bytes()), rng)
            path.unlink()
            path = path.with_name(path.name + ".gz")
            path.write_bytes(data)
            note = "gzipped, " + note
        return path, f"shd {note}", read_shd
    path = folder / f"{index:03d}-mnist"
    return path, f"idx {write_idx_folder(path, rng)}", read_idx_folder


def main(folder: str, seed: int, count: int) -> None:
    folder_path = Path(folder)
    os.environ["SPIKEGRAD_CACHE"] = str(folder_path / "cache")
    rng = random.Random(seed)
    signal.signal(signal.SIGALRM, _alarm)
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        path, description, read = make_case(kind, index, folder_path, rng)
        report = {"index": index, "kind": kind, "path": str(path), "case": description}
        signal.alarm(CASE_TIMEOUT_S)
        try:
            read(path)
            report["outcome"] = "ok"
        except Exception as error:  # noqa: BLE001 - every outcome is reported
            report.update(outcome="error", type=type(error).__name__, message=str(error))
            if type(error).__name__ not in OWN_ERRORS:
                report["traceback"] = traceback.format_exc()
        finally:
            signal.alarm(0)
        print(json.dumps(report), flush=True)
        if path.is_dir():
            shutil.rmtree(path)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

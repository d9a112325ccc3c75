"""Files behind the data sets: one-line errors, the cache, gzip and checked downloads.

- :class:`DataFileError` is raised for any corrupt, truncated or mismatched file; its
  message is one line, ``<file>: <problem>``.
- The cache folder is ``$SPIKEGRAD_CACHE`` if set, else ``~/.cache/spikegrad``.
  Prepared data (binned events, spectrograms) is stored there under a key that hashes
  every parameter and the identity (path, size, modification time) of every source
  file, and is written atomically, so a reader never sees a half-written entry.
- :func:`download` fetches a URL into a folder and verifies its MD5 checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from spikegrad.errors import SpikegradError
from spikegrad.io import PathError, atomic_write_bytes, make_folder, os_reason


class DataFileError(SpikegradError, ValueError):
    """A data file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


class MissingDataError(SpikegradError, FileNotFoundError):
    """A data set that is not on disk; the message says how to get it."""


def cache_dir() -> Path:
    """The folder for downloaded and prepared data (``$SPIKEGRAD_CACHE`` or ~/.cache)."""
    return Path(os.environ.get("SPIKEGRAD_CACHE") or Path.home() / ".cache" / "spikegrad")


def default_data_folder(name: str) -> Path:
    """Where the data set ``name`` lives when its config gives no ``data.path``."""
    return cache_dir() / name


def data_folder(config) -> Path:
    """The folder of a data set: ``data.path``, or its default place in the cache."""
    return Path(config.path).expanduser() if config.path else default_data_folder(config.name)


def file_identity(path: str | Path) -> list[Any]:
    """What identifies a source file's content cheaply: its resolved path, size and mtime."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def cache_key(kind: str, params: dict[str, Any], sources: list[str | Path] = ()) -> str:
    """A file-name-safe key of ``params`` and the identity of the ``sources`` files."""
    payload = {"kind": kind, "params": params, "sources": [file_identity(p) for p in sources]}
    text = json.dumps(payload, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def cached_arrays(
    key: str, compute: Callable[[], dict[str, np.ndarray]], use_cache: bool = True,
    names: Iterable[str] = (),
) -> dict[str, np.ndarray]:
    """Load the arrays cached under ``key``, or compute, store (atomically) and return them.

    An entry that cannot be read (truncated, not an npz file) or that lacks one of ``names``
    is computed again and overwritten. A cache folder that cannot be written is a
    :class:`~spikegrad.io.PathError` naming it.
    """
    path = cache_dir() / "prepared" / f"{key}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
            if all(name in arrays for name in names):
                return arrays
        except (OSError, ValueError, EOFError, KeyError, zlib.error, zipfile.BadZipFile):
            pass  # a damaged cache entry is recomputed and overwritten
    arrays = compute()
    if use_cache:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())
    return arrays


def find_file(folder: str | Path, names: list[str]) -> Path | None:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``folder``; one of
    them that is a folder is a :class:`DataFileError`."""
    for name in names:
        for candidate in (name, f"{name}.gz"):
            path = Path(folder) / candidate
            if path.is_file():
                return path
            if path.is_dir():
                raise DataFileError(path, "is a folder, where a data file is expected")
    return None


def read_maybe_gzip(path: str | Path) -> bytes:
    """The bytes of a file, decompressed if it is gzipped (by content, not by name)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataFileError(path, f"cannot read ({os_reason(error)})") from None
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise DataFileError(path, f"corrupt or truncated gzip file ({error})") from None


def gunzipped(path: str | Path) -> Path:
    """A plain file with the content of ``path``: itself, or its decompressed copy in the cache.

    Large gzipped files (SHD) are decompressed once into the cache, by streaming, to a
    temporary file that is renamed into place when complete.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            if stream.read(2) != b"\x1f\x8b":
                return path
    except OSError as error:
        raise DataFileError(path, f"cannot read ({os_reason(error)})") from None
    target = cache_dir() / "gunzipped" / f"{cache_key('gz', {}, [path])}-{path.stem}"
    if target.is_file():
        return target
    make_folder(target.parent)
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    except OSError as error:
        raise PathError(target, "cannot write", error) from None
    try:
        with os.fdopen(handle, "wb") as out, gzip.open(path, "rb") as source:
            shutil.copyfileobj(source, out, length=1 << 22)
        os.replace(temporary, target)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataFileError(path, f"corrupt or truncated gzip file ({error})") from None
    except OSError as error:
        raise PathError(target, "cannot write", error) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def md5sum(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, folder: str | Path, md5: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` into ``folder`` (skipped if a file with the right checksum is there).

    The file is written to a temporary name and renamed only after its MD5 matches
    ``md5`` (when given); a mismatch removes it and raises :class:`DataFileError`.
    """
    from tqdm.auto import tqdm

    target = Path(folder) / url.rsplit("/", 1)[-1]
    if target.is_file() and (md5 is None or md5sum(target) == md5):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, os.fdopen(handle, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                      disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        if md5 is not None and (found := md5sum(temporary)) != md5:
            raise DataFileError(url, f"checksum mismatch (MD5 {found}, expected {md5})")
        os.replace(temporary, target)
    except OSError as error:
        raise MissingDataError(f"{url}: download failed ({error})") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target

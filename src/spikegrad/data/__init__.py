"""Data sets, encoders and loaders. Each data set is chosen by ``data.name`` in a config.

``build_data(data_config, n_steps, dt_ms)`` returns the train/valid/test
:class:`~spikegrad.data.base.DataSplits` of any registered data set (the registry:
:mod:`spikegrad.data.configs`).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from spikegrad.data.configs import DATA_SETS
from spikegrad.errors import ArgumentError

if TYPE_CHECKING:
    from spikegrad.data.base import CurrentDataset, DataSplits, EventDataset, iterate_batches

_FROM_BASE = ("CurrentDataset", "DataSplits", "EventDataset", "iterate_batches")


def __getattr__(name: str):
    """The data set classes, imported (with torch) on first use: a config names its data set
    through :mod:`spikegrad.data.configs` without importing torch."""
    if name in _FROM_BASE:
        return getattr(import_module("spikegrad.data.base"), name)
    raise AttributeError(f"module 'spikegrad.data' has no attribute {name!r}")


def _builder(name: str) -> Callable[..., DataSplits]:
    try:
        module_name, function = DATA_SETS[name].builder.split(":")
    except KeyError:
        known = ", ".join(DATA_SETS)
        raise ValueError(f"unknown data set {name!r} (known: {known})") from None
    return getattr(import_module(module_name), function)


def build_data(data_config, n_steps: int, dt_ms: float) -> DataSplits:
    """Build the train/valid/test splits of the data set that ``data_config.name`` names."""
    return _builder(data_config.name)(data_config, n_steps=n_steps, dt_ms=dt_ms)


def data_set_summaries() -> dict[str, str]:
    """Every data set's name (``data.name``) and the first line of what it is."""
    return {name: (config.__doc__ or "").strip().splitlines()[0]
            for name, config in DATA_SETS.items()}


DOWNLOADS = {"mnist": "spikegrad.data.images:download_images",
             "fashion-mnist": "spikegrad.data.images:download_images",
             "shd": "spikegrad.data.shd:download_shd", "ssc": "spikegrad.data.shd:download_shd"}
"""The data sets with official files to download, and the function that downloads them."""


def download(name: str, folder: str | Path | None = None, progress: bool = True) -> Path:
    """Download the official files of ``name`` (one of :data:`DOWNLOADS`) into ``folder``
    (default: the cache folder where its config looks) and verify their checksums."""
    from spikegrad.data.files import default_data_folder

    if name not in DOWNLOADS:
        raise ArgumentError(f"{name}: no official files to download (data sets with them: "
                            f"{', '.join(DOWNLOADS)})")
    module_name, function = DOWNLOADS[name].split(":")
    folder = Path(folder) if folder is not None else default_data_folder(name)
    getattr(import_module(module_name), function)(name, folder, progress=progress)
    return folder


__all__ = [
    "CurrentDataset", "DataSplits", "EventDataset", "build_data", "iterate_batches",
    "DATA_SETS", "DOWNLOADS", "data_set_summaries", "download",
]

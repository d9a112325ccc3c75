"""Data sets, encoders and loaders. Each data set is chosen by ``data.name`` in a config.

``build_data(data_config, n_steps, dt_ms)`` returns the train/valid/test
:class:`~spikegrad.data.base.DataSplits` of any registered data set (the registry:
:mod:`spikegrad.data.configs`).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

from spikegrad.data.configs import DATA_SETS

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


__all__ = [
    "CurrentDataset", "DataSplits", "EventDataset", "build_data", "iterate_batches",
    "DATA_SETS",
]

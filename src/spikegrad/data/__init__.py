"""Data sets, encoders and loaders. Each data set is chosen by ``data.name`` in a config.

``build_data(data_config, n_steps, dt_ms)`` returns the train/valid/test
:class:`~spikegrad.data.base.DataSplits` of any registered data set.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from spikegrad.data.base import (
    CurrentDataset,
    DataSplits,
    EventDataset,
    iterate_batches,
)

# data set name -> "module:function"; imported lazily so that heavy readers load on demand
DATASET_BUILDERS: dict[str, str] = {
    "randman": "spikegrad.data.randman:build_randman",
    "digits": "spikegrad.data.images:build_digits",
    "mnist": "spikegrad.data.images:build_mnist",
    "fashion-mnist": "spikegrad.data.images:build_mnist",
    "shd": "spikegrad.data.shd:build_shd",
    "ssc": "spikegrad.data.shd:build_shd",
    "spoken-digits": "spikegrad.data.shd:build_shd",
    "audio": "spikegrad.data.audio:build_audio",
    "spoken-digits-audio": "spikegrad.data.audio:build_audio",
}


def get_builder(name: str) -> Callable[..., DataSplits]:
    try:
        module_name, function = DATASET_BUILDERS[name].split(":")
    except KeyError:
        known = ", ".join(DATASET_BUILDERS)
        raise ValueError(f"unknown data set {name!r} (known: {known})") from None
    return getattr(import_module(module_name), function)


IMAGE_WIDTHS = {"digits": 8 * 8, "mnist": 28 * 28, "fashion-mnist": 28 * 28}


def expected_input_width(data_config) -> int:
    """The number of input channels of a data set, from its config alone (before building it;
    for MNIST-like sets the standard 28 x 28 images)."""
    if hasattr(data_config, "n_units"):
        return data_config.n_units
    if hasattr(data_config, "mel"):
        return data_config.mel.n_mels
    return IMAGE_WIDTHS.get(data_config.name, 1)


def build_data(data_config, n_steps: int, dt_ms: float) -> DataSplits:
    """Build the train/valid/test splits of the data set that ``data_config.name`` names."""
    return get_builder(data_config.name)(data_config, n_steps=n_steps, dt_ms=dt_ms)


__all__ = [
    "CurrentDataset", "DataSplits", "EventDataset", "build_data", "iterate_batches",
    "DATASET_BUILDERS",
]

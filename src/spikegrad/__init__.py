"""spikegrad: spiking neural networks trained with surrogate gradients.

    import spikegrad as sg
    config = sg.load_config("randman", ["training.epochs=30"])
    result = sg.train(config, out_dir="runs/randman")
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spikegrad.config import ConfigError, ExperimentConfig, load_config
    from spikegrad.fluctuation import fluctuation_init
    from spikegrad.functional import LIFDynamics, ReadoutDynamics
    from spikegrad.interop.nir import from_nir, read_nir, to_nir, write_nir
    from spikegrad.model import SNN, LeakyReadout, LIFLayer
    from spikegrad.surrogates import SURROGATES, Surrogate, register_surrogate, spike
    from spikegrad.training import Trainer, evaluate, train


__version__ = "0.1.0"

_HOME = {
    "ConfigError": "spikegrad.config", "ExperimentConfig": "spikegrad.config",
    "load_config": "spikegrad.config", "fluctuation_init": "spikegrad.fluctuation",
    "LIFDynamics": "spikegrad.functional", "ReadoutDynamics": "spikegrad.functional",
    "from_nir": "spikegrad.interop.nir", "read_nir": "spikegrad.interop.nir",
    "to_nir": "spikegrad.interop.nir", "write_nir": "spikegrad.interop.nir",
    "SNN": "spikegrad.model", "LeakyReadout": "spikegrad.model", "LIFLayer": "spikegrad.model",
    "SURROGATES": "spikegrad.surrogates", "Surrogate": "spikegrad.surrogates",
    "register_surrogate": "spikegrad.surrogates", "spike": "spikegrad.surrogates",
    "Trainer": "spikegrad.training", "evaluate": "spikegrad.training",
    "train": "spikegrad.training",
}
"""Where each public name lives: imported on first use (:func:`__getattr__`)."""

__all__ = [
    "ConfigError", "ExperimentConfig", "LIFDynamics", "LIFLayer", "LeakyReadout",
    "ReadoutDynamics", "SNN", "SURROGATES", "Surrogate", "Trainer", "evaluate",
    "fluctuation_init", "from_nir", "load_config", "read_nir", "register_surrogate", "spike",
    "to_nir", "train", "write_nir",
]


def __getattr__(name: str):
    """The public names and the submodules (``spikegrad.model``, ...), imported on first use (so
    that the command line starts without torch where a command needs none)."""
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    if not name.startswith("__"):
        try:
            return import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'spikegrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

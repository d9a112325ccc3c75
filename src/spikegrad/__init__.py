"""spikegrad: spiking neural networks trained with surrogate gradients.

    import spikegrad as sg
    config = sg.load_config("randman", ["training.epochs=30"])
    result = sg.train(config, out_dir="runs/randman")
"""

from spikegrad.config import ConfigError, ExperimentConfig, load_config
from spikegrad.fluctuation import fluctuation_init
from spikegrad.functional import LIFDynamics, ReadoutDynamics
from spikegrad.interop.nir import from_nir, read_nir, to_nir, write_nir
from spikegrad.model import SNN, LeakyReadout, LIFLayer
from spikegrad.surrogates import SURROGATES, Surrogate, register_surrogate, spike
from spikegrad.training import Trainer, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "ExperimentConfig", "LIFDynamics", "LIFLayer", "LeakyReadout",
    "ReadoutDynamics", "SNN", "SURROGATES", "Surrogate", "Trainer", "evaluate",
    "fluctuation_init", "from_nir", "load_config", "read_nir", "register_surrogate", "spike",
    "to_nir", "train", "write_nir",
]

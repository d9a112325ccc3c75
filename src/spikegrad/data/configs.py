"""Validated configs of every data set, chosen by ``data.name`` in an experiment config.

Each data set has one pydantic model here with a ``name`` literal; ``DataConfig`` is
their union, discriminated by ``name``. Builders live in the data set's own module
and are looked up by name in :mod:`spikegrad.data`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from spikegrad.schema import (
    Float,
    Fraction,
    Int,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Seed,
    Strict,
)


class SplitFractions(Strict):
    """Fractions of a data set that has no official split, taken after a seeded shuffle."""

    train: Fraction = 0.8
    valid: Fraction = 0.1
    test: Fraction = 0.1

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + valid + test must be 1, got {total:g}")
        if min(self.train, self.valid, self.test) <= 0:
            raise ValueError("train, valid and test fractions must all be > 0")
        return self


class RandmanConfig(Strict):
    """Random manifolds (Zenke & Vogels 2021, section 4). See :mod:`spikegrad.data.randman`."""

    name: Literal["randman"] = "randman"
    n_classes: Annotated[Int, Field(ge=2)] = 10
    n_units: PositiveInt = 20
    manifold_dim: PositiveInt = 1
    alpha: PositiveFloat = 1.0
    n_cutoff: PositiveInt | None = None
    precision: Annotated[Float, Field(gt=0, lt=1)] = 1e-3
    max_cutoff: PositiveInt = 1000
    spectrum: Literal["generator", "paper"] = "generator"
    spectrum_offset: NonNegativeFloat = 1.0  # the lab's Randman; 0: its NumPy variant
    use_bias: bool = False
    samples_per_class: Annotated[Int, Field(ge=3)] = 1000
    step_frac: Annotated[Float, Field(gt=0, le=1)] = 0.5
    seed: Seed = 42
    split: SplitFractions = Field(default_factory=SplitFractions)


class LatencyEncoding(Strict):
    """Pixel -> spike latency t(x) = tau_eff ln(x / (x - theta)), x > theta (protocol 4)."""

    tau_eff_ms: PositiveFloat = 20.0
    threshold: Annotated[Float, Field(ge=0, lt=1)] = 0.2


class DigitsConfig(Strict):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), latency-coded: offline."""

    name: Literal["digits"] = "digits"
    encoding: LatencyEncoding = Field(default_factory=LatencyEncoding)
    seed: Seed = 42
    split: SplitFractions = Field(
        default_factory=lambda: SplitFractions(train=0.6, valid=0.2, test=0.2))


class MNISTConfig(Strict):
    """MNIST from the standard IDX files in ``path`` (default: the cache), latency-coded.

    Standard split: 60000 train / 10000 test; ``valid_size`` training images (a seeded
    shuffle) are held out for validation. ``train_size`` keeps only that many of the
    remaining training images (quick runs).
    """

    name: Literal["mnist"] = "mnist"
    path: str | None = None
    download: bool = False
    encoding: LatencyEncoding = Field(default_factory=LatencyEncoding)
    valid_size: PositiveInt = 5000
    train_size: PositiveInt | None = None
    seed: Seed = 42


class FashionMNISTConfig(MNISTConfig):
    """Fashion-MNIST (same IDX format, sizes and split as MNIST)."""

    name: Literal["fashion-mnist"] = "fashion-mnist"


class SHDConfig(Strict):
    """Spiking Heidelberg Digits: the official HDF5 files (gzipped or not) in ``path``.

    Binning: with ``max_time_s`` unset, bins are the network's steps (width time.dt_ms,
    time.n_steps of them); with ``max_time_s`` set, time.n_steps bins of equal width
    cover [0, max_time_s). Spikes after the last bin are dropped. ``binary`` clips
    counts to 1. Validation: ``valid_fraction`` of the official training set (a seeded
    shuffle); the official test set is the test split.
    """

    name: Literal["shd"] = "shd"
    path: str | None = None
    download: bool = False
    max_time_s: PositiveFloat | None = None
    binary: bool = False
    n_units: PositiveInt = 700
    n_classes: PositiveInt | None = None
    valid_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.1
    seed: Seed = 42


class SSCConfig(SHDConfig):
    """Spiking Speech Commands: SHD's format, 35 classes, with an official validation file."""

    name: Literal["ssc"] = "ssc"


class SpokenDigitsConfig(SHDConfig):
    """The spoken digits synthesised here (``spikegrad data make-spoken-digits``), as spikes."""

    name: Literal["spoken-digits"] = "spoken-digits"


class MelConfig(Strict):
    """Log-Mel spectrogram, one frame per network step (hop = sample_rate · dt)."""

    sample_rate: PositiveInt = 16000
    n_mels: PositiveInt = 64
    n_fft: PositiveInt = 512
    fmin: NonNegativeFloat = 50.0
    fmax: PositiveFloat | None = None
    top_db: PositiveFloat = 80.0
    normalise: Literal["peak", "standard"] = "peak"
    gain: PositiveFloat = 1.0


class AudioConfig(Strict):
    """Audio files (wav, flac) fed to the network as input current (a Mel spectrogram).

    ``layout``: ``class-folders`` (one sub-folder per class, optionally under ``train/``
    and ``test/``) or ``heidelberg`` (the Heidelberg Digits layout: ``audio/*.flac``
    named ``lang-<l>_speaker-<s>_trial-<t>_digit-<d>`` with ``train_filenames.txt`` and
    ``test_filenames.txt``). Without an official split, ``split`` fractions are used;
    with one, ``valid_fraction`` of the training files are held out.
    """

    name: Literal["audio"] = "audio"
    path: str | None = None
    layout: Literal["class-folders", "heidelberg"] = "class-folders"
    mel: MelConfig = Field(default_factory=MelConfig)
    n_classes: PositiveInt | None = None
    valid_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.1
    split: SplitFractions = Field(default_factory=SplitFractions)
    seed: Seed = 42


class SpokenDigitsAudioConfig(AudioConfig):
    """The synthesised spoken digits as audio, for the current paradigm."""

    name: Literal["spoken-digits-audio"] = "spoken-digits-audio"
    layout: Literal["class-folders", "heidelberg"] = "heidelberg"


# The union of all data set configs, discriminated by ``name``.
DataConfig = Annotated[
    RandmanConfig | DigitsConfig | MNISTConfig | FashionMNISTConfig | SHDConfig | SSCConfig
    | SpokenDigitsConfig | AudioConfig | SpokenDigitsAudioConfig,
    Field(discriminator="name"),
]

"""Validated configs of every data set, chosen by ``data.name`` in an experiment config.

The registry of data sets: each has one pydantic model here with a ``name`` literal, the
``builder`` that makes its splits (``"module:function"``, imported when first used, so that
heavy readers load on demand) and its ``input_width``. :data:`DATA_CONFIGS` lists them once;
the name -> config table (:data:`DATA_SETS`) and ``DataConfig``, their union discriminated by
``name``, are made from it. A new data set is a model here (listed in ``DATA_CONFIGS``) and
its builder in its own module.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

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
    """Fraction for training."""
    valid: Fraction = 0.1
    """Fraction for validation (model selection, early stopping)."""
    test: Fraction = 0.1
    """Fraction for the test."""

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + valid + test must be 1, got {total:g}")
        if min(self.train, self.valid, self.test) <= 0:
            raise ValueError("train, valid and test fractions must all be > 0")
        return self


class DigitsSplit(SplitFractions):
    """The digits' fractions (1797 images: a fifth each for validation and test); a class of
    its own, so that setting one fraction keeps the others' defaults."""

    train: Fraction = 0.6
    """Fraction for training."""
    valid: Fraction = 0.2
    """Fraction for validation (model selection, early stopping)."""
    test: Fraction = 0.2
    """Fraction for the test."""


class RandmanConfig(Strict):
    """Random manifolds (Zenke & Vogels 2021, section 4). See :mod:`spikegrad.data.randman`."""

    builder: ClassVar[str] = "spikegrad.data.randman:build_randman"
    name: Literal["randman"] = "randman"
    """randman"""
    n_classes: Annotated[Int, Field(ge=2)] = 10
    """Classes (manifolds)."""
    n_units: PositiveInt = 20
    """Embedding dimension M: input neurons."""
    manifold_dim: PositiveInt = 1
    """Intrinsic dimension D."""
    alpha: PositiveFloat = 1.0
    """Smoothness α of the spectrum."""
    n_cutoff: PositiveInt | None = None
    """Frequencies (null: the generator's rule from precision and max_cutoff)."""
    precision: Annotated[Float, Field(gt=0, lt=1)] = 1e-3
    """The generator's rule: min(ceil(precision^(-1/α)), max_cutoff) frequencies."""
    max_cutoff: PositiveInt = 1000
    """Upper limit of that rule."""
    spectrum: Literal["generator", "paper"] = "generator"
    """generator: the public generator's frequencies k = 0..n-1; paper: k = 1..n with k^-α as
    printed."""
    spectrum_offset: NonNegativeFloat = 1.0
    """Generator spectrum 1/((k+1)^α + offset): 1 is the lab's Randman (the default), 0 its NumPy
    variant."""
    use_bias: bool = False
    """Keep the constant k = 0 term of the generator spectrum."""
    samples_per_class: Annotated[Int, Field(ge=3)] = 1000
    """Samples per class (the paper's 1000)."""
    step_frac: Annotated[Float, Field(gt=0, le=1)] = 0.5
    """Spikes fall in the first step_frac of the trial (the paper's 50 of 100 ms)."""
    seed: Seed = 42
    """Seed of the manifolds, samples and split."""
    split: SplitFractions = Field(default_factory=SplitFractions)
    """Train/valid/test fractions after a seeded shuffle (the paper's 0.8/0.1/0.1)."""

    def input_width(self) -> int:
        return self.n_units


class LatencyEncoding(Strict):
    """Pixel -> spike latency t(x) = tau_eff ln(x / (x - theta)), x > theta (protocol 4)."""

    tau_eff_ms: PositiveFloat = 20.0
    """τ_eff of the latency code (ms)."""
    threshold: Annotated[Float, Field(ge=0, lt=1)] = 0.2
    """θ: pixels at or below it do not spike."""


class DigitsConfig(Strict):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), latency-coded: offline."""

    builder: ClassVar[str] = "spikegrad.data.images:build_digits"
    name: Literal["digits"] = "digits"
    """digits"""
    encoding: LatencyEncoding = Field(default_factory=LatencyEncoding)
    """Latency code of the pixels."""
    seed: Seed = 42
    """Seed of the split."""
    split: DigitsSplit = Field(default_factory=DigitsSplit)
    """Train/valid/test fractions."""

    def input_width(self) -> int:
        return 8 * 8


class MNISTConfig(Strict):
    """MNIST from the standard IDX files in ``path`` (default: the cache), latency-coded.

    Standard split: 60000 train / 10000 test; ``valid_size`` training images (a seeded
    shuffle) are held out for validation. ``train_size`` keeps only that many of the
    remaining training images (quick runs).
    """

    builder: ClassVar[str] = "spikegrad.data.images:build_mnist"
    name: Literal["mnist"] = "mnist"
    """mnist"""
    path: str | None = None
    """Folder of the IDX files (null: the data cache)."""
    download: bool = False
    """Download missing files (official mirrors, checksums verified)."""
    encoding: LatencyEncoding = Field(default_factory=LatencyEncoding)
    """Latency code of the pixels."""
    valid_size: PositiveInt = 5000
    """Training images held out for validation."""
    train_size: PositiveInt | None = None
    """Keep only this many of the other training images (null: all)."""
    seed: Seed = 42
    """Seed of the validation split."""

    def input_width(self) -> int:
        return 28 * 28  # the standard images


class FashionMNISTConfig(MNISTConfig):
    """Fashion-MNIST (same IDX format, sizes and split as MNIST)."""

    name: Literal["fashion-mnist"] = "fashion-mnist"
    """fashion-mnist"""


class SHDConfig(Strict):
    """Spiking Heidelberg Digits: the official HDF5 files (gzipped or not) in ``path``.

    Binning: with ``max_time_s`` unset, bins are the network's steps (width time.dt_ms,
    time.n_steps of them); with ``max_time_s`` set, time.n_steps bins of equal width
    cover [0, max_time_s). Spikes after the last bin are dropped. ``binary`` clips
    counts to 1. Validation: ``valid_fraction`` of the official training set (a seeded
    shuffle); the official test set is the test split.
    """

    builder: ClassVar[str] = "spikegrad.data.shd:build_shd"
    name: Literal["shd"] = "shd"
    """shd"""
    path: str | None = None
    """Folder of the HDF5 files (null: the data cache)."""
    download: bool = False
    """Download missing files (checked against the site's md5sums.txt)."""
    max_time_s: PositiveFloat | None = None
    """Bin [0, max_time_s) into time.n_steps bins (null: bins of time.dt_ms)."""
    binary: bool = False
    """Clip spike counts per bin to 1."""
    n_units: PositiveInt = 700
    """Input channels."""
    n_classes: PositiveInt | None = None
    """Classes (null: from the file)."""
    valid_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.1
    """Part of the training file held out for validation."""
    seed: Seed = 42
    """Seed of the validation split."""

    def input_width(self) -> int:
        return self.n_units


class SSCConfig(SHDConfig):
    """Spiking Speech Commands: SHD's format, 35 classes, with an official validation file."""

    name: Literal["ssc"] = "ssc"
    """ssc"""


class SpokenDigitsConfig(SHDConfig):
    """The spoken digits synthesised here (``spikegrad data make-spoken-digits``), as spikes."""

    name: Literal["spoken-digits"] = "spoken-digits"
    """spoken-digits"""


class MelConfig(Strict):
    """Log-Mel spectrogram, one frame per network step (hop = sample_rate · dt)."""

    sample_rate: PositiveInt = 16000
    """Audio sample rate (Hz)."""
    n_mels: PositiveInt = 64
    """Mel bands: input channels."""
    n_fft: PositiveInt = 512
    """FFT size."""
    fmin: NonNegativeFloat = 50.0
    """Lowest frequency (Hz)."""
    fmax: PositiveFloat | None = None
    """Highest frequency (Hz; null: half the sample rate)."""
    top_db: PositiveFloat = 80.0
    """Dynamic range kept below the peak (dB)."""
    normalise: Literal["peak", "standard"] = "peak"
    """peak: dB scaled to [0, 1]; standard: zero mean, unit variance."""
    gain: PositiveFloat = 1.0
    """Multiplies the spectrogram (the input current)."""


class AudioConfig(Strict):
    """Audio files (wav, flac) fed to the network as input current (a Mel spectrogram).

    ``layout``: ``class-folders`` (one sub-folder per class, optionally under ``train/``
    and ``test/``) or ``heidelberg`` (the Heidelberg Digits layout: ``audio/*.flac``
    named ``lang-<l>_speaker-<s>_trial-<t>_digit-<d>`` with ``train_filenames.txt`` and
    ``test_filenames.txt``). Without an official split, ``split`` fractions are used;
    with one, ``valid_fraction`` of the training files are held out.
    """

    builder: ClassVar[str] = "spikegrad.data.audio:build_audio"
    name: Literal["audio"] = "audio"
    """audio"""
    path: str | None = None
    """Folder of the audio files."""
    layout: Literal["class-folders", "heidelberg"] = "class-folders"
    """class-folders or heidelberg (see above)."""
    mel: MelConfig = Field(default_factory=MelConfig)
    """The spectrogram."""
    n_classes: PositiveInt | None = None
    """Classes (null: from the files)."""
    valid_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.1
    """Part of the official training files held out for validation."""
    split: SplitFractions = Field(default_factory=SplitFractions)
    """Train/valid/test fractions without an official split."""
    seed: Seed = 42
    """Seed of the splits."""

    def input_width(self) -> int:
        return self.mel.n_mels


class SpokenDigitsAudioConfig(AudioConfig):
    """The synthesised spoken digits as audio, for the current paradigm."""

    name: Literal["spoken-digits-audio"] = "spoken-digits-audio"
    """spoken-digits-audio"""
    layout: Literal["class-folders", "heidelberg"] = "heidelberg"
    """heidelberg (the synthesised files' layout)."""


DATA_CONFIGS = (RandmanConfig, DigitsConfig, MNISTConfig, FashionMNISTConfig, SHDConfig,
                SSCConfig, SpokenDigitsConfig, AudioConfig, SpokenDigitsAudioConfig)
"""Every data set's config, in the order the reference lists them: the registry."""

DATA_SETS: dict[str, type[Strict]] = {
    config.model_fields["name"].default: config for config in DATA_CONFIGS}
"""Data set name -> its config class."""

DataConfig = Annotated[Union[DATA_CONFIGS], Field(discriminator="name")]  # noqa: UP007
"""The config of any registered data set, chosen by ``name``."""

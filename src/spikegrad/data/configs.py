"""Validated configs of every data set, chosen by ``data.name`` in an experiment config.

Each data set has one pydantic model here with a ``name`` literal; ``DataConfig`` is
their union, discriminated by ``name``. Builders live in the data set's own module
and are looked up by name in :mod:`spikegrad.data`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from spikegrad.schema import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, Strict


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
    n_classes: Annotated[int, Field(ge=2)] = 10
    n_units: PositiveInt = 20
    manifold_dim: PositiveInt = 1
    alpha: PositiveFloat = 1.0
    n_cutoff: PositiveInt | None = None
    precision: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    max_cutoff: PositiveInt = 1000
    spectrum: Literal["generator", "paper"] = "generator"
    spectrum_offset: NonNegativeFloat = 0.0
    use_bias: bool = False
    samples_per_class: Annotated[int, Field(ge=3)] = 1000
    step_frac: Annotated[float, Field(gt=0, le=1)] = 0.5
    seed: int = 42
    split: SplitFractions = Field(default_factory=SplitFractions)


# The union of all data set configs, discriminated by ``name``.
DataConfig = RandmanConfig

"""Shared building blocks of the validated configs (pydantic models that forbid unknown keys).

Numbers are checked strictly: a non-finite float (``.nan``, ``.inf``) is an error in every
section, and so is ``true``/``false`` where a number is expected (YAML reads ``seed: true``
as a boolean, which Python would otherwise take for 1).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# The choices a config names, defined here (without torch) so that reading and checking a
# config does not import torch; the modules that act on them import them from here.

KernelChoice = Literal["auto", "cpp", "torch"]
"""Which kernel set runs the fast engine: ``cpp`` (compiled, float32/float64 CPU tensors),
``torch`` (any device) or ``auto`` (``cpp`` where it runs and compiles, else ``torch``)."""

RecomputeChoice = bool | Literal["auto"]
"""``model.recompute``: recompute U in the backward pass (True), keep it (False), or ``auto``
(recompute the layers without recurrence where the kernels recompute in cache; see
:mod:`spikegrad.engine`). The same results either way."""

ReadoutReduction = Literal["max", "sum", "mean", "last"]
"""How the readout trace becomes logits (:func:`spikegrad.losses.reduce_readout`)."""

READOUT_INITIAL_MEMBRANE = -1e-3
"""U_out[0] of the readout: the default of the lab's stork ``ReadoutGroup`` (the paper's own
value is not stated)."""

BUILTIN_SURROGATES = ("superspike", "sigmoid", "esser", "superspike_asymptotic", "exponential",
                      "arctan", "gaussian", "true", "constant")
"""The surrogate shapes :mod:`spikegrad.surrogates` registers (the kernels' ids 1-9, in order);
a test holds the two equal."""


class Strict(BaseModel):
    """A config section: unknown keys and non-finite numbers are errors, assignments are
    validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
PositiveInt = Annotated[Int, Field(ge=1)]
Fraction = Annotated[Float, Field(ge=0, le=1)]
Seed = Annotated[Int, Field(ge=0, le=2**63 - 1)]
"""A random seed: what both NumPy's and torch's generators take."""

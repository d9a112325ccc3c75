"""Shared building blocks of the validated configs (pydantic models that forbid unknown keys).

Numbers are checked strictly: a non-finite float (``.nan``, ``.inf``) is an error in every
section, and so is ``true``/``false`` where a number is expected (YAML reads ``seed: true``
as a boolean, which Python would otherwise take for 1).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


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

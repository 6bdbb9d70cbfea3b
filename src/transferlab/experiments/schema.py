"""The strict base of every config section and the bounds on what a small config may ask for (memory and time are
spent only after validation)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown fields are errors, and values are not coerced: ``true`` is not the number 1 nor a class name, and
    ``"5"`` is not a count (a whole number is accepted where a real number is expected)."""

    model_config = ConfigDict(extra="forbid", strict=True)


MAX_PART = 10_000_000
MAX_REPETITIONS = 1_000
MAX_BUDGETS = 200
MAX_CONFIG_BYTES = 1 << 20
#: most surrogates trained per data fraction for V (each one is a full training run)
MAX_SURROGATE_DRAWS = 100
#: finest quantisation grid (levels per unit)
MAX_QUANTIZE = 1 << 20

"""What a model's constructor parameters may hold: :class:`Param`, one rule per parameter, checked by
:meth:`~transferlab.models.base.Classifier.check_params` before any training and when a saved model is loaded."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from transferlab.errors import shown


def short(value: Any) -> str:
    """``repr(value)`` cut to 60 characters (:func:`transferlab.errors.shown`)."""
    return shown(value, 60)


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Param:
    """What one constructor parameter may hold.

    kind : ``"real"`` (a finite number), ``"int"``, ``"ints"`` (a list or tuple of integers, each checked against
        the bounds, with ``length`` entries), ``"device"`` (a torch device name such as ``"cpu"`` or ``"cuda:0"``).
    low, high : inclusive bounds (``open_low``: ``low`` itself is excluded).
    none : None is allowed too. also : further values allowed outside the bounds (``n_jobs=-1``).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    none: bool = False
    length: tuple[int, int] = (0, 64)
    also: tuple[Any, ...] = ()

    def describe(self) -> str:
        what = {"real": "a finite number", "int": "an integer", "ints": "integers",
                "device": "a torch device name ('cpu', 'cuda', 'cuda:0')"}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        if bounds:
            what += " " + " and ".join(bounds)
        if self.kind == "ints":
            lo, hi = self.length
            count = f"{lo}" if lo == hi else f"{lo} to {hi}"
            what = f"a list of {count} {what}"
        if self.also:
            what += " or " + " or ".join(map(repr, self.also))
        return f"None or {what}" if self.none else what

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none
        if is_real(value) and value in self.also:
            return True
        if self.kind == "device":
            if not isinstance(value, (str, torch.device)):
                return False
            try:
                torch.device(value)
            except (RuntimeError, ValueError, TypeError):
                return False
            return True
        if self.kind == "ints":
            return (isinstance(value, (list, tuple)) and self.length[0] <= len(value) <= self.length[1]
                    and all(is_int(v) and self._in_bounds(v) for v in value))
        if self.kind == "int":
            return is_int(value) and self._in_bounds(value)
        return is_real(value) and math.isfinite(value) and self._in_bounds(value)

    def _in_bounds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or value <= self.high


#: seeds of torch generators
SEED = Param("int", 0, 2 ** 63 - 1)


def as_tuple(value: Any) -> Any:
    """A list, array or other sequence parameter as a tuple; anything else (a string, a number) as it is, for
    :meth:`Classifier.check_params` to refuse."""
    if isinstance(value, (list, tuple, range, np.ndarray)):
        return tuple(value.tolist() if isinstance(value, np.ndarray) else value)
    return value

"""The one definition of an attack's own settings: a pydantic model per attack, next to the attack in its module
(``PGDLineSearch.Settings`` is :class:`~transferlab.attacks.pgd_line_search.PGDLineSearchSettings`). The attack
validates its settings with it when it is built (``PGDLineSearch(max_iter=0)`` is a :class:`ConfigError` naming
``max_iter``), and the config's ``attack.solver`` section is that model (the YAML and the Python API share it).

The bounds keep what a small config can make us allocate or spend bounded (a line search holds ``grid``
candidates of the whole batch at once); values are not coerced (``1`` is not true, ``"5"`` is not a count; a whole
number is accepted where a real number is expected), except that numpy scalars count as the numbers they hold
(:func:`plain`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from transferlab.errors import ConfigError, shown

#: most iterations, steps or points an attack setting may ask for
MAX_STEPS = 10 ** 7
#: most candidates of one line search (each holds a copy of the batch)
MAX_GRID = 64
#: the largest seed (63 bits)
MAX_SEED = 2 ** 63 - 1


def plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (``np.int64(3)`` → ``3``, ``np.float32(0.5)`` → ``0.5``,
    ``np.bool_`` → ``bool``), anything else as it is: values computed with numpy are the numbers they show."""
    return value.item() if isinstance(value, (np.integer, np.floating, np.bool_)) else value


class AttackSettings(BaseModel):
    """Base of the settings models: unknown settings are errors, values are not coerced, and a settings object
    does not change once built (an attack built with it keeps its meaning)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @classmethod
    def checked(cls, settings: Any = None, values: Mapping[str, Any] | None = None,
                where: str = "") -> AttackSettings:
        """``settings`` (an instance of this model, a mapping, or None for the defaults) with ``values`` on top,
        validated; a bad or unknown setting is a one-line :class:`ConfigError` naming it (prefixed by
        ``where``, e.g. ``attack.solver``)."""
        if settings is not None and not isinstance(settings, (cls, Mapping)):
            raise ConfigError(f"{where or 'settings'}: expected {cls.__name__} or a mapping of its fields, got "
                              f"{type(settings).__name__}")
        if type(settings) is cls and not values:
            return settings
        data = dict(settings.model_dump() if isinstance(settings, AttackSettings) else settings or {})
        data.update(values or {})
        data = {key: plain(value) for key, value in data.items()}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(settings_message(cls, exc, where)) from None


def settings_message(model: type[BaseModel], exc: ValidationError, where: str = "") -> str:
    """The first error of ``exc`` as one line: the setting's name, what is wrong, the value given."""
    first = exc.errors()[0]
    name = ".".join(str(part) for part in (where, *first["loc"]) if part != "")
    if first["type"] == "extra_forbidden":
        known = ", ".join(model.model_fields) or "none"
        return f"{name}: unknown setting of {model.__name__} (its settings: {known})"
    message = first["msg"].removeprefix("Value error, ")
    return f"{name}: {message}, got {shown(first.get('input'))}"

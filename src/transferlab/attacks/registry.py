"""One registry of evasion attacks and threat-model pieces, reached by the Python API and by the YAML ``attack``
section alike: a case study names its pieces, :func:`threat_model` turns the names into constraints, and
:func:`evasion_attack` builds a configured attack from a kind name. A new attack is one module (the attack and its
settings model, :class:`~transferlab.attacks.settings.AttackSettings`) and one line of :data:`EVASION_ATTACKS`:
the config's ``attack`` section gets a member of that kind, with ``solver`` typed by its settings model."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from transferlab.attacks.base import EvasionAttack
from transferlab.attacks.constraints import Binary, Constraint, FeatureAdditionOnly, Mask, Quantize
from transferlab.attacks.feature_addition import FeatureAddition
from transferlab.attacks.fgsm import FGSM
from transferlab.attacks.mifgsm import MIFGSM
from transferlab.attacks.objectives import Objective
from transferlab.attacks.pgd import PGD
from transferlab.attacks.pgd_line_search import PGDLineSearch
from transferlab.errors import ConfigError

#: evasion attack kinds by the name a config uses (each class carries its ``Settings`` model and its ``norms``)
EVASION_ATTACKS: dict[str, type[EvasionAttack]] = {
    "pgd_line_search": PGDLineSearch,
    "pgd": PGD,
    "fgsm": FGSM,
    "mifgsm": MIFGSM,
    "feature_addition": FeatureAddition,
}

#: threat-model pieces by the name a config uses (besides the ball, given by norm and eps, and the box lb/ub)
PIECES: dict[str, type[Constraint]] = {
    "feature_addition": FeatureAdditionOnly,
    "binary": Binary,
    "mask": Mask,
    "quantize": Quantize,
}


def manipulable_mask(feature_names: Sequence[str] | None, prefixes: Sequence[str]) -> np.ndarray:
    """A boolean mask of the features whose name starts with one of ``prefixes`` (e.g. ``["permission::",
    "intent::"]`` for manifest features only)."""
    if feature_names is None:
        raise ConfigError("attack.manipulable selects features by name, but this dataset has no feature names")
    names = np.asarray(list(feature_names), dtype=object)
    mask = np.zeros(names.size, dtype=bool)
    for prefix in prefixes:
        mask |= np.fromiter((str(n).startswith(prefix) for n in names), bool, names.size)
    if not mask.any():
        raise ConfigError(f"attack.manipulable {list(prefixes)} matches no feature name (names look like "
                          f"{', '.join(map(str, names[:3]))}, ...); fix the prefixes")
    return mask


def threat_model(feature_addition: bool = False, binary: bool = False, mask: Any = None,
                 quantize: int | None = None) -> tuple[Constraint, ...]:
    """The pieces of Φ(x0) besides the ℓp ball and the box, from their config names."""
    pieces: list[Constraint] = []
    if feature_addition:
        pieces.append(FeatureAdditionOnly())
    if binary:
        pieces.append(Binary())
    if mask is not None:
        pieces.append(Mask(np.asarray(mask, dtype=bool)))
    if quantize is not None:
        pieces.append(Quantize(quantize))
    return tuple(pieces)


def evasion_attack(kind: str, *, norm: Any, eps: float, lb: Any = 0.0, ub: Any = 1.0,
                   constraints: Sequence[Constraint] = (), loss: str = "margin", settings: Any = None,
                   **values: Any) -> EvasionAttack:
    """A configured evasion attack of kind ``kind`` (see :data:`EVASION_ATTACKS`); ``settings`` (the kind's
    settings model, e.g. a config's ``attack.solver``, or a mapping) and ``values`` hold the attack's own settings
    (e.g. ``max_iter``, ``tol``); a bad or unknown setting is a :class:`ConfigError` naming ``attack.solver.<it>``."""
    if kind not in EVASION_ATTACKS:
        raise ConfigError(f"unknown attack kind {kind!r}; choose one of {', '.join(EVASION_ATTACKS)}")
    attack = EVASION_ATTACKS[kind]
    return attack(norm=norm, eps=eps, lb=lb, ub=ub, constraints=tuple(constraints), objective=Objective(loss),
                  settings=attack.Settings.checked(settings, values, where="attack.solver"))

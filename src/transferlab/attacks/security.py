"""Security evaluation curves: error under attack as the budget grows (the paper's Fig. 5 for white-box)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from transferlab.attacks.base import AttackResult, EvasionAttack
from transferlab.models.base import Classifier, check_X


@dataclass
class SecurityCurve:
    eps: list[float]
    error: list[float]
    results: list[AttackResult | None] = field(default_factory=list, repr=False)  # None at ε = 0 (no attack)


def security_curve(attack: EvasionAttack, model: Classifier, X: Any, y: Any, eps: Sequence[float],
                   warm_start: bool = False) -> SecurityCurve:
    """Error of ``model`` under ``attack`` at each budget in ``eps`` (sorted ascending).

    With ``warm_start`` each budget starts from the points found at the previous one (projected onto the new
    ball), which saves iterations and keeps the curve monotone for the line-searched attack.
    """
    eps = sorted(float(e) for e in eps)
    X = check_X(X)
    errors, results, previous = [], [], None
    for e in eps:
        current = attack.with_eps(e)
        if e == 0:
            errors.append(float(np.mean(model.predict(X) != np.asarray(y))))
            results.append(None)
            continue
        current.run(model, X, y, init=previous if warm_start else None)
        results.append(current.result_)
        errors.append(current.result_.error)
        previous = current.result_.x_adv
    return SecurityCurve(eps, errors, results)

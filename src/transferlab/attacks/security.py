"""Security evaluation curves: error under attack as the budget grows (the paper's Fig. 5 for white-box), with the
two options of the authors' security evaluation — warm starts across budgets, and Algorithm 1's double
initialisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from transferlab.attacks.base import AttackResult, EvasionAttack
from transferlab.attacks.objectives import Objective
from transferlab.models.base import Classifier, check_X


@dataclass
class SecurityCurve:
    eps: list[float]
    error: list[float]
    results: list[AttackResult | None] = field(default_factory=list, repr=False)  # None at ε = 0 (no attack)


def other_class_start(model: Classifier, objective: Objective, pool: Any, y: Any) -> np.ndarray:
    """The second start of Algorithm 1 for each attacked point: the pool point with the largest A(·, y), the one
    the model scores most confidently in another class than y (for targeted attacks: most confidently in the
    target class y), the authors' choice. One row per label of ``y``."""
    pool_t = model.as_tensor(pool).to(torch.float64)
    labels = np.asarray(y)
    start = np.empty((labels.shape[0], pool_t.shape[1]))
    with torch.no_grad():
        scores = model.scores(pool_t.to(model.dtype))
    for label in np.unique(labels):
        value = objective.of_scores(scores, torch.full((pool_t.shape[0],), int(label), device=pool_t.device))
        start[labels == label] = pool_t[int(value.argmax())].cpu().numpy()
    return start


def better_of(first: AttackResult, second: AttackResult) -> AttackResult:
    """Per point, the run with the higher final objective (``first`` on ties); ``iterations`` counts both runs'
    work. New arrays: neither result is changed."""
    better = second.objective > first.objective
    rows = better.reshape(-1, *([1] * (first.x_adv.ndim - 1)))
    return AttackResult(
        x_adv=np.where(rows, second.x_adv, first.x_adv),
        objective_start=first.objective_start,
        objective=np.where(better, second.objective, first.objective),
        iterations=first.iterations + second.iterations,
        perturbation_norm=np.where(better, second.perturbation_norm, first.perturbation_norm),
        success=np.where(better, second.success, first.success),
    )


def security_curve(attack: EvasionAttack, model: Classifier, X: Any, y: Any, eps: Sequence[float],
                   warm_start: bool = False, double_init: bool = False, pool: Any = None) -> SecurityCurve:
    """Error of ``model`` under ``attack`` at each budget in ``eps`` (sorted ascending; y as :meth:`EvasionAttack.run
    <transferlab.attacks.base.EvasionAttack.run>` takes it); ε = 0 is never attacked (its error is the share of
    the unperturbed points that the attack already counts as a success, the clean error of an untargeted attack;
    its result None).

    warm_start : each budget starts from the points found at the previous one (projected onto the new ball),
        which saves iterations and keeps the curve monotone for the line-searched attack.
    double_init : Algorithm 1's second start, for nonlinear models: at every budget the attack also runs from Π_Φ
        of the ``pool`` point that the model scores most confidently in another class
        (:func:`other_class_start`; the pool is the model's own training data in the paper, X itself when not
        given), and each point keeps the better of the two runs (:func:`better_of`).
    """
    eps = sorted(float(e) for e in eps)
    model.check_feature_names(X)
    X = check_X(X)
    second = other_class_start(model, attack.objective, X if pool is None else pool, y) if double_init else None
    errors, results, previous = [], [], None
    for e in eps:
        if e == 0:
            errors.append(float(np.mean(attack.clean_success(model, X, y))))
            results.append(None)
            continue
        current = attack.with_eps(e)
        result = current.run(model, X, y, init=previous if warm_start else None)
        if second is not None:
            result = better_of(result, current.run(model, X, y, init=second))
        results.append(result)
        errors.append(result.error)
        previous = result.x_adv
    return SecurityCurve(eps, errors, results)

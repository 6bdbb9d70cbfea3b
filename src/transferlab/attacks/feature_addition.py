"""Greedy feature addition: the paper's ℓ1 evasion on binary features (DREBIN, Section 5.1.2), batched.

On binary data with x0 ⪯ x′ ⪯ 1 and ‖x′ − x0‖₁ ≤ ε (ε = number of added features), the steepest ascent step of
Algorithm 1 for p = 1 (Eq. 15) changes the coordinate with the largest gradient, and on binary features a step is
one added feature. So each iteration adds, for every attacked point at once, the ``features_per_step`` allowed
features (absent, manipulable) with the largest positive gradient of A; a point stops when no allowed feature has
a positive gradient or its budget is spent. For a linear model the gradient is constant, so the greedy choice is
the optimum of the linear objective over the feasible set (tested against brute force).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, StrictInt

from transferlab.attacks.base import EvasionAttack
from transferlab.attacks.constraints import Binary, FeatureAdditionOnly, Intersection
from transferlab.attacks.settings import MAX_STEPS, AttackSettings
from transferlab.models.base import Classifier


class FeatureAdditionSettings(AttackSettings):
    """``features_per_step``: features added per iteration (1 is the exact greedy coordinate ascent; more is faster
    for nonlinear models, whose gradient is recomputed after every step)."""

    features_per_step: StrictInt = Field(1, ge=1, le=MAX_STEPS)


class FeatureAddition(EvasionAttack):
    """Add up to ε features per point, greedily by the gradient of A (norm 1, binary, feature addition only);
    settings: :class:`FeatureAdditionSettings`.

    A :class:`~transferlab.attacks.constraints.Mask` among ``constraints`` restricts the features that may be
    added; FeatureAdditionOnly and Binary are always part of the domain.
    """

    Settings = FeatureAdditionSettings
    settings: FeatureAdditionSettings
    norms = ("1",)  # ε counts added features

    def __init__(self, norm: Any = 1, eps: float = 1.0, **rest: Any) -> None:
        super().__init__(norm, eps, **rest)
        kinds = {type(c) for c in self.constraints}
        self.constraints = tuple(self.constraints) + tuple(
            piece() for piece in (FeatureAdditionOnly, Binary) if piece not in kinds)

    @property
    def continues_its_path(self) -> bool:
        """Whether the attack at budget k + 1 started from its points at budget k gives what it gives from x0:
        greedy addition of one feature per step continues its own path (a warm start is then free)."""
        return self.settings.features_per_step == 1

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        lb, ub = domain.bounds(x0)
        x = domain.project(start, x0)
        budget = int(self.eps + 1e-9)
        n = x.shape[0]
        flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
        added = flat(x - x0.round()).clamp_min(0).sum(1).round().long()
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)[added < budget]
        while active.numel():
            xa = x[active]
            grad = flat(self.objective.gradient(model, xa, labels[active]))
            allowed = (flat(xa) < 0.5) & (flat(ub[active]) >= 1)
            score = torch.where(allowed, grad, torch.full_like(grad, -float("inf")))
            room = (budget - added[active]).clamp_max(self.settings.features_per_step)
            k = int(room.max())
            values, index = score.topk(min(k, score.shape[1]), dim=1)
            take = (values > 0) & (torch.arange(values.shape[1], device=x.device)[None, :] < room[:, None])
            step = torch.zeros_like(grad).scatter(1, index, take.to(grad.dtype))
            x[active] = (flat(xa) + step).reshape(xa.shape)
            n_added = take.sum(1)
            added[active] += n_added
            iterations[active] += 1
            active = active[(n_added > 0) & (added[active] < budget)]
        return x, iterations

"""Projected gradient descent with a fixed step (Madry et al. 2018), optional random start, batched."""

from __future__ import annotations

import torch
from pydantic import Field, StrictBool, StrictInt

from transferlab.attacks.base import EvasionAttack, movable, steepest_direction, uniform_start
from transferlab.attacks.constraints import Intersection
from transferlab.attacks.settings import MAX_SEED, MAX_STEPS, AttackSettings
from transferlab.models.base import Classifier


class PGDSettings(AttackSettings):
    """``steps`` projected steps of size ``step_size`` (times ε when ``relative_step``); ``random_start`` draws
    the first point uniformly in the ℓ∞ ball of radius ε with ``seed``."""

    steps: StrictInt = Field(50, ge=1, le=MAX_STEPS)
    step_size: float = Field(0.1, gt=0, allow_inf_nan=False)
    relative_step: StrictBool = True
    random_start: StrictBool = False
    seed: StrictInt = Field(0, ge=0, le=MAX_SEED)


class PGD(EvasionAttack):
    """x ← Π_Φ(x + α d(∇A(x))) for ``steps`` steps, α = ``step_size``·ε (relative) by default; with
    ``random_start`` the first point is drawn uniformly in the ℓ∞ ball of radius ε, then projected, using ``seed``.
    Keeps, per sample, the iterate with the highest objective (settings: :class:`PGDSettings`)."""

    Settings = PGDSettings
    settings: PGDSettings

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.settings
        lb, ub = domain.bounds(x0)
        alpha = s.step_size * self.eps if s.relative_step else s.step_size
        x = uniform_start(start, x0, self.eps, s.seed, domain) if s.random_start else start.clone()
        best, best_value = x.clone(), self.objective.value(model, x, labels)
        for _ in range(s.steps):
            grad = self.objective.gradient(model, x, labels)
            x = domain.project(x + alpha * self._direction(x, grad, lb, ub), x0)
            value = self.objective.value(model, x, labels)
            better = value > best_value
            best = torch.where(better.reshape(-1, *([1] * (x.dim() - 1))), x, best)
            best_value = torch.where(better, value, best_value)
        return best, torch.full((x.shape[0],), s.steps, device=x.device)

    def _direction(self, x: torch.Tensor, grad: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
        return steepest_direction(grad, self.p, movable(x, grad, lb, ub))

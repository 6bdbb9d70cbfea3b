"""Projected gradient descent with a fixed step (Madry et al. 2018), optional random start, batched."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferlab.attacks.base import EvasionAttack, steepest_direction
from transferlab.attacks.constraints import Intersection
from transferlab.models.base import Classifier


@dataclass
class PGD(EvasionAttack):
    """x ← Π_Φ(x + α d(∇A(x))) for ``steps`` steps, α = ``step_size``·ε (relative) by default; with
    ``random_start`` the first point is drawn uniformly in the ℓ∞ ball of radius ε, then projected, using ``seed``.
    Keeps, per sample, the iterate with the highest objective."""

    steps: int = 50
    step_size: float = 0.1
    relative_step: bool = True
    random_start: bool = False
    seed: int = 0

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        lb, ub = domain.bounds(x0)
        alpha = self.step_size * self.eps if self.relative_step else self.step_size
        x = start.clone()
        if self.random_start:
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1).to(x.device) * self.eps
            x = domain.project(x + noise, x0)
        best, best_value = x.clone(), self.objective.value(model, x, labels)
        for _ in range(self.steps):
            grad = self.objective.gradient(model, x, labels)
            x = domain.project(x + alpha * self._direction(x, grad, lb, ub), x0)
            value = self.objective.value(model, x, labels)
            better = value > best_value
            best = torch.where(better.reshape(-1, *([1] * (x.dim() - 1))), x, best)
            best_value = torch.where(better, value, best_value)
        return best, torch.full((x.shape[0],), self.steps, device=x.device)

    def _direction(self, x: torch.Tensor, grad: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
        return steepest_direction(grad, self.p, self._movable(x, grad, lb, ub))

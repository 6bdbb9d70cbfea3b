"""Momentum iterative FGSM (Dong et al. 2018), a standard transfer-enhancing attack the paper did not use."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferlab.attacks.base import steepest_direction, uniform_start
from transferlab.attacks.constraints import Intersection, lp_norm
from transferlab.attacks.pgd import PGD
from transferlab.models.base import Classifier


@dataclass
class MIFGSM(PGD):
    """g ← μ g + ∇A(x)/‖∇A(x)‖₁;  x ← Π_Φ(x + α d(g)). Step α = ε/steps by default (``step_size=1/steps``).
    With ``random_start`` the first point is drawn uniformly in the ℓ∞ ball of radius ε around the start, then
    projected onto Φ, using ``seed`` (as :class:`PGD` does)."""

    steps: int = 10
    step_size: float = 0.1
    decay: float = 1.0

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.step_size * self.eps if self.relative_step else self.step_size
        x = uniform_start(start, x0, self.eps, self.seed, domain) if self.random_start else start.clone()
        momentum = torch.zeros_like(start)
        shape = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(self.steps):
            grad = self.objective.gradient(model, x, labels)
            momentum = self.decay * momentum + grad / lp_norm(grad, 1).clamp_min(1e-30).reshape(shape)
            x = domain.project(x + alpha * steepest_direction(momentum, self.p), x0)
        return x, torch.full((x.shape[0],), self.steps, device=x.device)

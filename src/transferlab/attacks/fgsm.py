"""Fast gradient (sign) method (Goodfellow et al. 2015): one step of size ε along the steepest direction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferlab.attacks.base import EvasionAttack, steepest_direction
from transferlab.attacks.constraints import Intersection
from transferlab.models.base import Classifier


@dataclass
class FGSM(EvasionAttack):
    """x′ = Π_Φ(x + ε d(∇A(x))): sign(∇A) for ℓ∞ (the classic FGSM), ∇A/‖∇A‖₂ for ℓ2."""

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        grad = self.objective.gradient(model, start, labels)
        x = domain.project(start + self.eps * steepest_direction(grad, self.p), x0)
        return x, torch.ones(x.shape[0], dtype=torch.long, device=x.device)

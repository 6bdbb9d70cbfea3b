"""Fast gradient (sign) method (Goodfellow et al. 2015): one step of size ε along the steepest direction."""

from __future__ import annotations

import torch

from transferlab.attacks.base import EvasionAttack, steepest_direction
from transferlab.attacks.constraints import Intersection
from transferlab.attacks.settings import AttackSettings
from transferlab.models.base import Classifier


class FGSMSettings(AttackSettings):
    """FGSM has no settings of its own: its one step is the budget."""


class FGSM(EvasionAttack):
    """x′ = Π_Φ(x + ε d(∇A(x))): sign(∇A) for ℓ∞ (the classic FGSM), ∇A/‖∇A‖₂ for ℓ2."""

    Settings = FGSMSettings

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        grad = self.objective.gradient(model, start, labels)
        x = domain.project(start + self.eps * steepest_direction(grad, self.p), x0)
        return x, torch.ones(x.shape[0], dtype=torch.long, device=x.device)

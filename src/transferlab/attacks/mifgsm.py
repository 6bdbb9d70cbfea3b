"""Momentum iterative FGSM (Dong et al. 2018), a standard transfer-enhancing attack the paper did not use."""

from __future__ import annotations

import torch
from pydantic import Field, StrictInt

from transferlab.attacks.base import steepest_direction, uniform_start
from transferlab.attacks.constraints import Intersection, lp_norm
from transferlab.attacks.pgd import PGD, PGDSettings
from transferlab.attacks.settings import MAX_STEPS
from transferlab.models.base import Classifier


class MIFGSMSettings(PGDSettings):
    """PGD's settings with fewer steps by default, and ``decay`` μ, the weight of the past gradients."""

    steps: StrictInt = Field(10, ge=1, le=MAX_STEPS)
    decay: float = Field(1.0, ge=0, allow_inf_nan=False)


class MIFGSM(PGD):
    """g ← μ g + ∇A(x)/‖∇A(x)‖₁;  x ← Π_Φ(x + α d(g)). Step α = ``step_size`` · ε (``relative_step``, the default;
    ``step_size`` itself otherwise): 0.1 ε by default, ε/steps at the default 10 steps — set ``step_size`` with
    ``steps`` to keep α = ε/steps.
    With ``random_start`` the first point is drawn uniformly in the ℓ∞ ball of radius ε around the start, then
    projected onto Φ, using ``seed`` (as :class:`PGD` does). As in Dong et al. (2018) it returns the last iterate
    and steps along the momentum over every coordinate (the projection clips what the box blocks), where
    :class:`PGD` keeps the best iterate and leaves blocked coordinates out of its direction: the momentum is what
    makes MI-FGSM's points transfer, and it accumulates the raw gradient. Settings: :class:`MIFGSMSettings`."""

    Settings = MIFGSMSettings
    settings: MIFGSMSettings

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.settings
        alpha = s.step_size * self.eps if s.relative_step else s.step_size
        x = uniform_start(start, x0, self.eps, s.seed, domain) if s.random_start else start.clone()
        momentum = torch.zeros_like(start)
        shape = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(s.steps):
            grad = self.objective.gradient(model, x, labels)
            momentum = s.decay * momentum + grad / lp_norm(grad, 1).clamp_min(1e-30).reshape(shape)
            x = domain.project(x + alpha * steepest_direction(momentum, self.p), x0)
        return x, torch.full((x.shape[0],), s.steps, device=x.device)

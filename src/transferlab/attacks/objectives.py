"""Attacker objectives A(x) to maximise (paper Eq. 1), computed from a classifier's scores, batched.

Untargeted: A = loss(f(x), y) — the margin max_{c≠y} f_c − f_y (the authors' choice, the default) or the
cross-entropy. Targeted towards class t: A = −loss(f(x), t), i.e. f_t − max_{c≠t} f_c for the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferlab.models.base import Classifier
from transferlab.models.losses import get_loss


@dataclass(frozen=True)
class Objective:
    """What the attack maximises. ``labels`` passed to :meth:`value` are the true labels (untargeted) or the
    target classes (``targeted=True``)."""

    loss: str = "margin"
    targeted: bool = False

    def __post_init__(self) -> None:
        get_loss(self.loss)  # validates the name

    @property
    def sign(self) -> float:
        return -1.0 if self.targeted else 1.0

    def value(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A(x) for each row (no gradient)."""
        with torch.no_grad():
            return self.sign * get_loss(self.loss)(model.scores(X.to(model.dtype)), labels).to(X.dtype)

    def gradient(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """∇_x A(x) for each row, in one batched call."""
        return self.sign * model.input_gradient_tensor(X, labels, self.loss).to(X.dtype)

    def success(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Whether the attack succeeded per row (misclassified, or classified as the target)."""
        with torch.no_grad():
            predicted = model.scores(X.to(model.dtype)).argmax(1)
        return predicted == labels if self.targeted else predicted != labels

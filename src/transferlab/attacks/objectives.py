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

    def of_scores(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A for each row from the model's decision scores (n, n_classes): the one definition of the objective,
        used by :meth:`value` and by attacks that compute the scores along a path themselves. (The margin of two
        classes, f_{1−y} − f_y, is computed directly: the same subtraction as the general formula, in fewer
        operations.)"""
        if self.loss == "margin" and scores.shape[1] == 2:
            difference = scores[:, 1] - scores[:, 0]
            return torch.where(labels == 0, difference, -difference) * self.sign
        return self.sign * get_loss(self.loss)(scores, labels)

    def success_of_predicted(self, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Whether the attack succeeded per row, from the model's predicted class indices (see :meth:`success`)."""
        return predicted == labels if self.targeted else predicted != labels

    def convex_for_linear_models(self, n_classes: int) -> bool:
        """Whether A is convex in the scores, or a monotone function of one affine margin, so that for a model
        whose scores are affine in x the maximiser of the linearised objective over a convex set never lowers A:
        the untargeted margin (a maximum of affine functions) and cross-entropy (log-sum-exp minus an affine
        function) are convex; with two classes every objective is a monotone function of f_1 − f_0."""
        return n_classes == 2 or not self.targeted

    def value(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A(x) for each row (no gradient)."""
        with torch.no_grad():
            return self.of_scores(model.scores(X.to(model.dtype)), labels).to(X.dtype)

    def gradient(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """∇_x A(x) for each row, in one batched call."""
        return self.sign * model.input_gradient_tensor(X, labels, self.loss).to(X.dtype)

    def success(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Whether the attack succeeded per row (misclassified, or classified as the target)."""
        with torch.no_grad():
            Xm = X.to(model.dtype)
            return self.success_of_predicted(model.predicted_index(Xm, model.scores(Xm)), labels)


class RememberedScores:
    """An objective for one attack run that scores each tensor once: :meth:`value` and :meth:`success` of a tensor
    already scored (the same object, not modified in place since) reuse its scores. An attack's run scores its
    starting points for the start value and its crafted points for both the final value and the success; with this
    each of them is scored once (a model whose prediction is not the argmax of its scores, a wrapped multiclass SVC,
    computes its prediction once more: :meth:`~transferlab.models.base.Classifier.predicted_index`). Only for the
    span of one run on one model (the model must not change meanwhile); everything else is the wrapped objective's.
    """

    def __init__(self, objective: Objective, model: Classifier, keep: int = 2) -> None:
        self.objective, self.model, self.keep = objective, model, keep
        self._seen: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def __getattr__(self, name: str):  # loss, targeted, sign, of_scores, ...
        return getattr(self.objective, name)

    def scores(self, model: Classifier, X: torch.Tensor) -> torch.Tensor:
        if model is self.model:
            for tensor, version, scores in self._seen:
                if tensor is X and tensor._version == version:
                    return scores
        with torch.no_grad():
            scores = model.scores(X.to(model.dtype))
        if model is self.model:
            self._seen = [(X, X._version, scores)] + self._seen[:self.keep - 1]
        return scores

    def value(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.objective.of_scores(self.scores(model, X), labels).to(X.dtype)

    def success(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores = self.scores(model, X)
        with torch.no_grad():
            return self.objective.success_of_predicted(model.predicted_index(X, scores), labels)

    def gradient(self, model: Classifier, X: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.objective.gradient(model, X, labels)

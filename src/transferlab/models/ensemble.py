"""Ensemble surrogates: several fitted models attacked as one (a transfer-enhancing choice of attackers).

The ensemble's scores are the mean of its members' scores, so for a binary problem its margin loss is the mean of
the members' margin losses. Its input gradient is the mean of the members' loss gradients (``combine="loss"``), or
the mean of their gradients each scaled to unit ℓ2 norm per point (``combine="normalized"``), so that a member with
large scores (a network's logits) does not drown the others. S, R and V are defined for it as for any model: R is
the alignment of its (combined) gradient with the target's, V the variance of its loss over resampled ensembles.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from transferlab.errors import ConfigError
from transferlab.models.base import Classifier, NotDifferentiableError
from transferlab.models.losses import get_loss

COMBINE = ("loss", "normalized")


class Ensemble(Classifier):
    """A surrogate made of ``members`` (classifiers, fitted or not: :meth:`fit` fits each on the same data)."""

    #: sparse data goes to the members as it is (each densifies it or not, as its class does)
    accepts_sparse = True

    def __init__(self, members: Sequence[Classifier], combine: str = "loss", device: str = "cpu",
                 batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        if len(members) < 2:
            raise ConfigError("an ensemble needs at least two members")
        if combine not in COMBINE:
            raise ConfigError(f"ensemble combine must be one of {', '.join(COMBINE)}, got {combine!r}")
        for member in members:
            if not member.differentiable:
                raise NotDifferentiableError(f"{type(member).__name__} has no input gradient and cannot be part of "
                                             "an ensemble surrogate")
        self.members = list(members)
        self.combine = combine
        fitted = [m for m in self.members if hasattr(m, "n_classes_")]
        if len(fitted) == len(self.members):
            self._adopt_shape()

    def _adopt_shape(self) -> None:
        classes = {m.n_classes_ for m in self.members}
        features = {m.n_features_in_ for m in self.members}
        if len(classes) != 1 or len(features) != 1:
            raise ConfigError("ensemble members must be fitted on the same data (same classes and features)")
        self.n_classes_, self.n_features_in_ = classes.pop(), features.pop()

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        for member in self.members:
            member.fit(X, y)
        self._adopt_shape()

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.scores(X.to(device=m.torch_device, dtype=m.dtype)).to(self.dtype)
                            for m in self.members]).mean(0)

    def input_gradient_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        get_loss(loss)
        grads = []
        for member in self.members:
            g = member.input_gradient_tensor(X.to(device=member.torch_device, dtype=member.dtype), y, loss)
            g = g.to(device=X.device, dtype=self.dtype)
            if self.combine == "normalized":
                norm = g.reshape(g.shape[0], -1).norm(dim=1).clamp_min(1e-30)
                g = g / norm.reshape(-1, *([1] * (g.dim() - 1)))
            grads.append(g)
        return torch.stack(grads).mean(0)

    def get_params(self) -> dict[str, Any]:
        return {"members": self.members, "combine": self.combine, "device": self.device,
                "batch_size": self.batch_size}

"""Ensemble surrogates: several fitted models attacked as one (a transfer-enhancing choice of attackers).

The ensemble's scores are the mean of its members' scores, s(x) = (1/M) Σ_m f_m(x), and what an attack maximises
(the paper's Eq. 1 with the model's loss ℓ, margin or cross-entropy) is, by ``combine``:

- ``"loss"`` (the default): A(x) = ℓ(s(x), y), the loss of the averaged scores: what the attacks evaluate for any
  model. :meth:`Ensemble.input_gradient` is its exact gradient, by autograd through the members' scores. For the
  binary margin loss, which is linear in the scores, A is also the mean of the members' losses (and ∇A the mean
  of their gradients); for the multiclass margin (a max over classes) and the cross-entropy it is not, and only
  ∇ℓ(s(x), y) is the gradient of A.
- ``"normalized"``: A(x) = (1/M) Σ_m ℓ(f_m(x), y) / ‖∇ℓ(f_m(x), y)‖₂, each member's loss in units of its own
  gradient's ℓ2 norm (for the margin loss, to first order, the member's ℓ2 distance to its decision boundary), so
  that a member with large scores (a network's logits) does not drown the others; a member whose gradient is 0 at
  x adds 0. The direction the attacks follow, :meth:`Ensemble.input_gradient`, is the mean of the members' unit
  gradients (1/M) Σ_m ∇ℓ_m/‖∇ℓ_m‖: the gradient of A with the normalisers ‖∇ℓ_m‖ held at their value at x. It
  is the exact gradient of A where the normalisers do not vary — the margin loss of linear models and of ReLU
  networks (piecewise linear: almost everywhere) — and a first-order approximation of it otherwise (an RBF SVM's
  margin, any cross-entropy). :meth:`Ensemble.loss` and :meth:`Ensemble.loss_tensor` evaluate this A, so an
  attack's line search and its reported objective measure what its steps climb.

S, R and V are defined for an ensemble as for any model: R is the alignment of its gradient with the target's, V
the variance of its loss (the A above) over resampled ensembles.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from transferlab.errors import ConfigError
from transferlab.models.base import Classifier, NotDifferentiableError
from transferlab.models.estimator import Estimator
from transferlab.models.losses import get_loss

COMBINE = ("loss", "normalized")


class Ensemble(Estimator):
    """A surrogate made of ``members`` (classifiers, fitted or not: :meth:`fit` fits each on the same data, with the
    same labels). An ensemble of fitted members is fitted: it takes their ``classes_`` and shapes.

    Unlike the registry's models, the constructor checks its arguments (at least two differentiable members, a
    known ``combine``): an ensemble is assembled from models, not searched over."""

    #: sparse data goes to the members as it is (each densifies it or not, as its class does)
    accepts_sparse = True

    def __init__(self, members: Sequence[Classifier], combine: str = "loss", device: str = "cpu",
                 batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        # stored as given (a list stays the same object), so that sklearn.base.clone can rebuild the ensemble
        self.members = members if isinstance(members, list) else list(members)
        self.combine = combine
        self.check_params()
        if all(hasattr(m, "n_classes_") for m in self.members):
            self._adopt_shape()

    def check_params(self) -> None:
        """The common parameters, at least two differentiable members and a known ``combine`` (checked by the
        constructor and again by ``fit``, after a ``set_params``)."""
        super().check_params()
        if len(self.members) < 2:
            raise ConfigError("an ensemble needs at least two members")
        if self.combine not in COMBINE:
            raise ConfigError(f"ensemble combine must be one of {', '.join(COMBINE)}, got {self.combine!r}")
        for member in self.members:
            if not getattr(member, "differentiable", False):
                raise NotDifferentiableError(f"{type(member).__name__} has no input gradient and cannot be part of "
                                             "an ensemble surrogate")

    def _adopt_shape(self) -> None:
        classes = {m.n_classes_ for m in self.members}
        features = {m.n_features_in_ for m in self.members}
        if len(classes) != 1 or len(features) != 1:
            raise ConfigError("ensemble members must be fitted on the same data (same classes and features)")
        self.n_classes_, self.n_features_in_ = classes.pop(), features.pop()
        labels = [np.asarray(getattr(m, "classes_", np.arange(self.n_classes_))) for m in self.members]
        if any(not np.array_equal(labels[0], other) for other in labels[1:]):
            raise ConfigError("ensemble members must be fitted on the same labels (their classes_ differ)")
        self.classes_ = labels[0]
        names = [[str(n) for n in m.feature_names_in_] for m in self.members if hasattr(m, "feature_names_in_")]
        if any(other != names[0] for other in names[1:]):
            raise ConfigError("ensemble members must be fitted on the same columns (their feature_names_in_ differ)")
        if names:  # members fitted on a table: the ensemble checks a table's columns as they do
            self.feature_names_in_ = np.asarray(names[0], dtype=object)

    def _fit(self, X: Any, y: np.ndarray) -> None:
        labels = self.classes_[y]  # each member is fitted on the labels themselves, so its classes_ are the same
        for member in self.members:
            member.fit(X, labels)
        self._adopt_shape()

    @property
    def rows_per_call(self) -> int:
        """The fewest rows per call of the ensemble and its members: its gradients (``combine="loss"``) pass a
        block through every member under autograd, where a member cannot cut it smaller itself."""
        return min([self.batch_size] + [member.rows_per_call for member in self.members])

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.scores(X.to(device=m.torch_device, dtype=m.dtype)).to(self.dtype)
                            for m in self.members]).mean(0)

    # ---- the objective and its gradient --------------------------------------------------------------------
    @property
    def loss_of_scores(self) -> bool:
        """Whether the objective is the loss of the (averaged) scores: ``combine="loss"``."""
        return self.combine == "loss"

    def input_gradient_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        """The gradient of the ensemble's objective A (see the module docstring): for ``combine="loss"`` the
        exact gradient of ℓ(mean scores, y), for ``"normalized"`` the mean of the members' unit gradients."""
        if self.combine == "loss":
            return super().input_gradient_tensor(X, y, loss)  # autograd through the mean of the members' scores
        return self._normalized(X, y, loss, with_gradient=True)[1]

    def loss_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        """The ensemble's objective A per row (see the module docstring), no gradient."""
        if self.combine == "loss":
            return super().loss_tensor(X, y, loss)
        return self._normalized(X, y, loss, with_gradient=False)[0].detach()

    def loss(self, X: Any, y: Any, loss: str = "margin") -> np.ndarray:
        """The ensemble's objective A per row, as float64: ℓ of the averaged scores (``combine="loss"``), or the
        mean of the members' losses each divided by the ℓ2 norm of its gradient (``"normalized"``)."""
        if self.combine == "loss":
            return super().loss(X, y, loss)
        self._check_fitted()
        get_loss(loss)
        X = self._checked_input(X)
        labels = torch.as_tensor(self._label_indices(y, X.shape[0]), device=self.torch_device)
        if sp.issparse(X):
            blocks = [(self._to_tensor(X[rows].toarray()), labels[rows]) for rows in self._sparse_blocks(X, True)]
        else:
            blocks = [(self._to_tensor(X), labels)]
        parts = [self.loss_tensor(xb, yb, loss).double().cpu() for xb, yb in blocks]
        return torch.cat(parts).numpy() if parts else np.zeros(0)

    def _normalized(self, X: torch.Tensor, y: torch.Tensor, loss: str,
                    with_gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(A, the mean of the members' unit gradients) of ``combine="normalized"`` for the rows of X: each member's
        loss and gradient come from one autograd pass per batch of its rows."""
        self._require_gradient()
        loss_fn = get_loss(loss)
        X = X.detach().to(self.dtype)
        terms, grads = [], []
        for member in self.members:
            values, member_grads = [], []
            rows = member.rows_per_call
            for i in range(0, X.shape[0], rows):
                xb = X[i:i + rows].to(device=member.torch_device, dtype=member.dtype)
                yb = y[i:i + rows].to(member.torch_device)
                xb.requires_grad_(True)
                with torch.enable_grad():
                    value = loss_fn(member.scores(xb), yb)
                    (grad,) = torch.autograd.grad(value.sum(), xb)
                values.append(value.detach().to(device=X.device, dtype=self.dtype))
                member_grads.append(grad.to(device=X.device, dtype=self.dtype))
            if not values:
                return torch.zeros(0, dtype=self.dtype, device=X.device), torch.zeros_like(X)
            value, grad = torch.cat(values), torch.cat(member_grads)
            norm = grad.reshape(grad.shape[0], -1).norm(dim=1)
            terms.append(torch.where(norm > 0, value / norm.clamp_min(1e-300), torch.zeros_like(value)))
            if with_gradient:
                grads.append(grad / norm.clamp_min(1e-30).reshape(-1, *([1] * (grad.dim() - 1))))
        objective = torch.stack(terms).mean(0)
        return objective, (torch.stack(grads).mean(0) if with_gradient else None)

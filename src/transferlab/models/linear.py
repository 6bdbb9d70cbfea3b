"""Linear classifiers trained by scikit-learn and re-expressed in torch: f(x) = W x + b.

The torch side holds the fitted weights (it does not refit), so scores equal scikit-learn's
``decision_function`` and input gradients come from autograd for the whole batch at once.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import SVC

from transferlab.models.estimator import Estimator
from transferlab.models.limits import Layout
from transferlab.models.params import Param

#: a penalty or regularisation strength
POSITIVE = Param("real", 0, open_low=True)


def binary_to_two_columns(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A binary model's single score row f as two rows [0, f] (the convention of the classifier interface)."""
    if coef.shape[0] == 1:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.r_[0.0, intercept]
    return coef, intercept


def linear_parameters(estimator: Any) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with W of shape (n_classes, n_features) from a fitted scikit-learn linear model or linear SVC,
    possibly inside a OneVsRestClassifier."""
    if isinstance(estimator, OneVsRestClassifier):
        rows = [linear_parameters(e) for e in estimator.estimators_]
        return np.vstack([w[1] for w, _ in rows]), np.array([b[1] for _, b in rows])
    coef = np.asarray(estimator.coef_.toarray() if hasattr(estimator.coef_, "toarray") else estimator.coef_,
                      dtype=np.float64)
    intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
    return binary_to_two_columns(coef.reshape(-1, coef.shape[-1]), intercept)


class LinearClassifier(Estimator):
    """Base of the scikit-learn-trained linear models; ``estimator_`` keeps the fitted scikit-learn object (trained
    on the label indices 0..C−1; ``classes_`` holds the labels)."""

    accepts_sparse = True

    def _make_estimator(self, n_classes: int) -> Any:
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.estimator_ = self._make_estimator(self.n_classes_).fit(X, y)
        self.set_parameters(*linear_parameters(self.estimator_))

    def set_parameters(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Use the linear model f(x) = coef @ x + intercept (coef: (n_classes, n_features))."""
        self.coef_ = torch.as_tensor(coef, dtype=self.dtype, device=self.torch_device)
        self.intercept_ = torch.as_tensor(intercept, dtype=self.dtype, device=self.torch_device)
        self.n_classes_, self.n_features_in_ = self.coef_.shape
        if len(getattr(self, "classes_", ())) != self.n_classes_:  # weights set by hand: classes 0..C−1
            self.classes_ = np.arange(self.n_classes_)

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.coef_.T + self.intercept_

    @property
    def affine_scores(self) -> bool:
        return True

    def affine_input(self) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        return self.coef_, self.intercept_, lambda z: z

    def state_layouts(self) -> list[Layout]:
        return [{"coef": ((self.n_classes_, self.n_features_in_), "float"), "intercept": ((self.n_classes_,), "float")}]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"coef": self.coef_, "intercept": self.intercept_}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.set_parameters(state["coef"].cpu().numpy(), state["intercept"].cpu().numpy())


class LinearSVM(LinearClassifier):
    """Linear SVM (hinge loss, penalty C), trained by libsvm through scikit-learn's ``SVC(kernel="linear")``,
    as in the authors' secml; one-vs-rest for more than two classes."""

    PARAMS = {"C": POSITIVE}

    def __init__(self, C: float = 1.0, device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.C = C

    def _make_estimator(self, n_classes: int) -> Any:
        svc = SVC(kernel="linear", C=self.C)
        return svc if n_classes == 2 else OneVsRestClassifier(svc)


class Logistic(LinearClassifier):
    """Logistic regression (penalty ½‖w‖² + C Σ log-loss, intercept not penalised), scikit-learn's lbfgs solver
    run to a tight tolerance so the fitted weights are a stationary point (poisoning differentiates through it)."""

    PARAMS = {"C": POSITIVE, "max_iter": Param("int", 1)}

    def __init__(self, C: float = 1.0, max_iter: int = 10_000, device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.C = C
        self.max_iter = max_iter

    def _make_estimator(self, n_classes: int) -> Any:
        return LogisticRegression(C=self.C, solver="lbfgs", tol=1e-8, max_iter=self.max_iter)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        super()._fit(X, y)
        self.n_iter_ = self.estimator_.n_iter_  # lbfgs iterations, as scikit-learn's estimators with max_iter report


class Ridge(LinearClassifier):
    """Ridge classifier: least squares on labels in {−1, +1} with penalty α‖w‖², scikit-learn's
    ``RidgeClassifier`` (closed-form solver)."""

    PARAMS = {"alpha": Param("real", 0)}

    def __init__(self, alpha: float = 1.0, device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.alpha = alpha

    def _make_estimator(self, n_classes: int) -> Any:
        # dense data: the closed-form (Cholesky) solver; sparse data: conjugate gradient, run to a tight tolerance
        return RidgeClassifier(alpha=self.alpha, tol=1e-10)

"""Logistic regression poisoning (paper Eqs. 10–12): the family, its batched implicit gradient, its retraining
session (Newton's method in the n×n dual form, warm-started) and its loss (the mean logistic loss)."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from transferlab.attacks.poisoning.base import Family, GramSession, LinearParams
from transferlab.attacks.poisoning.solvers import augment, logistic_newton, regularised_solver, signed


class LogisticFamily(Family):
    """Logistic regression: L_tr = ½‖w‖² + C Σ_i log(1 + exp(−ỹ_i f_i)); validation loss: mean logistic loss.

    Paper Eqs. 10–12 with z_i = σ_i (1 − σ_i), σ_i = σ(ỹ_i f_i), x̃ = (x, 1):
    ∇²_θ L_tr = C Σ_i z_i x̃_i x̃_iᵀ + diag(1, …, 1, 0) (the bias gets its own row and column, unpenalised);
    ∇_{x_c}∇_θ L_tr = C (ỹ_c (σ_c − 1) [I; 0] + z_c x̃_c wᵀ).

    ``fit`` trains with scikit-learn's lbfgs to a tight tolerance (warm-started from the previous fit);
    :meth:`newton_fit` — what the session uses — by Newton's method (:func:`logistic_newton`), the same optimum to
    a far tighter tolerance, cold from zero or warm from previous parameters, in the n×n dual form.
    """

    def __init__(self, C: float) -> None:
        self.C = C
        self._estimator = LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=10_000, warm_start=True)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearParams:
        self._estimator.fit(X, y)
        return LinearParams(self._estimator.coef_[0].copy(), float(self._estimator.intercept_[0]))

    def newton_fit(self, X: np.ndarray, y: np.ndarray, warm: LinearParams | None = None,
                   gram: np.ndarray | None = None) -> LinearParams:
        """The same model by Newton's method, from ``warm`` (or zero), with the Gram matrix X Xᵀ if given."""
        w0, b0 = (np.zeros(X.shape[1]), 0.0) if warm is None else (warm.w, warm.b)
        w, b, _ = logistic_newton(X, signed(y), self.C, w0, b0, gram)
        return LinearParams(w, b)

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, -signed(y) * scores)))

    def validation_gradient(self, params: LinearParams, X_val: np.ndarray, y_val: np.ndarray,
                            scores_val: np.ndarray | None = None) -> np.ndarray:
        """∇_θ L_val, θ = (w, b)."""
        yv = signed(y_val)
        scores_val = params.scores(X_val) if scores_val is None else scores_val
        return augment(X_val).T @ (-yv * (1 - expit(yv * scores_val))) / len(yv)

    def gradients(self, params: LinearParams, X: np.ndarray, y: np.ndarray, indices, X_val: np.ndarray,
                  y_val: np.ndarray, gram: np.ndarray | None = None,
                  scores_val: np.ndarray | None = None) -> np.ndarray:
        """Eq. 12 for every point of ``indices``: −(∇_{x_c}∇_θ L_tr)ᵀ v with the one solve
        v = (∇²_θ L_tr)⁻¹ ∇_θ L_val (:func:`regularised_solver`; ``gram`` = X Xᵀ and the validation scores may be
        passed precomputed)."""
        indices = np.asarray(indices, dtype=int).reshape(-1)
        yt = signed(y)
        sigma = expit(yt * params.scores(X))
        z = sigma * (1 - sigma)
        v = regularised_solver(X, self.C * z, gram)(self.validation_gradient(params, X_val, y_val, scores_val))
        Xc = X[indices]
        along_v = (yt[indices] * (sigma[indices] - 1))[:, None] * v[None, :-1]
        along_w = (z[indices] * (Xc @ v[:-1] + v[-1]))[:, None] * params.w[None, :]
        return -self.C * (along_v + along_w)

    def inert_points(self, params: LinearParams, X: np.ndarray, y: np.ndarray, labels: np.ndarray, lb: float,
                     ub: float) -> np.ndarray:
        """The box corner of the largest margin ỹ f(x) for each label: a point there adds C·σ(−ỹf)·x̃ to the
        training gradient, which underflows to nothing once the margin passes ~40 (and is tiny well before), so
        the model stays as it was — nearly, where the regularisation keeps ‖w‖₁ and so the corner's margin small
        (``logistic_l`` on the embedded MNIST89: margin 5.4, the validation loss moved by 7e-4 of itself). A
        feature of weight 0 does not change the margin: it takes the box's value nearest 0, so that a feature no
        training row uses stays unused (and the attack on the live features, :func:`live_features
        <transferlab.attacks.poisoning.attack.live_features>`, finds the same points)."""
        w, neutral = params.w, min(max(0.0, lb), ub)
        high = np.where(w > 0, ub, np.where(w < 0, lb, neutral))
        low = np.where(w > 0, lb, np.where(w < 0, ub, neutral))
        return np.where((labels == 1)[:, None], high[None, :], low[None, :])

    def session(self, X_train, y_train, X_val, y_val) -> LogisticSession:
        return LogisticSession(self, X_train, y_train, X_val, y_val)


class LogisticSession(GramSession):
    """Retraining by Newton's method on the cached Gram matrix, warm-started from the previous fit."""

    family: LogisticFamily

    def train(self, X: np.ndarray, y: np.ndarray, G: np.ndarray, warm: LinearParams | None) -> LinearParams:
        return self.family.newton_fit(X, y, warm=warm, gram=G)

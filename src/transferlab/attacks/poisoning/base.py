"""What poisoning needs of a surrogate family (paper Eqs. 5–7): train, score, the attacker's validation loss, the
batched implicit gradient, and a retraining session for moving poisoning rows.

The attacker adds (x_c, y_c) to the training set to maximise the validation loss A = L(D_val, ŵ) of the model
ŵ trained on D_tr ∪ {(x_c, y_c)}. By the implicit function theorem on the training stationarity (KKT) conditions
(Eq. 7),

    ∇_{x_c} A = ∇_{x_c} L − (∇_{x_c} ∇_θ L_tr)ᵀ (∇²_θ L_tr)⁻¹ ∇_θ L_val,

where the first term is zero here (the validation loss does not depend on x_c directly). Every poisoning point
shares the one solve v = (∇²_θ L_tr)⁻¹ ∇_θ L_val, so a family computes the gradients of any set of training points
at once (:meth:`Family.gradients`; one point is a batch of one). Labels are y ∈ {0, 1}, used as ỹ = 2y − 1;
θ = (w, b) with an unpenalised intercept, as scikit-learn trains these models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from transferlab.attacks.poisoning.solvers import signed


@dataclass
class LinearParams:
    """A linear model f(x) = x·w + b."""

    w: np.ndarray
    b: float

    def scores(self, X: np.ndarray) -> np.ndarray:
        return X @ self.w + self.b


class Family:
    """A surrogate family: ``fit`` (training), ``loss`` (the attacker's validation loss from scores),
    ``gradients`` (the implicit gradient of A with respect to a set of training points) and ``session``."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any:
        raise NotImplementedError

    def scores(self, params: Any, X: np.ndarray) -> np.ndarray:
        return params.scores(X)

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        """The attacker's validation loss A, the mean over the validation points, from their scores."""
        raise NotImplementedError

    def validation_loss(self, params: Any, X_val: np.ndarray, y_val: np.ndarray) -> float:
        return self.loss(self.scores(params, X_val), y_val)

    def gradients(self, params: Any, X: np.ndarray, y: np.ndarray, indices: Any, X_val: np.ndarray,
                  y_val: np.ndarray) -> np.ndarray:
        """∇_{x_c} A for every training point c of (X, y) in ``indices`` (the poisoning points), at ``params``
        fitted on (X, y): shape (len(indices), d), all from one solve with the Hessian."""
        raise NotImplementedError

    def inert_points(self, params: Any, X: np.ndarray, y: np.ndarray, labels: np.ndarray, lb: float,
                     ub: float) -> np.ndarray:
        """Positions in the box [lb, ub] where points of the given ``labels`` leave the model ``params`` (fitted on
        the training points X, y and possibly others) unchanged, or nearly. Here, for the SVMs: for each label the
        training points of that label the model classifies with the largest margin — non-support vectors (margin
        above 1, α = 0), which the SVM ignores exactly. A larger attacker can place its extra points there and keep
        what a smaller one's points did."""
        margins = signed(y) * self.scores(params, X)
        out = np.empty((len(labels), X.shape[1]))
        for label in (0, 1):
            rows = np.flatnonzero(labels == label)
            if rows.size:
                own = np.flatnonzero(y == label)
                best = own[np.argsort(-margins[own], kind="stable")]
                out[rows] = X[best[np.arange(rows.size) % best.size]]
        return out

    def validation_losses(self, params: Any, X: np.ndarray, y: np.ndarray, c: int, candidates: np.ndarray,
                          X_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
        """A after retraining with x_c replaced by each candidate row (the sequential line search's evaluations);
        ``params`` is the model fitted on (X, y), which a family may reuse."""
        out = np.empty(len(candidates))
        X = X.copy()
        for k, candidate in enumerate(candidates):
            X[c] = candidate
            out[k] = self.validation_loss(self.fit(X, y), X_val, y_val)
        return out

    def session(self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray) -> Session:
        """A :class:`Session` for batched poisoning of (X_train, y_train) against (X_val, y_val)."""
        return Session(self, X_train, y_train, X_val, y_val)


@dataclass
class SessionFit:
    """A surrogate trained on the clean rows plus the poisoning rows (X_p, y_p) of a :class:`Session`; ``cache``
    holds what a family keeps for the gradients (kernel blocks, the Hessian solver, validation scores)."""

    params: Any
    X_p: np.ndarray
    y_p: np.ndarray
    cache: dict


class Session:
    """Batched poisoning's view of a family: the clean training set (X_train, y_train) and the validation set stay
    fixed, the poisoning rows move. ``fit(X_p, y_p, warm)`` trains on the union (``warm``: a previous
    :class:`SessionFit` to start from, where the family can), ``validation_loss(fit)`` is A, ``gradients(fit)``
    the (n_p, d) implicit gradients of all poisoning rows. This generic version stacks the arrays and calls the
    family; the closed-form families override it with cached kernels. ``fits`` counts the retrainings."""

    def __init__(self, family: Family, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
                 y_val: np.ndarray) -> None:
        self.family = family
        self.X_train, self.y_train, self.X_val, self.y_val = X_train, np.asarray(y_train), X_val, np.asarray(y_val)
        self.n = len(X_train)
        self.fits = 0

    def stack(self, X_p: np.ndarray, y_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.vstack([self.X_train, X_p]), np.r_[self.y_train, y_p]

    def fit(self, X_p: np.ndarray, y_p: np.ndarray, warm: SessionFit | None = None) -> SessionFit:
        self.fits += 1
        params = self.family.fit(*self.stack(X_p, y_p))
        return SessionFit(params, X_p, y_p, {"scores_val": self.family.scores(params, self.X_val)})

    def validation_loss(self, fit: SessionFit) -> float:
        return self.family.loss(fit.cache["scores_val"], self.y_val)

    def validation_error(self, fit: SessionFit) -> float:
        """The surrogate's error on the validation set (it predicts class 1 where its score is positive)."""
        return float(np.mean((fit.cache["scores_val"] > 0) != (self.y_val == 1)))

    def gradients(self, fit: SessionFit) -> np.ndarray:
        X, y = self.stack(fit.X_p, fit.y_p)
        return self.family.gradients(fit.params, X, y, np.arange(self.n, len(y)), self.X_val, self.y_val)


class GramSession(Session):
    """The linear families' session: the Gram matrix X Xᵀ of the clean rows is cached, a fit adds the poisoning
    rows' inner products (:meth:`gram`) and solves in the n×n dual form; the validation scores are cached."""

    def __init__(self, family: Family, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
                 y_val: np.ndarray) -> None:
        super().__init__(family, X_train, y_train, X_val, y_val)
        self.gram_train = X_train @ X_train.T

    def gram(self, X_p: np.ndarray) -> np.ndarray:
        n, k = self.n, len(X_p)
        G = np.empty((n + k, n + k))
        G[:n, :n] = self.gram_train
        cross = X_p @ self.X_train.T
        G[n:, :n], G[:n, n:], G[n:, n:] = cross, cross.T, X_p @ X_p.T
        return G

    def fit(self, X_p: np.ndarray, y_p: np.ndarray, warm: SessionFit | None = None) -> SessionFit:
        self.fits += 1
        X, y = self.stack(X_p, y_p)
        G = self.gram(X_p)
        params = self.train(X, y, G, None if warm is None else warm.params)
        return SessionFit(params, X_p, y_p, {"gram": G, "scores_val": params.scores(self.X_val)})

    def train(self, X: np.ndarray, y: np.ndarray, G: np.ndarray, warm: LinearParams | None) -> LinearParams:
        """The family's model on (X, y) from its Gram matrix G (``warm``: the previous fit's parameters)."""
        raise NotImplementedError

    def gradients(self, fit: SessionFit) -> np.ndarray:
        X, y = self.stack(fit.X_p, fit.y_p)
        return self.family.gradients(fit.params, X, y, np.arange(self.n, len(y)), self.X_val, self.y_val,
                                     gram=fit.cache["gram"], scores_val=fit.cache["scores_val"])

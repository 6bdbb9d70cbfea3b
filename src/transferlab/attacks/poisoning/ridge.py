"""Ridge poisoning (Xiao et al. 2015, Jagielski et al. 2018): the family, its batched implicit gradient, its
retraining session (one n×n Cholesky in the dual form) and its loss (the mean squared error)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from transferlab.attacks.poisoning.base import Family, GramSession, LinearParams
from transferlab.attacks.poisoning.solvers import augment, regularised_solver, signed
from transferlab.errors import ConfigError


@dataclass
class RidgeParams(LinearParams):
    factor: Any = None      # Cholesky factor of A = X̃ᵀX̃ + α diag(1, …, 1, 0), reused by gradient and line search
    rhs: Any = None         # X̃ᵀ ỹ
    solve: Any = None       # or, from a session's dual fit: g ↦ (A / α)⁻¹ g


class RidgeFamily(Family):
    """Ridge classifier: L_tr = Σ_i (f_i − ỹ_i)² + α‖w‖²; validation loss: mean squared error.
    ∇²_θ L_tr = 2A with A = X̃ᵀX̃ + α diag(1, …, 1, 0); ∇_{x_c}∇_θ L_tr = 2 ((f_c − ỹ_c) [I; 0] + x̃_c wᵀ).

    Training is one Cholesky factorisation of A, which the gradient reuses (the Hessian is the same matrix), and
    the sequential line search evaluates all candidates x_c → u at once from that factor: A changes by
    u uᵀ − x̃_c x̃_cᵀ, a rank-two (Woodbury) update per candidate.
    """

    def __init__(self, alpha: float) -> None:
        if not alpha > 0:
            raise ConfigError(f"ridge poisoning needs a regularised surrogate (alpha > 0), got alpha={alpha}: the "
                              "implicit gradient solves with the regularised Hessian")
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeParams:
        Xa = augment(X)
        A = Xa.T @ Xa
        A[np.arange(X.shape[1]), np.arange(X.shape[1])] += self.alpha
        rhs = Xa.T @ signed(y)
        factor = scipy.linalg.cho_factor(A, check_finite=False)
        theta = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
        return RidgeParams(theta[:-1], float(theta[-1]), factor, rhs)

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((scores - signed(y)) ** 2))

    def gradients(self, params: RidgeParams, X: np.ndarray, y: np.ndarray, indices, X_val: np.ndarray,
                  y_val: np.ndarray, gram: np.ndarray | None = None,
                  scores_val: np.ndarray | None = None) -> np.ndarray:
        """−(∇_{x_c}∇_θ L_tr)ᵀ (2A)⁻¹ ∇_θ L_val for every point of ``indices``, from the training factor of A (or
        the session's dual solve, or one built on ``gram``)."""
        indices = np.asarray(indices, dtype=int).reshape(-1)
        scores_val = params.scores(X_val) if scores_val is None else scores_val
        residual_val = scores_val - signed(y_val)
        grad_val = 2 * augment(X_val).T @ residual_val / len(residual_val)
        if params.factor is not None:
            v = scipy.linalg.cho_solve(params.factor, grad_val, check_finite=False) / 2
        else:
            solve = params.solve or regularised_solver(X, np.full(len(X), 1.0 / self.alpha), gram)
            v = solve(grad_val) / (2 * self.alpha)                     # A = α (P + X̃ᵀX̃ / α)
        Xc = X[indices]
        r_c = params.scores(Xc) - signed(y)[indices]
        return -2 * (r_c[:, None] * v[None, :-1] + (Xc @ v[:-1] + v[-1])[:, None] * params.w[None, :])

    def inert_points(self, params: RidgeParams, X: np.ndarray, y: np.ndarray, labels: np.ndarray, lb: float,
                     ub: float) -> np.ndarray:
        """Points with zero residual, f(x) = ỹ: adding them leaves the ridge solution unchanged (their term of the
        training gradient vanishes there). From the training point whose score is nearest ỹ, the segment towards
        the box corner where f grows fastest in the needed direction, cut where f (linear) reaches ỹ; the corner
        itself (nearly inert) where f cannot reach ỹ in the box."""
        f = params.scores(X)
        out = np.empty((len(labels), X.shape[1]))
        for row, target in enumerate(signed(labels)):
            i = int(np.argmin(np.abs(f - target)))
            gap = target - f[i]
            corner = np.where(params.w * gap > 0, ub, np.where(params.w * gap < 0, lb, X[i]))
            rise = params.w @ (corner - X[i])
            t = min(1.0, gap / rise) if rise != 0 else 0.0
            out[row] = X[i] + t * (corner - X[i])
        return out

    def validation_losses(self, params: RidgeParams, X, y, c, candidates, X_val, y_val) -> np.ndarray:
        solve = lambda b: scipy.linalg.cho_solve(params.factor, b, check_finite=False)  # noqa: E731
        yc, old = signed(y)[c], np.r_[X[c], 1.0]
        U = augment(candidates)                                      # (K, p)
        Ai_u = solve(U.T).T                                          # A⁻¹ u_k
        Ai_old = solve(old)                                          # A⁻¹ x̃_c
        Ai_r = solve(params.rhs - yc * old)[None, :] + yc * Ai_u     # A⁻¹ (rhs − ỹ_c x̃_c + ỹ_c u_k)
        # (A + u uᵀ − x̃ x̃ᵀ)⁻¹ r = A⁻¹r − A⁻¹[u x̃] S⁻¹ [u x̃]ᵀ A⁻¹ r, S = diag(1, −1) + [u x̃]ᵀ A⁻¹ [u x̃]
        s11 = 1 + (U * Ai_u).sum(1)
        s12 = Ai_u @ old
        s22 = -1 + old @ Ai_old
        t1, t2 = (U * Ai_r).sum(1), Ai_r @ old
        det = s11 * s22 - s12 * s12
        a1 = (s22 * t1 - s12 * t2) / det
        a2 = (s11 * t2 - s12 * t1) / det
        theta = Ai_r - a1[:, None] * Ai_u - a2[:, None] * Ai_old[None, :]
        scores = X_val @ theta[:, :-1].T + theta[:, -1]
        return np.mean((scores - signed(y_val)[:, None]) ** 2, axis=0)

    def session(self, X_train, y_train, X_val, y_val) -> RidgeSession:
        return RidgeSession(self, X_train, y_train, X_val, y_val)


class RidgeSession(GramSession):
    """Retraining as one n×n Cholesky of the dual form on the cached Gram matrix (no warm start needed)."""

    family: RidgeFamily

    def train(self, X: np.ndarray, y: np.ndarray, G: np.ndarray, warm: LinearParams | None) -> RidgeParams:
        alpha = self.family.alpha
        solve = regularised_solver(X, np.full(len(y), 1.0 / alpha), G)
        theta = solve(augment(X).T @ signed(y)) / alpha
        return RidgeParams(theta[:-1], float(theta[-1]), solve=solve)

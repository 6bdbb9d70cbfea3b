"""Implicit gradients of availability poisoning (paper Eqs. 5–12), per model family.

The attacker adds (x_c, y_c) to the training set to maximise the validation loss A = L(D_val, ŵ) of the model
ŵ trained on D_tr ∪ {(x_c, y_c)}. By the implicit function theorem on the training stationarity (KKT) conditions
(Eq. 7),

    ∇_{x_c} A = ∇_{x_c} L − (∇_{x_c} ∇_θ L_tr)ᵀ (∇²_θ L_tr)⁻¹ ∇_θ L_val,

where the first term is zero here (the validation loss does not depend on x_c directly). Each family solves one
linear system with its Hessian (a Cholesky factorisation, never an explicit inverse) and applies the closed-form
mixed derivative of the poisoning point's own loss term. Labels are y ∈ {0, 1}, used as ỹ = 2y − 1 ∈ {−1, +1};
θ = (w, b) with an unpenalised intercept, as scikit-learn trains these models.

:class:`GenericFamily` computes the same gradient for any training objective that is twice differentiable in torch
(Hessian-vector products and conjugate gradient), used to cross-check the closed forms.

Every poisoning point shares the one solve v = (∇²_θ L_tr)⁻¹ ∇_θ L_val, so :meth:`Family.gradients` returns the
gradients of many points at once from it. :meth:`Family.session` gives what batched poisoning needs: a fixed clean
training set, moving poisoning rows, and what depends only on the clean rows cached (their Gram or kernel matrix and
that against the validation set), so one retraining costs only the new rows' kernel values and the solver — a few
warm-started Newton steps in the n×n dual form (logistic), one n×n Cholesky (ridge), and for the SVMs an exact
active-set solve of the dual warm-started from the previous fit (libsvm on the cached kernel as a checked fallback).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.linalg
import torch
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from transferlab.errors import ConfigError
from transferlab.models.kernel import rbf_kernel


def signed(y: np.ndarray) -> np.ndarray:
    """Labels {0, 1} as {−1, +1}."""
    return 2.0 * np.asarray(y, dtype=np.float64) - 1.0


def _augment(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))])


def regularised_solver(X: np.ndarray, D: np.ndarray, G: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """g ↦ (P + X̃ᵀ diag(D) X̃)⁻¹ g, P = diag(1, …, 1, 0), X̃ = (X, 1), for g of shape (d + 1,) or (d + 1, k): the
    Hessian of the linear families (an unpenalised intercept), D ≥ 0.

    With more features than points (or a Gram matrix G = X Xᵀ given) it solves in the n×n dual form: with
    s = D^½ (X̃ x), M = I + D^½ G D^½ and q = D^½ 1, the w-rows give M s = D^½ X g_w + x_b q, the bias row qᵀ s = g_b,
    and x_w = g_w − Xᵀ D^½ s — one Cholesky of the n×n matrix M instead of the (d+1)×(d+1) Hessian."""
    n, d = X.shape
    if G is None and n > d:
        Xa = _augment(X)
        H = (Xa.T * D) @ Xa
        H[np.arange(d), np.arange(d)] += 1.0
        return lambda g: _solve_symmetric(H, g)
    if G is None:
        G = X @ X.T
    root = np.sqrt(D)
    M = root[:, None] * G * root[None, :]
    M[np.arange(n), np.arange(n)] += 1.0
    factor = scipy.linalg.cho_factor(M, check_finite=False)
    q = root.copy()
    Mq = scipy.linalg.cho_solve(factor, q, check_finite=False)
    qMq = q @ Mq

    def solve(g: np.ndarray) -> np.ndarray:
        g_w, g_b = g[:-1], g[-1]
        a = root[:, None] * (X @ g_w.reshape(d, -1))                  # (n, k)
        Ma = scipy.linalg.cho_solve(factor, a, check_finite=False)
        x_b = (np.reshape(g_b, (1, -1)) - q @ Ma) / qMq               # (1, k)
        s = Ma + Mq[:, None] * x_b
        x_w = g_w.reshape(d, -1) - X.T @ (root[:, None] * s)
        return np.vstack([x_w, x_b]).reshape(g.shape)

    return solve


def _solve_symmetric(H: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """H⁻¹ rhs by Cholesky (LDLᵀ-free fallback to a least-squares solve when H is only semi-definite)."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(H, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(H, rhs, rcond=None)[0]


@dataclass
class LinearParams:
    w: np.ndarray
    b: float

    def scores(self, X: np.ndarray) -> np.ndarray:
        return X @ self.w + self.b


class Family:
    """What poisoning needs of a surrogate: train, score, validation loss, implicit gradient w.r.t. one point."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any:
        raise NotImplementedError

    def scores(self, params: Any, X: np.ndarray) -> np.ndarray:
        return params.scores(X)

    def validation_loss(self, params: Any, X_val: np.ndarray, y_val: np.ndarray) -> float:
        raise NotImplementedError

    def gradient(self, params: Any, X: np.ndarray, y: np.ndarray, c: int, X_val: np.ndarray,
                 y_val: np.ndarray) -> np.ndarray:
        """∇_{x_c} A for the training point of index ``c`` of (X, y) (the poisoning point), at params fitted on X."""
        raise NotImplementedError

    def gradients(self, params: Any, X: np.ndarray, y: np.ndarray, indices: Any, X_val: np.ndarray,
                  y_val: np.ndarray) -> np.ndarray:
        """∇_{x_c} A for every training point c in ``indices``: shape (len(indices), d). The families compute them
        together from one solve with the Hessian; this fallback calls :meth:`gradient` per point."""
        indices = np.asarray(indices, dtype=int).reshape(-1)
        out = np.empty((indices.size, X.shape[1]))
        for k, c in enumerate(indices):
            out[k] = self.gradient(params, X, y, int(c), X_val, y_val)
        return out

    def validation_losses(self, params: Any, X: np.ndarray, y: np.ndarray, c: int, candidates: np.ndarray,
                          X_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
        """A after retraining with x_c replaced by each candidate row (the line search's evaluations); ``params``
        is the model fitted on (X, y), which a family may reuse."""
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
    family; the closed-form families override it with cached kernels."""

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
        return SessionFit(self.family.fit(*self.stack(X_p, y_p)), X_p, y_p, {})

    def validation_loss(self, fit: SessionFit) -> float:
        return self.family.validation_loss(fit.params, self.X_val, self.y_val)

    def gradients(self, fit: SessionFit) -> np.ndarray:
        X, y = self.stack(fit.X_p, fit.y_p)
        return self.family.gradients(fit.params, X, y, np.arange(self.n, len(y)), self.X_val, self.y_val)


def logistic_newton(X: np.ndarray, yt: np.ndarray, C: float, w: np.ndarray, b: float, G: np.ndarray | None = None,
                    tol: float | None = None, max_iter: int = 100) -> tuple[np.ndarray, float, int]:
    """Minimise ½‖w‖² + C Σ_i log(1 + exp(−ỹ_i (x_i·w + b))) by Newton's method with a backtracking (Armijo) line
    search from (w, b), each step solved by :func:`regularised_solver` (in the n×n dual form when n ≤ d, with the
    Gram matrix ``G`` if given). Stops when the largest gradient entry is below ``tol`` (default 1e-9·max(1, C),
    far below scikit-learn's lbfgs tolerance): the implicit gradients assume a stationary point. Returns
    (w, b, Newton steps); from a nearby warm start a few steps suffice (quadratic convergence)."""
    tol = 1e-9 * max(1.0, C) if tol is None else tol
    if G is None and len(X) <= X.shape[1]:
        G = X @ X.T
    w, b = np.array(w, dtype=np.float64), float(b)
    f = X @ w + b
    objective = 0.5 * (w @ w) + C * np.logaddexp(0.0, -yt * f).sum()
    steps = 0
    for steps in range(max_iter + 1):
        sigma = expit(yt * f)
        r = -yt * (1 - sigma)                                  # ∂ log-loss / ∂f
        g = np.r_[w + C * (X.T @ r), C * r.sum()]
        if np.abs(g).max() <= tol or steps == max_iter:
            break
        step = regularised_solver(X, C * sigma * (1 - sigma), G)(g)
        dw, db = step[:-1], step[-1]
        u = X @ dw + db
        decrement = g @ step
        ww, wd, dd = w @ w, w @ dw, dw @ dw
        t = 1.0
        while True:
            trial = 0.5 * (ww - 2 * t * wd + t * t * dd) + C * np.logaddexp(0.0, -yt * (f - t * u)).sum()
            if trial <= objective - 1e-4 * t * decrement or t < 1e-12:
                break
            t /= 2
        if t < 1e-12:  # no descent left at this precision: stationary as far as floating point can tell
            break
        w, b, objective = w - t * dw, b - t * db, trial
        f = X @ w + b
    return w, b, steps


class LogisticFamily(Family):
    """Logistic regression: L_tr = ½‖w‖² + C Σ_i log(1 + exp(−ỹ_i f_i)); validation loss: mean logistic loss.

    Paper Eqs. 10–12 with z_i = σ_i (1 − σ_i), σ_i = σ(ỹ_i f_i), x̃ = (x, 1):
    ∇²_θ L_tr = C Σ_i z_i x̃_i x̃_iᵀ + diag(1, …, 1, 0) (the bias gets its own row and column, unpenalised);
    ∇_{x_c}∇_θ L_tr = C (ỹ_c (σ_c − 1) [I; 0] + z_c x̃_c wᵀ).

    ``fit`` trains with scikit-learn's lbfgs to a tight tolerance (warm-started from the previous fit, as before);
    :meth:`newton_fit` — what batched poisoning's sessions use — by Newton's method (:func:`logistic_newton`), the
    same optimum to a far tighter tolerance, cold from zero or warm from previous parameters, in the n×n dual form.
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

    def validation_loss(self, params: LinearParams, X_val: np.ndarray, y_val: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, -signed(y_val) * params.scores(X_val))))

    def validation_gradient(self, params: LinearParams, X_val: np.ndarray, y_val: np.ndarray,
                            scores_val: np.ndarray | None = None) -> np.ndarray:
        """∇_θ L_val, θ = (w, b)."""
        yv = signed(y_val)
        scores_val = params.scores(X_val) if scores_val is None else scores_val
        return _augment(X_val).T @ (-yv * (1 - expit(yv * scores_val))) / len(yv)

    def gradient(self, params, X, y, c, X_val, y_val):
        yt = signed(y)
        sigma = expit(yt * params.scores(X))
        z = sigma * (1 - sigma)
        Xa = _augment(X)
        H = self.C * (Xa.T * z) @ Xa
        H[np.arange(X.shape[1]), np.arange(X.shape[1])] += 1.0
        v = _solve_symmetric(H, self.validation_gradient(params, X_val, y_val))
        x_c = Xa[c]
        return -self.C * (yt[c] * (sigma[c] - 1) * v[:-1] + z[c] * (x_c @ v) * params.w)

    def gradients(self, params, X, y, indices, X_val, y_val, gram=None, scores_val=None):
        indices = np.asarray(indices, dtype=int).reshape(-1)
        yt = signed(y)
        sigma = expit(yt * params.scores(X))
        z = sigma * (1 - sigma)
        v = regularised_solver(X, self.C * z, gram)(self.validation_gradient(params, X_val, y_val, scores_val))
        Xc = X[indices]
        along_v = (yt[indices] * (sigma[indices] - 1))[:, None] * v[None, :-1]
        along_w = (z[indices] * (Xc @ v[:-1] + v[-1]))[:, None] * params.w[None, :]
        return -self.C * (along_v + along_w)

    def session(self, X_train, y_train, X_val, y_val):
        return _LinearSession(self, X_train, y_train, X_val, y_val)


class _LinearSession(Session):
    """Logistic and ridge: the Gram matrix X Xᵀ of the clean rows is cached; a fit adds the poisoning rows' inner
    products and solves in the n×n dual form (logistic: Newton warm-started from the previous fit)."""

    def __init__(self, family, X_train, y_train, X_val, y_val):
        super().__init__(family, X_train, y_train, X_val, y_val)
        self.gram_train = X_train @ X_train.T

    def gram(self, X_p: np.ndarray) -> np.ndarray:
        n, k = self.n, len(X_p)
        G = np.empty((n + k, n + k))
        G[:n, :n] = self.gram_train
        cross = X_p @ self.X_train.T
        G[n:, :n], G[:n, n:], G[n:, n:] = cross, cross.T, X_p @ X_p.T
        return G

    def fit(self, X_p, y_p, warm=None):
        self.fits += 1
        X, y = self.stack(X_p, y_p)
        G = self.gram(X_p)
        if isinstance(self.family, LogisticFamily):
            params = self.family.newton_fit(X, y, warm=None if warm is None else warm.params, gram=G)
        else:
            alpha = self.family.alpha
            solve = regularised_solver(X, np.full(len(y), 1.0 / alpha), G)
            theta = solve(_augment(X).T @ signed(y)) / alpha
            params = RidgeParams(theta[:-1], float(theta[-1]), solve=solve)
        return SessionFit(params, X_p, y_p, {"gram": G, "scores_val": params.scores(self.X_val)})

    def validation_loss(self, fit):
        scores, yv = fit.cache["scores_val"], signed(self.y_val)
        if isinstance(self.family, LogisticFamily):
            return float(np.mean(np.logaddexp(0.0, -yv * scores)))
        return float(np.mean((scores - yv) ** 2))

    def gradients(self, fit):
        X, y = self.stack(fit.X_p, fit.y_p)
        return self.family.gradients(fit.params, X, y, np.arange(self.n, len(y)), self.X_val, self.y_val,
                                     gram=fit.cache["gram"], scores_val=fit.cache["scores_val"])


@dataclass
class RidgeParams(LinearParams):
    factor: Any = None      # Cholesky factor of A = X̃ᵀX̃ + α diag(1, …, 1, 0), reused by gradient and line search
    rhs: Any = None         # X̃ᵀ ỹ
    solve: Any = None       # or, from a session's dual fit: g ↦ (A / α)⁻¹ g


class RidgeFamily(Family):
    """Ridge classifier: L_tr = Σ_i (f_i − ỹ_i)² + α‖w‖²; validation loss: mean squared error (Xiao et al. 2015,
    Jagielski et al. 2018). ∇²_θ L_tr = 2A with A = X̃ᵀX̃ + α diag(1, …, 1, 0);
    ∇_{x_c}∇_θ L_tr = 2 ((f_c − ỹ_c) [I; 0] + x̃_c wᵀ).

    Training is one Cholesky factorisation of A, which the gradient reuses (the Hessian is the same matrix), and
    the line search evaluates all candidates x_c → u at once from that factor: A changes by u uᵀ − x̃_c x̃_cᵀ, a
    rank-two (Woodbury) update per candidate.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeParams:
        Xa = _augment(X)
        A = Xa.T @ Xa
        A[np.arange(X.shape[1]), np.arange(X.shape[1])] += self.alpha
        rhs = Xa.T @ signed(y)
        factor = scipy.linalg.cho_factor(A, check_finite=False)
        theta = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
        return RidgeParams(theta[:-1], float(theta[-1]), factor, rhs)

    def validation_loss(self, params: LinearParams, X_val: np.ndarray, y_val: np.ndarray) -> float:
        return float(np.mean((params.scores(X_val) - signed(y_val)) ** 2))

    def gradient(self, params, X, y, c, X_val, y_val):
        residual_val = params.scores(X_val) - signed(y_val)
        grad_val = 2 * _augment(X_val).T @ residual_val / len(residual_val)
        v = scipy.linalg.cho_solve(params.factor, grad_val, check_finite=False) / 2   # (2A)⁻¹ ∇_θ L_val
        x_c = np.r_[X[c], 1.0]
        r_c = params.scores(X[c:c + 1])[0] - signed(y)[c]
        return -2 * (r_c * v[:-1] + (x_c @ v) * params.w)

    def gradients(self, params, X, y, indices, X_val, y_val, gram=None, scores_val=None):
        indices = np.asarray(indices, dtype=int).reshape(-1)
        scores_val = params.scores(X_val) if scores_val is None else scores_val
        residual_val = scores_val - signed(y_val)
        grad_val = 2 * _augment(X_val).T @ residual_val / len(residual_val)
        if params.factor is not None:
            v = scipy.linalg.cho_solve(params.factor, grad_val, check_finite=False) / 2
        else:
            solve = params.solve or regularised_solver(X, np.full(len(X), 1.0 / self.alpha), gram)
            v = solve(grad_val) / (2 * self.alpha)                     # A = α (P + X̃ᵀX̃ / α)
        Xc = X[indices]
        r_c = params.scores(Xc) - signed(y)[indices]
        return -2 * (r_c[:, None] * v[None, :-1] + (Xc @ v[:-1] + v[-1])[:, None] * params.w[None, :])

    def session(self, X_train, y_train, X_val, y_val):
        return _LinearSession(self, X_train, y_train, X_val, y_val)

    def validation_losses(self, params, X, y, c, candidates, X_val, y_val):
        solve = lambda b: scipy.linalg.cho_solve(params.factor, b, check_finite=False)  # noqa: E731
        yc, old = signed(y)[c], np.r_[X[c], 1.0]
        U = _augment(candidates)                                     # (K, p)
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


@dataclass
class KernelParams:
    X: np.ndarray          # the training points
    beta: np.ndarray       # dual coefficients ỹ_i α_i for every training point (0 for non-support vectors)
    b: float
    kernel: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def scores(self, X: np.ndarray) -> np.ndarray:
        support = self.beta != 0
        return self.kernel(X, self.X[support]) @ self.beta[support] + self.b


class BorderedSolver:
    """x = [[K_SS, 1], [1ᵀ, 0]]⁻¹ rhs, the KKT system of an SVM's margin vectors: by a Cholesky factor of K_SS and
    the Schur complement of the border (K_SS β + b 1 = r, 1ᵀβ = r_b ⇒ b = (1ᵀK_SS⁻¹r − r_b) / 1ᵀK_SS⁻¹1), or, when
    K_SS is not numerically positive definite, a symmetric indefinite solve of the whole system; ``solve`` returns
    None when that is singular or ill-conditioned too (duplicated points)."""

    def __init__(self, K_SS: np.ndarray) -> None:
        self.factor = self.system = None
        m = len(K_SS)
        try:
            factor = scipy.linalg.cho_factor(K_SS, check_finite=False)
            pivots = np.abs(np.diag(factor[0]))
            if m and pivots.min() ** 2 > 1e-12 * np.abs(np.diag(K_SS)).max():
                self.factor = factor
                self.c = scipy.linalg.cho_solve(factor, np.ones(m), check_finite=False)
                self.s = self.c.sum()
        except np.linalg.LinAlgError:
            pass
        if self.factor is None:
            system = np.empty((m + 1, m + 1))
            system[:m, :m], system[:m, m], system[m, :m], system[m, m] = K_SS, 1.0, 1.0, 0.0
            self.system = system

    def solve(self, rhs: np.ndarray) -> np.ndarray | None:
        if self.factor is not None:
            a = scipy.linalg.cho_solve(self.factor, rhs[:-1], check_finite=False)
            b = (a.sum() - rhs[-1]) / self.s
            out = np.r_[a - b * self.c, b]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
                try:
                    out = scipy.linalg.solve(self.system, rhs, assume_a="sym", check_finite=False)
                except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning, ValueError):
                    return None
        return out if np.all(np.isfinite(out)) else None


def svm_dual_active_set(K: np.ndarray, yt: np.ndarray, C: float, alpha: np.ndarray,
                        max_iter: int = 50) -> tuple[np.ndarray, float, np.ndarray, BorderedSolver] | None:
    """The exact solution (β = ỹ α, b) of the SVM dual, min ½ βᵀKβ − ỹᵀβ s.t. 1ᵀβ = 0, 0 ≤ α ≤ C, by the
    primal-dual active-set method started from the partition of ``alpha`` (a previous solution: points at 0, at C,
    and free). Each iteration solves the KKT system of the free points, K_SS β_S + b = ỹ_S − K_SE β_E, 1ᵀβ = 0,
    then moves every violator — a free point whose α leaves [0, C], a point at 0 with ỹf < 1, one at C with
    ỹf > 1 — to the other side; it stops when none is left, which are the KKT conditions: the optimum, to the
    precision of the linear solve. From a nearby solution (a warm start) that takes a few iterations of an
    (|S| + 1)-square solve and one product with K. Returns (β, b, the free set S, its :class:`BorderedSolver`),
    or None when it does not converge in ``max_iter`` iterations or meets a singular system (no free point,
    duplicated points); the caller then uses libsvm."""
    n = len(yt)
    eps = 1e-9
    free = (alpha > 0) & (alpha < C)
    upper = alpha >= C
    for _ in range(max_iter):
        S, E = np.flatnonzero(free), np.flatnonzero(upper)
        if S.size == 0:
            return None
        beta_E = C * yt[E]
        rhs = np.r_[yt[S] - K[np.ix_(S, E)] @ beta_E, -beta_E.sum()]
        solver = BorderedSolver(K[np.ix_(S, S)])
        solution = solver.solve(rhs)
        if solution is None:
            return None
        beta = np.zeros(n)
        beta[E], beta[S], b = beta_E, solution[:-1], float(solution[-1])
        alpha_S = yt[S] * beta[S]
        margin = yt * (K @ beta + b) - 1
        to_zero, to_upper = S[alpha_S < -eps * C], S[alpha_S > C * (1 + eps)]
        lower = ~free & ~upper
        enter = np.flatnonzero((lower & (margin < -eps)) | (upper & (margin > eps)))
        if to_zero.size == 0 and to_upper.size == 0 and enter.size == 0:
            if np.abs(margin[S]).max() > 1e-7:   # the solve was not accurate: do not claim an exact optimum
                return None
            beta[S] = yt[S] * np.clip(alpha_S, 0.0, C)
            return beta, b, S, solver
        free[to_zero], free[to_upper], upper[to_upper] = False, False, True
        free[enter], upper[enter] = True, False
    return None


class SVMFamily(Family):
    """SVM with linear or RBF kernel (Biggio et al. 2012); validation loss: mean hinge loss.

    f(x) = Σ_i β_i K(x_i, x) + b with β_i = ỹ_i α_i. With the sets of margin support vectors S (0 < α < C), error
    vectors (α = C) and the rest held fixed, the KKT conditions K_SS β_S + K_SE β_E + b 1 = ỹ_S, 1ᵀβ = 0 give by
    differentiation [∂β_S; ∂b] = −[[K_SS, 1], [1ᵀ, 0]]⁻¹ [E_S; 0], where E_s = β_c ∇_{x_c} K(x_s, x_c) for s ≠ c and,
    when c ∈ S, E_c = ∇_{x_c} Σ_i β_i K(x_i, x_c). Then ∂f(x_j)/∂x_c = K_jS ∂β_S + ∂b + β_c ∇_{x_c} K(x_j, x_c),
    and ∇_{x_c} A = mean over validation points with positive hinge loss of −ỹ_j ∂f(x_j)/∂x_c.

    The gradient is proportional to β_c except through x_c's own margin condition, so it *vanishes when x_c is not
    a support vector* (α_c = 0: the point is correctly classified outside the margin and does not affect the model).
    In that case we return the gradient of the point's own hinge loss, −ỹ_c ∇f(x_c), which moves it towards the
    margin, where it becomes a support vector and the implicit gradient takes over.

    ``tol`` is libsvm's stopping tolerance (scikit-learn's default 1e-3); tighten it for finite-difference checks.
    """

    def __init__(self, C: float, kernel: str = "linear", gamma: float = 0.01, tol: float = 1e-3) -> None:
        self.C, self.kernel_name, self.gamma, self.tol = C, kernel, gamma, tol

    def kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        if self.kernel_name == "linear":
            return A @ B.T
        return rbf_kernel(A, B, self.gamma)

    def kernel_gradient(self, A: np.ndarray, x: np.ndarray) -> np.ndarray:
        """∇_x K(a, x) for every row a of A: shape (len(A), d)."""
        if self.kernel_name == "linear":
            return A.copy()
        return 2 * self.gamma * (A - x) * self.kernel(A, x[None, :])

    def fit(self, X: np.ndarray, y: np.ndarray) -> KernelParams:
        svc = SVC(kernel=self.kernel_name, C=self.C, gamma=self.gamma, tol=self.tol).fit(X, y)
        beta = np.zeros(len(y))
        beta[svc.support_] = svc.dual_coef_[0]
        return KernelParams(X.copy(), beta, float(svc.intercept_[0]), self.kernel)

    def validation_loss(self, params: KernelParams, X_val: np.ndarray, y_val: np.ndarray) -> float:
        return float(np.mean(np.maximum(0.0, 1 - signed(y_val) * params.scores(X_val))))

    def gradient(self, params, X, y, c, X_val, y_val):
        yt, yv = signed(y), signed(y_val)
        beta, x_c = params.beta, X[c]
        support = np.flatnonzero(beta)
        own = self.kernel_gradient(X[support], x_c).T @ beta[support]  # ∇_{x_c} Σ_i β_i K(x_i, x_c), i ≠ c
        if self.kernel_name == "linear" and beta[c] != 0:
            own = own + beta[c] * x_c  # K(x_c, x_c) = ‖x_c‖²: d/dx_c = 2 x_c, of which x_c is counted above
        if beta[c] == 0:
            return -yt[c] * own
        abs_alpha = np.abs(beta)
        margin = np.flatnonzero((abs_alpha > 1e-8 * self.C) & (abs_alpha < self.C * (1 - 1e-6)))
        active = 1 - yv * params.scores(X_val) > 0
        if not active.any():
            return np.zeros_like(x_c)
        Xv, weights = X_val[active], -yv[active] / len(yv)         # ∂A/∂f_j for validation points with loss
        explicit = beta[c] * (self.kernel_gradient(Xv, x_c).T @ weights)
        if margin.size == 0:
            return explicit
        K = self.kernel(X[margin], X[margin])
        system = np.block([[K, np.ones((margin.size, 1))], [np.ones((1, margin.size)), np.zeros((1, 1))]])
        u = np.r_[self.kernel(Xv, X[margin]).T @ weights, weights.sum()]
        z = np.linalg.lstsq(system, u, rcond=None)[0]              # symmetric system: zᵀ = uᵀ system⁻¹
        E = beta[c] * self.kernel_gradient(X[margin], x_c)         # rows s ≠ c
        where_c = np.flatnonzero(margin == c)
        if where_c.size:
            E[where_c[0]] = own
        return explicit - z[:-1] @ E

    def weighted_kernel_gradient(self, A: np.ndarray, omega: np.ndarray, K_AX: np.ndarray,
                                 Xc: np.ndarray) -> np.ndarray:
        """Σ_a ω_a ∇_x K(a, x) for every row x of Xc, shape (len(Xc), d), given K_AX = K(A, Xc)."""
        if self.kernel_name == "linear":
            return np.tile(omega @ A, (len(Xc), 1))
        W = omega[:, None] * K_AX
        return 2 * self.gamma * (W.T @ A - W.sum(0)[:, None] * Xc)

    def gradients(self, params, X, y, indices, X_val, y_val, K=None, K_val=None, scores_val=None,
                  margin_solver=None):
        """:meth:`gradient` for every point of ``indices`` at once: one solve with the margin vectors' system, the
        kernel sums as matrix products. ``K`` (K(X, X)) and ``K_val`` (K(X_val, X), RBF only) may be passed
        precomputed, and ``margin_solver`` = (S, :class:`BorderedSolver`) of the training solve, used when S is the
        margin set."""
        indices = np.asarray(indices, dtype=int).reshape(-1)
        kern = ((lambda r, c: K[np.ix_(r, c)]) if K is not None else (lambda r, c: self.kernel(X[r], X[c])))
        kern_val = ((lambda r, c: K_val[np.ix_(r, c)]) if K_val is not None
                    else (lambda r, c: self.kernel(X_val[r], X[c])))
        yt, yv = signed(y), signed(y_val)
        beta = params.beta
        Xc, bc = X[indices], beta[indices]
        support = np.flatnonzero(beta)
        own = self.weighted_kernel_gradient(X[support], beta[support], kern(support, indices), Xc)
        if self.kernel_name == "linear":
            own += bc[:, None] * Xc                                    # K(x_c, x_c) = ‖x_c‖²
        out = -yt[indices][:, None] * own                              # non-support vectors: own hinge direction
        on = np.flatnonzero(bc != 0)
        if on.size == 0:
            return out
        scores_val = params.scores(X_val) if scores_val is None else scores_val
        active = np.flatnonzero(1 - yv * scores_val > 0)
        if active.size == 0:
            out[on] = 0.0
            return out
        abs_alpha = np.abs(beta)
        margin = np.flatnonzero((abs_alpha > 1e-8 * self.C) & (abs_alpha < self.C * (1 - 1e-6)))
        weights = -yv[active] / len(yv)
        c_on, X_on, b_on = indices[on], Xc[on], bc[on][:, None]
        K_val_on = None if self.kernel_name == "linear" else kern_val(active, c_on)
        explicit = b_on * self.weighted_kernel_gradient(X_val[active], weights, K_val_on, X_on)
        if margin.size == 0:
            out[on] = explicit
            return out
        if self.kernel_name == "linear":   # K(X_val, X_margin)ᵀ weights without the validation kernel matrix
            u = np.r_[X[margin] @ (X_val[active].T @ weights), weights.sum()]
        else:
            u = np.r_[kern_val(active, margin).T @ weights, weights.sum()]
        if margin_solver is not None and np.array_equal(margin_solver[0], margin):
            solver = margin_solver[1]                                  # the training solve's factorisation
        else:
            solver = BorderedSolver(kern(margin, margin))
        z = solver.solve(u)                                            # one solve for all points
        if z is None:  # singular (e.g. duplicated margin vectors): the minimum-norm solution, as gradient() does
            K_mm = kern(margin, margin)
            system = np.block([[K_mm, np.ones((margin.size, 1))], [np.ones((1, margin.size)), np.zeros((1, 1))]])
            z = np.linalg.lstsq(system, u, rcond=None)[0]
        z = z[:-1]
        correction = b_on * self.weighted_kernel_gradient(X[margin], z, kern(margin, c_on), X_on)
        # a point that is itself a margin vector: its row of E is its own margin condition's derivative
        position = np.searchsorted(margin, c_on).clip(max=margin.size - 1)
        in_margin = margin[position] == c_on
        if in_margin.any():
            self_term = X_on[in_margin] if self.kernel_name == "linear" else 0.0   # ∇_x K(x, y) at y = x
            correction[in_margin] += z[position[in_margin]][:, None] * (
                own[on][in_margin] - b_on[in_margin] * self_term)
        out[on] = explicit - correction
        return out

    def session(self, X_train, y_train, X_val, y_val):
        return _KernelSession(self, X_train, y_train, X_val, y_val)


class _KernelSession(Session):
    """SVMs: the kernel matrix of the clean rows (and, RBF, against the validation set) is cached; a fit computes
    the poisoning rows' kernel values and solves the dual exactly (:func:`svm_dual_active_set`), warm-started from
    the previous fit's support-vector partition — libsvm has no warm start, and with a large C its SMO takes tens
    of milliseconds where a few active-set iterations take one or two. Without a warm start, or when the
    active-set method does not converge, libsvm solves it on the precomputed kernel (``libsvm_fits`` counts these)
    and the active-set method polishes libsvm's solution (tolerance ``tol``) to the exact optimum."""

    def __init__(self, family, X_train, y_train, X_val, y_val):
        super().__init__(family, X_train, y_train, X_val, y_val)
        self.libsvm_fits = 0
        self.linear = family.kernel_name == "linear"
        # the poisoning rows' kernel values against the clean rows and (RBF) the validation rows, in one product
        self.others = X_train if self.linear else np.vstack([X_train, X_val])
        self.sq_others = (self.others ** 2).sum(1)
        self.K_train = self.kernel(X_train, X_train, self.sq_others[:self.n])
        self.K_val_train = None if self.linear else self.kernel(X_val, X_train, self.sq_others[:self.n])

    def kernel(self, A: np.ndarray, B: np.ndarray, B_sq: np.ndarray | None = None) -> np.ndarray:
        if self.linear:
            return A @ B.T
        return rbf_kernel(A, B, self.family.gamma, B_sq)

    def fit(self, X_p, y_p, warm=None):
        self.fits += 1
        family, n, k = self.family, self.n, len(X_p)
        X, y = self.stack(X_p, y_p)
        K = np.empty((n + k, n + k))
        K[:n, :n] = self.K_train
        rows = self.kernel(X_p, self.others, self.sq_others)
        K[n:, :n], K[:n, n:], K[n:, n:] = rows[:, :n], rows[:, :n].T, self.kernel(X_p, X_p)
        yt = signed(y)
        solution = None
        if warm is not None and len(warm.y_p) == k:
            solution = svm_dual_active_set(K, yt, family.C, yt * warm.params.beta)
        if solution is None:
            self.libsvm_fits += 1
            svc = SVC(kernel="precomputed", C=family.C, tol=family.tol).fit(K, y)
            beta = np.zeros(len(y))
            beta[svc.support_] = svc.dual_coef_[0]
            solution = (svm_dual_active_set(K, yt, family.C, yt * beta)
                        or (beta, float(svc.intercept_[0]), None, None))
        beta, b, free, solver = solution
        params = KernelParams(X, beta, b, family.kernel)
        support = np.flatnonzero(beta)
        K_val = None
        if self.linear:
            scores_val = self.X_val @ (X[support].T @ beta[support]) + b
        else:
            K_val = np.hstack([self.K_val_train, rows[:, n:].T])
            scores_val = K_val[:, support] @ beta[support] + b
        cache = {"K": K, "K_val": K_val, "scores_val": scores_val,
                 "margin_solver": None if solver is None else (free, solver)}
        return SessionFit(params, X_p, y_p, cache)

    def validation_loss(self, fit):
        return float(np.mean(np.maximum(0.0, 1 - signed(self.y_val) * fit.cache["scores_val"])))

    def gradients(self, fit):
        X, y = fit.params.X, np.r_[self.y_train, fit.y_p]
        c = fit.cache
        return self.family.gradients(fit.params, X, y, np.arange(self.n, len(y)), self.X_val, self.y_val,
                                     K=c["K"], K_val=c["K_val"], scores_val=c["scores_val"],
                                     margin_solver=c["margin_solver"])


class GenericFamily(Family):
    """Any model whose training objective L_tr(θ; X, y) and validation loss L_val(θ) are twice differentiable in
    torch: v = (∇²_θ L_tr)⁻¹ ∇_θ L_val by conjugate gradient on Hessian-vector products, then
    ∇_{x_c} A = −∇_{x_c} (∇_θ L_tr · v), all by autograd. ``fit`` is delegated to a closed-form family."""

    def __init__(self, fitter: Family, train_objective: Callable, validation_objective: Callable,
                 cg_iterations: int = 500, cg_tol: float = 1e-12) -> None:
        self.fitter = fitter
        self.train_objective = train_objective
        self.validation_objective = validation_objective
        self.cg_iterations, self.cg_tol = cg_iterations, cg_tol

    def fit(self, X, y):
        return self.fitter.fit(X, y)

    def validation_loss(self, params, X_val, y_val):
        return self.fitter.validation_loss(params, X_val, y_val)

    def gradient(self, params, X, y, c, X_val, y_val):
        t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        theta = torch.cat([t(params.w), t([params.b])]).requires_grad_(True)
        Xt, yt, Xv, yv = t(X).requires_grad_(True), t(signed(y)), t(X_val), t(signed(y_val))
        grad_train = torch.autograd.grad(self.train_objective(theta, Xt, yt), theta, create_graph=True)[0]
        grad_val = torch.autograd.grad(self.validation_objective(theta, Xv, yv), theta)[0]

        def hvp(vec: torch.Tensor) -> torch.Tensor:
            return torch.autograd.grad(grad_train, theta, vec, retain_graph=True)[0]

        v = torch.zeros_like(grad_val)
        residual = grad_val.clone()
        direction = residual.clone()
        rs = residual @ residual
        for _ in range(self.cg_iterations):
            Hd = hvp(direction)
            step = rs / (direction @ Hd)
            v = v + step * direction
            residual = residual - step * Hd
            new_rs = residual @ residual
            if new_rs.sqrt() < self.cg_tol * (1 + grad_val.norm()):
                break
            direction = residual + (new_rs / rs) * direction
            rs = new_rs
        mixed = torch.autograd.grad(grad_train, Xt, v.detach())[0]
        return -mixed[c].numpy()

    def gradients(self, params, X, y, indices, X_val, y_val):
        """All rows of the mixed derivative come from the same solve v and one backward pass."""
        indices = np.asarray(indices, dtype=int).reshape(-1)
        return self.gradient(params, X, y, indices, X_val, y_val).reshape(indices.size, X.shape[1])


def logistic_objectives(C: float) -> tuple[Callable, Callable]:
    def train(theta, X, y):
        w, b = theta[:-1], theta[-1]
        return 0.5 * w @ w + C * torch.nn.functional.softplus(-y * (X @ w + b)).sum()

    def validation(theta, X, y):
        return torch.nn.functional.softplus(-y * (X @ theta[:-1] + theta[-1])).mean()

    return train, validation


def ridge_objectives(alpha: float) -> tuple[Callable, Callable]:
    def train(theta, X, y):
        w, b = theta[:-1], theta[-1]
        return ((X @ w + b - y) ** 2).sum() + alpha * w @ w

    def validation(theta, X, y):
        return ((X @ theta[:-1] + theta[-1] - y) ** 2).mean()

    return train, validation


def family_for(model: Any) -> Family:
    """The poisoning family of a transferlab classifier (unfitted is fine: only its hyperparameters are used)."""
    from transferlab.models import KernelSVM, LinearSVM, Logistic, Ridge

    if isinstance(model, Logistic):
        return LogisticFamily(model.C)
    if isinstance(model, Ridge):
        return RidgeFamily(model.alpha)
    if isinstance(model, LinearSVM):
        return SVMFamily(model.C, "linear")
    if isinstance(model, KernelSVM):
        return SVMFamily(model.C, "rbf", model.gamma)
    raise ConfigError(f"poisoning surrogates are logistic, ridge, linear SVM or RBF SVM models; got "
                      f"{type(model).__name__}")

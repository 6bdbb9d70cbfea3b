"""Linear algebra and training solvers shared by the poisoning families: labels as ±1, the Hessian solve of the
linear families (primal or n×n dual form), logistic regression by Newton's method, the bordered KKT system of an
SVM's margin vectors, and the exact active-set solve of the SVM dual."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import scipy.linalg
from scipy.special import expit


def signed(y: np.ndarray) -> np.ndarray:
    """Labels {0, 1} as {−1, +1}."""
    return 2.0 * np.asarray(y, dtype=np.float64) - 1.0


def augment(X: np.ndarray) -> np.ndarray:
    """X̃ = (X, 1): the rows with a constant column for the intercept."""
    return np.hstack([X, np.ones((X.shape[0], 1))])


def solve_symmetric(H: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """H⁻¹ rhs by Cholesky (a least-squares solve when H is only semi-definite)."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(H, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(H, rhs, rcond=None)[0]


def regularised_solver(X: np.ndarray, D: np.ndarray, G: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """g ↦ (P + X̃ᵀ diag(D) X̃)⁻¹ g, P = diag(1, …, 1, 0), X̃ = (X, 1), for g of shape (d + 1,) or (d + 1, k): the
    Hessian of the linear families (an unpenalised intercept), D ≥ 0.

    With more features than points (or a Gram matrix G = X Xᵀ given) it solves in the n×n dual form: with
    s = D^½ (X̃ x), M = I + D^½ G D^½ and q = D^½ 1, the w-rows give M s = D^½ X g_w + x_b q, the bias row qᵀ s = g_b,
    and x_w = g_w − Xᵀ D^½ s — one Cholesky of the n×n matrix M instead of the (d+1)×(d+1) Hessian."""
    n, d = X.shape
    if G is None and n > d:
        Xa = augment(X)
        H = (Xa.T * D) @ Xa
        H[np.arange(d), np.arange(d)] += 1.0
        return lambda g: solve_symmetric(H, g)
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


class BorderedSolver:
    """x = [[K_SS, 1], [1ᵀ, 0]]⁻¹ rhs, the KKT system of an SVM's margin vectors: by a Cholesky factor of K_SS and
    the Schur complement of the border (K_SS β + b 1 = r, 1ᵀβ = r_b ⇒ b = (1ᵀK_SS⁻¹r − r_b) / 1ᵀK_SS⁻¹1), or, when
    K_SS is not numerically positive definite, a symmetric indefinite solve of the whole system; ``solve`` returns
    None when that is singular or ill-conditioned too (duplicated points)."""

    def __init__(self, K_SS: np.ndarray) -> None:
        self.factor = self.system = None
        m = len(K_SS)
        if m:
            # LAPACK directly (dpotrf/dpotrs): an active-set solve factors one such matrix per iteration, and
            # scipy's cho_factor/cho_solve wrappers cost as much as the factorisation at these sizes
            factor, info = scipy.linalg.lapack.dpotrf(K_SS, lower=False, clean=False)
            if info == 0:
                pivots = np.abs(np.diag(factor))
                if pivots.min() ** 2 > 1e-12 * np.abs(np.diag(K_SS)).max():
                    self.factor = factor
                    self.c = scipy.linalg.lapack.dpotrs(factor, np.ones(m))[0]
                    self.s = self.c.sum()
        if self.factor is None:
            system = np.empty((m + 1, m + 1))
            system[:m, :m], system[:m, m], system[m, :m], system[m, m] = K_SS, 1.0, 1.0, 0.0
            self.system = system

    def solve(self, rhs: np.ndarray) -> np.ndarray | None:
        if self.factor is not None:
            a = scipy.linalg.lapack.dpotrs(self.factor, rhs[:-1])[0]
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


def bordered_least_squares(K_SS: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The minimum-norm solution of [[K_SS, 1], [1ᵀ, 0]] x = rhs, where :class:`BorderedSolver` finds the system
    singular (duplicated margin vectors)."""
    m = len(K_SS)
    system = np.block([[K_SS, np.ones((m, 1))], [np.ones((1, m)), np.zeros((1, 1))]])
    return np.linalg.lstsq(system, rhs, rcond=None)[0]


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

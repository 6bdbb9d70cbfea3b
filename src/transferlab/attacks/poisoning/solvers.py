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


class CleanFactor:
    """A Cholesky factor of the clean rows' kernel block K_BB over a base set B of clean training rows, kept by a
    poisoning session across active-set iterations and retrainings: the clean kernel never changes, only the
    poisoning rows and the partition do. :func:`svm_dual_active_set_schur` solves each iteration's KKT system
    against it by a Schur complement over the few rows that differ from B; ``columns`` caches K_BB⁻¹ K_Ba for
    clean rows a outside B and K_BB⁻¹ e_r for rows r of B. ``factor`` is None where K_BB is not numerically
    positive definite (the caller then solves densely)."""

    def __init__(self, K_clean: np.ndarray, B: np.ndarray) -> None:
        self.K_clean, self.B = K_clean, B
        self.position = np.full(len(K_clean), -1)
        self.position[B] = np.arange(B.size)
        self.factor = None
        self.columns: dict[int, np.ndarray] = {}
        if B.size == 0:
            return
        K_BB = K_clean[np.ix_(B, B)]
        try:
            factor = scipy.linalg.cho_factor(K_BB, check_finite=False)
        except np.linalg.LinAlgError:
            return
        if np.abs(np.diag(factor[0])).min() ** 2 > 1e-10 * np.abs(np.diag(K_BB)).max():
            self.factor = factor
            self.one = self.solve(np.ones(B.size))

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """K_BB⁻¹ rhs."""
        return scipy.linalg.cho_solve(self.factor, rhs, check_finite=False)

    def clean_columns(self, rows: np.ndarray) -> np.ndarray:
        """K_BB⁻¹ K_B,rows for clean rows outside B (K_BB⁻¹ e_r for rows r of B), shape (|B|, len(rows)),
        cached per row."""
        missing = [int(r) for r in rows if int(r) not in self.columns]
        if missing:
            missing_arr = np.asarray(missing)
            block = self.K_clean[np.ix_(self.B, missing_arr)]
            inside = self.position[missing_arr] >= 0
            block[:, inside] = 0.0
            block[self.position[missing_arr[inside]], np.flatnonzero(inside)] = 1.0
            solved = self.solve(block)
            for j, r in enumerate(missing):
                self.columns[r] = solved[:, j]
        out = np.empty((self.B.size, len(rows)))
        for j, r in enumerate(rows):
            out[:, j] = self.columns[int(r)]
        return out


class SchurSolver:
    """x = [[K_SS, 1], [1ᵀ, 0]]⁻¹ rhs for a free set S of one retraining, from a :class:`CleanFactor` over B:
    with F = S \\ B (clean rows outside B and poisoning rows) and R = B \\ S, the system on B ∪ F with the
    constraints β_R = 0 (multipliers μ_R) is [[K_BB, U], [Uᵀ, V]] with U = [K_BF, 1, E_R] and
    V = [[K_FF, 1, 0], [1ᵀ, 0, 0], [0, 0, 0]]; its Schur complement V − Uᵀ K_BB⁻¹ U is (|F| + 1 + |R|)-square.
    ``solve`` takes and returns vectors in the order of S (sorted) plus the bias, as :class:`BorderedSolver`;
    None where the small system is singular."""

    def __init__(self, base: CleanFactor, K: np.ndarray, S: np.ndarray, poison_columns: np.ndarray) -> None:
        n = len(base.K_clean)
        self.base, self.S = base, S
        B = base.B
        in_S = np.zeros(len(K), dtype=bool)
        in_S[S] = True
        self.kept = np.flatnonzero(in_S[B])                   # positions in B of the rows still free
        self.removed = np.flatnonzero(~in_S[B])                # positions in B of R
        clean_S = S[S < n]
        self.F = np.r_[clean_S[base.position[clean_S] < 0], S[S >= n]]
        extra_clean = self.F[self.F < n]
        Z_F = np.hstack([base.clean_columns(extra_clean), poison_columns[:, self.F[self.F >= n] - n]])
        Z_R = base.clean_columns(B[self.removed])
        self.Z = np.hstack([Z_F, base.one[:, None], Z_R])
        f, r = self.F.size, self.removed.size
        U = np.zeros((B.size, f + 1 + r))
        U[:, :f] = K[np.ix_(B, self.F)]
        U[:, f] = 1.0
        U[self.removed, f + 1 + np.arange(r)] = 1.0
        self.U = U
        V = np.zeros((f + 1 + r, f + 1 + r))
        V[:f, :f] = K[np.ix_(self.F, self.F)]
        V[:f, f] = V[f, :f] = 1.0
        self.schur = V - U.T @ self.Z
        # where S's rows sit: in B (kept) or in F
        self.order_B = np.searchsorted(S, B[self.kept])
        self.order_F = np.searchsorted(S, self.F)
        try:
            self.lu = scipy.linalg.lu_factor(self.schur, check_finite=False)
            pivots = np.abs(np.diag(self.lu[0]))
            scale = max(1.0, np.abs(self.schur).max())
            if pivots.size and pivots.min() < 1e-12 * scale:
                self.lu = None
        except (np.linalg.LinAlgError, ValueError):
            self.lu = None

    def solve(self, rhs: np.ndarray) -> np.ndarray | None:
        if self.lu is None:
            return None
        B, f = self.base.B, self.F.size
        r_B = np.zeros(B.size)
        r_B[self.kept] = rhs[self.order_B]
        w = self.base.solve(r_B)
        r_q = np.zeros(self.schur.shape[0])
        r_q[:f], r_q[f] = rhs[self.order_F], rhs[-1]
        y = scipy.linalg.lu_solve(self.lu, r_q - self.U.T @ w, check_finite=False)
        x_B = w - self.Z @ y
        out = np.empty(len(rhs))
        out[self.order_B], out[self.order_F], out[-1] = x_B[self.kept], y[:f], y[f]
        return out if np.all(np.isfinite(out)) else None


#: the active-set solve re-factors its clean base when more rows than this differ from it (|F| clean + |R|)
REBASE_ROWS = 32


def svm_dual_active_set_schur(K: np.ndarray, yt: np.ndarray, C: float, alpha: np.ndarray, n: int,
                              base: CleanFactor | None, max_iter: int = 50
                              ) -> tuple[tuple[np.ndarray, float, np.ndarray, SchurSolver] | None, CleanFactor | None]:
    """:func:`svm_dual_active_set` for a training set whose first ``n`` rows are the fixed clean rows (their
    kernel block K[:n, :n] never changes) and the rest poisoning rows: each iteration solves the free set's KKT
    system with a :class:`SchurSolver` against ``base`` (a :class:`CleanFactor` kept by the caller), whose
    factor is reused across iterations and calls; it is rebuilt over the clean free rows when more than
    :data:`REBASE_ROWS` clean rows differ from it. The same iterations and stopping rule as
    :func:`svm_dual_active_set` (the KKT conditions to the precision of the solve: the same optimum); returns
    (that function's result or None, the base to keep)."""
    free = (alpha > 0) & (alpha < C)
    upper = alpha >= C
    eps = 1e-9
    poison_columns = None
    for iteration in range(max_iter):
        S, E = np.flatnonzero(free), np.flatnonzero(upper)
        if S.size == 0:
            return None, base
        clean_S = S[S < n]
        inside = np.count_nonzero(base.position[clean_S] >= 0) if base is not None else 0
        if base is None or base.factor is None or (iteration == 0 and clean_S.size - inside + base.B.size - inside
                                                   > REBASE_ROWS):
            base = CleanFactor(K[:n, :n], clean_S)
            poison_columns = None
            if base.factor is None:
                return None, base
        if poison_columns is None:
            poison_columns = base.solve(K[np.ix_(base.B, np.arange(n, len(K)))])
        solver = SchurSolver(base, K, S, poison_columns)
        beta_E = C * yt[E]
        rhs = np.r_[yt[S] - K[np.ix_(S, E)] @ beta_E, -beta_E.sum()]
        solution = solver.solve(rhs)
        if solution is None:
            return None, base
        beta = np.zeros(len(yt))
        beta[E], beta[S], b = beta_E, solution[:-1], float(solution[-1])
        alpha_S = yt[S] * beta[S]
        margin = yt * (K @ beta + b) - 1
        to_zero, to_upper = S[alpha_S < -eps * C], S[alpha_S > C * (1 + eps)]
        lower = ~free & ~upper
        enter = np.flatnonzero((lower & (margin < -eps)) | (upper & (margin > eps)))
        if to_zero.size == 0 and to_upper.size == 0 and enter.size == 0:
            if np.abs(margin[S]).max() > 1e-7 or abs(beta.sum()) > 1e-7 * max(1.0, C):
                return None, base   # the solve was not accurate: do not claim an exact optimum
            beta[S] = yt[S] * np.clip(alpha_S, 0.0, C)
            return (beta, b, S, solver), base
        free[to_zero], free[to_upper], upper[to_upper] = False, False, True
        free[enter], upper[enter] = True, False
    return None, base

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

    def leading(self, m: int) -> BorderedSolver | None:
        """The solver of the leading m×m block of this one's K_SS, from the same factor (the leading block of an
        upper Cholesky factor is the factor of the leading block); None without a factor or for m = 0."""
        if self.factor is None or m == 0:
            return None
        out = object.__new__(BorderedSolver)
        out.system, out.factor = None, np.asfortranarray(self.factor[:m, :m])
        out.c = scipy.linalg.lapack.dpotrs(out.factor, np.ones(m))[0]
        out.s = out.c.sum()
        return out

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


#: an active-set iteration re-factors the free points' kernel block when more points than this differ from the
#: block it factored last (entered plus left); below, it solves against that factor (:class:`SchurSolver`)
SCHUR_ROWS = 24


class SchurColumns:
    """The border columns of :class:`SchurSolver` for a factored block B of K (a :class:`BorderedSolver` of
    K_BB): u_j = K_Bj for a row j outside B, e_r for a row r of B, the ones vector (id −1); with z_j = K_BB⁻¹ u_j
    and the products M = Uᵀ Z, kept across the iterations of one active-set solve, so that each iteration pays
    only for the rows that changed side for the first time (and, :meth:`moved` to the next solve's matrix, across
    solves: :class:`FixedBlock`)."""

    def __init__(self, base: BorderedSolver, B: np.ndarray, K: np.ndarray) -> None:
        self.base, self.B, self.K = base, B, K
        self.position = np.full(len(K), -1)
        self.position[B] = np.arange(B.size)
        self.U = np.ones((B.size, 1))
        self.Z = base.c[:, None].copy()
        self.M = self.U.T @ self.Z
        self.ids = np.array([-1])          # the row index of each column (−1: the ones vector)
        # the column of each row index (−1: none yet); its last entry is the ones vector's, which id −1 reads
        self.slot = np.full(len(K) + 1, -1)
        self.slot[-1] = 0

    def moved(self, K: np.ndarray, fixed: int, rows: np.ndarray) -> SchurColumns:
        """These columns for another matrix K whose first ``fixed`` rows and columns are those of the one they
        were built on (B among them): the columns of the ``rows`` below ``fixed`` (and the ones vector) are kept,
        the others — rows whose kernel values changed, or not asked for — dropped."""
        ids = self.ids      # of the old matrix: a poisoning row's id may lie beyond the new one (fewer rows)
        keep = np.flatnonzero((ids == -1) | ((ids < fixed) & np.isin(ids, rows)))
        out = object.__new__(SchurColumns)
        out.base, out.B, out.K = self.base, self.B, K
        out.position = np.full(len(K), -1)
        out.position[self.B] = np.arange(self.B.size)
        out.U, out.Z, out.M, out.ids = self.U[:, keep], self.Z[:, keep], self.M[np.ix_(keep, keep)], self.ids[keep]
        out.slot = np.full(len(K) + 1, -1)
        out.slot[out.ids] = np.arange(keep.size)
        return out

    def pick(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(U, Z, M) for the columns ``ids`` (row indices of K, −1 for the ones vector), in that order."""
        missing = ids[self.slot[ids] < 0]
        if missing.size:
            U_new = self.K.take(missing, 1).take(self.B, 0)
            inside = self.position[missing] >= 0
            U_new[:, inside] = 0.0
            U_new[self.position[missing[inside]], np.flatnonzero(inside)] = 1.0
            Z_new = scipy.linalg.lapack.dpotrs(self.base.factor, U_new)[0]
            cross = self.U.T @ Z_new
            m = len(self.M)
            M = np.empty((m + missing.size, m + missing.size))
            M[:m, :m], M[:m, m:], M[m:, :m], M[m:, m:] = self.M, cross, cross.T, U_new.T @ Z_new
            self.M, self.U, self.Z = M, np.hstack([self.U, U_new]), np.hstack([self.Z, Z_new])
            self.ids = np.r_[self.ids, missing]
            self.slot[missing] = m + np.arange(missing.size)
        at = self.slot[ids]
        return self.U[:, at], self.Z[:, at], self.M[np.ix_(at, at)]


class SchurSolver:
    """x = [[K_SS, 1], [1ᵀ, 0]]⁻¹ rhs for a free set S near a factored block B (:class:`SchurColumns`): with
    F = S \\ B and R = B \\ S, the system on B ∪ F with the constraints β_R = 0 (multipliers μ_R) is
    [[K_BB, U], [Uᵀ, V]] with U = [K_BF, 1, E_R] and V = [[K_FF, 1, 0], [1ᵀ, 0, 0], [0, 0, 0]]; its Schur
    complement V − Uᵀ K_BB⁻¹ U is (|F| + 1 + |R|)-square. The same interface as :class:`BorderedSolver`
    (vectors in the order of S, plus the bias); ``solve`` returns None where the small system is singular."""

    def __init__(self, columns: SchurColumns, K: np.ndarray, S: np.ndarray) -> None:
        self.columns = columns
        B, position = columns.B, columns.position
        in_S = np.zeros(len(K), dtype=bool)
        in_S[S] = True
        self.kept = np.flatnonzero(in_S[B])                    # positions in B of the rows still free
        self.removed = np.flatnonzero(~in_S[B])                # positions in B of R
        self.F = S[position[S] < 0]
        f, r = self.F.size, self.removed.size
        self.U, self.Z, M = columns.pick(np.r_[self.F, -1, B[self.removed]])
        V = np.zeros((f + 1 + r, f + 1 + r))
        V[:f, :f] = K.take(self.F, 0).take(self.F, 1)
        V[:f, f] = V[f, :f] = 1.0
        self.order_B = np.searchsorted(S, B[self.kept])        # where S's rows sit: in B (kept) or in F
        self.order_F = np.searchsorted(S, self.F)
        schur = V - M
        self.size = len(schur)
        # LAPACK directly (dgetrf/dgetrs), as in BorderedSolver: scipy's wrappers cost more than these small solves
        lu, pivots, info = scipy.linalg.lapack.dgetrf(schur)
        self.lu = (lu, pivots) if info == 0 else None

    def solve(self, rhs: np.ndarray) -> np.ndarray | None:
        if self.lu is None:
            return None
        B, f = self.columns.B, self.F.size
        r_B = np.zeros(B.size)
        r_B[self.kept] = rhs[self.order_B]
        w = scipy.linalg.lapack.dpotrs(self.columns.base.factor, r_B)[0]
        r_q = np.zeros(self.size)
        r_q[:f], r_q[f] = rhs[self.order_F], rhs[-1]
        y = scipy.linalg.lapack.dgetrs(*self.lu, r_q - self.U.T @ w)[0]
        x_B = w - self.Z @ y
        out = np.empty(len(rhs))
        out[self.order_B], out[self.order_F], out[-1] = x_B[self.kept], y[:f], y[f]
        return out if np.all(np.isfinite(out)) else None


class FixedBlock:
    """A factored block B of the rows of a session's kernel matrices that are the same in every fit (the clean
    training rows, the first ``fixed``), with its :class:`SchurColumns`, carried from one
    :func:`svm_dual_active_set` solve to the next: a solve whose free set keeps most of B starts from it and pays
    only for the columns of the rows that changed (the poisoning rows among them), not for a new factorisation.
    It costs nothing to keep: a solve that factors its free set S (sorted, the fixed rows first) takes B = the
    fixed rows of S with the leading block of that factor (:meth:`BorderedSolver.leading`)."""

    def __init__(self, fixed: int) -> None:
        self.fixed = fixed
        self.columns: SchurColumns | None = None


def svm_dual_active_set(K: np.ndarray, yt: np.ndarray, C: float, alpha: np.ndarray,
                        max_iter: int = 50, block: FixedBlock | None = None
                        ) -> tuple[np.ndarray, float, np.ndarray, BorderedSolver | SchurSolver] | None:
    """The exact solution (β = ỹ α, b) of the SVM dual, min ½ βᵀKβ − ỹᵀβ s.t. 1ᵀβ = 0, 0 ≤ α ≤ C, by the
    primal-dual active-set method started from the partition of ``alpha`` (a previous solution: points at 0, at C,
    and free). Each iteration solves the KKT system of the free points, K_SS β_S + b = ỹ_S − K_SE β_E, 1ᵀβ = 0,
    then moves every violator — a free point whose α leaves [0, C], a point at 0 with ỹf < 1, one at C with
    ỹf > 1 — to the other side; it stops when none is left, which are the KKT conditions: the optimum, to the
    precision of the linear solve. From a nearby solution (a warm start) that takes a few iterations of an
    (|S| + 1)-square solve and one product with K; an iteration whose free set differs from the last factored
    one by at most :data:`SCHUR_ROWS` rows solves against that factor (:class:`SchurSolver`: a small Schur
    complement instead of a new Cholesky factorisation). With a ``block`` (a :class:`FixedBlock`) it starts from
    the block's factor, the rows after the block's fixed ones not counted among those SCHUR_ROWS, and leaves the
    block for the next solve. Returns (β, b, the free set S, its solver),
    or None when it does not converge in ``max_iter`` iterations or meets a singular system (no free point,
    duplicated points); the caller then uses libsvm."""
    n = len(yt)
    eps = 1e-9
    free = (alpha > 0) & (alpha < C)
    upper = alpha >= C
    fixed = n if block is None else block.fixed
    columns: SchurColumns | None = None
    if block is not None and block.columns is not None:
        B = block.columns.B
        in_B = np.zeros(n, dtype=bool)
        in_B[B] = True
        changed = np.r_[np.flatnonzero(free & ~in_B), B[~free[B]]]     # the start's rows that differ from B
        columns = block.columns.moved(K, fixed, changed)
    for _ in range(max_iter):
        S, E = np.flatnonzero(free), np.flatnonzero(upper)
        if S.size == 0:
            return None
        beta_E = np.zeros(n)
        beta_E[E] = C * yt[E]
        rhs = np.r_[yt[S] - (K @ beta_E)[S], -beta_E.sum()]
        solver: BorderedSolver | SchurSolver | None = None
        if columns is not None:
            new = S[columns.position[S] < 0]                   # F: free, not in the factored block
            left = columns.B.size - (S.size - new.size)        # R: in the block, no longer free
            if np.count_nonzero(new < fixed) + left <= SCHUR_ROWS:
                solver = SchurSolver(columns, K, S)
        solution = None if solver is None else solver.solve(rhs)
        if solution is None:    # re-factor: the first iteration, many rows changed, or a singular small system
            solver = BorderedSolver(K.take(S, 0).take(S, 1))
            columns = SchurColumns(solver, S, K) if solver.factor is not None else None
            if block is not None and columns is not None:
                m = int(np.searchsorted(S, fixed))
                base = solver.leading(m)
                block.columns = None if base is None else SchurColumns(base, S[:m], K)
            solution = solver.solve(rhs)
        if solution is None:
            return None
        beta = beta_E.copy()
        beta[S], b = solution[:-1], float(solution[-1])
        alpha_S = yt[S] * beta[S]
        margin = yt * (K @ beta + b) - 1
        to_zero, to_upper = S[alpha_S < -eps * C], S[alpha_S > C * (1 + eps)]
        lower = ~free & ~upper
        enter = np.flatnonzero((lower & (margin < -eps)) | (upper & (margin > eps)))
        if to_zero.size == 0 and to_upper.size == 0 and enter.size == 0:
            if np.abs(margin[S]).max() > 1e-7:   # the solve was not accurate: do not claim an exact optimum
                if isinstance(solver, SchurSolver):
                    columns = None          # solve this partition again from a fresh factor
                    continue
                return None
            beta[S] = yt[S] * np.clip(alpha_S, 0.0, C)
            if block is not None and columns is not None and columns.B.size and columns.B.max() < fixed:
                block.columns = columns             # the block's, with the columns this solve added
            return beta, b, S, solver
        free[to_zero], free[to_upper], upper[to_upper] = False, False, True
        free[enter], upper[enter] = True, False
    return None

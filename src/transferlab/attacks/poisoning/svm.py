"""Linear SVM poisoning (Biggio et al. 2012), in the dual: the family, its batched implicit gradient, its
retraining session (an exact active-set solve of the dual on a cached kernel matrix, warm-started) and its loss
(the mean hinge loss). :mod:`transferlab.attacks.poisoning.svm_rbf` swaps in the RBF kernel."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
from sklearn.svm import SVC

from transferlab.attacks.poisoning.base import Family, Session, SessionFit
from transferlab.attacks.poisoning.solvers import (BorderedSolver, FixedBlock, bordered_least_squares, signed,
                                                   svm_dual_active_set)


@dataclass
class KernelParams:
    blocks: tuple[np.ndarray, ...]  # the training points in row blocks (a session's: clean rows, poisoning rows)
    beta: np.ndarray       # dual coefficients ỹ_i α_i for every training point (0 for non-support vectors)
    b: float
    kernel: Callable[[np.ndarray, np.ndarray], np.ndarray]

    @cached_property
    def X(self) -> np.ndarray:
        """The training points, stacked when first used: a session's rejected retrainings never need them."""
        return self.blocks[0] if len(self.blocks) == 1 else np.vstack(self.blocks)

    def scores(self, X: np.ndarray) -> np.ndarray:
        support = self.beta != 0
        return self.kernel(X, self.X[support]) @ self.beta[support] + self.b


class SVMFamily(Family):
    """SVM with the linear kernel K(a, x) = a·x; validation loss: mean hinge loss.

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
    The kernel enters through :meth:`kernel`, :meth:`weighted_kernel_gradient`, :meth:`diagonal_term` and
    :meth:`validation_kernel_sum`, which the RBF family overrides.
    """

    def __init__(self, C: float, tol: float = 1e-3) -> None:
        self.C, self.tol = C, tol

    # ---- the kernel ---------------------------------------------------------------------------------------
    def svc_kernel(self) -> dict:
        """The kernel arguments of scikit-learn's SVC."""
        return {"kernel": "linear"}

    def kernel(self, A: np.ndarray, B: np.ndarray, B_sq: np.ndarray | None = None) -> np.ndarray:
        """K(A, B); ``B_sq`` the squared norms of the rows of B where a kernel uses them."""
        return A @ B.T

    def weighted_kernel_gradient(self, A: np.ndarray, omega: np.ndarray, K_AX: np.ndarray | None,
                                 Xc: np.ndarray) -> np.ndarray:
        """Σ_a ω_a ∇_x K(a, x) for every row x of Xc, shape (len(Xc), d), given K_AX = K(A, Xc) where the kernel
        needs it (None: computed)."""
        return np.tile(omega @ A, (len(Xc), 1))

    def diagonal_term(self, Xc: np.ndarray) -> np.ndarray | float:
        """What ∇_x K(x, x) adds beyond the one count of the weighted sum: x for K(x, x) = ‖x‖²."""
        return Xc

    def validation_kernel_sum(self, X_val: np.ndarray, weights: np.ndarray, X_rows: np.ndarray,
                              K_val_rows: np.ndarray | None) -> np.ndarray:
        """K(X_val, X_rows)ᵀ weights, given K_val_rows = K(X_val, X_rows) where the kernel needs it (None:
        computed; the linear kernel: without forming the matrix)."""
        return X_rows @ (X_val.T @ weights)

    # ---- training, loss, gradient -------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> KernelParams:
        svc = SVC(C=self.C, tol=self.tol, **self.svc_kernel()).fit(X, y)
        beta = np.zeros(len(y))
        beta[svc.support_] = svc.dual_coef_[0]
        return KernelParams((X.copy(),), beta, float(svc.intercept_[0]), self.kernel)

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.maximum(0.0, 1 - signed(y) * scores)))

    def gradients(self, params: KernelParams, X: np.ndarray, y: np.ndarray, indices, X_val: np.ndarray,
                  y_val: np.ndarray, K: np.ndarray | None = None, K_val: np.ndarray | None = None,
                  scores_val: np.ndarray | None = None, margin_solver=None) -> np.ndarray:
        """The implicit gradient of every point of ``indices`` at once: one solve with the margin vectors'
        system, the kernel sums as matrix products. ``K`` (K(X, X)) and ``K_val`` (K(X_val, X), RBF only) may be
        passed precomputed, and ``margin_solver`` = (S, its solver: a :class:`BorderedSolver` or
        :class:`~transferlab.attacks.poisoning.solvers.SchurSolver`) of the training solve, used when S is the
        margin set."""
        indices = np.asarray(indices, dtype=int).reshape(-1)
        # the kernel sums run over all rows with zero weights where a row does not count (non-support vectors,
        # validation points without hinge loss): products on the whole matrices, no gathered copies of rows
        kern = ((lambda c: K[:, c]) if K is not None else (lambda c: self.kernel(X, X[c])))
        kern_val = (lambda c: K_val[:, c]) if K_val is not None else (lambda c: None)
        yt, yv = signed(y), signed(y_val)
        beta = params.beta
        Xc, bc = X[indices], beta[indices]
        abs_alpha = np.abs(beta)
        margin = np.flatnonzero((abs_alpha > 1e-8 * self.C) & (abs_alpha < self.C * (1 - 1e-6)))
        is_margin = np.isin(indices, margin)
        # ∇_{x_c} f(x_c): the direction of the non-support vectors, and the margin vectors' own condition
        own = np.zeros_like(Xc)
        rows = np.flatnonzero((bc == 0) | is_margin)
        if rows.size:
            own[rows] = self.weighted_kernel_gradient(X, beta, kern(indices[rows]), Xc[rows])
            own[rows] += bc[rows][:, None] * self.diagonal_term(Xc[rows])    # ∇ K(x_c, x_c) beyond one count
        out = -yt[indices][:, None] * own                              # non-support vectors: own hinge direction
        on = np.flatnonzero(bc != 0)
        if on.size == 0:
            return out
        scores_val = params.scores(X_val) if scores_val is None else scores_val
        active = 1 - yv * scores_val > 0
        if not active.any():
            out[on] = 0.0
            return out
        weights = np.where(active, -yv / len(yv), 0.0)                 # ∂A/∂f_j of the validation points
        c_on, X_on, b_on = indices[on], Xc[on], bc[on][:, None]
        explicit = b_on * self.weighted_kernel_gradient(X_val, weights, kern_val(c_on), X_on)
        if margin.size == 0:
            out[on] = explicit
            return out
        u = np.r_[self.validation_kernel_sum(X_val, weights, X, K_val)[margin], weights.sum()]
        def margin_block() -> np.ndarray:
            return K.take(margin, 0).take(margin, 1) if K is not None else self.kernel(X[margin], X[margin])

        if margin_solver is not None and np.array_equal(margin_solver[0], margin):
            solver = margin_solver[1]                                  # the training solve's factorisation
        else:
            solver = BorderedSolver(margin_block())
        z = solver.solve(u)                                            # one solve for all points
        if z is None:  # singular (e.g. duplicated margin vectors): the minimum-norm solution
            z = bordered_least_squares(margin_block(), u)
        z_all = np.zeros(len(y))
        z_all[margin] = z[:-1]
        correction = b_on * self.weighted_kernel_gradient(X, z_all, kern(c_on), X_on)
        # a point that is itself a margin vector: its row of E is its own margin condition's derivative
        in_margin = is_margin[on]
        if in_margin.any():
            correction[in_margin] += z_all[c_on[in_margin]][:, None] * (
                own[on][in_margin] - b_on[in_margin] * self.diagonal_term(X_on[in_margin]))
        out[on] = explicit - correction
        return out

    def session(self, X_train, y_train, X_val, y_val) -> KernelSession:
        return KernelSession(self, X_train, y_train, X_val, y_val)


class KernelSession(Session):
    """SVMs: the kernel matrix of the clean rows is cached; a fit computes the poisoning rows' kernel values and
    solves the dual exactly (:func:`svm_dual_active_set`), warm-started from the previous fit's support-vector
    partition — libsvm has no warm start: on the poisoning bench's ``svm_h`` at 10% (300–330 rows, a large C;
    one thread) its SMO took about 10 ms per fit under a line profiler, a warm-started fit, its few active-set
    iterations included, 2.5–5 ms (wall clock, replayed fits). (From the clean fit's partition, the new rows at α =
    0, the first fit of an attack took 4.0–4.7 ms against libsvm's 2.5–3.4 ms: it stays with libsvm.) The solves
    carry a factor of clean rows from one fit to the next
    (:class:`~transferlab.attacks.poisoning.solvers.FixedBlock`: the clean rows' kernel values never change), so a
    fit factors anew only when its free set has drifted from that block. Without a warm start, or when the
    active-set method does not converge, libsvm solves it on the precomputed kernel (``libsvm_fits`` counts these)
    and the active-set method polishes libsvm's solution (tolerance ``tol``) to the exact optimum. The validation
    scores come from w = Σ β_i x_i here; the RBF session caches the validation kernel of the clean rows instead
    (:meth:`kernel_rows`, :meth:`validation_scores`, :meth:`validation_kernel`)."""

    family: SVMFamily

    def __init__(self, family: SVMFamily, X_train, y_train, X_val, y_val) -> None:
        super().__init__(family, X_train, y_train, X_val, y_val)
        self.libsvm_fits = 0
        # the poisoning rows' kernel values against these rows, in one product
        self.others = self.kernel_rows()
        self.sq_others = (self.others ** 2).sum(1)
        self.K_train = family.kernel(X_train, X_train, self.sq_others[:self.n])
        self.block = FixedBlock(self.n)     # a factor of clean rows, carried from one fit's solve to the next

    def kernel_rows(self) -> np.ndarray:
        """The rows a poisoning row's kernel values are needed against: the clean training rows."""
        return self.X_train

    def validation_scores(self, X_p: np.ndarray, beta: np.ndarray, b: float, rows: np.ndarray) -> np.ndarray:
        """The validation scores of a fit on the poisoning rows X_p (``rows``: their kernel values against
        :meth:`kernel_rows`)."""
        n = self.n
        return self.X_val @ (beta[:n] @ self.X_train + beta[n:] @ X_p) + b

    def validation_kernel(self, rows: np.ndarray) -> np.ndarray | None:
        """K(X_val, X) where the gradient needs it (None here), built only for the fits whose gradient is asked
        for."""
        return None

    def fit(self, X_p: np.ndarray, y_p: np.ndarray, warm: SessionFit | None = None) -> SessionFit:
        self.fits += 1
        family, n, k = self.family, self.n, len(X_p)
        y = np.r_[self.y_train, y_p]
        K = np.empty((n + k, n + k))
        K[:n, :n] = self.K_train
        rows = family.kernel(X_p, self.others, self.sq_others)
        K[n:, :n], K[:n, n:], K[n:, n:] = rows[:, :n], rows[:, :n].T, family.kernel(X_p, X_p)
        yt = signed(y)
        solution = None
        if warm is not None and len(warm.y_p) == k:
            solution = svm_dual_active_set(K, yt, family.C, yt * warm.params.beta, block=self.block)
        if solution is None:
            self.libsvm_fits += 1
            svc = SVC(kernel="precomputed", C=family.C, tol=family.tol).fit(K, y)
            beta = np.zeros(len(y))
            beta[svc.support_] = svc.dual_coef_[0]
            solution = (svm_dual_active_set(K, yt, family.C, yt * beta, block=self.block)
                        or (beta, float(svc.intercept_[0]), None, None))
        beta, b, free, solver = solution
        params = KernelParams((self.X_train, X_p.copy()), beta, b, family.kernel)
        cache = {"K": K, "rows": rows, "scores_val": self.validation_scores(X_p, beta, b, rows),
                 "margin_solver": None if solver is None else (free, solver)}
        return SessionFit(params, X_p, y_p, cache)

    def gradients(self, fit: SessionFit) -> np.ndarray:
        X, y = fit.params.X, np.r_[self.y_train, fit.y_p]
        c = fit.cache
        return self.family.gradients(fit.params, X, y, np.arange(self.n, len(y)), self.X_val, self.y_val,
                                     K=c["K"], K_val=self.validation_kernel(c["rows"]), scores_val=c["scores_val"],
                                     margin_solver=c["margin_solver"])

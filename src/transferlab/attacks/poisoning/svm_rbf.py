"""RBF SVM poisoning (Biggio et al. 2012): the linear SVM's dual gradient and session
(:mod:`transferlab.attacks.poisoning.svm`) with the kernel K(a, x) = exp(−γ‖a − x‖²); its loss is the hinge loss."""

from __future__ import annotations

import numpy as np

from transferlab.attacks.poisoning.svm import KernelSession, SVMFamily
from transferlab.models.kernel import rbf_kernel


class RBFSVMFamily(SVMFamily):
    """SVM with the RBF kernel: ∇_x K(a, x) = 2γ (a − x) K(a, x), and ∇_x K(x, x) = 0."""

    def __init__(self, C: float, gamma: float = 0.01, tol: float = 1e-3) -> None:
        super().__init__(C, tol)
        self.gamma = gamma

    def svc_kernel(self) -> dict:
        return {"kernel": "rbf", "gamma": self.gamma}

    def kernel(self, A: np.ndarray, B: np.ndarray, B_sq: np.ndarray | None = None) -> np.ndarray:
        return rbf_kernel(A, B, self.gamma, B_sq)

    def weighted_kernel_gradient(self, A, omega, K_AX, Xc):
        K_AX = self.kernel(A, Xc) if K_AX is None else K_AX
        W = omega[:, None] * K_AX
        return 2 * self.gamma * (W.T @ A - W.sum(0)[:, None] * Xc)

    def diagonal_term(self, Xc):
        return 0.0

    def validation_kernel_sum(self, X_val, weights, X_rows, K_val_rows):
        K_val_rows = self.kernel(X_val, X_rows) if K_val_rows is None else K_val_rows
        return K_val_rows.T @ weights

    def session(self, X_train, y_train, X_val, y_val) -> RBFKernelSession:
        return RBFKernelSession(self, X_train, y_train, X_val, y_val)


class RBFKernelSession(KernelSession):
    """The SVM session with the validation rows' kernel against the clean rows cached too: a poisoning row's
    kernel values against training and validation rows come from one product."""

    def __init__(self, family: RBFSVMFamily, X_train, y_train, X_val, y_val) -> None:
        super().__init__(family, X_train, y_train, X_val, y_val)
        self.K_val_train = family.kernel(X_val, X_train, self.sq_others[:self.n])

    def kernel_rows(self) -> np.ndarray:
        return np.vstack([self.X_train, self.X_val])

    def validation_scores(self, X_p, beta, b, rows):
        n = self.n
        return self.K_val_train @ beta[:n] + beta[n:] @ rows[:, n:] + b

    def validation_kernel(self, rows):
        return np.hstack([self.K_val_train, rows[:, self.n:].T])

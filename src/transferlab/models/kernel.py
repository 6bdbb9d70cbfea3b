"""RBF-kernel SVM trained by scikit-learn (libsvm) and re-expressed in torch through its support vectors:
f_k(x) = Σ_i α_ik exp(−γ‖x − s_i‖²) + b_k, batched over rows of x."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import SVC

from transferlab.errors import DataError
from transferlab.models.estimator import Estimator
from transferlab.models.limits import Layout
from transferlab.models.sparse import sparse_tensor
from transferlab.models.linear import POSITIVE


def rbf_kernel(A: Any, B: Any, gamma: float, B_sq_norms: Any = None) -> Any:
    """K(a, b) = exp(−γ‖a − b‖²) for every row a of A and b of B, on numpy arrays or (differentiably) on torch
    tensors: the one RBF kernel of transferlab, used by :class:`KernelSVM` and by the SVM poisoning gradients.

    The squared distance is expanded (‖a‖² + ‖b‖² − 2 a·b) and clamped at 0, which keeps autograd finite where a
    equals b. ``B_sq_norms`` optionally passes the precomputed ‖b‖² of the rows of B; it is required when B is a
    torch sparse tensor (support vectors of a model fitted on sparse data), which is never densified."""
    if isinstance(A, torch.Tensor):
        if B.layout != torch.strided:
            sq = (A ** 2).sum(1, keepdim=True) + B_sq_norms - 2.0 * torch.sparse.mm(B, A.T).T
            return torch.exp(-gamma * sq.clamp_min(0.0))
        b_sq = (B ** 2).sum(1) if B_sq_norms is None else B_sq_norms
        sq = (A ** 2).sum(1, keepdim=True) + b_sq - 2.0 * A @ B.T
        return torch.exp(-gamma * sq.clamp_min(0.0))
    b_sq = (B ** 2).sum(1) if B_sq_norms is None else B_sq_norms
    sq = (A ** 2).sum(1)[:, None] + b_sq[None, :] - 2 * A @ B.T
    return np.exp(-gamma * np.maximum(sq, 0))


def kernel_parameters(estimator: Any) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray, np.ndarray]:
    """(support vectors (m, d), dual coefficients (m, n_classes), intercepts (n_classes,)) of a fitted binary
    ``SVC`` or a ``OneVsRestClassifier`` of them; binary models get a zero column for class 0. The support vectors
    of a model fitted on sparse data stay a scipy CSR matrix."""
    if isinstance(estimator, OneVsRestClassifier):
        parts = [kernel_parameters(e) for e in estimator.estimators_]
        if any(sp.issparse(p[0]) for p in parts):
            sv = sp.vstack([sp.csr_matrix(p[0]) for p in parts], format="csr")
        else:
            sv = np.vstack([p[0] for p in parts])
        alpha = np.zeros((sv.shape[0], len(parts)))
        start = 0
        for k, (s, a, _) in enumerate(parts):
            alpha[start:start + s.shape[0], k] = a[:, 1]
            start += s.shape[0]
        return sv, alpha, np.array([p[2][1] for p in parts])
    sv = estimator.support_vectors_
    sv = sp.csr_matrix(sv, dtype=np.float64) if sp.issparse(sv) else np.asarray(sv, dtype=np.float64)
    dual = estimator.dual_coef_
    dual = np.asarray(dual.toarray() if hasattr(dual, "toarray") else dual, dtype=np.float64).reshape(-1)
    alpha = np.c_[np.zeros_like(dual), dual]
    return sv, alpha, np.r_[0.0, float(np.asarray(estimator.intercept_).reshape(-1)[0])]


class KernelSVM(Estimator):
    """SVM with RBF kernel exp(−γ‖x − x'‖²), penalty C; one-vs-rest for more than two classes.

    Fitted on sparse data, the support vectors stay sparse (a torch sparse tensor, saved as its indices and
    values), so a model of DREBIN's 545,334 features holds O(stored values) and not m × 545,334 floats.
    """

    accepts_sparse = True
    PARAMS = {"C": POSITIVE, "gamma": POSITIVE}

    def __init__(self, C: float = 1.0, gamma: float = 0.01, device: str = "cpu", batch_size: int = 2048) -> None:
        super().__init__(device, batch_size)
        self.C = C
        self.gamma = gamma

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        svc = SVC(kernel="rbf", C=self.C, gamma=self.gamma)
        self.estimator_ = (svc if self.n_classes_ == 2 else OneVsRestClassifier(svc)).fit(X, y)
        self.set_parameters(*kernel_parameters(self.estimator_))

    def set_parameters(self, support_vectors: np.ndarray | sp.csr_matrix, dual_coef: np.ndarray,
                       intercept: np.ndarray) -> None:
        """Use the support vectors (dense, or a scipy sparse matrix kept sparse), dual coefficients and intercepts
        of a fitted RBF SVM."""
        as_t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.torch_device)  # noqa: E731
        self.dual_coef_, self.intercept_ = as_t(dual_coef), as_t(intercept)
        if sp.issparse(support_vectors):
            sv = sp.csr_matrix(support_vectors, dtype=np.float64)
            if not sv.has_canonical_format:
                sv = sv.copy()
                sv.sum_duplicates()
            self.support_vectors_ = sparse_tensor(sv, self.dtype, self.torch_device)
            self.sv_sq_norms_ = as_t(np.asarray(sv.multiply(sv).sum(1)).reshape(-1))
        else:
            self.support_vectors_ = as_t(support_vectors)
            self.sv_sq_norms_ = (self.support_vectors_ ** 2).sum(1)
        self.n_features_in_ = self.support_vectors_.shape[1]
        self.n_classes_ = self.dual_coef_.shape[1]
        if len(getattr(self, "classes_", ())) != self.n_classes_:  # parameters set by hand: classes 0..C−1
            self.classes_ = np.arange(self.n_classes_)

    def kernel(self, X: torch.Tensor) -> torch.Tensor:
        """K(X, S) = exp(−γ‖x − s‖²) for all rows and support vectors (the squared distance is expanded and
        clamped at 0, which keeps autograd finite where x equals a support vector)."""
        return rbf_kernel(X, self.support_vectors_, self.gamma, self.sv_sq_norms_)

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return self.kernel(X) @ self.dual_coef_ + self.intercept_

    def rbf_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
        if self.support_vectors_.layout != torch.strided:  # support vectors of sparse data: the generic path
            return None
        return self.support_vectors_, self.sv_sq_norms_, self.dual_coef_, self.intercept_, float(self.gamma)

    def state_layouts(self) -> list[Layout]:
        d, c = self.n_features_in_, self.n_classes_
        common: Layout = {"dual_coef": (("m", c), "float"), "intercept": ((c,), "float")}
        return [{"support_vectors": (("m", d), "float"), **common},
                {"support_vectors_index": ((2, "nnz"), "int"), "support_vectors_values": (("nnz",), "float"),
                 **common}]

    def check_state(self, state: dict[str, torch.Tensor]) -> None:
        if state["dual_coef"].shape[0] < 1:
            raise DataError("the RBF SVM has no support vectors")
        if "support_vectors_index" in state:
            m, d = state["dual_coef"].shape[0], self.n_features_in_
            rows, cols = state["support_vectors_index"].numpy().astype(np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= m or cols.min() < 0 or cols.max() >= d):
                raise DataError(f"the sparse support vectors' indices must lie in the {m} × {d} support vectors")
            if np.any(np.diff(rows * d + cols) <= 0):
                raise DataError("the sparse support vectors' indices must be sorted by row, then column, without "
                                "repeats")

    def state_tensors(self) -> dict[str, torch.Tensor]:
        common = {"dual_coef": self.dual_coef_, "intercept": self.intercept_}
        if self.support_vectors_.layout != torch.strided:
            sv = self.support_vectors_.coalesce()
            return {"support_vectors_index": sv.indices(), "support_vectors_values": sv.values(), **common}
        return {"support_vectors": self.support_vectors_, **common}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        if "support_vectors_index" in state:
            rows, cols = state["support_vectors_index"].cpu().numpy()
            shape = (state["dual_coef"].shape[0], self.n_features_in_)
            sv = sp.csr_matrix((state["support_vectors_values"].cpu().numpy(), (rows, cols)), shape=shape)
        else:
            sv = state["support_vectors"].cpu().numpy()
        self.set_parameters(sv, *(state[k].cpu().numpy() for k in ("dual_coef", "intercept")))

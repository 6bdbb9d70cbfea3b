"""Input checks shared by models and attacks: rows (dense or scipy CSR) and labels validated once with one-line
DataErrors, and arrays as torch tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from transferlab.errors import DataError
from transferlab.models.limits import INT32_MAX



def check_X(X: Any, name: str = "X", allow_sparse: bool = False) -> Any:
    """X as a 2-D float64 ndarray, with a clear error for NaN/inf or a wrong shape; or, with ``allow_sparse``,
    a sparse X as a scipy CSR matrix, kept sparse, in canonical form (sorted, no duplicates) with int32 indices
    and row pointers: the index type scikit-learn's liblinear and libsvm take."""
    if sp.issparse(X):
        if allow_sparse:
            return check_csr(X, name)
        X = X.toarray()
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{name} holds NaN or infinite values")
    return X


def check_csr(X: Any, name: str) -> sp.csr_matrix:
    if X.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    X = sp.csr_matrix(X)  # shares the arrays of a CSR matrix (or array); converts other formats
    if X.nnz > INT32_MAX or max(X.shape) > INT32_MAX:
        raise DataError(f"{name} has shape {X.shape} and {X.nnz:,} stored values; scikit-learn's sparse solvers "
                        f"index at most {INT32_MAX:,}: use fewer rows or select features")
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    if X.indices.dtype != np.int32 or X.indptr.dtype != np.int32:
        X = sp.csr_matrix((X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32)), shape=X.shape)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    if not np.all(np.isfinite(X.data)):
        raise DataError(f"{name} holds NaN or infinite values")
    return X


def check_y(y: Any, n: int, n_classes: int | None = None, name: str = "y") -> np.ndarray:
    """y as int64 labels, one per row (``n``), each in 0..n_classes − 1 (≥ 0 when ``n_classes`` is None); a
    one-line DataError naming ``name`` otherwise."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name} must hold {n} integer labels, got shape {y.shape} and dtype {y.dtype}")
    if n and n_classes is None and y.min() < 0:
        raise DataError(f"{name}: labels must be class indices 0, 1, ..., got {y.min()}..{y.max()}")
    if n and n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{name}: labels must be 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return y.astype(np.int64)


def array_tensor(X: np.ndarray, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.as_tensor(X, dtype, device)``; a read-only array (a memory map opened read-only) or one with negative
    strides (``X[::-1]``, a pandas table's columns taken in reverse) is copied first, as torch shares neither."""
    if isinstance(X, np.ndarray) and (not X.flags.writeable or any(stride < 0 for stride in X.strides)):
        X = X.copy()
    return torch.as_tensor(X, dtype=dtype, device=device)


def from_torch(value: Any) -> Any:
    """A torch tensor as a numpy array (scikit-learn's validation reads numpy); anything else as it is."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value

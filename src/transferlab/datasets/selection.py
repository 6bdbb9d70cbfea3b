"""Feature selection as the DREBIN case study does it (Demontis et al., Sec. 6; Arp et al.): keep the k features
whose presence differs most between malware and benign apps in the training data."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from transferlab.datasets.dataset import Dataset
from transferlab.errors import DataError


def _presence_counts(X: np.ndarray | sp.spmatrix, rows: np.ndarray) -> np.ndarray:
    """Per column, how many of the rows ``rows`` (a bool mask) hold a non-zero value (int64, length d)."""
    if sp.issparse(X):
        part = X[rows]  # CSR rows of one class: no dense copy
        return np.bincount(part.indices[part.data != 0], minlength=X.shape[1])
    return np.count_nonzero(X[rows], axis=0).astype(np.int64)


def select_features(dataset: Dataset, k: int) -> np.ndarray:
    """Column indices (sorted ascending) of the ``k`` features with the largest
    ``|P(x = 1 | class 1) - P(x = 1 | class 0)|`` in ``dataset`` (symmetric in the two classes).

    Pass the *training* data only, so the test data plays no part in the choice. A feature counts as present
    (x = 1) where it is non-zero. Sparse X is never densified (per-class counts of the CSR rows' non-zeros). The
    scores are compared exactly (as integers), and ties go to the lower column index. ``k >= n_features``
    returns every column. Binary problems only.
    """
    if dataset.n_classes != 2:
        raise DataError(f"feature selection needs a binary dataset; {dataset.name!r} has {dataset.n_classes} "
                        "classes")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"the number of features to keep must be an integer >= 1, got k={k!r}")
    n_features = dataset.X.shape[1]
    if k >= n_features:
        return np.arange(n_features)
    X = dataset.X.tocsr() if sp.issparse(dataset.X) else np.asarray(dataset.X)
    positive = dataset.y == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        present = [dataset.classes[c] for c in np.unique(dataset.y)]
        raise DataError(f"dataset {dataset.name!r} holds {len(dataset)} points of class(es) {present} only; "
                        "feature selection needs points of both classes")
    # |c_pos / n_pos - c_neg / n_neg| scaled by n_pos * n_neg: an exact integer, so equal scores really tie
    score = np.abs(_presence_counts(X, positive) * n_neg - _presence_counts(X, ~positive) * n_pos)
    best = np.argsort(-score, kind="stable")[:k]
    return np.sort(best)

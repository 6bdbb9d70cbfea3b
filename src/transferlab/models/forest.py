"""Random forest (target only: it has no input gradient). Scores are class probabilities averaged over trees."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.ensemble import RandomForestClassifier

from transferlab.models.base import SPARSE_BLOCK_ELEMENTS, Classifier


class RandomForest(Classifier):
    """scikit-learn's random forest; ``max_depth=None`` grows trees fully. Not differentiable: attacks on it are
    crafted on a surrogate (``input_gradient`` raises :class:`NotDifferentiableError`)."""

    differentiable = False
    accepts_sparse = True

    def __init__(self, n_estimators: int = 100, max_depth: int | None = None, seed: int = 0, n_jobs: int = 1,
                 device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.seed = seed
        self.n_jobs = n_jobs

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        forest = RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                        random_state=self.seed, n_jobs=self.n_jobs).fit(X, y)
        trees = [est.tree_ for est in forest.estimators_]
        # all trees as flat node arrays, so the forest can be saved without pickle and scored by array traversal
        offsets = np.cumsum([0] + [t.node_count for t in trees])
        shift = lambda a, o: np.where(a >= 0, a + o, -1)  # noqa: E731
        self.left_ = np.concatenate([shift(t.children_left, o) for t, o in zip(trees, offsets)])
        self.right_ = np.concatenate([shift(t.children_right, o) for t, o in zip(trees, offsets)])
        self.feature_ = np.concatenate([t.feature for t in trees])
        self.threshold_ = np.concatenate([t.threshold for t in trees])
        values = np.concatenate([t.value[:, 0, :] for t in trees])
        self.value_ = values / values.sum(1, keepdims=True)
        self.roots_ = offsets[:-1]

    def decision_function(self, X) -> np.ndarray:
        """Mean over trees of the leaf class frequencies (equals scikit-learn's ``predict_proba``)."""
        self._check_fitted()
        if sp.issparse(X):
            rows = max(1, SPARSE_BLOCK_ELEMENTS // max(1, X.shape[1]))
            return np.vstack([self.decision_function(X[i:i + rows].toarray()) for i in range(0, X.shape[0], rows)]
                             or [np.zeros((0, self.n_classes_))])
        # scikit-learn compares float32 features with the thresholds; do the same so the splits agree exactly
        X = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float32)
        node = np.broadcast_to(self.roots_, (X.shape[0], self.roots_.size)).copy()
        rows = np.arange(X.shape[0])[:, None]
        while True:
            inner = self.left_[node] >= 0
            if not inner.any():
                break
            go_left = X[rows, np.maximum(self.feature_[node], 0)] <= self.threshold_[node]
            node = np.where(inner, np.where(go_left, self.left_[node], self.right_[node]), node)
        return self.value_[node].mean(axis=1)

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities as a tensor (no gradient flows through a forest)."""
        return torch.as_tensor(self.decision_function(X), dtype=X.dtype, device=X.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: torch.as_tensor(getattr(self, name + "_")) for name in
                ("left", "right", "feature", "threshold", "value", "roots")}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in state.items():
            setattr(self, name + "_", tensor.numpy())

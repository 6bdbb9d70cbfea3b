"""Random forest (target only: it has no input gradient). Scores are class probabilities averaged over trees."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier

from transferlab.errors import DataError
from transferlab.models.estimator import Estimator
from transferlab.models.limits import Layout
from transferlab.models.params import SEED, Param


class RandomForest(Estimator):
    """scikit-learn's random forest; ``max_depth=None`` grows trees fully. Not differentiable: attacks on it are
    crafted on a surrogate (``input_gradient`` raises :class:`NotDifferentiableError`).

    The fitted trees are flat node arrays (as scikit-learn's ``tree_``): node i of the forest splits on
    ``feature_[i]`` at ``threshold_[i]`` into ``left_[i]`` and ``right_[i]``, or is a leaf (both −1) whose class
    frequencies are ``value_[i]``; tree t starts at node ``roots_[t]`` and its nodes come before the next tree's.
    Children come after their parent, which is what a loaded forest is checked for (so its traversal ends).
    ``seed`` may be any non-negative integer: scikit-learn gets it modulo 2³².
    """

    differentiable = False
    accepts_sparse = True
    NAMES = ("left", "right", "feature", "threshold", "value", "roots")
    PARAMS = {"n_estimators": Param("int", 1, 100_000), "max_depth": Param("int", 1, none=True), "seed": SEED,
              "n_jobs": Param("int", 1, 1024, none=True, also=(-1,))}

    def __init__(self, n_estimators: int = 100, max_depth: int | None = None, seed: int = 0, n_jobs: int = 1,
                 device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.seed = seed
        self.n_jobs = n_jobs

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        forest = RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                        random_state=self.seed % 2 ** 32, n_jobs=self.n_jobs).fit(X, y)
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

    def decision_function(self, X: Any) -> np.ndarray:
        """Mean over trees of the leaf class frequencies (equals scikit-learn's ``predict_proba``); column k is
        class ``classes_[k]``, also for two classes (their two frequencies)."""
        return super().decision_function(X)

    def _score_array(self, X: np.ndarray) -> np.ndarray:
        # scikit-learn compares float32 features with the thresholds; do the same so the splits agree exactly
        X = np.asarray(X, dtype=np.float32)
        node = np.broadcast_to(self.roots_, (X.shape[0], self.roots_.size)).copy()
        rows = np.arange(X.shape[0])[:, None]
        while True:
            inner = self.left_[node] >= 0
            if not inner.any():
                break
            go_left = X[rows, np.maximum(self.feature_[node], 0)] <= self.threshold_[node]
            node = np.where(inner, np.where(go_left, self.left_[node], self.right_[node]), node)
        return self.value_[node].mean(axis=1)

    def _score_tensor(self, X: torch.Tensor) -> np.ndarray:
        return self._score_array(X.detach().cpu().numpy())

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """Class probabilities as a tensor (no gradient flows through a forest)."""
        return torch.as_tensor(self._score_tensor(X), dtype=X.dtype, device=X.device)

    def state_layouts(self) -> list[Layout]:
        node = ("nodes",)
        return [{"left": (node, "int"), "right": (node, "int"), "feature": (node, "int"), "threshold": (node, "float"),
                 "value": (("nodes", self.n_classes_), "float"), "roots": ((self.n_estimators,), "int")}]

    def check_state(self, state: dict[str, torch.Tensor]) -> None:
        """The node arrays form ``n_estimators`` trees: consecutive blocks of nodes starting at ``roots``, every
        inner node's children after it inside its tree, every node but a root the child of exactly one node, so
        that scoring ends after at most one step per level. Inner nodes split on a feature in [0, n_features),
        leaves have both children −1 and no feature, and every node's class frequencies sum to 1."""
        left, right, feature, roots = (state[k].numpy().astype(np.int64) for k in ("left", "right", "feature", "roots"))
        value = state["value"].numpy()
        n = left.size
        if n < roots.size or roots[0] != 0 or np.any(np.diff(roots) <= 0) or roots[-1] >= n:
            raise DataError(f"the forest's {roots.size} tree roots must start at node 0 and increase strictly "
                            f"below its {n} nodes")
        leaf = left == -1
        if (np.any(leaf != (right == -1)) or np.any(left < -1) or np.any(right < -1)
                or np.any(leaf & (feature >= 0))):
            raise DataError("a leaf of the forest must have both children -1 and a negative feature (and an inner "
                            "node two children)")
        ends = np.repeat(np.r_[roots[1:], n], np.diff(np.r_[roots, n]))  # first node after each node's tree
        index = np.arange(n)
        inner = ~leaf
        for child in (left[inner], right[inner]):
            if np.any(child <= index[inner]) or np.any(child >= ends[inner]):
                raise DataError("the forest's child indices must point forward inside their own tree (they form a "
                                "cycle or leave the tree)")
        parents = np.bincount(np.r_[left[inner], right[inner]], minlength=n)
        root = np.zeros(n, dtype=bool)
        root[roots] = True
        if np.any(parents[root] != 0) or np.any(parents[~root] != 1):
            raise DataError("every node of the forest but a tree's root must be the child of exactly one node")
        split = feature[inner]
        outside = split[(split < 0) | (split >= self.n_features_in_)]
        if outside.size:
            raise DataError(f"the forest splits on feature {int(outside[0])}, outside the {self.n_features_in_} "
                            "features 0..n_features-1 of its spec")
        if np.any(value < 0) or not np.allclose(value.sum(1), 1.0, rtol=0, atol=1e-6):
            raise DataError("the forest's node values must be class frequencies (non-negative, summing to 1)")

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: torch.as_tensor(getattr(self, name + "_")) for name in self.NAMES}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.NAMES:
            array = state[name].numpy()
            setattr(self, name + "_", array.astype(np.int64) if name in ("left", "right", "feature", "roots")
                    else array.astype(np.float64))

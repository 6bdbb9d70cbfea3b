"""A user's scikit-learn estimator as a transferlab classifier, and the black-box target: any fitted classifier that
has ``decision_function`` or ``predict_proba`` (forests, gradient boosting, kNN, LightGBM's ``LGBMClassifier``, a
pipeline ending in one), scored in batches by the estimator itself.

A black box has no input gradient: attacks on it are crafted on a differentiable surrogate and transferred, which is
the paper's setting (Section 3). Its estimator is also its *recipe*: :meth:`EstimatorWrapper.fit` trains a
``sklearn.base.clone`` of it, which is how a poisoning experiment retrains "your model" on poisoned data.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier, NotDifferentiableError
from transferlab.models.inputs import check_X
from transferlab.models.limits import SPARSE_BLOCK_ELEMENTS

#: probabilities are clipped below at this value before their log is taken (scores of at least log(1e-12) ≈ −27.6)
PROBABILITY_FLOOR = 1e-12


def describe(estimator: Any) -> str:
    """A one-line name: the class, or ``Pipeline(StandardScaler, SVC)`` for a pipeline."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        names = [describe(s) for _, s in estimator.steps if s is not None and not isinstance(s, str)]
        return f"Pipeline({', '.join(names)})"
    return type(estimator).__name__


def check_fitted(estimator: Any) -> None:
    """A ConfigError naming the estimator when it is not fitted."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise ConfigError(f"{describe(estimator)} is not fitted: fit it first (estimator.fit(X, y)), or give it as a "
                          "recipe, models.wrap(estimator, recipe=True), and fit the wrapper") from None
    except TypeError as exc:
        raise ConfigError(f"{describe(estimator)} is not a scikit-learn estimator ({exc})") from None


class EstimatorWrapper(Classifier):
    """Base of the wrapped scikit-learn estimators.

    ``estimator`` is the recipe (fitted or not); ``estimator_`` the fitted estimator in use. ``classes_`` holds its
    labels (any: strings, −1/+1, ...): score columns are in that order, and the labels given to ``loss`` and
    ``input_gradient`` and returned by ``predict`` are *indices* into ``classes_``, as for every transferlab
    classifier (``classes_[model.predict(X)]`` equals the estimator's ``predict``). :meth:`fit` trains a
    ``sklearn.base.clone`` of ``estimator`` on (X, y), with y in any labels the estimator takes.
    """

    accepts_sparse = True

    def __init__(self, estimator: Any, device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.estimator = estimator

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {"estimator": self.estimator, "device": self.device, "batch_size": self.batch_size}

    @property
    def name_(self) -> str:
        """The model's one-line name: its fitted estimator's, or its recipe's."""
        return getattr(self, "description_", None) or describe(self.estimator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_})"

    def fit(self, X: Any, y: Any) -> EstimatorWrapper:
        """Train a clone of the recipe ``estimator`` on (X, y) and use it."""
        from sklearn.base import clone

        if self.estimator is None:
            raise ConfigError(f"{self!r} was saved without its recipe (skops was not installed, or the recipe holds "
                              "types it does not load), so it cannot be retrained; wrap the estimator again")
        X = check_X(X, allow_sparse=True)
        y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
        if y.shape != (X.shape[0],):
            raise DataError(f"y must hold {X.shape[0]} labels, got shape {y.shape}")
        try:
            fitted = clone(self.estimator).fit(X, y)
        except (ValueError, TypeError) as exc:
            error = ConfigError if type(exc).__name__ == "InvalidParameterError" else DataError  # a bad setting
            raise error(f"{describe(self.estimator)}: fit failed ({type(exc).__name__}: {exc})") from None
        return self.adopt(fitted)

    def adopt(self, fitted: Any) -> EstimatorWrapper:
        """Use the fitted estimator ``fitted`` as it is (no refit)."""
        check_fitted(fitted)
        classes = getattr(fitted, "classes_", None)
        if classes is None or np.ndim(classes) != 1 or len(classes) < 2:
            raise ConfigError(f"{describe(fitted)} is not a single-label classifier with two or more classes_")
        self._build(fitted)
        self.estimator_ = fitted
        self.description_ = describe(fitted)
        self.classes_ = np.asarray(classes)
        self.n_classes_ = len(self.classes_)
        n_features = getattr(fitted, "n_features_in_", None)
        self.n_features_in_ = None if n_features is None else int(n_features)
        names = getattr(fitted, "feature_names_in_", None)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)  # a DataFrame's columns, checked when scoring
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def _build(self, fitted: Any) -> None:
        raise NotImplementedError

    def check_features(self, X: Any) -> None:
        n = getattr(self, "n_features_in_", None)
        if n is not None and (X.ndim != 2 or X.shape[1] != n):
            raise DataError(f"{self.name_} was fitted on {n} features but X has shape {tuple(X.shape)}")

    def predict_labels(self, X: Any) -> np.ndarray:
        """The estimator's labels, ``classes_[predict(X)]``."""
        return self.classes_[self.predict(X)]

    def _blocks(self, X: Any) -> Iterator[np.ndarray]:
        """X validated, in blocks of rows as dense float64 arrays (sparse rows densified a bounded block at a time)."""
        self._check_fitted()
        self.check_feature_names(X)
        X = check_X(X, allow_sparse=True)
        self.check_features(X)
        rows = max(1, min(self.batch_size, SPARSE_BLOCK_ELEMENTS // max(1, X.shape[1])))
        for i in range(0, X.shape[0], rows):
            block = X[i:i + rows]
            yield block.toarray() if sp.issparse(block) else block


class BlackBoxClassifier(EstimatorWrapper):
    """A fitted estimator scored by itself: a target without input gradient.

    Scores: ``decision_function`` when the estimator has one (binary: [0, f]); otherwise log-probabilities,
    log(max(p, 1e-12)), so that softmax of the scores is ``predict_proba`` (binary: [0, log p₁ − log p₀], the
    log-odds). ``predict`` is the estimator's own ``predict`` (as indices into ``classes_``); the argmax of the scores
    equals it except where the estimator's scores tie. ``reason`` says why the estimator is not re-expressed in torch.
    """

    differentiable = False

    def __init__(self, estimator: Any, reason: str = "", device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(estimator, device, batch_size)
        self.reason = reason

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {"estimator": self.estimator, "reason": self.reason, "device": self.device,
                "batch_size": self.batch_size}

    def _build(self, fitted: Any) -> None:
        if hasattr(fitted, "decision_function"):
            self.score_method_ = "decision_function"
        elif hasattr(fitted, "predict_proba"):
            self.score_method_ = "predict_proba"
        else:
            raise ConfigError(f"{describe(fitted)} has neither decision_function nor predict_proba; transferlab needs "
                              "class scores of a target")

    def _score_block(self, X: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            raw = getattr(self.estimator_, self.score_method_)(X)
        raw = np.asarray(raw, dtype=np.float64)
        k = self.n_classes_
        if self.score_method_ == "predict_proba" and raw.shape == (X.shape[0], k):
            raw = np.log(np.clip(raw, PROBABILITY_FLOOR, None))
            if k == 2:
                raw = raw[:, 1] - raw[:, 0]
        if k == 2 and raw.shape == (X.shape[0],):
            raw = np.c_[np.zeros(X.shape[0]), raw]
        if raw.shape != (X.shape[0], k):
            raise ConfigError(f"{self.name_}.{self.score_method_} returned shape {raw.shape} for "
                              f"{X.shape[0]} rows and {k} classes; give it class scores (e.g. SVC "
                              "decision_function_shape='ovr')")
        return raw

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores (n_samples, n_classes) computed by the estimator, a batch of rows at a time."""
        parts = [self._score_block(block) for block in self._blocks(X)]
        return np.vstack(parts) if parts else np.zeros((0, self.n_classes_))

    def predict(self, X: Any) -> np.ndarray:
        """The estimator's ``predict``, as indices into ``classes_``."""
        parts = []
        for block in self._blocks(X):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                labels = np.asarray(self.estimator_.predict(block))
            order = np.argsort(self.classes_, kind="stable")  # scikit-learn's classes_ are sorted already
            index = order[np.searchsorted(self.classes_[order], labels).clip(0, self.n_classes_ - 1)]
            if not np.array_equal(self.classes_[index], labels):
                raise ConfigError(f"{self.name_}.predict returned labels outside its classes_")
            parts.append(index)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """The estimator's scores as a tensor (no gradient flows through a black box)."""
        return torch.as_tensor(self.decision_function(X.detach().cpu().numpy()), dtype=X.dtype, device=X.device)

    def input_gradient_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        self._require_gradient()  # raises: a black box has no gradient, whichever base class version runs
        return super().input_gradient_tensor(X, y, loss)

    def _require_gradient(self) -> None:
        why = f" ({self.reason})" if self.reason else ""
        raise NotDifferentiableError(
            f"{self!r} is a black-box target scored by the estimator itself{why}: it has no input gradient; attack it "
            "through a differentiable surrogate (a registry model such as svm_rbf_h or nn_h, or a wrapped linear "
            "model, SVC, MLPClassifier or pipeline of scalers) and transfer the points")

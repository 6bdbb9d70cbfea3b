"""The registry's models as scikit-learn classifiers (:class:`Estimator`): ``get_params``/``set_params``,
``clone``, ``GridSearchCV``, labels of any kind in ``classes_``, scikit-learn's input validation and
:class:`~transferlab.models.base.NotFittedError`. They pass ``sklearn.utils.estimator_checks.check_estimator``
except for the checks :meth:`Estimator.expected_failed_checks` names with their reasons."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from transferlab.errors import DataError
from transferlab.models.base import Classifier
from transferlab.models.inputs import check_csr, from_torch
from transferlab.models.limits import check_size
from transferlab.models.params import short



def _first_line(exc: BaseException) -> str:
    """A scikit-learn error message as one line (the CLI prints one), without the dump of the array."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("array=")]
    return " ".join(lines) if lines else type(exc).__name__


#: the scikit-learn estimator checks that every registry model fails, and why (see :meth:`Estimator.expected_failed_checks`)
_TWO_COLUMNS = ("a binary model's decision_function returns the two columns [0, f(x)] (transferlab's interface: one "
                "margin loss, max_{c≠y} f_c − f_y, serves binary and multiclass problems alike, and column k always "
                "scores classes_[k]), where scikit-learn expects the single column f(x); the check's other assertions "
                "(accuracy, labels, predict against decision_function, feature-count errors) are run with two "
                "columns by tests/test_estimators.py")
SKLEARN_EXPECTED_FAILURES: dict[str, str] = {"check_classifiers_train": _TWO_COLUMNS,
                                             "check_classifiers_classes": _TWO_COLUMNS}


class Estimator(ClassifierMixin, Classifier):
    """A registry model as a scikit-learn classifier.

    - Parameters are stored by the constructor and ``set_params`` as given; :meth:`fit` checks them (the class's
      :class:`~transferlab.models.params.Param` table) before anything else, so ``sklearn.base.clone`` and
      ``GridSearchCV`` work as for any scikit-learn estimator.
    - ``fit(X, y)`` validates X and y with scikit-learn's ``validate_data`` (dense, scipy sparse, pandas frames,
      lists), takes labels of any kind (integers, strings, −1/+1, ...) and keeps them, sorted, in ``classes_``;
      training sees their indices 0..C−1, so a model fitted on labels 0..C−1 is exactly what it always was.
    - ``predict`` returns labels of ``classes_``; ``decision_function`` has one column per class, column k
      scoring ``classes_[k]``. For two classes it is the two columns [0, f(x)] (transferlab's interface), where
      scikit-learn's convention would be the one column f(x): ``decision_function(X)[:, 1]`` is that column.
    - The labels given to :meth:`loss` and :meth:`input_gradient` are class labels too, as ``y`` of ``fit`` and
      ``score``; the torch methods the attacks call (:meth:`loss_tensor`, :meth:`input_gradient_tensor`) take
      score columns, the indices of the labels in ``classes_`` (``classes_`` is 0..C−1 for the engine's data, so
      both are the same there).
    - Calling a method before ``fit`` raises :class:`NotFittedError` (scikit-learn's, and a ConfigError).
    """

    #: scikit-learn checks this class fails on purpose, with the reason; see :meth:`expected_failed_checks`
    EXPECTED_FAILED_CHECKS: dict[str, str] = SKLEARN_EXPECTED_FAILURES

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # every registry model takes scipy sparse rows: the linear, kernel and forest models and the MLP as they
        # are, the CNN densified (its rows are images)
        tags.input_tags.sparse = True
        return tags

    def expected_failed_checks(self) -> dict[str, str]:
        """The scikit-learn estimator checks this model fails on purpose, each with the reason, for
        ``sklearn.utils.estimator_checks.check_estimator(model, expected_failed_checks=...)``: the
        ``EXPECTED_FAILED_CHECKS`` tables of the class and its bases."""
        checks: dict[str, str] = {}
        for klass in reversed(type(self).__mro__):
            checks.update(vars(klass).get("EXPECTED_FAILED_CHECKS", {}))
        return checks

    # ---- fitting -----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> Estimator:
        """Train on rows X (dense or scipy sparse) and labels y (any kind: kept in ``classes_``)."""
        self.check_params()
        X, y = self._validated_fit_data(X, y)
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise DataError(f"{type(self).__name__}: y {_first_line(exc)}") from None
        classes, index = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise DataError(f"y holds 1 class ({short(classes.tolist()[0]) if classes.size else 'none'}); "
                            f"{type(self).__name__} needs labels of at least 2 classes to fit")
        check_size(X.shape[1], classes.size)
        self.classes_ = classes
        self.n_classes_ = int(classes.size)
        self._fit(X, index.reshape(-1).astype(np.int64))
        return self

    def _validated_fit_data(self, X: Any, y: Any) -> tuple[Any, np.ndarray]:
        X, y = from_torch(X), from_torch(y)
        try:
            X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, ensure_all_finite=False)
        except ValueError as exc:
            raise DataError(f"{type(self).__name__}.fit: {_first_line(exc)}") from None
        X = self._finite(X)
        if sp.issparse(X) and not self.accepts_sparse:
            X = X.toarray()
        return X, y

    @staticmethod
    def _finite(X: Any) -> Any:
        """Validated rows, CSR in canonical int32 form, with a DataError for NaN or infinite values."""
        if sp.issparse(X):
            return check_csr(X, "X")
        if not np.all(np.isfinite(X)):
            raise DataError("X holds NaN or infinite values; remove those rows or impute the values")
        return X

    # ---- scores ------------------------------------------------------------------------------------------
    def check_features(self, X: Any) -> None:
        n = getattr(self, "n_features_in_", None)
        if n is not None and (X.ndim != 2 or X.shape[1] != n):
            got = f"{X.shape[1]} features" if X.ndim == 2 else f"shape {tuple(X.shape)}"
            raise DataError(f"X has {got}, but {type(self).__name__} is expecting {n} features as input (it was "
                            f"fitted on {n} features)")

    def _checked_input(self, X: Any) -> Any:
        """X to score, validated by scikit-learn's ``validate_data`` (feature count and names against fit); a
        torch tensor is taken as it is (:meth:`~transferlab.models.base.Classifier._checked_tensor`)."""
        if isinstance(X, torch.Tensor):
            return self._checked_tensor(X)
        if getattr(X, "ndim", None) == 2:
            self.check_features(X)
        try:
            X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64, ensure_all_finite=False,
                              ensure_min_samples=0)
        except ValueError as exc:
            raise DataError(f"{type(self).__name__}: {_first_line(exc)}") from None
        return self._finite(X)

    def predict(self, X: Any) -> np.ndarray:
        """The label, from ``classes_``, of the highest score of each row."""
        index = super().predict(X)
        return self._classes()[index]

    def _classes(self) -> np.ndarray:
        classes = getattr(self, "classes_", None)
        return np.arange(self.n_classes_) if classes is None else classes

    # ---- labels ------------------------------------------------------------------------------------------
    def _label_indices(self, y: Any, n: int) -> np.ndarray:
        """The indices in ``classes_`` of the class labels ``y`` (DataError for a label the model does not know)."""
        y = np.asarray(from_torch(y))
        if y.shape != (n,):
            raise DataError(f"y must hold {n} labels, one per row of X, got shape {y.shape}")
        classes = self._classes()
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            index = np.searchsorted(classes, y).clip(0, classes.size - 1)
            known = np.asarray(classes[index] == y, dtype=bool)
        except (TypeError, ValueError):
            known = np.zeros(n, dtype=bool)
            index = np.zeros(n, dtype=np.int64)
        if not known.all():
            raise DataError(f"label {short(y[~known][0])} is not one of {type(self).__name__}'s classes_ "
                            f"{short(classes.tolist())}: give class labels as fit got them")
        return index.astype(np.int64)

"""``wrap``: a user's own model as a transferlab classifier.

- a scikit-learn classifier, or a ``Pipeline`` ending in one, that transferlab can re-express exactly in torch (linear
  classifiers, ``SVC``/``NuSVC`` with a linear, RBF, polynomial or sigmoid kernel, ``MLPClassifier``, after scalers,
  PCA, feature selectors, ...) becomes a :class:`SklearnModel`: differentiable, scores equal to scikit-learn's;
- any other classifier with ``decision_function`` or ``predict_proba`` becomes a
  :class:`~transferlab.models.blackbox.BlackBoxClassifier`, a target scored by the estimator itself;
- a torch ``nn.Module`` returning logits becomes a :class:`WrappedModule`.

The estimator is kept as the model's *recipe*: ``fit(X, y)`` on the wrapper trains a ``sklearn.base.clone`` of it
(a poisoning experiment retrains "your model" on poisoned data that way). An unfitted estimator is a recipe only:
``wrap(estimator, recipe=True)`` gives an unfitted wrapper to ``fit``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier
from transferlab.models.blackbox import BlackBoxClassifier, EstimatorWrapper, check_fitted, describe
from transferlab.models.sklearn_torch import (LinearHead, MLPHead, NotReexpressible, Piece, SVCHead, fold_affine,
                                              not_reexpressible, reexpress)


class WrappedModule(Classifier):
    """A trained torch module mapping (n, n_features) inputs to (n, n_classes) logits, used as it is (``fit``
    refuses: train it before wrapping). ``models.save`` writes it as ONNX, which loads back as a differentiable
    model without unpickling (see :mod:`transferlab.models.onnx_torch`)."""

    def __init__(self, module: nn.Module, n_classes: int, n_features: int, device: str = "cpu",
                 dtype: torch.dtype | None = None, batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.module = module
        self.n_classes, self.n_features = n_classes, n_features
        first = next(module.parameters(), None)
        if first is None:
            first = next(module.buffers(), None)
        self.dtype = dtype or (first.dtype if first is not None and first.is_floating_point() else torch.float32)
        self.module_ = module.to(device=self.torch_device, dtype=self.dtype).eval()
        self.n_classes_ = n_classes
        self.n_features_in_ = n_features

    def _module_name(self) -> str:
        source = getattr(self.module, "source", None)  # a network read from a file: the file's name
        return f"{type(self.module).__name__}({source!r})" if source else type(self.module).__name__

    def __repr__(self) -> str:
        return (f"WrappedModule({self._module_name()}, n_features={self.n_features_in_}, "
                f"n_classes={self.n_classes_}, dtype={str(self.dtype).removeprefix('torch.')}, device={self.device!r})")

    def check_features(self, X: Any) -> None:
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            name = getattr(self.module, "source", None) or repr(self)
            raise DataError(f"{name} takes rows of {self.n_features_in_} features but X has shape {tuple(X.shape)}")

    def fit(self, X: Any, y: Any) -> Classifier:
        raise ConfigError("a wrapped torch module is used as already trained; train it yourself before wrap()")

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return self.module_(X)


class SklearnModel(EstimatorWrapper):
    """A fitted scikit-learn classifier or pipeline re-expressed exactly in torch (float64): scores equal the
    estimator's ``decision_function`` (an MLP's: its output logits), input gradients by autograd through every
    step down to the raw features. For a multiclass ``SVC`` the scores are scikit-learn's one-vs-rest ones, and
    ``predict`` its one-vs-one vote (see :class:`~transferlab.models.sklearn_torch.SVCHead` for the smooth part the
    gradient follows). Labels given to ``input_gradient`` are indices into ``classes_``."""

    dtype = torch.float64

    def _build(self, fitted: Any) -> None:
        self.set_pieces(*reexpress(fitted))

    def set_pieces(self, transforms: list[Piece], head: Piece) -> None:
        """Use these re-expressed steps (a pipeline's transforms, then its classifier)."""
        self.transforms_ = nn.Sequential(*transforms).to(device=self.torch_device, dtype=self.dtype)
        self.head_ = head.to(device=self.torch_device, dtype=self.dtype)
        self._folded = None  # the affine steps folded into the head's first product, computed when first asked

    def fit(self, X: Any, y: Any) -> SklearnModel:
        try:
            return super().fit(X, y)
        except NotReexpressible as exc:
            raise ConfigError(f"{describe(self.estimator)}: the fitted model cannot be re-expressed in torch ({exc}); "
                              "wrap it with differentiable=False to use it as a black-box target") from None

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return self.head_(self.transforms_(X))

    @property
    def affine_scores(self) -> bool:
        """A linear classifier, bare or after affine pipeline steps (scalers, projections, selectors), scores
        x Wᵀ + b."""
        return isinstance(self.head_, LinearHead) and self.affine_input() is not None

    def rbf_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
        """A bare binary RBF ``SVC`` scores [0, f], f = K(x, S) β + b (the head's pairwise value with its sign
        flipped); a multiclass one's scores are one-vs-rest votes, not a kernel expansion."""
        head = self.head_
        if len(self.transforms_) or not isinstance(head, SVCHead) or head.kernel != "rbf" or head.n_classes != 2:
            return None
        zero = torch.zeros_like(head.pair_coef)
        dual = torch.cat([zero, -head.pair_coef], 1)
        intercept = torch.cat([torch.zeros_like(head.intercept), -head.intercept])
        return head.support_vectors, head.sv_sq_norms, dual, intercept, head.gamma

    def affine_input(self) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None:
        """A linear model or MLP starts with x Wᵀ + b, and so does one after affine pipeline steps (unclipped
        scalers, PCA and other projections, feature selectors: folded into W and b once,
        :func:`~transferlab.models.sklearn_torch.fold_affine`): sparse rows are then scored without densifying,
        and the attacks' line search takes the closed form of the first product."""
        if isinstance(self.head_, LinearHead):
            first, tail = (self.head_.weight, self.head_.bias), (lambda z: z)
        elif isinstance(self.head_, MLPHead):
            first, tail = (self.head_.w0.T, self.head_.b0), self.head_.after_first_layer
        else:
            return None
        if not len(self.transforms_):
            return first[0], first[1], tail
        if self.n_features_in_ is None:  # a pipeline that does not say its width: not folded
            return None
        if getattr(self, "_folded", None) is None:
            self._folded = fold_affine(list(self.transforms_), first[0], first[1], self.n_features_in_) or False
        return None if self._folded is False else (self._folded[0], self._folded[1], tail)

    def predicted_index(self, X: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.head_, "predict_index"):
            return scores.argmax(1)
        return self.head_.predict_index(self.transforms_(X.to(self.dtype)))

    def predict(self, X: Any) -> np.ndarray:
        """Indices into ``classes_`` of the estimator's prediction (for an SVC, libsvm's vote rule)."""
        self._check_fitted()
        if not hasattr(self.head_, "predict_index"):
            return super().predict(X)
        parts = []
        for block in self._blocks(X):
            with torch.no_grad():
                xb = torch.as_tensor(block, dtype=self.dtype, device=self.torch_device)
                parts.append(self.head_.predict_index(self.transforms_(xb)).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def is_fitted(estimator: Any) -> bool:
    """Whether a scikit-learn estimator is fitted (scikit-learn's own test, as a bool)."""
    try:
        check_fitted(estimator)
    except ConfigError:
        return False
    return True


def _wrap_estimator(model: Any, recipe: bool, differentiable: bool | None, device: str) -> EstimatorWrapper:
    fitted = is_fitted(model)
    if not fitted and not recipe:
        check_fitted(model)  # the ConfigError naming the estimator and saying how to give a recipe
    reason = not_reexpressible(model)
    if reason is None and differentiable is not False:
        wrapped = SklearnModel(model, device=device)
        if not fitted:
            return wrapped
        try:
            return wrapped.adopt(model)
        except NotReexpressible as exc:
            reason = str(exc)
    if differentiable:
        raise ConfigError(f"{describe(model)} cannot be used where a gradient is needed: {reason}; use it as a "
                          "black-box target (models.wrap(estimator)) and attack it through a differentiable surrogate")
    wrapped = BlackBoxClassifier(model, reason or "wrapped with differentiable=False", device=device)
    return wrapped.adopt(model) if fitted else wrapped


def wrap(model: Any, n_classes: int | None = None, n_features: int | None = None, device: str = "cpu", *,
         recipe: bool = False, differentiable: bool | None = None) -> Classifier:
    """Wrap a user's model as a transferlab classifier.

    Parameters
    ----------
    model : a scikit-learn classifier or ``Pipeline`` ending in one (anything with ``fit`` and ``decision_function``
        or ``predict_proba``: LightGBM's ``LGBMClassifier`` too), fitted unless ``recipe``; or a torch ``nn.Module``
        mapping (n, n_features) inputs to (n, n_classes) logits (give ``n_classes`` and ``n_features``).
    recipe : accept an unfitted estimator: the wrapper is unfitted, and its ``fit(X, y)`` trains a clone of it.
    differentiable : None picks the exact torch re-expression where one exists, else a black box; True requires the
        re-expression (a ConfigError names the step that has none: use this for a surrogate); False always gives a
        black box scored by the estimator itself.

    Returns
    -------
    :class:`SklearnModel`, :class:`~transferlab.models.blackbox.BlackBoxClassifier` or :class:`WrappedModule`.
    """
    if isinstance(model, nn.Module):
        if n_classes is None or n_features is None:
            raise ConfigError("wrap(module) needs n_classes= and n_features=")
        wrapped = WrappedModule(model, n_classes, n_features, device)
        probe = torch.zeros(2, n_features, dtype=wrapped.dtype, device=wrapped.torch_device)
        try:
            with torch.no_grad():
                out = wrapped.scores(probe)
        except Exception as exc:  # the user's module: any failure on a batch of n_features inputs is theirs
            raise ConfigError(f"wrap: the module fails on a batch of {n_features} features ({type(exc).__name__}: "
                              f"{exc}); check n_features") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"wrap: the module must return class scores of shape (batch, {n_classes}), got {shape}; "
                              "return the logits of every class (two columns for a binary problem)")
        return wrapped
    if isinstance(model, Classifier):
        raise ConfigError(f"{type(model).__name__} is a transferlab classifier already; use it as it is")
    if hasattr(model, "fit") and (hasattr(model, "decision_function") or hasattr(model, "predict_proba")):
        wrapped = _wrap_estimator(model, recipe, differentiable, device)
        if hasattr(wrapped, "n_classes_"):
            for name, given, actual in (("n_classes", n_classes, wrapped.n_classes_),
                                        ("n_features", n_features, wrapped.n_features_in_)):
                if given is not None and given != actual:
                    raise ConfigError(f"wrap: {name}={given} was given but {describe(model)} has {actual}")
        return wrapped
    raise ConfigError(f"cannot wrap {type(model).__name__}: give a scikit-learn classifier or pipeline (with "
                      "decision_function or predict_proba), or a torch nn.Module returning logits")

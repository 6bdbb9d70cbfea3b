"""``wrap``: a user's fitted scikit-learn linear model or SVC, or a torch module returning logits, as a
transferlab classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models.base import Classifier
from transferlab.models.kernel import KernelSVM, kernel_parameters
from transferlab.models.linear import LinearClassifier, linear_parameters


class WrappedModule(Classifier):
    """A trained torch module mapping (n, n_features) inputs to (n, n_classes) logits, used as it is."""

    def __init__(self, module: nn.Module, n_classes: int, n_features: int, device: str = "cpu",
                 dtype: torch.dtype | None = None, batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.module = module
        first = next(module.parameters(), None)
        self.dtype = dtype or (first.dtype if first is not None else torch.float32)
        self.module_ = module.to(device=self.torch_device, dtype=dtype).eval()
        self.n_classes_ = n_classes
        self.n_features_in_ = n_features

    def fit(self, X: Any, y: Any) -> Classifier:
        raise ConfigError("a wrapped torch module is used as already trained; train it yourself before wrap()")

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return self.module_(X)


def wrap(model: Any, n_classes: int | None = None, n_features: int | None = None, device: str = "cpu") -> Classifier:
    """Wrap a fitted scikit-learn linear classifier (``coef_``/``intercept_``: LogisticRegression, RidgeClassifier,
    LinearSVC, SGDClassifier, ``SVC(kernel="linear")``...), a fitted ``SVC(kernel="rbf")`` (scored through its
    support vectors), or a torch ``nn.Module`` returning logits (give ``n_classes`` and ``n_features``)."""
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
    if getattr(model, "kernel", None) == "rbf" and hasattr(model, "support_vectors_"):
        if not isinstance(model.gamma, (int, float)):
            raise ConfigError("wrap needs an SVC fitted with a numeric gamma (not 'scale'/'auto')")
        wrapped = KernelSVM(C=model.C, gamma=float(model.gamma), device=device)
        wrapped.estimator_ = model
        wrapped.set_parameters(*kernel_parameters(model))
        return wrapped
    if hasattr(model, "coef_") and hasattr(model, "intercept_"):
        wrapped = LinearClassifier(device=device)
        wrapped.estimator_ = model
        wrapped.set_parameters(*linear_parameters(model))
        return wrapped
    raise ConfigError(f"cannot wrap {type(model).__name__}: give a fitted scikit-learn linear model or RBF SVC, "
                      "or a torch nn.Module returning logits")

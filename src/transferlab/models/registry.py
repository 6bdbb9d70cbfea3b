"""The paper's model zoo (Section 5): named specs with the paper's hyperparameters; ``create(name, **overrides)``.

H = weakly regularised (high complexity), L = strongly regularised (low complexity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferlab.errors import ConfigError
from transferlab.models.base import Classifier
from transferlab.models.forest import RandomForest
from transferlab.models.kernel import KernelSVM
from transferlab.models.linear import LinearSVM, Logistic, Ridge
from transferlab.models.neural import CNN, MLP


@dataclass(frozen=True)
class ModelSpec:
    factory: type[Classifier]
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    "svm_h": ModelSpec(LinearSVM, {"C": 100.0}, "linear SVM, weak regularisation"),
    "svm_l": ModelSpec(LinearSVM, {"C": 0.01}, "linear SVM, strong regularisation"),
    "logistic_h": ModelSpec(Logistic, {"C": 10.0}, "logistic regression, weak regularisation"),
    "logistic_l": ModelSpec(Logistic, {"C": 0.01}, "logistic regression, strong regularisation"),
    "ridge_h": ModelSpec(Ridge, {"alpha": 10.0}, "ridge classifier, weak regularisation"),
    "ridge_l": ModelSpec(Ridge, {"alpha": 100.0}, "ridge classifier, strong regularisation"),
    "svm_rbf_h": ModelSpec(KernelSVM, {"gamma": 0.01, "C": 100.0}, "RBF SVM, weak regularisation"),
    "svm_rbf_l": ModelSpec(KernelSVM, {"gamma": 0.01, "C": 1.0}, "RBF SVM, strong regularisation"),
    "nn_h": ModelSpec(MLP, {"hidden": (200, 200), "weight_decay": 0.0}, "MLP 2×200 ReLU, no weight decay"),
    "nn_l": ModelSpec(MLP, {"hidden": (200, 200), "weight_decay": 0.01}, "MLP 2×200 ReLU, weight decay 0.01"),
    "rf_h": ModelSpec(RandomForest, {"n_estimators": 100, "max_depth": None}, "random forest, unlimited depth"),
    "rf_l": ModelSpec(RandomForest, {"n_estimators": 100, "max_depth": 6}, "random forest, depth 6"),
    "cnn": ModelSpec(CNN, {"channels": (64, 64, 64), "dense": 32}, "small MNIST CNN (target in the paper)"),
}


def create(name: str, **overrides: Any) -> Classifier:
    """A new, unfitted classifier from the registry, with ``overrides`` replacing the paper's parameters
    (e.g. ``create("nn_h", epochs=5, device="cuda")``)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} (see `transferlab list models`)")
    spec = MODELS[name]
    try:
        return spec.factory(**{**spec.params, **overrides})
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def check_overrides(name: str, overrides: dict[str, Any]) -> None:
    """Overrides of a registry model's parameters, checked before any training: every key must be a parameter of
    the model and every value of the parameter's kind (a number for a number, a list for a tuple, ...)."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"model_overrides.{name}: give a mapping of parameters, e.g. {{epochs: 5}}")
    model = create(name)
    defaults = model.get_params()
    for key, value in overrides.items():
        if key not in defaults:
            raise ConfigError(f"model_overrides.{name}: {type(model).__name__} has no parameter {key!r}; it has "
                              f"{', '.join(defaults)}")
        default = defaults[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = (value is None or isinstance(default, bool) and isinstance(value, bool)
              or isinstance(default, (int, float)) and not isinstance(default, bool) and number
              or isinstance(default, (tuple, list)) and isinstance(value, (tuple, list))
              and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
              or isinstance(default, str) and isinstance(value, str)
              or default is None and (number or isinstance(value, str) or isinstance(value, (tuple, list))
                                      and all(isinstance(v, int) and not isinstance(v, bool) for v in value)))
        if not ok:
            raise ConfigError(f"model_overrides.{name}.{key}: expected a value like {default!r}, got {value!r}")
        if number and not np.isfinite(value):
            raise ConfigError(f"model_overrides.{name}.{key}: must be a finite number, got {value!r}")


def describe(name: str) -> dict[str, Any]:
    """All parameters of a registry model (paper values and defaults), for ``transferlab list models``."""
    return create(name).get_params()

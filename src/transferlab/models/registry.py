"""The paper's model zoo (Section 5): named specs with the paper's hyperparameters; ``create(name, **overrides)``.

H = weakly regularised (high complexity), L = strongly regularised (low complexity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferlab.errors import ConfigError, shown
from transferlab.models.estimator import Estimator
from transferlab.models.params import as_tuple
from transferlab.models.forest import RandomForest
from transferlab.models.kernel import KernelSVM
from transferlab.models.linear import LinearSVM, Logistic, Ridge
from transferlab.models.neural import CNN, MLP


@dataclass(frozen=True)
class ModelSpec:
    factory: type[Estimator]
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


def create(name: str, **overrides: Any) -> Estimator:
    """A new, unfitted classifier from the registry (a scikit-learn estimator), with ``overrides`` replacing the
    paper's parameters (e.g. ``create("nn_h", epochs=5, device="cuda")``); every override is checked first
    (:func:`check_overrides`), and a list given for a parameter of integers (a config's ``hidden: [50, 50]``)
    becomes a tuple, as the registry's own values are."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} (see `transferlab list models`)")
    spec = MODELS[name]
    if overrides:
        check_overrides(name, overrides, where=f"model {name!r}")
        rules = spec.factory.param_rules()
        overrides = {k: as_tuple(v) if k in rules and rules[k].kind == "ints" else v for k, v in overrides.items()}
    try:
        return spec.factory(**{**spec.params, **overrides})
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def check_overrides(name: str, overrides: Any, where: str | None = None) -> None:
    """Overrides of a registry model's parameters, checked before any training: every key must be a parameter of
    the model and every value one its class allows (the class's table of :class:`~transferlab.models.params.Param`
    rules, :meth:`~transferlab.models.base.Classifier.param_rules`: ``C: -1``, ``C: null`` or ``n_estimators: 0``
    are errors naming the parameter). ``where`` names them in messages (default: the config's
    ``model_overrides.<name>``)."""
    where = where or f"model_overrides.{name}"
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: give a mapping of parameters, e.g. {{epochs: 5}}")
    if name not in MODELS:
        raise ConfigError(f"model_overrides: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[name]
    defaults = spec.factory(**spec.params).get_params(deep=False)
    rules = spec.factory.param_rules()
    for key, value in overrides.items():
        if key not in defaults:
            raise ConfigError(f"{where}: {spec.factory.__name__} has no parameter {key!r}; it has "
                              f"{', '.join(spec.factory.param_names())}")
        rule = rules.get(key)
        if rule is not None:
            problem = None if rule.accepts(value) else f"must be {rule.describe()}, got {shown(value)}"
        else:
            problem = _kind_problem(defaults[key], value)
        if problem is not None:
            raise ConfigError(f"{where}.{key}: {problem}")


def _kind_problem(default: Any, value: Any) -> str | None:
    """For a parameter its class gives no rule for: the value must be of the default's kind (a number for a number,
    a list of integers for a tuple, text for text)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    integers = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ok = (isinstance(default, bool) and isinstance(value, bool)
          or isinstance(default, (int, float)) and not isinstance(default, bool) and number and np.isfinite(value)
          or isinstance(default, (tuple, list)) and integers
          or isinstance(default, str) and isinstance(value, str))
    return None if ok else f"expected a value like {default!r}, got {shown(value)}"


def describe(name: str) -> dict[str, Any]:
    """All parameters of a registry model (paper values and defaults), for ``transferlab list models``, in the
    constructor's order."""
    model = create(name)
    params = model.get_params(deep=False)
    return {key: params[key] for key in model.param_names()}

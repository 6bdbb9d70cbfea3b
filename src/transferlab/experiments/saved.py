"""A user's own models in a run: the config's ``saved_models`` (loaded on their device, checked against the data
and their role before any work), what the experiments need to know of them, and the model a train cell obtains
(a registry model trained, or a saved model imported as it is; a poisoning target's recipe retrained)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferlab import datasets, models
from transferlab.errors import ConfigError, DataError
from transferlab.experiments.common import create_model, model_device, model_seed
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.store import saved_model_files

#: the class names of a saved model shown in a message (a model may have thousands)
_SHOWN_CLASSES = 6


def _saved_where(config: ExperimentConfig, name: str) -> str:
    return f"saved_models.{name} ({config.saved_models[name]})"


def load_saved(config: ExperimentConfig, name: str, recipe: bool = False) -> models.Classifier:
    """The saved model ``name`` of the config (``saved_models: {name: PATH}``), on its device: a folder written by
    ``transferlab.models.save`` (a registry model or a wrapped one), a ``.skops`` file of a scikit-learn estimator
    or pipeline (re-expressed in torch where transferlab can, a black-box target otherwise), or an ``.onnx`` file.

    With ``recipe`` (the targets of a poisoning experiment, which are retrained) a ``.skops`` file may hold an
    unfitted estimator: it is then the recipe that ``fit`` trains. Any problem reading it is a one-line
    DataError/ConfigError naming ``saved_models.<name>`` and its path."""
    path = Path(config.saved_models[name])
    device = model_device(config, name)
    try:
        if path.suffix.lower() == ".skops" and not path.is_dir():
            from transferlab.models.blackbox import describe
            from transferlab.models.external import load_skops
            from transferlab.models.wrap import is_fitted

            estimator = load_skops(path)
            if not recipe and not is_fitted(estimator):
                raise ConfigError(f"it holds an unfitted {describe(estimator)}; fit it before saving it "
                                  "(skops.io.dump(estimator.fit(X, y), path)): an unfitted estimator is a recipe, "
                                  "which only the targets of a poisoning experiment take")
            return models.wrap(estimator, device=device, recipe=True)
        return models.load(path, device=device)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"{_saved_where(config, name)}: {exc}") from None


@dataclass(frozen=True)
class SavedFacts:
    """What the experiments need to know of a saved model, read once per process (:func:`saved_facts`)."""

    differentiable: bool
    fitted: bool
    #: why it has no input gradient ("" when it has one)
    reason: str
    #: why it cannot be retrained (None when ``fit`` retrains it: a recipe)
    not_retrainable: str | None


_FACTS: dict[tuple, SavedFacts] = {}


def _file_state(path: Path) -> tuple:
    """(name, size, modification time) of a model file, or of every file of a model folder: a changed file is
    read again."""
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in saved_model_files(path))


def saved_facts(config: ExperimentConfig, name: str, recipe: bool = False) -> SavedFacts:
    """:class:`SavedFacts` of the saved model ``name`` (loaded once per process and file state)."""
    key = _facts_key(config, name, recipe)
    if key not in _FACTS:
        _FACTS[key] = _facts_of(load_saved(config, name, recipe))
    return _FACTS[key]


def _facts_key(config: ExperimentConfig, name: str, recipe: bool) -> tuple:
    path = Path(config.saved_models[name])
    return str(path.resolve()), recipe, _file_state(path)


def _facts_of(model: models.Classifier) -> SavedFacts:
    from transferlab.models.blackbox import EstimatorWrapper

    fitted = hasattr(model, "n_classes_")
    reason = ""
    if not model.differentiable:
        reason = getattr(model, "reason", "") or ("it runs in ONNX Runtime, which gives no gradient"
                                                  if type(model).__name__ == "OnnxClassifier" else
                                                  f"a {type(model).__name__} has no input gradient")
    registry = {spec.factory for spec in models.MODELS.values()}
    if isinstance(model, EstimatorWrapper):
        why = None if model.estimator is not None else ("it was saved without its recipe (skops was not installed, "
                                                        "or the recipe holds types skops does not load)")
    elif type(model) in registry:
        why = None
    else:
        why = "it is an ONNX model (a network or a deployed detector), which transferlab runs but cannot train"
    return SavedFacts(bool(model.differentiable), fitted, reason, why)


def is_differentiable(config: ExperimentConfig, name: str) -> bool:
    """Whether model ``name`` (a registry or saved model) has an input gradient."""
    if name in config.saved_models:
        return saved_facts(config, name).differentiable
    return models.MODELS[name].factory.differentiable is not False


def _class_text(value: Any) -> str:
    """A class label as text; a whole-number float (8.0) as the integer it is (8), to compare with class names."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def check_classes(config: ExperimentConfig, name: str, classes: Any, dataset: datasets.Dataset) -> None:
    """The rule mapping a saved model's classes onto the dataset's labels 0..C−1 (ConfigError otherwise):

    1. its ``classes_`` are the dataset's class names (``dataset.classes``, compared as text) in the same order:
       class ``classes_[k]`` is label k (a model trained on ``["benign", "malware"]`` or on MNIST's digits 8/9);
    2. its ``classes_`` are the integers 0..C−1 in order: they are the labels (a model trained on ``dataset.y``).

    Anything else is refused, saying how to train the model instead: the names in another order (its score
    columns would not be the dataset's labels), or other labels (``[-1, 1]`` where the dataset's classes are
    ``benign``/``malware``: nothing says which is which). A model without ``classes_`` (a network) is taken to
    score labels 0..C−1."""
    if classes is None:
        return
    names = [str(c) for c in dataset.classes]
    got = [_class_text(c) for c in np.asarray(classes).tolist()]
    where = _saved_where(config, name)
    shown = lambda values: "[" + ", ".join(map(repr, values[:_SHOWN_CLASSES])) + (  # noqa: E731
        ", ..." if len(values) > _SHOWN_CLASSES else "") + "]"
    labels = ", ".join(f"{k} = {n!r}" for k, n in list(enumerate(names))[:_SHOWN_CLASSES]) + (
        ", ..." if len(names) > _SHOWN_CLASSES else "")
    fix = (f"train it with the dataset's labels (dataset.y: {labels}) or with its class names in that order, "
           "and save it again")
    if got == names:
        return
    values = np.asarray(classes)
    own = values.tolist()
    if sorted(got) == sorted(names):
        raise ConfigError(f"{where}: the model's classes {shown(own)} are the dataset's {shown(names)} in another "
                          f"order, so its score columns are not the dataset's labels; {fix}")
    if values.dtype.kind in "iuf" and np.array_equal(values, np.arange(len(names))):
        return
    raise ConfigError(f"{where}: the model's classes {shown(own)} are neither the dataset's class names "
                      f"{shown(names)} nor its labels 0..{len(names) - 1}; {fix}")


def check_saved_models(config: ExperimentConfig, dataset: datasets.Dataset, n_features: int,
                       poisoning: bool = False) -> None:
    """Every saved model of the config, before any work: it loads, takes ``n_features`` features and scores the
    dataset's classes (:func:`check_classes`), and fits its role — a surrogate of an evasion experiment needs an
    input gradient; a poisoning target is retrained on the poisoned data, so it must be a recipe (a scikit-learn
    estimator, fitted or not, or a registry model saved by ``models.save``; not an ONNX model)."""
    for name in config.saved_models:
        where = _saved_where(config, name)
        model = load_saved(config, name, recipe=poisoning)
        facts = _FACTS[_facts_key(config, name, poisoning)] = _facts_of(model)
        if poisoning and facts.not_retrainable is not None:
            raise ConfigError(f"{where}: a poisoning target is retrained on the poisoned data, and this model cannot "
                              f"be: {facts.not_retrainable}; give a .skops file of the scikit-learn estimator "
                              "(fitted or not), or a models.save folder of a wrapped estimator or a registry model: "
                              "the recipe the experiment retrains")
        if not facts.fitted:  # a recipe: it learns the data's width and classes when it is trained
            continue
        if model.n_features_in_ is not None and model.n_features_in_ != n_features:
            raise ConfigError(f"{where}: the model takes {model.n_features_in_:,} features, the data have "
                              f"{n_features:,}"
                              + (" after dataset.select_features" if config.dataset.select_features else "")
                              + "; train (or export) it on the data's features, in the data's column order")
        if model.n_classes_ != dataset.n_classes:
            raise ConfigError(f"{where}: the model scores {model.n_classes_} classes, dataset "
                              f"{dataset.name!r} has {dataset.n_classes}; train it on this dataset's classes")
        check_classes(config, name, getattr(model, "classes_", None), dataset)
        try:  # one row through the model: what is read is what runs (an ONNX input of another shape fails here)
            scores = model.decision_function(np.zeros((1, n_features)))
        except (ConfigError, DataError) as exc:
            raise type(exc)(f"{where}: the model fails on a row of the data's {n_features:,} features: {exc}") \
                from None
        if np.shape(scores) != (1, dataset.n_classes) or not np.all(np.isfinite(scores)):
            raise DataError(f"{where}: the model gives scores of shape {np.shape(scores)} (finite: "
                            f"{bool(np.all(np.isfinite(scores)))}) for one row of {dataset.n_classes} classes; "
                            "export its class scores or probabilities, one column per class")
        if not poisoning and name in config.surrogates and not facts.differentiable:
            raise ConfigError(f"surrogates: the saved model {name!r} is a black box ({facts.reason}): it has no "
                              "input gradient to craft attacks with; keep it as a target, and craft on a "
                              "differentiable surrogate (a registry model such as svm_rbf_h or nn_h, or a saved "
                              "linear model, SVC, MLPClassifier or pipeline of scalers ending in one)")


def recipe_seed(config: ExperimentConfig, repetition: int) -> int:
    """The ``random_state`` given to a saved recipe that leaves it unset (None), for repetition ``repetition``:
    scikit-learn takes seeds below 2**32."""
    return model_seed(config, repetition) % 2 ** 32


def retrainable_target(config: ExperimentConfig, name: str, repetition: int) -> models.Classifier:
    """The model a poisoning experiment retrains as target ``name`` ("your model" is the recipe that is retrained
    on the poisoned data): a registry model with the config's overrides and seed, or the saved model, whose ``fit``
    trains a clone of its estimator. Every ``random_state`` of that estimator (and of its pipeline steps) left at
    None is set to :func:`recipe_seed`, so a rerun retrains it the same way."""
    if name not in config.saved_models:
        return create_model(config, name, repetition)
    from transferlab.models.blackbox import EstimatorWrapper

    model = load_saved(config, name, recipe=True)
    estimator = model.estimator if isinstance(model, EstimatorWrapper) else None
    if estimator is not None:
        from sklearn.base import clone

        unset = {key: recipe_seed(config, repetition) for key, value in estimator.get_params(deep=True).items()
                 if (key == "random_state" or key.endswith("__random_state")) and value is None}
        if unset:
            model.estimator = clone(estimator).set_params(**unset)
    return model


def obtain_model(config: ExperimentConfig, name: str, repetition: int, draw: int, data: datasets.Dataset
                 ) -> models.Classifier:
    """The model of a train cell: a registry model trained on ``data``, or a saved model imported as it is."""
    if name in config.saved_models:  # checked against the data by the kind's check_data before any cell runs
        return load_saved(config, name)
    return create_model(config, name, repetition, draw).fit(data.X, data.y)


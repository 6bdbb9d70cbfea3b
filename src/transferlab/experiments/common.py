"""What every experiment kind shares: the cell key, a cell's output, the run's data (loaded, split and feature-
selected once per process), model creation with the config's overrides, and atomic writes of models and points.

A cell is a pure function of (config, cell key): the parsed config travels to the worker as an argument, no cell
reads the YAML again, and each cell runs with one torch and one BLAS thread, so results do not depend on how many
cells run side by side.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from transferlab import datasets, models
from transferlab.errors import ConfigError, DataError
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.store import run_path, sha256_file

WHITE_BOX, TRANSFER = "white-box", "transfer"


@dataclass(frozen=True)
class Cell:
    """The key of one unit of work. Its ``cell_id`` names it in the store (a finished cell is skipped on resume)."""

    stage: str
    repetition: int
    model: str
    role: str = ""              # train: "target" or "surrogate"; craft: WHITE_BOX or TRANSFER
    fraction: float = 1.0       # surrogate data fraction (train and transfer cells)
    draw: int = 0               # resample index of a surrogate (0: the surrogate itself)
    weight_decay: float = 0.0   # sweep cells
    poison_fraction: float = 0.0  # poisoning craft cells: poisoning points as a fraction of the training set

    @property
    def cell_id(self) -> str:
        if self.stage == "train" and self.role == "target":
            return f"train/r{self.repetition}/target/{self.model}"
        if self.stage == "train":
            return f"train/r{self.repetition}/surrogate/{self.model}/f{self.fraction:g}/d{self.draw}"
        if self.stage == "craft":
            suffix = "" if self.role == WHITE_BOX else f"/f{self.fraction:g}"
            poison = f"/p{self.poison_fraction:g}" if self.poison_fraction else ""
            return f"craft/r{self.repetition}/{self.role}/{self.model}{suffix}{poison}"
        return f"sweep/r{self.repetition}/wd{self.weight_decay:g}"


@dataclass
class CellOutput:
    cell_id: str
    stage: str
    seconds: float
    files: dict[str, str]
    info: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def train_cells(config: ExperimentConfig, surrogate_draws: int) -> list[Cell]:
    """Train cells: every target on the target data, and every surrogate on each data fraction, draw 0 being the
    surrogate itself and draws 1..surrogate_draws−1 the resampled surrogates for V. An ensemble surrogate trains
    its members; a saved model is imported (draw 0 only: it cannot be retrained on resamples)."""
    reps = range(config.repetitions)
    cells = [Cell("train", r, t, "target") for r in reps for t in config.targets]
    trained: list[str] = []
    for name in config.surrogates:
        for member in config.ensembles[name].members if name in config.ensembles else [name]:
            if member not in trained:
                trained.append(member)
    cells += [Cell("train", r, s, "surrogate", f, d) for r in reps for s in trained
              for f in config.surrogate_fractions for d in range(draws_of(config, s, surrogate_draws))]
    return cells


def draws_of(config: ExperimentConfig, name: str, surrogate_draws: int) -> int:
    """How many surrogates of ``name`` are trained per data fraction (1 for a saved model)."""
    return 1 if name in config.saved_models else surrogate_draws


def load_surrogate(run_dir: Path, config: ExperimentConfig, repetition: int, name: str, fraction: float,
                   draw: int) -> models.Classifier:
    """A trained surrogate of the run (an ensemble is assembled from its trained members)."""
    if name in config.ensembles:
        spec = config.ensembles[name]
        members = [load_trained(run_dir, config, Cell("train", repetition, m, "surrogate", fraction, draw))
                   for m in spec.members]
        return models.Ensemble(members, combine=spec.combine)
    return load_trained(run_dir, config, Cell("train", repetition, name, "surrogate", fraction, draw))


def obtain_model(config: ExperimentConfig, name: str, repetition: int, draw: int, data: datasets.Dataset
                 ) -> models.Classifier:
    """The model of a train cell: a registry model trained on ``data``, or a saved model imported as it is."""
    if name in config.saved_models:  # checked against the data by the kind's check_data before any cell runs
        return load_saved(config, name)
    return create_model(config, name, repetition, draw).fit(data.X, data.y)


def model_folder(cell: Cell) -> str:
    """Where a train cell saves its model, relative to the run folder."""
    return "models/" + cell.cell_id.removeprefix("train/")


# ---- the run's data, once per process ----------------------------------------------------------------------
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 6


def cached(key: tuple, make: Callable[[], Any]) -> Any:
    """The value of ``key`` in this process's small LRU cache (datasets, splits, a repetition's targets), made by
    ``make()`` on a miss. Cells are pure functions of their key, so a cached value is what a cell would compute."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = make()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    _CACHE.clear()


def _data_key(config: ExperimentConfig) -> tuple:
    return (config.dataset.name, config.dataset.path, json.dumps(config.dataset.options, sort_keys=True))


def load_dataset(config: ExperimentConfig) -> datasets.Dataset:
    """The config's dataset (loaded once per process)."""
    def make() -> datasets.Dataset:
        options = dict(config.dataset.options)
        if config.dataset.path is not None:
            options["path"] = config.dataset.path
        return datasets.load(config.dataset.name, **options)

    return cached(("dataset", *_data_key(config)), make)


def load_split(config: ExperimentConfig, repetition: int) -> datasets.Split:
    """The parts of one repetition; with ``dataset.select_features`` every part keeps the top-k features chosen on
    the target training part."""
    c = config

    def make() -> datasets.Split:
        parts = datasets.split(load_dataset(c), c.split.n_target, c.split.n_surrogate, c.split.n_test,
                               c.split.n_validation, repetition=repetition, seed=c.seed)
        if c.dataset.select_features is None:
            return parts
        from transferlab.datasets.selection import select_features

        columns = select_features(parts.target, c.dataset.select_features)
        keep = lambda d: None if d is None else d.select_columns(columns)  # noqa: E731
        return datasets.Split(keep(parts.target), keep(parts.surrogate), keep(parts.test), keep(parts.validation),
                              parts.repetition, parts.seed)

    key = ("split", *_data_key(c), c.dataset.select_features, c.split.model_dump_json(), c.seed, repetition)
    return cached(key, make)


def model_seed(config: ExperimentConfig, repetition: int, draw: int = 0) -> int:
    """The seed of a registry model trained in repetition ``repetition`` (draw ``draw``: a resampled surrogate)."""
    return config.seed * 100_003 + repetition * 101 + draw


def model_device(config: ExperimentConfig, name: str) -> str:
    """Where model ``name`` runs: its ``model_overrides`` device if it has one, else the config's device."""
    return config.model_overrides.get(name, {}).get("device", config.device)


def create_model(config: ExperimentConfig, name: str, repetition: int, draw: int = 0, **extra: Any) -> models.Classifier:
    """A registry model with the config's overrides and device; seeded models get a seed per repetition/draw
    (:func:`model_seed`) unless ``model_overrides`` gives the model its own ``seed`` (and its own ``device``), which
    is then used as given: for every repetition and resampled draw alike."""
    overrides = {**config.model_overrides.get(name, {}), **extra}
    model = models.create(name, **overrides)
    if "device" not in overrides:
        model.device = config.device
    if hasattr(model, "seed") and "seed" not in overrides:
        model.seed = model_seed(config, repetition, draw)
    for key in ("channels", "hidden", "image_shape"):
        if hasattr(model, key) and isinstance(getattr(model, key), list):
            setattr(model, key, tuple(getattr(model, key)))
    if getattr(model, "image_shape", ()) is None:
        # image models take the shape from the data (e.g. 62×47 faces), unless the config overrides it
        model.image_shape = load_dataset(config).image_shape
    return model


def trained_names(config: ExperimentConfig) -> list[str]:
    """The registry models a run trains: targets, surrogates and ensemble members (not saved models), and the
    sweep's MLP."""
    names: list[str] = []
    for name in [*config.targets, *config.surrogates, *(["nn_h"] if config.nn_sweep is not None else [])]:
        for member in config.ensembles[name].members if name in config.ensembles else [name]:
            if member not in config.saved_models and member not in names:
                names.append(member)
    return names


def check_devices(config: ExperimentConfig) -> None:
    """The config's device and every ``model_overrides`` device exist here (a ConfigError naming the field, before
    any work: ``cuda`` on a machine where torch sees no GPU)."""
    from transferlab.models.base import resolve_device

    fields = [("device", config.device)] + [(f"model_overrides.{name}.device", overrides["device"])
                                            for name, overrides in config.model_overrides.items()
                                            if "device" in overrides]
    for field_name, device in fields:
        try:
            resolve_device(device)
        except (ConfigError, RuntimeError) as exc:
            raise ConfigError(f"{field_name}: {exc}") from None


def check_model_sizes(config: ExperimentConfig, n_features: int, n_classes: int) -> None:
    """Every model the run trains, built with the config's overrides for data of ``n_features`` features and
    ``n_classes`` classes, holds at most :data:`~transferlab.models.base.MAX_PARAMETERS` weights (the shapes are
    computed without allocating): a 10⁶-unit layer is refused now, naming the model, not inside a cell."""
    from transferlab.models.base import MAX_PARAMETERS, layout_size

    for name in trained_names(config):
        model = create_model(config, name, 0)
        model.n_features_in_, model.n_classes_ = n_features, n_classes
        size = min(layout_size(layout) for layout in model.state_layouts())
        if size > MAX_PARAMETERS:
            raise ConfigError(f"model_overrides.{name}: {name} on {n_features:,} features and {n_classes} classes "
                              f"would hold {size:,} weights, more than the {MAX_PARAMETERS:,} transferlab trains; "
                              "use smaller layers or select features")


# ---- a user's own models: the config's saved_models ------------------------------------------------------------
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
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.is_file()) if path.is_dir() else []
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)


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


def save_model(model: models.Classifier, run_dir: Path, rel: str,
               extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Save a fitted model under a temporary name and rename it into place; ``extra`` goes to ``extra.json`` in
    the same folder (e.g. a detector threshold). Returns {relative path: sha256} of the files written."""
    final = run_path(run_dir, rel)  # inside the run folder, no link on the way: what is deleted below is ours
    tmp = run_path(run_dir, f"{rel}.tmp{os.getpid()}")
    _remove(tmp)
    models.save(model, tmp)  # a registry model: spec + weights; a wrapped one: spec + its .skops/.onnx/weights files
    if extra is not None:
        (tmp / "extra.json").write_text(json.dumps(extra))
    names = sorted(p.name for p in tmp.iterdir() if p.is_file())
    _remove(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return {f"{rel}/{name}": sha256_file(final / name) for name in names}


def _remove(path: Path) -> None:
    """Delete a file or folder of the run (``path`` comes from :func:`run_path`: inside the run folder, no link)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def load_model(run_dir: Path, cell: Cell, device: str) -> models.Classifier:
    return models.load(run_dir / model_folder(cell), device=device)


def load_trained(run_dir: Path, config: ExperimentConfig, cell: Cell) -> models.Classifier:
    """The model a train cell saved in the run folder, on the model's device (:func:`model_device`)."""
    return load_model(run_dir, cell, model_device(config, cell.model))


def load_extra(run_dir: Path, cell: Cell) -> dict[str, Any]:
    path = run_dir / model_folder(cell) / "extra.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def point_arrays(key: str, points: Any) -> dict[str, np.ndarray]:
    """Crafted points as the arrays of a points file: ``key`` as float32 rows for dense points; for scipy sparse
    points (sparse data) ``key_data`` (float32), ``key_indices``, ``key_indptr`` and ``key_shape`` of their CSR
    form (``scipy.sparse.csr_matrix((data, indices, indptr), shape)`` reads them back), so points of 545,334
    binary features take the room of their set features only."""
    import scipy.sparse as sp

    if not sp.issparse(points):
        return {key: np.asarray(points).astype(np.float32)}
    csr = sp.csr_matrix(points)
    return {f"{key}_data": csr.data.astype(np.float32), f"{key}_indices": csr.indices.astype(np.int32),
            f"{key}_indptr": csr.indptr.astype(np.int64), f"{key}_shape": np.asarray(csr.shape, dtype=np.int64)}


def read_points(npz: Any, key: str) -> Any:
    """The points stored under ``key`` by :func:`point_arrays` in an open points file (``np.load(path)``): a dense
    float32 array, or a scipy CSR matrix for points of sparse data."""
    import scipy.sparse as sp

    if key in npz:
        return npz[key]
    if f"{key}_data" not in npz:
        raise KeyError(f"{key} is not in this points file")
    shape = tuple(int(v) for v in npz[f"{key}_shape"])
    return sp.csr_matrix((npz[f"{key}_data"], npz[f"{key}_indices"], npz[f"{key}_indptr"]), shape=shape)


def save_points(run_dir: Path, cell: Cell, image_shape: tuple[int, int] | None = None,
                **arrays: np.ndarray) -> dict[str, str]:
    """Write a craft cell's points as a compressed npz (temporary name, then rename); returns {path: sha256}.
    With ``image_shape`` (image data) the file also holds it, so a report can draw the points as images."""
    if image_shape is not None:
        arrays["image_shape"] = np.asarray(image_shape, dtype=np.int64)
    rel = "points/" + cell.cell_id.removeprefix("craft/").replace("/", "_") + ".npz"
    final = run_path(run_dir, rel)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_path(run_dir, f"{rel}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, final)
    return {rel: sha256_file(final)}

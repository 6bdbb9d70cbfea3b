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
from transferlab.errors import ConfigError
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
        members = [load_model(run_dir, Cell("train", repetition, m, "surrogate", fraction, draw), config.device)
                   for m in spec.members]
        return models.Ensemble(members, combine=spec.combine)
    return load_model(run_dir, Cell("train", repetition, name, "surrogate", fraction, draw), config.device)


def obtain_model(config: ExperimentConfig, name: str, repetition: int, draw: int, data: datasets.Dataset
                 ) -> models.Classifier:
    """The model of a train cell: a registry model trained on ``data``, or a saved model imported as it is."""
    if name in config.saved_models:  # checked against the data by the kind's check_data before any cell runs
        return models.load(config.saved_models[name], device=config.device)
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


def create_model(config: ExperimentConfig, name: str, repetition: int, draw: int = 0, **extra: Any) -> models.Classifier:
    """A registry model with the config's overrides and device; seeded models get a seed per repetition/draw."""
    overrides = {**config.model_overrides.get(name, {}), **extra}
    model = models.create(name, **overrides)
    model.device = config.device
    if hasattr(model, "seed"):
        model.seed = config.seed * 100_003 + repetition * 101 + draw
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


def save_model(model: models.Classifier, run_dir: Path, rel: str,
               extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Save a fitted model under a temporary name and rename it into place; ``extra`` goes to ``extra.json`` in
    the same folder (e.g. a detector threshold). Returns {relative path: sha256} of the files written."""
    final = run_path(run_dir, rel)  # inside the run folder, no link on the way: what is deleted below is ours
    tmp = run_path(run_dir, f"{rel}.tmp{os.getpid()}")
    _remove(tmp)
    models.save(model, tmp)
    names = ["spec.json", "weights.safetensors"]
    if extra is not None:
        (tmp / "extra.json").write_text(json.dumps(extra))
        names.append("extra.json")
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


def load_extra(run_dir: Path, cell: Cell) -> dict[str, Any]:
    path = run_dir / model_folder(cell) / "extra.json"
    return json.loads(path.read_text()) if path.is_file() else {}


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

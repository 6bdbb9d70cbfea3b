"""What every experiment kind shares: the cell key, a cell's output, the train cells and the trained models a cell
takes as inputs, and model creation with the config's overrides.

A cell is a pure function of (config, cell key, the trained models it takes): the parsed config travels to the
worker as an argument, no cell reads the YAML again or touches the run folder, and each cell runs with one torch
and one BLAS thread, so results do not depend on how many cells run side by side, nor where. A cell *returns* what
it makes (its rows, and its artifacts: trained models, crafted points); the runner stores them
(:mod:`transferlab.experiments.artifacts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from transferlab import models
from transferlab.errors import ConfigError
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.data import load_dataset

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
    #                               (0: every fraction of the config, chained; attack.warm_start)

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
    """What a cell made: its rows (table -> rows), its info, and its ``artifacts`` ({path in the run folder:
    :class:`~transferlab.experiments.artifacts.ModelArtifact` or
    :class:`~transferlab.experiments.artifacts.PointsArtifact`}), which the runner writes before it records the
    cell."""

    cell_id: str
    stage: str
    seconds: float
    info: dict[str, Any]
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


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



def model_folder(cell: Cell) -> str:
    """Where the model of a train cell is stored, relative to the run folder."""
    return "models/" + cell.cell_id.removeprefix("train/")


def target_cell(repetition: int, name: str) -> Cell:
    """The train cell of target ``name`` in repetition ``repetition``."""
    return Cell("train", repetition, name, "target")


def surrogate_cells(config: ExperimentConfig, repetition: int, name: str, fraction: float, draw: int) -> list[Cell]:
    """The train cells whose models make surrogate ``name`` (an ensemble: one per member)."""
    members = config.ensembles[name].members if name in config.ensembles else [name]
    return [Cell("train", repetition, m, "surrogate", fraction, draw) for m in members]


def assemble_surrogate(config: ExperimentConfig, cells: list[Cell], model_of: Callable[[Cell], models.Classifier],
                       name: str) -> models.Classifier:
    """Surrogate ``name`` from the trained models of its :func:`surrogate_cells` (``model_of`` gives each one)."""
    if name in config.ensembles:
        return models.Ensemble([model_of(c) for c in cells], combine=config.ensembles[name].combine)
    return model_of(cells[0])


def trained_model(config: ExperimentConfig, inputs: Mapping[str, Any], cell: Cell) -> models.Classifier:
    """The model of train cell ``cell`` among a cell's ``inputs`` ({cell id: ModelArtifact}), on its device."""
    return inputs[cell.cell_id].load(model_device(config, cell.model))


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
        # image models take the shape from the data (e.g. 62×47 faces), unless the config overrides it (the config
        # refuses them with dataset.select_features, which leaves no image)
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


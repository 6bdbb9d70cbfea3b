"""Poisoning experiments (paper Section 5.2): plan and cells.

Stages: ``train`` (every target on its clean data: its error at poisoning fraction 0), then the ``craft`` cells of
each surrogate and surrogate data fraction, plus white-box cells crafted on each target that has implicit gradients.
With ``attack.warm_start`` (the default) one craft cell per surrogate and data fraction crafts every poisoning
fraction in ascending order, each attacker starting from the previous, smaller one's points
(``Poisoning.run(start=...)``): a curve over the fractions is then one attacker adding points. Without it, one
craft cell per poisoning fraction crafts from scratch. For each fraction a craft cell poisons, retrains every
target on its clean data plus the points, and scores it on clean test data; S and R use the validation loss in
place of the point loss (paper Section 4).

A target may be one of the config's ``saved_models``: "your model" is then the recipe that is retrained on the
poisoned data (a scikit-learn estimator, fitted or not, from a ``.skops`` file or a ``models.save`` folder of a
wrapped estimator; its ``fit`` trains a clone), scored like any target. It has no implicit gradient transferlab
knows, so it gets no white-box cell and S and R are undefined (NaN) for it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from transferlab import metrics, models
from transferlab.experiments.artifacts import ModelArtifact, points_artifact, points_file
from transferlab.experiments.common import (TRANSFER, WHITE_BOX, Cell, check_devices, check_model_sizes,
                                            create_model, model_folder, train_cells)
from transferlab.experiments.data import load_dataset, load_split
from transferlab.experiments.saved import check_saved_models, retrainable_target
from transferlab.experiments.config import ExperimentConfig

#: poisoning points at which S and R are computed (each needs an implicit gradient of surrogate and target)
METRIC_POINTS = 10


def plan(config: ExperimentConfig) -> list[list[Cell]]:
    """Clean targets, then the craft cells (transfer, and white-box on targets with implicit gradients): one per
    poisoning fraction, or with ``attack.warm_start`` one per chain of all fractions (its ``poison_fraction`` 0)."""
    reps = range(config.repetitions)
    train = [c for c in train_cells(config, 0) if c.role == "target"]
    poison = [0.0] if config.attack.warm_start else config.attack.fractions
    craft = [Cell("craft", r, s, TRANSFER, f, poison_fraction=p) for r in reps for s in config.surrogates
             for f in config.surrogate_fractions for p in poison]
    if config.white_box:
        capable = [t for t in config.targets if has_family(config, t)]
        craft += [Cell("craft", r, t, WHITE_BOX, 1.0, poison_fraction=p) for r in reps for t in capable for p in poison]
    return [train, craft]


def cell_fractions(config: ExperimentConfig, cell: Cell) -> list[float]:
    """The poisoning fractions craft cell ``cell`` crafts, ascending: its own, or every fraction of the config for
    a chained cell (``poison_fraction`` 0)."""
    return [cell.poison_fraction] if cell.poison_fraction else list(config.attack.fractions)


def n_poisoning_points(n_train: int, fraction: float) -> int:
    """The poisoning points of ``fraction`` of a training set of ``n_train`` points (at least one)."""
    return max(1, int(round(fraction * n_train)))


def check_data(config: ExperimentConfig) -> None:
    """Poisoning takes dense binary problems; checked before any work starts (with the sizes of the models and
    the saved targets: each loads, fits the data and can be retrained)."""
    split = load_split(config, 0)
    dataset = load_dataset(config)
    check_devices(config)
    check_model_sizes(config, split.test.X.shape[1], dataset.n_classes)
    check_saved_models(config, dataset, split.test.X.shape[1], poisoning=True)


def has_family(config: ExperimentConfig, name: str) -> bool:
    """Whether target ``name`` has a poisoning family (an implicit gradient): registry models of the logistic,
    ridge and SVM families; never a saved model."""
    from transferlab.attacks.poisoning import family_for
    from transferlab.errors import ConfigError

    if name in config.saved_models:
        return False
    try:
        family_for(models.create(name))
    except ConfigError:
        return False
    return True


def needs(config: ExperimentConfig, cell: Cell) -> list[Cell]:
    """The train cells whose models ``cell`` takes: none (a craft cell trains its surrogate and retrains every
    target on the poisoned data)."""
    return []


def run_cell(config: ExperimentConfig, cell: Cell, inputs: Mapping[str, ModelArtifact]):
    """Compute ``cell``; returns (info, rows, artifacts)."""
    return {"train": train, "craft": craft}[cell.stage](config, cell)


def train(config: ExperimentConfig, cell: Cell):
    """A target on its clean data (returned, for the runner to store), with its clean test error as the fraction-0 result."""
    split = load_split(config, cell.repetition)
    data = split.target
    model = retrainable_target(config, cell.model, cell.repetition).fit(data.X, data.y)
    accuracy = float(np.mean(model.predict(split.test.X) == split.test.y))
    rows = {"results": [{"attack": "poisoning", "repetition": cell.repetition, "surrogate": None, "fraction": None,
                         "target": cell.model, "setting": "clean", "budget": 0.0, "error": 1 - accuracy,
                         "n_points": len(split.test.y)}]}
    return {"n_train": len(data), "test_accuracy": accuracy}, rows, {model_folder(cell): ModelArtifact.of(model)}


def attack_seed(config: ExperimentConfig, repetition: int) -> int:
    """The seed of the poisoning start draw in repetition ``repetition`` (an attack seed has 63 bits; small ones
    stay as they are)."""
    return (config.seed * 100_003 + repetition * 101) % 2 ** 63


def craft(config: ExperimentConfig, cell: Cell):
    """Craft the poisoning sets of one surrogate (transfer: on its own data; white-box: on the target's data) at the
    cell's fractions (:func:`cell_fractions`; chained: each from the previous fraction's points), train every
    target on its clean training set plus each set, and score it on clean test data. S and R use the validation
    loss in place of the point loss (paper Section 4): the implicit gradients of target and surrogate at the
    poisoning points (first METRIC_POINTS of them); V is the variance of the validation loss over surrogates
    trained on resampled surrogate data (it does not depend on the points: computed once per cell)."""
    from transferlab.attacks.poisoning import Poisoning, family_for

    split = load_split(config, cell.repetition)
    X_val, y_val = split.validation.X, split.validation.y
    source_data = split.target if cell.role == WHITE_BOX else split.surrogate_subsample(cell.fraction)
    seed = attack_seed(config, cell.repetition)
    surrogate = create_model(config, cell.model, cell.repetition)
    variance = float("nan")
    results: list[dict] = []
    metric_rows: list[dict] = []
    artifacts: dict = {}
    infos: list[dict] = []
    start = None
    for k, poison_fraction in enumerate(cell_fractions(config, cell)):
        n_points = n_poisoning_points(len(split.target), poison_fraction)
        attack = Poisoning(surrogate=surrogate, n_points=n_points, lb=config.attack.lb, ub=config.attack.ub,
                           seed=seed, settings=config.attack.solver)
        r = attack.run(source_data.X, source_data.y, X_val, y_val, start=start)
        start = r  # the next (larger) attacker of a chained cell starts from these points
        # a fresh family per set: its fits are warm-started from its previous fit (logistic's lbfgs), so each set's
        # metrics are computed as a cell of that fraction alone computes them
        family = family_for(surrogate)
        src_grads = _source_gradients(family, source_data, r, X_val, y_val)
        if k == 0 and cell.role == TRANSFER:
            # the surrogate's own data (draw 0) and its resamples, as for evasion; fitted after the first set's
            # surrogate (as a cell of one fraction always has: the goldens hold V to 1e-9)
            losses = [family.validation_loss(family.fit(d.X, d.y), X_val, y_val) for d in
                      (split.surrogate_subsample(cell.fraction, draw) for draw in range(config.variance.n_surrogates))]
            variance = metrics.loss_variance(np.asarray(losses)[:, None])
        rows, metric_part = _evaluate(config, cell, split, r, poison_fraction, src_grads, variance)
        results += rows
        metric_rows += metric_part
        if config.keep_points:
            # the points' own start (a chained attacker's given rows have no training index), else their draw
            X_start = r.X_start if r.X_start is not None else source_data.X[r.initial_indices]
            artifacts[points_file(replace(cell, poison_fraction=poison_fraction))] = points_artifact(
                source_data.image_shape, X=r.X_p.astype(np.float32), y=r.y_p,
                X_start=X_start.astype(np.float32))
        infos.append({"n_points": n_points, "validation_loss_clean": r.validation_loss_clean,
                      "validation_loss_poisoned": r.validation_loss_poisoned, "passes": r.passes,
                      "validation_error_poisoned": r.validation_error_poisoned, "from_start": r.from_start,
                      "inert": r.inert})
    if cell.poison_fraction:  # a cell of one fraction: its info as before chaining existed
        info = {key: value for key, value in infos[0].items()
                if key not in ("validation_error_poisoned", "from_start", "inert")}
    else:
        info = {"fractions": cell_fractions(config, cell), "chain": infos}
    return info, {"results": results, "metrics": metric_rows}, artifacts


def _source_gradients(family, source_data, r, X_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    """The implicit gradients of the surrogate (``family``) trained on its data plus the points of ``r``, at the
    first METRIC_POINTS of them."""
    X_src, y_src = np.vstack([source_data.X, r.X_p]), np.r_[source_data.y, r.y_p]
    src_params = family.fit(X_src, y_src)
    k_points = min(METRIC_POINTS, len(r.X_p))
    return family.gradients(src_params, X_src, y_src, len(source_data) + np.arange(k_points), X_val, y_val)


def _evaluate(config: ExperimentConfig, cell: Cell, split, r, poison_fraction: float, src_grads: np.ndarray,
              variance: float) -> tuple[list[dict], list[dict]]:
    """The results and metrics rows of one poisoning set ``r`` (at ``poison_fraction``) of craft cell ``cell``:
    every target retrained on its clean data plus the points and scored on clean test data; S and R from the
    targets' implicit gradients at the first METRIC_POINTS points and the surrogate's (``src_grads``); V as given."""
    from transferlab.attacks.poisoning import family_for

    X_p, y_p = r.X_p, r.y_p
    X_val, y_val = split.validation.X, split.validation.y
    if cell.role == WHITE_BOX:
        target_names, fraction = [cell.model], None
    else:
        target_names, fraction = config.targets, cell.fraction
    k_points = min(METRIC_POINTS, len(X_p))
    base = {"attack": "poisoning", "repetition": cell.repetition, "surrogate": cell.model, "fraction": fraction}
    results, metric_rows = [], []
    X_tgt, y_tgt = np.vstack([split.target.X, X_p]), np.r_[split.target.y, y_p]
    n_tgt = len(split.target)
    for name in target_names:
        target = retrainable_target(config, name, cell.repetition).fit(X_tgt, y_tgt)
        error = metrics.transfer_rate(target.predict(split.test.X), split.test.y)
        results.append({**base, "target": name, "setting": cell.role, "budget": poison_fraction, "error": error,
                        "n_points": len(split.test.y)})
        t_grads = None
        if cell.role == WHITE_BOX:  # the target is the surrogate, trained on the same data: the same gradients
            t_grads = src_grads
        elif has_family(config, name):
            tfam = family_for(create_model(config, name, cell.repetition))
            t_params = tfam.fit(X_tgt, y_tgt)
            t_grads = tfam.gradients(t_params, X_tgt, y_tgt, n_tgt + np.arange(k_points), X_val, y_val)
        s_value = r_value = float("nan")
        if t_grads is not None:
            s_value = metrics.gradient_size(t_grads, 2)
            r_value = metrics.gradient_alignment(src_grads, t_grads)
        metric_rows.append({**base, "target": name, "setting": cell.role, "S": s_value, "R": r_value, "V": variance})
    return results, metric_rows

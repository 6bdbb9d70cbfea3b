"""Poisoning experiments (paper Section 6): plan and cells.

Stages: ``train`` (every target on its clean data: its error at poisoning fraction 0), then one ``craft`` cell per
surrogate, surrogate data fraction and poisoning fraction, plus white-box cells crafted on each target that has
implicit gradients. A craft cell poisons, retrains every target on its clean data plus the points, and scores it on
clean test data; S and R use the validation loss in place of the point loss (paper Section 4).

A target may be one of the config's ``saved_models``: "your model" is then the recipe that is retrained on the
poisoned data (a scikit-learn estimator, fitted or not, from a ``.skops`` file or a ``models.save`` folder of a
wrapped estimator; its ``fit`` trains a clone), scored like any target. It has no implicit gradient transferlab
knows, so it gets no white-box cell and S and R are undefined (NaN) for it.
"""

from __future__ import annotations

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
    """Clean targets, then the craft cells (transfer, and white-box on targets with implicit gradients)."""
    reps = range(config.repetitions)
    train = [c for c in train_cells(config, 0) if c.role == "target"]
    poison = config.attack.fractions
    craft = [Cell("craft", r, s, TRANSFER, f, poison_fraction=p) for r in reps for s in config.surrogates
             for f in config.surrogate_fractions for p in poison]
    if config.white_box:
        capable = [t for t in config.targets if has_family(config, t)]
        craft += [Cell("craft", r, t, WHITE_BOX, 1.0, poison_fraction=p) for r in reps for t in capable for p in poison]
    return [train, craft]


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


def craft(config: ExperimentConfig, cell: Cell):
    """Craft a poisoning set on one surrogate (transfer: on its own data; white-box: on the target's data), train
    every target on its clean training set plus the points, and score it on clean test data. S and R use the
    validation loss in place of the point loss (paper Section 4): the implicit gradients of target and surrogate
    at the poisoning points (first METRIC_POINTS of them); V is the variance of the validation loss over
    surrogates trained on resampled surrogate data."""
    from transferlab.attacks.poisoning import Poisoning
    from transferlab.attacks.poisoning import family_for

    split = load_split(config, cell.repetition)
    poison_fraction = cell.poison_fraction
    n_points = max(1, int(round(poison_fraction * len(split.target))))
    X_val, y_val = split.validation.X, split.validation.y
    if cell.role == WHITE_BOX:
        source_data, target_names, fraction = split.target, [cell.model], None
    else:
        source_data, target_names, fraction = split.surrogate_subsample(cell.fraction), config.targets, cell.fraction
    seed = (config.seed * 100_003 + cell.repetition * 101) % 2 ** 63  # an attack seed has 63 bits; small ones stay
    surrogate = create_model(config, cell.model, cell.repetition)
    attack = Poisoning(surrogate=surrogate, n_points=n_points, lb=config.attack.lb, ub=config.attack.ub, seed=seed,
                       settings=config.attack.solver)
    r = attack.run(source_data.X, source_data.y, X_val, y_val)
    X_p, y_p = r.X_p, r.y_p
    family = family_for(surrogate)
    X_src, y_src = np.vstack([source_data.X, X_p]), np.r_[source_data.y, y_p]
    src_params = family.fit(X_src, y_src)
    n_src = len(source_data)
    k_points = min(METRIC_POINTS, n_points)
    src_grads = family.gradients(src_params, X_src, y_src, n_src + np.arange(k_points), X_val, y_val)
    variance = float("nan")
    if cell.role == TRANSFER:
        # the surrogate's own data (draw 0) and its resamples, as for evasion
        losses = [family.validation_loss(family.fit(d.X, d.y), X_val, y_val) for d in
                  (split.surrogate_subsample(cell.fraction, draw) for draw in range(config.variance.n_surrogates))]
        variance = metrics.loss_variance(np.asarray(losses)[:, None])
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
    start = source_data.X[r.initial_indices].astype(np.float32)
    artifacts = {points_file(cell): points_artifact(load_dataset(config).image_shape, X=X_p.astype(np.float32),
                                                    y=y_p, X_start=start)} if config.keep_points else {}
    info = {"n_points": n_points, "validation_loss_clean": r.validation_loss_clean,
            "validation_loss_poisoned": r.validation_loss_poisoned, "passes": r.passes}
    return info, {"results": results, "metrics": metric_rows}, artifacts

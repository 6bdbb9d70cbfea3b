"""Evasion experiments (paper Section 5.1): plan and cells.

Stages (each depends only on earlier ones):
1. ``train``: fit one model (a target on the target data; a surrogate on a fraction of the surrogate data, draw 0
   being the surrogate itself and draws 1.. the resampled surrogates for V) and return it. With ``detector.fpr`` a
   target also gets its threshold, set on its clean scores of the negative class in the split's validation part
   (the defender's calibration data) or, when the split has none, in its training data — an overfit model
   separates its own training data too well for that to hold on new data.
2. ``craft``: craft the attacks for every budget on one source model (a surrogate: *transfer*; a target:
   *white-box*), then evaluate every target on them: error (the evasion rate when one class is attacked), S, R,
   and V of the surrogate.
3. ``sweep``: the Fig. 3 weight-decay sweep of the MLP (when the config asks for it).

The threat model comes from the config's ``attack`` section through the attack registry; nothing here is
specific to a dataset.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from transferlab import attacks, datasets, metrics, models
from transferlab.attacks.constraints import dual_norm, parse_norm
from transferlab.errors import ConfigError, DataError
from transferlab.experiments.artifacts import ModelArtifact, point_arrays, points_artifact, points_file
from transferlab.experiments.common import (TRANSFER, WHITE_BOX, Cell, assemble_surrogate, check_devices,
                                            check_model_sizes, create_model, draws_of, model_folder,
                                            surrogate_cells, target_cell, train_cells, trained_model)
from transferlab.experiments.data import cached, load_dataset, load_split
from transferlab.experiments.saved import check_saved_models, is_differentiable, obtain_model
from transferlab.experiments.config import ExperimentConfig


def plan(config: ExperimentConfig) -> list[list[Cell]]:
    """The cells of each stage, in a fixed order."""
    reps = range(config.repetitions)
    train = train_cells(config, config.variance.n_surrogates)
    craft = [Cell("craft", r, s, TRANSFER, f) for r in reps for s in config.surrogates for f in config.surrogate_fractions]
    if config.white_box:
        craft += [Cell("craft", r, t, WHITE_BOX) for r in reps for t in config.targets if is_differentiable(config, t)]  # no gradient, no white-box cell
    sweep = []
    if config.nn_sweep is not None:
        sweep = [Cell("sweep", r, "nn_h", weight_decay=wd) for r in reps for wd in config.nn_sweep.weight_decays]
    return [stage for stage in (train, craft, sweep) if stage]


def check_data(config: ExperimentConfig) -> None:
    """Problems of the config with the data that would otherwise surface inside a cell: raised before any work."""
    dataset = load_dataset(config)
    attacked_label(config, dataset)
    if config.detector.fpr is not None and dataset.n_classes != 2:
        raise ConfigError(f"detector.fpr needs a two-class problem; {dataset.name!r} has {dataset.n_classes} classes")
    split = load_split(config, 0)
    manipulable(config, split.test)
    check_devices(config)
    check_model_sizes(config, split.test.X.shape[1], dataset.n_classes)
    check_saved_models(config, dataset, split.test.X.shape[1])
    if config.attack.binary:
        values = split.test.X.data if sp.issparse(split.test.X) else split.test.X
        if not np.isin(values, (0.0, 1.0)).all():
            raise DataError(f"attack.binary is set but dataset {dataset.name!r} holds values other than 0 and 1")


def attacked_test(config: ExperimentConfig, split: datasets.Split) -> datasets.Dataset:
    """The test points the attacks run on: those of ``attack.attack_class`` (:func:`attacked_label`), or all."""
    label = attacked_label(config, load_dataset(config))
    return split.test if label is None else split.test.subset(np.flatnonzero(split.test.y == label))


def attacked_label(config: ExperimentConfig, dataset: datasets.Dataset) -> int | None:
    """The label of ``attack.attack_class`` (a class name or a label number), None when every point is attacked."""
    wanted = config.attack.attack_class
    if wanted is None:
        return None
    names = [str(c) for c in dataset.classes]
    if str(wanted) in names:
        return names.index(str(wanted))
    if isinstance(wanted, int) and 0 <= wanted < len(names):
        return wanted
    raise ConfigError(f"config field 'attack.attack_class': {wanted!r} is not a class of dataset "
                      f"{dataset.name!r}; its classes are {', '.join(names)}")


def manipulable(config: ExperimentConfig, part: datasets.Dataset) -> np.ndarray | None:
    """The mask of features the attacker may change (``attack.manipulable`` prefixes), None for all."""
    if config.attack.manipulable is None:
        return None
    return attacks.manipulable_mask(part.feature_names, config.attack.manipulable)


def make_attack(config: ExperimentConfig, eps: float, mask: np.ndarray | None = None) -> attacks.EvasionAttack:
    """The configured attack at budget ``eps``, with the config's threat-model pieces and its settings
    (``attack.solver``, already validated by the config)."""
    a = config.attack
    return attacks.evasion_attack(a.kind, norm=a.norm, eps=eps, lb=a.lb, ub=a.ub,
                                  constraints=threat_pieces(config, mask), loss=a.loss, settings=a.solver)


def threat_pieces(config: ExperimentConfig, mask: np.ndarray | None = None) -> tuple[attacks.Constraint, ...]:
    """The config's threat-model pieces besides the ball and the box (feature addition, binary, the mask of
    :func:`manipulable`, quantisation), as the attacks and the audit take them."""
    a = config.attack
    return attacks.threat_model(a.feature_addition, a.binary, mask, a.quantize)


def dense(X: Any) -> np.ndarray:
    """Attacked rows as a dense array (only the rows an attack runs on are ever densified)."""
    return X.toarray() if sp.issparse(X) else X


#: most input-gradient values held at once while S and R are computed (2**24 float64: 128 MiB); wider data (DREBIN's
#: 545,334 features) go through in row blocks, never as a whole n_test × d gradient
GRADIENT_BLOCK_ELEMENTS = 1 << 24


def row_blocks(n_rows: int, n_features: int) -> list[slice]:
    """Row blocks of at most :data:`GRADIENT_BLOCK_ELEMENTS` values (one block when everything fits)."""
    rows = max(1, GRADIENT_BLOCK_ELEMENTS // max(1, n_features))
    return [slice(i, min(i + rows, n_rows)) for i in range(0, n_rows, rows)] or [slice(0, 0)]


def size_and_alignment(source: models.Classifier, targets: dict[str, tuple[models.Classifier, np.ndarray | None]],
                       X: Any, y: np.ndarray, loss: str, q: float) -> dict[str, tuple[float, float]]:
    """S (Eq. 17) of each target and R (Eq. 18) of the pair (source, target), {name: (S, R)}, at the points
    (X, y) (dense or scipy sparse). ``targets`` maps a name to the differentiable target and its input gradient at
    these points when it is at hand (else None); a target that is ``source`` itself (white-box) reuses the source's
    gradient. When the gradients fit in one block (:func:`row_blocks`) they are computed whole, as the metrics
    define them; otherwise S and R are accumulated over row blocks (both are means over points), so no more than
    one block of each gradient is held at once."""
    blocks = row_blocks(X.shape[0], X.shape[1])
    if len(blocks) == 1:
        source_grad = source.input_gradient(X, y, loss)
        out = {}
        for name, (target, grad) in targets.items():
            if target is source:
                grad = source_grad
            elif grad is None:
                grad = target.input_gradient(X, y, loss)
            out[name] = (metrics.gradient_size(grad, q), metrics.gradient_alignment(source_grad, grad))
        return out
    sums = {name: [0.0, 0.0] for name in targets}
    for rows in blocks:
        source_grad = source.input_gradient(X[rows], y[rows], loss)
        weight = rows.stop - rows.start
        for name, (target, _) in targets.items():
            grad = source_grad if target is source else target.input_gradient(X[rows], y[rows], loss)
            sums[name][0] += metrics.gradient_size(grad, q) * weight
            sums[name][1] += metrics.gradient_alignment(source_grad, grad) * weight
            del grad
    n = X.shape[0]
    return {name: (s / n, r / n) for name, (s, r) in sums.items()}


# ---- the detector ----------------------------------------------------------------------------------------
def detection_score(model: models.Classifier, X: Any, positive: int = 1) -> np.ndarray:
    """s(x) = f_positive(x) − f_other(x) of a two-class model: larger means more of the ``positive`` class."""
    scores = model.decision_function(X)
    return scores[:, positive] - scores[:, 1 - positive]


def fpr_threshold(model: models.Classifier, X_negative: Any, fpr: float, positive: int = 1) -> float:
    """The threshold t with s(x) > t read as the positive class, such that at most ``fpr`` of the negative
    points lie above it (the empirical (1 − fpr)-quantile, taken at an observed score)."""
    s = np.sort(detection_score(model, X_negative, positive))
    if s.size == 0:
        raise DataError("detector.fpr needs negative-class points in the target's calibration data")
    k = int(np.ceil((1 - fpr) * s.size)) - 1
    return float(s[min(max(k, 0), s.size - 1)])


def decide(model: models.Classifier, X: Any, threshold: float | None, positive: int) -> np.ndarray:
    """Predicted labels: the model's own decision, or ``positive`` where s(x) > threshold (two classes)."""
    if threshold is None:
        return model.predict(X)
    return np.where(detection_score(model, X, positive) > threshold, positive, 1 - positive)


# ---- cells -----------------------------------------------------------------------------------------------
def needs(config: ExperimentConfig, cell: Cell) -> list[Cell]:
    """The train cells whose models ``cell`` takes as inputs: a white-box craft cell its target; a transfer craft
    cell its surrogate's draws (an ensemble's members) and every target."""
    if cell.stage == "sweep":
        same = sweep_target(config, cell)
        return [] if same is None else [target_cell(cell.repetition, same)]
    if cell.stage != "craft":
        return []
    if cell.role == WHITE_BOX:
        return [target_cell(cell.repetition, cell.model)]
    draws = range(draws_of(config, cell.model, config.variance.n_surrogates))
    return [*(c for d in draws for c in surrogate_cells(config, cell.repetition, cell.model, cell.fraction, d)),
            *(target_cell(cell.repetition, t) for t in config.targets)]


#: relative CPU cost of training a registry model's family on the full data, and of one white-box security curve
#: on it (measured on MNIST89, 5,900 training and 1,000 attacked points: bench/grid.py); only the order in which
#: the processes executor hands cells out depends on them (:func:`cost`), never what a cell computes
_TRAIN_COST = {"MLP": 8.0, "CNN": 100.0, "KernelSVM": 1.7, "RandomForest": 1.5, "Logistic": 1.0, "LinearSVM": 1.0,
               "Ridge": 0.3}
_ATTACK_COST = {"MLP": 8.0, "CNN": 200.0, "KernelSVM": 10.0}
#: the cost of a transfer cell's evaluation of its targets (and of V), on top of its attack
_EVALUATION_COST = 1.5


def _family(config: ExperimentConfig, name: str) -> str:
    if name in config.saved_models:
        return ""
    if name in config.ensembles:
        return max((_family(config, m) for m in config.ensembles[name].members),
                   key=lambda f: _ATTACK_COST.get(f, 0.5))
    return models.MODELS[name].factory.__name__


def cost(config: ExperimentConfig, cell: Cell) -> float:
    """A rough estimate of a cell's CPU time (arbitrary units), for the processes executor to hand the most
    expensive ready cells out first, so that its workers finish together."""
    if cell.stage == "train":
        return _TRAIN_COST.get(_family(config, cell.model), 1.0) * (cell.fraction if cell.role == "surrogate" else 1.0)
    if cell.stage == "sweep":  # one budget; no training when it takes a target (sweep_target)
        return _ATTACK_COST["MLP"] / 8 + (0.0 if sweep_target(config, cell) else _TRAIN_COST["MLP"])
    attack = _ATTACK_COST.get(_family(config, cell.model), 0.5) * len(config.attack.eps) / 9
    return attack + (_EVALUATION_COST * len(config.targets) / 12 if cell.role == TRANSFER else 0.0)


def run_cell(config: ExperimentConfig, cell: Cell, inputs: Mapping[str, ModelArtifact]):
    """Compute ``cell`` from the trained models it needs (``inputs``: {cell id: ModelArtifact}, see
    :func:`needs`); returns (info, rows, artifacts)."""
    return {"train": train, "craft": craft, "sweep": sweep}[cell.stage](config, cell, inputs)


def train(config: ExperimentConfig, cell: Cell, inputs: Mapping[str, ModelArtifact]):
    split = load_split(config, cell.repetition)
    data = split.target if cell.role == "target" else split.surrogate_subsample(cell.fraction, cell.draw)
    model = obtain_model(config, cell.model, cell.repetition, cell.draw, data)
    info: dict[str, Any] = {"n_train": 0 if cell.model in config.saved_models else len(data),
                            "test_accuracy": float(np.mean(model.predict(split.test.X) == split.test.y))}
    extra = None
    if cell.role == "target" and config.detector.fpr is not None:
        positive = _positive(config)
        calibration = split.validation if split.validation is not None else data
        threshold = fpr_threshold(model, calibration.X[calibration.y != positive], config.detector.fpr, positive)
        negatives = split.test.y != positive
        info["test_fpr"] = float(np.mean(decide(model, split.test.X[negatives], threshold, positive) == positive))
        info["threshold"] = threshold
        extra = {"threshold": threshold, "positive": positive}
    return info, {}, {model_folder(cell): ModelArtifact.of(model, extra)}


def _positive(config: ExperimentConfig) -> int:
    """The class a detector flags: the attacked class, or class 1 when every point is attacked."""
    label = attacked_label(config, load_dataset(config))
    return 1 if label is None else label


def craft(config: ExperimentConfig, cell: Cell, inputs: Mapping[str, ModelArtifact]):
    """Craft the attacks of one source model at every budget and evaluate every target on them.

    Sparse test data stay sparse: targets score the clean and crafted points as scipy CSR rows (crafted points are
    stored sparse too), S and R go through the gradients in row blocks (:func:`size_and_alignment`), and only the
    rows the attack runs on are densified for it."""
    split = load_split(config, cell.repetition)
    test = attacked_test(config, split)
    X, y = test.X, test.y
    sparse = sp.issparse(X)
    mask = manipulable(config, split.test)
    loss, q = config.attack.loss, dual_norm(parse_norm(config.attack.norm))
    if cell.role == WHITE_BOX:
        source_data, target_names, fraction = split.target, [cell.model], None
        source = trained_model(config, inputs, target_cell(cell.repetition, cell.model))
    else:
        source_data, target_names, fraction = split.surrogate_subsample(cell.fraction), config.targets, cell.fraction
        source = _surrogate(config, inputs, cell, 0)
    crafted: dict[float, Any] = {eps: X for eps in config.attack.eps if eps == 0}  # ε = 0 is never attacked
    budgets = [eps for eps in config.attack.eps if eps > 0]
    if budgets:
        attack = make_attack(config, budgets[0], mask)
        # greedy addition at budget k+1 continues the greedy path of budget k: starting there gives the same points
        # as starting from x0; for other attacks attack.warm_start asks for it
        double_init = cell.model in config.attack.double_init
        curve = attacks.security_curve(attack, source, dense(X), y, budgets,
                                       warm_start=config.attack.warm_start or attack.continues_its_path,
                                       double_init=double_init, pool=source_data.X if double_init else None)
        for eps, result in zip(curve.eps, curve.results):
            crafted[eps] = sp.csr_matrix(result.x_adv) if sparse else result.x_adv
    variance = float("nan")
    if cell.role == TRANSFER:
        n_draws = draws_of(config, cell.model, config.variance.n_surrogates)
        draws = [source] + [_surrogate(config, inputs, cell, d) for d in range(1, n_draws)]
        if len(draws) > 1:
            variance = metrics.loss_variance(np.stack([m.loss(X, y, loss) for m in draws]))
    results, metric_rows = [], []
    base = {"attack": "evasion", "repetition": cell.repetition, "surrogate": cell.model, "fraction": fraction}
    positive = _positive(config)
    differentiable: dict[str, tuple[models.Classifier, np.ndarray | None]] = {}
    for name in target_names:
        trained = target_cell(cell.repetition, name)
        threshold = (inputs[trained.cell_id].extra or {}).get("threshold")
        if cell.role == WHITE_BOX:
            target, target_grad, clean = source, None, None
        else:
            target, target_grad, clean = _target_state(config, inputs, trained, X, y, threshold, positive)
        for eps, X_adv in crafted.items():
            predicted = clean if (eps == 0 and clean is not None) else decide(target, X_adv, threshold, positive)
            error = metrics.transfer_rate(predicted, y)
            results.append({**base, "target": name, "setting": cell.role, "budget": eps, "error": error,
                            "n_points": len(y)})
        if target.differentiable:
            differentiable[name] = (target, target_grad)
    gradients = size_and_alignment(source, differentiable, X, y, loss, q)
    for name in target_names:
        # S and R need the target's input gradient: undefined (NaN) for a forest or a black-box saved model
        s_value, r_value = gradients.get(name, (float("nan"), float("nan")))
        metric_rows.append({**base, "target": name, "setting": cell.role, "S": s_value, "R": r_value,
                            "V": variance})
    artifacts = {}
    if config.keep_points:
        arrays = {}
        for eps, points in crafted.items():
            arrays.update(point_arrays(f"eps_{eps:g}", points))
        artifacts[points_file(cell)] = points_artifact(test.image_shape, y=y, **arrays)
    return {"n_points": len(y)}, {"results": results, "metrics": metric_rows}, artifacts


def _surrogate(config: ExperimentConfig, inputs: Mapping[str, ModelArtifact], cell: Cell, draw: int
               ) -> models.Classifier:
    """Draw ``draw`` of a transfer cell's surrogate, from its inputs (an ensemble assembled from its members)."""
    cells = surrogate_cells(config, cell.repetition, cell.model, cell.fraction, draw)
    return assemble_surrogate(config, cells, lambda c: trained_model(config, inputs, c), cell.model)


def _target_state(config: ExperimentConfig, inputs: Mapping[str, ModelArtifact], trained: Cell, X: Any,
                  y: np.ndarray, threshold: float | None, positive: int) -> tuple[models.Classifier, np.ndarray | None, np.ndarray]:
    """A trained target, its input gradient (when it has one and it fits in one block of
    :data:`GRADIENT_BLOCK_ELEMENTS`; else None, and S and R compute it a block at a time) and its decisions at the
    clean attacked points, computed once per process and repetition (every transfer cell of a repetition
    evaluates the same targets on the same points)."""
    def make():
        target = trained_model(config, inputs, trained)
        fits = len(row_blocks(X.shape[0], X.shape[1])) == 1
        gradient = target.input_gradient(X, y, config.attack.loss) if target.differentiable and fits else None
        return target, gradient, decide(target, X, threshold, positive)

    # one entry per repetition in the process's small data cache: a new repetition's targets replace the last's
    targets = cached(("targets", config.identity_hash(), trained.repetition), dict)
    key = (trained.model, inputs[trained.cell_id].digest)
    if key not in targets:
        targets[key] = make()
    return targets[key]


def sweep_target(config: ExperimentConfig, cell: Cell) -> str | None:
    """The target that is the very model a sweep cell trains (the same class and parameters, seed and device
    included, trained on the same target data), whose trained model the cell then takes instead of training it
    again (the preset's weight decays 0 and 0.01 are nn_h's and nn_l's); None when no target is."""
    wanted = create_model(config, "nn_h", cell.repetition, weight_decay=cell.weight_decay)
    for name in config.targets:
        if name in config.saved_models or name in config.ensembles:
            continue
        candidate = create_model(config, name, cell.repetition)
        if type(candidate) is type(wanted) and candidate.get_params() == wanted.get_params():
            return name
    return None


def sweep(config: ExperimentConfig, cell: Cell, inputs: Mapping[str, ModelArtifact]):
    split = load_split(config, cell.repetition)
    X, y = split.test.X, split.test.y
    same = sweep_target(config, cell)
    if same is not None:
        model = trained_model(config, inputs, target_cell(cell.repetition, same))
    else:
        model = create_model(config, "nn_h", cell.repetition, weight_decay=cell.weight_decay)
        model.fit(split.target.X, split.target.y)
    eps = config.nn_sweep.eps
    result = make_attack(config, eps, manipulable(config, split.test)).run(model, dense(X), y)
    q = dual_norm(parse_norm(config.attack.norm))
    s_value = size_and_alignment(model, {"nn_h": (model, None)}, X, y, config.attack.loss, q)["nn_h"][0]
    row = {"repetition": cell.repetition, "weight_decay": cell.weight_decay, "budget": eps,
           "error": result.error, "S": s_value}
    return {}, {"sweep": [row]}, {}

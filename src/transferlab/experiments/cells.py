"""The cells of an experiment and how each is computed.

A cell is a pure function of (config, cell key): same key, same result, on any worker and in any order. Each
runs with one torch and one BLAS thread, so results do not depend on how many cells run side by side.

Stages (each depends only on earlier ones):
1. ``train``: fit one model (a target on the target data; a surrogate on a fraction of the surrogate data, draw 0
   being the surrogate itself and draws 1.. the resampled surrogates for V) and save it.
2. ``craft``: craft the attacks for every budget on one source model (a surrogate: *transfer*; a target:
   *white-box*), then evaluate every target on them: error, S, R, and V of the surrogate.
3. ``sweep``: the Fig. 3 weight-decay sweep of the MLP (when the config asks for it).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from threadpoolctl import threadpool_limits

from transferlab import attacks, datasets, metrics, models
from transferlab.attacks.constraints import dual_norm, parse_norm
from transferlab.experiments.config import ExperimentConfig, parse_config
from transferlab.experiments.store import sha256_file

WHITE_BOX, TRANSFER = "white-box", "transfer"


@dataclass(frozen=True)
class Cell:
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


def plan(config: ExperimentConfig) -> list[list[Cell]]:
    """The cells of each stage, in a fixed order."""
    if config.kind == "poisoning":
        return plan_poisoning(config)
    reps = range(config.repetitions)
    train = [Cell("train", r, t, "target") for r in reps for t in config.targets]
    train += [Cell("train", r, s, "surrogate", f, d) for r in reps for s in config.surrogates
              for f in config.surrogate_fractions for d in range(config.variance.n_surrogates)]
    craft = [Cell("craft", r, s, TRANSFER, f) for r in reps for s in config.surrogates for f in config.surrogate_fractions]
    if config.white_box:
        craft += [Cell("craft", r, t, WHITE_BOX) for r in reps for t in config.targets
                  if models.MODELS[t].factory.differentiable]
    sweep = []
    if config.nn_sweep is not None:
        sweep = [Cell("sweep", r, "nn_h", weight_decay=wd) for r in reps for wd in config.nn_sweep.weight_decays]
    return [stage for stage in (train, craft, sweep) if stage]


def plan_poisoning(config: ExperimentConfig) -> list[list[Cell]]:
    """Poisoning: clean targets (their error at fraction 0), then one craft cell per surrogate, surrogate data
    fraction and poisoning fraction, plus white-box cells (crafted on each target that has implicit gradients)."""
    reps = range(config.repetitions)
    train = [Cell("train", r, t, "target") for r in reps for t in config.targets]
    poison = config.attack.fractions
    craft = [Cell("craft", r, s, TRANSFER, f, poison_fraction=p) for r in reps for s in config.surrogates
             for f in config.surrogate_fractions for p in poison]
    if config.white_box:
        capable = [t for t in config.targets if _has_family(t)]
        craft += [Cell("craft", r, t, WHITE_BOX, 1.0, poison_fraction=p) for r in reps for t in capable for p in poison]
    return [train, craft]


def _has_family(name: str) -> bool:
    from transferlab.attacks.poisoning_gradients import family_for
    from transferlab.errors import ConfigError

    try:
        family_for(models.create(name))
    except ConfigError:
        return False
    return True


def model_folder(cell: Cell) -> str:
    """Where a train cell saves its model, relative to the run folder."""
    return "models/" + cell.cell_id.removeprefix("train/")


# ---- per-process context -------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _config(run_dir: str) -> ExperimentConfig:
    return parse_config(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()), "config.yaml")


@lru_cache(maxsize=2)
def _dataset(run_dir: str) -> datasets.Dataset:
    config = _config(run_dir)
    options = dict(config.dataset.options)
    if config.dataset.path is not None:
        options["path"] = config.dataset.path
    return datasets.load(config.dataset.name, **options)


@lru_cache(maxsize=4)
def _split(run_dir: str, repetition: int) -> datasets.Split:
    c = _config(run_dir)
    return datasets.split(_dataset(run_dir), c.split.n_target, c.split.n_surrogate, c.split.n_test,
                          c.split.n_validation, repetition=repetition, seed=c.seed)


def create_model(config: ExperimentConfig, name: str, repetition: int, draw: int = 0, **extra: Any) -> models.Classifier:
    """A registry model with the config's overrides and device; seeded models get a seed per repetition/draw."""
    overrides = {**config.model_overrides.get(name, {}), **extra}
    model = models.create(name, **overrides)
    model.device = config.device
    if hasattr(model, "seed"):
        model.seed = config.seed * 100_003 + repetition * 101 + draw
    for key in ("channels", "hidden"):
        if hasattr(model, key) and isinstance(getattr(model, key), list):
            setattr(model, key, tuple(getattr(model, key)))
    return model


def make_attack(config: ExperimentConfig, eps: float) -> attacks.EvasionAttack:
    kinds = {"pgd_line_search": attacks.PGDLineSearch, "pgd": attacks.PGD, "fgsm": attacks.FGSM,
             "mifgsm": attacks.MIFGSM}
    a = config.attack
    try:
        return kinds[a.kind](norm=a.norm, eps=eps, lb=a.lb, ub=a.ub, objective=attacks.Objective(a.loss),
                             **a.solver)
    except TypeError as exc:
        from transferlab.errors import ConfigError

        raise ConfigError(f"config field 'attack.solver': {exc}") from None


def _atomic_save(model: models.Classifier, run_dir: Path, rel: str) -> dict[str, str]:
    final = run_dir / rel
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    models.save(model, tmp)
    shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return {f"{rel}/{name}": sha256_file(final / name) for name in ("spec.json", "weights.safetensors")}


def _save_points(run_dir: Path, cell: Cell, **arrays: np.ndarray) -> dict[str, str]:
    """Write a craft cell's points as a compressed npz (temporary name, then rename); returns {path: sha256}."""
    rel = "points/" + cell.cell_id.removeprefix("craft/").replace("/", "_") + ".npz"
    final = run_dir / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, final)
    return {rel: sha256_file(final)}


def _load(run_dir: Path, cell: Cell, device: str) -> models.Classifier:
    return models.load(run_dir / model_folder(cell), device=device)


# ---- execution -----------------------------------------------------------------------------------------
def execute(run_dir: str, cell: Cell) -> CellOutput:
    """Compute one cell (in any process); the caller records the output in the store."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    with threadpool_limits(1):
        runner = {"train": _train, "craft": _craft, "sweep": _sweep}[cell.stage]
        if cell.stage == "craft" and _config(run_dir).kind == "poisoning":
            runner = _craft_poisoning
        files, info, rows = runner(Path(run_dir), _config(run_dir), cell)
    return CellOutput(cell.cell_id, cell.stage, time.perf_counter() - start, files, info, rows)


def _train(run_dir: Path, config: ExperimentConfig, cell: Cell):
    split = _split(str(run_dir), cell.repetition)
    data = split.target if cell.role == "target" else split.surrogate_subsample(cell.fraction, cell.draw)
    model = create_model(config, cell.model, cell.repetition, cell.draw).fit(data.X, data.y)
    files = _atomic_save(model, run_dir, model_folder(cell))
    accuracy = float(np.mean(model.predict(split.test.X) == split.test.y))
    rows = {}
    if config.kind == "poisoning" and cell.role == "target":
        rows["results"] = [{"attack": "poisoning", "repetition": cell.repetition, "surrogate": None, "fraction": None,
                            "target": cell.model, "setting": "clean", "budget": 0.0, "error": 1 - accuracy,
                            "n_points": len(split.test.y)}]
    return files, {"n_train": len(data), "test_accuracy": accuracy}, rows


def _craft(run_dir: Path, config: ExperimentConfig, cell: Cell):
    split = _split(str(run_dir), cell.repetition)
    X, y = split.test.X, split.test.y
    loss, q = config.attack.loss, dual_norm(parse_norm(config.attack.norm))
    if cell.role == WHITE_BOX:
        source_cell = Cell("train", cell.repetition, cell.model, "target")
        target_names = [cell.model]
        fraction = None
    else:
        source_cell = Cell("train", cell.repetition, cell.model, "surrogate", cell.fraction, 0)
        target_names = config.targets
        fraction = cell.fraction
    source = _load(run_dir, source_cell, config.device)
    crafted = {}
    for eps in config.attack.eps:
        crafted[eps] = X if eps == 0 else make_attack(config, eps).run(source, X, y)
    source_grad = source.input_gradient(X, y, loss)
    variance = float("nan")
    if cell.role == TRANSFER:
        draws = [source] + [_load(run_dir, Cell("train", cell.repetition, cell.model, "surrogate", cell.fraction, d),
                                  config.device) for d in range(1, config.variance.n_surrogates)]
        variance = metrics.loss_variance(np.stack([m.loss(X, y, loss) for m in draws]))
    results, metric_rows = [], []
    base = {"attack": "evasion", "repetition": cell.repetition, "surrogate": cell.model, "fraction": fraction}
    for name in target_names:
        target = source if cell.role == WHITE_BOX else _load(run_dir, Cell("train", cell.repetition, name, "target"),
                                                             config.device)
        for eps, X_adv in crafted.items():
            error = metrics.transfer_rate(target.predict(X_adv), y)
            results.append({**base, "target": name, "setting": cell.role, "budget": eps, "error": error,
                            "n_points": len(y)})
        if target.differentiable:
            target_grad = source_grad if target is source else target.input_gradient(X, y, loss)
            s_value = metrics.gradient_size(target_grad, q)
            r_value = metrics.gradient_alignment(source_grad, target_grad)
        else:
            s_value = r_value = float("nan")
        metric_rows.append({**base, "target": name, "setting": cell.role, "S": s_value, "R": r_value,
                            "V": variance})
    files = _save_points(run_dir, cell, y=y, **{f"eps_{eps:g}": crafted[eps].astype(np.float32) for eps in crafted}) \
        if config.keep_points else {}
    return files, {"n_points": len(y)}, {"results": results, "metrics": metric_rows}


def _sweep(run_dir: Path, config: ExperimentConfig, cell: Cell):
    split = _split(str(run_dir), cell.repetition)
    X, y = split.test.X, split.test.y
    model = create_model(config, "nn_h", cell.repetition, weight_decay=cell.weight_decay)
    model.fit(split.target.X, split.target.y)
    eps = config.nn_sweep.eps
    attack = make_attack(config, eps)
    attack.run(model, X, y)
    q = dual_norm(parse_norm(config.attack.norm))
    s_value = metrics.gradient_size(model.input_gradient(X, y, config.attack.loss), q)
    row = {"repetition": cell.repetition, "weight_decay": cell.weight_decay, "budget": eps,
           "error": attack.result_.error, "S": s_value}
    return {}, {}, {"sweep": [row]}


#: poisoning points at which S and R are computed (each needs an implicit gradient of surrogate and target)
METRIC_POINTS = 10


def _craft_poisoning(run_dir: Path, config: ExperimentConfig, cell: Cell):
    """Craft a poisoning set on one surrogate (transfer: on its own data; white-box: on the target's data), train
    every target on its clean training set plus the points, and score it on clean test data. S and R use the
    validation loss in place of the point loss (paper Section 4): the implicit gradients of target and surrogate
    at the poisoning points (first METRIC_POINTS of them); V is the variance of the validation loss over
    surrogates trained on resampled surrogate data."""
    from transferlab.attacks.poisoning import Poisoning
    from transferlab.attacks.poisoning_gradients import family_for

    split = _split(str(run_dir), cell.repetition)
    poison_fraction = cell.poison_fraction
    n_points = max(1, int(round(poison_fraction * len(split.target))))
    X_val, y_val = split.validation.X, split.validation.y
    if cell.role == WHITE_BOX:
        source_data, target_names, fraction = split.target, [cell.model], None
    else:
        source_data, target_names, fraction = split.surrogate_subsample(cell.fraction), config.targets, cell.fraction
    solver = {k: v for k, v in config.attack.solver.items()}
    seed = config.seed * 100_003 + cell.repetition * 101
    surrogate = create_model(config, cell.model, cell.repetition)
    attack = Poisoning(surrogate=surrogate, n_points=n_points, lb=config.attack.lb, ub=config.attack.ub, seed=seed,
                       **solver)
    X_p, y_p = attack.run(source_data.X, source_data.y, X_val, y_val)
    family = family_for(surrogate)
    X_src, y_src = np.vstack([source_data.X, X_p]), np.r_[source_data.y, y_p]
    src_params = family.fit(X_src, y_src)
    n_src = len(source_data)
    k_points = min(METRIC_POINTS, n_points)
    src_grads = np.stack([family.gradient(src_params, X_src, y_src, n_src + k, X_val, y_val) for k in range(k_points)])
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
        target = create_model(config, name, cell.repetition).fit(X_tgt, y_tgt)
        error = metrics.transfer_rate(target.predict(split.test.X), split.test.y)
        results.append({**base, "target": name, "setting": cell.role, "budget": poison_fraction, "error": error,
                        "n_points": len(split.test.y)})
        s_value = r_value = float("nan")
        if _has_family(name):
            tfam = family_for(create_model(config, name, cell.repetition))
            t_params = tfam.fit(X_tgt, y_tgt)
            t_grads = np.stack([tfam.gradient(t_params, X_tgt, y_tgt, n_tgt + k, X_val, y_val)
                                for k in range(k_points)])
            s_value = metrics.gradient_size(t_grads, 2)
            r_value = metrics.gradient_alignment(src_grads, t_grads)
        metric_rows.append({**base, "target": name, "setting": cell.role, "S": s_value, "R": r_value, "V": variance})
    files = _save_points(run_dir, cell, X=X_p.astype(np.float32), y=y_p) if config.keep_points else {}
    r = attack.result_
    info = {"n_points": n_points, "validation_loss_clean": r.validation_loss_clean,
            "validation_loss_poisoned": r.validation_loss_poisoned, "passes": r.passes}
    return files, info, {"results": results, "metrics": metric_rows}

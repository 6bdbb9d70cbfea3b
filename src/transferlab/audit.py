"""Predict transfer before attacking (paper Section 4): S, R and V of candidate surrogates against a target, and
the transfer rate that the linearised loss predicts — no attack crafted.

Linearising the target's loss ℓ around a point x, an attack that moves x by ε along the surrogate's steepest
ascent direction d̂ (unit in ℓp: ∇ℓ̂/‖∇ℓ̂‖₂ for p = 2, sign ∇ℓ̂ for p = ∞, the largest coordinate for p = 1; Eq. 15)
raises the target's loss by Δℓ ≈ ε ∇ℓᵀd̂, which for p = 2 is ε‖∇ℓ‖₂ cos(∇ℓ̂, ∇ℓ) = ε·S·R (Eq. 16). With the margin
loss ℓ = max_{c≠y} f_c − f_y, a point is misclassified when ℓ > 0, so a point is *predicted to evade* when
ℓ(x) + ε ∇ℓ(x)ᵀd̂(x) > 0, and the predicted transfer rate is the fraction of such points. The box is ignored and
the loss is taken as linear, so the prediction is first-order: exact for a linear target with no binding box, and
worse as ε grows or the target bends (RBF SVMs, networks); a forest has no gradient and gets no prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from transferlab import metrics
from transferlab.attacks.base import steepest_direction
from transferlab.attacks.constraints import dual_norm, parse_norm
from transferlab.errors import ConfigError
from transferlab.models.base import Classifier, check_X, check_y


@dataclass
class AuditRow:
    """One surrogate at one budget: S of the target, R of the pair, V of the surrogate (NaN without resampled
    surrogates), the predicted transfer rate, its rank among the surrogates (1 = the attacker's best choice), and
    the measured rate when a run is compared."""

    surrogate: str
    budget: float
    S: float
    R: float
    V: float
    predicted: float
    rank: int = 0
    measured: float = float("nan")


def predicted_evasion(target: Classifier, surrogate: Classifier, X: np.ndarray, y: np.ndarray, eps: float,
                      norm: Any = 2, loss: str = "margin") -> np.ndarray:
    """Per point: whether ℓ(x) + ε ∇ℓ(x)ᵀd̂(x) > 0, d̂ the surrogate's unit steepest-ascent direction."""
    p = parse_norm(norm)
    target_grad = torch.as_tensor(target.input_gradient(X, y, loss))
    direction = steepest_direction(torch.as_tensor(surrogate.input_gradient(X, y, loss)), p)
    gain = (target_grad * direction).reshape(len(X), -1).sum(1).numpy()
    return target.loss(X, y, loss) + eps * gain > 0


def audit(target: Classifier, surrogates: Mapping[str, Classifier | Sequence[Classifier]], X: Any, y: Any,
          eps: Sequence[float], norm: Any = 2, loss: str = "margin") -> list[AuditRow]:
    """S, R, V and the predicted transfer rate of each surrogate against ``target`` at each budget, on the points
    (X, y) (a few hundred suffice). A surrogate given as a list of models is the surrogate (first) and its
    resamples (the others), from which V (Eq. 19) is computed. Rows are ranked per budget by predicted rate."""
    if not target.differentiable:
        raise ConfigError(f"the target {type(target).__name__} has no input gradient: S, R and the linear "
                          "prediction are undefined for it")
    X = check_X(X)
    y = check_y(y, X.shape[0])
    if X.shape[0] == 0:
        raise ConfigError("audit needs at least one point")
    q = dual_norm(parse_norm(norm))
    target_grad = target.input_gradient(X, y, loss)
    s_value = metrics.gradient_size(target_grad, q)
    rows: list[AuditRow] = []
    for name, given in surrogates.items():
        draws = list(given) if isinstance(given, (list, tuple)) else [given]
        surrogate = draws[0]
        r_value = metrics.gradient_alignment(surrogate.input_gradient(X, y, loss), target_grad)
        v_value = metrics.loss_variance(np.stack([m.loss(X, y, loss) for m in draws])) if len(draws) > 1 \
            else float("nan")
        for e in eps:
            rate = float(np.mean(predicted_evasion(target, surrogate, X, y, float(e), norm, loss)))
            rows.append(AuditRow(name, float(e), s_value, r_value, v_value, rate))
    for e in {r.budget for r in rows}:
        ranked = sorted((r for r in rows if r.budget == e), key=lambda r: (-r.predicted, r.surrogate))
        for rank, row in enumerate(ranked, start=1):
            row.rank = rank
    return rows


def agreement(rows: Sequence[AuditRow]) -> list[dict[str, float]]:
    """Per budget: how well predicted rates match measured ones across surrogates (Spearman's ρ with p-value,
    mean absolute error)."""
    out = []
    for e in sorted({r.budget for r in rows}):
        at = [r for r in rows if r.budget == e and np.isfinite(r.measured)]
        predicted, measured = np.array([r.predicted for r in at]), np.array([r.measured for r in at])
        rho = p = float("nan")
        if len(at) >= 3 and np.ptp(predicted) > 0 and np.ptp(measured) > 0:
            result = stats.spearmanr(predicted, measured)
            rho, p = float(result.statistic), float(result.pvalue)
        mae = float(np.mean(np.abs(predicted - measured))) if at else float("nan")
        out.append({"budget": e, "n_surrogates": len(at), "spearman_rho": rho, "spearman_p": p, "mae": mae})
    return out


def audit_run(run_dir: Any, target: str, repetition: int = 0, fraction: float = 1.0,
              eps: Sequence[float] | None = None) -> list[AuditRow]:
    """Audit the surrogates of a finished evasion run against one of its targets, with the run's own trained
    models and attacked points, and put the run's measured transfer rates beside the predictions."""
    from pathlib import Path

    import yaml

    from transferlab.experiments import common, evasion
    from transferlab.experiments.config import parse_config
    from transferlab.experiments.store import Store

    run_dir = Path(run_dir)
    store = Store(run_dir / "store.sqlite", create=False)
    try:
        config = parse_config(yaml.safe_load(store.meta("config_yaml") or "{}"), f"{run_dir}/store.sqlite")
        measured_rows = store.table("results")
    finally:
        store.close()
    if config.kind != "evasion":
        raise ConfigError("audit predicts evasion transfer; this run is a poisoning experiment")
    if target not in config.targets:
        raise ConfigError(f"{target!r} is not a target of this run; its targets are {', '.join(config.targets)}")
    split = common.load_split(config, repetition)
    label = evasion.attacked_label(config, common.load_dataset(config))
    test = split.test if label is None else split.test.subset(np.flatnonzero(split.test.y == label))
    X, y = evasion.dense(test.X), test.y
    target_model = common.load_model(run_dir, common.Cell("train", repetition, target, "target"), "cpu")
    surrogates = {name: [common.load_surrogate(run_dir, config, repetition, name, fraction, d)
                         for d in range(common.draws_of(config, name, config.variance.n_surrogates))]
                  for name in config.surrogates}
    budgets = [e for e in (eps if eps is not None else config.attack.eps) if e > 0]
    rows = audit(target_model, surrogates, X, y, budgets, config.attack.norm, config.attack.loss)
    measured = {(r["surrogate"], r["budget"]): r["error"] for r in measured_rows
                if r["setting"] == "transfer" and r["target"] == target and r["repetition"] == repetition
                and r["fraction"] == fraction}
    for row in rows:
        row.measured = measured.get((row.surrogate, row.budget), float("nan"))
    return rows


def audit_config(config: Any, target: str, surrogates: Sequence[str] | None = None, n_points: int = 300,
                 repetition: int = 0, eps: Sequence[float] | None = None) -> list[AuditRow]:
    """Audit from a config (a preset or YAML, parsed): train the target and each candidate surrogate (with
    ``variance.n_surrogates`` resamples for V) on the config's split, then predict on ``n_points`` test points."""
    from transferlab.experiments import common, evasion

    names = list(surrogates or config.surrogates)
    split = common.load_split(config, repetition)
    label = evasion.attacked_label(config, common.load_dataset(config))
    test = split.test if label is None else split.test.subset(np.flatnonzero(split.test.y == label))
    test = test.subset(np.arange(min(n_points, len(test))))
    X, y = evasion.dense(test.X), test.y
    target_model = common.create_model(config, target, repetition).fit(split.target.X, split.target.y)
    models_by_name = {}
    for name in names:
        draws = []
        for d in range(config.variance.n_surrogates):
            data = split.surrogate_subsample(1.0, d)
            draws.append(common.create_model(config, name, repetition, d).fit(data.X, data.y))
        models_by_name[name] = draws
    budgets = [e for e in (eps if eps is not None else config.attack.eps) if e > 0]
    return audit(target_model, models_by_name, X, y, budgets, config.attack.norm, config.attack.loss)

"""Predict transfer before attacking (paper Section 4): S, R and V of candidate surrogates against a target, and
the transfer rate that the linearised loss predicts — no attack crafted.

Linearising the target's loss ℓ around a point x, an attack that moves x by ε along the surrogate's steepest
ascent direction d̂ (unit in ℓp: ∇ℓ̂/‖∇ℓ̂‖₂ for p = 2, sign ∇ℓ̂ for p = ∞, the largest coordinate for p = 1; Eq. 15)
raises the target's loss by Δℓ ≈ ε ∇ℓᵀd̂, which for p = 2 is ε‖∇ℓ‖₂ cos(∇ℓ̂, ∇ℓ) = ε·S·R (Eq. 16). With the margin
loss ℓ = max_{c≠y} f_c − f_y, a point is misclassified when ℓ > 0, so a point is *predicted to evade* when
ℓ(x) + ε ∇ℓ(x)ᵀd̂(x) > 0, and the predicted transfer rate is the fraction of such points. d̂ moves only the
coordinates that the threat model lets a step leave x along (the box, feature addition only, a mask: a pixel at 0
is not darkened, a feature not removed), as the first step of the line-searched attack and of PGD does; beyond
that the constraints are ignored and the loss is taken as linear, so the prediction is first-order: exact for a
linear target with no binding box, and worse as ε grows or the target bends (RBF SVMs, networks).

A target without input gradient (a forest, a black-box saved model: gradient boosting, an ONNX detector) has no S,
R or prediction: its rows hold NaN there, with a note saying why, V of each surrogate (a property of the surrogate),
and — when a finished run is audited — the transfer rate the run measured on it.
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from scipy import stats

from transferlab import metrics
from transferlab.attacks.base import movable, steepest_direction
from transferlab.attacks.constraints import Box, Constraint, Intersection, dual_norm, parse_norm
from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier, check_X, check_y
from transferlab.models.inputs import array_tensor


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
    #: why S, R and the prediction are undefined (a target without input gradient), "" otherwise
    note: str = ""


def undefined_note(target: str, measured: bool) -> str:
    """The note of a target without input gradient: S, R and the prediction need one."""
    where = ("the run's measured transfer rates are shown beside V" if measured else
             "its transfer is measured by `transferlab run`: audit the finished run folder to see it beside V")
    return (f"{target} has no input gradient, and S (Eq. 17), R (Eq. 18) and the linear prediction (Eq. 16) need "
            f"one, so they are undefined for it; {where}")


def check_budgets(eps: Any, field: str = "eps") -> list[float]:
    """The budgets to predict at, checked: a list of numbers, or text of comma-separated numbers (the CLI's
    ``--eps 0.5,1,2``); each finite and > 0 (a budget of 0 moves nothing, so it predicts nothing), at most
    :data:`~transferlab.experiments.config.MAX_BUDGETS` of them. Returns them sorted, each once."""
    from transferlab.experiments.config import MAX_BUDGETS

    if isinstance(eps, str):
        items = eps.split(",")
        if len(items) > MAX_BUDGETS:
            raise ConfigError(f"{field}: {len(items)} budgets; give at most {MAX_BUDGETS}")
        values: list[Any] = []
        for number, item in enumerate(items, start=1):
            if not item.strip():
                raise ConfigError(f"{field}: budget {number} is empty; give comma-separated numbers, e.g. 0.5,1,2")
            try:
                values.append(float(item))
            except ValueError:
                shown = item.strip() if len(item.strip()) <= 30 else item.strip()[:27] + "..."
                raise ConfigError(f"{field}: {shown!r} is not a number; give comma-separated budgets, e.g. "
                                  "0.5,1,2") from None
    elif isinstance(eps, (list, tuple, np.ndarray)):
        values = list(eps)
    else:
        raise ConfigError(f"{field}: give a list of budgets, e.g. [0.5, 1, 2], got {type(eps).__name__}")
    if not values:
        raise ConfigError(f"{field}: no budget given; give budgets > 0, e.g. 0.5,1,2")
    if len(values) > MAX_BUDGETS:
        raise ConfigError(f"{field}: {len(values)} budgets; give at most {MAX_BUDGETS}")
    for value in values:
        if not _positive_number(value):
            raise ConfigError(f"{field}: every budget must be a finite number > 0 (0 moves no point), got "
                              f"{str(value)[:30]}")
    return sorted({float(v) for v in values})


def _positive_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except OverflowError:
        return False


def check_names(names: Any, field: str = "surrogates") -> list[str] | None:
    """Model names as a list (text is comma-separated, the CLI's ``--surrogates a,b``), each given once; None stays
    None (the config's own)."""
    if names is None:
        return None
    from transferlab.experiments.config import check_name

    items = names.split(",") if isinstance(names, str) else names
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{field}: give model names, e.g. svm_l,nn_l")
    out = [check_name(item.strip() if isinstance(item, str) else item, field) for item in items]
    repeated = sorted({n for n in out if out.count(n) > 1})
    if repeated:
        raise ConfigError(f"{field}: {repeated[0]!r} is listed twice; name each model once")
    return out


def linearised_margin(target: Classifier, surrogate: Classifier, X: Any, y: np.ndarray, norm: Any = 2,
                      loss: str = "margin", lb: Any = None, ub: Any = None, constraints: Sequence[Constraint] = (),
                      target_gradient: Any = None, surrogate_gradient: Any = None,
                      margin: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per point: the target's margin loss ℓ(x) (> 0: misclassified) and its first-order increase per unit of
    budget along the transferred step, ∇ℓ(x)ᵀd̂(x) (paper Eq. 16), d̂ the surrogate's unit steepest-ascent
    direction of the attacker's ``loss`` (Eq. 15) over the coordinates the threat model lets a step move from x:
    the box [lb, ub] and the box-like pieces of ``constraints`` (feature addition only, a mask) block a coordinate
    at its bound in the gradient's direction, as the line-searched attack's and PGD's steps do (FGSM and MI-FGSM
    step on every coordinate and let the projection clip). ``target_gradient`` (of the margin loss),
    ``surrogate_gradient`` (of ``loss``) and ``margin`` optionally pass what is already computed at (X, y)."""
    p = parse_norm(norm)
    pieces = _checked_constraints(constraints)
    if target_gradient is None:
        target_gradient = target.input_gradient(X, y, "margin")
    if surrogate_gradient is None:
        surrogate_gradient = surrogate.input_gradient(X, y, loss)
    target_grad, surrogate_grad = torch.as_tensor(target_gradient), torch.as_tensor(surrogate_gradient)
    free = None
    if lb is not None or ub is not None or pieces:  # the rows are needed only to see where they sit in the box
        rows = X.toarray() if sp.issparse(X) else np.asarray(X)
        x0 = array_tensor(rows, surrogate_grad.dtype)
        lower, upper = Intersection(Box(lb, ub), *pieces).bounds(x0)
        free = movable(x0, surrogate_grad, lower, upper)
    direction = steepest_direction(surrogate_grad, p, free)
    gain = (target_grad * direction).reshape(target_grad.shape[0], -1).sum(1).numpy()
    return (target.loss(X, y, "margin") if margin is None else np.asarray(margin)), gain


def _checked_constraints(constraints: Any) -> tuple[Constraint, ...]:
    """audit's threat-model pieces: a list or tuple of them (a ConfigError otherwise: a bare piece or an array
    would be read as no constraint at all)."""
    if isinstance(constraints, (list, tuple)) and all(isinstance(c, Constraint) for c in constraints):
        return tuple(constraints)
    raise ConfigError("constraints: give a list of threat-model pieces, e.g. [attacks.FeatureAdditionOnly()] or "
                      f"[attacks.Mask(mask)], got {type(constraints).__name__}")


def predicted_evasion(target: Classifier, surrogate: Classifier, X: Any, y: np.ndarray, eps: float,
                      norm: Any = 2, loss: str = "margin", lb: Any = None, ub: Any = None,
                      constraints: Sequence[Constraint] = ()) -> np.ndarray:
    """Per point: whether ℓ(x) + ε ∇ℓ(x)ᵀd̂(x) > 0, the target's margin loss after the surrogate's step to first
    order (:func:`linearised_margin`, paper Eq. 16): whether the transferred attack is predicted to evade."""
    margin, gain = linearised_margin(target, surrogate, X, y, norm, loss, lb, ub, constraints)
    return margin + eps * gain > 0


def _models_of(name: Any, given: Any) -> list[Classifier]:
    """The surrogate (first) and its resamples given for ``name`` in audit's ``surrogates``, checked."""
    draws = list(given) if isinstance(given, (list, tuple)) else [given]
    if not draws:
        raise ConfigError(f"surrogate {name!r}: give a model, or a list of the surrogate and its resamples")
    for model in draws:
        if not isinstance(model, Classifier):
            raise ConfigError(f"surrogate {name!r}: {type(model).__name__} is not a transferlab model; wrap a "
                              "scikit-learn estimator with transferlab.models.wrap(...)")
        if not model.differentiable:
            raise ConfigError(f"surrogate {name!r} ({type(model).__name__}) has no input gradient: a surrogate "
                              "crafts attacks along its gradient; audit differentiable surrogates")
    return draws


def audit(target: Classifier, surrogates: Mapping[str, Classifier | Sequence[Classifier]], X: Any, y: Any,
          eps: Sequence[float], norm: Any = 2, loss: str = "margin", lb: Any = None, ub: Any = None,
          constraints: Sequence[Constraint] = ()) -> list[AuditRow]:
    """S, R, V and the predicted transfer rate of each surrogate against ``target`` at each budget, on the points
    (X, y) (a few hundred suffice; dense or scipy sparse). A surrogate given as a list of models is the surrogate
    (first) and its resamples (the others), from which V (Eq. 19) is computed. S, R and V are of the attacker's
    ``loss``; a point is predicted to evade where the target's margin loss, moved to first order along the
    surrogate's step (:func:`linearised_margin`), turns positive. The step moves the coordinates that the box
    [``lb``, ``ub``] (none by default) and the box-like ``constraints`` (``attacks.FeatureAdditionOnly()``,
    ``attacks.Mask(...)``; the threat model of a config: :func:`transferlab.attacks.threat_model`) let it move.
    Rows are ranked per budget by predicted rate.

    A target without input gradient (``target.differentiable`` is False: a forest, a black-box model) gets rows
    with S, R and the prediction undefined (NaN, rank 0) and a note saying why; V is still computed. A surrogate
    must have an input gradient (a ConfigError names the one that has not)."""
    eps = check_budgets(eps)
    if not isinstance(target, Classifier):
        raise ConfigError(f"target: {type(target).__name__} is not a transferlab model; wrap a scikit-learn "
                          "estimator with transferlab.models.wrap(...)")
    if not isinstance(surrogates, Mapping) or not surrogates:
        raise ConfigError("surrogates: give a dict {name: model} (or {name: [model, resample, ...]} for V)")
    draws_of = {name: _models_of(name, given) for name, given in surrogates.items()}
    _checked_constraints(constraints)
    for model in [target, *(m for draws in draws_of.values() for m in draws)]:
        model.check_feature_names(X)  # a table's columns against each model's, before they are dropped
    X = check_X(X, allow_sparse=True)
    y = check_y(y, X.shape[0])
    if X.shape[0] == 0:
        raise ConfigError("audit needs at least one point")
    q = dual_norm(parse_norm(norm))
    nan = float("nan")
    target_grad = target.input_gradient(X, y, loss) if target.differentiable else None
    margin_grad = target_grad if loss == "margin" or target_grad is None else target.input_gradient(X, y, "margin")
    margin = target.loss(X, y, "margin") if target_grad is not None else None
    s_value = metrics.gradient_size(target_grad, q) if target_grad is not None else nan
    note = "" if target.differentiable else undefined_note(getattr(target, "name_", None) or type(target).__name__,
                                                           measured=False)
    rows: list[AuditRow] = []
    for name, draws in draws_of.items():
        surrogate = draws[0]
        v_value = metrics.loss_variance(np.stack([m.loss(X, y, loss) for m in draws])) if len(draws) > 1 \
            else nan
        r_value = gain = nan
        if target_grad is not None:
            surrogate_grad = surrogate.input_gradient(X, y, loss)
            r_value = metrics.gradient_alignment(surrogate_grad, target_grad)
            _, gain = linearised_margin(target, surrogate, X, y, norm, loss, lb, ub, constraints, margin_grad,
                                        surrogate_grad, margin)
        for e in eps:
            rate = nan if target_grad is None else float(np.mean(margin + e * gain > 0))
            rows.append(AuditRow(name, float(e), s_value, r_value, v_value, rate, note=note))
    if target_grad is None:
        return rows  # no prediction, no ranking
    for e in {r.budget for r in rows}:
        ranked = sorted((r for r in rows if r.budget == e), key=lambda r: (-r.predicted, r.surrogate))
        for rank, row in enumerate(ranked, start=1):
            row.rank = rank
    return rows


def agreement(rows: Sequence[AuditRow]) -> list[dict[str, float]]:
    """Per budget: how well predicted rates match measured ones across surrogates (Spearman's ρ with p-value,
    mean absolute error), over the rows that have both (a target without gradient has no prediction)."""
    out = []
    for e in sorted({r.budget for r in rows}):
        at = [r for r in rows if r.budget == e and np.isfinite(r.measured) and np.isfinite(r.predicted)]
        predicted, measured = np.array([r.predicted for r in at]), np.array([r.measured for r in at])
        rho = p = float("nan")
        if len(at) >= 3 and np.ptp(predicted) > 0 and np.ptp(measured) > 0:
            result = stats.spearmanr(predicted, measured)
            rho, p = float(result.statistic), float(result.pvalue)
        mae = float(np.mean(np.abs(predicted - measured))) if at else float("nan")
        out.append({"budget": e, "n_surrogates": len(at), "spearman_rho": rho, "spearman_p": p, "mae": mae})
    return out


def audit_run(run_dir: Any, target: str, repetition: int = 0, fraction: float | None = None,
              eps: Sequence[float] | str | None = None, surrogates: Sequence[str] | str | None = None
              ) -> list[AuditRow]:
    """Audit the surrogates of a finished evasion run (or those of ``surrogates``, a subset) against one of its
    targets, with the run's own trained models and attacked points, and put the run's measured transfer rates
    beside the predictions. ``fraction``: the surrogates' data fraction (default: the run's largest). Everything
    is checked before any model is loaded. A target without input gradient (a forest, a black-box saved model)
    gets the run's measured transfer rates, V, and a note that S, R and the prediction need a gradient."""
    from pathlib import Path

    from transferlab.experiments import artifacts, common, evasion
    from transferlab.experiments.data import load_split
    from transferlab.experiments.config import parse_config
    from transferlab.experiments.store import Store

    run_dir = Path(run_dir)
    store = Store(run_dir / "store.sqlite", create=False)
    try:
        data = store.config_data()
        measured_rows = store.table("results")
    finally:
        store.close()
    try:
        config = parse_config(data, f"{run_dir}/store.sqlite")
    except ConfigError as exc:
        raise DataError(f"{exc} (the stored config; the store was edited or is damaged)") from None
    if config.kind != "evasion":
        raise ConfigError("audit predicts evasion transfer; this run is a poisoning experiment")
    if target not in config.targets:
        raise ConfigError(f"{target!r} is not a target of this run; its targets are {', '.join(config.targets)}")
    _check_repetition(repetition, config)
    fraction = config.surrogate_fractions[0] if fraction is None else fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or float(fraction) not in config.surrogate_fractions:
        raise ConfigError(f"fraction {fraction!r} is not a surrogate data fraction of this run; its fractions are "
                          f"{', '.join(f'{f:g}' for f in config.surrogate_fractions)}")
    names = check_names(surrogates, "--surrogates") or list(config.surrogates)
    for name in names:
        if name not in config.surrogates:
            raise ConfigError(f"--surrogates: {name!r} is not a surrogate of this run; its surrogates are "
                              f"{', '.join(config.surrogates)}")
    budgets = _budgets(eps, config)
    split = load_split(config, repetition)
    test = evasion.attacked_test(config, split)
    X, y = test.X, test.y
    target_model = artifacts.load_model(run_dir, common.target_cell(repetition, target), "cpu")
    stored = lambda cell: artifacts.load_trained(run_dir, config, cell)  # noqa: E731
    models_by_name = {name: [common.assemble_surrogate(config, common.surrogate_cells(config, repetition, name,
                                                                                      float(fraction), d),
                                                       stored, name)
                             for d in range(common.draws_of(config, name, config.variance.n_surrogates))]
                      for name in names}
    rows = audit(target_model, models_by_name, X, y, budgets, **_threat_model(config, test))
    measured = {(r["surrogate"], r["budget"]): r["error"] for r in measured_rows
                if r["setting"] == "transfer" and r["target"] == target and r["repetition"] == repetition
                and r["fraction"] == fraction}
    for row in rows:
        row.measured = measured.get((row.surrogate, row.budget), float("nan"))
        if row.note:
            row.note = undefined_note(target, measured=True)
    return rows


def audit_config(config: Any, target: str, surrogates: Sequence[str] | str | None = None, n_points: int = 300,
                 repetition: int = 0, eps: Sequence[float] | str | None = None) -> list[AuditRow]:
    """Audit from a config (a preset or YAML, parsed): train the target and each candidate surrogate (with
    ``variance.n_surrogates`` resamples for V) on the config's split, then predict on ``n_points`` test points.

    A model is a registry model, or one of the config's ``saved_models`` (imported as it is: no resamples, so no
    V) or, as a surrogate, one of its ``ensembles`` (members trained on each resample). Every name, budget and
    count is checked before anything is trained. A target without input gradient gets rows with S, R and the
    prediction undefined and a note (nothing was attacked: audit a finished run to see its measured transfer)."""
    from transferlab.experiments import common, evasion
    from transferlab.experiments.data import load_split
    from transferlab.experiments.config import ExperimentConfig
    from transferlab.experiments.saved import is_differentiable, obtain_model
    from transferlab.models import MODELS

    if not isinstance(config, ExperimentConfig):
        raise ConfigError("audit_config takes a parsed config (transferlab.experiments.config.load_config)")
    if config.kind != "evasion":
        raise ConfigError(f"audit predicts evasion transfer; config {config.name!r} is a {config.kind} experiment")
    names = check_names(surrogates, "--surrogates") or list(config.surrogates)
    known = [*MODELS, *config.saved_models]
    if not isinstance(target, str) or target not in known:
        hint = " (an ensemble is a surrogate only)" if target in config.ensembles else ""
        raise ConfigError(f"--target: unknown model {target!r}{hint}; choose from {', '.join(known)}")
    for name in names:
        if name not in known and name not in config.ensembles:
            raise ConfigError(f"--surrogates: unknown model {name!r}; choose from {', '.join(known)} or an ensemble "
                              "of the config")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or not 1 <= n_points <= 10**7:
        raise ConfigError(f"--points must be a whole number >= 1, got {n_points!r}")
    _check_repetition(repetition, config)
    budgets = _budgets(eps, config)
    evasion.check_data(config)  # the data, the attacked class and the saved models, before any training
    for name in names:
        if name not in config.ensembles and not is_differentiable(config, name):
            raise ConfigError(f"--surrogates: {name!r} has no input gradient: a surrogate crafts attacks along its "
                              "gradient; audit differentiable surrogates (a model without gradient can only be a "
                              "target)")
    split = load_split(config, repetition)
    test = evasion.attacked_test(config, split)
    test = test.subset(np.arange(min(n_points, len(test))))
    X, y = test.X, test.y
    target_model = obtain_model(config, target, repetition, 0, split.target)
    models_by_name = {}
    for name in names:
        draws = []
        for d in range(common.draws_of(config, name, config.variance.n_surrogates)):
            data = split.surrogate_subsample(1.0, d)
            draws.append(common.assemble_surrogate(config, common.surrogate_cells(config, repetition, name, 1.0, d),
                                                   lambda c: obtain_model(config, c.model, repetition, d, data), name))
        models_by_name[name] = draws
    rows = audit(target_model, models_by_name, X, y, budgets, **_threat_model(config, test))
    for row in rows:
        if row.note:
            row.note = undefined_note(target, measured=False)
    return rows


def _threat_model(config: Any, test: Any) -> dict[str, Any]:
    """audit's threat-model arguments from an evasion config: its norm, loss, box and pieces (the attacks' own,
    :func:`transferlab.experiments.evasion.make_attack`)."""
    from transferlab.experiments import evasion

    a = config.attack
    pieces = evasion.threat_pieces(config, evasion.manipulable(config, test))
    return {"norm": a.norm, "loss": a.loss, "lb": a.lb, "ub": a.ub, "constraints": pieces}


def _check_repetition(repetition: Any, config: Any) -> None:
    if isinstance(repetition, bool) or not isinstance(repetition, int) or not 0 <= repetition < config.repetitions:
        raise ConfigError(f"--repetition {repetition!r} is out of range: the config has {config.repetitions} "
                          f"repetition(s), numbered 0 to {config.repetitions - 1}")


def _budgets(eps: Any, config: Any) -> list[float]:
    """The budgets given, checked, or the config's budgets above 0."""
    if eps is not None:
        return check_budgets(eps, "--eps")
    positive = [e for e in config.attack.eps if e > 0]
    if not positive:
        raise ConfigError("--eps: the config's attack.eps holds no budget > 0; give budgets, e.g. --eps 0.5,1,2")
    return positive


class _CallableModule(types.ModuleType):
    """``transferlab.audit`` is both this module and the function :func:`audit` (the package's lazy wrapper is
    replaced by the module on first import), so the module calls :func:`audit`: ``transferlab.audit(...)`` works
    however often and in whatever order it is called or imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[AuditRow]:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

"""Common machinery of the evasion attacks: the threat model (norm, ε, box and extra pieces), steepest-ascent
directions, and the per-sample result object."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from transferlab.attacks.constraints import Ball, Box, Constraint, Intersection, lp_norm, parse_norm
from transferlab.attacks.objectives import Objective
from transferlab.attacks.settings import AttackSettings, plain
from transferlab.errors import ConfigError, DataError, shown
from transferlab.models.base import Classifier, NotDifferentiableError, check_X, check_y
from transferlab.models.inputs import array_tensor


BOUND_TOL = 1e-10


@dataclass
class AttackResult:
    """Per-sample diagnostics of one run (numpy arrays, one entry per attacked row)."""

    x_adv: np.ndarray
    objective_start: np.ndarray
    objective: np.ndarray
    iterations: np.ndarray
    perturbation_norm: np.ndarray
    success: np.ndarray

    @property
    def error(self) -> float:
        """Fraction of rows where the attack succeeded (error under attack, for untargeted attacks)."""
        return float(self.success.mean()) if self.success.size else 0.0


def class_indices(model: Classifier, y: Any, n: int) -> np.ndarray:
    """y as class indices 0..n_classes − 1 for the attacks (a DataError otherwise). Labels that are the model's
    ``classes_`` but not indices (a model fitted on digits 8 and 9) are refused with how to map them: read as
    labels where they are and as indices where they are not, the same y would mean different classes."""
    try:
        return check_y(y, n, model.n_classes_)
    except DataError:
        classes = getattr(model, "classes_", None)
        values = np.asarray(y)
        labels_not_indices = (classes is not None and values.shape == (n,) and np.issubdtype(values.dtype, np.integer)
                              and not np.array_equal(np.asarray(classes), np.arange(len(classes)))
                              and np.isin(values, np.asarray(classes)).all())
        if labels_not_indices:
            raise DataError(f"y holds the model's class labels {shown(np.asarray(classes).tolist())}; attacks take "
                            "class indices 0..n_classes − 1: pass np.searchsorted(model.classes_, y)") from None
        raise


def movable(x: torch.Tensor, grad: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
    """Coordinates where a step along ``grad`` is not blocked by the bounds [lb, ub] (a coordinate within
    :data:`BOUND_TOL` of its bound counts as on it, so rounding noise cannot change the direction)."""
    return ((grad > 0) & (x < ub - BOUND_TOL)) | ((grad < 0) & (x > lb + BOUND_TOL))


def steepest_direction(grad: torch.Tensor, p: float, free: torch.Tensor | None = None) -> torch.Tensor:
    """The unit-norm (in ℓp) direction of steepest ascent for a gradient (paper Eq. 15): g/‖g‖₂ for ℓ2, sign(g)
    for ℓ∞, and for ℓ1 the coordinate with the largest |g|. ``free`` (:func:`movable`) zeroes the coordinates
    the box blocks."""
    if free is not None:
        grad = torch.where(free, grad, torch.zeros_like(grad))
    if p == 2:
        return grad / lp_norm(grad, 2).clamp_min(1e-30).reshape(-1, *([1] * (grad.dim() - 1)))
    if p == float("inf"):
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1)
    index = flat.abs().argmax(1, keepdim=True)
    direction = torch.zeros_like(flat).scatter(1, index, flat.gather(1, index).sign())
    return direction.reshape(grad.shape)


def checked_eps(eps: Any) -> float:
    """The budget ε, a finite number ≥ 0 (a numpy scalar counts as its number; a ConfigError otherwise)."""
    eps = plain(eps)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps != eps or abs(eps) > 1e300:
        raise ConfigError(f"eps must be a finite number >= 0, got {shown(eps)}")
    if eps < 0:
        raise ConfigError(f"eps must be >= 0, got {shown(eps)}: the budget cannot be negative")
    return eps


def uniform_start(x: torch.Tensor, x0: torch.Tensor, eps: float, seed: int, domain: Intersection) -> torch.Tensor:
    """A random start inside Φ(x0): x plus noise drawn uniformly in the ℓ∞ ball of radius ε (a seeded CPU
    generator, so the draw is the same on every device), projected onto the domain."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1).to(x.device) * eps
    return domain.project(x + noise, x0)


class EvasionAttack:
    """Base of the evasion attacks: configured once, ``attack.run(model, X, y) -> AttackResult`` on a whole batch.

    Parameters
    ----------
    norm : 1, 2 or "inf" — the distance of the budget ‖x′ − x‖_p ≤ eps (:attr:`norms`: those the attack takes).
    eps : the budget ε (≥ 0).
    lb, ub : box bounds (scalars or per-feature arrays; None = unbounded). The paper uses [0, 1] pixels.
    constraints : extra pieces (FeatureAdditionOnly(), Binary(), Mask(m), Quantize(255)) intersected with the
        ball and box (see :func:`transferlab.attacks.threat_model` to build them from a config's names).
    objective : what to maximise (default: untargeted margin loss).
    settings : the attack's own settings, an instance of its :attr:`Settings` model (or a mapping of them); keyword
        arguments (``max_iter=20``) set them one by one, on top of ``settings``. Read them as ``attack.settings``.
    """

    #: the model of the attack's own settings (each attack defines its own, next to it in its module)
    Settings: ClassVar[type[AttackSettings]] = AttackSettings
    #: the budgets' norms the attack takes
    norms: ClassVar[tuple[str, ...]] = ("1", "2", "inf")

    def __init__(self, norm: Any = 2, eps: float = 1.0, lb: Any = 0.0, ub: Any = 1.0,
                 constraints: Sequence[Constraint] = (), objective: Objective | None = None,
                 settings: AttackSettings | Mapping[str, Any] | None = None, **values: Any) -> None:
        self.norm, self.p = norm, parse_norm(norm)
        if {1: "1", 2: "2"}.get(self.p, "inf") not in self.norms:
            raise ConfigError(f"{type(self).__name__} takes norm {' or '.join(self.norms)}, got {shown(norm)}")
        self.eps = checked_eps(eps)
        Box(lb, ub)  # its bounds checked now, not at the first run
        self.lb, self.ub = lb, ub
        self.constraints = tuple(constraints)
        self.objective = Objective() if objective is None else objective
        self.settings = self.Settings.checked(settings, values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.settings)
        return f"{type(self).__name__}(norm={self.norm!r}, eps={self.eps!r}{', ' if fields else ''}{fields})"

    def with_eps(self, eps: float) -> EvasionAttack:
        """The same attack with another budget (the attack itself does not change)."""
        other = copy.copy(self)
        other.eps = checked_eps(eps)
        return other

    @property
    def domain(self) -> Intersection:
        return Intersection(Ball(self.eps, self.p), Box(self.lb, self.ub), *self.constraints)

    def run(self, model: Classifier, X: Any, y: Any, init: Any = None) -> AttackResult:
        """Attack every row of X (y: the true classes, or the target classes for a targeted objective, as class
        indices 0..n_classes − 1, the positions in ``model.classes_``); returns the crafted points ``x_adv``
        (numpy) with their per-sample diagnostics. ``init`` optionally gives starting points (projected onto Φ).
        The attack itself is not changed by a run."""
        x0, labels = self._inputs(model, X, y)
        if not model.differentiable:
            raise NotDifferentiableError(f"{type(model).__name__} has no input gradient: craft the attack on a "
                                         "differentiable surrogate and evaluate the points on this model")
        attack = self._for_run(model)
        domain = attack.domain
        domain.check_start(x0)
        if init is not None:
            init = check_X(init, "init")
            if init.shape != tuple(x0.shape):
                raise DataError(f"init must hold one starting point per row of X, shape {tuple(x0.shape)}; got "
                                f"shape {init.shape}")
        start = x0 if init is None else domain.project(array_tensor(init, x0.dtype, x0.device), x0)
        objective = attack.objective
        objective_start = objective.value(model, x0, labels)
        x_adv, iterations = attack._attack(model, x0, labels, start, domain)
        x_adv = domain.quantize(x_adv, x0)
        return AttackResult(
            x_adv=x_adv.cpu().numpy(),
            objective_start=objective_start.cpu().numpy(),
            objective=objective.value(model, x_adv, labels).cpu().numpy(),
            iterations=iterations.cpu().numpy().astype(int),
            perturbation_norm=lp_norm(x_adv - x0, self.p).cpu().numpy(),
            success=objective.success(model, x_adv, labels).cpu().numpy(),
        )

    @property
    def continues_its_path(self) -> bool:
        """Whether the attack at budget ε′ > ε started from its own points at ε gives what it gives from x0, so a
        warm start is free (:class:`~transferlab.attacks.FeatureAddition`'s greedy path); False unless an attack
        knows it."""
        return False

    def clean_success(self, model: Classifier, X: Any, y: Any) -> np.ndarray:
        """Per row of X, whether the unperturbed point already counts as a success of this attack (misclassified,
        or in the target class), by the rule and the labels of :meth:`run`: the error at ε = 0."""
        x0, labels = self._inputs(model, X, y)
        self.domain.check_start(x0)  # as run does: ε = 0 refuses what every other budget refuses
        return self.objective.success(model, x0, labels).cpu().numpy()

    def _inputs(self, model: Classifier, X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of X as a float64 tensor on the model's device and y as class indices, both checked."""
        model._check_fitted()
        model.check_feature_names(X)
        x0 = array_tensor(check_X(X), torch.float64, model.torch_device)
        if x0.shape[0] == 0:
            raise DataError("X has no rows: there is nothing to attack")
        model.check_features(x0)
        return x0, torch.as_tensor(class_indices(model, y, x0.shape[0]), device=model.torch_device)

    def _for_run(self, model: Classifier) -> EvasionAttack:
        """The attack that runs on ``model``: this one, or a copy set up for one run (never this one, changed)."""
        return self

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


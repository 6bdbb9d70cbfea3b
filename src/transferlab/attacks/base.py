"""Common machinery of the evasion attacks: the threat model (norm, ε, box and extra pieces), steepest-ascent
directions, and the per-sample result object."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from transferlab.attacks.constraints import Ball, Box, Constraint, Intersection, lp_norm, parse_norm
from transferlab.attacks.objectives import Objective
from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier, NotDifferentiableError, check_X, check_y


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


def steepest_direction(grad: torch.Tensor, p: float, movable: torch.Tensor | None = None) -> torch.Tensor:
    """The unit-norm (in ℓp) direction of steepest ascent for a gradient (paper Eq. 15): g/‖g‖₂ for ℓ2, sign(g)
    for ℓ∞, and for ℓ1 the coordinate with the largest |g|. ``movable`` zeroes coordinates blocked by the box."""
    if movable is not None:
        grad = torch.where(movable, grad, torch.zeros_like(grad))
    if p == 2:
        return grad / lp_norm(grad, 2).clamp_min(1e-30).reshape(-1, *([1] * (grad.dim() - 1)))
    if p == float("inf"):
        return grad.sign()
    flat = grad.reshape(grad.shape[0], -1)
    index = flat.abs().argmax(1, keepdim=True)
    direction = torch.zeros_like(flat).scatter(1, index, flat.gather(1, index).sign())
    return direction.reshape(grad.shape)


def uniform_start(x: torch.Tensor, x0: torch.Tensor, eps: float, seed: int, domain: Intersection) -> torch.Tensor:
    """A random start inside Φ(x0): x plus noise drawn uniformly in the ℓ∞ ball of radius ε (a seeded CPU
    generator, so the draw is the same on every device), projected onto the domain."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1).to(x.device) * eps
    return domain.project(x + noise, x0)


#: the range of each numeric setting of the attacks (evasion and poisoning): (least, least excluded, most). The
#: upper bounds keep what a small config can make us allocate bounded (a line search holds ``grid`` candidates of
#: the whole batch at once)
SETTINGS: dict[str, tuple[float, bool, float]] = {
    "max_iter": (1, False, 10**7), "steps": (1, False, 10**7), "grid": (1, False, 64), "bisection": (0, False, 64),
    "warm_grid": (0, False, 64), "features_per_step": (1, False, 10**7), "tol": (0, False, np.inf),
    "step_size": (0, True, np.inf), "decay": (0, False, np.inf), "seed": (0, False, 2**63 - 1),
    "n_points": (1, False, 10**7), "max_passes": (1, False, 10**6), "max_steps": (1, False, 10**7),
    "step": (0, True, np.inf),
}


def shown(value: Any) -> str:
    """``repr(value)`` cut to 40 characters, for messages (a 400-digit number stays readable)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_settings(attack: Any) -> None:
    """Every numeric setting of an attack (a dataclass) has the right type and lies in its range of
    :data:`SETTINGS` (a setting that silently disables the attack, such as ``max_iter: 0`` or ``tol: nan``, is an
    error naming it), and every true/false setting is a bool (``random_start: 1`` is refused, not read as true).
    A setting whose type allows None (``step: float | None``) may be None."""
    import dataclasses

    for f in dataclasses.fields(attack):
        value = getattr(attack, f.name)
        kind = str(f.type)
        if kind in ("bool", "<class 'bool'>"):
            if not isinstance(value, bool):
                raise ConfigError(f"{f.name} must be true or false, got {shown(value)}")
            continue
        if f.name not in SETTINGS or (value is None and "None" in kind):
            continue
        least, strict, most = SETTINGS[f.name]
        whole = kind in ("int", "<class 'int'>")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            raise ConfigError(f"{f.name} must be {'a whole number' if whole else 'a number'}, got {shown(value)}")
        if (isinstance(value, float) and not np.isfinite(value)) or value < least or (strict and value == least) \
                or value > most:
            bound = f" and <= {most:,}" if np.isfinite(most) else ""
            raise ConfigError(f"{f.name} must be {'a whole number' if whole else 'a finite number'} "
                              f"{'>' if strict else '>='} {least:g}{bound}, got {shown(value)}")


@dataclass
class EvasionAttack:
    """Base of the evasion attacks: ``attack.run(model, X, y) -> X_adv`` on a whole batch.

    Parameters
    ----------
    norm : 1, 2 or "inf" — the distance of the budget ‖x′ − x‖_p ≤ eps.
    eps : the budget ε (≥ 0).
    lb, ub : box bounds (scalars or per-feature arrays; None = unbounded). The paper uses [0, 1] pixels.
    constraints : extra pieces (FeatureAdditionOnly(), Binary(), Mask(m), Quantize(255)) intersected with the
        ball and box (see :func:`transferlab.attacks.threat_model` to build them from a config's names).
    objective : what to maximise (default: untargeted margin loss).
    """

    norm: Any = 2
    eps: float = 1.0
    lb: Any = 0.0
    ub: Any = 1.0
    constraints: tuple[Constraint, ...] = ()
    objective: Objective = field(default_factory=Objective)

    def __post_init__(self) -> None:
        self.p = parse_norm(self.norm)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not self.eps >= 0 \
                or self.eps > 1e300:
            raise ConfigError(f"eps must be a finite number >= 0, got {shown(self.eps)}; the budget cannot be "
                              "negative")
        check_settings(self)
        self.result_: AttackResult | None = None

    def with_eps(self, eps: float) -> EvasionAttack:
        """The same attack with another budget."""
        return replace(self, eps=eps)

    @property
    def domain(self) -> Intersection:
        return Intersection(Ball(self.eps, self.p), Box(self.lb, self.ub), *self.constraints)

    def run(self, model: Classifier, X: Any, y: Any, init: Any = None) -> Any:
        """Attack every row of X (labels y: true labels, or target classes for a targeted objective); returns
        X_adv as numpy (or a tensor if X is a tensor). ``init`` optionally gives starting points (projected onto
        Φ). Per-sample diagnostics go to ``self.result_``."""
        model._check_fitted()
        if not model.differentiable:
            raise NotDifferentiableError(f"{type(model).__name__} has no input gradient: craft the attack on a "
                                         "differentiable surrogate and evaluate the points on this model")
        as_tensor = isinstance(X, torch.Tensor)
        x0 = torch.as_tensor(check_X(X), dtype=torch.float64, device=model.torch_device)
        if x0.shape[0] == 0:
            raise DataError("X has no rows: there is nothing to attack")
        model.check_features(x0)
        labels = torch.as_tensor(check_y(y, x0.shape[0], model.n_classes_), device=model.torch_device)
        domain = self.domain
        domain.check_start(x0)
        start = x0 if init is None else domain.project(torch.as_tensor(check_X(init, "init"), dtype=x0.dtype,
                                                                       device=x0.device), x0)
        objective_start = self.objective.value(model, x0, labels)
        x_adv, iterations = self._attack(model, x0, labels, start, domain) if x0.shape[0] else (x0, torch.zeros(0))
        x_adv = domain.quantize(x_adv, x0)
        final = self.objective.value(model, x_adv, labels)
        self.result_ = AttackResult(
            x_adv=x_adv.cpu().numpy(),
            objective_start=objective_start.cpu().numpy(),
            objective=final.cpu().numpy(),
            iterations=iterations.cpu().numpy().astype(int),
            perturbation_norm=lp_norm(x_adv - x0, self.p).cpu().numpy(),
            success=self.objective.success(model, x_adv, labels).cpu().numpy(),
        )
        return x_adv.to(torch.as_tensor(X).dtype) if as_tensor else self.result_.x_adv

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _movable(self, x: torch.Tensor, grad: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
        """Coordinates where a step along ``grad`` is not blocked by the box (a coordinate within 1e-10 of its
        bound counts as on it, so rounding noise cannot change the direction)."""
        return ((grad > 0) & (x < ub - BOUND_TOL)) | ((grad < 0) & (x > lb + BOUND_TOL))

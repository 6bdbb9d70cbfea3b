"""The attacker's feasible domain Φ(x0) (paper Section 3: a distance budget and a box), as composable pieces with
exact, batched, per-sample projections.

Pieces: :class:`L2Ball`, :class:`LinfBall`, :class:`L1Ball` (‖x − x0‖_p ≤ ε), :class:`Box` (lb ⪯ x ⪯ ub, scalars
or per-feature arrays), :class:`FeatureAdditionOnly` (x0 ⪯ x), :class:`Binary` (x ∈ {0, 1}^d) and :class:`Mask`
(only some features may change). Combine them with ``&`` (or :class:`Intersection`); every projection is computed
for each row independently.

How the intersection is projected (the Euclidean projection of z onto Φ(x0) = ball ∩ [L, U], where [L, U] gathers
every box-like piece, x0 ∈ [L, U]):

- ℓ∞ ∩ box: closed form, clip z to [max(L, x0 − ε), min(U, x0 + ε)] (the set is a box).
- ℓ2 ∩ box: the KKT conditions of min ½‖x − z‖² s.t. ‖x − x0‖² ≤ ε², L ⪯ x ⪯ U give
  x(t) = x0 + clip(t (z − x0), L − x0, U − x0) with t = 1/(1 + λ) ∈ (0, 1], λ ≥ 0 the multiplier of the ball.
  ‖x(t) − x0‖² is piecewise quadratic in t with one breakpoint per coordinate (where it reaches its bound); an
  active-set iteration on the coordinates at their bounds finds the t with ‖x(t) − x0‖ = ε exactly in a few
  elementwise rounds (see :func:`_project_l2_box`).
- ℓ1 ∩ box: likewise x(λ) = clip(x0 + soft_threshold(z − x0, λ), L, U), λ by bisection so ‖x(λ) − x0‖₁ ≤ ε.
- Binary: round to {0, 1} inside [L, U]; with an ℓ1 (= Hamming) budget k, keep the k flips with the largest
  |z − x0| among those that rounding asks for (the exact projection onto that discrete set).
- Mask: fixed features keep their x0 value (their bounds become [x0, x0]).
- Quantize(levels): crafted points are moved onto the data's grid {0, 1/levels, ..., 1} (8-bit images: 255) once
  the attack ends (:meth:`Intersection.quantize`): each coordinate is rounded to the nearest level, and a row that
  rounding pushes out of the ball is rounded towards x0 instead, which can only shrink every |x − x0|, so the point
  stays inside Φ(x0). A coordinate of x0 off the grid (data finer than the grid) with no grid value between x0_i
  and x_i keeps x0_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from transferlab.errors import ConfigError, DataError

BISECTION_STEPS = 64
#: a coordinate of x0 within this fraction of a grid step (times max(1, its value in steps)) of a grid value counts
#: as on the grid: twice float32's relative precision, so data stored as float32 multiples of 1/levels are on it
GRID_TOL = 2.0 ** -22


def lp_norm(delta: torch.Tensor, p: float) -> torch.Tensor:
    """Per-row ℓp norm of a batch (p ∈ {1, 2, inf})."""
    flat = delta.reshape(delta.shape[0], -1)
    if p == 1:
        return flat.abs().sum(1)
    if p == 2:
        return flat.norm(dim=1)
    return flat.abs().amax(1) if flat.shape[1] else flat.new_zeros(flat.shape[0])


def dual_norm(p: float) -> float:
    """q with 1/p + 1/q = 1 (the norm of S in Eq. 17)."""
    return {1: float("inf"), 2: 2, float("inf"): 1}[p]


def parse_norm(norm: Any) -> float:
    table = {"1": 1, "l1": 1, "2": 2, "l2": 2, "inf": float("inf"), "linf": float("inf")}
    key = str(norm).lower().replace("ℓ", "l").replace("∞", "inf")
    key = {"1.0": "1", "2.0": "2"}.get(key, key)
    if key not in table:
        raise ConfigError(f"unknown norm {norm!r}; use 1, 2 or inf")
    return table[key]


class Constraint:
    """A piece of the feasible domain. ``a & b`` intersects pieces; ``project(z, x0)`` and ``contains(x, x0)``
    work on batches (rows are samples)."""

    def __and__(self, other: Constraint) -> Intersection:
        return Intersection(*_pieces(self), *_pieces(other))

    def project(self, z: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return Intersection(self).project(z, x0)

    def contains(self, x: torch.Tensor, x0: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
        return Intersection(self).contains(x, x0, tol)


def _pieces(c: Constraint) -> tuple[Constraint, ...]:
    return c.pieces if isinstance(c, Intersection) else (c,)


@dataclass(frozen=True)
class Ball(Constraint):
    eps: float
    p: float = 2

    def __post_init__(self) -> None:
        if not np.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"the budget eps must be a finite number >= 0, got {self.eps}")


def L2Ball(eps: float) -> Ball:
    """‖x − x0‖₂ ≤ ε."""
    return Ball(eps, 2)


def LinfBall(eps: float) -> Ball:
    """‖x − x0‖∞ ≤ ε."""
    return Ball(eps, float("inf"))


def L1Ball(eps: float) -> Ball:
    """‖x − x0‖₁ ≤ ε (on binary features: at most ε changed features)."""
    return Ball(eps, 1)


def per_feature(values: torch.Tensor, x0: torch.Tensor, what: str) -> torch.Tensor:
    """``values`` (a scalar, or one value per feature) broadcast to the rows of x0, without copies; a one-line
    ConfigError when it has another shape."""
    try:
        return values.expand_as(x0)
    except RuntimeError:
        raise ConfigError(f"{what} has shape {tuple(values.shape)}; give one value, or one per feature "
                          f"(shape {tuple(x0.shape[1:])})") from None


@dataclass(frozen=True, eq=False)
class Box(Constraint):
    """lb ⪯ x ⪯ ub; each bound a scalar or a per-feature array (None: unbounded)."""

    lb: Any = None
    ub: Any = None

    def __post_init__(self) -> None:
        for name, bound in (("lb", self.lb), ("ub", self.ub)):
            if bound is None:
                continue
            try:
                values = np.asarray(bound.detach().cpu() if isinstance(bound, torch.Tensor) else bound, dtype=float)
            except (TypeError, ValueError):
                raise ConfigError(f"box bound {name} must be a number or one number per feature, got "
                                  f"{type(bound).__name__}") from None
            if np.isnan(values).any():
                raise ConfigError(f"box bound {name} holds NaN; give a number (or None for no bound)")

    def bounds(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def as_bound(b: Any, fill: float, name: str) -> torch.Tensor:
            t = torch.as_tensor(fill if b is None else b, dtype=x0.dtype, device=x0.device)
            return per_feature(t, x0, f"box bound {name}")

        lb, ub = as_bound(self.lb, -float("inf"), "lb"), as_bound(self.ub, float("inf"), "ub")
        if bool((lb > ub).any()):
            raise ConfigError("box lower bound exceeds upper bound")
        return lb, ub


@dataclass(frozen=True)
class FeatureAdditionOnly(Constraint):
    """x0 ⪯ x: features may only grow (the paper's malware setting: add features, never remove)."""


@dataclass(frozen=True)
class Binary(Constraint):
    """x ∈ {0, 1}^d."""


@dataclass(frozen=True, eq=False)
class Mask(Constraint):
    """Only features where ``mask`` is True may change; the others keep their x0 value."""

    mask: Any


@dataclass(frozen=True)
class Quantize(Constraint):
    """Crafted points lie on the grid of multiples of 1/``levels`` (e.g. 255 for 8-bit images), applied once
    when the attack ends; see :meth:`Intersection.quantize`."""

    levels: int

    def __post_init__(self) -> None:
        if not (isinstance(self.levels, int) and self.levels >= 1):
            raise ConfigError(f"quantize must be a whole number of levels >= 1 (e.g. 255), got {self.levels!r}")


class Intersection(Constraint):
    """The intersection of pieces, with the exact projection described in the module docstring. At most one
    ball; box-like pieces (Box, FeatureAdditionOnly, Mask) combine into per-sample bounds [L, U]."""

    def __init__(self, *pieces: Constraint) -> None:
        self.pieces = tuple(pieces)
        balls = [c for c in pieces if isinstance(c, Ball)]
        if len(balls) > 1:
            raise ConfigError("at most one distance ball per domain")
        self.ball = balls[0] if balls else None
        self.binary = any(isinstance(c, Binary) for c in pieces)
        grids = [c.levels for c in pieces if isinstance(c, Quantize)]
        if len(set(grids)) > 1:
            raise ConfigError("at most one quantisation grid per domain")
        self.levels = grids[0] if grids else None

    def __repr__(self) -> str:
        return " & ".join(repr(p) for p in self.pieces) or "Intersection()"

    def bounds(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[L, U] of the box-like pieces for the rows of x0 (tensors of x0's shape, possibly broadcast views of a
        piece's own bounds: read them, never write them). The last call's result is kept for the same x0 (the
        same tensor, unchanged since): an attack's run checks its start and then attacks on the same points."""
        seen = getattr(self, "_bounds", None)
        if seen is not None and seen[0] is x0 and seen[1] == x0._version:
            return seen[2]
        result = self._bounds_of(x0)
        self._bounds = (x0, x0._version, result)
        return result

    def _bounds_of(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = [c for c in self.pieces if isinstance(c, (Box, FeatureAdditionOnly, Mask, Binary))]
        if len(boxes) == 1 and isinstance(boxes[0], Box):  # one box: its own bounds, broadcast (no copies)
            return boxes[0].bounds(x0)
        lb = torch.full_like(x0, -float("inf"))
        ub = torch.full_like(x0, float("inf"))
        for c in self.pieces:
            if isinstance(c, Box):
                b_lo, b_hi = c.bounds(x0)
                lb, ub = torch.maximum(lb, b_lo), torch.minimum(ub, b_hi)
            elif isinstance(c, FeatureAdditionOnly):
                lb = torch.maximum(lb, x0)
            elif isinstance(c, Mask):
                fixed = ~per_feature(torch.as_tensor(np.asarray(c.mask), dtype=torch.bool, device=x0.device), x0,
                                     "mask")
                lb, ub = torch.where(fixed, x0, lb), torch.where(fixed, x0, ub)
            elif isinstance(c, Binary):
                lb, ub = torch.maximum(lb, torch.zeros_like(x0)), torch.minimum(ub, torch.ones_like(x0))
        return lb, ub

    def check_start(self, x0: torch.Tensor, tol: float = 1e-9) -> None:
        """The attacked points must lie inside the box (else Φ(x0) may be empty), and on {0, 1} when the domain
        is binary (else the projection would round them: an attack with ε = 0 would move them)."""
        lb, ub = self.bounds(x0)
        if x0.numel() and (float((lb - x0).amax()) > tol or float((x0 - ub).amax()) > tol):
            raise ConfigError("attacked points lie outside the box [lb, ub]; rescale the data or widen the box")
        if self.binary and x0.numel() and not bool(((x0 == 0) | (x0 == 1)).all()):
            raise DataError("the threat model is binary (features 0 or 1) but the attacked points hold other "
                            "values; binarise the data, or attack without the binary piece")

    def project(self, z: torch.Tensor, x0: torch.Tensor,
                bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Π_Φ(x0)(z) for each row. ``z`` may carry extra leading dimensions over ``x0`` (a stack of candidates
        for the same points, shape (m, *x0.shape)), which broadcast against x0 without copies for the ℓ2 and ℓ∞
        balls; ``bounds`` passes precomputed ``self.bounds(x0)``."""
        lb, ub = self.bounds(x0) if bounds is None else bounds
        extra = z.dim() - x0.dim()
        if extra and (self.binary or (self.ball is not None and self.ball.p == 1)):
            flat = z.reshape(-1, *x0.shape[1:])
            reps = flat.shape[0] // x0.shape[0]
            repeat = lambda t: t.repeat(reps, *([1] * (t.dim() - 1)))  # noqa: E731
            return self.project(flat, repeat(x0), (repeat(lb), repeat(ub))).reshape(z.shape)
        if self.binary:
            return self._project_binary(z, x0, lb, ub)
        if self.ball is None:
            return torch.minimum(torch.maximum(z, lb), ub)
        eps, p = self.ball.eps, self.ball.p
        if p == float("inf"):
            return torch.minimum(torch.maximum(z, torch.maximum(lb, x0 - eps)), torch.minimum(ub, x0 + eps))
        if p == 2:
            # where clip(z) already lies in the ball it is the projection; only the other rows need the exact solve
            clipped = torch.minimum(torch.maximum(z, lb), ub)
            rows = clipped.shape[:extra + 1]
            outside = (clipped - x0).reshape(*rows, -1).norm(dim=-1) > eps
            if bool(outside.any()):
                full = lambda t: t.expand_as(z)[outside]  # noqa: E731
                solved = _project_l2_box(z[outside].reshape(-1, x0[0].numel()),
                                         full(x0).reshape(-1, x0[0].numel()), full(lb).reshape(-1, x0[0].numel()),
                                         full(ub).reshape(-1, x0[0].numel()), eps)
                clipped[outside] = solved.reshape(-1, *x0.shape[1:])
            return clipped
        delta = z - x0

        def point(lam: torch.Tensor) -> torch.Tensor:
            lam = lam.reshape(-1, *([1] * (z.dim() - 1)))
            step = delta.sign() * (delta.abs() - lam).clamp_min(0)
            return torch.minimum(torch.maximum(x0 + step, lb), ub)

        x = point(torch.zeros(z.shape[0], dtype=z.dtype, device=z.device))
        outside = lp_norm(x - x0, p) > eps
        if not bool(outside.any()):
            return x
        # bracket λ of the ℓ1 soft threshold: λ = max|δ| gives x = x0, always feasible
        hi = delta.reshape(z.shape[0], -1).abs().amax(1)
        lo = torch.zeros_like(hi)
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            feasible = lp_norm(point(mid) - x0, p) <= eps
            hi = torch.where(feasible, mid, hi)
            lo = torch.where(feasible, lo, mid)
        projected = point(hi)
        mask = outside.reshape(-1, *([1] * (z.dim() - 1)))
        return torch.where(mask, projected, x)

    def _project_binary(self, z: torch.Tensor, x0: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
        x0b = x0.round()
        rounded = torch.minimum(torch.maximum((z >= 0.5).to(z.dtype), lb.ceil()), ub.floor())
        if self.ball is None:
            return rounded
        if self.ball.p != 1:
            raise ConfigError("binary features go with an l1 (Hamming) budget: use norm=1")
        k = int(np.floor(self.ball.eps + 1e-9))
        flips = (rounded != x0b).reshape(z.shape[0], -1)
        gain = torch.where(flips, (z - x0b).abs().reshape(z.shape[0], -1), torch.zeros_like(flips, dtype=z.dtype))
        if k >= flips.shape[1]:
            return rounded
        kth = gain.topk(k + 1, dim=1).values[:, k:k + 1] if k >= 0 else gain.new_zeros(gain.shape[0], 1)
        # keep flips whose gain beats the (k+1)-th largest; ties broken by position so exactly <= k flips remain
        keep = flips & (gain > kth)
        ties = flips & (gain == kth) & (kth > 0)
        room = k - keep.sum(1, keepdim=True)
        keep |= ties & (ties.cumsum(1) <= room)
        return torch.where(keep.reshape(z.shape), rounded, x0b)

    def quantize(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """x on the grid of multiples of 1/levels and still inside Φ(x0) (x inside Φ(x0)).

        Nearest rounding first; rows that it pushes out of Φ(x0) are rounded towards x0 instead, coordinate by
        coordinate: each x_i becomes the grid value nearest to x_i among those between x0_i and x_i, or stays at
        x0_i when none lies between them (x0_i off the grid, e.g. 8-bit data on a coarser grid such as
        ``quantize: 3``). That never increases |x_i − x0_i| and keeps x_i between x0_i and its feasible value:
        inside every ball, box, feature-addition and mask constraint. Where x0 lies on the grid (up to float
        rounding) every coordinate ends on the grid. Without a Quantize piece, x is returned as it is."""
        if self.levels is None:
            return x
        q = float(self.levels)
        nearest = torch.round(x * q) / q
        inside = self.contains(nearest, x0, tol=1e-9)
        a = x0 * q
        on_grid = (a - torch.round(a)).abs() <= GRID_TOL * a.abs().clamp_min(1.0)
        x0_grid = torch.round(a) / q
        delta = (x - x0_grid) * q
        steps = torch.where(delta >= 0, torch.floor(delta + 1e-9), torch.ceil(delta - 1e-9))
        toward_on = torch.where(steps == 0, x0, x0_grid + steps / q)  # no whole step towards x: x0 itself
        up = x >= x0
        candidate = torch.where(up, torch.floor(x * q + 1e-9), torch.ceil(x * q - 1e-9)) / q
        between = torch.where(up, candidate >= x0, candidate <= x0)
        toward = torch.where(on_grid, toward_on, torch.where(between, candidate, x0))
        return torch.where(inside.reshape(-1, *([1] * (x.dim() - 1))), nearest, toward)

    def contains(self, x: torch.Tensor, x0: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
        lb, ub = self.bounds(x0)
        flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
        ok = ((flat(x) >= flat(lb) - tol) & (flat(x) <= flat(ub) + tol)).all(1)
        if self.ball is not None:
            ok &= lp_norm(x - x0, self.ball.p) <= self.ball.eps * (1 + tol) + tol
        if self.binary:
            ok &= ((flat(x) == 0) | (flat(x) == 1)).all(1)
        return ok


def _project_l2_box(z: torch.Tensor, x0: torch.Tensor, lb: torch.Tensor, ub: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact Euclidean projection onto {‖x − x0‖₂ ≤ ε} ∩ [lb, ub] for each row (x0 inside the box; rows (n, d)).

    The KKT conditions give x(t) = x0 + clip(t δ, lb − x0, ub − x0), δ = z − x0, with t ∈ (0, 1] where
    φ(t) = ‖x(t) − x0‖² = Σ_i min(t a_i, c_i)² reaches ε² (a_i = |δ_i|, c_i the room to the bound in the direction
    of δ_i). Coordinate i is *saturated* (at its bound) once t a_i ≥ c_i. Given a saturated set S, the t solving
    Σ_S c_i² + t² Σ_{i∉S} a_i² = ε² is t_S = sqrt((ε² − Σ_S c²) / Σ_{∉S} a²). Starting from S = ∅ (t = ε/‖δ‖),
    the active-set iteration S ← S(t_S) gives t's that increase and never pass the solution t* (each t_S has
    φ(t_S) ≤ ε² because S ⊆ S(t*)), so S only grows and the iteration ends, exactly, when S stops changing —
    after a few rounds in practice (at most d). Each round is a few elementwise passes over the batch: no sort.
    """
    delta = z - x0
    lo, hi = lb - x0, ub - x0
    a = delta.abs()
    room = torch.where(delta >= 0, hi, -lo).clamp_min(0)
    a2 = a * a
    c2 = room.clamp_max(torch.finfo(z.dtype).max ** 0.5 / 2) ** 2
    tiny = torch.finfo(z.dtype).tiny
    t = eps / a2.sum(1, keepdim=True).sqrt().clamp_min(tiny)
    saturated = torch.zeros_like(a, dtype=torch.bool)
    for _ in range(a.shape[1] + 1):
        grown = saturated | (t * a >= room)
        if torch.equal(grown, saturated):
            break
        saturated = grown
        saturated_sum = torch.where(saturated, c2, 0.0).sum(1, keepdim=True)
        free_sum = torch.where(saturated, 0.0, a2).sum(1, keepdim=True)
        t = ((eps ** 2 - saturated_sum).clamp_min(0) / free_sum.clamp_min(tiny)).sqrt()
    t = t.clamp_max(1.0)
    step = torch.minimum(torch.maximum(t * delta, lo), hi)
    # a tiny rescale guards the ball against rounding in the last bit
    norm = step.norm(dim=1, keepdim=True)
    step = torch.where(norm > eps, step * (eps / norm.clamp_min(tiny)), step)
    return x0 + step

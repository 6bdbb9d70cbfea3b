"""The pieces of Algorithm 1's chord and closed-form line searches (:mod:`transferlab.attacks.pgd_line_search`)
that do not depend on the model: points of Φ(x0) for the active rows (:class:`Steps`: the projection of x0 + δ and
the maximiser of a linear function over Φ), the exact ℓ2∩box step by arithmetic passes (:func:`ball_box_step`),
the gradient with the coordinates the box blocks left out (:func:`free_gradient`), the rate along the sphere that
decides a retry (:func:`tangent_rate`), and which projection a domain takes (:func:`domain_kind`)."""

from __future__ import annotations

import numpy as np
import torch

from transferlab.attacks.base import BOUND_TOL
from transferlab.attacks.constraints import Ball, Binary, Box, FeatureAdditionOnly, Intersection, Mask, Quantize
from transferlab.models.base import Classifier


NEAR_TIE = 1e-10
#: stands in for an infinite bound of the box (its square, summed over 2^24 features, stays finite in float64)
BIG = 2.0 ** 480
#: the step of the closed forms, T·g/‖g‖∞: with |g_i| ≤ 1 every coordinate with |g_i| > 2^−420 reaches its bound
HUGE_STEP = 2.0 ** 900
#: the step of the closed form on binary domains, x0 + T·g/‖g‖∞ (the projection rounds it)
BINARY_STEP = 1e100


def tie_tolerance(model: Classifier) -> float:
    """Relative difference below which two values of A count as equal: NEAR_TIE for float64 models, 16 units in
    the last place for lower precisions (a float32 network's scores of one point differ by a few units between
    batch compositions, and between the closed forms of :class:`Path` and a direct scoring)."""
    return max(NEAR_TIE, 16 * torch.finfo(model.dtype).eps)


def tangent_rate(grad: torch.Tensor, free: torch.Tensor, u: torch.Tensor, eps: float) -> torch.Tensor:
    """For points on the sphere ‖u‖ = ε (u = x − x0), the rate ⟨g, t⟩ at which A rises along the unit direction t
    of the free gradient's component tangent to the sphere (t ∝ g_f − ⟨g_f, n⟩ n, n = u/‖u‖): the first-order gain
    per unit step of a short step that stays on the sphere. 0 for points inside the ball (whose line search did not
    run along the sphere)."""
    norm_u = torch.linalg.vector_norm(u, dim=1)
    n_free = torch.linalg.vecdot(free, u) / norm_u.clamp_min(torch.finfo(u.dtype).tiny)
    n_grad = torch.linalg.vecdot(grad, u) / norm_u.clamp_min(torch.finfo(u.dtype).tiny)
    free2 = torch.linalg.vector_norm(free, dim=1).square_()
    tangent = (free2 - n_free * n_free).clamp_min(torch.finfo(u.dtype).tiny).sqrt()
    rate = (free2 - n_free * n_grad) / tangent
    return torch.where(norm_u >= eps * (1 - 1e-6), rate, 0.0)


def domain_kind(domain: Intersection, p: float) -> str:
    """How :class:`Steps` projects onto the domain: "l2" or "linf" (a ball and box-like pieces: the ℓ2 one by
    :func:`ball_box_step`, the ℓ∞ one a box), "l1" and "binary" (their steps by ``domain.project``, closed forms
    of their own), "other" (a piece this module does not know: only ``domain.project``, no closed form)."""
    known = (Ball, Box, FeatureAdditionOnly, Mask, Quantize, Binary)
    if not all(isinstance(c, known) for c in domain.pieces):
        return "other"
    if domain.binary:
        return "binary"
    return {2: "l2", float("inf"): "linf", 1: "l1"}[p]


def free_gradient(grad: torch.Tensor, u: torch.Tensor, lo_tol: torch.Tensor, hi_tol: torch.Tensor) -> torch.Tensor:
    """The gradient with the coordinates that the box blocks set to 0 (:func:`~transferlab.attacks.base.movable`: a
    coordinate within BOUND_TOL of the bound it is pushed against), from u = x − x0 and the box relative to x0
    narrowed by BOUND_TOL (lo_tol = lo + BOUND_TOL, hi_tol = hi − BOUND_TOL): coordinate i is free where its room in the
    direction of g_i, hi_tol − u for g_i > 0 and u − lo_tol otherwise, is positive (g_i = 0 gives 0 either way).
    Six passes over the rows; ``grad`` may be of a lower precision than u (the result is u's)."""
    room = torch.where(grad > 0, hi_tol - u, u - lo_tol)
    return room.gt_(0).mul_(grad)


def ball_box_step(delta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float,
                  t_max: float) -> torch.Tensor:
    """clip(t δ, lo, hi) for each row (rows (n, d); lo ≤ 0 ≤ hi, finite) with t the largest in (0, t_max] whose
    ℓ2 norm is at most ε. With t_max = 1 it is the exact Euclidean projection of x0 + δ onto the ℓ2 ball of radius
    ε around x0 intersected with the box [x0 + lo, x0 + hi], minus x0 (the KKT conditions, see
    :mod:`~transferlab.attacks.constraints`); with t_max = ∞ the maximiser of ⟨δ, ·⟩ over that set.

    The squared norm as a function of s = t², f(s) = ‖clip(√s δ, lo, hi)‖² = Σ_i min(s δ_i², c_i²) with c_i the
    room of coordinate i in the direction of δ_i, is concave, piecewise linear and increasing. The secant method
    from f(0) = 0 and s_1 = ε²/‖δ‖² (where f(s_1) ≤ ε²) stays below the root, because a chord of a concave function
    lies above it beyond its ends: every iterate is a feasible step. Once two iterates lie on the root's linear
    piece (the set of coordinates at their bounds stops changing) it lands on the root exactly. Each round is three
    passes over the rows (scale, clip to the box, squared norm); the rest is per row. Where the
    chord is much flatter than f(s)/s, its slope is a difference of nearly equal numbers and the slope of f
    itself, Σ δ_i² over the coordinates inside their bounds, is computed instead (a Newton step, also safe from
    below; a slope of 0 means every coordinate is at its bound: t = t_max)."""
    eps2 = eps * eps
    s_max = t_max * t_max if np.isfinite(t_max) else min(BIG, torch.finfo(delta.dtype).max)
    a2_sum = torch.linalg.vector_norm(delta, dim=1).square_()
    s_prev = f_prev = torch.zeros(delta.shape[0], dtype=delta.dtype, device=delta.device)
    s = (eps2 / a2_sum.clamp_min_(torch.finfo(delta.dtype).tiny)).clamp_max_(s_max)
    step = torch.empty_like(delta)
    gap_done = max(1e-13, 4 * torch.finfo(delta.dtype).eps) * eps2
    for _ in range(4 * delta.shape[1] + 4):
        root = s.sqrt().unsqueeze_(1)
        torch.mul(delta, root, out=step).clamp_(lo, hi)
        f = torch.linalg.vector_norm(step, dim=1).square_()
        gap = eps2 - f
        slope = (f - f_prev).div_(s - s_prev)
        flat = slope * s < 1e-6 * f
        if bool(flat.any()):
            # Σ δ_i² over the coordinates the clip left alone: |√s δ_i| − |step_i| is 0 there, > 0 where clipped
            free = (delta * root).abs_().sub_(step.abs()).le_(0)
            exact = torch.linalg.vecdot(free, delta * delta)
            slope = torch.where(flat, exact, slope)
        new = (gap / slope).add_(s).clamp_max_(s_max)  # a slope of 0: s_max
        # a row stops when it meets the ball (to 1e-13 ε², or 4 units in the last place of a lower precision), or
        # the secant stops rising (at s_max: new ≤ s_max = s)
        going = (gap > gap_done) & (new > s)
        if not bool(going.any()):
            break
        s_prev, f_prev, s = torch.where(going, s, s_prev), torch.where(going, f, f_prev), torch.where(going, new, s)
    if bool((f > eps2).any()):  # a tiny rescale guards the ball against rounding in the last bit
        step = step * torch.where(f > eps2, eps / f.sqrt(), 1.0)[:, None]
    return step


class Steps:
    """Points of Φ(x0) for the chord and closed-form line searches, for the active rows: the projection of
    x0 + δ, and the maximiser of a linear function over Φ(x0). Keeps x0, the box relative to x0 (lo = lb − x0,
    hi = ub − x0, infinite bounds as ±BIG; for ℓ∞ intersected with [−ε, ε]) and narrowed by BOUND_TOL (by four
    units in the last place of 1 where that is larger: in float32), and the absolute box where ``domain.project``
    needs it."""

    def __init__(self, domain: Intersection, kind: str, eps: float, x0: torch.Tensor, lb: torch.Tensor,
                 ub: torch.Tensor) -> None:
        self.domain, self.kind, self.eps = domain, kind, eps
        self.x0 = x0
        # the absolute box only where domain.project needs it
        self.lb, self.ub = (lb, ub) if kind in ("l1", "binary", "other") else (None, None)
        big = min(BIG, torch.finfo(x0.dtype).max)
        self.lo, self.hi = (lb - x0).clamp_min_(-big), (ub - x0).clamp_max_(big)
        # the box narrowed by BOUND_TOL, for free_gradient (before the ℓ∞ ball narrows lo and hi)
        tol = max(BOUND_TOL, 4 * torch.finfo(x0.dtype).eps)
        self.lo_tol, self.hi_tol = self.lo + tol, self.hi - tol
        if kind == "linf":
            self.lo.clamp_min_(-eps)
            self.hi.clamp_max_(eps)

    def keep(self, mask: torch.Tensor) -> None:
        self.x0, self.lo, self.hi = self.x0[mask], self.lo[mask], self.hi[mask]
        self.lo_tol, self.hi_tol = self.lo_tol[mask], self.hi_tol[mask]
        if self.lb is not None:
            self.lb, self.ub = self.lb[mask], self.ub[mask]

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Π_Φ(x0 + δ) for each row."""
        if self.kind == "l2":
            return self.x0 + ball_box_step(delta, self.lo, self.hi, self.eps, 1.0)
        if self.kind == "linf":
            return self.x0 + torch.clamp(delta, self.lo, self.hi)
        return self.domain.project(self.x0 + delta, self.x0, (self.lb, self.ub))

    def maximiser(self, grad: torch.Tensor) -> torch.Tensor:
        """argmax over x′ ∈ Φ(x0) of ⟨grad, x′⟩ for each row (see :func:`linear_maximiser`)."""
        return linear_maximiser(grad, self.x0, self.domain, self.kind, self.eps, self.lb, self.ub, self.lo,
                                self.hi)


def linear_maximiser(grad: torch.Tensor, x0: torch.Tensor, domain: Intersection, kind: str, eps: float,
                     lb: torch.Tensor, ub: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """argmax over x′ ∈ Φ(x0) of ⟨grad, x′⟩ for each row, the end of the projected path lim_{T→∞} Π_Φ(x0 + T grad)
    (``kind`` from :func:`domain_kind`, lo/hi the box relative to x0 as :class:`Steps` keeps them).

    - ℓ2∩box: x0 + clip(τ grad, lo, hi) with τ the largest step inside the ball (:func:`ball_box_step` with
      t_max = ∞); the box's corner in the direction of grad when the whole corner lies inside the ball.
    - ℓ∞∩box: the vertex x0 + clip(HUGE_STEP·grad/‖grad‖∞, max(lo, −ε), min(hi, ε)).
    - ℓ1∩box: the greedy fill — coordinates by decreasing |grad|, each moved to its bound in the direction of its
      sign until ε is spent.
    - binary with a Hamming budget k: the projection of x0 + T grad, the k flips of largest |grad| that the box
      and the other pieces allow.

    Coordinates with grad = 0 keep their x0 value."""
    scale = grad.abs().amax(1, keepdim=True).clamp_min_(torch.finfo(grad.dtype).tiny)
    direction = grad / scale
    if kind == "l2":
        return x0 + ball_box_step(direction, lo, hi, eps, float("inf"))
    if kind == "linf":
        return x0 + torch.minimum(torch.maximum(direction * HUGE_STEP, lo), hi)
    if kind == "l1":
        room = torch.maximum(hi * direction.sign(), lo * direction.sign())
        order = direction.abs().argsort(dim=1, descending=True)
        room_sorted = room.gather(1, order)
        before = room_sorted.cumsum(1) - room_sorted
        move = torch.minimum(room_sorted, (eps - before).clamp_min(0))
        return x0 + torch.zeros_like(direction).scatter(1, order, move) * direction.sign()
    return domain.project(x0 + BINARY_STEP * direction, x0, (lb, ub))

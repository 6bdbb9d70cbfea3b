"""The paper's Algorithm 1: projected gradient ascent with a line search, batched over all points.

    x′ ← x0
    repeat:  x ← x′;  x′ ← the best point a line search finds on the projected step from x along d(x), the
             steepest ascent direction of ∇_x A (Eq. 15; coordinates that the box blocks are left out)
    until |A(x′) − A(x)| ≤ tol  (per sample)  or  max_iter

A step is taken only where it increases A, so the objective never decreases; points that have converged leave the
batch. Three line searches, each per sample and for all points at once:

- **chord** (the default, for ℓ2 and ℓ∞ budgets): one projection per iteration, p = Π_Φ(x + η̄ d), and the
  search along the segment (1 − α) x + α p, α ∈ (0, 1], which lies inside Φ (Φ is convex), so no candidate needs a
  projection — the authors' own line search (secml's PGD-LS) moves along Π(x + η d) − x too. At a point's first
  iteration η̄ = η_max = 2ε (the diameter of the ball) and α = 2^−k for k < ``grid``; afterwards η̄ = twice the
  point's last accepted step and α = 1, ½, ¼, ... (``warm_grid`` candidates: 2η, η, η/2, ... of the last step);
  then ``bisection`` rounds of one candidate each, the middle of the longer side of the bracket around the best.
  On the sphere ‖x − x0‖ = ε a long chord runs inside the ball, below the arc it cuts: a line search that gains
  less than ``tol`` on a chord longer than η_max/8 is tried once more on one eight times shorter (with the gradient
  already computed: the point has not moved), where the gradient's component along the sphere promises more than
  ``tol`` over that step (:func:`tangent_rate`). Along a segment the scores have closed forms (:class:`_Path`) for
  the models whose first step is affine (linear models, the MLP: z(α) = (1 − α) z(x) + α z(p)) and for RBF SVMs
  (x·s is affine in α and ‖x‖² quadratic): a segment costs one product with the model's first matrix, a candidate
  only the model's later layers (for the RBF SVM an exponential per support vector), and the gradient's forward
  pass at the accepted point is the accepted candidate's — per iteration two products with the first matrix,
  where scoring every candidate would cost a forward pass each.
- **closed form** (linear models with an objective convex in x or a monotone function of one margin, see
  :meth:`~transferlab.attacks.objectives.Objective.convex_for_linear_models`): for affine A the objective along
  the projected path, A(Π_Φ(x + η ∇A)), never decreases in η (the projection is firmly non-expansive:
  ⟨Π(a) − Π(b), a − b⟩ ≥ 0), so the best step of any line search on it is its end, η → ∞: the maximiser of
  ⟨∇A, x′⟩ over Φ (:func:`linear_maximiser`), scored once. With two classes A is a monotone function of one
  affine margin and that point is the optimum: one iteration. Otherwise (untargeted multiclass margin or
  cross-entropy, convex in x) A(s) ≥ A(x) + ⟨∇A, s − x⟩ ≥ A(x), and it repeats from s until A stops rising.
- **arc**: every candidate projected, Π_Φ(x + η d) at η = η_max·2^−k (k < ``grid``), then bisection of the bracket
  around the best. ``warm_grid=0`` selects it for every model, with the full grid at every iteration (with
  ``bisection=4``: the line search of transferlab 0.1, pinned by a golden test); with ``warm_grid > 0`` it serves
  the nonlinear models on binary domains (where the segment between two points leaves Φ) and ℓ1 budgets (whose
  steepest steps move one coordinate, and whose projections then take mass from the others: a chord between two
  such points cuts inside the ball, measured weaker on MNIST), trying 2η, η, η/2 of a point's last accepted step
  after its first.

On the CPU the chord and closed-form searches run on blocks of at most :data:`CHUNK_VALUES` values (rows ×
features), which bounds their memory; every row is attacked independently of the others, so blocks change nothing
but the order of floating-point sums. Their ℓ2∩box projections use :func:`ball_box_step`, the exact projection of
:mod:`~transferlab.attacks.constraints` computed with arithmetic passes only (on the CPU a comparison or a
selection over a batch costs several arithmetic passes), 2–6× faster on MNIST batches. Attacks on the CPU run on one torch
thread (:func:`one_thread_on_cpu`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from transferlab.attacks.base import BOUND_TOL, EvasionAttack, steepest_direction
from transferlab.attacks.constraints import Ball, Binary, Box, FeatureAdditionOnly, Intersection, Mask, Quantize
from transferlab.attacks.objectives import Objective, RememberedScores
from transferlab.models.base import Classifier
from transferlab.models.kernel import KernelSVM
from transferlab.models.linear import LinearClassifier


NEAR_TIE = 1e-10
#: a retried line search uses a chord this many times shorter; only chords longer than η_max / RETRY_FLOOR are
#: retried (once, from the longest chord a point starts with)
RETRY_SHRINK = 8.0
RETRY_FLOOR = 8.0
#: stands in for an infinite bound of the box (its square, summed over 2^24 features, stays finite in float64)
BIG = 2.0 ** 480
#: the step of the closed forms, T·g/‖g‖∞: with |g_i| ≤ 1 every coordinate with |g_i| > 2^−420 reaches its bound
HUGE_STEP = 2.0 ** 900
#: the slope of the 0/1 indicators computed by arithmetic: clamp(r·SLOPE, 0, 1) is 1 for r ≥ 2^−1000 (float64's
#: smallest positive numbers are 2^−1074), 0 for r ≤ 0
SLOPE = 2.0 ** 1000
#: the step of the closed form on binary domains, x0 + T·g/‖g‖∞ (the projection rounds it)
BINARY_STEP = 1e100
#: on the CPU, the chord and closed-form searches work on blocks of at most this many values (rows × features):
#: 8 MiB per float64 temporary. (Blocks small enough for a core's cache were measured slower: the attack's
#: operations on a few hundred kilobytes are dominated by their fixed cost.)
CHUNK_VALUES = 2 ** 20
#: the line search scores several candidates of a grid in one call of the model's later layers, at most this many
#: values (candidates × points × width of the layer after the first) at a time
GRID_VALUES = 2 ** 22


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the block with one torch thread when the model lives on the CPU, and restore the caller's setting
    afterwards. The attack's operations are short (a block of rows, :data:`CHUNK_VALUES`), and several threads
    only add synchronisation: measured on a 2-core machine under load, torch's default of 2 threads made the attack
    3–70× slower than one thread for 20 to 4,000 MNIST points on every model family (linear SVM, RBF SVM, MLP).
    Parallelism belongs to the experiment engine, which runs one attack per worker process."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class PGDLineSearch(EvasionAttack):
    """Algorithm 1 of Demontis et al. (2019); the line searches are described in the module docstring.

    max_iter : most iterations per point; tol : stop a point when A changes by less than this.
    grid : candidates tried at a point's first iteration (α = 2^−k on the chord to Π(x + 2ε d), or steps
        η_max·2^−k on the arc); bisection : refinement rounds of the line search (on the chord one candidate each,
        the middle of the longer side of the bracket around the best; on the arc two, both sides).
    warm_grid : candidates tried after a point's first iteration, around its last accepted step (2η, η, η/2, ...).
        0 selects the arc line search with the full grid at every iteration for every model: the line search of
        transferlab 0.1 with ``bisection=4``.
    double_init : for nonlinear models, run a second time from Π_Φ of the attack pool's point that the model
        scores most confidently in another class (the largest A(·, y), the authors' choice), and keep the better
        result per sample. The pool is the attacked batch itself unless ``init_pool`` is given to :meth:`run`.
        With ``init`` (a warm start) the second run happens only when ``init_pool`` is given.

    ``result_.iterations`` counts each point's line searches (a retried chord included; both runs with
    ``double_init``).
    """

    max_iter: int = 100
    tol: float = 1e-4
    grid: int = 8
    bisection: int = 2
    warm_grid: int = 3
    double_init: bool = False

    def run(self, model: Classifier, X, y, init=None, init_pool=None):  # type: ignore[override]
        """Attack every row of X (see :meth:`EvasionAttack.run`). On the CPU it runs on one torch thread
        (:func:`one_thread_on_cpu`), and each point set is scored once for its value and its success
        (:class:`~transferlab.attacks.objectives.RememberedScores`)."""
        objective = self.objective
        self.objective = RememberedScores(objective, model)  # type: ignore[assignment]
        try:
            with one_thread_on_cpu(model.torch_device):
                return self._run(model, X, y, init, init_pool)
        finally:
            self.objective = objective

    def _run(self, model: Classifier, X, y, init, init_pool):
        x_adv = super().run(model, X, y, init=init)
        if not self.double_init or (init is not None and init_pool is None):
            return x_adv
        first = self.result_
        start = self._other_class_start(model, X if init_pool is None else init_pool, y)
        super().run(model, X, y, init=start)
        second = self.result_
        better = second.objective > first.objective
        for name in ("x_adv", "objective", "perturbation_norm", "success"):
            getattr(first, name)[better] = getattr(second, name)[better]
        first.iterations += second.iterations  # the work done for each point, both runs
        self.result_ = first
        return torch.as_tensor(first.x_adv, dtype=X.dtype) if isinstance(X, torch.Tensor) else first.x_adv

    def _other_class_start(self, model: Classifier, pool, y) -> np.ndarray:
        """For each attacked point, the pool point with the largest A(·, y): scored most confidently in another
        class than y (for targeted attacks: most confidently in the target class)."""
        pool_t = model.as_tensor(pool).to(torch.float64)
        labels = np.asarray(y)
        start = np.empty((labels.shape[0], pool_t.shape[1]))
        with torch.no_grad():
            scores = model.scores(pool_t.to(model.dtype))
        for label in np.unique(labels):
            value = self.objective.of_scores(scores, torch.full((pool_t.shape[0],), int(label),
                                                                device=pool_t.device))
            start[labels == label] = pool_t[int(value.argmax())].cpu().numpy()
        return start

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eps == 0:
            return start.clone(), torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        if self.warm_grid == 0:
            return self._attack_arc(model, x0, labels, start, domain)
        kind = domain_kind(domain, self.p)
        if isinstance(model, LinearClassifier) and kind != "other" \
                and self.objective.convex_for_linear_models(model.n_classes_):
            solve = self._attack_linear
        elif kind not in ("l2", "linf"):  # binary, ℓ1, or a piece this module does not know (maybe not convex)
            return self._attack_arc(model, x0, labels, start, domain)
        else:
            solve = self._attack_chord
        rows = x0.shape[0] if x0.device.type != "cpu" else max(16, CHUNK_VALUES // max(1, x0.shape[1]))
        if rows >= x0.shape[0]:
            return solve(model, x0, labels, start, domain, kind)
        parts = [solve(model, x0[i:i + rows], labels[i:i + rows], start[i:i + rows], domain, kind)
                 for i in range(0, x0.shape[0], rows)]
        return torch.cat([x for x, _ in parts]), torch.cat([it for _, it in parts])

    # ---- chord: one projection per iteration, the search along the segment to it ---------------------------------
    def _attack_chord(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                      domain: Intersection, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = x0.shape[0]
        lb, ub = domain.bounds(x0)
        steps = _Steps(domain, kind, self.eps, x0, lb, ub)
        path = path_for(model, self.objective, start, labels)  # start itself: its value may be known already
        tie = tie_tolerance(model)
        eta_max = 2.0 * self.eps
        x = start.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=x0.device)
        rows = torch.arange(n, device=x0.device)  # the active points
        eta = torch.full((n,), eta_max, dtype=x0.dtype, device=x0.device)  # chord length per active point
        grad, moved = path.gradient(), None
        for iteration in range(self.max_iter):
            if rows.numel() == 0:
                break
            if moved is not None:  # a point that did not move keeps its gradient
                if bool(moved.all()):
                    grad = path.gradient()
                elif bool(moved.any()):
                    grad = grad.clone()
                    grad[moved] = path.gradient(moved)
            u = path.x - steps.x0
            free = free_gradient(grad, u, steps.lo_tol, steps.hi_tol)
            if self.p == 2:  # x + η̄ g_f/‖g_f‖, as steepest_direction normalises it, in one pass
                scale = eta / torch.linalg.vector_norm(free, dim=1).clamp_min(1e-30)
                path.along(steps.project(torch.addcmul(u, free, scale[:, None])))
            else:
                path.along(steps.project(torch.addcmul(u, steepest_direction(free, self.p), eta[:, None])))
            m = rows.numel()
            n_grid = self.grid if iteration == 0 else self.warm_grid
            alphas = 2.0 ** -torch.arange(n_grid, dtype=x0.dtype, device=x0.device)
            vals = path.grid_values(alphas)
            # among candidates of (numerically) equal value take the smallest step: the choice must not depend on
            # rounding noise, which would make results depend on the batch composition
            near_best = vals >= vals.max(0).values - tie * (1 + vals.abs().max(0).values)
            best = (near_best * torch.arange(1, n_grid + 1, device=x0.device)[:, None]).argmax(0)
            best_alpha, best_val = alphas[best], vals[best, torch.arange(m, device=x0.device)]
            # the bracket of the best candidate: its neighbours on the grid; below the smallest candidate of a
            # first iteration it reaches 0
            lo = best_alpha / 2 if iteration else torch.where(best == n_grid - 1, 0.0, best_alpha / 2)
            hi = torch.clamp(best_alpha * 2, max=1.0)
            for _ in range(self.bisection):
                # one candidate per round: the middle of the longer side of the bracket around the best (the
                # other side's middle would often repeat a candidate already scored: at α = 1 the bracket is
                # [α/2, 1])
                right = hi - best_alpha > best_alpha - lo
                mid = torch.where(right, (best_alpha + hi) / 2, (lo + best_alpha) / 2)
                mval = path.values(mid)
                improved = mval > best_val + tie * (1 + best_val.abs())
                lo = torch.where(right, torch.where(improved, best_alpha, lo), torch.where(improved, lo, mid))
                hi = torch.where(right, torch.where(improved, hi, mid), torch.where(improved, best_alpha, hi))
                best_alpha = torch.where(improved, mid, best_alpha)
                best_val = torch.where(improved, mval, best_val)
            gain = best_val - path.value
            step = gain > tie * (1 + path.value.abs())
            path.move(torch.where(step, best_alpha, 0.0), step, best_val)
            iterations[rows] += 1
            stalled = ~step | (gain <= self.tol)
            # on the sphere of an ℓ2 ball, a long chord that failed is tried once more, shorter (see the module);
            # the ℓ∞ ball is a box, whose chords do not leave its faces
            retry = stalled & (eta > eta_max / RETRY_FLOOR * (1 + 1e-9)) if self.p == 2 else stalled & False
            if bool(retry.any()):
                candidates = retry.nonzero().squeeze(1)  # the rate of the candidates only
                rate = tangent_rate(grad[candidates], free[candidates], u[candidates], self.eps)
                retry[candidates] = rate * (eta[candidates] / RETRY_SHRINK) > self.tol
            eta = torch.where(stalled, eta / RETRY_SHRINK, torch.clamp(2 * best_alpha * eta, max=eta_max))
            going, moved = ~stalled | retry, step
            if not bool(going.all()):
                x[rows[~going]] = path.x[~going]
                path.keep(going)
                steps.keep(going)
                grad, moved, eta, rows = grad[going], moved[going], eta[going], rows[going]
        x[rows] = path.x
        return torch.minimum(torch.maximum(x, lb), ub), iterations  # guards the box against rounding

    # ---- closed form for linear models ------------------------------------------------------------------------------
    def _attack_linear(self, model: LinearClassifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                       domain: Intersection, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = x0.shape[0]
        lb, ub = domain.bounds(x0)
        steps = _Steps(domain, kind, self.eps, x0, lb, ub)
        path = path_for(model, self.objective, start, labels)
        tie = tie_tolerance(model)
        x = start.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=x0.device)
        rows = torch.arange(n, device=x0.device)
        one_step = model.n_classes_ == 2  # A is a monotone function of one affine margin: its maximiser is final
        for _ in range(self.max_iter):
            if rows.numel() == 0:
                break
            path.along(steps.maximiser(path.gradient()))
            ones = torch.ones(rows.numel(), dtype=x0.dtype, device=x0.device)
            val = path.values(ones)
            gain = val - path.value
            step = gain > tie * (1 + path.value.abs())
            path.move(step.to(x0.dtype), step, val)
            iterations[rows] += 1
            going = torch.zeros_like(step) if one_step else gain > self.tol
            if not bool(going.all()):
                x[rows[~going]] = path.x[~going]
                path.keep(going)
                steps.keep(going)
                rows = rows[going]
        x[rows] = path.x
        return torch.minimum(torch.maximum(x, lb), ub), iterations

    # ---- arc: every candidate projected (transferlab 0.1's line search with warm_grid=0, bisection=4) ---------------
    def _attack_arc(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                    domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        lb, ub = domain.bounds(x0)
        x = start.clone()
        value = self.objective.value(model, start, labels)  # of start itself: answered when start is x0, scored by run
        iterations = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        active = torch.arange(x.shape[0], device=x.device)
        eta_max = 2.0 * self.eps if self.eps > 0 else 0.0
        factors = 2.0 ** -torch.arange(self.grid, dtype=x.dtype, device=x.device)
        warm_factors = 2.0 ** -torch.arange(-1, self.warm_grid - 1, dtype=x.dtype, device=x.device)
        last_eta = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)  # accepted step per point (0: none yet)
        for _ in range(self.max_iter):
            if active.numel() == 0 or eta_max == 0:
                break
            xa, x0a, la, lba, uba, va = x[active], x0[active], labels[active], lb[active], ub[active], value[active]
            grad = self.objective.gradient(model, xa, la)
            direction = steepest_direction(grad, self.p, self._movable(xa, grad, lba, uba))

            bounds = (lba, uba)

            def evaluate(etas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                """A at Π(x + η d) for etas of shape (m, n_active); returns candidates (m, n, ...) and values.
                The candidates broadcast against the active points: no copies of x0 or of the bounds."""
                m = etas.shape[0]
                shape = (-1,) + (1,) * (xa.dim() - 1)
                cand = xa.unsqueeze(0) + etas.reshape(m, *shape) * direction.unsqueeze(0)
                proj = domain.project(cand, x0a, bounds)
                flat = proj.reshape(m * xa.shape[0], *xa.shape[1:])
                vals = self.objective.value(model, flat, la.repeat(m))
                return proj, vals.reshape(m, -1)

            previous = last_eta[active]
            if self.warm_grid and bool((previous > 0).all()):
                # every point took a step before: try around its last accepted step (2η, η, η/2, ...) only
                etas = torch.clamp(previous[None, :] * warm_factors[:, None], max=eta_max)
                n_grid = self.warm_grid
            else:
                etas = eta_max * factors[:, None].expand(-1, xa.shape[0])
                n_grid = self.grid
            cands, vals = evaluate(etas)
            # among steps of (numerically) equal value, take the smallest: large steps often project onto the same
            # point, and a choice made by rounding noise would make results depend on the batch composition
            near_best = vals >= vals.max(0).values - NEAR_TIE * (1 + vals.abs().max(0).values)
            best = (near_best * torch.arange(1, n_grid + 1, device=x.device)[:, None]).argmax(0)
            cols = torch.arange(xa.shape[0], device=x.device)
            best_eta, best_val, best_x = etas[best, cols], vals[best, cols], cands[best, cols]
            # bracket the best step by its grid neighbours; below the smallest full-grid step the bracket reaches 0
            lo = torch.where((best == n_grid - 1) & (n_grid == self.grid), torch.zeros_like(best_eta), best_eta / 2)
            hi = torch.clamp(best_eta * 2, max=eta_max)
            for _ in range(self.bisection):
                mids = torch.stack([(lo + best_eta) / 2, (best_eta + hi) / 2])
                mcands, mvals = evaluate(mids)
                pick = mvals.argmax(0)
                mval, mx = mvals[pick, cols], mcands[pick, cols]
                improved = mval > best_val + NEAR_TIE * (1 + best_val.abs())
                left = improved & (pick == 0)
                right = improved & (pick == 1)
                hi = torch.where(left, best_eta, torch.where(right, hi, mids[1]))
                lo = torch.where(right, best_eta, torch.where(left, lo, mids[0]))
                best_eta = torch.where(left, mids[0], torch.where(right, mids[1], best_eta))
                best_x = torch.where(improved.reshape(-1, *([1] * (xa.dim() - 1))), mx, best_x)
                best_val = torch.where(improved, mval, best_val)
            gain = best_val - va
            step = gain > 0
            last_eta[active] = torch.where(step, best_eta, previous)
            x[active] = torch.where(step.reshape(-1, *([1] * (xa.dim() - 1))), best_x, xa)
            value[active] = torch.where(step, best_val, va)
            iterations[active] += 1
            active = active[gain > self.tol]
        return x, iterations


def tie_tolerance(model: Classifier) -> float:
    """Relative difference below which two values of A count as equal: NEAR_TIE for float64 models, 16 units in
    the last place for lower precisions (a float32 network's scores of one point differ by a few units between
    batch compositions, and between the closed forms of :class:`_Path` and a direct scoring)."""
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
    """How :class:`_Steps` projects onto the domain: "l2" or "linf" (a ball and box-like pieces: the ℓ2 one by
    :func:`ball_box_step`, the ℓ∞ one a box), "l1" and "binary" (their steps by ``domain.project``, closed forms
    of their own), "other" (a piece this module does not know: only ``domain.project``, no closed form)."""
    known = (Ball, Box, FeatureAdditionOnly, Mask, Quantize, Binary)
    if not all(isinstance(c, known) for c in domain.pieces):
        return "other"
    if domain.binary:
        return "binary"
    return {2: "l2", float("inf"): "linf", 1: "l1"}[p]


def free_gradient(grad: torch.Tensor, u: torch.Tensor, lo_tol: torch.Tensor, hi_tol: torch.Tensor) -> torch.Tensor:
    """The gradient with the coordinates that the box blocks set to 0 (``EvasionAttack._movable``: a coordinate
    within BOUND_TOL of the bound it is pushed against), from u = x − x0 and the box relative to x0 narrowed by
    BOUND_TOL (lo_tol = lo + BOUND_TOL, hi_tol = hi − BOUND_TOL), by arithmetic: the room beyond BOUND_TOL along
    sign(g_i) is max(s (hi_tol − u), s (lo_tol − u)) with s = sign(g_i) (hi − u − BOUND_TOL for g_i > 0,
    u − lo − BOUND_TOL for g_i < 0, 0 for g_i = 0), and the indicator of a positive room is clamp(room·SLOPE, 0, 1).
    """
    sign = grad.sign()
    room = torch.maximum((hi_tol - u).mul_(sign), (lo_tol - u).mul_(sign))
    return room.mul_(SLOPE).clamp_(0, 1).mul_(grad)


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
    piece (the set of coordinates at their bounds stops changing) it lands on the root exactly. Each round is four
    arithmetic passes over the rows (scale, clip, squared norm): no comparison or selection over them. Where the
    chord is much flatter than f(s)/s, its slope is a difference of nearly equal numbers and the slope of f
    itself, Σ δ_i² over the coordinates inside their bounds, is computed instead (a Newton step, also safe from
    below; a slope of 0 means every coordinate is at its bound: t = t_max)."""
    eps2 = eps * eps
    s_max = t_max * t_max if np.isfinite(t_max) else BIG
    a2_sum = torch.linalg.vector_norm(delta, dim=1).square_()
    s_prev = f_prev = torch.zeros(delta.shape[0], dtype=delta.dtype, device=delta.device)
    s = (eps2 / a2_sum.clamp_min(torch.finfo(delta.dtype).tiny)).clamp_max(s_max)
    step = torch.empty_like(delta)
    for _ in range(4 * delta.shape[1] + 4):
        root = s.sqrt()[:, None]
        torch.minimum(torch.maximum(torch.mul(delta, root, out=step), lo, out=step), hi, out=step)
        f = torch.linalg.vector_norm(step, dim=1).square_()
        gap = eps2 - f
        slope = (f - f_prev) / (s - s_prev)
        flat = slope * s < 1e-6 * f
        if bool(flat.any()):
            # Σ δ_i² over the coordinates the clip left alone: |√s δ_i| − |step_i| is 0 there, > 0 where clipped
            free = (delta * root).abs_().sub_(step.abs()).mul_(SLOPE).clamp_(0, 1).neg_().add_(1)
            exact = torch.linalg.vecdot(free, delta * delta)
            slope = torch.where(flat, exact, slope)
        new = (s + gap / slope).clamp_max(s_max)  # a slope of 0: s_max
        done = (gap <= 1e-13 * eps2) | (s >= s_max) | ~(new > s)
        if bool(done.all()):
            break
        s_prev, f_prev, s = torch.where(done, s_prev, s), torch.where(done, f_prev, f), torch.where(done, s, new)
    if bool((f > eps2).any()):  # a tiny rescale guards the ball against rounding in the last bit
        step = step * torch.where(f > eps2, eps / f.sqrt(), 1.0)[:, None]
    return step


class _Steps:
    """Points of Φ(x0) for the chord and closed-form line searches, for the active rows: the projection of
    x0 + δ, and the maximiser of a linear function over Φ(x0). Keeps x0, the box relative to x0 (lo = lb − x0,
    hi = ub − x0, infinite bounds as ±BIG; for ℓ∞ intersected with [−ε, ε]) and narrowed by BOUND_TOL, and the
    absolute box where ``domain.project`` needs it."""

    def __init__(self, domain: Intersection, kind: str, eps: float, x0: torch.Tensor, lb: torch.Tensor,
                 ub: torch.Tensor) -> None:
        self.domain, self.kind, self.eps = domain, kind, eps
        self.x0 = x0
        # the absolute box only where domain.project needs it
        self.lb, self.ub = (lb, ub) if kind in ("l1", "binary", "other") else (None, None)
        self.lo, self.hi = (lb - x0).clamp_min_(-BIG), (ub - x0).clamp_max_(BIG)
        # the box narrowed by BOUND_TOL, for free_gradient (before the ℓ∞ ball narrows lo and hi)
        self.lo_tol, self.hi_tol = self.lo + BOUND_TOL, self.hi - BOUND_TOL
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
            return self.x0 + torch.minimum(torch.maximum(delta, self.lo), self.hi)
        return self.domain.project(self.x0 + delta, self.x0, (self.lb, self.ub))

    def maximiser(self, grad: torch.Tensor) -> torch.Tensor:
        """argmax over x′ ∈ Φ(x0) of ⟨grad, x′⟩ for each row (see :func:`linear_maximiser`)."""
        return linear_maximiser(grad, self.x0, self.domain, self.kind, self.eps, self.lb, self.ub, self.lo,
                                self.hi)


def linear_maximiser(grad: torch.Tensor, x0: torch.Tensor, domain: Intersection, kind: str, eps: float,
                     lb: torch.Tensor, ub: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """argmax over x′ ∈ Φ(x0) of ⟨grad, x′⟩ for each row, the end of the projected path lim_{T→∞} Π_Φ(x0 + T grad)
    (``kind`` from :func:`domain_kind`, lo/hi the box relative to x0 as :class:`_Steps` keeps them).

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


# ---- the objective along segments, with the closed forms of the model families ------------------------------------

def path_for(model: Classifier, objective: Objective, x: torch.Tensor, labels: torch.Tensor) -> _Path:
    """The :class:`_Path` with the closed form of the model's family: RBF SVMs with dense support vectors, models
    whose first step is affine (linear models, MLPs, wrapped linear models and MLPs), else the generic one."""
    if isinstance(model, KernelSVM) and model.support_vectors_.layout == torch.strided:
        return _KernelPath(model, objective, x, labels)
    affine = model.affine_input()
    if affine is not None and affine[0].layout == torch.strided:
        return _AffinePath(model, objective, x, labels, *affine)
    return _Path(model, objective, x, labels)


class _Path:
    """A and ∇A at the active points x (rows (n, d)), and A along the segments (1 − α) x + α p to given ends p.

    ``value`` holds A(x); :meth:`along` sets the ends, :meth:`values` gives A at one step α per point,
    :meth:`move` takes steps, :meth:`keep` drops the points that leave the batch. This generic one scores every
    candidate with the model; the subclasses keep what makes a candidate cost a fraction of that."""

    def __init__(self, model: Classifier, objective: Objective, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.model, self.objective, self.x, self.labels = model, objective, x, labels
        self.value = self._start_value()

    def _start_value(self) -> torch.Tensor:
        return self.objective.value(self.model, self.x, self.labels)

    def gradient(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """∇_x A at the points (at those selected by the boolean mask ``rows``)."""
        x, labels = (self.x, self.labels) if rows is None else (self.x[rows], self.labels[rows])
        return self.objective.gradient(self.model, x, labels)

    def along(self, end: torch.Tensor) -> None:
        self.end = end

    def values(self, alpha: torch.Tensor) -> torch.Tensor:
        """A at (1 − α) x + α p, one α per point."""
        return self.objective.value(self.model, torch.lerp(self.x, self.end, alpha[:, None]), self.labels)

    def grid_values(self, alphas: torch.Tensor) -> torch.Tensor:
        """A at (1 − α) x + α p for every α of ``alphas`` (m,) and every point: (m, n). The subclasses evaluate
        several α in one call of the model's later layers, in groups of at most :data:`GRID_VALUES` values."""
        return torch.stack([self.values(a.expand(self.x.shape[0])) for a in alphas])

    def _groups(self, alphas: torch.Tensor, width: int) -> list[torch.Tensor]:
        size = max(1, GRID_VALUES // max(1, self.x.shape[0] * width))
        return [alphas[i:i + size] for i in range(0, alphas.shape[0], size)]

    def move(self, weight: torch.Tensor, take: torch.Tensor, value: torch.Tensor) -> None:
        """x ← (1 − w) x + w p (w = 0 leaves a point where it is, exactly), with A = ``value`` where ``take``."""
        self.x = torch.lerp(self.x, self.end, weight[:, None])
        self.value = torch.where(take, value, self.value)
        self._moved(weight)

    def _moved(self, weight: torch.Tensor) -> None:
        pass

    def keep(self, mask: torch.Tensor) -> None:
        self.x, self.labels, self.value = self.x[mask], self.labels[mask], self.value[mask]


class _AffinePath(_Path):
    """Models with scores(x) = tail(x Wᵀ + b) (``Classifier.affine_input``): z = x Wᵀ + b is kept, z at a
    segment's end costs one product with W, z along the segment is (1 − α) z(x) + α z(p), and the gradient goes
    through the tail from z (∇_x A = (∂A/∂z) W): per iteration two products with W, and a candidate costs the tail
    (for a linear model, nothing but the loss)."""

    def __init__(self, model: Classifier, objective: Objective, x: torch.Tensor, labels: torch.Tensor,
                 weight: torch.Tensor, bias: torch.Tensor, tail) -> None:
        self.weight, self.bias, self.tail = weight, bias, tail
        self.z = self._first(x)
        super().__init__(model, objective, x, labels)

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.to(self.weight.dtype), self.weight.T)

    def _of_z(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.objective.of_scores(self.tail(z), self.labels).to(self.x.dtype)

    def _start_value(self) -> torch.Tensor:
        return self._of_z(self.z)

    def gradient(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        z, labels = (self.z, self.labels) if rows is None else (self.z[rows], self.labels[rows])
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            total = self.objective.of_scores(self.tail(z), labels).sum()
            (grad_z,) = torch.autograd.grad(total, z)
        return (grad_z @ self.weight).to(self.x.dtype)

    def along(self, end: torch.Tensor) -> None:
        self.end, self.z_end = end, self._first(end)

    def _z_at(self, alpha: torch.Tensor) -> torch.Tensor:
        return torch.lerp(self.z, self.z_end, alpha.to(self.z.dtype)[:, None])

    def values(self, alpha: torch.Tensor) -> torch.Tensor:
        return self._of_z(self._z_at(alpha))

    def grid_values(self, alphas: torch.Tensor) -> torch.Tensor:
        n, parts = self.z.shape[0], []
        for group in self._groups(alphas, self.z.shape[1]):
            z = torch.lerp(self.z[None], self.z_end[None], group.to(self.z.dtype)[:, None, None])
            with torch.no_grad():
                scores = self.tail(z.reshape(-1, z.shape[-1]))
            parts.append(self.objective.of_scores(scores, self.labels.repeat(group.shape[0])).reshape(-1, n))
        return torch.cat(parts).to(self.x.dtype)

    def _moved(self, weight: torch.Tensor) -> None:
        self.z = self._z_at(weight)

    def keep(self, mask: torch.Tensor) -> None:
        super().keep(mask)
        self.z = self.z[mask]


class _KernelPath(_Path):
    """RBF SVMs, f(x) = Σ_j β_j exp(−γ‖x − s_j‖²) + b with ‖x − s_j‖² = ‖x‖² − 2 x·s_j + ‖s_j‖² expanded and
    clamped at 0 as :func:`~transferlab.models.kernel.rbf_kernel` does: x·S (n, m) and ‖x‖² are kept; along a
    segment x·s is affine in α and ‖x‖² quadratic (‖(1 − α)x + αp‖² = (1 − α)²‖x‖² + 2α(1 − α) x·p + α²‖p‖²), so a
    segment costs one product p Sᵀ and a candidate an exponential per support vector; the gradient is
    2 (∂A/∂‖x‖²) x + (∂A/∂(x·S)) S, one product with S."""

    def __init__(self, model: KernelSVM, objective: Objective, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.sv, self.sv_sq = model.support_vectors_, model.sv_sq_norms_
        self.dual, self.intercept, self.gamma = model.dual_coef_, model.intercept_, model.gamma
        xm = x.to(self.sv.dtype)
        self.dots, self.sq = xm @ self.sv.T, torch.linalg.vector_norm(xm, dim=1).square_()
        super().__init__(model, objective, x, labels)

    def _scores(self, dots: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        distance = torch.add(self.sv_sq, dots, alpha=-2.0).add_(sq[:, None])
        return torch.addmm(self.intercept, distance.clamp_min_(0.0).mul_(-self.gamma).exp_(), self.dual)

    def _of(self, dots: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.objective.of_scores(self._scores(dots, sq), self.labels).to(self.x.dtype)

    def _start_value(self) -> torch.Tensor:
        return self._of(self.dots, self.sq)

    def gradient(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        select = (lambda t: t) if rows is None else (lambda t: t[rows])  # noqa: E731
        dots = select(self.dots).detach().requires_grad_(True)
        sq = select(self.sq).detach().requires_grad_(True)
        with torch.enable_grad():
            distance = (sq[:, None] + self.sv_sq) - 2.0 * dots  # differentiable, unlike the in-place _scores
            scores = torch.exp(-self.gamma * distance.clamp_min(0.0)) @ self.dual + self.intercept
            total = self.objective.of_scores(scores, select(self.labels)).sum()
            grad_dots, grad_sq = torch.autograd.grad(total, (dots, sq))
        x = select(self.x).to(self.sv.dtype)
        return torch.addmm(x * (2.0 * grad_sq[:, None]), grad_dots, self.sv).to(self.x.dtype)

    def along(self, end: torch.Tensor) -> None:
        self.end = end
        em, xm = end.to(self.sv.dtype), self.x.to(self.sv.dtype)
        self.dots_end = em @ self.sv.T
        sq_end, cross = torch.linalg.vector_norm(em, dim=1).square_(), torch.linalg.vecdot(xm, em)
        # ‖(1 − α)x + αp‖² = ‖x‖² + α·2(x·p − ‖x‖²) + α²(‖x‖² − 2 x·p + ‖p‖²)
        self.sq_slope, self.sq_curve = 2 * (cross - self.sq), self.sq - 2 * cross + sq_end

    def _at(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = alpha.to(self.dots.dtype)
        return torch.lerp(self.dots, self.dots_end, a[:, None]), self.sq + a * (self.sq_slope + a * self.sq_curve)

    def values(self, alpha: torch.Tensor) -> torch.Tensor:
        return self._of(*self._at(alpha))

    def grid_values(self, alphas: torch.Tensor) -> torch.Tensor:
        n, parts = self.dots.shape[0], []
        for group in self._groups(alphas, self.dots.shape[1]):
            a = group.to(self.dots.dtype)[:, None]
            dots = torch.lerp(self.dots[None], self.dots_end[None], a[:, :, None]).reshape(-1, self.dots.shape[1])
            sq = (self.sq + a * (self.sq_slope + a * self.sq_curve)).reshape(-1)
            with torch.no_grad():
                scores = self._scores(dots, sq)
            parts.append(self.objective.of_scores(scores, self.labels.repeat(group.shape[0])).reshape(-1, n))
        return torch.cat(parts).to(self.x.dtype)

    def _moved(self, weight: torch.Tensor) -> None:
        self.dots, self.sq = self._at(weight)

    def keep(self, mask: torch.Tensor) -> None:
        super().keep(mask)
        self.dots, self.sq = self.dots[mask], self.sq[mask]

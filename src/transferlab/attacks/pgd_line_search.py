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
  ``tol`` over that step (:func:`~transferlab.attacks.line_search.tangent_rate`). Along a segment the scores
  have closed forms (:mod:`transferlab.attacks.paths`) for the models whose first step is affine (linear models,
  the MLP: z(α) = (1 − α) z(x) + α z(p)) and for RBF SVMs (x·s is affine in α and ‖x‖² quadratic): a segment costs
  one product with the model's first matrix, a candidate only the model's later layers (for the RBF SVM an
  exponential per support vector), and the gradient's forward pass at the accepted point is the accepted
  candidate's — per iteration two products with the first matrix, where scoring every candidate would cost a
  forward pass each.
- **closed form** (linear models with an objective convex in x or a monotone function of one margin, see
  :meth:`~transferlab.attacks.objectives.Objective.convex_for_linear_models`): for affine A the objective along
  the projected path, A(Π_Φ(x + η ∇A)), never decreases in η (the projection is firmly non-expansive:
  ⟨Π(a) − Π(b), a − b⟩ ≥ 0), so the best step of any line search on it is its end, η → ∞: the maximiser of
  ⟨∇A, x′⟩ over Φ (:func:`~transferlab.attacks.line_search.linear_maximiser`), scored once. With two classes A
  is a monotone function of one affine margin and that point is the optimum: one iteration. Otherwise
  (untargeted multiclass margin or cross-entropy, convex in x) A(s) ≥ A(x) + ⟨∇A, s − x⟩ ≥ A(x), and it repeats
  from s until A stops rising.
- **arc**: every candidate projected, Π_Φ(x + η d) at η = η_max·2^−k (k < ``grid``), then bisection of the bracket
  around the best. ``warm_grid=0`` selects it for every model, with the full grid at every iteration (with
  ``bisection=4``: the line search of transferlab 0.1, pinned by a golden test); with ``warm_grid > 0`` it serves
  the nonlinear models on binary domains (where the segment between two points leaves Φ) and ℓ1 budgets (whose
  steepest steps move one coordinate, and whose projections then take mass from the others: a chord between two
  such points cuts inside the ball, measured weaker on MNIST), trying 2η, η, η/2 of a point's last accepted step
  after its first.

On the CPU the chord and closed-form searches run on blocks of at most :data:`CHUNK_VALUES` values (rows ×
features), which bounds their memory; every row is attacked independently of the others, so blocks change nothing
but the order of floating-point sums. Their ℓ2∩box projections use
:func:`~transferlab.attacks.line_search.ball_box_step`, the exact projection of :mod:`~transferlab.attacks.constraints`
computed with three passes over the rows per secant round, 2–6× faster on MNIST batches. The chord search on a
float32 MLP works in float32 (:func:`working_dtype`) and projects its points onto Φ(x0) in float64 at the end. Attacks on the CPU run on one torch thread (:func:`one_thread_on_cpu`).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
from pydantic import Field, StrictInt

from transferlab.attacks.base import AttackResult, EvasionAttack, movable, steepest_direction
from transferlab.attacks.constraints import Intersection
from transferlab.attacks.line_search import (NEAR_TIE, Steps, domain_kind, free_gradient, tangent_rate,
                                             tie_tolerance)
from transferlab.attacks.objectives import RememberedScores
from transferlab.attacks.paths import path_for
from transferlab.attacks.settings import MAX_GRID, MAX_STEPS, AttackSettings
from transferlab.models.base import Classifier

#: a retried line search uses a chord this many times shorter; only chords longer than η_max / RETRY_FLOOR are
#: retried (once, from the longest chord a point starts with)
RETRY_SHRINK = 8.0
RETRY_FLOOR = 8.0
#: on the CPU, the chord and closed-form searches work on blocks of at most this many values (rows × features):
#: 8 MiB per float64 temporary. (Blocks small enough for a core's cache were measured slower: the attack's
#: operations on a few hundred kilobytes are dominated by their fixed cost.)
CHUNK_VALUES = 2 ** 20


def working_dtype(model: Classifier, x0: torch.Tensor) -> torch.dtype:
    """The precision the chord search works in: float32 for a float32 model whose first step is affine and dense
    (the MLP), x0's otherwise. Such a network sees its input in float32 (its first layer casts it), so the points'
    float64 digits beyond float32's change nothing it computes, while every pass over the rows (free gradient,
    projection, moves) moves half the bytes: 1.3–1.4× faster on the MLPs of MNIST89 (measured once, one thread).
    The tolerances follow the precision (:class:`~transferlab.attacks.line_search.Steps`,
    :func:`~transferlab.attacks.line_search.ball_box_step`), and the crafted points are projected onto Φ(x0) in
    x0's precision at the end (a move of float32 rounding, ~1e-7)."""
    if model.dtype != torch.float32 or x0.dtype != torch.float64:
        return x0.dtype
    affine = model.affine_input()
    return torch.float32 if affine is not None and affine[0].layout == torch.strided else x0.dtype


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


class PGDLineSearchSettings(AttackSettings):
    """The settings of Algorithm 1 (:class:`PGDLineSearch`).

    max_iter : most iterations per point; tol : stop a point when A changes by less than this.
    grid : candidates tried at a point's first iteration (α = 2^−k on the chord to Π(x + 2ε d), or steps
        η_max·2^−k on the arc); bisection : refinement rounds of the line search (on the chord one candidate each,
        the middle of the longer side of the bracket around the best; on the arc two, both sides).
    warm_grid : candidates tried after a point's first iteration, around its last accepted step (2η, η, η/2, ...).
        0 selects the arc line search with the full grid at every iteration for every model: the line search of
        transferlab 0.1 with ``bisection=4``.
    """

    max_iter: StrictInt = Field(100, ge=1, le=MAX_STEPS)
    tol: float = Field(1e-4, ge=0, allow_inf_nan=False)
    grid: StrictInt = Field(8, ge=1, le=MAX_GRID)
    bisection: StrictInt = Field(2, ge=0, le=MAX_GRID)
    warm_grid: StrictInt = Field(3, ge=0, le=MAX_GRID)


class PGDLineSearch(EvasionAttack):
    """Algorithm 1 of Demontis et al. (2019); the line searches are described in the module docstring, the
    settings in :class:`PGDLineSearchSettings`. The paper's second start for nonlinear models (double
    initialisation) and warm starts across budgets are options of
    :func:`~transferlab.attacks.security.security_curve`.

    ``run(...).iterations`` counts each point's line searches (a retried chord included). On the CPU a run uses one
    torch thread (:func:`one_thread_on_cpu`), and each point set is scored once for its value and its success
    (:class:`~transferlab.attacks.objectives.RememberedScores`).
    """

    Settings = PGDLineSearchSettings
    settings: PGDLineSearchSettings

    def run(self, model: Classifier, X: Any, y: Any, init: Any = None) -> AttackResult:
        with one_thread_on_cpu(model.torch_device):
            return super().run(model, X, y, init)

    def _for_run(self, model: Classifier) -> PGDLineSearch:
        """A copy whose objective remembers the scores of this run on ``model`` (the attack itself is unchanged)."""
        attack = copy.copy(self)
        attack.objective = RememberedScores(self.objective, model)  # type: ignore[assignment]
        return attack

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eps == 0:
            return start.clone(), torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        if self.settings.warm_grid == 0:
            return self._attack_arc(model, x0, labels, start, domain)
        kind = domain_kind(domain, self.p)
        if model.affine_scores and kind != "other" \
                and self.objective.convex_for_linear_models(model.n_classes_):
            solve = self._attack_linear
        elif kind not in ("l2", "linf"):  # binary, ℓ1, or a piece this module does not know (maybe not convex)
            return self._attack_arc(model, x0, labels, start, domain)
        else:
            solve = self._attack_chord
        work = working_dtype(model, x0) if solve == self._attack_chord else x0.dtype
        if work != x0.dtype:  # the chord search in the network's precision, its points then made exact in Φ(x0)
            x0_work = x0.to(work)
            x, iterations = self._attack(model, x0_work, labels, x0_work if start is x0 else start.to(work), domain)
            return domain.project(x.to(x0.dtype), x0), iterations
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
        steps = Steps(domain, kind, self.eps, x0, lb, ub)
        path = path_for(model, self.objective, start, labels)  # start itself: its value may be known already
        tie = tie_tolerance(model)
        eta_max = 2.0 * self.eps
        x = start.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=x0.device)
        rows = torch.arange(n, device=x0.device)  # the active points
        eta = torch.full((n,), eta_max, dtype=x0.dtype, device=x0.device)  # chord length per active point
        grad, moved = path.gradient(native=True), None  # in the model's dtype: the free gradient promotes it
        for iteration in range(self.settings.max_iter):
            if rows.numel() == 0:
                break
            if moved is not None:  # a point that did not move keeps its gradient
                if bool(moved.all()):
                    grad = path.gradient(native=True)
                elif bool(moved.any()):
                    grad[moved] = path.gradient(moved, native=True)
            m = rows.numel()
            u = path.x - steps.x0
            free = free_gradient(grad, u, steps.lo_tol, steps.hi_tol)
            if self.p == 2:  # x + η̄ g_f/‖g_f‖, as steepest_direction normalises it, in one pass
                scale = eta / torch.linalg.vector_norm(free, dim=1).clamp_min_(1e-30)
                path.along(steps.project(torch.addcmul(u, free, scale.unsqueeze_(1))))
            else:
                path.along(steps.project(torch.addcmul(u, steepest_direction(free, self.p), eta[:, None])))
            n_grid = self.settings.grid if iteration == 0 else self.settings.warm_grid
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
            for _ in range(self.settings.bisection):
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
            stalled = ~step | (gain <= self.settings.tol)
            # on the sphere of an ℓ2 ball, a long chord that failed is tried once more, shorter (see the module);
            # the ℓ∞ ball is a box, whose chords do not leave its faces
            retry = stalled & (eta > eta_max / RETRY_FLOOR * (1 + 1e-9)) if self.p == 2 else stalled & False
            if bool(retry.any()):
                candidates = retry.nonzero().squeeze(1)  # the rate of the candidates only
                rate = tangent_rate(grad[candidates].to(u.dtype), free[candidates], u[candidates], self.eps)
                retry[candidates] = rate * (eta[candidates] / RETRY_SHRINK) > self.settings.tol
            eta = torch.where(stalled, eta / RETRY_SHRINK, torch.clamp(2 * best_alpha * eta, max=eta_max))
            going, moved = ~stalled | retry, step
            if not bool(going.all()):
                x[rows[~going]] = path.x[~going]
                path.keep(going)
                steps.keep(going)
                grad, moved, eta, rows = grad[going], moved[going], eta[going], rows[going]
        x[rows] = path.x
        return torch.clamp(x, lb, ub), iterations  # guards the box against rounding

    # ---- closed form for linear models ------------------------------------------------------------------------------
    def _attack_linear(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                       domain: Intersection, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = x0.shape[0]
        lb, ub = domain.bounds(x0)
        steps = Steps(domain, kind, self.eps, x0, lb, ub)
        path = path_for(model, self.objective, start, labels)
        tie = tie_tolerance(model)
        x = start.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=x0.device)
        rows = torch.arange(n, device=x0.device)
        one_step = model.n_classes_ == 2  # A is a monotone function of one affine margin: its maximiser is final
        for _ in range(self.settings.max_iter):
            if rows.numel() == 0:
                break
            path.along(steps.maximiser(path.gradient()))
            ones = torch.ones(rows.numel(), dtype=x0.dtype, device=x0.device)
            val = path.values(ones)
            gain = val - path.value
            step = gain > tie * (1 + path.value.abs())
            path.move(step.to(x0.dtype), step, val)
            iterations[rows] += 1
            going = torch.zeros_like(step) if one_step else gain > self.settings.tol
            if not bool(going.all()):
                x[rows[~going]] = path.x[~going]
                path.keep(going)
                steps.keep(going)
                rows = rows[going]
        x[rows] = path.x
        return torch.clamp(x, lb, ub), iterations

    # ---- arc: every candidate projected (transferlab 0.1's line search with warm_grid=0, bisection=4) ---------------
    def _attack_arc(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                    domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        lb, ub = domain.bounds(x0)
        x = start.clone()
        value = self.objective.value(model, start, labels)  # of start itself: answered when start is x0, scored by run
        iterations = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        active = torch.arange(x.shape[0], device=x.device)
        eta_max = 2.0 * self.eps if self.eps > 0 else 0.0
        factors = 2.0 ** -torch.arange(self.settings.grid, dtype=x.dtype, device=x.device)
        warm_factors = 2.0 ** -torch.arange(-1, self.settings.warm_grid - 1, dtype=x.dtype, device=x.device)
        last_eta = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)  # accepted step per point (0: none yet)
        for _ in range(self.settings.max_iter):
            if active.numel() == 0 or eta_max == 0:
                break
            xa, x0a, la, lba, uba, va = x[active], x0[active], labels[active], lb[active], ub[active], value[active]
            grad = self.objective.gradient(model, xa, la)
            direction = steepest_direction(grad, self.p, movable(xa, grad, lba, uba))

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
            if self.settings.warm_grid and bool((previous > 0).all()):
                # every point took a step before: try around its last accepted step (2η, η, η/2, ...) only
                etas = torch.clamp(previous[None, :] * warm_factors[:, None], max=eta_max)
                n_grid = self.settings.warm_grid
            else:
                etas = eta_max * factors[:, None].expand(-1, xa.shape[0])
                n_grid = self.settings.grid
            cands, vals = evaluate(etas)
            # among steps of (numerically) equal value, take the smallest: large steps often project onto the same
            # point, and a choice made by rounding noise would make results depend on the batch composition
            near_best = vals >= vals.max(0).values - NEAR_TIE * (1 + vals.abs().max(0).values)
            best = (near_best * torch.arange(1, n_grid + 1, device=x.device)[:, None]).argmax(0)
            cols = torch.arange(xa.shape[0], device=x.device)
            best_eta, best_val, best_x = etas[best, cols], vals[best, cols], cands[best, cols]
            # bracket the best step by its grid neighbours; below the smallest full-grid step the bracket reaches 0
            first = (best == n_grid - 1) & (n_grid == self.settings.grid)
            lo = torch.where(first, torch.zeros_like(best_eta), best_eta / 2)
            hi = torch.clamp(best_eta * 2, max=eta_max)
            for _ in range(self.settings.bisection):
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
            active = active[gain > self.settings.tol]
        return x, iterations

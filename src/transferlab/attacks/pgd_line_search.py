"""The paper's Algorithm 1: projected gradient ascent with a bisection line search, batched over all points.

    x′ ← x0
    repeat:  x ← x′;  x′ ← Π_Φ(x + η d(x)),  d = steepest ascent direction of ∇_x A (Eq. 15), η by line search
    until |A(x′) − A(x)| ≤ tol  (per sample)  or  max_iter

The line search, per sample and for all points at once: evaluate A at η_max·2^−k (k = 0..K−1, η_max = 2ε, the
diameter of the ball) and at η = 0, keep the best, then bisect the bracket around it. A step is taken only where it
increases A, so the objective never decreases. Points that have converged leave the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from transferlab.attacks.base import EvasionAttack, steepest_direction
from transferlab.attacks.constraints import Intersection
from transferlab.models.base import Classifier


NEAR_TIE = 1e-10


@dataclass
class PGDLineSearch(EvasionAttack):
    """Algorithm 1 of Demontis et al. (2019).

    max_iter : most iterations per point; tol : stop a point when A changes by less than this.
    grid : step sizes tried per iteration (η_max·2^−k); bisection : refinement steps of the line search.
    warm_grid : when > 0, iterations after a point's first accepted step try only ``warm_grid`` steps around it
        (2η, η, η/2, ... of the last accepted η; the reuse of the accepted step) before the bisection, instead of
        the full grid. 0 keeps the full grid at every iteration (with ``bisection=4``, the line search of
        transferlab 0.1; the defaults find the same errors on MNIST89 at about half the cost).
    double_init : for nonlinear models, run a second time from Π_Φ of the attack pool's point that the model
        scores most confidently in another class (the largest A(·, y), the authors' choice), and keep the better
        result per sample. The pool is the attacked batch itself unless ``init_pool`` is given to :meth:`run`.
        With ``init`` (a warm start) the second run happens only when ``init_pool`` is given.
    """

    max_iter: int = 100
    tol: float = 1e-4
    grid: int = 8
    bisection: int = 2
    warm_grid: int = 3
    double_init: bool = False

    def run(self, model: Classifier, X, y, init=None, init_pool=None):  # type: ignore[override]
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
        for label in np.unique(labels):
            value = self.objective.value(model, pool_t, torch.full((pool_t.shape[0],), int(label),
                                                                  device=pool_t.device))
            start[labels == label] = pool_t[int(value.argmax())].cpu().numpy()
        return start

    def _attack(self, model: Classifier, x0: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                domain: Intersection) -> tuple[torch.Tensor, torch.Tensor]:
        lb, ub = domain.bounds(x0)
        x = start.clone()
        value = self.objective.value(model, x, labels)
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

"""The attacker's objective A along segments (1 − α) x + α p, for the chord and closed-form line searches of
:mod:`transferlab.attacks.pgd_line_search`, with the closed forms of the model families: :func:`path_for` picks
:class:`AffinePath` (models whose first step is affine: linear models, MLPs), :class:`KernelPath` (RBF SVMs) or the
generic :class:`Path`, which scores every candidate with the model."""

from __future__ import annotations

import torch

from transferlab.attacks.objectives import Objective
from transferlab.models.base import Classifier

#: the line search scores several candidates of a grid in one call of the model's later layers, at most this many
#: values (candidates × points × width of the layer after the first) at a time
GRID_VALUES = 2 ** 22


def path_for(model: Classifier, objective: Objective, x: torch.Tensor, labels: torch.Tensor) -> Path:
    """The :class:`Path` with the closed form of the model's family, by what the model says of its scores: an RBF
    kernel expansion with dense support vectors (:meth:`~transferlab.models.base.Classifier.rbf_form`: the
    registry's RBF SVMs, a wrapped binary RBF ``SVC``), a first step affine in x (linear models, MLPs, wrapped
    linear models and MLPs), else the generic one."""
    form = model.rbf_form()
    if form is not None:
        return KernelPath(model, objective, x, labels, form)
    affine = model.affine_input()
    if affine is not None and affine[0].layout == torch.strided:
        return AffinePath(model, objective, x, labels, *affine)
    return Path(model, objective, x, labels)


class Path:
    """A and ∇A at the active points x (rows (n, d)), and A along the segments (1 − α) x + α p to given ends p.

    ``value`` holds A(x); :meth:`along` sets the ends, :meth:`values` gives A at one step α per point,
    :meth:`move` takes steps, :meth:`keep` drops the points that leave the batch. This generic one scores every
    candidate with the model; the subclasses keep what makes a candidate cost a fraction of that."""

    def __init__(self, model: Classifier, objective: Objective, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.model, self.objective, self.x, self.labels = model, objective, x, labels
        self.value = self._start_value()

    def _start_value(self) -> torch.Tensor:
        return self.objective.value(self.model, self.x, self.labels)

    def gradient(self, rows: torch.Tensor | None = None, native: bool = False) -> torch.Tensor:
        """∇_x A at the points (at those selected by the boolean mask ``rows``), in the points' dtype, or with
        ``native`` in the one the model computes it in (a float32 network's gradient without a float64 copy)."""
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


class AffinePath(Path):
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

    def gradient(self, rows: torch.Tensor | None = None, native: bool = False) -> torch.Tensor:
        z, labels = (self.z, self.labels) if rows is None else (self.z[rows], self.labels[rows])
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            total = self.objective.of_scores(self.tail(z), labels).sum()
            (grad_z,) = torch.autograd.grad(total, z)
        grad = grad_z @ self.weight
        return grad if native else grad.to(self.x.dtype)

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


class KernelPath(Path):
    """RBF SVMs, f(x) = Σ_j β_j exp(−γ‖x − s_j‖²) + b with ‖x − s_j‖² = ‖x‖² − 2 x·s_j + ‖s_j‖² expanded and
    clamped at 0 as :func:`~transferlab.models.kernel.rbf_kernel` does: x·S (n, m) and ‖x‖² are kept; along a
    segment x·s is affine in α and ‖x‖² quadratic (‖(1 − α)x + αp‖² = (1 − α)²‖x‖² + 2α(1 − α) x·p + α²‖p‖²), so a
    segment costs one product p Sᵀ and a candidate an exponential per support vector; the gradient is
    2 (∂A/∂‖x‖²) x + (∂A/∂(x·S)) S, one product with S."""

    def __init__(self, model: Classifier, objective: Objective, x: torch.Tensor, labels: torch.Tensor,
                 form: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]) -> None:
        self.sv, self.sv_sq, self.dual, self.intercept, self.gamma = form  # model.rbf_form()
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

    def gradient(self, rows: torch.Tensor | None = None, native: bool = False) -> torch.Tensor:
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

"""Implicit gradients of availability poisoning (paper Eqs. 5–12), per model family.

The attacker adds (x_c, y_c) to the training set to maximise the validation loss A = L(D_val, ŵ) of the model
ŵ trained on D_tr ∪ {(x_c, y_c)}. By the implicit function theorem on the training stationarity (KKT) conditions
(Eq. 7),

    ∇_{x_c} A = ∇_{x_c} L − (∇_{x_c} ∇_θ L_tr)ᵀ (∇²_θ L_tr)⁻¹ ∇_θ L_val,

where the first term is zero here (the validation loss does not depend on x_c directly). Each family solves one
linear system with its Hessian (a Cholesky factorisation, never an explicit inverse) and applies the closed-form
mixed derivative of the poisoning point's own loss term. Labels are y ∈ {0, 1}, used as ỹ = 2y − 1 ∈ {−1, +1};
θ = (w, b) with an unpenalised intercept, as scikit-learn trains these models.

:class:`GenericFamily` computes the same gradient for any training objective that is twice differentiable in torch
(Hessian-vector products and conjugate gradient), used to cross-check the closed forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.linalg
import torch
from scipy.special import expit
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.svm import SVC

from transferlab.errors import ConfigError
from transferlab.models.kernel import rbf_kernel


def signed(y: np.ndarray) -> np.ndarray:
    """Labels {0, 1} as {−1, +1}."""
    return 2.0 * np.asarray(y, dtype=np.float64) - 1.0


def _augment(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _solve_symmetric(H: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """H⁻¹ rhs by Cholesky (LDLᵀ-free fallback to a least-squares solve when H is only semi-definite)."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(H, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(H, rhs, rcond=None)[0]


@dataclass
class LinearParams:
    w: np.ndarray
    b: float

    def scores(self, X: np.ndarray) -> np.ndarray:
        return X @ self.w + self.b


class Family:
    """What poisoning needs of a surrogate: train, score, validation loss, implicit gradient w.r.t. one point."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any:
        raise NotImplementedError

    def scores(self, params: Any, X: np.ndarray) -> np.ndarray:
        return params.scores(X)

    def validation_loss(self, params: Any, X_val: np.ndarray, y_val: np.ndarray) -> float:
        raise NotImplementedError

    def gradient(self, params: Any, X: np.ndarray, y: np.ndarray, c: int, X_val: np.ndarray,
                 y_val: np.ndarray) -> np.ndarray:
        """∇_{x_c} A for the training point of index ``c`` of (X, y) (the poisoning point), at params fitted on X."""
        raise NotImplementedError

    def validation_losses(self, params: Any, X: np.ndarray, y: np.ndarray, c: int, candidates: np.ndarray,
                          X_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
        """A after retraining with x_c replaced by each candidate row (the line search's evaluations); ``params``
        is the model fitted on (X, y), which a family may reuse."""
        out = np.empty(len(candidates))
        X = X.copy()
        for k, candidate in enumerate(candidates):
            X[c] = candidate
            out[k] = self.validation_loss(self.fit(X, y), X_val, y_val)
        return out


class LogisticFamily(Family):
    """Logistic regression: L_tr = ½‖w‖² + C Σ_i log(1 + exp(−ỹ_i f_i)); validation loss: mean logistic loss.

    Paper Eqs. 10–12 with z_i = σ_i (1 − σ_i), σ_i = σ(ỹ_i f_i), x̃ = (x, 1):
    ∇²_θ L_tr = C Σ_i z_i x̃_i x̃_iᵀ + diag(1, …, 1, 0) (the bias gets its own row and column, unpenalised);
    ∇_{x_c}∇_θ L_tr = C (ỹ_c (σ_c − 1) [I; 0] + z_c x̃_c wᵀ).
    """

    def __init__(self, C: float) -> None:
        self.C = C
        self._estimator = LogisticRegression(C=C, solver="lbfgs", tol=1e-10, max_iter=10_000, warm_start=True)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearParams:
        self._estimator.fit(X, y)
        return LinearParams(self._estimator.coef_[0].copy(), float(self._estimator.intercept_[0]))

    def validation_loss(self, params: LinearParams, X_val: np.ndarray, y_val: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, -signed(y_val) * params.scores(X_val))))

    def gradient(self, params, X, y, c, X_val, y_val):
        yt, yv = signed(y), signed(y_val)
        sigma = expit(yt * params.scores(X))
        z = sigma * (1 - sigma)
        Xa = _augment(X)
        H = self.C * (Xa.T * z) @ Xa
        H[np.arange(X.shape[1]), np.arange(X.shape[1])] += 1.0
        grad_val = _augment(X_val).T @ (-yv * (1 - expit(yv * params.scores(X_val)))) / len(yv)
        v = _solve_symmetric(H, grad_val)
        x_c = Xa[c]
        return -self.C * (yt[c] * (sigma[c] - 1) * v[:-1] + z[c] * (x_c @ v) * params.w)


@dataclass
class RidgeParams(LinearParams):
    factor: Any = None      # Cholesky factor of A = X̃ᵀX̃ + α diag(1, …, 1, 0), reused by gradient and line search
    rhs: Any = None         # X̃ᵀ ỹ


class RidgeFamily(Family):
    """Ridge classifier: L_tr = Σ_i (f_i − ỹ_i)² + α‖w‖²; validation loss: mean squared error (Xiao et al. 2015,
    Jagielski et al. 2018). ∇²_θ L_tr = 2A with A = X̃ᵀX̃ + α diag(1, …, 1, 0);
    ∇_{x_c}∇_θ L_tr = 2 ((f_c − ỹ_c) [I; 0] + x̃_c wᵀ).

    Training is one Cholesky factorisation of A, which the gradient reuses (the Hessian is the same matrix), and
    the line search evaluates all candidates x_c → u at once from that factor: A changes by u uᵀ − x̃_c x̃_cᵀ, a
    rank-two (Woodbury) update per candidate.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeParams:
        Xa = _augment(X)
        A = Xa.T @ Xa
        A[np.arange(X.shape[1]), np.arange(X.shape[1])] += self.alpha
        rhs = Xa.T @ signed(y)
        factor = scipy.linalg.cho_factor(A, check_finite=False)
        theta = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
        return RidgeParams(theta[:-1], float(theta[-1]), factor, rhs)

    def validation_loss(self, params: LinearParams, X_val: np.ndarray, y_val: np.ndarray) -> float:
        return float(np.mean((params.scores(X_val) - signed(y_val)) ** 2))

    def gradient(self, params, X, y, c, X_val, y_val):
        residual_val = params.scores(X_val) - signed(y_val)
        grad_val = 2 * _augment(X_val).T @ residual_val / len(residual_val)
        v = scipy.linalg.cho_solve(params.factor, grad_val, check_finite=False) / 2   # (2A)⁻¹ ∇_θ L_val
        x_c = np.r_[X[c], 1.0]
        r_c = params.scores(X[c:c + 1])[0] - signed(y)[c]
        return -2 * (r_c * v[:-1] + (x_c @ v) * params.w)

    def validation_losses(self, params, X, y, c, candidates, X_val, y_val):
        solve = lambda b: scipy.linalg.cho_solve(params.factor, b, check_finite=False)  # noqa: E731
        yc, old = signed(y)[c], np.r_[X[c], 1.0]
        U = _augment(candidates)                                     # (K, p)
        Ai_u = solve(U.T).T                                          # A⁻¹ u_k
        Ai_old = solve(old)                                          # A⁻¹ x̃_c
        Ai_r = solve(params.rhs - yc * old)[None, :] + yc * Ai_u     # A⁻¹ (rhs − ỹ_c x̃_c + ỹ_c u_k)
        # (A + u uᵀ − x̃ x̃ᵀ)⁻¹ r = A⁻¹r − A⁻¹[u x̃] S⁻¹ [u x̃]ᵀ A⁻¹ r, S = diag(1, −1) + [u x̃]ᵀ A⁻¹ [u x̃]
        s11 = 1 + (U * Ai_u).sum(1)
        s12 = Ai_u @ old
        s22 = -1 + old @ Ai_old
        t1, t2 = (U * Ai_r).sum(1), Ai_r @ old
        det = s11 * s22 - s12 * s12
        a1 = (s22 * t1 - s12 * t2) / det
        a2 = (s11 * t2 - s12 * t1) / det
        theta = Ai_r - a1[:, None] * Ai_u - a2[:, None] * Ai_old[None, :]
        scores = X_val @ theta[:, :-1].T + theta[:, -1]
        return np.mean((scores - signed(y_val)[:, None]) ** 2, axis=0)


@dataclass
class KernelParams:
    X: np.ndarray          # the training points
    beta: np.ndarray       # dual coefficients ỹ_i α_i for every training point (0 for non-support vectors)
    b: float
    kernel: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def scores(self, X: np.ndarray) -> np.ndarray:
        support = self.beta != 0
        return self.kernel(X, self.X[support]) @ self.beta[support] + self.b


class SVMFamily(Family):
    """SVM with linear or RBF kernel (Biggio et al. 2012); validation loss: mean hinge loss.

    f(x) = Σ_i β_i K(x_i, x) + b with β_i = ỹ_i α_i. With the sets of margin support vectors S (0 < α < C), error
    vectors (α = C) and the rest held fixed, the KKT conditions K_SS β_S + K_SE β_E + b 1 = ỹ_S, 1ᵀβ = 0 give by
    differentiation [∂β_S; ∂b] = −[[K_SS, 1], [1ᵀ, 0]]⁻¹ [E_S; 0], where E_s = β_c ∇_{x_c} K(x_s, x_c) for s ≠ c and,
    when c ∈ S, E_c = ∇_{x_c} Σ_i β_i K(x_i, x_c). Then ∂f(x_j)/∂x_c = K_jS ∂β_S + ∂b + β_c ∇_{x_c} K(x_j, x_c),
    and ∇_{x_c} A = mean over validation points with positive hinge loss of −ỹ_j ∂f(x_j)/∂x_c.

    The gradient is proportional to β_c except through x_c's own margin condition, so it *vanishes when x_c is not
    a support vector* (α_c = 0: the point is correctly classified outside the margin and does not affect the model).
    In that case we return the gradient of the point's own hinge loss, −ỹ_c ∇f(x_c), which moves it towards the
    margin, where it becomes a support vector and the implicit gradient takes over.

    ``tol`` is libsvm's stopping tolerance (scikit-learn's default 1e-3); tighten it for finite-difference checks.
    """

    def __init__(self, C: float, kernel: str = "linear", gamma: float = 0.01, tol: float = 1e-3) -> None:
        self.C, self.kernel_name, self.gamma, self.tol = C, kernel, gamma, tol

    def kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        if self.kernel_name == "linear":
            return A @ B.T
        return rbf_kernel(A, B, self.gamma)

    def kernel_gradient(self, A: np.ndarray, x: np.ndarray) -> np.ndarray:
        """∇_x K(a, x) for every row a of A: shape (len(A), d)."""
        if self.kernel_name == "linear":
            return A.copy()
        return 2 * self.gamma * (A - x) * self.kernel(A, x[None, :])

    def fit(self, X: np.ndarray, y: np.ndarray) -> KernelParams:
        svc = SVC(kernel=self.kernel_name, C=self.C, gamma=self.gamma, tol=self.tol).fit(X, y)
        beta = np.zeros(len(y))
        beta[svc.support_] = svc.dual_coef_[0]
        return KernelParams(X.copy(), beta, float(svc.intercept_[0]), self.kernel)

    def validation_loss(self, params: KernelParams, X_val: np.ndarray, y_val: np.ndarray) -> float:
        return float(np.mean(np.maximum(0.0, 1 - signed(y_val) * params.scores(X_val))))

    def gradient(self, params, X, y, c, X_val, y_val):
        yt, yv = signed(y), signed(y_val)
        beta, x_c = params.beta, X[c]
        support = np.flatnonzero(beta)
        own = self.kernel_gradient(X[support], x_c).T @ beta[support]  # ∇_{x_c} Σ_i β_i K(x_i, x_c), i ≠ c
        if self.kernel_name == "linear" and beta[c] != 0:
            own = own + beta[c] * x_c  # K(x_c, x_c) = ‖x_c‖²: d/dx_c = 2 x_c, of which x_c is counted above
        if beta[c] == 0:
            return -yt[c] * own
        abs_alpha = np.abs(beta)
        margin = np.flatnonzero((abs_alpha > 1e-8 * self.C) & (abs_alpha < self.C * (1 - 1e-6)))
        active = 1 - yv * params.scores(X_val) > 0
        if not active.any():
            return np.zeros_like(x_c)
        Xv, weights = X_val[active], -yv[active] / len(yv)         # ∂A/∂f_j for validation points with loss
        explicit = beta[c] * (self.kernel_gradient(Xv, x_c).T @ weights)
        if margin.size == 0:
            return explicit
        K = self.kernel(X[margin], X[margin])
        system = np.block([[K, np.ones((margin.size, 1))], [np.ones((1, margin.size)), np.zeros((1, 1))]])
        u = np.r_[self.kernel(Xv, X[margin]).T @ weights, weights.sum()]
        z = np.linalg.lstsq(system, u, rcond=None)[0]              # symmetric system: zᵀ = uᵀ system⁻¹
        E = beta[c] * self.kernel_gradient(X[margin], x_c)         # rows s ≠ c
        where_c = np.flatnonzero(margin == c)
        if where_c.size:
            E[where_c[0]] = own
        return explicit - z[:-1] @ E


class GenericFamily(Family):
    """Any model whose training objective L_tr(θ; X, y) and validation loss L_val(θ) are twice differentiable in
    torch: v = (∇²_θ L_tr)⁻¹ ∇_θ L_val by conjugate gradient on Hessian-vector products, then
    ∇_{x_c} A = −∇_{x_c} (∇_θ L_tr · v), all by autograd. ``fit`` is delegated to a closed-form family."""

    def __init__(self, fitter: Family, train_objective: Callable, validation_objective: Callable,
                 cg_iterations: int = 500, cg_tol: float = 1e-12) -> None:
        self.fitter = fitter
        self.train_objective = train_objective
        self.validation_objective = validation_objective
        self.cg_iterations, self.cg_tol = cg_iterations, cg_tol

    def fit(self, X, y):
        return self.fitter.fit(X, y)

    def validation_loss(self, params, X_val, y_val):
        return self.fitter.validation_loss(params, X_val, y_val)

    def gradient(self, params, X, y, c, X_val, y_val):
        t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        theta = torch.cat([t(params.w), t([params.b])]).requires_grad_(True)
        Xt, yt, Xv, yv = t(X).requires_grad_(True), t(signed(y)), t(X_val), t(signed(y_val))
        grad_train = torch.autograd.grad(self.train_objective(theta, Xt, yt), theta, create_graph=True)[0]
        grad_val = torch.autograd.grad(self.validation_objective(theta, Xv, yv), theta)[0]

        def hvp(vec: torch.Tensor) -> torch.Tensor:
            return torch.autograd.grad(grad_train, theta, vec, retain_graph=True)[0]

        v = torch.zeros_like(grad_val)
        residual = grad_val.clone()
        direction = residual.clone()
        rs = residual @ residual
        for _ in range(self.cg_iterations):
            Hd = hvp(direction)
            step = rs / (direction @ Hd)
            v = v + step * direction
            residual = residual - step * Hd
            new_rs = residual @ residual
            if new_rs.sqrt() < self.cg_tol * (1 + grad_val.norm()):
                break
            direction = residual + (new_rs / rs) * direction
            rs = new_rs
        mixed = torch.autograd.grad(grad_train, Xt, v.detach())[0]
        return -mixed[c].numpy()


def logistic_objectives(C: float) -> tuple[Callable, Callable]:
    def train(theta, X, y):
        w, b = theta[:-1], theta[-1]
        return 0.5 * w @ w + C * torch.nn.functional.softplus(-y * (X @ w + b)).sum()

    def validation(theta, X, y):
        return torch.nn.functional.softplus(-y * (X @ theta[:-1] + theta[-1])).mean()

    return train, validation


def ridge_objectives(alpha: float) -> tuple[Callable, Callable]:
    def train(theta, X, y):
        w, b = theta[:-1], theta[-1]
        return ((X @ w + b - y) ** 2).sum() + alpha * w @ w

    def validation(theta, X, y):
        return ((X @ theta[:-1] + theta[-1] - y) ** 2).mean()

    return train, validation


def family_for(model: Any) -> Family:
    """The poisoning family of a transferlab classifier (unfitted is fine: only its hyperparameters are used)."""
    from transferlab.models import KernelSVM, LinearSVM, Logistic, Ridge

    if isinstance(model, Logistic):
        return LogisticFamily(model.C)
    if isinstance(model, Ridge):
        return RidgeFamily(model.alpha)
    if isinstance(model, LinearSVM):
        return SVMFamily(model.C, "linear")
    if isinstance(model, KernelSVM):
        return SVMFamily(model.C, "rbf", model.gamma)
    raise ConfigError(f"poisoning surrogates are logistic, ridge, linear SVM or RBF SVM models; got "
                      f"{type(model).__name__}")

from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as hst
from scipy.special import expit

from transferlab import attacks, datasets, models
from transferlab.attacks.poisoning import (FAMILIES, Family, LogisticFamily, RBFSVMFamily, RidgeFamily, SVMFamily,
                                           family_for, signed)
from transferlab.attacks.poisoning import solvers
from transferlab.attacks.poisoning.solvers import logistic_newton, regularised_solver
from transferlab.errors import ConfigError, DataError
from transferlab.models.kernel import rbf_kernel


def svm(C: float, kernel: str = "linear", gamma: float = 0.5, tol: float = 1e-3) -> SVMFamily:
    return SVMFamily(C, tol=tol) if kernel == "linear" else RBFSVMFamily(C, gamma, tol=tol)


def gradient(family: Family, params, X, y, c: int, X_val, y_val) -> np.ndarray:
    """The implicit gradient of one point: a batch of one."""
    return family.gradients(params, X, y, [c], X_val, y_val)[0]


# ---- test-only oracles: the same implicit gradients by autograd, independent of the closed forms --------------

class GenericFamily(Family):
    """Any model whose training objective L_tr(θ; X, y) and validation loss L_val(θ) are twice differentiable in
    torch: v = (∇²_θ L_tr)⁻¹ ∇_θ L_val by conjugate gradient on Hessian-vector products, then
    ∇_{x_c} A = −∇_{x_c} (∇_θ L_tr · v), all by autograd (Eq. 7). ``fit`` and ``loss`` are delegated to a
    closed-form family."""

    def __init__(self, fitter: Family, train_objective: Callable, validation_objective: Callable,
                 cg_iterations: int = 500, cg_tol: float = 1e-12) -> None:
        self.fitter = fitter
        self.train_objective, self.validation_objective = train_objective, validation_objective
        self.cg_iterations, self.cg_tol = cg_iterations, cg_tol

    def fit(self, X, y):
        return self.fitter.fit(X, y)

    def loss(self, scores, y):
        return self.fitter.loss(scores, y)

    def gradients(self, params, X, y, indices, X_val, y_val):
        indices = np.asarray(indices, dtype=int).reshape(-1)
        t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        theta = torch.cat([t(params.w), t([params.b])]).requires_grad_(True)
        Xt, yt, Xv, yv = t(X).requires_grad_(True), t(signed(y)), t(X_val), t(signed(y_val))
        grad_train = torch.autograd.grad(self.train_objective(theta, Xt, yt), theta, create_graph=True)[0]
        grad_val = torch.autograd.grad(self.validation_objective(theta, Xv, yv), theta)[0]
        v = torch.zeros_like(grad_val)
        residual = grad_val.clone()
        direction = residual.clone()
        rs = residual @ residual
        for _ in range(self.cg_iterations):
            Hd = torch.autograd.grad(grad_train, theta, direction, retain_graph=True)[0]
            step = rs / (direction @ Hd)
            v = v + step * direction
            residual = residual - step * Hd
            new_rs = residual @ residual
            if new_rs.sqrt() < self.cg_tol * (1 + grad_val.norm()):
                break
            direction = residual + (new_rs / rs) * direction
            rs = new_rs
        mixed = torch.autograd.grad(grad_train, Xt, v.detach())[0]
        return -mixed[indices].numpy()


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


def svm_oracle_gradients(family: SVMFamily, params, X, y, indices, X_val, y_val) -> np.ndarray:
    """The SVM implicit gradient by autograd: the margin vectors' KKT system [[K_SS, 1], [1ᵀ, 0]] [β_S; b] =
    [ỹ_S − K_SE β_E; −1ᵀβ_E] solved in torch with the kernel a function of all training points (the partition held
    fixed), the validation hinge loss of the resulting scores differentiated with respect to the points; a point
    that is not a support vector gets its own hinge direction −ỹ_c ∇f(x_c)."""
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    rbf = isinstance(family, RBFSVMFamily)
    kernel = (lambda A, B: rbf_kernel(A, B, family.gamma)) if rbf else (lambda A, B: A @ B.T)
    yt, yv = signed(y), t(signed(y_val))
    abs_alpha, C = np.abs(params.beta), family.C
    S = np.flatnonzero((abs_alpha > 1e-8 * C) & (abs_alpha < C * (1 - 1e-6)))
    E = np.flatnonzero(abs_alpha >= C * (1 - 1e-6))
    Xt = t(X).requires_grad_(True)
    beta_E = t(C * yt[E])
    m = S.size
    system = torch.zeros((m + 1, m + 1), dtype=torch.float64)
    system[:m, :m] = kernel(Xt[S], Xt[S])
    system[:m, m] = system[m, :m] = 1.0
    rhs = torch.cat([t(yt[S]) - kernel(Xt[S], Xt[E]) @ beta_E, -beta_E.sum().reshape(1)])
    solution = torch.linalg.solve(system, rhs)
    sv = np.r_[S, E]
    scores_val = kernel(t(X_val), Xt[sv]) @ torch.cat([solution[:-1], beta_E]) + solution[-1]
    loss = torch.relu(1 - yv * scores_val).mean()
    grads = torch.autograd.grad(loss, Xt)[0].numpy()[indices].copy()
    for row, c in enumerate(np.asarray(indices)):
        if params.beta[c] == 0:
            query = t(X[c:c + 1]).requires_grad_(True)
            f = kernel(query, t(X[sv])) @ t(params.beta[sv]) + params.b
            grads[row] = -yt[c] * torch.autograd.grad(f.sum(), query)[0].numpy()[0]
    return grads


@pytest.fixture(scope="module")
def problem():
    """A small binary problem with one poisoning point (index c) appended, flipped label."""
    rng = np.random.default_rng(0)
    d, n = 5, 40
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    X_val = rng.normal(size=(30, d))
    y_val = (X_val[:, 0] > 0).astype(int)
    return X, y, X_val, y_val


def retrain_finite_difference(family, X, y, c, X_val, y_val, h=1e-3):
    """Central differences of (retrain on D_tr ∪ {x_c ± h e_i}, then validation loss)."""
    grad = np.zeros(X.shape[1])
    for i in range(X.shape[1]):
        plus, minus = X.copy(), X.copy()
        plus[c, i] += h
        minus[c, i] -= h
        grad[i] = (family.validation_loss(family.fit(plus, y), X_val, y_val)
                   - family.validation_loss(family.fit(minus, y), X_val, y_val)) / (2 * h)
    return grad


def with_point(problem, x_c, y_c):
    X, y, X_val, y_val = problem
    return np.vstack([X, x_c]), np.r_[y, y_c], X_val, y_val, len(y)


@pytest.mark.parametrize("family", [LogisticFamily(1.0), LogisticFamily(0.05), RidgeFamily(1.0), RidgeFamily(30.0)],
                         ids=["logistic_C1", "logistic_C0.05", "ridge_a1", "ridge_a30"])
def test_linear_implicit_gradients_match_retraining(problem, family):
    X, y, X_val, y_val, c = with_point(problem, np.array([0.4, -0.3, 0.2, 0.1, -0.5]), 0)
    params = family.fit(X, y)
    analytic = gradient(family, params, X, y, c, X_val, y_val)
    numeric = retrain_finite_difference(family, X, y, c, X_val, y_val)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=5e-3 * np.abs(numeric).max())  # lbfgs tolerance


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_svm_implicit_gradient_matches_retraining_for_support_vectors(problem, kernel):
    family = svm(1.0, kernel, gamma=0.5, tol=1e-7)
    checked = set()
    for s in np.linspace(-2, 2, 161):  # move the point across the boundary: error vector, then margin vector
        x_c = np.r_[s, 0.2, -0.1, 0.3, 0.05]
        X, y, X_val, y_val, c = with_point(problem, x_c, 1)
        params = family.fit(X, y)
        alpha = abs(params.beta[c])
        kind = "error" if alpha > 0.999 else "margin" if 0.05 < alpha < 0.95 else None
        if kind is None or kind in checked:
            continue
        analytic = gradient(family, params, X, y, c, X_val, y_val)
        numeric = retrain_finite_difference(family, X, y, c, X_val, y_val)
        np.testing.assert_allclose(analytic, numeric, rtol=5e-2, atol=2e-3 * np.abs(numeric).max())
        checked.add(kind)
    assert "error" in checked
    if kernel == "rbf":
        assert "margin" in checked


def test_svm_gradient_for_a_non_support_vector_is_the_own_hinge_direction(problem):
    family = svm(1.0, "linear", tol=1e-7)
    X, y, X_val, y_val, c = with_point(problem, np.array([4.0, 0, 0, 0, 0]), 1)  # deep inside class 1
    params = family.fit(X, y)
    assert params.beta[c] == 0
    grad = gradient(family, params, X, y, c, X_val, y_val)
    h = 1e-5
    own = [(-(params.scores((X[c] + h * e)[None])[0]) + params.scores((X[c] - h * e)[None])[0]) / (2 * h)
           for e in np.eye(X.shape[1])]
    np.testing.assert_allclose(grad, own, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("closed, objectives", [(LogisticFamily(1.0), logistic_objectives(1.0)),
                                                (RidgeFamily(2.0), ridge_objectives(2.0))], ids=["logistic", "ridge"])
def test_closed_forms_agree_with_the_generic_torch_path(problem, closed, objectives):
    X, y, X_val, y_val, c = with_point(problem, np.array([0.4, -0.3, 0.2, 0.1, -0.5]), 0)
    generic = GenericFamily(closed, *objectives)
    params = closed.fit(X, y)
    np.testing.assert_allclose(gradient(generic, params, X, y, c, X_val, y_val),
                               gradient(closed, params, X, y, c, X_val, y_val), rtol=1e-7, atol=1e-12)


def test_ridge_line_search_update_equals_retraining(problem):
    X, y, X_val, y_val, c = with_point(problem, np.zeros(5), 1)
    family = RidgeFamily(1.0)
    candidates = np.random.default_rng(1).normal(size=(4, 5))
    fast = family.validation_losses(family.fit(X, y), X, y, c, candidates, X_val, y_val)
    slow = Family.validation_losses(family, None, X, y, c, candidates, X_val, y_val)
    np.testing.assert_allclose(fast, slow, rtol=1e-9)


@pytest.fixture(scope="module")
def mnist_parts():
    ds = datasets.load("mnist89")
    return datasets.split(ds, n_target=100, n_surrogate=10, n_test=300, n_validation=100, seed=0)


@pytest.mark.parametrize("name", ["logistic_l", "ridge_l", "svm_l", "svm_rbf_l"])
def test_sequential_poisoning_raises_validation_loss_and_test_error(mnist_parts, name):
    s = mnist_parts
    attack = attacks.Poisoning(surrogate=name, n_points=20, mode="sequential", max_passes=1, max_iter=3, seed=0)
    r = attack.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    X_p, y_p = r.X_p, r.y_p
    assert X_p.shape == (20, 784) and X_p.min() >= 0 and X_p.max() <= 1
    assert np.array_equal(y_p, 1 - s.target.y[r.initial_indices])  # labels are the flipped ones
    # the optimisation moved the points and raised the validation loss over the label-flip start
    assert r.validation_loss_poisoned > r.objective_before[0] > r.validation_loss_clean
    assert np.all(r.objective_after >= r.objective_before) and r.objective_after[-1] == r.validation_loss_poisoned
    assert not np.allclose(X_p, s.target.X[r.initial_indices])
    assert np.all(r.iterations >= 1)
    clean = models.create(name).fit(s.target.X, s.target.y)
    poisoned = models.create(name).fit(np.vstack([s.target.X, X_p]), np.r_[s.target.y, y_p])
    clean_error = np.mean(clean.predict(s.test.X) != s.test.y)
    assert np.mean(poisoned.predict(s.test.X) != s.test.y) > clean_error


def test_poisoning_takes_an_unfitted_classifier_and_refuses_bad_input(mnist_parts):
    s = mnist_parts
    attack = attacks.Poisoning(surrogate=models.create("ridge_h"), n_points=2, max_passes=1, max_iter=1)
    X_p = attack.run(s.target.X, s.target.y, s.validation.X, s.validation.y).X_p
    assert X_p.shape == (2, 784)
    digits = datasets.load("digits")
    with pytest.raises(DataError, match="binary"):
        attacks.Poisoning(n_points=2).run(digits.X[:50], digits.y[:50], digits.X[50:80], digits.y[50:80])
    with pytest.raises(ConfigError, match="poisoning surrogates"):
        attacks.Poisoning(surrogate="rf_h", n_points=2)                 # refused when the attack is built
    with pytest.raises(ConfigError, match="unknown model"):
        attacks.Poisoning(surrogate="bogus")
    with pytest.raises(ConfigError, match="alpha > 0"):
        attacks.Poisoning(surrogate=models.create("ridge_l", alpha=0.0))
    X, y, X_val, y_val = s.target.X[:60], s.target.y[:60], s.validation.X[:40], s.validation.y[:40]
    attack = attacks.Poisoning(surrogate="logistic_l", n_points=2)
    with pytest.raises(DataError, match="X_val has 700 features, X_train 784"):
        attack.run(X, y, X_val[:, :700], y_val)
    for name in ("logistic_l", "ridge_l", "svm_l", "svm_rbf_l"):
        with pytest.raises(DataError, match="y_train holds only class 0"):
            attacks.Poisoning(surrogate=name, n_points=2).run(X[y == 0], y[y == 0], X_val, y_val)
    with pytest.raises(DataError, match="y_train: labels must be class indices"):
        attack.run(X, 2 * y - 1, X_val, y_val)
    with pytest.raises(DataError, match="y_val must hold 40 integer labels"):
        attack.run(X, y, X_val, y_val[:39])


def test_signed_labels():
    assert signed(np.array([0, 1])).tolist() == [-1.0, 1.0]


def test_family_registry_is_keyed_on_the_model_class():
    assert set(FAMILIES) == {models.Logistic, models.Ridge, models.LinearSVM, models.KernelSVM}
    rbf = family_for(models.create("svm_rbf_h"))
    assert isinstance(rbf, RBFSVMFamily) and (rbf.C, rbf.gamma) == (100.0, 0.01)
    assert type(family_for(models.create("svm_l"))) is SVMFamily and family_for(models.create("svm_l")).C == 0.01
    assert family_for(models.create("ridge_h")).alpha == 10.0

    class MyLogistic(models.Logistic):                         # a subclass finds its base class's family
        pass

    assert isinstance(family_for(MyLogistic(C=3.0)), LogisticFamily) and family_for(MyLogistic(C=3.0)).C == 3.0
    with pytest.raises(ConfigError, match="poisoning surrogates"):
        family_for(models.create("rf_l"))


# ---- batched gradients and batch mode --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def poisoned_problem(problem):
    """The small problem with four poisoning points appended (indices n … n + 3)."""
    X, y, X_val, y_val = problem
    rng = np.random.default_rng(3)
    X_p = np.vstack([[0.4, -0.3, 0.2, 0.1, -0.5], [-0.2, 0.1, 0.0, 0.3, 0.2], [1.5, 0.2, -0.1, 0.3, 0.05],
                     rng.normal(size=5)])
    y_p = np.array([0, 1, 0, 1])
    return X, y, X_p, y_p, X_val, y_val


ORACLES = {
    "logistic_C1": (lambda: LogisticFamily(1.0), lambda f: GenericFamily(f, *logistic_objectives(1.0))),
    "logistic_C10": (lambda: LogisticFamily(10.0), lambda f: GenericFamily(f, *logistic_objectives(10.0))),
    "ridge_a1": (lambda: RidgeFamily(1.0), lambda f: GenericFamily(f, *ridge_objectives(1.0))),
    "svm_linear": (lambda: svm(1.0, "linear", tol=1e-7), None),
    "svm_rbf": (lambda: svm(1.0, "rbf", gamma=0.5, tol=1e-7), None),
    "svm_rbf_C100": (lambda: svm(100.0, "rbf", gamma=0.5, tol=1e-7), None),
}


@pytest.mark.parametrize("make, oracle", ORACLES.values(), ids=ORACLES.keys())
def test_batched_gradients_equal_the_autograd_oracle_and_each_point_alone(poisoned_problem, make, oracle):
    """The one batched implicit gradient of each family against an independent autograd computation (logistic,
    ridge: Hessian-vector products and conjugate gradient; SVMs: the margin vectors' KKT system solved in torch);
    a batch of one, any subset in any order and the session's cached solve give the same rows."""
    X, y, X_p, y_p, X_val, y_val = poisoned_problem
    family = make()
    XA, yA = np.vstack([X, X_p]), np.r_[y, y_p]
    indices = np.arange(len(X), len(XA))
    params = family.fit(XA, yA)
    if isinstance(family, SVMFamily):   # the oracle solves the KKT system exactly: compare at the exact optimum
        params = family.session(X, y, X_val, y_val).fit(X_p, y_p).params
    batched = family.gradients(params, XA, yA, indices, X_val, y_val)
    scale = np.abs(batched).max()
    assert scale > 0
    if oracle is None:
        expected = svm_oracle_gradients(family, params, XA, yA, indices, X_val, y_val)
    else:
        expected = oracle(family).gradients(params, XA, yA, indices, X_val, y_val)
    np.testing.assert_allclose(batched, expected, rtol=1e-7, atol=1e-10 * scale)
    alone = np.stack([gradient(family, params, XA, yA, c, X_val, y_val) for c in indices])
    np.testing.assert_allclose(alone, batched, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(family.gradients(params, XA, yA, indices[[2, 0]], X_val, y_val), batched[[2, 0]],
                               rtol=1e-9, atol=1e-12 * scale)
    # the session (cached Gram/kernel matrices, dual solves; SVMs: the exact optimum where libsvm stops at its
    # tolerance 1e-7) gives the same model, loss and gradients
    session = family.session(X, y, X_val, y_val)
    fit = session.fit(X_p, y_p)
    assert session.validation_loss(fit) == pytest.approx(family.validation_loss(params, X_val, y_val), rel=1e-6)
    np.testing.assert_allclose(session.gradients(fit), batched, rtol=1e-5, atol=1e-6 * scale)


def test_svm_batch_covers_error_margin_and_non_support_points(poisoned_problem):
    X, y, X_p, y_p, X_val, y_val = poisoned_problem
    family = svm(1.0, "rbf", gamma=0.5, tol=1e-7)
    alpha = np.abs(family.fit(np.vstack([X, X_p]), np.r_[y, y_p]).beta[len(X):])
    assert (alpha > 0.999).any() and ((alpha > 1e-6) & (alpha < 0.999)).any()   # error and margin vectors
    alpha = np.abs(svm(1.0, "linear", tol=1e-7).fit(np.vstack([X, X_p]), np.r_[y, y_p]).beta[len(X):])
    assert (alpha == 0).any()                                                    # and a non-support vector


@pytest.mark.parametrize("make", [lambda: LogisticFamily(1.0), lambda: RidgeFamily(1.0),
                                  lambda: svm(1.0, "rbf", gamma=0.5, tol=1e-9),
                                  lambda: svm(0.1, "linear", tol=1e-9)],   # fewer than d + 1 margin vectors
                         ids=["logistic", "ridge", "svm_rbf", "svm_linear"])
def test_batched_gradients_match_retraining_when_all_points_move(poisoned_problem, make):
    """The directional derivative of (retrain, validation loss) when all poisoning points move at once equals
    Σ_k ⟨∇_{x_k} A, Δ_k⟩: the joint gradient is the stack of the per-point ones."""
    X, y, X_p, y_p, X_val, y_val = poisoned_problem
    family = make()
    session = family.session(X, y, X_val, y_val)
    fit = session.fit(X_p, y_p)
    grads = session.gradients(fit)
    delta = np.random.default_rng(5).normal(size=X_p.shape)
    if isinstance(family, SVMFamily):  # a non-support vector's "gradient" is its own hinge direction, not A's
        delta[fit.params.beta[len(X):] == 0] = 0.0
        assert delta.any()
    h = 1e-3  # libsvm's solution carries ~1e-9 noise: smaller steps see it
    plus = session.validation_loss(session.fit(X_p + h * delta, y_p))
    minus = session.validation_loss(session.fit(X_p - h * delta, y_p))
    assert (plus - minus) / (2 * h) == pytest.approx(np.sum(grads * delta), rel=2e-3, abs=1e-6)


def test_dual_solver_equals_the_primal_hessian_solve():
    rng = np.random.default_rng(0)
    for n, d in [(30, 8), (8, 30)]:
        X, D, g = rng.normal(size=(n, d)), rng.uniform(0, 2, size=n), rng.normal(size=(d + 1, 3))
        D[0] = 0.0                                                   # a saturated point drops out
        H = (np.c_[X, np.ones(n)].T * D) @ np.c_[X, np.ones(n)] + np.diag(np.r_[np.ones(d), 0.0])
        expected = np.linalg.solve(H, g)
        np.testing.assert_allclose(regularised_solver(X, D, X @ X.T)(g), expected, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(regularised_solver(X, D)(g[:, 0]), expected[:, 0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("C", [0.01, 1.0, 10.0])
def test_logistic_newton_warm_start_equals_cold_fit_and_scikit_learn(mnist_parts, C):
    s = mnist_parts
    X, y = s.target.X, s.target.y
    family = LogisticFamily(C)
    cold = family.newton_fit(X, y)
    sk = family.fit(X, y)                                            # scikit-learn's lbfgs
    np.testing.assert_allclose(cold.w, sk.w, atol=1e-5 * max(1, np.abs(cold.w).max()))
    # stationary: the gradient of the training objective vanishes
    yt = signed(y)
    r = -yt * (1 - expit(yt * cold.scores(X)))
    assert np.abs(np.r_[cold.w + C * X.T @ r, C * r.sum()]).max() < 1e-8 * max(1, C)
    # move some points, refit warm from the previous model and cold: the same optimum, in fewer Newton steps
    moved = X.copy()
    moved[:10] = np.clip(moved[:10] + 0.3 * np.random.default_rng(0).normal(size=(10, X.shape[1])), 0, 1)
    warm = family.newton_fit(moved, y, warm=cold, gram=moved @ moved.T)
    again = family.newton_fit(moved, y)
    np.testing.assert_allclose(warm.w, again.w, atol=1e-9 * max(1, np.abs(again.w).max()))
    assert warm.b == pytest.approx(again.b, abs=1e-9 * max(1, abs(again.b)))
    _, _, warm_steps = logistic_newton(moved, yt, C, cold.w, cold.b)
    _, _, cold_steps = logistic_newton(moved, yt, C, np.zeros(X.shape[1]), 0.0)
    assert warm_steps < cold_steps


@pytest.mark.parametrize("make", [lambda: RidgeFamily(10.0), lambda: svm(100.0, "linear", tol=1e-10),
                                  lambda: svm(0.01, "linear", tol=1e-10),
                                  lambda: svm(1.0, "rbf", gamma=0.01, tol=1e-10),
                                  lambda: svm(100.0, "rbf", gamma=0.01, tol=1e-10)],
                         ids=["ridge", "svm_h", "svm_l", "svm_rbf_l", "svm_rbf_h"])
def test_session_fits_equal_cold_fits_and_warm_starts_do_too(mnist_parts, make):
    s = mnist_parts
    family = make()
    X_p, y_p = s.surrogate.X[:5], 1 - s.surrogate.y[:5]
    session = family.session(s.target.X, s.target.y, s.validation.X, s.validation.y)
    fit = session.fit(X_p, y_p)
    cold = family.fit(np.vstack([s.target.X, X_p]), np.r_[s.target.y, y_p])   # libsvm to a tight tolerance
    scores = family.scores(cold, s.test.X)
    np.testing.assert_allclose(family.scores(fit.params, s.test.X), scores, atol=1e-6 * np.abs(scores).max())
    # move the points a little: the warm-started refit (SVMs: active-set from the previous partition, no libsvm)
    # is the same model as a cold one
    moved = np.clip(X_p + 0.05 * np.random.default_rng(1).normal(size=X_p.shape), 0, 1)
    libsvm_before = getattr(session, "libsvm_fits", 0)
    warm = session.fit(moved, y_p, warm=fit)
    if isinstance(family, SVMFamily):
        assert session.libsvm_fits == libsvm_before
    again = family.fit(np.vstack([s.target.X, moved]), np.r_[s.target.y, y_p])
    scores = family.scores(again, s.test.X)
    np.testing.assert_allclose(family.scores(warm.params, s.test.X), scores, atol=1e-6 * np.abs(scores).max())
    assert session.validation_loss(warm) == pytest.approx(family.validation_loss(again, s.validation.X,
                                                                                  s.validation.y), rel=1e-6)


@pytest.mark.parametrize("name", ["logistic_l", "ridge_l", "svm_l", "svm_rbf_l"])
def test_batch_poisoning_raises_validation_loss_and_test_error(mnist_parts, name):
    """Batch mode without its stall rule, error selection and momentum (the batch mode of issue 15): every
    accepted step raises A and the last one is returned."""
    s = mnist_parts
    attack = attacks.Poisoning(surrogate=name, n_points=20, mode="batch", max_steps=30, seed=0, stall=0,
                               keep="last", momentum=0)
    r = attack.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    X_p, y_p = r.X_p, r.y_p
    assert r.mode == "batch" and X_p.shape == (20, 784) and X_p.min() >= 0 and X_p.max() <= 1
    assert np.array_equal(y_p, 1 - s.target.y[r.initial_indices])  # labels are the flipped ones
    assert len(set(r.initial_indices)) == 20
    assert r.validation_loss_poisoned > r.history[0] > r.validation_loss_clean
    assert np.all(np.diff(r.history) > 0) and r.history[-1] == r.validation_loss_poisoned
    assert not np.allclose(X_p, s.target.X[r.initial_indices])
    # the returned points give the reported loss when the surrogate's family is retrained on them
    family = attack._family()
    poisoned_params = family.fit(np.vstack([s.target.X, X_p]), np.r_[s.target.y, y_p])
    assert family.validation_loss(poisoned_params, s.validation.X, s.validation.y) == pytest.approx(
        r.validation_loss_poisoned, rel=1e-4)
    clean = models.create(name).fit(s.target.X, s.target.y)
    poisoned = models.create(name).fit(np.vstack([s.target.X, X_p]), np.r_[s.target.y, y_p])
    assert np.mean(poisoned.predict(s.test.X) != s.test.y) > np.mean(clean.predict(s.test.X) != s.test.y)
    # deterministic for a seed
    again = attacks.Poisoning(surrogate=name, n_points=20, mode="batch", max_steps=30, seed=0, stall=0, keep="last",
                              momentum=0)
    r_again = again.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    assert np.array_equal(r_again.X_p, X_p) and np.array_equal(r_again.y_p, y_p)


def test_batch_poisoning_with_a_generic_session_and_confident_start(mnist_parts):
    s = mnist_parts
    X, y, X_val, y_val = s.target.X[:60], s.target.y[:60], s.validation.X[:40], s.validation.y[:40]
    attack = attacks.Poisoning(surrogate="logistic_l", n_points=4, mode="batch", max_steps=3, init="confident")
    generic = GenericFamily(LogisticFamily(0.01), *logistic_objectives(0.01))
    attack._family = lambda: generic                                 # the generic Session (no caches)
    r = attack.run(X, y, X_val, y_val)
    X_p = r.X_p
    fast = attacks.Poisoning(surrogate="logistic_l", n_points=4, mode="batch", max_steps=3, init="confident")
    X_fast = fast.run(X, y, X_val, y_val).X_p
    np.testing.assert_allclose(X_p, X_fast, atol=1e-6)
    family = LogisticFamily(0.01)
    margins = signed(y) * family.scores(family.fit(X, y), X)
    assert set(r.initial_indices) == set(np.argsort(-margins)[:4])


def test_error_stall_rule():
    """The error stall rule compares the best validation error of the last ERROR_STALL_WINDOW iterates with the best
    before them, relative to the best error's gain over the start."""
    from transferlab.attacks.poisoning.strategies import ERROR_STALL_WINDOW as W, error_stalled

    rising = [0.1 + 0.01 * k for k in range(W + 3)]
    assert not error_stalled(rising[:W], 0.5)                         # too few iterates to judge
    assert not error_stalled(rising, 0.05)                            # the last W gained 0.08 of 0.10
    assert error_stalled(rising, 0.9)
    flat = [0.1, 0.3] + [0.3] * W
    assert error_stalled(flat, 0.01)                                  # no gain in the last W
    assert not error_stalled([0.2] * (W + 3), 0.5)                    # never gained: never stalled
    assert error_stalled([0.1, 0.4] + [0.35] * W, 1e-9)               # the last W fell below the best before
    assert not error_stalled([0.3, 0.2] + [0.1] * W, 0.5)             # fell below the start: no gain, no stall
    # the window is the last W iterates: its best is the first of them, then just before them
    assert not error_stalled([0.1] * 3 + [0.5] + [0.2] * (W - 1), 0.5)
    assert error_stalled([0.1] * 3 + [0.5] + [0.2] * W, 0.5)
    assert error_stalled([0.1, 0.5, 0.2] + [0.52] * W, 0.1)            # against the best before, not the last
    assert not error_stalled([0.1 + 0.001 * k for k in range(W + 3)], 0.5)   # relative to the gain, not absolute
    assert not error_stalled([0.1, 0.2, 0.3] + [0.25] * (W - 1), 0.4)     # the window's best, not its last
    assert error_stalled([0.0, 0.5, 0.6] + [0.1] * (W - 1), 0.3)         # the best's gain, not the last's
    assert not error_stalled([0.0, 0.25] + [0.5] * W, 0.5)             # exactly v of the gain is not a stall


def test_error_stall_stops_the_same_path_early(mnist_parts):
    """stall_error only stops the ascent: its iterates are the first ones of the run without it, it retrains no
    more, and it stopped where the rule says so (or where the run without it stopped)."""
    from transferlab.attacks.poisoning.strategies import error_stalled

    s = mnist_parts
    data = (s.target.X, s.target.y, s.validation.X, s.validation.y)
    full = attacks.Poisoning(surrogate="svm_rbf_h", n_points=15, seed=0).run(*data)
    # 0.25: on this path the rule's ratio (the window's rise over the gain) is 0.30 one step before it fires and 0.19
    # where it fires, far from 0.25 on either side, so a machine that rounds differently stops at the same step
    cut = attacks.Poisoning(surrogate="svm_rbf_h", n_points=15, seed=0, stall_error=0.25).run(*data)
    k = len(cut.history)
    assert 1 < k < len(full.history) and cut.retrainings < full.retrainings
    np.testing.assert_array_equal(cut.history, full.history[:k])
    np.testing.assert_array_equal(cut.error_history, full.error_history[:k])
    assert error_stalled(list(cut.error_history), 0.25)
    assert not any(error_stalled(list(cut.error_history[:j]), 0.25) for j in range(1, k))
    assert cut.validation_error_poisoned == cut.error_history.max()


def test_step_grows_after_warm_up_only_where_the_model_predicts_a_gain():
    from transferlab.attacks.poisoning.strategies import GROWTH_WARMUP, step_grows

    W = GROWTH_WARMUP
    assert step_grows("double", W + 1, 0.1, 1.0)                      # doubling: whatever the step gained
    assert step_grows("model", W, 0.1, 1.0)                           # the warm-up steps double all the same
    assert not step_grows("model", W + 1, 0.49, 1.0)                  # ρ < ½: the model falls at the step's end
    assert step_grows("model", W + 1, 0.5, 1.0) and step_grows("model", W + 1, 3.0, 1.0)
    assert step_grows("model", W + 1, 0.1, 0.0) and step_grows("model", W + 1, 0.1, -1.0)   # no model: doubles
    with pytest.raises(ValueError, match="growth"):
        step_grows("triple", W + 1, 0.1, 1.0)


def test_batch_refuses_an_unknown_growth_before_any_retraining(mnist_parts):
    """An unknown ``growth`` is refused by ``batch`` itself at once, not after the warm-up steps."""
    from transferlab.attacks.poisoning.strategies import Problem, batch

    s = mnist_parts
    X, y = s.target.X, s.target.y

    class Untrainable(RidgeFamily):
        def session(self, *args, **kwargs):
            raise AssertionError("batch retrained before checking its growth rule")

    problem = Problem(Untrainable(10.0), X, y, s.validation.X, s.validation.y, 0.0, 1.0)
    with pytest.raises(ValueError, match="growth"):
        batch(problem, X[:2].copy(), 1 - y[:2], np.arange(2), max_step=1.0, max_steps=10, grid=4, tol=0.0,
              stall=0.0, keep="last", momentum=0.0, stall_error=0.0, growth="triple")


@settings(max_examples=200, deadline=None)
@given(slope=hst.floats(1e-3, 1e3), curvature=hst.floats(-1e3, 1e3))
def test_model_growth_is_the_quadratic_models_verdict(slope, curvature):
    """For A(t) = slope·t + curvature·t² along the step (t = 1 at its end), the step doubles exactly where A is
    still rising at the step's end, A′(1) = slope + 2·curvature ≥ 0 (equivalently A(2) ≥ A(0))."""
    from transferlab.attacks.poisoning.strategies import GROWTH_WARMUP, step_grows

    gain = slope + curvature
    assume(gain > 0 and abs(slope + 2 * curvature) > 1e-9 * slope)     # accepted, and off the boundary
    assert step_grows("model", GROWTH_WARMUP + 1, gain, slope) == (slope + 2 * curvature >= 0)


@pytest.mark.parametrize("name", ["logistic_h", "logistic_l", "ridge_h", "ridge_l", "svm_h", "svm_l", "svm_rbf_h",
                                  "svm_rbf_l"])
def test_model_growth_predicts_the_first_order_gain(mnist_parts, monkeypatch, name):
    """The predicted gain handed to step_grows is g·Δ, the first-order change of the validation loss along the
    accepted step: for a step of 2.5e-5 per point the retrained gain matches it to 1e-3 (measured: 7e-5)."""
    from transferlab.attacks.poisoning import strategies

    real, calls = strategies.step_grows, []

    def spy(growth, steps, gain, predicted):
        calls.append((gain, predicted))
        return real(growth, steps, gain, predicted)

    monkeypatch.setattr(strategies, "step_grows", spy)
    s = mnist_parts
    attacks.Poisoning(surrogate=name, n_points=6, seed=0, growth="model", step=1e-4, tol=0.0, max_steps=1).run(
        s.target.X, s.target.y, s.validation.X, s.validation.y)
    assert len(calls) == 1, f"one accepted step expected, step_grows was called {len(calls)} times"
    (gain, predicted), = calls
    assert predicted > 0 and gain / predicted == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["logistic_l", "ridge_h", "ridge_l"])
def test_model_growth_skips_only_rejected_tries_on_smooth_families(mnist_parts, name):
    """On these smooth validation losses the model's verdict is right wherever it stops a doubling: the same
    accepted steps as growth="double", with fewer retrainings. (Both runs are on one machine; another BLAS moves
    both paths alike, and could part them only where a try lands within rounding of ``tol``.)"""
    s = mnist_parts
    data = (s.target.X, s.target.y, s.validation.X, s.validation.y)
    double = attacks.Poisoning(surrogate=name, n_points=20, seed=0).run(*data)
    model = attacks.Poisoning(surrogate=name, n_points=20, seed=0, growth="model").run(*data)
    assert model.retrainings < double.retrainings
    np.testing.assert_allclose(model.history, double.history, rtol=1e-9)
    np.testing.assert_allclose(model.X_p, double.X_p, rtol=0, atol=1e-9)


def test_poisoning_modes_and_starts_are_checked():
    with pytest.raises(ConfigError, match="mode"):
        attacks.Poisoning(mode="parallel")
    with pytest.raises(ConfigError, match="init"):
        attacks.Poisoning(init="worst")
    for value in (-0.1, 1.0, float("nan"), True, "0.1"):
        with pytest.raises(ConfigError, match="stall"):
            attacks.Poisoning(stall=value)
        with pytest.raises(ConfigError, match="stall_error"):
            attacks.Poisoning(stall_error=value)
        with pytest.raises(ConfigError, match="momentum"):
            attacks.Poisoning(momentum=value)
    with pytest.raises(ConfigError, match="keep"):
        attacks.Poisoning(keep="best")
    with pytest.raises(ConfigError, match="growth"):
        attacks.Poisoning(growth="triple")


def test_batch_is_the_default_and_sequential_is_reachable_by_name(mnist_parts):
    """The default is batch mode with its stall rule and error selection; ``mode="sequential"`` runs the paper's
    algorithm (its results are pinned by the golden case tests/golden/poisoning.yaml), from the same random start
    draw, and equals its strategy called directly."""
    from transferlab.attacks.poisoning.strategies import Problem, sequential

    default = attacks.Poisoning()
    d = default.settings
    assert (d.mode, d.stall, d.keep, d.momentum) == ("batch", 0.01, "error", 0.9)
    s = mnist_parts
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    batch = attacks.Poisoning(surrogate="ridge_h", n_points=3, seed=4)
    b = batch.run(X, y, X_val, y_val)
    assert b.mode == "batch" and b.history is not None
    attack = attacks.Poisoning(surrogate="ridge_h", n_points=3, mode="sequential", max_passes=1, max_iter=1, seed=4)
    r = attack.run(X, y, X_val, y_val)
    X_p, y_p = r.X_p, r.y_p
    assert r.mode == "sequential" and r.history is None
    expected = np.random.default_rng(4).choice(len(s.target.y), size=3, replace=False)
    assert np.array_equal(r.initial_indices, expected)
    assert np.array_equal(b.initial_indices, expected)                  # one start draw for both
    problem = Problem(RidgeFamily(10.0), X, y, X_val, y_val, 0.0, 1.0)
    direct, result = sequential(problem, X[expected].copy(), 1 - y[expected], expected, max_step=0.25 * 28.0,
                                max_passes=1, max_iter=1, grid=4, tol=1e-5)
    np.testing.assert_allclose(X_p, direct, rtol=1e-12, atol=1e-12)
    assert np.array_equal(y_p, 1 - y[expected])
    assert result.validation_loss_poisoned == pytest.approx(r.validation_loss_poisoned, rel=1e-12)


def test_sequential_counts_every_retraining(mnist_parts, monkeypatch):
    """``retrainings`` of the sequential algorithm counts every model it trains: for a family whose line-search
    candidates are each a ``fit`` (logistic: the base class's ``validation_losses``), the number of ``fit`` calls;
    for ridge, whose candidates come from a closed-form update, the clean model, the start, one fit per iteration,
    ``grid`` candidates per line search and the final model."""
    s = mnist_parts
    data = (s.target.X, s.target.y, s.validation.X, s.validation.y)
    calls = []
    fit = LogisticFamily.fit
    monkeypatch.setattr(LogisticFamily, "fit", lambda self, X, y: calls.append(1) or fit(self, X, y))
    r = attacks.Poisoning(surrogate="logistic_l", n_points=3, mode="sequential", max_passes=1, max_iter=2,
                          seed=0).run(*data)
    assert r.retrainings == len(calls) > 3 * 2
    r = attacks.Poisoning(surrogate="ridge_l", n_points=3, mode="sequential", max_passes=1, max_iter=2, grid=3,
                          seed=0).run(*data)
    searches = int(r.iterations.sum())          # no point meets a zero gradient here: each iteration searches
    assert searches > 0 and r.retrainings == 2 + searches + 3 * searches + 1


def test_batch_returns_the_iterate_with_the_highest_validation_error_and_stops_on_a_stall(mnist_parts):
    s = mnist_parts
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    full = attacks.Poisoning(surrogate="svm_rbf_l", n_points=10, max_steps=40, stall=0, keep="last", seed=1)
    f = full.run(X, y, X_val, y_val)
    default = attacks.Poisoning(surrogate="svm_rbf_l", n_points=10, max_steps=40, seed=1)
    r = default.run(X, y, X_val, y_val)
    X_p, y_p = r.X_p, r.y_p
    # the same ascent, cut where the last five steps added less than 1% of the gain so far
    steps = len(r.history) - 1
    assert 5 < steps < len(f.history) - 1
    np.testing.assert_allclose(r.history, f.history[:steps + 1], rtol=1e-12)
    assert r.history[-1] - r.history[-6] < 0.01 * (r.history[-1] - r.history[0])
    # the returned iterate: the last of the highest validation error, and the reported numbers are its own
    errors = r.error_history
    best = r.iterations[0]
    assert errors[best] == errors.max() and np.all(errors[best + 1:] < errors.max())
    assert r.validation_error_poisoned == errors.max() and r.validation_loss_poisoned == r.history[best]
    family = default._family()
    params = family.fit(np.vstack([X, X_p]), np.r_[y, y_p])
    assert np.mean((family.scores(params, X_val) > 0) != (y_val == 1)) == pytest.approx(errors.max(), abs=1e-12)
    assert family.validation_loss(params, X_val, y_val) == pytest.approx(r.validation_loss_poisoned, rel=1e-4)
    assert r.validation_error_poisoned > r.validation_error_clean


@pytest.mark.parametrize("name", ["logistic_h", "svm_rbf_h", "svm_h"])   # kept: the warm run, the fresh one, padded
def test_start_points_offer_two_more_candidates_and_the_rule_picks_one(mnist_parts, name):
    """run(start=...): the run from the given points (plus drawn ones), the run from the draw alone, and the given
    points with inert ones; the padded candidate is kept unless a run matches it on both validation error and
    loss, and of the runs the one of higher validation error."""
    from transferlab.attacks.poisoning.strategies import Problem, padded

    s = mnist_parts
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    smaller = attacks.Poisoning(surrogate=name, n_points=4, seed=3).run(X, y, X_val, y_val)
    start = (smaller.X_p, smaller.y_p)
    fresh = attacks.Poisoning(surrogate=name, n_points=8, seed=3)
    f = fresh.run(X, y, X_val, y_val)
    warm = attacks.Poisoning(surrogate=name, n_points=8, seed=3)
    r = warm.run(X, y, X_val, y_val, start=smaller)  # an earlier run's result is a start, as its points are
    X_p, y_p = r.X_p, r.y_p
    drawn = np.random.default_rng(3).choice(len(y), size=8, replace=False)
    problem = Problem(warm._family(), X, y, X_val, y_val, 0.0, 1.0)
    X_i, pad = padded(problem, start[0], start[1], 1 - y[drawn[4:]], "batch")
    measures = lambda result: (result.validation_error_poisoned, result.validation_loss_poisoned)  # noqa: E731
    if r.inert:   # the run drops the features no row uses (live_features), padded here does not: rounding apart
        assert r.inert == 4 and measures(r) == pytest.approx(measures(pad), rel=1e-9)
        np.testing.assert_array_equal(X_p, X_i)
        assert measures(f)[0] < measures(pad)[0] or measures(f)[1] < measures(pad)[1]
    else:   # the rule of Poisoning._crafted: at least as good on both, or clearly more misclassified
        from transferlab.attacks.poisoning.attack import REPLACE_FRACTION, REPLACE_POINTS
        margin = max(REPLACE_POINTS / len(y_val), REPLACE_FRACTION)
        assert (measures(r)[0] >= measures(pad)[0] and measures(r)[1] >= measures(pad)[1]) \
            or measures(r)[0] >= measures(pad)[0] + margin
        assert measures(r)[0] >= measures(f)[0]
    if r.from_start and not r.inert:  # the given points started the first rows (labels kept), the draw the rest
        np.testing.assert_array_equal(r.X_start[:4], start[0])
        np.testing.assert_array_equal(r.X_start[4:], X[drawn[4:]])
        assert r.initial_indices.tolist() == [-1] * 4 + drawn[4:].tolist()
        assert np.array_equal(y_p, np.r_[start[1], 1 - y[drawn[4:]]])
    if not r.from_start:
        np.testing.assert_array_equal(X_p, f.X_p)
    assert r.retrainings > f.retrainings
    for bad, match in [((start[0][:, :5], start[1]), "features"), ((start[0], start[1][:3]), "labels"),
                       ((np.vstack([start[0]] * 3), np.r_[start[1], start[1], start[1]]), "more than n_points"),
                       ((start[0] + 2.0, start[1]), "box"), ((start[0], start[1] + 1), "0 or 1"),
                       (start[0], "pair")]:
        with pytest.raises(DataError, match=match):
            warm.run(X, y, X_val, y_val, start=bad)


def test_a_larger_attacker_starting_from_a_smaller_ones_points_raises_the_svm_h_curve():
    """A small case where batch mode without the stall rule, error selection, momentum and start (the presets'
    mode before) gave a white-box svm_h curve that fell from 10% to 20% poisoning (205, 225, 219 of 400 test
    points misclassified, measured once; not asserted: the path of that ascent over a kinked loss differs with the
    BLAS rounding of another CPU); the default mode, each fraction starting from the previous one's points, gives
    one that never falls; where it keeps the smaller attacker's points and places the others where the SVM ignores
    them (non-support vectors), the model is the smaller attacker's exactly."""
    s = datasets.split(datasets.load("mnist89"), n_target=60, n_surrogate=2, n_test=400, n_validation=60, seed=3)
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y

    def misclassified(X_p, y_p):
        model = models.create("svm_h").fit(np.vstack([X, X_p]), np.r_[y, y_p])
        return int(np.sum(model.predict(s.test.X) != s.test.y))

    new, start = [], None
    for n_points in (3, 6, 12):
        attack = attacks.Poisoning(surrogate="svm_h", n_points=n_points, seed=0)
        previous = start
        start = attack.run(X, y, X_val, y_val, start=start)
        new.append(misclassified(start.X_p, start.y_p))
        if start.inert:  # the smaller attacker's points kept, the rest where the SVM ignores them: the same model
            np.testing.assert_array_equal(start.X_p[:len(previous.X_p)], previous.X_p)
            assert new[-1] == new[-2]
    assert new[0] < new[1] <= new[2]


@pytest.mark.parametrize("make", [lambda: svm(100.0, "linear", tol=1e-10), lambda: RidgeFamily(10.0),
                                  lambda: RidgeFamily(300.0), lambda: svm(1.0, "rbf", gamma=0.01, tol=1e-10),
                                  lambda: LogisticFamily(10.0)],
                         ids=["svm_h", "ridge_h", "ridge_scores_inside_pm1", "svm_rbf_l", "logistic_h"])
def test_inert_points_leave_the_model_unchanged(mnist_parts, make):
    """Family.inert_points: an SVM's non-support vectors of the label, a ridge model's zero-residual points (also
    where every training score lies inside (−1, 1)), logistic regression's box corners of the largest margin —
    adding them (here to a model already poisoned by two flipped points) changes no score."""
    s = mnist_parts
    family = make()
    X = np.vstack([s.target.X, s.surrogate.X[:2]])
    y = np.r_[s.target.y, 1 - s.surrogate.y[:2]]
    params = family.fit(X, y)
    labels = np.array([0, 1, 1, 0, 1])
    inert = family.inert_points(params, s.target.X, s.target.y, labels, 0.0, 1.0)
    if isinstance(family, RidgeFamily):                               # zero residual: f(x) = ỹ exactly
        np.testing.assert_allclose(params.scores(inert), signed(labels), atol=1e-9)
    assert inert.shape == (5, 784) and inert.min() >= 0 and inert.max() <= 1
    after = family.fit(np.vstack([X, inert]), np.r_[y, labels])
    before_scores, after_scores = family.scores(params, s.test.X), family.scores(after, s.test.X)
    np.testing.assert_allclose(after_scores, before_scores, atol=1e-6 * np.abs(before_scores).max())


def test_svm_gradients_on_warm_refits_match_retraining(mnist_parts):
    """The session's gradients where the fit came from the warm active-set path and its margin solver (here a
    Schur complement against an earlier iteration's factor),
    against the directional derivative of warm refits: the same path batch mode takes, without libsvm."""
    s = mnist_parts
    for family in (svm(100.0, "linear"), svm(100.0, "rbf", gamma=0.01)):
        session = family.session(s.target.X, s.target.y, s.validation.X, s.validation.y)
        X_p, y_p = s.surrogate.X[:6], 1 - s.surrogate.y[:6]
        fit = session.fit(X_p, y_p)
        fit = session.fit(np.clip(X_p + 0.05, 0, 1), y_p, warm=fit)
        libsvm = session.libsvm_fits
        assert isinstance(fit.cache["margin_solver"][1], solvers.SchurSolver)   # solved against an older factor
        grads = session.gradients(fit)
        delta = np.random.default_rng(6).normal(size=X_p.shape)
        delta[fit.params.beta[len(s.target.X):] == 0] = 0.0
        h = 1e-4
        plus = session.validation_loss(session.fit(fit.X_p + h * delta, y_p, warm=fit))
        minus = session.validation_loss(session.fit(fit.X_p - h * delta, y_p, warm=fit))
        assert session.libsvm_fits == libsvm
        assert (plus - minus) / (2 * h) == pytest.approx(np.sum(grads * delta), rel=1e-3, abs=1e-7)


def assert_same_active_set_solution(got, expected, C: float, rng: np.random.Generator) -> None:
    """Two svm_dual_active_set results: the same β and b (to the solve's precision), the same free set, and
    solvers that agree on a random right-hand side."""
    np.testing.assert_allclose(got[0], expected[0], atol=1e-7 * C)
    assert got[1] == pytest.approx(expected[1], abs=1e-7 * C)
    np.testing.assert_array_equal(got[2], expected[2])
    rhs = rng.normal(size=expected[2].size + 1)
    solved = expected[3].solve(rhs)
    np.testing.assert_allclose(got[3].solve(rhs), solved, rtol=1e-6, atol=1e-8 * np.abs(solved).max())


@pytest.mark.parametrize("rows", [8, 24, 10 ** 6], ids=["schur_8", "schur_default", "schur_always"])
@pytest.mark.parametrize("make", [lambda: svm(100.0, "linear"), lambda: svm(100.0, "rbf", gamma=0.01),
                                  lambda: svm(1.0, "rbf", gamma=0.01)], ids=["svm_h", "svm_rbf_h", "svm_rbf_l"])
def test_active_set_schur_iterations_reach_the_refactored_optimum(mnist_parts, make, rows, monkeypatch):
    """The active-set solve whose iterations solve against the last factor by a Schur complement
    (:class:`~transferlab.attacks.poisoning.solvers.SchurSolver`) reaches the same optimum, free set and
    margin-system solutions as the one that re-factors at every iteration (SCHUR_ROWS = 0), at every step of a
    path of moving poisoning points, warm-started from the previous step."""
    s = mnist_parts
    family = make()
    X_tr, y_tr = s.target.X, s.target.y
    X_p, y_p = s.surrogate.X[:8].copy(), 1 - s.surrogate.y[:8]
    session = family.session(X_tr, y_tr, s.validation.X, s.validation.y)
    beta, rng, schur_used = session.fit(X_p, y_p).params.beta, np.random.default_rng(4), False
    yt = signed(np.r_[y_tr, y_p])
    for step in range(6):
        X_p = np.clip(X_p + 0.3 * rng.normal(size=X_p.shape), 0, 1)
        K = session.fit(X_p, y_p).cache["K"]
        monkeypatch.setattr(solvers, "SCHUR_ROWS", 0)
        dense = solvers.svm_dual_active_set(K, yt, family.C, yt * beta)
        monkeypatch.setattr(solvers, "SCHUR_ROWS", rows)
        schur = solvers.svm_dual_active_set(K, yt, family.C, yt * beta)
        assert dense is not None and schur is not None and isinstance(dense[3], solvers.BorderedSolver)
        schur_used |= isinstance(schur[3], solvers.SchurSolver)
        assert_same_active_set_solution(schur, dense, family.C, rng)
        beta = dense[0]
    assert schur_used


def test_bordered_solver_leading_block_solves_the_leading_system():
    """BorderedSolver.leading(m) solves the bordered system of K_SS's leading m×m block from the same factor."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(9, 20))
    K = A @ A.T
    whole = solvers.BorderedSolver(K)
    for m in (1, 4, 9):
        rhs = rng.normal(size=m + 1)
        np.testing.assert_allclose(whole.leading(m).solve(rhs), solvers.BorderedSolver(K[:m, :m]).solve(rhs),
                                   rtol=1e-10, atol=1e-12)
    assert whole.leading(0) is None
    assert solvers.BorderedSolver(np.ones((3, 3))).leading(2) is None       # singular: no factor to share


def test_schur_columns_moved_to_a_new_matrix_keep_only_unchanged_rows():
    """Moving the border columns to a matrix whose rows after ``fixed`` changed keeps the columns of the asked-for
    rows before it (and the ones vector), each still K_B·j (e_r inside B) with Z = K_BB⁻¹ U and M = Uᵀ Z, and
    drops the changed rows' columns."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(12, 30))
    K1 = A @ A.T
    A2 = A.copy()
    A2[9:] = rng.normal(size=(3, 30))                               # rows 9..11 move (the poisoning rows)
    K2 = A2 @ A2.T
    B = np.array([0, 2, 3, 5, 6])
    columns = solvers.SchurColumns(solvers.BorderedSolver(K1[np.ix_(B, B)]), B, K1)
    columns.pick(np.array([1, 4, 3, 9, 10, -1]))
    moved = columns.moved(K2, 9, np.array([4, 3, 9, 7]))
    assert sorted(moved.ids.tolist()) == [-1, 3, 4]
    for at, row in enumerate(moved.ids):
        expected = np.ones(B.size) if row == -1 else (np.eye(12)[B, row] if row in B else K2[B, row])
        np.testing.assert_allclose(moved.U[:, at], expected, atol=1e-12)
    np.testing.assert_allclose(K1[np.ix_(B, B)] @ moved.Z, moved.U, atol=1e-9)
    np.testing.assert_allclose(moved.M, moved.U.T @ moved.Z, atol=1e-9)
    U, Z, M = moved.pick(np.array([10, 4]))                           # a changed row's column, computed anew
    np.testing.assert_allclose(U[:, 0], K2[B, 10], atol=1e-12)
    np.testing.assert_allclose(M, U.T @ Z, atol=1e-9)


@pytest.mark.parametrize("make", [lambda: svm(100.0, "linear", tol=1e-10), lambda: svm(1.0, "rbf", gamma=0.01,
                                                                                  tol=1e-10)],
                         ids=["svm_h", "svm_rbf_l"])
def test_svm_session_refits_with_fewer_poisoning_rows_match_a_fresh_session(mnist_parts, make):
    """A session whose carried block holds the columns of poisoning rows refits with fewer rows (one and several
    fewer): the carried columns of rows that are gone are dropped, and the fit is a fresh session's."""
    s = mnist_parts
    family = make()
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    rng = np.random.default_rng(2)
    for fewer in (1, 4):
        session = family.session(X, y, X_val, y_val)
        X_p, y_p = np.clip(s.surrogate.X[:8] + 0.05, 0, 1), 1 - s.surrogate.y[:8]
        fit = session.fit(X_p, y_p)
        for _ in range(3):
            X_p = np.clip(X_p + 0.05 * rng.normal(size=X_p.shape), 0, 1)
            fit = session.fit(X_p, y_p, warm=fit)
        smaller = session.fit(X_p[:8 - fewer], y_p[:8 - fewer])
        fresh = family.session(X, y, X_val, y_val).fit(X_p[:8 - fewer], y_p[:8 - fewer])
        assert smaller.cache["margin_solver"] is not None                  # the exact solve, not libsvm's alone
        np.testing.assert_allclose(smaller.params.beta, fresh.params.beta, atol=1e-9 * family.C)
        assert session.validation_loss(smaller) == pytest.approx(session.validation_loss(fresh), rel=1e-9)


@pytest.mark.parametrize("make", [lambda: svm(100.0, "linear"), lambda: svm(100.0, "rbf", gamma=0.01),
                                  lambda: svm(1.0, "rbf", gamma=0.01)], ids=["svm_h", "svm_rbf_h", "svm_rbf_l"])
def test_active_set_from_a_carried_block_reaches_the_refactored_optimum(mnist_parts, make):
    """The active-set solve that starts from a factor of clean rows carried from the previous solve
    (:class:`~transferlab.attacks.poisoning.solvers.FixedBlock`; the poisoning rows' kernel values differ from
    one solve to the next) reaches the optimum, free set and margin-system solutions of the one that factors its
    own free set, at every step of a path of moving poisoning points; the block is used and stays on clean rows."""
    s = mnist_parts
    family = make()
    X_tr, y_tr = s.target.X, s.target.y
    n = len(X_tr)
    X_p, y_p = s.surrogate.X[:8].copy(), 1 - s.surrogate.y[:8]
    session = family.session(X_tr, y_tr, s.validation.X, s.validation.y)
    beta, rng = session.fit(X_p, y_p).params.beta, np.random.default_rng(4)
    yt = signed(np.r_[y_tr, y_p])
    block, carried = solvers.FixedBlock(n), 0
    for step in range(8):
        X_p = np.clip(X_p + 0.1 * rng.normal(size=X_p.shape), 0, 1)
        K = session.fit(X_p, y_p).cache["K"]
        own = solvers.svm_dual_active_set(K, yt, family.C, yt * beta)
        before = block.columns
        from_block = solvers.svm_dual_active_set(K, yt, family.C, yt * beta, block=block)
        assert own is not None and from_block is not None
        assert block.columns is not None and block.columns.B.max() < n
        if before is not None and block.columns.base is before.base:
            carried += 1                                              # solved against the carried factor
        assert_same_active_set_solution(from_block, own, family.C, rng)
        beta = own[0]
    assert carried >= 4


@pytest.mark.parametrize("name", ["svm_h", "svm_rbf_h", "logistic_h", "ridge_l"])
def test_features_zero_in_every_row_get_zero_gradients(mnist_parts, name):
    """The identity the attack's column reduction rests on (:func:`live_features`): where a feature is 0 in every
    training, validation and poisoning row, every family's implicit gradient is exactly 0 — by the session and by
    the family's own fit alike."""
    s = mnist_parts
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    dead = ~np.any(np.vstack([X, X_val]) != 0, axis=0)
    assert 100 < dead.sum() < 600                                     # the embedded digits' border pixels
    family = family_for(models.create(name))
    X_p = np.clip(X[:5] + 0.1, 0.0, 1.0)
    X_p[:, dead] = 0.0
    y_p = 1 - y[:5]
    session = family.session(X, y, X_val, y_val)
    grads = session.gradients(session.fit(X_p, y_p))
    XA, yA = np.vstack([X, X_p]), np.r_[y, y_p]
    direct = family.gradients(family.fit(XA, yA), XA, yA, np.arange(len(X), len(XA)), X_val, y_val)
    for g in (grads, direct):
        assert np.abs(g).max() > 0 and np.all(g[:, dead] == 0)


@pytest.mark.parametrize("name", ["svm_h", "svm_rbf_h", "logistic_h", "ridge_l"])
def test_the_attack_on_the_live_features_is_the_attack_on_all(mnist_parts, name):
    """``Poisoning.run`` drops the features that are 0 in every row and puts them back as 0: the points, the
    validation losses and errors of every step are the batch ascent's on all features, to rounding (the BLAS
    products sum fewer zeros)."""
    from transferlab.attacks.poisoning.strategies import Problem, batch

    s = mnist_parts
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    dead = ~np.any(np.vstack([X, X_val]) != 0, axis=0)
    attack = attacks.Poisoning(surrogate=name, n_points=6, seed=3, max_steps=12)
    r = attack.run(X, y, X_val, y_val)
    assert np.all(r.X_p[:, dead] == 0) and np.all(r.X_start[:, dead] == 0) and r.X_p.shape == (6, X.shape[1])
    st = attack.settings
    problem = Problem(attack._family(), X, y, X_val, y_val, 0.0, 1.0)
    drawn = r.initial_indices
    full, result = batch(problem, X[drawn].copy(), 1 - y[drawn], drawn, max_step=0.25 * np.sqrt(X.shape[1]),
                         max_steps=12, grid=st.grid, tol=st.tol, stall=st.stall, keep=st.keep, momentum=st.momentum,
                         stall_error=st.stall_error, growth=st.growth)
    assert np.all(full[:, dead] == 0)
    np.testing.assert_allclose(r.X_p, full, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.history, result.history, rtol=1e-9)
    np.testing.assert_array_equal(r.error_history, result.error_history)
    assert r.retrainings == result.retrainings


@pytest.mark.parametrize("name", ["logistic_l", "logistic_h", "ridge_l", "svm_h"])
def test_inert_points_leave_unused_features_at_zero(mnist_parts, name):
    """The padded candidate (the given points plus inert ones) is the same on all features as on the live ones:
    the inert points keep 0 where no row uses a feature (logistic: a feature of weight 0 takes the box's value
    nearest 0, not a corner), so run(start=...) keeps the same points with the column reduction."""
    from transferlab.attacks.poisoning.attack import live_features, widened
    from transferlab.attacks.poisoning.strategies import Problem, padded

    s = mnist_parts
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    family = family_for(models.create(name))
    X_s, y_s = np.clip(X[:4] + 0.05, 0.0, 1.0), 1 - y[:4]
    live = live_features(0.0, 1.0, X, X_val)
    X_s[:, np.setdiff1d(np.arange(X.shape[1]), live)] = 0.0            # start points on the used features
    labels = np.array([0, 0, 1, 0])
    full, f = padded(Problem(family, X, y, X_val, y_val, 0.0, 1.0), X_s, y_s, labels, "batch")
    cut, c = padded(Problem(family, X[:, live], y, X_val[:, live], y_val, 0.0, 1.0), X_s[:, live], y_s, labels,
                    "batch")
    np.testing.assert_allclose(full, widened(cut, live, X.shape[1]), rtol=0, atol=1e-12)   # ridge: rounding apart
    assert np.all(np.delete(full, live, axis=1) == 0)
    assert f.validation_loss_poisoned == pytest.approx(c.validation_loss_poisoned, rel=1e-9)
    assert f.validation_error_poisoned == c.validation_error_poisoned


def test_svm_session_fit_keeps_its_own_copy_of_the_poisoning_rows(mnist_parts):
    """A fit's model does not change when the caller changes the poisoning rows it was given, in place."""
    s = mnist_parts
    for family in (svm(100.0, "linear"), svm(100.0, "rbf", gamma=0.01)):
        session = family.session(s.target.X, s.target.y, s.validation.X, s.validation.y)
        X_p, y_p = s.surrogate.X[:5].copy(), 1 - s.surrogate.y[:5]
        fit = session.fit(X_p, y_p)
        same = family.session(s.target.X, s.target.y, s.validation.X, s.validation.y).fit(X_p.copy(), y_p)
        X_p += 0.5                                                   # before the fit's rows are first used
        np.testing.assert_allclose(family.scores(fit.params, s.test.X), family.scores(same.params, s.test.X),
                                   rtol=0, atol=1e-12)


def test_live_features():
    """The columns some row uses; None where all are used or 0 lies outside the box (a clip would move it)."""
    from transferlab.attacks.poisoning.attack import live_features, widened

    A = np.array([[0.0, 0.5, 0.0, 0.0], [0.0, 0.2, 0.0, 0.0]])
    B = np.array([[0.0, 0.0, 0.0, 0.3]])
    start = np.array([[0.0, 0.0, 0.1, 0.0]])
    assert live_features(0.0, 1.0, A, B).tolist() == [1, 3]
    assert live_features(0.0, 1.0, A, B, start).tolist() == [1, 2, 3]       # a given start point's features count
    assert live_features(-1.0, 1.0, A, B).tolist() == [1, 3]
    assert live_features(0.1, 1.0, A, B) is None
    assert live_features(-1.0, -0.1, A, B) is None
    assert live_features(0.0, 1.0, A + 0.1, B) is None
    assert live_features(0.0, 1.0, np.zeros((3, 4)), np.zeros((2, 4))) is None      # no feature used: all kept
    np.testing.assert_array_equal(widened(np.array([[2.0, 3.0]]), np.array([1, 3]), 4), [[0.0, 2.0, 0.0, 3.0]])


def test_start_points_with_features_the_data_lack_keep_them(mnist_parts, monkeypatch):
    """A start point may use a feature no training or validation row uses: that feature stays in the attack, and
    the result is in the full feature space."""
    from transferlab.attacks.poisoning import attack as attack_module

    s = mnist_parts
    X, y, X_val, y_val = s.target.X, s.target.y, s.validation.X, s.validation.y
    dead = np.flatnonzero(~np.any(np.vstack([X, X_val]) != 0, axis=0))
    X_s = X[:2].copy()
    X_s[:, dead[:3]] = 0.7
    original, used = attack_module.live_features, []

    def spy(*args):
        used.append(original(*args))
        return used[-1]

    monkeypatch.setattr(attack_module, "live_features", spy)
    r = attacks.Poisoning(surrogate="svm_rbf_h", n_points=4, seed=0, max_steps=5).run(X, y, X_val, y_val,
                                                                                      start=(X_s, 1 - y[:2]))
    assert len(used) == 1 and set(dead[:3]) <= set(used[0]) and not set(dead[3:]) & set(used[0])
    assert r.X_p.shape == (4, X.shape[1]) and np.all(r.X_p[:, dead[3:]] == 0)

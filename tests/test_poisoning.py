import numpy as np
import pytest

from transferlab import attacks, datasets, models
from transferlab.attacks.poisoning_gradients import (Family, GenericFamily, LogisticFamily, RidgeFamily, SVMFamily,
                                                     logistic_objectives, ridge_objectives, signed)
from transferlab.errors import DataError


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
    analytic = family.gradient(params, X, y, c, X_val, y_val)
    numeric = retrain_finite_difference(family, X, y, c, X_val, y_val)
    np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=5e-3 * np.abs(numeric).max())  # lbfgs tolerance


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_svm_implicit_gradient_matches_retraining_for_support_vectors(problem, kernel):
    family = SVMFamily(1.0, kernel, gamma=0.5, tol=1e-7)
    checked = set()
    for s in np.linspace(-2, 2, 161):  # move the point across the boundary: error vector, then margin vector
        x_c = np.r_[s, 0.2, -0.1, 0.3, 0.05]
        X, y, X_val, y_val, c = with_point(problem, x_c, 1)
        params = family.fit(X, y)
        alpha = abs(params.beta[c])
        kind = "error" if alpha > 0.999 else "margin" if 0.05 < alpha < 0.95 else None
        if kind is None or kind in checked:
            continue
        analytic = family.gradient(params, X, y, c, X_val, y_val)
        numeric = retrain_finite_difference(family, X, y, c, X_val, y_val)
        np.testing.assert_allclose(analytic, numeric, rtol=5e-2, atol=2e-3 * np.abs(numeric).max())
        checked.add(kind)
    assert "error" in checked
    if kernel == "rbf":
        assert "margin" in checked


def test_svm_gradient_for_a_non_support_vector_is_the_own_hinge_direction(problem):
    family = SVMFamily(1.0, "linear", tol=1e-7)
    X, y, X_val, y_val, c = with_point(problem, np.array([4.0, 0, 0, 0, 0]), 1)  # deep inside class 1
    params = family.fit(X, y)
    assert params.beta[c] == 0
    grad = family.gradient(params, X, y, c, X_val, y_val)
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
    np.testing.assert_allclose(generic.gradient(params, X, y, c, X_val, y_val),
                               closed.gradient(params, X, y, c, X_val, y_val), rtol=1e-7, atol=1e-12)


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
def test_poisoning_raises_validation_loss_and_test_error(mnist_parts, name):
    s = mnist_parts
    attack = attacks.Poisoning(surrogate=name, n_points=20, max_passes=1, max_iter=3, seed=0)
    X_p, y_p = attack.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    r = attack.result_
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
    X_p, y_p = attack.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    assert X_p.shape == (2, 784)
    digits = datasets.load("digits")
    with pytest.raises(DataError, match="binary"):
        attacks.Poisoning(n_points=2).run(digits.X[:50], digits.y[:50], digits.X[50:80], digits.y[50:80])
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match="poisoning surrogates"):
        attacks.Poisoning(surrogate="rf_h", n_points=2).run(s.target.X, s.target.y, s.validation.X, s.validation.y)


def test_signed_labels():
    assert signed(np.array([0, 1])).tolist() == [-1.0, 1.0]


# ---- batched gradients and batch mode --------------------------------------------------------------------------

from scipy.special import expit  # noqa: E402

from transferlab.attacks.poisoning_gradients import logistic_newton, regularised_solver  # noqa: E402


@pytest.fixture(scope="module")
def poisoned_problem(problem):
    """The small problem with four poisoning points appended (indices n … n + 3)."""
    X, y, X_val, y_val = problem
    rng = np.random.default_rng(3)
    X_p = np.vstack([[0.4, -0.3, 0.2, 0.1, -0.5], [-0.2, 0.1, 0.0, 0.3, 0.2], [1.5, 0.2, -0.1, 0.3, 0.05],
                     rng.normal(size=5)])
    y_p = np.array([0, 1, 0, 1])
    return X, y, X_p, y_p, X_val, y_val


BATCH_FAMILIES = {
    "logistic_C1": lambda: LogisticFamily(1.0), "logistic_C10": lambda: LogisticFamily(10.0),
    "ridge_a1": lambda: RidgeFamily(1.0), "svm_linear": lambda: SVMFamily(1.0, "linear", tol=1e-7),
    "svm_rbf": lambda: SVMFamily(1.0, "rbf", gamma=0.5, tol=1e-7),
    "svm_rbf_C100": lambda: SVMFamily(100.0, "rbf", gamma=0.5, tol=1e-7),
    "generic_logistic": lambda: GenericFamily(LogisticFamily(1.0), *logistic_objectives(1.0)),
}


@pytest.mark.parametrize("make", BATCH_FAMILIES.values(), ids=BATCH_FAMILIES.keys())
def test_batched_gradients_equal_the_per_point_gradients(poisoned_problem, make):
    X, y, X_p, y_p, X_val, y_val = poisoned_problem
    family = make()
    XA, yA = np.vstack([X, X_p]), np.r_[y, y_p]
    indices = np.arange(len(X), len(XA))
    params = family.fit(XA, yA)
    per_point = np.stack([family.gradient(params, XA, yA, c, X_val, y_val) for c in indices])
    assert np.abs(per_point).max() > 0
    batched = family.gradients(params, XA, yA, indices, X_val, y_val)
    np.testing.assert_allclose(batched, per_point, rtol=1e-9, atol=1e-12 * np.abs(per_point).max())
    # the session (cached Gram/kernel matrices, dual solves; SVMs: the exact optimum where libsvm stops at its
    # tolerance 1e-7) gives the same model, loss and gradients
    session = family.session(X, y, X_val, y_val)
    fit = session.fit(X_p, y_p)
    assert session.validation_loss(fit) == pytest.approx(family.validation_loss(params, X_val, y_val), rel=1e-6)
    np.testing.assert_allclose(session.gradients(fit), per_point, rtol=1e-5, atol=1e-6 * np.abs(per_point).max())
    # a subset of the indices, in any order, gives the corresponding rows
    np.testing.assert_allclose(family.gradients(params, XA, yA, indices[[2, 0]], X_val, y_val), per_point[[2, 0]],
                               rtol=1e-9, atol=1e-12 * np.abs(per_point).max())


def test_svm_batch_covers_error_margin_and_non_support_points(poisoned_problem):
    X, y, X_p, y_p, X_val, y_val = poisoned_problem
    family = SVMFamily(1.0, "rbf", gamma=0.5, tol=1e-7)
    alpha = np.abs(family.fit(np.vstack([X, X_p]), np.r_[y, y_p]).beta[len(X):])
    assert (alpha > 0.999).any() and ((alpha > 1e-6) & (alpha < 0.999)).any()   # error and margin vectors
    alpha = np.abs(SVMFamily(1.0, "linear", tol=1e-7).fit(np.vstack([X, X_p]), np.r_[y, y_p]).beta[len(X):])
    assert (alpha == 0).any()                                                    # and a non-support vector


@pytest.mark.parametrize("make", [lambda: LogisticFamily(1.0), lambda: RidgeFamily(1.0),
                                  lambda: SVMFamily(1.0, "rbf", gamma=0.5, tol=1e-9),
                                  lambda: SVMFamily(0.1, "linear", tol=1e-9)],   # fewer than d + 1 margin vectors
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


@pytest.mark.parametrize("make", [lambda: RidgeFamily(10.0), lambda: SVMFamily(100.0, "linear", tol=1e-10),
                                  lambda: SVMFamily(0.01, "linear", tol=1e-10),
                                  lambda: SVMFamily(1.0, "rbf", gamma=0.01, tol=1e-10),
                                  lambda: SVMFamily(100.0, "rbf", gamma=0.01, tol=1e-10)],
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
    s = mnist_parts
    attack = attacks.Poisoning(surrogate=name, n_points=20, mode="batch", max_steps=30, seed=0)
    X_p, y_p = attack.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    r = attack.result_
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
    again = attacks.Poisoning(surrogate=name, n_points=20, mode="batch", max_steps=30, seed=0)
    X_again, y_again = again.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    assert np.array_equal(X_again, X_p) and np.array_equal(y_again, y_p)


def test_batch_poisoning_with_a_generic_session_and_confident_start(mnist_parts):
    s = mnist_parts
    X, y, X_val, y_val = s.target.X[:60], s.target.y[:60], s.validation.X[:40], s.validation.y[:40]
    attack = attacks.Poisoning(surrogate="logistic_l", n_points=4, mode="batch", max_steps=3, init="confident")
    generic = GenericFamily(LogisticFamily(0.01), *logistic_objectives(0.01))
    attack._family = lambda: generic                                 # the generic Session (no caches)
    X_p, _ = attack.run(X, y, X_val, y_val)
    fast = attacks.Poisoning(surrogate="logistic_l", n_points=4, mode="batch", max_steps=3, init="confident")
    X_fast, _ = fast.run(X, y, X_val, y_val)
    np.testing.assert_allclose(X_p, X_fast, atol=1e-6)
    family = LogisticFamily(0.01)
    margins = signed(y) * family.scores(family.fit(X, y), X)
    assert set(attack.result_.initial_indices) == set(np.argsort(-margins)[:4])


def test_poisoning_modes_and_starts_are_checked():
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match="mode"):
        attacks.Poisoning(mode="parallel")
    with pytest.raises(ConfigError, match="init"):
        attacks.Poisoning(init="worst")


def test_sequential_mode_is_the_default_and_keeps_its_random_start(mnist_parts):
    s = mnist_parts
    attack = attacks.Poisoning(surrogate="ridge_h", n_points=3, max_passes=1, max_iter=1, seed=4)
    attack.run(s.target.X, s.target.y, s.validation.X, s.validation.y)
    assert attack.result_.mode == "sequential" and attack.result_.history is None
    expected = np.random.default_rng(4).choice(len(s.target.y), size=3, replace=False)
    assert np.array_equal(attack.result_.initial_indices, expected)

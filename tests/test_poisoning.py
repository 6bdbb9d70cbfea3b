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

import numpy as np
import pytest
import torch

from conftest import FAST
from transferlab import attacks, datasets, models
from transferlab.errors import ConfigError

DIFFERENTIABLE = [n for n, s in models.MODELS.items() if s.factory is not models.RandomForest]


@pytest.fixture(scope="module")
def fitted(small_split):
    return {name: models.create(name, **FAST.get(name, {})).fit(small_split.target.X, small_split.target.y)
            for name in models.MODELS}


def exact_linear_optimum(w, x0, eps, lb=0.0, ub=1.0):
    """argmax of w·x over ‖x − x0‖₂ ≤ ε ∩ [lb, ub]: x(t) = clip(x0 + t w), t found by bisection on the norm."""
    lo, hi = np.zeros(len(x0)), np.full(len(x0), 1e6)
    for _ in range(200):
        mid = (lo + hi) / 2
        ok = np.linalg.norm(np.clip(x0 + mid[:, None] * w, lb, ub) - x0, axis=1) <= eps
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return np.clip(x0 + lo[:, None] * w, lb, ub)


@pytest.mark.parametrize("name", ["logistic_l", "svm_h", "ridge_h"])
def test_line_search_reaches_the_exact_optimum_on_linear_models(fitted, small_split, name):
    model = fitted[name]
    X, y = small_split.test.X[:50], small_split.test.y[:50]
    w = model.coef_[1].cpu().numpy() - model.coef_[0].cpu().numpy()
    ascent = np.where(y == 1, -1.0, 1.0)[:, None] * w  # ∇ of the margin loss −ỹ f(x)
    for eps in (0.5, 2.0):
        attack = attacks.PGDLineSearch(norm=2, eps=eps, lb=0.0, ub=1.0)
        attack.run(model, X, y)
        best = model.loss(exact_linear_optimum(ascent, X, eps), y)
        gain_best = best - attack.result_.objective_start
        gain = attack.result_.objective - attack.result_.objective_start
        assert np.all(gain >= 0.99 * gain_best - 1e-9)


ATTACKS = [
    attacks.PGDLineSearch(norm=2, eps=1.5, max_iter=30),
    attacks.PGDLineSearch(norm="inf", eps=0.1, max_iter=20),
    attacks.PGDLineSearch(norm=1, eps=3.0, max_iter=20),
    attacks.PGD(norm=2, eps=1.5, steps=10, random_start=True),
    attacks.FGSM(norm="inf", eps=0.1),
    attacks.MIFGSM(norm=2, eps=1.5, steps=5),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: f"{type(a).__name__}-{a.norm}")
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_outputs_satisfy_constraints_and_objective_never_decreases(fitted, small_split, name, attack):
    model = fitted[name]
    X, y = small_split.test.X[:20], small_split.test.y[:20]
    X_adv = attack.run(model, X, y)
    x0 = torch.as_tensor(X)
    assert bool(attack.domain.contains(torch.as_tensor(X_adv), x0, tol=1e-6).all())
    r = attack.result_
    if isinstance(attack, (attacks.PGDLineSearch, attacks.PGD)):
        assert np.all(r.objective >= r.objective_start - 1e-9)
    assert r.x_adv.shape == X.shape and r.iterations.shape == (20,) and np.all(r.perturbation_norm <= attack.eps * (1 + 1e-9))


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_white_box_error_grows_with_eps(fitted, small_split, name):
    model = fitted[name]
    curve = attacks.security_curve(attacks.PGDLineSearch(norm=2, max_iter=30), model, small_split.test.X,
                                   small_split.test.y, eps=[0, 0.5, 1.0, 2.0, 3.0], warm_start=True)
    assert all(b >= a for a, b in zip(curve.error, curve.error[1:])), curve.error
    assert curve.error[-1] > curve.error[0] + 0.3


@pytest.mark.parametrize("name", ["logistic_h", "svm_rbf_h", "nn_h"])
def test_batch_equals_rows_one_at_a_time(fitted, small_split, name):
    """Each point's attack depends on that point only. (Bitwise equality is not expected: BLAS sums in another
    order for another batch size, and a near-tie in the line search may then pick another step of equal value.)"""
    model = fitted[name]
    X, y = small_split.test.X[:6], small_split.test.y[:6]
    attack = attacks.PGDLineSearch(norm=2, eps=1.0, max_iter=20)
    attack.run(model, X, y)
    whole = attack.result_.objective
    rows = []
    for i in range(6):
        attack.run(model, X[i:i + 1], y[i:i + 1])
        rows.append(attack.result_.objective[0])
    np.testing.assert_allclose(whole, rows, rtol=1e-4, atol=1e-6)


def test_double_init_keeps_the_better_run(fitted, small_split):
    model = fitted["nn_h"]
    X, y = small_split.test.X[:30], small_split.test.y[:30]
    single = attacks.PGDLineSearch(norm=2, eps=1.0, max_iter=20)
    single.run(model, X, y)
    double = attacks.PGDLineSearch(norm=2, eps=1.0, max_iter=20, double_init=True)
    X_adv = double.run(model, X, y)
    assert np.all(double.result_.objective >= single.result_.objective - 1e-9)
    assert bool(double.domain.contains(torch.as_tensor(X_adv), torch.as_tensor(X)).all())


def test_targeted_attack_on_multiclass_problem():
    digits = datasets.load("digits")
    model = models.create("logistic_h").fit(digits.X[:500], digits.y[:500])
    X = digits.X[500:560]
    target = (model.predict(X) + 1) % 10
    attack = attacks.PGDLineSearch(norm=2, eps=3.0, objective=attacks.Objective("margin", targeted=True))
    attack.run(model, X, target)
    assert attack.result_.success.mean() > 0.5
    assert np.mean(model.predict(attack.result_.x_adv) == target) == attack.result_.success.mean()


def test_l1_feature_addition_on_binary_features():
    rng = np.random.default_rng(0)
    X = (rng.random((200, 40)) < 0.3).astype(float)
    y = (X[:, :20].sum(1) > X[:, 20:].sum(1)).astype(int)
    model = models.create("svm_l", C=1.0).fit(X, y)
    malicious = X[y == 1][:20]
    attack = attacks.PGDLineSearch(norm=1, eps=5, constraints=(attacks.FeatureAdditionOnly(), attacks.Binary()))
    X_adv = attack.run(model, malicious, np.ones(20, dtype=int))
    assert set(np.unique(X_adv)) <= {0.0, 1.0}
    assert np.all(X_adv >= malicious) and np.all((X_adv - malicious).sum(1) <= 5)
    assert np.all(attack.result_.objective >= attack.result_.objective_start)
    assert attack.result_.objective.mean() > attack.result_.objective_start.mean()


def test_bad_budget_and_norm_are_clear_errors():
    with pytest.raises(ConfigError, match="negative"):
        attacks.PGDLineSearch(eps=-1)
    with pytest.raises(ConfigError, match="norm"):
        attacks.PGD(norm=3)


def test_forest_cannot_be_attacked_white_box(fitted, small_split):
    with pytest.raises(models.NotDifferentiableError):
        attacks.PGDLineSearch(eps=1.0).run(fitted["rf_h"], small_split.test.X[:5], small_split.test.y[:5])

import numpy as np
import pytest
import torch

from transferlab import attacks, datasets, models
from transferlab.errors import ConfigError

DIFFERENTIABLE = [n for n, s in models.MODELS.items() if s.factory is not models.RandomForest]


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


def _stuck_toy():
    """A 2-D problem where Algorithm 1 from x0 gets stuck: a class-1 outlier at (1, 0) inside a ring of class-0
    points makes a bump of the RBF SVM's score that stays below 0 (C = 1 caps its dual coefficient). From the
    class-0 point (1, 0.25) the gradient points down the bump's slope (along −y), and the line search follows it past
    the bump to the edge of the ℓ2 ball (ε = 2), where the score is the SVM's bias (about −0.73, far from every
    support vector): a local maximum within Φ, still class 0. The class-1 cluster around (−1.5, 0) lies 2.5 away in
    another direction. (A fixed jitter keeps the pool points from tying in their scores.)"""
    ring = [(1 + 0.5 * np.cos(a), 0.5 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    field = [(x, y) for x in (0.0, 1.0, 2.0) for y in (-1.0, 1.0)]
    cluster = [(-1.5, 0.0), (-1.5, 0.2), (-1.3, -0.1), (-1.7, -0.15)]
    X = np.array(ring + field + [(1.0, 0.0)] + cluster) + np.random.default_rng(0).uniform(-0.02, 0.02, (19, 2))
    y = np.r_[np.zeros(len(ring) + len(field), dtype=int), np.ones(1 + len(cluster), dtype=int)]
    return X, y, models.create("svm_rbf_l", C=1.0, gamma=2.0).fit(X, y)


def test_double_init_starts_from_the_source_models_most_confident_training_point_of_another_class():
    """The paper's second start for nonlinear models: Π_Φ of the source model's own training point that it scores
    most confidently in another class than the attacked point's label (the largest margin loss A(p, y) over the
    training points p; A = f_1 − f_0 for y = 0 and f_0 − f_1 for y = 1), and the better of the two runs is kept."""
    X_train, y_train, model = _stuck_toy()
    X = np.array([[1.0, 0.25], [-1.4, 0.05]])  # a class-0 point by the bump, and a class-1 point in the cluster
    y = np.array([0, 1])
    # the definition, computed here from scikit-learn's own scores of the fitted SVC
    f = model.estimator_.decision_function(X_train)
    margin_loss = np.where(y[:, None] == 0, f[None, :], -f[None, :])    # A(p, y) for each (attacked point, p)
    ranked = np.argsort(-margin_loss, axis=1)
    assert np.all(margin_loss[[0, 1], ranked[:, 0]] > margin_loss[[0, 1], ranked[:, 1]] + 1e-5)  # no near-tie
    settings = dict(norm=2, eps=2.0, lb=None, ub=None, max_iter=50)
    single = attacks.PGDLineSearch(**settings)
    single.run(model, X, y)
    double = attacks.PGDLineSearch(**settings, double_init=True)
    double.run(model, X, y, init_pool=X_train)
    # run(init=p) projects p onto Φ, as double init does: the first point's pool point lies beyond ε (its start
    # is a projection onto the ball), the second's inside
    distance = np.linalg.norm(X_train[ranked[:, 0]] - X, axis=1)
    assert distance[0] > settings["eps"] > distance[1]
    from_pool = attacks.PGDLineSearch(**settings)
    from_pool.run(model, X, y, init=X_train[ranked[:, 0]])
    runner_up = attacks.PGDLineSearch(**settings)
    runner_up.run(model, X, y, init=X_train[ranked[:, 1]])

    # the case is built so that double init changes the result: the single start fails where the second succeeds
    assert single.result_.success.tolist() == [False, True] and double.result_.success.tolist() == [True, True]
    assert np.linalg.norm(double.result_.x_adv[0] - single.result_.x_adv[0]) > 1.0
    assert double.result_.objective[0] > single.result_.objective[0] + 1.0
    # the second start is the defined pool point: per point, the better of the run from x0 and the run from it
    second_better = from_pool.result_.objective > single.result_.objective
    np.testing.assert_allclose(double.result_.x_adv,
                               np.where(second_better[:, None], from_pool.result_.x_adv, single.result_.x_adv),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(double.result_.objective,
                               np.maximum(from_pool.result_.objective, single.result_.objective), rtol=0, atol=1e-12)
    # ... and not another one: starting from the runner-up ends elsewhere, so the check above tells them apart
    assert np.all(np.abs(runner_up.result_.x_adv - double.result_.x_adv).max(axis=1) > 1e-6)
    assert bool(double.domain.contains(torch.as_tensor(double.result_.x_adv), torch.as_tensor(X)).all())
    assert np.all(double.result_.iterations == single.result_.iterations + from_pool.result_.iterations)


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

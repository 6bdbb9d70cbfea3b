import warnings

import numpy as np
import pytest
import torch

from transferlab import attacks, datasets, models
from transferlab.errors import ConfigError, DataError

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
        r = attack.run(model, X, y)
        best = model.loss(exact_linear_optimum(ascent, X, eps), y)
        gain_best = best - r.objective_start
        gain = r.objective - r.objective_start
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
    r = attack.run(model, X, y)
    x0 = torch.as_tensor(X)
    assert bool(attack.domain.contains(torch.as_tensor(r.x_adv), x0, tol=1e-6).all())
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
    whole = attack.run(model, X, y).objective
    rows = []
    for i in range(6):
        rows.append(attack.run(model, X[i:i + 1], y[i:i + 1]).objective[0])
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
    attack = attacks.PGDLineSearch(norm=2, eps=2.0, lb=None, ub=None, max_iter=50)
    single = attack.run(model, X, y)
    curve = attacks.security_curve(attack, model, X, y, [0, 2.0], double_init=True, pool=X_train)
    assert curve.results[0] is None  # ε = 0 is never attacked
    double = curve.results[1]
    # run(init=p) projects p onto Φ, as double init does: the first point's pool point lies beyond ε (its start
    # is a projection onto the ball), the second's inside
    distance = np.linalg.norm(X_train[ranked[:, 0]] - X, axis=1)
    assert distance[0] > attack.eps > distance[1]
    from_pool = attack.run(model, X, y, init=X_train[ranked[:, 0]])
    runner_up = attack.run(model, X, y, init=X_train[ranked[:, 1]])

    # the case is built so that double init changes the result: the single start fails where the second succeeds
    assert single.success.tolist() == [False, True] and double.success.tolist() == [True, True]
    assert np.linalg.norm(double.x_adv[0] - single.x_adv[0]) > 1.0
    assert double.objective[0] > single.objective[0] + 1.0
    # the second start is the defined pool point: per point, the better of the run from x0 and the run from it
    second_better = from_pool.objective > single.objective
    np.testing.assert_allclose(double.x_adv, np.where(second_better[:, None], from_pool.x_adv, single.x_adv),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(double.objective, np.maximum(from_pool.objective, single.objective), rtol=0,
                               atol=1e-12)
    # ... and not another one: starting from the runner-up ends elsewhere, so the check above tells them apart
    assert np.all(np.abs(runner_up.x_adv - double.x_adv).max(axis=1) > 1e-6)
    assert bool(attack.domain.contains(torch.as_tensor(double.x_adv), torch.as_tensor(X)).all())
    assert np.all(double.iterations == single.iterations + from_pool.iterations)
    # the runs changed neither the attack nor each other's arrays
    np.testing.assert_array_equal(single.x_adv, attack.run(model, X, y).x_adv)
    assert curve.error == [0.0, 1.0]


def test_targeted_attack_on_multiclass_problem():
    digits = datasets.load("digits")
    model = models.create("logistic_h").fit(digits.X[:500], digits.y[:500])
    X = digits.X[500:560]
    target = (model.predict(X) + 1) % 10
    attack = attacks.PGDLineSearch(norm=2, eps=3.0, objective=attacks.Objective("margin", targeted=True))
    r = attack.run(model, X, target)
    assert r.success.mean() > 0.5
    assert np.mean(model.predict(r.x_adv) == target) == r.success.mean()


def test_security_curve_at_zero_counts_success_as_its_attack_does():
    """ε = 0 is the share of unperturbed points the attack already counts as a success, with the labels the
    attack takes (class indices), not the model's ``predict`` against them: a model fitted on digits 3 and 7 had
    every point counted as misclassified at ε = 0; a targeted attack counts the points already in the target."""
    rng = np.random.default_rng(0)
    X = rng.random((80, 5))
    labels = np.where(X[:, 0] > 0.5, 7, 3)
    model = models.create("logistic_h").fit(X, labels)
    index = np.searchsorted(model.classes_, labels)
    clean_error = float(np.mean(model.predict(X) != labels))
    assert clean_error < 0.1
    curve = attacks.security_curve(attacks.PGDLineSearch(norm=2), model, X, index, [0, 0.1])
    assert curve.error[0] == pytest.approx(clean_error, abs=1e-12)
    assert curve.error[1] >= curve.error[0]
    with pytest.raises(DataError, match=r"class labels \[3, 7\].*np.searchsorted\(model.classes_, y\)"):
        attacks.PGDLineSearch(norm=2).run(model, X, labels)
    indexed = models.create("logistic_h").fit(X, index)  # classes_ [0, 1]: float labels keep the dtype message
    with pytest.raises(DataError, match="integer labels, got shape .* dtype float64"):
        attacks.PGDLineSearch(norm=2).run(indexed, X, index.astype(float))
    targeted = attacks.PGDLineSearch(norm=2, objective=attacks.Objective("margin", targeted=True))
    target = np.ones(80, dtype=int)
    expected = float(np.mean(model.predict(X) == 7))
    assert 0.2 < expected < 0.8
    assert attacks.security_curve(targeted, model, X, target, [0]).error[0] == pytest.approx(expected, abs=1e-12)


def test_l1_feature_addition_on_binary_features():
    rng = np.random.default_rng(0)
    X = (rng.random((200, 40)) < 0.3).astype(float)
    y = (X[:, :20].sum(1) > X[:, 20:].sum(1)).astype(int)
    model = models.create("svm_l", C=1.0).fit(X, y)
    malicious = X[y == 1][:20]
    attack = attacks.PGDLineSearch(norm=1, eps=5, constraints=(attacks.FeatureAdditionOnly(), attacks.Binary()))
    r = attack.run(model, malicious, np.ones(20, dtype=int))
    assert set(np.unique(r.x_adv)) <= {0.0, 1.0}
    assert np.all(r.x_adv >= malicious) and np.all((r.x_adv - malicious).sum(1) <= 5)
    assert np.all(r.objective >= r.objective_start)
    assert r.objective.mean() > r.objective_start.mean()


def test_bad_budget_and_norm_are_clear_errors():
    with pytest.raises(ConfigError, match="negative"):
        attacks.PGDLineSearch(eps=-1)
    for bad in (float("nan"), float("inf"), "1", True, 10 ** 400):
        with pytest.raises(ConfigError, match="eps must be a finite number") as info:
            attacks.PGDLineSearch(eps=bad)
        assert "negative" not in str(info.value)
    with pytest.raises(ConfigError, match="norm"):
        attacks.PGD(norm=3)


def test_numpy_scalars_count_as_their_numbers():
    """Values computed with numpy (np.float32, np.int64) are the numbers they hold, for the budget, the
    settings and the poisoning attack's counts and box."""
    attack = attacks.PGDLineSearch(eps=np.float32(0.5), max_iter=np.int64(7))
    assert attack.eps == 0.5 and type(attack.eps) is float and attack.settings.max_iter == 7
    assert attacks.PGDLineSearch(eps=np.int64(1)).eps == 1
    poisoning = attacks.Poisoning(n_points=np.int64(3), seed=np.uint8(2), lb=np.float32(0), ub=np.float64(1),
                                  momentum=np.float32(0.5))
    assert (poisoning.n_points, poisoning.seed, poisoning.lb, poisoning.ub) == (3, 2, 0.0, 1.0)
    assert poisoning.settings.momentum == 0.5
    with pytest.raises(ConfigError, match="max_steps"):
        attacks.Poisoning(max_steps=np.bool_(True))


def test_init_of_the_wrong_shape_and_read_only_rows(fitted, small_split):
    X, y = small_split.test.X[:6], small_split.test.y[:6]
    attack = attacks.PGDLineSearch(eps=0.5, max_iter=3)
    with pytest.raises(DataError, match="init must hold one starting point per row of X"):
        attack.run(fitted["svm_l"], X, y, init=X[:5])
    frozen = X.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # torch warns when it is handed memory it may not write
        result = attack.run(fitted["svm_l"], frozen, y, init=frozen)
    np.testing.assert_array_equal(result.x_adv, attack.run(fitted["svm_l"], X, y).x_adv)


def test_forest_cannot_be_attacked_white_box(fitted, small_split):
    with pytest.raises(models.NotDifferentiableError):
        attacks.PGDLineSearch(eps=1.0).run(fitted["rf_h"], small_split.test.X[:5], small_split.test.y[:5])


# ---- the line searches of issue 18: closed forms, the chord, threads, scoring once ---------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from transferlab.attacks import line_search, paths  # noqa: E402
from transferlab.attacks.base import BOUND_TOL, movable  # noqa: E402
from transferlab.attacks.constraints import Intersection  # noqa: E402

D = 7


@st.composite
def ball_box_problem(draw):
    """A few rows of x0 in a box that may be unbounded on some coordinates and pinned (lb = ub = x0, as a Mask
    makes it) on others, a step δ and a budget."""
    n = draw(st.integers(1, 4))
    x0 = draw(arrays(np.float64, (n, D), elements=st.floats(0, 1, width=64)))
    delta = draw(arrays(np.float64, (n, D), elements=st.floats(-4, 4, width=64)))
    width = draw(arrays(np.float64, (2, D), elements=st.floats(0, 2, width=64)))
    kind = draw(arrays(np.int64, (D,), elements=st.integers(0, 3)))  # 0 boxed, 1 unbounded, 2 pinned, 3 half
    lb = np.where(kind == 1, -np.inf, np.where(kind == 2, x0, x0 - width[0]))
    ub = np.where(kind == 1, np.inf, np.where(kind == 2, x0, np.where(kind == 3, np.inf, x0 + width[1])))
    eps = draw(st.floats(1e-3, 3, width=64))
    return [torch.as_tensor(a) for a in (x0, delta, lb, ub)] + [eps]


@settings(max_examples=40, deadline=None)
@given(ball_box_problem())
def test_ball_box_step_is_the_exact_projection_and_its_limit_the_linear_maximiser(data):
    x0, delta, lb, ub, eps = data
    domain = Intersection(attacks.L2Ball(eps), attacks.Box(lb.numpy(), ub.numpy()))
    lo, hi = (lb - x0).clamp_min(-line_search.BIG), (ub - x0).clamp_max(line_search.BIG)
    step = line_search.ball_box_step(delta, lo, hi, eps, 1.0)
    torch.testing.assert_close(x0 + step, domain.project(x0 + delta, x0), rtol=0, atol=1e-9)
    assert bool(domain.contains(x0 + step, x0, tol=1e-12).all())
    # t_max = ∞: the maximiser of ⟨δ, x⟩ over the ball ∩ box, which no projected step x0 + Π(T δ) beats
    best = x0 + line_search.ball_box_step(delta, lo, hi, eps, float("inf"))
    assert bool(domain.contains(best, x0, tol=1e-12).all())
    for scale in (1.0, 10.0, 1e3, 1e6):
        other = domain.project(x0 + scale * delta, x0)
        assert bool(((best * delta).sum(1) >= (other * delta).sum(1) - 1e-9).all())
    far = domain.project(x0 + 1e9 * delta, x0)
    torch.testing.assert_close((best * delta).sum(1), (far * delta).sum(1), rtol=1e-6, atol=1e-6)


def _dense_path_maximum(domain, x, grad, x0):
    """The best ⟨grad, ·⟩ over the projected path Π(x + η grad) on a dense geometric grid of η (10⁻⁴ to 10⁸), and
    over the segment from x to that path's far end on a dense grid of α."""
    etas = torch.logspace(-4, 8, 120, dtype=torch.float64)
    path = torch.stack([domain.project(x + eta * grad, x0) for eta in etas])  # (m, n, d)
    end = path[-1]
    alphas = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None, None]
    segment = x[None] + alphas * (end - x)[None]
    return (path * grad).sum(2).max(0).values, (segment * grad).sum(2).max(0).values


@pytest.mark.parametrize("norm", [2, "inf", 1])
def test_closed_form_step_for_linear_models_equals_a_dense_line_search(norm):
    """For an affine objective the best point of the projected path Π(x + η∇A) is its end, which the closed form
    computes exactly: it matches a dense grid over η and over the segment to that end, from x0 and from another
    point of Φ, for the ℓ2, ℓ∞ and ℓ1 balls intersected with the box."""
    rng = np.random.default_rng(1)
    n, d, eps = 4, 12, 0.8
    x0 = torch.as_tensor(rng.random((n, d)))
    grad = torch.as_tensor(rng.normal(size=(n, d)))
    attack = attacks.PGDLineSearch(norm=norm, eps=eps, lb=0.0, ub=1.0)
    domain = attack.domain
    lb, ub = domain.bounds(x0)
    steps = line_search.Steps(domain, line_search.domain_kind(domain, attack.p), eps, x0, lb, ub)
    best = steps.maximiser(grad)
    assert bool(domain.contains(best, x0, tol=1e-12).all())
    value = (best * grad).sum(1)
    inside = domain.project(x0 + 0.3 * torch.as_tensor(rng.normal(size=(n, d))), x0)
    for x in (x0, inside):
        on_path, on_segment = _dense_path_maximum(domain, x, grad, x0)
        assert bool((value >= on_path - 1e-9).all()) and bool((value >= on_segment - 1e-9).all())
        torch.testing.assert_close(value, on_path, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(value, on_segment, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("norm, eps", [(2, 0.5), (2, 2.0), ("inf", 0.1), (1, 3.0)])
@pytest.mark.parametrize("name", ["logistic_l", "svm_h", "ridge_h"])
def test_linear_models_get_at_least_the_objective_of_the_grid_line_search(fitted, small_split, name, norm, eps):
    """The closed form on a fitted binary linear model: one iteration, inside Φ, and per point at least the
    objective of the line search of transferlab 0.1 (warm_grid=0: every candidate of the grid projected, 4
    bisection rounds) and of the exact optimum."""
    model = fitted[name]
    X, y = small_split.test.X[:20], small_split.test.y[:20]
    new = attacks.PGDLineSearch(norm=norm, eps=eps, lb=0.0, ub=1.0)
    r = new.run(model, X, y)
    old = attacks.PGDLineSearch(norm=norm, eps=eps, lb=0.0, ub=1.0, warm_grid=0, bisection=4).run(model, X, y)
    assert np.all(r.objective >= old.objective - 1e-9)
    assert np.all(r.iterations == 1)
    assert bool(new.domain.contains(torch.as_tensor(r.x_adv), torch.as_tensor(X), tol=1e-9).all())
    if norm == 2:
        w = model.coef_[1].cpu().numpy() - model.coef_[0].cpu().numpy()
        optimum = model.loss(exact_linear_optimum(np.where(y == 1, -1.0, 1.0)[:, None] * w, X, eps), y)
        np.testing.assert_allclose(r.objective, optimum, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["logistic_h", "svm_rbf_h", "nn_l"])
def test_closed_forms_along_a_segment_equal_the_models_own_scores_and_gradients(fitted, small_split, name):
    """The objective along (1 − α) x + α p and the gradient that the line search computes from its kept products
    (an affine first layer, an RBF kernel's x·s and ‖x‖²) equal the model's direct scoring and autograd gradient;
    after a move the kept products are those of the new points."""
    model = fitted[name]
    X = torch.as_tensor(small_split.test.X[:10])
    y = torch.as_tensor(small_split.test.y[:10])
    objective = attacks.Objective()
    path = paths.path_for(model, objective, X, y)
    assert type(path) is not paths.Path  # a closed form, not the generic scoring
    end = torch.as_tensor(np.random.default_rng(0).random(X.shape))
    rtol = 1e-9 if model.dtype == torch.float64 else 1e-4
    torch.testing.assert_close(path.value, objective.value(model, X, y), rtol=rtol, atol=rtol)
    torch.testing.assert_close(path.gradient(), objective.gradient(model, X, y), rtol=rtol, atol=rtol)
    path.along(end)
    alpha = torch.linspace(0, 1, 10, dtype=torch.float64)
    points = torch.lerp(X, end, alpha[:, None])
    torch.testing.assert_close(path.values(alpha), objective.value(model, points, y), rtol=rtol, atol=rtol)
    grid = torch.tensor([1.0, 0.5, 0.125], dtype=torch.float64)
    expected = torch.stack([objective.value(model, torch.lerp(X, end, a), y) for a in grid])
    torch.testing.assert_close(path.grid_values(grid), expected, rtol=rtol, atol=rtol)
    take = alpha > 0.5
    path.move(torch.where(take, alpha, 0.0), take, path.values(alpha))
    moved = torch.where(take[:, None], points, X)
    torch.testing.assert_close(path.x, moved, rtol=0, atol=1e-12)
    torch.testing.assert_close(path.gradient(take), objective.gradient(model, moved[take], y[take]), rtol=rtol,
                               atol=rtol)


@st.composite
def attack_problem(draw):
    norm = draw(st.sampled_from([2, "inf", 1]))
    eps = draw(st.floats(0.05, 3, width=64))
    pieces = draw(st.sampled_from(["box", "mask", "addition", "unbounded"]))
    seed = draw(st.integers(0, 2 ** 16))
    return norm, eps, pieces, seed


_TOY = {}


def _toy_models():
    """A linear and an RBF SVM on 8 random features (fitted once: hypothesis draws only the threat model)."""
    if not _TOY:
        rng = np.random.default_rng(0)
        X = rng.random((80, 8))
        y = (X[:, :4].sum(1) > X[:, 4:].sum(1)).astype(int)
        _TOY["X"] = X
        _TOY["models"] = [models.create("logistic_l").fit(X, y), models.create("svm_rbf_h", gamma=2.0).fit(X, y)]
        _TOY["y"] = y
    return _TOY


@settings(max_examples=30, deadline=None)
@given(attack_problem())
def test_every_result_stays_inside_the_constraint_set_and_never_lowers_the_objective(problem):
    norm, eps, pieces, seed = problem
    toy = _toy_models()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(toy["y"]), 6, replace=False)
    X, y = toy["X"][rows], toy["y"][rows]
    extra = {"box": (), "mask": (attacks.Mask(rng.random(8) < 0.6),), "addition": (attacks.FeatureAdditionOnly(),),
             "unbounded": ()}[pieces]
    lb, ub = (None, None) if pieces == "unbounded" else (0.0, 1.0)
    for model in toy["models"]:
        attack = attacks.PGDLineSearch(norm=norm, eps=eps, lb=lb, ub=ub, constraints=extra, max_iter=20)
        r = attack.run(model, X, y)
        assert bool(attack.domain.contains(torch.as_tensor(r.x_adv), torch.as_tensor(X), tol=1e-9).all())
        assert np.all(r.objective >= r.objective_start - 1e-9)


def test_the_attack_runs_on_one_thread_and_restores_the_callers_setting(fitted, small_split):
    model = fitted["svm_rbf_h"]
    seen = []
    scores = model.scores

    def recording(X):
        seen.append(torch.get_num_threads())
        return scores(X)

    model.scores = recording
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        attacks.PGDLineSearch(eps=1.0).run(model, small_split.test.X[:5], small_split.test.y[:5])
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_each_point_set_is_scored_once(fitted, small_split):
    """A run on a linear model scores the model twice: the attacked points (start value) and the crafted points
    (their value and their success); the closed form needs no other forward pass."""
    model = fitted["logistic_l"]
    rows = []
    scores = model.scores

    def counting(X):
        rows.append(X.shape[0])
        return scores(X)

    model.scores = counting
    X, y = small_split.test.X[:30], small_split.test.y[:30]
    attack = attacks.PGDLineSearch(eps=1.0)
    r = attack.run(model, X, y)
    assert rows == [30, 30]
    assert np.array_equal(r.success, model.predict(r.x_adv) != y)
    assert attack.objective == attacks.Objective()  # the run used a remembering copy: the attack is unchanged


def test_an_attack_refuses_the_settings_of_another_attack_even_a_subclass():
    """MIFGSMSettings extends PGDSettings; PGD given them must not run with momentum's step count and an unused
    decay, but say which setting it does not take."""
    from transferlab.attacks.mifgsm import MIFGSMSettings

    with pytest.raises(ConfigError, match="decay: unknown setting of PGDSettings"):
        attacks.PGD(settings=MIFGSMSettings())
    assert attacks.PGD(settings=attacks.PGD().settings).settings.steps == attacks.PGD().settings.steps


@settings(max_examples=40, deadline=None)
@given(ball_box_problem())
def test_free_gradient_frees_the_coordinates_the_box_does_not_block(data):
    """The chord search's free gradient keeps exactly the coordinates that :func:`~transferlab.attacks.base.movable`
    calls movable (room beyond BOUND_TOL in the direction of the gradient), on boxes with degenerate coordinates
    (lb = ub) and points on their bounds, and a float32 gradient gives the float64 one's result."""
    x0, delta, lb, ub, eps = data
    # rooms of 0 or at least 1e-6 (not within rounding of BOUND_TOL, where the two tests may round differently)
    lb, ub = torch.where(x0 - lb < 1e-6, x0, lb), torch.where(ub - x0 < 1e-6, x0, ub)
    ub = torch.where(torch.arange(ub.shape[1]) % 3 == 0, lb, ub)  # some coordinates cannot move at all
    x0 = torch.minimum(torch.maximum(x0, lb), ub)
    x = torch.where(delta > 0.5, ub, torch.where(delta < -0.5, lb, x0))  # some coordinates at a bound
    grad = delta.flip(1)
    lo, hi = lb - x0, ub - x0
    free = line_search.free_gradient(grad, x - x0, lo + BOUND_TOL, hi - BOUND_TOL)
    free_mask = movable(x, grad, lb, ub)
    torch.testing.assert_close(free, torch.where(free_mask, grad, 0.0), rtol=0, atol=0)
    g32 = grad.float()
    free32 = line_search.free_gradient(g32, x - x0, lo + BOUND_TOL, hi - BOUND_TOL)
    assert free32.dtype == torch.float64
    torch.testing.assert_close(free32, torch.where(free_mask, g32.double(), 0.0), rtol=0, atol=0)


@pytest.mark.parametrize("norm", [2, "inf"])
def test_mlp_chord_search_in_float32_follows_the_float64_search_and_ends_inside_the_domain(fitted, small_split,
                                                                                          monkeypatch, norm):
    """A float32 MLP is attacked by the chord search in float32 (pgd_line_search.working_dtype): its crafted
    points lie in Φ(x0) in float64, and they follow the float64 search's path: the same successes, objectives
    within float32 rounding, and the line searches of every point but a rare tie."""
    from transferlab.attacks import pgd_line_search

    model = fitted["nn_l"]
    X, y = small_split.test.X[:60], small_split.test.y[:60]
    attack = attacks.PGDLineSearch(norm=norm, eps=1.0, lb=0.0, ub=1.0)
    assert pgd_line_search.working_dtype(model, torch.zeros(1, 2, dtype=torch.float64)) == torch.float32
    r32 = attack.run(model, X, y)
    assert bool(attack.domain.contains(torch.as_tensor(r32.x_adv), torch.as_tensor(X), tol=1e-12).all())
    monkeypatch.setattr(pgd_line_search, "working_dtype", lambda model, x0: x0.dtype)
    r64 = attack.run(model, X, y)
    np.testing.assert_array_equal(r32.success, r64.success)
    np.testing.assert_allclose(r32.objective, r64.objective, rtol=0, atol=1e-3)
    assert np.mean(r32.iterations == r64.iterations) >= 0.95
    assert np.abs(r32.x_adv - r64.x_adv).max() < 0.05

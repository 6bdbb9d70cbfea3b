"""transferlab audit: the linearised prediction of transfer (Eq. 16) without attacking."""

import numpy as np
import pytest

from cli_runner import run_in_process
from conftest import FAST
from transferlab import attacks, datasets, models
from transferlab.audit import agreement, audit, audit_run, predicted_evasion
from transferlab.errors import ConfigError
from transferlab.experiments import runner
from transferlab.experiments.config import parse_config


@pytest.fixture(scope="module")
def parts():
    return datasets.split(datasets.load("mnist89"), n_target=150, n_surrogate=150, n_test=120, seed=4)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_the_prediction_is_exact_for_linear_models_without_a_box(parts, eps):
    """A linear target's margin is linear in x, and an unboxed l2 attack on a linear surrogate moves every point by
    exactly eps along the surrogate's weights: first order is all there is."""
    target = models.create("logistic_h").fit(parts.target.X, parts.target.y)
    surrogate = models.create("svm_l").fit(parts.surrogate.X, parts.surrogate.y)
    X, y = parts.test.X, parts.test.y
    x_adv = attacks.PGDLineSearch(norm=2, eps=eps, lb=None, ub=None).run(surrogate, X, y).x_adv
    measured = target.predict(x_adv) != y
    margin_after = target.loss(x_adv, y)
    decided = np.abs(margin_after) > 1e-6  # leave out points that end exactly on the boundary
    assert decided.mean() > 0.9
    predicted = predicted_evasion(target, surrogate, X, y, eps)
    assert np.array_equal(predicted[decided], measured[decided])


def test_the_prediction_steps_only_where_the_box_lets_it():
    """Points with some coordinates at the box's lower bound and the rest well inside it: a step of a linear
    surrogate cannot darken a coordinate at 0, so the attack's optimum over the ball and the box moves the free
    coordinates only, and the prediction along the box-blocked direction is exact; the unblocked direction
    (the box ignored) predicts other points."""
    rng = np.random.default_rng(3)
    X = rng.uniform(0.4, 0.6, (300, 12))
    X[:, :6] = rng.random((300, 6)) < 0.5  # half the features at 0 or 1: the ones that decide the class
    y = (X[:, :6].sum(1) + (X[:, 6:] - 0.5).sum(1) + 0.3 * rng.standard_normal(300) > 3).astype(int)
    target = models.create("logistic_h").fit(X, y)
    surrogate = models.create("svm_h").fit(X, y)
    eps = 0.1  # no coordinate reaches a face it did not start on
    x_adv = attacks.PGDLineSearch(norm=2, eps=eps, lb=0.0, ub=1.0).run(surrogate, X, y).x_adv
    margin_after = target.loss(x_adv, y)
    decided = np.abs(margin_after) > 1e-6
    assert decided.mean() > 0.9
    boxed = predicted_evasion(target, surrogate, X, y, eps, lb=0.0, ub=1.0)
    assert np.array_equal(boxed[decided], (margin_after > 0)[decided])
    assert 0.05 < boxed.mean() < 0.95
    assert not np.array_equal(boxed, predicted_evasion(target, surrogate, X, y, eps))


def test_the_prediction_under_feature_addition_adds_the_best_feature():
    """ℓ1 with ε = 1 on binary features, feature addition only: the best an attack can do on a linear target is
    to add the absent feature of largest gain; with the target as surrogate the prediction is exactly that (a
    removal, which the unconstrained ℓ1 direction may choose, is not allowed). Sparse rows give the same rows."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = (rng.random((200, 30)) < 0.3).astype(float)
    y = (X[:, :15].sum(1) > X[:, 15:].sum(1)).astype(int)
    model = models.create("svm_l", C=1.0).fit(X, y)
    gradient = model.input_gradient(X, y)
    addable = np.where(X == 0, gradient, -np.inf).max(1)
    exact = model.loss(X, y) + np.maximum(addable, 0.0) > 0
    pieces = (attacks.FeatureAdditionOnly(),)
    predicted = predicted_evasion(model, model, X, y, 1.0, norm=1, lb=0.0, ub=1.0, constraints=pieces)
    assert np.array_equal(predicted, exact)
    assert not np.array_equal(predicted_evasion(model, model, X, y, 1.0, norm=1, lb=0.0, ub=1.0), exact)
    dense_rows = audit(model, {"m": model}, X, y, [1.0], norm=1, lb=0.0, ub=1.0, constraints=pieces)
    sparse_rows = audit(model, {"m": model}, sp.csr_matrix(X), y, [1.0], norm=1, lb=0.0, ub=1.0,
                        constraints=pieces)
    assert dense_rows[0].predicted == pytest.approx(float(exact.mean()), abs=1e-12)
    for a, b in zip(dense_rows, sparse_rows):
        assert (a.S, a.R, a.predicted) == pytest.approx((b.S, b.R, b.predicted), rel=1e-12, abs=1e-12)


def test_the_prediction_reads_the_target_margin_whatever_the_attacker_loss(parts):
    """A point evades where the target's margin loss turns positive: with the cross-entropy loss (always > 0)
    the prediction at a vanishing budget is the clean error, not 1."""
    target = models.create("logistic_h").fit(parts.target.X, parts.target.y)
    surrogate = models.create("nn_l", **FAST["nn_l"]).fit(parts.surrogate.X, parts.surrogate.y)
    X, y = parts.test.X, parts.test.y
    clean = float(np.mean(target.predict(X) != y))
    rows = audit(target, {"nn_l": surrogate}, X, y, [1e-9, 2.0], loss="cross_entropy")
    assert rows[0].predicted == pytest.approx(clean, abs=1e-12)
    # the step is the surrogate's cross-entropy direction, the gain the target's margin gradient along it
    step = surrogate.input_gradient(X, y, "cross_entropy")
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    after = target.loss(X, y, "margin") + 2.0 * (target.input_gradient(X, y, "margin") * step).sum(1)
    decided = np.abs(after) > 1e-9
    assert rows[1].predicted == pytest.approx(np.mean(after > 0), abs=np.mean(~decided) + 1e-12)
    assert rows[1].predicted > rows[0].predicted


def test_audit_refuses_what_is_not_a_model_or_a_mapping(parts):
    from sklearn.linear_model import LogisticRegression

    X, y = parts.test.X, parts.test.y
    model = models.create("logistic_l").fit(parts.target.X, parts.target.y)
    raw = LogisticRegression().fit(parts.target.X, parts.target.y)
    for target, surrogates, message in [(model, [model], "give a dict"), (model, {}, "give a dict"),
                                        (model, {"s": []}, "surrogate 's': give a model"),
                                        (model, {"s": raw}, "not a transferlab model; wrap"),
                                        (raw, {"s": model}, "target: LogisticRegression is not a transferlab")]:
        with pytest.raises(ConfigError, match=message):
            audit(target, surrogates, X, y, [1.0])


def test_audit_ranks_surrogates_and_computes_s_r_v(parts):
    target = models.create("svm_rbf_h").fit(parts.target.X, parts.target.y)
    draws = [models.create("logistic_l").fit(d.X, d.y) for d in (parts.surrogate_subsample(1.0, k) for k in range(3))]
    same = models.create("svm_rbf_h").fit(parts.target.X, parts.target.y)
    rows = audit(target, {"logistic_l": draws, "itself": same}, parts.test.X, parts.test.y, [0.5, 2.0])
    assert len(rows) == 4 and {r.rank for r in rows if r.budget == 2.0} == {1, 2}
    itself = [r for r in rows if r.surrogate == "itself"]
    assert all(abs(r.R - 1) < 1e-9 and np.isnan(r.V) for r in itself)
    assert all(r.V > 0 for r in rows if r.surrogate == "logistic_l")
    assert len({r.S for r in rows}) == 1  # S belongs to the target
    # the white-box "surrogate" (the target itself) is predicted at least as strong as any other
    assert all(r.rank == 1 for r in itself)
    # a target without input gradient: S, R and the prediction undefined, with the note saying why; V still there
    forest = models.create("rf_l", n_estimators=5).fit(parts.target.X, parts.target.y)
    undefined = audit(forest, {"logistic_l": draws}, parts.test.X, parts.test.y, [1])
    assert len(undefined) == 1 and np.isnan([undefined[0].S, undefined[0].R, undefined[0].predicted]).all()
    assert undefined[0].V == pytest.approx(rows[0].V, rel=1e-12) and undefined[0].rank == 0
    assert "no input gradient" in undefined[0].note and "S (Eq. 17)" in undefined[0].note
    # a surrogate without one cannot be audited: it crafts along its gradient
    with pytest.raises(ConfigError, match="surrogate 'x' .* has no input gradient"):
        audit(target, {"x": forest}, parts.test.X, parts.test.y, [1])


def test_audit_of_a_run_agrees_with_its_measured_transfer(tmp_path):
    config = parse_config({"name": "audited", "split": {"n_target": 100, "n_surrogate": 100, "n_test": 60},
                           "surrogates": ["svm_h", "svm_l", "logistic_h", "logistic_l", "ridge_l"],
                           "targets": ["svm_rbf_h", "rf_l"], "model_overrides": {"rf_l": {"n_estimators": 10}},
                           "attack": {"norm": 2, "eps": [0, 1, 2]}, "variance": {"n_surrogates": 2}})
    runner.run_experiment(config, tmp_path / "run", show_progress=False)
    rows = audit_run(tmp_path / "run", "svm_rbf_h")
    assert len(rows) == 5 * 2 and all(np.isfinite(r.measured) for r in rows)
    summary = {a["budget"]: a for a in agreement(rows)}
    assert summary[2.0]["mae"] < 0.2 and summary[2.0]["spearman_rho"] > 0
    result = run_in_process("audit", str(tmp_path / "run"), "--target", "svm_rbf_h")
    assert result.returncode == 0 and "Spearman" in result.stdout and "logistic_l" in result.stdout
    refused = run_in_process("audit", str(tmp_path / "run"), "--target", "nn_h")
    assert refused.returncode == 2 and "not a target" in refused.stderr and "Traceback" not in refused.stderr


def test_audit_refuses_constraints_that_are_not_a_list_of_pieces(parts):
    """A bare piece or an array given as ``constraints`` was an error deep inside, or silently no constraint."""
    model = models.create("logistic_l").fit(parts.target.X, parts.target.y)
    X, y = parts.test.X, parts.test.y
    mask = np.ones(X.shape[1], dtype=bool)
    for wrong in (attacks.Mask(mask), mask, (mask,)):
        with pytest.raises(ConfigError, match="constraints: give a list of threat-model pieces"):
            audit(model, {"m": model}, X, y, [1.0], constraints=wrong)
    # a mask that frees every feature is no constraint: the prediction without one
    free = audit(model, {"m": model}, X, y, [1.0], constraints=[attacks.Mask(mask)])[0].predicted
    assert free == audit(model, {"m": model}, X, y, [1.0])[0].predicted

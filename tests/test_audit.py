"""transferlab audit: the linearised prediction of transfer (Eq. 16) without attacking."""

import numpy as np
import pytest

from cli_runner import run_in_process
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

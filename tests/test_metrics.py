"""metrics.py against closed forms (S of a linear model is the dual norm of its weights, R of a model with itself
is 1, V of identical surrogates is 0) and the DataFrame view of a run."""

import numpy as np
import pytest

import transferlab
from transferlab import metrics, models
from transferlab.attacks import dual_norm


def _linear(w, b=0.0):
    model = models.LinearSVM()
    model.n_classes_, model.n_features_in_ = 2, len(w)
    model.set_parameters(np.vstack([np.zeros(len(w)), w]), np.array([0.0, b]))
    return model


@pytest.mark.parametrize("p", [1, 2, float("inf")])
def test_gradient_size_of_a_linear_model_is_the_dual_norm_of_its_weights(p):
    rng = np.random.default_rng(0)
    w = rng.normal(size=7)
    X, y = rng.random((30, 7)), rng.integers(0, 2, 30)
    gradients = _linear(w).input_gradient(X, y)  # ±w for every point (margin loss of a binary linear model)
    q = dual_norm(p)
    assert metrics.gradient_size(gradients, q) == pytest.approx(np.linalg.norm(w, ord=q))


def test_alignment_of_a_model_with_itself_is_one_and_with_its_opposite_minus_one():
    rng = np.random.default_rng(1)
    X, y = rng.random((25, 5)), rng.integers(0, 2, 25)
    w = rng.normal(size=5)
    g = _linear(w).input_gradient(X, y)
    assert metrics.gradient_alignment(g, g) == pytest.approx(1.0)
    assert metrics.gradient_alignment(g, _linear(-w).input_gradient(X, y)) == pytest.approx(-1.0)
    assert metrics.gradient_alignment(g, np.zeros_like(g)) == 0.0


def test_alignment_stays_within_minus_one_and_one_under_rounding():
    """Parallel gradients whose rounded cosine exceeds 1 by an ulp (found for a saved pipeline that is its own
    surrogate): R is a cosine, never outside [−1, 1]."""
    # parallel gradients (the target's three times the surrogate's) of two features: each cosine is a few correctly
    # rounded IEEE operations on two terms and rounds the same on every CPU; about a fifth of them exceed 1
    a = np.random.default_rng(3).uniform(0.1, 10.0, size=(2000, 2))
    b = 3.0 * a
    over = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)) > 1
    assert over.any()
    assert metrics.gradient_alignment(a[over], b[over]) == 1.0       # each clipped to 1, their mean exactly 1
    assert metrics.gradient_alignment(a[over], -b[over]) == -1.0
    assert -1.0 <= metrics.gradient_alignment(a, b) <= 1.0


def test_loss_variance_of_identical_surrogates_is_zero_and_matches_the_definition():
    rng = np.random.default_rng(2)
    same = np.tile(rng.normal(size=(1, 40)), (4, 1))
    assert metrics.loss_variance(same) == pytest.approx(0.0, abs=1e-15)
    losses = rng.normal(size=(5, 40))
    assert metrics.loss_variance(losses) == pytest.approx(np.mean(np.var(losses, axis=0)))
    # large, nearly equal losses: E[ℓ²] − E[ℓ]² computed as written loses every digit (it gave 0.28, or < 0)
    spread = 1e-4 * rng.normal(size=(5, 40))
    assert metrics.loss_variance(1e8 + spread) == pytest.approx(metrics.loss_variance(spread), rel=1e-3)


def test_correlation_leaves_out_undefined_pairs():
    out = metrics.correlation([1, 2, 3, np.nan, 5], [0.1, 0.2, 0.35, 0.9, 0.5])
    assert out["n_pairs"] == 4 and out["pearson_r"] > 0.95 and out["kendall_tau"] == pytest.approx(1.0)


def test_results_as_data_frames(tmp_path):
    pytest.importorskip("pandas")
    from transferlab.experiments import runner
    from transferlab.experiments.config import parse_config

    config = parse_config({"name": "frames", "split": {"n_target": 40, "n_surrogate": 40, "n_test": 10},
                           "surrogates": ["svm_l", "logistic_l"], "targets": ["svm_l", "logistic_l"],
                           "attack": {"norm": 2, "eps": [0, 1, 2]}, "variance": {"n_surrogates": 2}})
    runner.run_experiment(config, tmp_path, show_progress=False)
    frames = transferlab.results(tmp_path)
    assert len(frames.results) == 2 * 2 * 3 + 2 * 3  # transfer (surrogates × targets × budgets) + white-box
    assert set(frames.metrics.columns) >= {"S", "R", "V"} and frames.config["name"] == "frames"
    assert set(frames.correlations["target"]) >= {"all", "svm_l"}
    # not a folder's path, or the store file itself: one line saying what to give
    from transferlab.errors import ConfigError

    for wrong, message in [(None, "give a run folder's path .* got NoneType"),
                           (tmp_path / "store.sqlite", "is a file; give the run folder that holds it")]:
        with pytest.raises(ConfigError, match=message):
            transferlab.results(wrong)

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from torch import nn

from conftest import FAST
from transferlab import datasets, models
from transferlab.errors import ConfigError

DIFFERENTIABLE = [name for name, spec in models.MODELS.items() if spec.factory is not models.RandomForest]


@pytest.fixture(scope="module")
def fitted(small_split):
    """Every registry model, fitted once on the small split."""
    return {name: models.create(name, **FAST.get(name, {})).fit(small_split.target.X, small_split.target.y)
            for name in models.MODELS}


def as_float64(model):
    if isinstance(model, models.TorchNet):
        model.to(dtype=torch.float64)
    return model


def finite_difference_check(model, X, y, loss, n_coords=40, h=1e-6):
    """Compare input_gradient with central differences of the loss computed from decision_function, on random
    coordinates and along random directions."""
    rng = np.random.default_rng(0)
    grad = model.input_gradient(X, y, loss=loss)
    assert grad.shape == X.shape
    coords = rng.choice(X.shape[1], n_coords, replace=False)
    directions = np.zeros((n_coords + 3, X.shape[1]))
    directions[np.arange(n_coords), coords] = 1.0
    directions[n_coords:] = rng.normal(size=(3, X.shape[1])) / np.sqrt(X.shape[1])
    for i in range(X.shape[0]):
        plus = model.loss(X[i] + h * directions, np.full(len(directions), y[i]), loss)
        minus = model.loss(X[i] - h * directions, np.full(len(directions), y[i]), loss)
        numeric = (plus - minus) / (2 * h)
        analytic = directions @ grad[i]
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(numeric).max()))


def test_registry_holds_the_13_paper_models():
    assert len(models.MODELS) == 13
    assert models.describe("svm_rbf_h") == {"C": 100.0, "gamma": 0.01, "device": "cpu", "batch_size": 2048}
    assert models.create("nn_l").weight_decay == 0.01 and models.create("rf_l").max_depth == 6
    with pytest.raises(ConfigError, match="unknown model"):
        models.create("svm_x")


@pytest.mark.parametrize("loss", ["margin", "cross_entropy"])
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_input_gradient_matches_finite_differences(fitted, small_split, name, loss):
    model = as_float64(fitted[name])
    rng = np.random.default_rng(1)
    real = small_split.test.X[:3]
    if name == "cnn":
        # flat background makes equal activations inside a max-pool window: a true kink of the CNN where finite
        # differences disagree with any subgradient. A tiny jitter breaks the ties and keeps the points real.
        real = np.clip(real + rng.uniform(0, 1e-3, real.shape), 0, 1)
    random = rng.uniform(0, 1, size=(2, real.shape[1]))
    X = np.vstack([real, random])
    y = np.r_[small_split.test.y[:3], 0, 1]
    finite_difference_check(model, X, y, loss)


def test_gradient_on_multiclass_problem():
    digits = datasets.load("digits")
    X, y = digits.X[:400], digits.y[:400]
    for name in ("svm_l", "logistic_h", "ridge_h", "svm_rbf_l"):
        model = models.create(name).fit(X, y)
        assert model.decision_function(X[:5]).shape == (5, 10)
        np.testing.assert_allclose(model.decision_function(X), model.estimator_.decision_function(X), rtol=1e-6,
                                   atol=1e-9)
        finite_difference_check(model, X[400 - 3:], y[400 - 3:], "cross_entropy", n_coords=20)


@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if not n.startswith(("nn", "cnn"))])
def test_scores_equal_scikit_learn(fitted, small_split, name):
    model = fitted[name]
    X = small_split.test.X
    ours = model.decision_function(X)
    theirs = model.estimator_.decision_function(X)
    np.testing.assert_allclose(ours[:, 1], theirs, rtol=1e-6, atol=1e-9)
    assert np.all(ours[:, 0] == 0)
    assert np.array_equal(model.predict(X), model.estimator_.predict(X))


def test_forest_is_not_differentiable_and_matches_scikit_learn(fitted, small_split):
    from sklearn.ensemble import RandomForestClassifier

    model = fitted["rf_h"]
    with pytest.raises(models.NotDifferentiableError, match="surrogate"):
        model.input_gradient(small_split.test.X, small_split.test.y)
    reference = RandomForestClassifier(n_estimators=100, random_state=0).fit(small_split.target.X, small_split.target.y)
    np.testing.assert_allclose(model.decision_function(small_split.test.X), reference.predict_proba(small_split.test.X))


@pytest.mark.parametrize("name", ["nn_h", "cnn", "rf_l", "svm_rbf_h", "logistic_l"])
def test_same_seed_same_predictions(small_split, name):
    X, y = small_split.target.X, small_split.target.y
    a = models.create(name, **FAST.get(name, {})).fit(X, y).decision_function(small_split.test.X)
    b = models.create(name, **FAST.get(name, {})).fit(X, y).decision_function(small_split.test.X)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_save_load_round_trip(fitted, small_split, tmp_path, name):
    model = fitted[name]
    models.save(model, tmp_path / name)
    loaded = models.load(tmp_path / name)
    np.testing.assert_allclose(loaded.decision_function(small_split.test.X),
                               model.decision_function(small_split.test.X), rtol=1e-6, atol=1e-7)
    assert not list(tmp_path.glob("**/*.pkl"))


def test_wrap_sklearn_and_torch(small_split):
    X, y = small_split.target.X, small_split.target.y
    logistic = models.wrap(LogisticRegression(C=1.0, max_iter=1000).fit(X, y))
    np.testing.assert_allclose(logistic.decision_function(X)[:, 1], logistic.estimator_.decision_function(X))
    rbf = models.wrap(SVC(gamma=0.02).fit(X, y))
    np.testing.assert_allclose(rbf.decision_function(X)[:, 1], rbf.estimator_.decision_function(X), rtol=1e-6)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    net = models.wrap(module, n_classes=2, n_features=784)
    assert net.dtype == torch.float64
    finite_difference_check(net, small_split.test.X[:2], small_split.test.y[:2], "margin", n_coords=10)
    with pytest.raises(ConfigError):
        models.wrap(object())


def test_unfitted_and_bad_input_errors(small_split):
    model = models.create("svm_l")
    with pytest.raises(ConfigError, match="not fitted"):
        model.predict(small_split.test.X)
    from transferlab.errors import DataError

    bad = small_split.target.X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        model.fit(bad, small_split.target.y)

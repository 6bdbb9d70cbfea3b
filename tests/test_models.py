import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.svm import SVC
from torch import nn

from conftest import FAST, as_float64, finite_difference_check
from transferlab import datasets, models
from transferlab.errors import ConfigError

DIFFERENTIABLE = [name for name, spec in models.MODELS.items() if spec.factory is not models.RandomForest]

# The paper's models (Demontis et al. 2019, Section 5), written independently of the registry: scikit-learn
# estimators with the paper's hyperparameters (a model of the registry must score like its reference), and for the
# networks the paper's architecture. H = weakly regularised, L = strongly regularised.
PAPER_REFERENCE = {
    "svm_h": lambda: SVC(kernel="linear", C=100.0),
    "svm_l": lambda: SVC(kernel="linear", C=0.01),
    "logistic_h": lambda: LogisticRegression(C=10.0, tol=1e-12, max_iter=100_000),
    "logistic_l": lambda: LogisticRegression(C=0.01, tol=1e-12, max_iter=100_000),
    "ridge_h": lambda: RidgeClassifier(alpha=10.0),
    "ridge_l": lambda: RidgeClassifier(alpha=100.0),
    "svm_rbf_h": lambda: SVC(kernel="rbf", C=100.0, gamma=0.01),
    "svm_rbf_l": lambda: SVC(kernel="rbf", C=1.0, gamma=0.01),
    "rf_h": lambda: RandomForestClassifier(n_estimators=100, max_depth=None, random_state=0),
    "rf_l": lambda: RandomForestClassifier(n_estimators=100, max_depth=6, random_state=0),
}
#: (layer kind, width) of the paper's networks in order: MLP 2x200 ReLU; CNN 64-64-64 convolutions, then 32 units
PAPER_LAYERS = {
    "nn_h": [("Linear", 200), ("ReLU", None), ("Linear", 200), ("ReLU", None), ("Linear", 2)],
    "nn_l": [("Linear", 200), ("ReLU", None), ("Linear", 200), ("ReLU", None), ("Linear", 2)],
    "cnn": [("Conv2d", 64), ("ReLU", None), ("Conv2d", 64), ("ReLU", None), ("Conv2d", 64), ("ReLU", None),
            ("Linear", 32), ("ReLU", None), ("Linear", 2)],
}
#: each H model and its L partner, with the regularisation parameter the paper varies and both of its values
PARTNERS = [("svm_h", "svm_l", "C", 100.0, 0.01), ("logistic_h", "logistic_l", "C", 10.0, 0.01),
            ("ridge_h", "ridge_l", "alpha", 10.0, 100.0), ("svm_rbf_h", "svm_rbf_l", "C", 100.0, 1.0),
            ("nn_h", "nn_l", "weight_decay", 0.0, 0.01), ("rf_h", "rf_l", "max_depth", None, 6)]


@pytest.mark.parametrize("name", list(models.MODELS))
def test_registry_models_are_the_papers(fitted, small_split, name):
    """Each registry model scores like scikit-learn's estimator fitted with the paper's hyperparameters (or, for
    the networks, is built with the paper's layers)."""
    assert name in PAPER_REFERENCE or name in PAPER_LAYERS, f"{name} is not a model of the paper: add its reference"
    X, y, test = small_split.target.X, small_split.target.y, small_split.test.X
    if name in PAPER_LAYERS:
        module = models.create(name).meta_module(X.shape[1], 2)
        layers = [(type(m).__name__, getattr(m, "out_features", getattr(m, "out_channels", None)))
                  for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ReLU))]
        assert layers == PAPER_LAYERS[name]
        return
    reference = PAPER_REFERENCE[name]().fit(X, y)
    ours = fitted[name].decision_function(test)
    if name.startswith("rf"):
        np.testing.assert_allclose(ours, reference.predict_proba(test), rtol=0, atol=1e-12)
    else:
        theirs = reference.decision_function(test)
        # our logistic regression stops at lbfgs tol 1e-8, the reference at 1e-12: the same optimum to ~1e-5
        np.testing.assert_allclose(ours[:, 1], theirs, rtol=0, atol=1e-3 * np.abs(theirs).max())


@pytest.mark.parametrize("high, low, param, high_value, low_value", PARTNERS, ids=[p[0][:-2] for p in PARTNERS])
def test_each_h_model_differs_from_its_l_partner_only_in_regularisation(fitted, small_split, high, low, param,
                                                                         high_value, low_value):
    """H with L's regularisation is L, and L with H's is H (everything else is shared); and, the paper's first
    finding, the less regularised model has the larger input gradients S (Eq. 17)."""
    X, y, test = small_split.target.X, small_split.target.y, small_split.test.X
    swapped_high = models.create(high, **{**FAST.get(high, {}), param: low_value}).fit(X, y)
    swapped_low = models.create(low, **{**FAST.get(low, {}), param: high_value}).fit(X, y)
    # one process, same data and seed: the same computation (to float32 rounding for the networks)
    np.testing.assert_allclose(swapped_high.decision_function(test), fitted[low].decision_function(test),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(swapped_low.decision_function(test), fitted[high].decision_function(test),
                               rtol=1e-6, atol=1e-9)
    if models.MODELS[high].factory.differentiable:
        s_high, s_low = (np.linalg.norm(fitted[n].input_gradient(test, small_split.test.y), axis=1).mean()
                         for n in (high, low))
        assert s_high > 1.05 * s_low


def test_an_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'svm_x'.*svm_h"):
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


def test_forest_is_not_differentiable(fitted, small_split):
    # (its scores equal scikit-learn's predict_proba: test_registry_models_are_the_papers)
    with pytest.raises(models.NotDifferentiableError, match="surrogate"):
        fitted["rf_h"].input_gradient(small_split.test.X, small_split.test.y)


@pytest.mark.parametrize("name", ["nn_h", "cnn", "rf_l", "svm_rbf_h", "logistic_l"])
def test_same_seed_same_predictions(small_split, name):
    X, y = small_split.target.X, small_split.target.y
    a = models.create(name, **FAST.get(name, {})).fit(X, y).decision_function(small_split.test.X)
    b = models.create(name, **FAST.get(name, {})).fit(X, y).decision_function(small_split.test.X)
    assert np.array_equal(a, b)  # two fits in one process: determinism means identical bits on one machine


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


def _subnormal_count(module: nn.Module) -> int:
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((p != 0) & (p.abs() < tiny)).sum()) for p in module.parameters())


def test_a_trained_network_holds_no_subnormal_weight():
    """Weight decay shrinks the weights of inputs that never vary until they are subnormal (each product with one
    takes the CPU's slow path): a trained network has none, and a loaded state with some scores the same without."""
    from transferlab.models.subnormals import without_subnormals

    rng = np.random.default_rng(0)
    X = np.hstack([rng.random((64, 6)), np.zeros((64, 6))])  # six inputs that are always 0
    y = (X[:, 0] > 0.5).astype(int)
    model = models.MLP(hidden=(8,), weight_decay=0.01, epochs=300, batch_size_train=4).fit(X, y)
    assert _subnormal_count(model.module_) == 0
    state = model.state_tensors()
    first = next(k for k in state if k.endswith("weight"))
    weights = state[first].clone()
    weights[:, 6:] = torch.finfo(torch.float32).tiny / 4  # what training without flushing left there
    assert int((without_subnormals(weights) == 0).sum()) >= weights[:, 6:].numel()
    state[first] = weights
    model.load_state_tensors(state)
    assert _subnormal_count(model.module_) == 0
    reference = model.decision_function(X)
    state[first] = weights.clone()
    with torch.no_grad():  # the same network with its subnormal weights, computed without any flushing
        module = model.meta_module(X.shape[1], 2)
        module.load_state_dict(state, assign=True)
        raw = module(torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(reference, raw, rtol=1e-6, atol=1e-7)  # the logits of both classes


def test_a_tensor_with_nan_is_refused_as_an_array_is():
    """decision_function and input_gradient take torch tensors too: NaN in one is the array's one-line DataError,
    not NaN scores and a finite-looking gradient."""
    import torch

    from transferlab.errors import DataError

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(50, 4))
    y = (X[:, 0] > 0.5).astype(int)
    model = models.create("svm_l").fit(X, y)
    bad = torch.full((1, 4), float("nan"), dtype=torch.float64)
    with pytest.raises(DataError, match="NaN or infinite"):
        model.decision_function(bad)
    with pytest.raises(DataError, match="NaN or infinite"):
        model.input_gradient(bad, np.array([0]))
    np.testing.assert_allclose(model.decision_function(torch.as_tensor(X)), model.decision_function(X), rtol=0,
                               atol=0)

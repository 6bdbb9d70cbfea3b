"""The registry's models are scikit-learn estimators (issue 16, item 4), and an ensemble's gradient is the gradient
of the objective the attacks evaluate (issue 16, item 5).

Every test here fails on the code before: ``get_params(deep=True)`` raised TypeError (so ``clone``,
``GridSearchCV`` and ``check_estimator`` could not run), labels had to be 0..C−1, a model used before ``fit`` raised
a plain ConfigError, and the ensemble's gradient was the mean of its members' gradients, which is not the gradient
of the loss of its averaged scores for the cross-entropy or the multiclass margin.
"""

import json
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from conftest import as_float64
from transferlab import models
from transferlab.errors import ConfigError, DataError
from transferlab.models.losses import get_loss

#: small settings for the networks and the forest: the checks are about the API, not the paper's sizes
SMALL = {"nn_l": {"hidden": (8,), "epochs": 2}, "rf_l": {"n_estimators": 5}, "logistic_l": {"max_iter": 100},
         "cnn": {"channels": (2, 2, 2), "dense": 4, "epochs": 1, "batch_size_train": 8}}
#: one registry model of each class (the H and L variants of a class differ in their numbers only)
ONE_PER_CLASS = ["svm_l", "logistic_l", "ridge_l", "svm_rbf_l", "nn_l", "rf_l", "cnn"]
NOT_IMAGES = [n for n in ONE_PER_CLASS if n != "cnn"]


def small(name, **extra):
    return models.create(name, **{**SMALL.get(name, {}), **extra})


def blobs(n_classes, n=90, d=4, seed=0):
    X, y = make_blobs(n_samples=n, centers=n_classes, n_features=d, cluster_std=0.7, random_state=seed)
    return (X - X.mean(0)) / X.std(0), y


def images(n=40, seed=0):
    """12×12 'images': two classes told apart by the brightness of the left half."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.random((n, 12, 12)) * 0.5
    X[y == 1, :, :6] += 0.5
    return X.reshape(n, 144), y


# ---- scikit-learn's own checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ONE_PER_CLASS)
def test_check_estimator_passes_but_for_the_declared_checks(name):
    model = small(name)
    expected = model.expected_failed_checks()
    with threadpool_limits(1):  # BLAS threads on tiny problems only wait for each other (8 s instead of 1.5 s)
        results = check_estimator(model, expected_failed_checks=expected, on_fail=None, on_skip=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed
    assert len({r["check_name"] for r in results}) > 40  # the checks ran
    # every declared failure is a real one (the table cannot hide a check that passes), each with its reason
    outcome = {}
    for r in results:
        outcome.setdefault(r["check_name"], set()).add(r["status"])
    for check, reason in expected.items():
        assert outcome.get(check) == {"xfail"}, (check, outcome.get(check))
        assert len(reason) > 40
    assert set(expected) >= {"check_classifiers_train", "check_classifiers_classes"}


@pytest.mark.parametrize("name", NOT_IMAGES)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_what_the_two_skipped_checks_assert_holds_with_two_columns(name, n_classes):
    """check_classifiers_train and check_classifiers_classes, with transferlab's binary scores [0, f(x)]: training
    accuracy, labels back from predict, decision_function agreeing with predict, clear errors for malformed input."""
    X, y = blobs(n_classes, n=150)
    for labels in (np.arange(n_classes), np.array(["one", "two", "three"][:n_classes]),
                   np.array(["one", "two", "three"][:n_classes], dtype=object), np.array([-1, 1, 5][:n_classes])):
        yl = labels[y]
        model = small(name, **({"epochs": 20, "lr": 0.01} if name == "nn_l" else {})).fit(X, yl)
        np.testing.assert_array_equal(model.classes_, np.unique(yl))
        predicted = model.predict(X)
        assert predicted.shape == (X.shape[0],) and set(predicted) == set(labels)
        assert np.mean(predicted == yl) > 0.83
        assert model.score(X, yl) == pytest.approx(np.mean(predicted == yl))
        scores = model.decision_function(X)
        assert scores.shape == (X.shape[0], n_classes)
        np.testing.assert_array_equal(model.classes_[scores.argmax(1)], predicted)
        if n_classes == 2:  # scikit-learn's one column f(x) is s_1 − s_0 ([0, f] for the scikit-learn-trained models)
            np.testing.assert_array_equal(model.classes_[(scores[:, 1] - scores[:, 0] > 0).astype(int)], predicted)
            if name in ("svm_l", "logistic_l", "ridge_l", "svm_rbf_l"):
                assert np.all(scores[:, 0] == 0)
        for method in (model.predict, model.decision_function):
            with pytest.raises(DataError, match=f"X has 2 features, but .* is expecting 4 features"):
                method(X[:, :2])
            with pytest.raises(DataError, match="Expected 2D array"):
                method(X[0])
        with pytest.raises(DataError, match="inconsistent numbers of samples"):
            small(name).fit(X, yl[:-1])
        assert model.fit(X.tolist(), yl.tolist()) is model and model.predict(X).shape == (X.shape[0],)


# ---- parameters: get_params, set_params, clone, GridSearchCV -----------------------------------------------------
@pytest.mark.parametrize("name", list(models.MODELS))
def test_get_params_set_params_and_clone_round_trip(name):
    model = models.create(name)
    params = model.get_params(deep=True)
    assert params == model.get_params(deep=False) == models.describe(name)
    assert params == {**params, **models.MODELS[name].params}
    twin = clone(model)
    assert twin is not model and type(twin) is type(model) and twin.get_params() == params
    assert model.set_params(**params) is model and model.get_params() == params
    key = "batch_size"
    model.set_params(**{key: 17})
    assert model.get_params()[key] == 17 and clone(model).batch_size == 17
    assert repr(model).startswith(type(model).__name__ + "(")


def test_the_constructor_stores_and_fit_checks_the_parameters():
    model = models.MLP(hidden=[4, 4], weight_decay=-1)  # stored as given, no error yet
    assert model.hidden == [4, 4] and model.weight_decay == -1
    X, y = blobs(2)
    with pytest.raises(ConfigError, match="'weight_decay' must be a finite number >= 0"):
        model.fit(X, y)
    model = models.CNN(image_shape=(62,))
    assert model.image_shape == (62,)
    with pytest.raises(ConfigError, match="'image_shape' must be None or a list of 2 integers"):
        model.fit(*images())
    with pytest.raises(ConfigError, match="'C' must be a finite number > 0"):
        models.create("svm_l").set_params(C=0).fit(X, y)
    # the registry's lists of integers become tuples, as its own values are
    assert models.create("nn_h", hidden=[5, 5]).hidden == (5, 5)


def test_clone_of_a_fitted_model_is_unfitted_and_pickles():
    X, y = blobs(3)
    model = small("nn_l").fit(X, y)
    twin = clone(model)
    with pytest.raises(SklearnNotFittedError):
        twin.predict(X)
    back = pickle.loads(pickle.dumps(model))  # what joblib does with GridSearchCV(n_jobs=2): our own object
    np.testing.assert_array_equal(back.decision_function(X), model.decision_function(X))


def test_grid_search_tunes_a_surrogate():
    X, y = blobs(2, n=80, d=5, seed=3)
    search = GridSearchCV(models.create("svm_l"), {"C": [0.01, 1]}).fit(X, y)
    best = search.best_estimator_
    assert isinstance(best, models.LinearSVM) and best.C in (0.01, 1)
    assert best.input_gradient(X[:4], y[:4]).shape == (4, 5)
    search = GridSearchCV(small("nn_l"), {"weight_decay": [0.0, 0.1]}, cv=2).fit(X, np.array(["a", "b"])[y])
    assert list(search.best_estimator_.classes_) == ["a", "b"]


# ---- labels ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NOT_IMAGES)
@pytest.mark.parametrize("labels", [["benign", "malware"], [-1, 1], [3, 7, 9], ["ant", "bee", "cat"]],
                         ids=["strings", "minus-one-one", "3-7-9", "3-strings"])
def test_any_labels_give_the_model_of_their_indices(name, labels):
    """Labels are encoded to their sorted indices for training: a model fitted on [3, 7, 9] is the model fitted on
    [0, 1, 2]; its scores' columns follow classes_; predict, loss and input_gradient speak labels."""
    labels = np.array(labels)
    X, y = blobs(len(labels), n=60)
    plain = small(name).fit(X, y)
    model = small(name).fit(X, labels[y])
    np.testing.assert_array_equal(model.classes_, labels)
    np.testing.assert_array_equal(model.decision_function(X), plain.decision_function(X))
    np.testing.assert_array_equal(model.predict(X), labels[plain.predict(X)])
    np.testing.assert_array_equal(model.loss(X, labels[y]), plain.loss(X, y))
    if model.differentiable:
        np.testing.assert_array_equal(model.input_gradient(X[:5], labels[y[:5]], "cross_entropy"),
                                      plain.input_gradient(X[:5], y[:5], "cross_entropy"))
    with pytest.raises(DataError, match="is not one of .*classes_"):
        model.loss(X[:2], np.array([labels[0], "nope" if labels.dtype.kind == "U" else 4]))


def test_labelled_models_save_and_load(tmp_path):
    X, y = blobs(3, n=60)
    labels = np.array(["ant", "bee", "cat"])
    model = models.create("logistic_l").fit(X, labels[y])
    loaded = models.load(models.save(model, tmp_path / "m"))
    np.testing.assert_array_equal(loaded.classes_, labels)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    spec = json.loads((tmp_path / "m" / "spec.json").read_text())
    assert spec["classes"] == ["ant", "bee", "cat"]
    assert list(spec["params"]) == models.Logistic.param_names()  # the constructor's order, as before
    # a model of labels 0..C-1 is saved as before (no classes field) and a spec without one loads as 0..C-1
    plain = models.save(models.create("logistic_l").fit(X, y), tmp_path / "plain")
    assert "classes" not in json.loads((plain / "spec.json").read_text())
    np.testing.assert_array_equal(models.load(plain).classes_, [0, 1, 2])
    for bad in (["ant", "bee"], ["cat", "bee", "ant"], ["ant", 1, "cat"], "ant", [0.5, float("inf"), 2.0]):
        spec["classes"] = bad
        (tmp_path / "m" / "spec.json").write_text(json.dumps(spec))
        with pytest.raises(DataError, match="classes"):
            models.load(tmp_path / "m")


def test_a_cnn_is_an_estimator_on_images(tmp_path):
    X, y = images()
    labels = np.array(["cat", "dog"])
    model = small("cnn", epochs=3).fit(X, labels[y])
    assert list(model.classes_) == ["cat", "dog"] and set(model.predict(X)) <= {"cat", "dog"}
    assert model.decision_function(sp.csr_matrix(X)).shape == (40, 2)  # sparse rows: densified
    np.testing.assert_array_equal(clone(model).set_params(epochs=3).fit(X, labels[y]).decision_function(X),
                                  model.decision_function(X))  # seeded: the same network again
    assert model.input_gradient(X[:3], labels[y[:3]]).shape == (3, 144)
    with pytest.raises(DataError, match="NaN"):
        clone(model).fit(np.where(X > 0.99, np.nan, X), y)
    with pytest.raises(DataError, match="X has 100 features, but CNN is expecting 144"):
        model.predict(X[:, :100])
    np.testing.assert_array_equal(models.load(models.save(model, tmp_path / "cnn")).predict(X), model.predict(X))


# ---- before fit ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ONE_PER_CLASS)
def test_a_model_used_before_fit_raises_not_fitted(name):
    model = models.create(name)
    X = np.zeros((2, 144))
    for call in (lambda: model.predict(X), lambda: model.decision_function(X), lambda: model.loss(X, [0, 1]),
                 lambda: model.input_gradient(X, [0, 1])):
        with pytest.raises(SklearnNotFittedError, match="not fitted yet") as info:
            call()
        assert isinstance(info.value, ConfigError) and isinstance(info.value, models.NotFittedError)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(model)


def test_fit_errors_are_data_errors_of_one_line():
    X, y = blobs(2)
    model = models.create("svm_l")
    for bad_X, bad_y, match in ((np.where(X > 1, np.nan, X), y, "NaN"), (X, y.astype(float) + 0.5, "Unknown label"),
                                (X, np.zeros(len(y), int), "1 class"), (X[:0], y[:0], "0 sample"),
                                (X + 1j, y, "Complex")):
        with pytest.raises(DataError, match=match) as info:
            model.fit(bad_X, bad_y)
        assert "\n" not in str(info.value)


# ---- ensembles: the gradient of the objective the attack evaluates -------------------------------------------------
def _members(n_classes):
    X, y = blobs(n_classes, n=90, d=6, seed=n_classes)
    members = [models.create("logistic_h").fit(X, y), models.create("svm_rbf_h", gamma=0.3).fit(X, y),
               as_float64(models.create("nn_h", hidden=(16,), epochs=20, seed=1).fit(X, y))]
    return members, X, y


def _finite_differences(f, X, h=1e-6):
    """Central differences of a per-row function f of rows X, coordinate by coordinate."""
    out = np.empty_like(X)
    for j in range(X.shape[1]):
        step = np.zeros_like(X)
        step[:, j] = h
        out[:, j] = (f(X + step) - f(X - step)) / (2 * h)
    return out


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("loss", ["margin", "cross_entropy"])
def test_ensemble_gradient_is_the_gradient_of_the_loss_of_its_averaged_scores(n_classes, loss):
    members, X, y = _members(n_classes)
    ensemble = models.Ensemble(members)
    rows, labels = X[:6] + 0.05, y[:6]

    def objective(Z):  # what the attack evaluates: the loss of the ensemble's scores, computed here by hand
        scores = np.mean([m.decision_function(Z) for m in members], axis=0)
        return get_loss(loss)(torch.as_tensor(scores), torch.as_tensor(labels)).numpy()

    np.testing.assert_allclose(ensemble.loss(rows, labels, loss), objective(rows), rtol=1e-12, atol=1e-12)
    grad = ensemble.input_gradient(rows, labels, loss)
    np.testing.assert_allclose(grad, _finite_differences(objective, rows), rtol=1e-5, atol=1e-7)
    # the objective of the attacks (Objective.value: the loss of model.scores) is that loss
    from transferlab.attacks.objectives import Objective

    value = Objective(loss).value(ensemble, torch.as_tensor(rows), torch.as_tensor(labels))
    np.testing.assert_allclose(value.numpy(), objective(rows), rtol=1e-12, atol=1e-12)
    mean_of_gradients = np.mean([m.input_gradient(rows, labels, loss) for m in members], axis=0)
    if n_classes == 2 and loss == "margin":  # linear in the scores: the mean of the members' gradients
        np.testing.assert_allclose(grad, mean_of_gradients, rtol=1e-9, atol=1e-12)
    else:  # what the ensemble returned before, which is not the gradient of what the attack evaluates
        assert np.abs(grad - mean_of_gradients).max() > 1e-3 * np.abs(grad).max()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_normalized_ensemble_objective_and_its_direction(n_classes):
    """combine="normalized": A = mean of ℓ_m/‖∇ℓ_m‖; its direction, the mean of the unit gradients, is A's exact
    gradient for members whose loss gradient is locally constant (the margin of linear models and ReLU networks),
    and the gradient of A with the normalisers held fixed otherwise."""
    members, X, y = _members(n_classes)
    rows, labels = X[:6] + 0.05, y[:6]
    for loss in ("margin", "cross_entropy"):
        ensemble = models.Ensemble(members, combine="normalized")
        grads = [m.input_gradient(rows, labels, loss) for m in members]
        norms = [np.linalg.norm(g, axis=1) for g in grads]
        expected = np.mean([m.loss(rows, labels, loss) / n for m, n in zip(members, norms)], axis=0)
        np.testing.assert_allclose(ensemble.loss(rows, labels, loss), expected, rtol=1e-10)
        np.testing.assert_allclose(ensemble.input_gradient(rows, labels, loss),
                                   np.mean([g / n[:, None] for g, n in zip(grads, norms)], axis=0), rtol=1e-10)
        assert not ensemble.loss_of_scores
        value = ensemble.loss_tensor(torch.as_tensor(rows), torch.as_tensor(labels), loss)
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-10)
    # the exact gradient where the normalisers are locally constant: margin loss, a linear model and a ReLU network
    piecewise_linear = models.Ensemble([members[0], members[2]], combine="normalized")
    numeric = _finite_differences(lambda Z: piecewise_linear.loss(Z, labels), rows)
    np.testing.assert_allclose(piecewise_linear.input_gradient(rows, labels), numeric, rtol=1e-5, atol=1e-7)


def test_an_ensemble_fits_its_members_on_the_labels_and_clones():
    X, y = blobs(3, n=60)
    labels = np.array(["a", "b", "c"])
    ensemble = models.Ensemble([models.create("logistic_l"), models.create("svm_rbf_l")]).fit(X, labels[y])
    assert all(list(m.classes_) == ["a", "b", "c"] for m in ensemble.members)
    np.testing.assert_array_equal(ensemble.classes_, labels)
    assert set(ensemble.predict(X)) <= set(labels)
    assert ensemble.input_gradient(X[:3], labels[y[:3]]).shape == (3, 4)
    twin = clone(ensemble)
    assert [type(m) for m in twin.members] == [models.Logistic, models.KernelSVM]
    assert not hasattr(twin, "classes_") and not hasattr(twin.members[0], "classes_")
    with pytest.raises(ConfigError, match="same labels"):
        models.Ensemble([models.create("logistic_l").fit(X, y), models.create("logistic_l").fit(X, labels[y])])
    with pytest.raises(ConfigError, match="at least two"):
        twin.set_params(members=twin.members[:1]).fit(X, y)


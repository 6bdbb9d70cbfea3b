"""models.wrap of scikit-learn classifiers and pipelines: exact torch re-expressions (scores, predictions, gradients
against central differences) and black-box targets."""

import re
import copy
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectKBest, VarianceThreshold
from sklearn.linear_model import LogisticRegression, Perceptron, RidgeClassifier, SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (KBinsDiscretizer, MaxAbsScaler, MinMaxScaler, Normalizer, RobustScaler,
                                   StandardScaler)
from sklearn.random_projection import GaussianRandomProjection
from sklearn.svm import SVC, LinearSVC, NuSVC

from transferlab import attacks, datasets, models
from transferlab.errors import ConfigError, DataError
from transferlab.models import NotDifferentiableError
from transferlab.models.blackbox import BlackBoxClassifier
from transferlab.models.wrap import SklearnModel


def stable_id(estimator) -> str:
    """A test id that is the same in every pytest-xdist worker (no memory addresses of lambdas)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(estimator))[:40]

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def data(n_classes, labels=None, n=90, seed=0):
    X, y = make_classification(n, 5, n_informative=4, n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               class_sep=1.0, random_state=seed)
    return X, (y if labels is None else np.asarray(labels)[y])


def fitted(estimator, n_classes, labels=None):
    X, y = data(n_classes, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y), X


def reference_scores(estimator, X):
    """scikit-learn's scores in the interface's layout: decision_function with binary as [0, f], for an SVC in its
    one-vs-rest shape."""
    last = estimator[-1] if hasattr(estimator, "steps") else estimator
    if isinstance(last, (SVC, NuSVC)) and last.decision_function_shape == "ovo":
        estimator = copy.deepcopy(estimator)
        (estimator[-1] if hasattr(estimator, "steps") else estimator).decision_function_shape = "ovr"
    scores = estimator.decision_function(X)
    return np.c_[np.zeros(len(X)), scores] if scores.ndim == 1 else scores


def as_index(estimator, labels):
    return np.searchsorted(estimator.classes_, labels)


def assert_gradient_matches(model, X, y, loss="margin", h=1e-6, rtol=1e-5):
    """input_gradient against central differences of model.loss along coordinates and random directions."""
    grad = model.input_gradient(X, y, loss=loss)
    assert grad.shape == X.shape
    d = X.shape[1]
    directions = np.vstack([np.eye(d), np.random.default_rng(1).normal(size=(3, d))])
    for i in range(X.shape[0]):
        labels = np.full(len(directions), y[i])
        numeric = (model.loss(X[i] + h * directions, labels, loss) - model.loss(X[i] - h * directions, labels, loss)) \
            / (2 * h)
        np.testing.assert_allclose(directions @ grad[i], numeric, rtol=rtol,
                                   atol=1e-7 * max(1.0, np.abs(numeric).max()))


LINEAR = [LogisticRegression(), LogisticRegression(C=0.1, fit_intercept=False), RidgeClassifier(), LinearSVC(),
          LinearSVC(multi_class="crammer_singer"), SGDClassifier(random_state=0), Perceptron(random_state=0),
          LinearDiscriminantAnalysis(), OneVsRestClassifier(LogisticRegression()),
          OneVsRestClassifier(SVC(kernel="linear"))]


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("estimator", LINEAR, ids=stable_id)
def test_linear_classifiers_are_reexpressed_exactly(estimator, n_classes):
    est, X = fitted(estimator, n_classes)
    model = models.wrap(est)
    assert isinstance(model, SklearnModel) and model.differentiable
    np.testing.assert_allclose(model.decision_function(X), reference_scores(est, X), rtol=1e-10, atol=1e-10)
    assert np.array_equal(model.predict(X), as_index(est, est.predict(X)))
    assert_gradient_matches(model, X[:3], model.predict(X[:3]))


SVCS = [SVC(), SVC(gamma="auto", C=3.0), SVC(kernel="linear", C=0.5), SVC(kernel="poly", degree=3, coef0=1.0),
        SVC(kernel="poly", degree=2, gamma=0.3), SVC(kernel="sigmoid", gamma=0.05, coef0=-0.5), NuSVC(nu=0.4),
        SVC(decision_function_shape="ovo"), SVC(break_ties=True)]


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("estimator", SVCS, ids=stable_id)
def test_svc_scores_and_one_vs_one_predictions(estimator, n_classes):
    est, X = fitted(estimator, n_classes)
    model = models.wrap(est)
    assert isinstance(model, SklearnModel)
    np.testing.assert_allclose(model.decision_function(X), reference_scores(est, X), rtol=1e-9, atol=1e-9)
    wide = np.vstack([X, np.random.default_rng(2).normal(scale=3.0, size=(400, X.shape[1]))])
    assert np.array_equal(model.predict(wide), as_index(est, est.predict(wide)))
    rows = X[:3] + 0.01  # off the training points (an RBF kernel's gradient is smooth anyway)
    assert_gradient_matches(model, rows, model.predict(rows))
    assert_gradient_matches(model, rows, model.predict(rows), loss="cross_entropy")


def test_svc_vote_ties_follow_libsvm_not_the_argmax():
    """Where the top vote is tied, scikit-learn predicts the lowest class index while the argmax of its one-vs-rest
    scores follows the confidences; the wrapped model keeps both exactly."""
    est, X = fitted(SVC(kernel="poly", degree=3, coef0=0.5), 4)
    model = models.wrap(est)
    wide = np.random.default_rng(3).normal(scale=3.0, size=(2000, X.shape[1]))
    ovo = copy.deepcopy(est).set_params(decision_function_shape="ovo").decision_function(wide)
    votes = np.zeros((len(wide), 4))
    for p, (i, j) in enumerate((i, j) for i in range(4) for j in range(i + 1, 4)):
        votes[:, i] += ovo[:, p] > 0
        votes[:, j] += ovo[:, p] <= 0
    top = np.sort(votes, 1)
    tied = top[:, -1] == top[:, -2]
    assert tied.sum() >= 10
    assert np.array_equal(model.predict(wide), as_index(est, est.predict(wide)))
    scores = model.decision_function(wide)
    np.testing.assert_allclose(scores, est.decision_function(wide), rtol=1e-9, atol=1e-9)
    assert np.array_equal(scores[~tied].argmax(1), model.predict(wide[~tied]))
    assert (scores[tied].argmax(1) != model.predict(wide[tied])).any()
    # an attack counts a point as evaded where the model's prediction differs from its label: at ε = 0 exactly the
    # points predict misclassifies, vote ties included (it used to follow the argmax of the scores there)
    labels = np.asarray(model.predict(wide))
    labels[tied] = scores[tied].argmax(1)  # correct by the vote rule, wrong by the argmax on these
    result = attacks.PGDLineSearch(norm=2, eps=0.0, lb=None, ub=None).run(model, wide, labels)
    np.testing.assert_array_equal(result.success, model.predict(wide) != labels)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_mlp_logits_and_probabilities(activation, n_classes):
    est, X = fitted(MLPClassifier((7, 5), activation=activation, max_iter=300, random_state=0), n_classes)
    model = models.wrap(est)
    scores = model.decision_function(X)
    proba = np.exp(scores - scores.max(1, keepdims=True))
    np.testing.assert_allclose(proba / proba.sum(1, keepdims=True), est.predict_proba(X), rtol=1e-9, atol=1e-12)
    assert np.array_equal(model.predict(X), as_index(est, est.predict(X)))
    assert_gradient_matches(model, X[:3], model.predict(X[:3]))
    assert_gradient_matches(model, X[:3], model.predict(X[:3]), loss="cross_entropy")


PIPELINES = [
    make_pipeline(StandardScaler(), LogisticRegression()),
    make_pipeline(MinMaxScaler(feature_range=(-1, 2)), PCA(3, whiten=True), SVC(kernel="rbf")),
    make_pipeline(RobustScaler(), MaxAbsScaler(), TruncatedSVD(3, random_state=0), MLPClassifier((6,), max_iter=300,
                                                                                                 random_state=0)),
    make_pipeline(StandardScaler(with_mean=False), Normalizer(), VarianceThreshold(), SelectKBest(k=4),
                  SVC(kernel="poly", degree=2)),
    make_pipeline(make_pipeline(StandardScaler(), "passthrough"), GaussianRandomProjection(4, random_state=0),
                  Normalizer(norm="l1"), RidgeClassifier()),
    make_pipeline(MinMaxScaler(clip=True), Normalizer(norm="max"), LinearSVC()),
]


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: "-".join(type(s).__name__ for _, s in p.steps))
def test_pipelines_gradient_reaches_the_raw_input(pipeline, n_classes):
    est, X = fitted(pipeline, n_classes)
    model = models.wrap(est)
    assert isinstance(model, SklearnModel), model
    if hasattr(est, "decision_function"):
        np.testing.assert_allclose(model.decision_function(X), reference_scores(est, X), rtol=1e-9, atol=1e-9)
    else:
        scores = model.decision_function(X)
        proba = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
        np.testing.assert_allclose(proba, est.predict_proba(X), rtol=1e-9, atol=1e-12)
    assert np.array_equal(model.predict(X), as_index(est, est.predict(X)))
    rows = X[:3] * 0.9  # inside the MinMaxScaler's clip range
    assert_gradient_matches(model, rows, model.predict(rows))


def test_string_labels_keep_classes_and_gradients_take_indices():
    est, X = fitted(make_pipeline(StandardScaler(), SVC()), 3, labels=["spam", "eggs", "ham"])
    model = models.wrap(est)
    assert list(model.classes_) == ["eggs", "ham", "spam"]
    assert np.array_equal(model.predict_labels(X), est.predict(X))
    assert_gradient_matches(model, X[:2], np.array([0, 2]))
    with pytest.raises(DataError, match="integer labels"):
        model.input_gradient(X[:2], np.array(["eggs", "ham"]))
    binary, Xb = fitted(LogisticRegression(), 2, labels=[-1, 1])
    wrapped = models.wrap(binary)
    assert list(wrapped.classes_) == [-1, 1]
    assert np.array_equal(wrapped.predict_labels(Xb), binary.predict(Xb))


@pytest.mark.parametrize("estimator", [LogisticRegression(), MLPClassifier((6,), max_iter=200, random_state=0),
                                       make_pipeline(MaxAbsScaler(), SVC())], ids=lambda e: repr(e)[:30])
def test_sparse_rows_score_like_dense(estimator):
    est, X = fitted(estimator, 3)
    X[np.abs(X) < 0.8] = 0.0
    model = models.wrap(est)
    np.testing.assert_allclose(model.decision_function(sp.csr_matrix(X)), model.decision_function(X), rtol=1e-12,
                               atol=1e-12)
    assert np.array_equal(model.predict(sp.csr_matrix(X)), model.predict(X))
    y = model.predict(X[:6])
    np.testing.assert_allclose(model.input_gradient(sp.csr_matrix(X[:6]), y), model.input_gradient(X[:6], y),
                               rtol=1e-10, atol=1e-12)


BLACK_BOXES = [RandomForestClassifier(10, random_state=0), GradientBoostingClassifier(n_estimators=10, random_state=0),
               HistGradientBoostingClassifier(max_iter=10), KNeighborsClassifier(5),
               make_pipeline(StandardScaler(), RandomForestClassifier(5, random_state=0)),
               make_pipeline(KBinsDiscretizer(4, quantile_method="averaged_inverted_cdf"), LogisticRegression()),
               SVC(kernel=lambda a, b: a @ b.T)]


def _lightgbm():
    lightgbm = pytest.importorskip("lightgbm")
    return lightgbm.LGBMClassifier(n_estimators=10, min_child_samples=5, n_jobs=1, verbose=-1)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("estimator", [*BLACK_BOXES, "lightgbm"], ids=stable_id)
def test_black_box_targets_are_scored_by_the_estimator(estimator, n_classes):
    est, X = fitted(_lightgbm() if estimator == "lightgbm" else copy.deepcopy(estimator), n_classes)
    model = models.wrap(est)
    assert isinstance(model, BlackBoxClassifier) and not model.differentiable
    if hasattr(est, "decision_function"):
        expected = reference_scores(est, X)
    else:
        logp = np.log(np.clip(est.predict_proba(X), 1e-12, None))
        expected = np.c_[np.zeros(len(X)), logp[:, 1] - logp[:, 0]] if n_classes == 2 else logp
    np.testing.assert_allclose(model.decision_function(X), expected, rtol=1e-12, atol=1e-12)
    model.batch_size = 7  # scored in batches: the same scores
    np.testing.assert_allclose(model.decision_function(X), expected, rtol=1e-12, atol=1e-12)
    assert np.array_equal(model.predict(X), as_index(est, est.predict(X)))
    assert np.array_equal(model.decision_function(X).argmax(1), model.predict(X))
    with pytest.raises(NotDifferentiableError, match="differentiable surrogate"):
        model.input_gradient(X[:2], np.zeros(2, dtype=int))


def test_non_differentiable_step_is_named():
    est, X = fitted(make_pipeline(StandardScaler(), KBinsDiscretizer(4, quantile_method="averaged_inverted_cdf"),
                                  LogisticRegression()), 2)
    with pytest.raises(NotDifferentiableError, match="kbinsdiscretizer"):
        models.wrap(est).input_gradient(X[:2], np.zeros(2, dtype=int))
    with pytest.raises(ConfigError, match="where a gradient is needed.*KBinsDiscretizer"):
        models.wrap(est, differentiable=True)
    with pytest.raises(ConfigError, match="RandomForestClassifier"):
        models.wrap(RandomForestClassifier(3).fit(X, np.arange(len(X)) % 2), differentiable=True)
    forced = models.wrap(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, np.arange(len(X)) % 2),
                         differentiable=False)
    assert isinstance(forced, BlackBoxClassifier)


def test_unfitted_estimator_and_recipes():
    X, y = data(3)
    for estimator in (SVC(), make_pipeline(StandardScaler(), LogisticRegression()), RandomForestClassifier(3)):
        with pytest.raises(ConfigError, match=f"{type(estimator).__name__}.* is not fitted.*recipe"):
            models.wrap(estimator)
        recipe = models.wrap(estimator, recipe=True)
        with pytest.raises(ConfigError, match="not fitted"):
            recipe.predict(X)
        recipe.fit(X, y)
        assert not hasattr(estimator, "classes_")  # the recipe itself stays unfitted: a clone was trained
        assert np.array_equal(recipe.predict(X), as_index(recipe.estimator_, recipe.estimator_.predict(X)))
    est, _ = fitted(SVC(), 3)
    model = models.wrap(est)
    refitted = model.fit(X[:60], y[:60])
    assert refitted is model and model.estimator_ is not est and est.support_vectors_.shape != \
        model.estimator_.support_vectors_.shape
    np.testing.assert_allclose(model.decision_function(X), model.estimator_.decision_function(X), rtol=1e-9, atol=1e-9)


def test_feature_count_mismatch_and_bad_arguments():
    for estimator in (LogisticRegression(), RandomForestClassifier(3)):
        est, X = fitted(estimator, 2)
        model = models.wrap(est)
        with pytest.raises(DataError, match="fitted on 5 features"):
            model.decision_function(X[:, :4])
        with pytest.raises(DataError, match="fitted on 5 features"):
            model.predict(np.zeros((2, 6)))
    with pytest.raises(DataError, match="fitted on 5 features"):
        models.wrap(fitted(SVC(), 3)[0]).input_gradient(np.zeros((2, 4)), np.zeros(2, dtype=int))
    with pytest.raises(ConfigError, match="n_classes=3"):
        models.wrap(fitted(SVC(), 2)[0], n_classes=3)
    with pytest.raises(ConfigError, match="transferlab classifier already"):
        models.wrap(models.create("svm_l"))


def test_wrapped_torch_module_repr_is_one_line():
    import torch

    net = models.wrap(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)),
                      n_classes=3, n_features=5)
    text = repr(net)
    assert text == "WrappedModule(Sequential, n_features=5, n_classes=3, dtype=float32, device='cpu')"
    assert net.get_params()["n_classes"] == 3



def test_a_model_fitted_on_a_table_checks_its_column_names():
    """A model fitted on a DataFrame scores rows by position: a table with its columns in another order (or other
    columns) is refused with scikit-learn's rule, for scores, gradients and attacks alike, and the same table in
    the fitted order scores as the estimator does. Plain arrays carry no names and are taken as they are."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = (X[:, 0] > 0).astype(int)
    table = pd.DataFrame(X, columns=["a", "b", "c"])
    for estimator in (LogisticRegression(), RandomForestClassifier(n_estimators=5, random_state=0)):
        fitted = estimator.fit(table, y)
        model = models.wrap(fitted)
        np.testing.assert_array_equal(model.classes_[model.predict(table)], fitted.predict(table))
        reordered = table[["c", "b", "a"]]
        with pytest.raises(DataError, match=r"columns \['c', 'b', 'a'\] are not the feature names .*\['a', 'b', "
                                            r"'c'\]"):
            model.decision_function(reordered)
        with pytest.raises(DataError, match="not the feature names"):
            model.predict(table.rename(columns={"a": "x"}))
        model.decision_function(X)  # an array: no names to check
    linear = models.wrap(LogisticRegression().fit(table, y))
    with pytest.raises(DataError, match="not the feature names"):
        linear.input_gradient(reordered, y[:50])
    with pytest.raises(DataError, match="not the feature names"):
        attacks.PGDLineSearch(norm=2, eps=0.5, lb=None, ub=None).run(linear, reordered, y)
    attack = attacks.PGDLineSearch(norm=2, eps=0.5, lb=None, ub=None)
    np.testing.assert_array_equal(attack.run(linear, table, y).x_adv, attack.run(linear, X, y).x_adv)


def test_a_wrapped_bare_linear_classifier_takes_the_closed_form_line_search():
    """The line search's closed form is chosen by what the model is (its scores affine in x), not by its class: a
    wrapped fitted LogisticRegression takes it, and gives the registry model's points on the same weights; so does
    a pipeline of affine steps before it, not one with a Normalizer, nor an MLP."""
    from sklearn.preprocessing import StandardScaler

    data = datasets.load("mnist89")
    rows = np.random.default_rng(0).choice(len(data.y), 300, replace=False)
    X, y = data.X[rows], data.y[rows]
    native = models.create("logistic_h").fit(X, y)
    wrapped = models.wrap(native.estimator_)
    assert native.affine_scores and wrapped.affine_scores
    assert models.wrap(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)).affine_scores
    assert not models.wrap(make_pipeline(Normalizer(), LogisticRegression()).fit(X, y)).affine_scores
    assert not models.wrap(MLPClassifier(hidden_layer_sizes=(5,), max_iter=20).fit(X, y)).affine_scores
    attack = attacks.PGDLineSearch(norm=2, eps=1.5)
    solved = []
    closed_form = attack._attack_linear
    attack._attack_linear = lambda *args: solved.append(args[0]) or closed_form(*args)
    ours, theirs = attack.run(native, X[:60], y[:60]), attack.run(wrapped, X[:60], y[:60])
    assert solved == [native, wrapped]
    np.testing.assert_allclose(theirs.x_adv, ours.x_adv, rtol=0, atol=1e-9)


def test_audit_and_security_curves_check_a_tables_columns_too():
    """A review found the column-name rule bypassed where X was converted first: audit and security_curve now
    refuse a reordered table as the attacks do. An array whose rows are taken in reverse (negative strides) is
    scored as its copy."""
    pd = pytest.importorskip("pandas")
    from transferlab.audit import audit

    rng = np.random.default_rng(1)
    X = rng.uniform(size=(80, 3))
    y = (X[:, 0] > 0.5).astype(int)
    table = pd.DataFrame(X, columns=["a", "b", "c"])
    model = models.wrap(LogisticRegression().fit(table, y))
    reordered = table[["b", "a", "c"]]
    with pytest.raises(DataError, match="not the feature names"):
        audit(model, {"m": model}, reordered, y, [0.5])
    with pytest.raises(DataError, match="not the feature names"):
        attacks.security_curve(attacks.PGDLineSearch(norm=2), model, reordered, y, [0, 0.5])
    in_order = audit(model, {"m": model}, table, y, [0.5])[0]
    assert in_order.predicted == audit(model, {"m": model}, X, y, [0.5])[0].predicted
    reversed_rows = X[::-1]  # rows in reverse order: negative strides, which torch does not take
    np.testing.assert_array_equal(model.decision_function(reversed_rows), model.decision_function(reversed_rows.copy()))


def test_an_ensemble_of_models_fitted_on_a_table_checks_its_columns():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(2)
    table = pd.DataFrame(rng.uniform(size=(80, 3)), columns=["a", "b", "c"])
    y = (table["a"] > 0.5).astype(int).to_numpy()
    members = [models.wrap(LogisticRegression().fit(table, y)), models.wrap(LinearSVC().fit(table, y))]
    ensemble = models.Ensemble(members)
    np.testing.assert_allclose(ensemble.decision_function(table),
                               np.mean([m.decision_function(table) for m in members], axis=0), rtol=1e-12)
    with pytest.raises(DataError):
        ensemble.decision_function(table[["c", "b", "a"]])
    with pytest.raises(DataError, match="not the feature names"):
        attacks.PGDLineSearch(norm=2, eps=0.5, lb=None, ub=None).run(ensemble, table[["c", "b", "a"]], y)
    other = models.wrap(LogisticRegression().fit(table.rename(columns={"a": "x"}), y))
    with pytest.raises(ConfigError, match="same columns"):
        models.Ensemble([members[0], other])


def test_a_wrapped_binary_rbf_svc_takes_the_kernel_line_search():
    """A wrapped bare binary RBF SVC describes its scores as a kernel expansion (rbf_form), so the line search
    scores candidates from cached kernel terms as for the registry's RBF SVM: its kernel form gives its own
    scores, and the registry model on the same fitted SVC gives the same points. A multiclass SVC (one-vs-rest
    votes) and a pipeline do not claim the form."""
    import torch
    from sklearn.preprocessing import StandardScaler

    from transferlab.attacks.paths import KernelPath, path_for

    data = datasets.load("mnist89")
    rows = np.random.default_rng(0).choice(len(data.y), 300, replace=False)
    X, y = data.X[rows], data.y[rows]
    native = models.create("svm_rbf_h").fit(X, y)
    wrapped = models.wrap(native.estimator_)
    sv, sv_sq, dual, intercept, gamma = wrapped.rbf_form()
    Xt = torch.as_tensor(X[:20])
    kernel = torch.exp(-gamma * ((Xt ** 2).sum(1, keepdim=True) + sv_sq - 2 * Xt @ sv.T).clamp_min(0))
    np.testing.assert_allclose((kernel @ dual + intercept).numpy(), wrapped.decision_function(X[:20]), rtol=1e-10,
                               atol=1e-10)
    objective = attacks.Objective()
    assert isinstance(path_for(wrapped, objective, Xt, torch.as_tensor(y[:20])), KernelPath)
    three = np.r_[y[:200], np.full(100, 2)]
    assert models.wrap(SVC(gamma=0.01).fit(X, three)).rbf_form() is None
    assert models.wrap(make_pipeline(StandardScaler(), SVC()).fit(X, y)).rbf_form() is None
    attack = attacks.PGDLineSearch(norm=2, eps=1.0)
    ours, theirs = attack.run(native, X[:40], y[:40]), attack.run(wrapped, X[:40], y[:40])
    np.testing.assert_allclose(theirs.x_adv, ours.x_adv, rtol=0, atol=1e-8)
    decided = np.abs(native.decision_function(ours.x_adv)[:, 1]) > 1e-6  # two implementations: not on a tie
    np.testing.assert_array_equal(theirs.success[decided], ours.success[decided])


@pytest.mark.parametrize("steps", [[StandardScaler()], [MinMaxScaler()], [MaxAbsScaler()], [RobustScaler()],
                                   [PCA(5, whiten=True)], [StandardScaler(), PCA(4)],
                                   [VarianceThreshold(), StandardScaler()], [SelectKBest(k=5), MinMaxScaler(), PCA(3)],
                                   [TruncatedSVD(4)]], ids=lambda steps: "+".join(type(s).__name__ for s in steps))
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_affine_pipeline_steps_fold_into_the_first_product(steps, head):
    """Scalers without clipping, projections and selectors are affine: folded into the head's first product
    (fold_affine), x W'ᵀ + b' gives the step-by-step scores to rounding, sparse rows are scored through it as the
    dense ones, and the input gradient still matches finite differences. A clipping scaler or a Normalizer is not
    folded."""
    import torch

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(120, 12))
    X[:, 3] = 0.5  # a constant column, which VarianceThreshold drops
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    classifier = LogisticRegression() if head == "linear" else MLPClassifier((7,), max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = models.wrap(make_pipeline(*copy.deepcopy(steps), classifier).fit(X, y))
    weight, bias, tail = model.affine_input()
    rows = torch.as_tensor(X)
    np.testing.assert_allclose(tail(rows @ weight.T + bias).numpy(), model.scores(rows).numpy(), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(model.decision_function(sp.csr_matrix(X)), model.decision_function(X), rtol=1e-12,
                               atol=1e-12)
    assert model.affine_scores == (head == "linear")
    g = model.input_gradient(X[:3], y[:3])
    h = 1e-6
    fd = np.stack([(model.loss(X[:3] + h * e, y[:3]) - model.loss(X[:3] - h * e, y[:3])) / (2 * h)
                   for e in np.eye(12)], 1)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)
    for unfoldable in (MinMaxScaler(clip=True), Normalizer()):
        assert models.wrap(make_pipeline(unfoldable, LogisticRegression()).fit(X, y)).affine_input() is None

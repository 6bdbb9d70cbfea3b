"""A user's own models in experiments (config ``saved_models``): a scikit-learn Pipeline and a random forest as
``.skops`` files, a LightGBM detector as an ``.onnx`` file, next to registry models — as evasion targets and
surrogates, under feature addition with a detector at a fixed false-positive rate on sparse data, as retrained
poisoning targets (recipes), in ``audit``, in the run's identity — and the bad inputs, each one line and exit 2."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from cli_runner import run_in_process as _main
from drebin_data import write_drebin_csv
from tables import read_csv
from transferlab import datasets, models
from transferlab.errors import ConfigError, DataError
from transferlab.experiments import artifacts, common, evasion, runner, saved
from transferlab.experiments.data import load_split
from transferlab.experiments.config import parse_config
from transferlab.report import build_report

skops_io = pytest.importorskip("skops.io")
pytest.importorskip("onnxruntime")
lightgbm = pytest.importorskip("lightgbm")
onnxmltools = pytest.importorskip("onnxmltools")

from sklearn.base import clone  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


# ---- the user's models ---------------------------------------------------------------------------------------------
def _onnx_lightgbm(X: np.ndarray, y: np.ndarray, path, n_features: int | None = None):
    """A LightGBM detector trained on (X, y), exported with onnxmltools (no ZipMap: a plain probability tensor)."""
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = lightgbm.LGBMClassifier(n_estimators=15, num_leaves=7, min_child_samples=5, verbose=-1,
                                    random_state=0).fit(X, y)
    width = X.shape[1] if n_features is None else n_features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = onnxmltools.convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, width]))],
                                           zipmap=False)
    path.write_bytes(onx.SerializeToString())
    return model


def _own_models(folder, X: np.ndarray, names: np.ndarray, prefix: str = "") -> dict:
    """Fit and save the three user models on rows X with labels given by class name (as a user would)."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500)).fit(X, names)
    forest = RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0).fit(X, names)
    skops_io.dump(pipe, folder / f"{prefix}pipe.skops")
    skops_io.dump(forest, folder / f"{prefix}forest.skops")
    lgbm = _onnx_lightgbm(X, names, folder / f"{prefix}lgbm.onnx")
    return {"pipe": pipe, "forest": forest, "lgbm": lgbm,
            "paths": {"pipe": str(folder / f"{prefix}pipe.skops"), "forest": str(folder / f"{prefix}forest.skops"),
                      "lgbm": str(folder / f"{prefix}lgbm.onnx")}}


@pytest.fixture(scope="module")
def mnist_models(tmp_path_factory):
    """The user's models fitted on 200 MNIST89 images with labels '8'/'9' (the dataset's class names)."""
    folder = tmp_path_factory.mktemp("own")
    data = datasets.load("mnist89")
    rows = np.random.default_rng(1).choice(len(data.y), 200, replace=False)
    return _own_models(folder, data.X[rows], np.asarray(data.classes)[data.y[rows]])


MNIST = {
    "name": "own-mnist",
    "dataset": {"name": "mnist89"},
    "split": {"n_target": 60, "n_surrogate": 60, "n_test": 16},
    "surrogates": ["logistic_l", "pipe"],
    "targets": ["logistic_l", "rf_l", "pipe", "forest", "lgbm"],
    "model_overrides": {"rf_l": {"n_estimators": 5}},
    "attack": {"norm": 2, "eps": [0, 1, 2], "solver": {"max_iter": 8}},
    "variance": {"n_surrogates": 2},
    "seed": 1,
}


@pytest.fixture(scope="module")
def mnist_run(mnist_models, tmp_path_factory):
    config = parse_config({**MNIST, "saved_models": mnist_models["paths"]})
    out = runner.run_experiment(config, tmp_path_factory.mktemp("own-run") / "run", show_progress=False)
    build_report(out)
    return out, config


def test_saved_models_are_targets_and_a_saved_pipeline_a_surrogate(mnist_run, mnist_models):
    out, config = mnist_run
    results = read_csv(out / "results.csv")
    transfer = [r for r in results if r["setting"] == "transfer"]
    assert {(r["surrogate"], r["target"]) for r in transfer} == {(s, t) for s in MNIST["surrogates"]
                                                                 for t in MNIST["targets"]}
    # white-box cells for the differentiable targets only: never for a forest or a black box
    assert {r["target"] for r in results if r["setting"] == "white-box"} == {"logistic_l", "pipe"}
    # the clean error of each saved model is its own estimator's error on the test points, labels by class name
    test = load_split(config, 0).test
    names = np.asarray(datasets.load("mnist89").classes)[test.y]
    for name in ("pipe", "forest", "lgbm"):
        clean = {float(r["error"]) for r in transfer if r["target"] == name and float(r["budget"]) == 0}
        assert len(clean) == 1  # the same clean points in every transfer cell
        assert clean.pop() == pytest.approx(float(np.mean(mnist_models[name].predict(test.X) != names)), abs=1e-12)
    # S and R undefined (empty) for targets without gradient, finite for the saved pipeline
    for r in read_csv(out / "metrics.csv"):
        if r["target"] in ("rf_l", "forest", "lgbm"):
            assert r["S"] == "" and r["R"] == "", r
        else:
            assert float(r["S"]) > 0 and -1 <= float(r["R"]) <= 1, r
    white = [r for r in read_csv(out / "metrics.csv") if r["setting"] == "white-box" and r["target"] == "pipe"]
    assert white and all(abs(float(r["R"]) - 1) < 1e-9 for r in white)
    report = (out / "report.html").read_text()
    assert "Undefined S and R" in report and all(f"<code>{t}</code>" in report for t in ("rf_l", "forest", "lgbm"))
    # the run folder holds its own copy of each saved model, which scores as the file does
    X = test.X[:5]
    for name in ("pipe", "forest", "lgbm"):
        copy = models.load(out / "models/r0/target" / name)
        np.testing.assert_allclose(copy.decision_function(X), saved.load_saved(config, name).decision_function(X),
                                   rtol=1e-6, atol=1e-6)


def test_audit_of_saved_models_in_a_run_and_from_a_config(mnist_run, mnist_models):
    from transferlab.audit import audit_config, audit_run

    out, config = mnist_run
    # a differentiable saved target: S, R and the prediction, beside the measured rates
    rows = audit_run(out, "pipe")
    assert {r.surrogate for r in rows} == {"logistic_l", "pipe"}
    assert all(np.isfinite([r.S, r.R, r.predicted, r.measured]).all() and not r.note for r in rows)
    # a black-box target: undefined S, R, prediction, with the note; the run's measured transfer for it
    measured = {(r["surrogate"], float(r["budget"])): float(r["error"]) for r in read_csv(out / "results.csv")
                if r["setting"] == "transfer" and r["target"] == "lgbm"}
    for target in ("lgbm", "forest", "rf_l"):
        rows = audit_run(out, target)
        assert all(np.isnan([r.S, r.R, r.predicted]).all() and r.rank == 0 for r in rows)
        assert all("no input gradient" in r.note and "measured" in r.note for r in rows)
        if target == "lgbm":
            got = {(r.surrogate, r.budget): r.measured for r in rows}
            assert got.keys() == {k for k in measured if k[1] > 0}
            assert all(got[k] == pytest.approx(measured[k], abs=1e-12) for k in got)
    result = _main("audit", str(out), "--target", "lgbm")
    assert result.returncode == 0, result.stderr
    assert "note: lgbm has no input gradient" in result.stdout and "Spearman" not in result.stdout
    # from a config: a saved surrogate and a black-box saved target (nothing measured: the note says where to look)
    rows = audit_config(config, "forest", ["pipe", "logistic_l"], n_points=6, eps=[1.0])
    assert len(rows) == 2 and all(np.isnan(r.S) and "audit the finished run folder" in r.note for r in rows)
    assert np.isfinite([r.V for r in rows if r.surrogate == "logistic_l"]).all()
    rows = audit_config(config, "pipe", ["pipe", "logistic_l"], n_points=6, eps=[1.0])
    assert all(np.isfinite([r.S, r.R, r.predicted]).all() for r in rows)
    assert abs(next(r.R for r in rows if r.surrogate == "pipe") - 1) < 1e-9
    refused = _main("audit", _write_config(out.parent, {**MNIST, "saved_models": mnist_models["paths"]}),
                    "--target", "pipe", "--surrogates", "lgbm", "--points", "4")
    _assert_one_line(refused, "--surrogates: 'lgbm' has no input gradient")


def test_a_changed_model_file_changes_the_runs_identity(mnist_run, mnist_models, tmp_path):
    """The bytes of each saved file are part of the run's data fingerprint: a run folder made with one forest is
    not resumed with another saved under the same path."""
    out, config = mnist_run
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    data = datasets.load("mnist89")
    before = runner.data_fingerprint(data, config.saved_models)
    original = Path(mnist_models["paths"]["forest"])
    backup = tmp_path / "backup.skops"
    shutil.copy(original, backup)
    try:
        skops_io.dump(clone(mnist_models["forest"]).set_params(random_state=7).fit(*_forest_data()), original)
        assert runner.data_fingerprint(data, config.saved_models) != before
        with pytest.raises(ConfigError, match="other data"):
            runner.run_experiment(config, folder, show_progress=False)
    finally:
        shutil.copy(backup, original)
    assert runner.data_fingerprint(data, config.saved_models) == before
    # a single file is hashed as well as a folder: without the forest the fingerprint differs
    assert runner.data_fingerprint(data, {k: v for k, v in config.saved_models.items() if k != "forest"}) != before


def _forest_data():
    data = datasets.load("mnist89")
    rows = np.random.default_rng(5).choice(len(data.y), 100, replace=False)
    return data.X[rows], np.asarray(data.classes)[data.y[rows]]


# ---- feature addition, a detector at a fixed FPR, sparse data -----------------------------------------------------
MALWARE = {
    "name": "own-malware",
    "dataset": {"name": "drebin-csv"},
    "split": {"n_target": 80, "n_surrogate": 80, "n_validation": 60, "n_test": 60},
    "surrogates": ["logistic_h"],
    "targets": ["svm_l", "pipe", "forest", "lgbm"],
    "attack": {"kind": "feature_addition", "norm": 1, "eps": [0, 1, 3], "feature_addition": True, "binary": True,
               "attack_class": "malware"},
    "detector": {"fpr": 0.05},
    "variance": {"n_surrogates": 2},
}


@pytest.fixture(scope="module")
def malware(tmp_path_factory):
    folder = tmp_path_factory.mktemp("malware")
    write_drebin_csv(folder / "drebin.csv", n=320, n_features=24, seed=3)
    data = datasets.load("drebin-csv", path=str(folder / "drebin.csv"))
    rows = np.random.default_rng(2).choice(len(data.y), 150, replace=False)
    own = _own_models(folder, data.X[rows].toarray(), np.asarray(data.classes)[data.y[rows]])
    config = parse_config({**MALWARE, "dataset": {"name": "drebin-csv", "path": str(folder / "drebin.csv")},
                           "saved_models": own["paths"]})
    out = runner.run_experiment(config, folder / "run", show_progress=False)
    build_report(out)
    return out, config, own


def test_black_box_detectors_at_a_fixed_fpr_use_the_positive_class_score(malware):
    """The detector's score of a black box is its log-odds of the flagged class (malware): for the forest
    log p(malware) − log p(benign) of its predict_proba, for the ONNX LightGBM the same from its two probability
    columns; the threshold holds the asked FPR on the calibration data, and the clean evasion rate is the share of
    test malware scored at or below it."""
    out, config, own = malware
    split = load_split(config, 0)
    positive = evasion._positive(config)
    assert positive == 1  # malware
    malware_rows = split.test.subset(np.flatnonzero(split.test.y == positive))
    results = read_csv(out / "results.csv")
    for name in ("forest", "lgbm", "pipe"):
        model = saved.load_saved(config, name)
        X = split.validation.X
        p = np.clip(own[name].predict_proba(X.toarray()), 1e-12, None)
        expected = np.log(p[:, 1]) - np.log(p[:, 0]) if name != "pipe" else own[name].decision_function(X.toarray())
        tolerance = 1e-4 if name == "lgbm" else 1e-8  # ONNX Runtime computes in float32
        np.testing.assert_allclose(evasion.detection_score(model, X, positive), expected, rtol=tolerance,
                                   atol=tolerance)
        threshold = artifacts.load_extra(out, common.Cell("train", 0, name, "target"))["threshold"]
        negatives = split.validation.X[split.validation.y != positive]
        assert np.mean(evasion.detection_score(model, negatives, positive) > threshold) <= 0.05
        flagged = evasion.detection_score(model, malware_rows.X, positive) > threshold
        clean = {float(r["error"]) for r in results if r["target"] == name and float(r["budget"]) == 0}
        assert len(clean) == 1 and clean.pop() == pytest.approx(float(np.mean(~flagged)), abs=1e-12)
    assert {r["target"] for r in results if r["setting"] == "white-box"} == {"svm_l", "pipe"}


def test_sparse_points_stay_sparse_and_only_gain_features(malware):
    out, config, _ = malware
    split = load_split(config, 0)
    x0 = split.test.X[split.test.y == 1]
    with np.load(out / "points" / "r0_transfer_logistic_h_f1.npz") as npz:
        assert "eps_3" not in npz  # stored as CSR parts, not as a dense matrix
        points = {b: artifacts.read_points(npz, f"eps_{b}") for b in (0, 1, 3)}
        assert all(sp.issparse(v) for v in points.values())
    assert (points[0] != x0).nnz == 0
    for budget in (1, 3):
        added = (points[budget] - x0).toarray()
        assert added.min() >= 0 and added.sum(1).max() <= budget and set(np.unique(points[budget].data)) <= {1.0}


def test_gradient_metrics_in_row_blocks_equal_the_whole(monkeypatch, malware):
    """S and R of wide data go through the gradients a block of rows at a time; the result is the whole's."""
    out, config, _ = malware
    split = load_split(config, 0)
    X, y = split.test.X, split.test.y
    source = artifacts.load_trained(out, config, common.Cell("train", 0, "svm_l", "target"))
    targets = {n: (artifacts.load_trained(out, config, common.Cell("train", 0, n, "target")), None)
               for n in ("svm_l", "pipe")}
    whole = evasion.size_and_alignment(source, targets, X, y, "margin", np.inf)
    monkeypatch.setattr(evasion, "GRADIENT_BLOCK_ELEMENTS", 7 * X.shape[1])  # blocks of 7 rows
    assert len(evasion.row_blocks(*X.shape)) > 2
    blocked = evasion.size_and_alignment(source, targets, X, y, "margin", np.inf)
    for name in targets:
        np.testing.assert_allclose(blocked[name], whole[name], rtol=1e-12)
    assert whole["svm_l"][1] == pytest.approx(1.0)


# ---- poisoning: a saved recipe retrained on the poisoned data ------------------------------------------------------
POISON = {
    "name": "own-poison",
    "kind": "poisoning",
    "dataset": {"name": "mnist89"},
    "split": {"n_target": 50, "n_surrogate": 50, "n_test": 60, "n_validation": 40},
    "surrogates": ["logistic_l"],
    "targets": ["logistic_l", "recipe", "forest"],
    "attack": {"kind": "poisoning", "fractions": [0.1], "solver": {"max_passes": 1, "max_iter": 2}},
    "variance": {"n_surrogates": 2},
}


def test_a_saved_recipe_is_retrained_on_the_poisoned_data(tmp_path, mnist_models):
    recipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))  # unfitted: a recipe
    skops_io.dump(recipe, tmp_path / "recipe.skops")
    unseeded = RandomForestClassifier(n_estimators=6)  # random_state None: the run seeds it per repetition
    skops_io.dump(unseeded.fit(*_forest_data()), tmp_path / "forest.skops")
    config = parse_config({**POISON, "saved_models": {"recipe": str(tmp_path / "recipe.skops"),
                                                      "forest": str(tmp_path / "forest.skops")}})
    out = runner.run_experiment(config, tmp_path / "run", show_progress=False)
    build_report(out)
    results = read_csv(out / "results.csv")
    split = load_split(config, 0)
    assert {r["target"] for r in results if r["setting"] == "white-box"} == {"logistic_l"}
    # clean: the recipe fitted on the target's data; poisoned: on the target's data plus the crafted points
    clean = clone(recipe).fit(split.target.X, split.target.y)
    row = next(r for r in results if r["setting"] == "clean" and r["target"] == "recipe")
    assert float(row["error"]) == pytest.approx(float(np.mean(clean.predict(split.test.X) != split.test.y)))
    with np.load(out / "points" / "r0_transfer_logistic_l_f1_p0.1.npz") as npz:
        X_p, y_p = npz["X"].astype(np.float64), npz["y"]
    poisoned = clone(recipe).fit(np.vstack([split.target.X, X_p]), np.r_[split.target.y, y_p])
    row = next(r for r in results if r["setting"] == "transfer" and r["target"] == "recipe")
    assert float(row["error"]) == pytest.approx(float(np.mean(poisoned.predict(split.test.X) != split.test.y)),
                                                abs=1e-12)
    forest = saved.retrainable_target(config, "forest", 0)
    assert forest.estimator.random_state == saved.recipe_seed(config, 0)
    assert saved.retrainable_target(config, "forest", 1).estimator.random_state == saved.recipe_seed(config, 1)
    refit = clone(forest.estimator).fit(np.vstack([split.target.X, X_p]), np.r_[split.target.y, y_p])
    row = next(r for r in results if r["setting"] == "transfer" and r["target"] == "forest")
    assert float(row["error"]) == pytest.approx(float(np.mean(refit.predict(split.test.X) != split.test.y)),
                                                abs=1e-12)
    assert all(r["S"] == "" for r in read_csv(out / "metrics.csv") if r["target"] in ("recipe", "forest"))


# ---- model_overrides: seed and device ------------------------------------------------------------------------------
def test_model_overrides_seed_and_device_are_used_as_given():
    base = {"split": {"n_target": 40, "n_surrogate": 40, "n_test": 10}, "surrogates": ["nn_h"], "targets": ["nn_h"],
            "attack": {"eps": [0, 1]}, "seed": 2}
    plain = parse_config({**base, "model_overrides": {"nn_h": {"epochs": 1}}})
    # without an override: the run's seed per repetition and draw, as always
    assert common.create_model(plain, "nn_h", 1, 2).seed == 2 * 100_003 + 1 * 101 + 2
    seeded = parse_config({**base, "model_overrides": {"nn_h": {"epochs": 1, "seed": 5}}})
    assert {common.create_model(seeded, "nn_h", r, d).seed for r in (0, 1) for d in (0, 3)} == {5}
    data = datasets.split(datasets.load("mnist89"), 40, 40, 10, seed=0).target
    trained = saved.obtain_model(seeded, "nn_h", 1, 0, data)
    own = models.create("nn_h", epochs=1, seed=5).fit(data.X, data.y)
    np.testing.assert_array_equal(trained.decision_function(data.X), own.decision_function(data.X))
    placed = parse_config({**base, "model_overrides": {"nn_h": {"device": "cuda"}}})
    assert common.create_model(placed, "nn_h", 0).device == "cuda" and common.model_device(placed, "nn_h") == "cuda"
    assert common.create_model(placed, "logistic_l", 0).device == "cpu"


# ---- bad input: one line naming the model and the fix, exit 2 ------------------------------------------------------
def _assert_one_line(result, message):
    assert result.returncode == 2, (result.returncode, result.stderr, result.stdout)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _write_config(folder, data, name="c.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


TINY = {"name": "own-bad", "split": {"n_target": 30, "n_surrogate": 30, "n_test": 6}, "surrogates": ["logistic_l"],
        "targets": ["logistic_l", "mine"], "attack": {"norm": 2, "eps": [0, 1], "solver": {"max_iter": 2}}}


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, mnist_models):
    folder = tmp_path_factory.mktemp("bad")
    X, names = _forest_data()
    skops_io.dump(make_pipeline(StandardScaler(), LogisticRegression()), folder / "unfitted.skops")
    skops_io.dump(LogisticRegression(max_iter=300).fit(X[:, :10], names), folder / "narrow.skops")
    _onnx_lightgbm(X[:, :20], names, folder / "narrow.onnx")
    signs = np.where(names == "8", -1, 1)
    skops_io.dump(LogisticRegression(max_iter=300).fit(X, signs), folder / "signs.skops")
    (folder / "corrupt.skops").write_bytes(b"PK\x03\x04 not a zip archive at all")
    (folder / "corrupt.onnx").write_bytes(b"\x08\x07garbage")
    (folder / "model.pkl").write_bytes(b"\x80\x04.")
    models.save(models.load(mnist_models["paths"]["lgbm"]), folder / "onnx_folder")  # a models.save folder
    return folder


BAD = [
    ("an unfitted estimator", {"mine": "unfitted.skops"}, {}, "saved_models.mine"),
    ("a model of another feature count", {"mine": "narrow.skops"}, {}, "the model takes 10 features, the data "
                                                                        "have 784"),
    ("an .onnx whose input does not fit", {"mine": "narrow.onnx"}, {}, "the model takes 20 features"),
    ("labels that are not the dataset's", {"mine": "signs.skops"}, {}, "the model's classes [-1, 1] are neither "
                                                                        "the dataset's class names ['8', '9']"),
    ("a corrupt .skops file", {"mine": "corrupt.skops"}, {}, "is not a valid .skops file"),
    ("a corrupt .onnx file", {"mine": "corrupt.onnx"}, {}, "is not a valid ONNX model"),
    ("a pickle", {"mine": "model.pkl"}, {}, "transferlab does not load .pkl files"),
    ("a missing file", {"mine": "nowhere.skops"}, {}, "does not exist"),
    ("a black box as a surrogate", {"mine": "FOREST"}, {"surrogates": ["mine"]},
     "surrogates: the saved model 'mine' is a black box (step 'randomforestclassifier' (RandomForestClassifier) is "
     "not differentiable"),
    ("overrides of a saved model", {"mine": "FOREST"}, {"model_overrides": {"mine": {"C": 1}}},
     "'mine' is a saved model"),
    ("a saved poisoning surrogate", {"mine": "FOREST"}, {**POISON, "surrogates": ["mine"], "targets": ["logistic_l"]},
     "poisoning differentiates the surrogate's training"),
    ("an .onnx poisoning target", {"mine": "LGBM"}, {**POISON, "targets": ["mine"]},
     "an .onnx model cannot be retrained"),
    ("a saved ONNX model as a poisoning target", {"mine": "onnx_folder"}, {**POISON, "targets": ["mine"]},
     "a poisoning target is retrained on the poisoned data, and this model cannot be: it is an ONNX model"),
]


@pytest.mark.parametrize("what, saved, change, message", BAD, ids=[c[0] for c in BAD])
def test_bad_saved_models_are_one_line_and_exit_2(tmp_path, bad_models, mnist_models, what, saved, change,
                                                  message):
    paths = {"FOREST": mnist_models["paths"]["forest"], "LGBM": mnist_models["paths"]["lgbm"]}
    saved = {name: paths.get(file, str(bad_models / file)) for name, file in saved.items()}
    data = {**TINY, **change, "saved_models": saved}
    result = _main("run", _write_config(tmp_path, data), "--out", str(tmp_path / "out"))
    _assert_one_line(result, message)
    assert "mine" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_the_unfitted_estimator_message_says_how_to_fix_it(bad_models):
    config = parse_config({**TINY, "saved_models": {"mine": str(bad_models / "unfitted.skops")}})
    with pytest.raises(ConfigError, match=r"saved_models\.mine \(.*unfitted\.skops\): it holds an unfitted "
                                          r"Pipeline\(StandardScaler, LogisticRegression\); fit it before saving"):
        evasion.check_data(config)
    with pytest.raises(DataError, match=r"saved_models\.mine .* not a valid \.skops file"):
        evasion.check_data(parse_config({**TINY, "saved_models": {"mine": str(bad_models / "corrupt.skops")}}))


def test_a_black_box_surrogate_is_refused_saying_what_to_use(mnist_models):
    config = parse_config({**TINY, "surrogates": ["mine"], "saved_models": {"mine": mnist_models["paths"]["lgbm"]}})
    with pytest.raises(ConfigError, match=r"surrogates: the saved model 'mine' is a black box \(it runs in ONNX "
                                          r"Runtime, which gives no gradient\).* keep it as a target, and craft on a "
                                          r"differentiable surrogate"):
        evasion.check_data(config)

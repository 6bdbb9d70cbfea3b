"""Ensemble surrogates and a user's own saved models in experiments."""

import copy
import csv
import shutil

import numpy as np
import pytest
import yaml

from cli_runner import run_in_process
from conftest import as_float64, finite_difference_check
from transferlab import attacks, datasets, models
from transferlab.errors import ConfigError
from transferlab.experiments import runner
from transferlab.experiments.config import parse_config


@pytest.fixture(scope="module")
def parts():
    return datasets.split(datasets.load("mnist89"), n_target=120, n_surrogate=120, n_test=40, seed=2)


@pytest.fixture(scope="module")
def _members_once(parts):
    return [models.create("svm_l").fit(parts.surrogate.X, parts.surrogate.y),
            models.create("svm_rbf_h").fit(parts.surrogate.X, parts.surrogate.y),
            as_float64(models.create("nn_l", epochs=3).fit(parts.surrogate.X, parts.surrogate.y))]


@pytest.fixture()
def members(_members_once):
    """The members, fitted once per module; each test gets its own copies (``Ensemble.fit`` refits its members in
    place), so no test sees another's changes."""
    return copy.deepcopy(_members_once)


def test_ensemble_gradient_matches_finite_differences_of_its_averaged_loss(parts, members):
    ensemble = models.Ensemble(members)
    X, y = parts.test.X[:3], parts.test.y[:3]
    finite_difference_check(ensemble, X, y, "margin")
    assert np.allclose(ensemble.loss(X, y), np.mean([m.loss(X, y) for m in ensemble.members], axis=0))


def test_normalized_ensemble_averages_unit_gradients(parts, members):
    ensemble = models.Ensemble(members, combine="normalized")
    X, y = parts.test.X[:5], parts.test.y[:5]
    unit = [g / np.linalg.norm(g, axis=1, keepdims=True) for g in (m.input_gradient(X, y) for m in members)]
    np.testing.assert_allclose(ensemble.input_gradient(X, y), np.mean(unit, axis=0), rtol=1e-6, atol=1e-12)
    x_adv = attacks.PGDLineSearch(eps=1.0).run(ensemble, parts.test.X, parts.test.y).x_adv
    assert np.all(np.linalg.norm(x_adv - parts.test.X, axis=1) <= 1 + 1e-9)
    with pytest.raises(ConfigError, match="at least two"):
        models.Ensemble(members[:1])
    with pytest.raises(models.NotDifferentiableError):
        models.Ensemble([members[0], models.create("rf_l")])


CONFIG = {
    "name": "ens",
    "split": {"n_target": 100, "n_surrogate": 100, "n_test": 30},
    "surrogates": ["svm_l", "ens_lin"],
    "targets": ["svm_rbf_h", "mine"],
    "ensembles": {"ens_lin": ["svm_l", "logistic_l"]},
    "attack": {"norm": 2, "eps": [0, 1, 2]},
    "variance": {"n_surrogates": 2},
}


@pytest.fixture()
def saved(tmp_path):
    data = datasets.load("mnist89")
    model = models.create("logistic_h").fit(data.X[::5], data.y[::5])
    return models.save(model, tmp_path / "mine"), model


def test_an_ensemble_row_and_a_users_own_model_in_an_experiment(tmp_path, saved):
    folder, model = saved
    config = parse_config({**CONFIG, "saved_models": {"mine": str(folder)}})
    out = runner.run_experiment(config, tmp_path / "run", show_progress=False)
    from transferlab.report import build_report

    build_report(out)
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["surrogate"] for r in rows if r["setting"] == "transfer"} == {"svm_l", "ens_lin"}
    assert {r["target"] for r in rows} == {"svm_rbf_h", "mine"}
    with open(out / "metrics.csv") as fh:
        metric = [r for r in csv.DictReader(fh) if r["surrogate"] == "ens_lin"]
    assert all(float(r["V"]) >= 0 and -1 <= float(r["R"]) <= 1 for r in metric)
    imported = models.load(out / "models/r0/target/mine")
    X = datasets.load("mnist89").X[:20]
    np.testing.assert_allclose(imported.decision_function(X), model.decision_function(X))
    # the saved model's content is part of the run's identity
    other = models.create("logistic_l").fit(datasets.load("mnist89").X[::5], datasets.load("mnist89").y[::5])
    shutil.rmtree(folder)
    models.save(other, folder)
    with pytest.raises(ConfigError, match="other data"):
        runner.run_experiment(config, out, show_progress=False)


@pytest.mark.parametrize("change, message", [
    ({"ensembles": {"ens_lin": ["svm_l", "rf_l"]}}, "not a differentiable registry model"),
    ({"targets": ["ens_lin"]}, "surrogate only"),
    ({"ensembles": {"svm_h": ["svm_l", "logistic_l"]}}, "registry model's name"),
    ({"ensembles": {"ens_lin": ["svm_l"]}}, "ensembles.ens_lin.members"),
])
def test_bad_ensemble_configs(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**CONFIG, **change})


def test_a_missing_saved_model_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "saved_models": {"mine": str(tmp_path / "nowhere")}}))
    result = run_in_process("run", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

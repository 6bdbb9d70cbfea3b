"""Names, values and stores as hostile input: a catalogue of bad configs, command lines and edited stores, each
refused with one line naming the field (or the store) and the fix, exit code 2, no traceback, before any work and
before anything is written to the run folder; and the run folder as a boundary (a traversal name or a planted
symbolic link cannot make a run delete or write outside it).

The CLI cases run ``transferlab.cli.main`` in this process (fast: no interpreter start per case); two of them also
run as a real subprocess. An uncaught exception fails the test, so "no traceback" is checked either way.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import transferlab
from cli_runner import run_in_process as _main
from test_hardening import TINY, _assert_one_line, _cli, _write
from transferlab import attacks, datasets, models
from transferlab.attacks import Box, FeatureAdditionOnly, L1Ball, L2Ball, LinfBall, Mask, Quantize
from transferlab.errors import ConfigError, DataError
from transferlab.experiments import artifacts, common
from transferlab.experiments.config import NAME_PATTERN, check_name, parse_config
from transferlab.experiments.runner import run_experiment

POISONING = {"kind": "poisoning", "split": {"n_target": 40, "n_surrogate": 40, "n_test": 10, "n_validation": 10},
             "targets": ["logistic_l"], "model_overrides": {},
             "attack": {"kind": "poisoning", "fractions": [0.1]}}
EVASION_ATTACK = {"norm": 2, "eps": [0, 1]}


def _attack(**extra):
    return {"attack": {**EVASION_ATTACK, **extra}}


def _poisoning_solver(**solver):
    return {**POISONING, "attack": {**POISONING["attack"], "solver": solver}}


# (description, change to TINY — or the YAML text itself —, a fragment of the expected message)
CONFIG_CATALOGUE = [
    ("pixels selected for a CNN", {"dataset": {"name": "mnist89", "select_features": 10}, "targets": ["cnn"]},
     "'cnn' needs whole images"),
    # names are names, never paths
    ("a saved model's name that climbs out of the run folder", {"saved_models": {"../../../../x": "/tmp"}},
     "'saved_models': '../../../../x' is not a valid name"),
    ("an experiment name that is a path", {"name": "../../elsewhere"}, "'name': '../../elsewhere' is not a valid name"),
    ("an absolute experiment name", {"name": "/tmp/x"}, "is not a valid name"),
    ("a target name with '..'", {"targets": ["svm..l"]}, "'targets': 'svm..l' is not a valid name"),
    ("an ensemble name with a slash", {"ensembles": {"a/b": ["svm_l", "logistic_l"]}}, "'ensembles': 'a/b'"),
    ("an override of a path-like model", {"model_overrides": {"../rf_l": {}}}, "'model_overrides': '../rf_l'"),
    ("a double_init entry that is a path", _attack(double_init=["../logistic_l"]), "attack.double_init"),
    ("a 65-character name", {"name": "n" * 65}, "is not a valid name"),
    # model overrides: values, not only types
    ("a negative C", {"model_overrides": {"logistic_l": {"C": -1}}}, "'model_overrides.logistic_l.C': must be a finite "
     "number > 0"),
    ("a null C", {"model_overrides": {"logistic_l": {"C": None}}}, "'model_overrides.logistic_l.C': must be a finite "
     "number > 0, got None"),
    ("a NaN C", {"model_overrides": {"logistic_l": {"C": float("nan")}}}, "model_overrides.logistic_l.C"),
    ("a forest of no trees", {"model_overrides": {"rf_l": {"n_estimators": 0}}}, "model_overrides.rf_l.n_estimators"),
    ("a scoring batch of 0 rows", {"model_overrides": {"logistic_l": {"batch_size": 0}}},
     "model_overrides.logistic_l.batch_size"),
    ("a million-unit layer", {"targets": ["nn_l"], "model_overrides": {"nn_l": {"hidden": [1_000_000]}}},
     "model_overrides.nn_l: nn_l on 784 features and 2 classes would hold 787,000,002 weights"),
    ("a layer width given as text", {"targets": ["nn_l"], "model_overrides": {"nn_l": {"hidden": ["wide"]}}},
     "model_overrides.nn_l.hidden"),
    ("epochs given as true", {"targets": ["nn_l"], "model_overrides": {"nn_l": {"epochs": True}}},
     "model_overrides.nn_l.epochs"),
    ("a negative forest seed", {"model_overrides": {"rf_l": {"seed": -1}}}, "model_overrides.rf_l.seed"),
    ("a forest of 10⁹ trees", {"model_overrides": {"rf_l": {"n_estimators": 10 ** 9}}},
     "model_overrides.rf_l.n_estimators"),
    ("a negative weight decay", {"model_overrides": {"rf_l": {"n_estimators": 5}},
                                 "nn_sweep": {"weight_decays": [0, -0.1]}}, "nn_sweep.weight_decays"),
    ("a NaN sweep budget", {"nn_sweep": {"weight_decays": [0, 0.1], "eps": float("nan")}}, "nn_sweep.eps"),
    ("a million resampled surrogates", {"variance": {"n_surrogates": 1_000_000}}, "variance.n_surrogates"),
    # booleans are not numbers nor class names
    ("an attacked class given as true", _attack(attack_class=True), "attack.attack_class"),
    ("a budget given as true", _attack(eps=[True]), "attack.eps"),
    ("a split size given as true", {"split": {"n_target": True, "n_surrogate": 40, "n_test": 10}}, "split.n_target"),
    ("a quantisation given as true", _attack(quantize=True), "attack.quantize"),
    ("a flag given as 1", _attack(warm_start=1), "attack.warm_start"),
    ("a budget given as text", _attack(eps=["1"]), "attack.eps"),
    ("a repetition count given as 2.0", {"repetitions": 2.0}, "repetitions"),
    ("a detector rate given as true", {"detector": {"fpr": True}}, "detector.fpr"),
    # attack solver settings, validated where the attack is built (once, by the config)
    ("MI-FGSM's random start given as 1", {"attack": {"kind": "mifgsm", "norm": "inf", "eps": [0, 0.1],
                                                      "solver": {"random_start": 1}}}, "random_start"),
    ("a line search of 10⁶ candidates", _attack(solver={"grid": 1_000_000}), "grid"),
    ("a 400-digit seed", {"attack": {"kind": "pgd", "norm": 2, "eps": [1], "solver": {"seed": 10 ** 400}}}, "seed"),
    ("poisoning with a grid of 0", _poisoning_solver(grid=0), "'attack.solver.grid'"),
    ("poisoning with a negative step", _poisoning_solver(step=-1), "'attack.solver.step'"),
    ("poisoning with a NaN tolerance", _poisoning_solver(tol=float("nan")), "'attack.solver.tol'"),
    ("poisoning with no step", _poisoning_solver(mode="batch", max_steps=0), "'attack.solver.max_steps'"),
    ("poisoning with no pass", _poisoning_solver(max_passes=0), "'attack.solver.max_passes'"),
    ("poisoning with a text grid", _poisoning_solver(grid="4"), "'attack.solver.grid'"),
    # YAML itself
    ("a key given twice", "name: a\nsplit: {n_target: 40, n_surrogate: 40, n_test: 10}\nsurrogates: [logistic_l]\n"
     "targets: [logistic_l]\nattack: {norm: 2, eps: [0, 1]}\nname: b\n", "line 6: key 'name' is given twice"),
    ("a nested key given twice", "split: {n_target: 40, n_surrogate: 40, n_test: 10, n_test: 20}\n"
     "surrogates: [logistic_l]\ntargets: [logistic_l]\nattack: {norm: 2, eps: [0, 1]}\n", "key 'n_test' is given "
     "twice"),
]


@pytest.mark.parametrize("what, change, message", CONFIG_CATALOGUE, ids=[c[0] for c in CONFIG_CATALOGUE])
def test_catalogue_of_bad_config_values(tmp_path, what, change, message):
    text = change if isinstance(change, str) else yaml.safe_dump({**TINY, **change})
    out = tmp_path / "out"
    result = _main("run", str(_write(tmp_path, text)), "--out", str(out))
    _assert_one_line(result, message)
    assert not out.exists()  # refused before the run folder is made


def test_a_catalogue_case_through_a_real_subprocess(tmp_path):
    config = _write(tmp_path, {**TINY, "saved_models": {"../../../../x": str(tmp_path)}})
    _assert_one_line(_cli("run", str(config), "--out", str(tmp_path / "out")), "is not a valid name")
    assert not (tmp_path / "out").exists()


def test_the_name_pattern_accepts_every_shipped_name():
    from transferlab.experiments.config import load_config, preset_names

    for name in list(models.MODELS) + preset_names():
        assert NAME_PATTERN.match(name) and check_name(name, "x") == name
    for preset in preset_names():
        load_config(preset)  # strict types: every preset still parses
    for bad in ("", ".", "..", "a/b", "a\\b", "-a", "a..b", "a\x00", "é", "x" * 65, 5, None):
        with pytest.raises(ConfigError, match="not a valid name"):
            check_name(bad, "f")


# ---- command lines ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    evasion = _write(folder, TINY, "evasion.yaml")
    poisoning = _write(folder, {**TINY, **POISONING}, "poisoning.yaml")
    return {"evasion": str(evasion), "poisoning": str(poisoning)}


CLI_CATALOGUE = [
    ("a negative budget", ["--eps", "-1"], "--eps: every budget must be a finite number > 0"),
    ("a NaN budget", ["--eps", "nan"], "--eps: every budget must be a finite number > 0"),
    ("an infinite budget", ["--eps", "inf"], "--eps: every budget must be a finite number > 0"),
    ("a zero budget", ["--eps", "0,1"], "0 moves no point"),
    ("a text budget", ["--eps", "one"], "--eps: 'one' is not a number"),
    ("an empty budget", ["--eps", "1,,2"], "--eps: budget 2 is empty"),
    ("an empty budget list", ["--eps", ""], "--eps: budget 1 is empty"),
    ("more budgets than a config may hold", ["--eps", ",".join(str(i + 1) for i in range(201))], "at most 200"),
    ("a repetition the config does not have", ["--repetition", "1"], "--repetition 1 is out of range"),
    ("a negative repetition", ["--repetition", "-1"], "--repetition -1 is out of range"),
    ("no test point", ["--points", "0"], "--points must be a whole number >= 1"),
    ("a forest as a surrogate", ["--surrogates", "rf_l"], "--surrogates: 'rf_l' has no input gradient"),
    ("an unknown surrogate", ["--surrogates", "svm_x"], "--surrogates: unknown model 'svm_x'"),
    ("a surrogate named by a path", ["--surrogates", "../svm_l"], "--surrogates: '../svm_l' is not a valid name"),
    ("an empty surrogate", ["--surrogates", "svm_l,"], "--surrogates: '' is not a valid name"),
    ("a surrogate listed twice", ["--surrogates", "svm_l,svm_l"], "listed twice"),
    ("an ensemble as the target", ["--target", "pair"], "an ensemble is a surrogate only"),
]


@pytest.mark.parametrize("what, args, message", CLI_CATALOGUE, ids=[c[0] for c in CLI_CATALOGUE])
def test_catalogue_of_bad_audit_options(tmp_path, what, args, message):
    config = _write(tmp_path, {**TINY, "ensembles": {"pair": ["svm_l", "logistic_l"]}})
    options = {"--target": "logistic_l", **dict(zip(args[::2], args[1::2]))}
    _assert_one_line(_main("audit", str(config), *[f"{k}={v}" for k, v in options.items()]), message)


def test_audit_of_a_forest_target_reports_undefined_gradients(tmp_path):
    """A target without a gradient is audited, not refused: S, R and the prediction are undefined, and said so."""
    config = _write(tmp_path, TINY)
    result = _main("audit", str(config), "--target", "rf_l", "--surrogates", "svm_l", "--eps", "1")
    assert result.returncode == 0, result.stderr
    assert "rf_l has no input gradient" in result.stdout


def test_audit_refuses_a_poisoning_config(configs):
    _assert_one_line(_main("audit", configs["poisoning"], "--target", "logistic_l"), "audit predicts evasion transfer")
    with pytest.raises(ConfigError, match="poisoning"):
        transferlab.audit.audit_config(parse_config({**TINY, **POISONING}), "logistic_l")


@pytest.mark.parametrize("address, message", [
    ("not an address", "--scheduler 'not an address' is not a Dask scheduler address"),
    ("tcp://host:99999", "port 1 to 65535"),
    ("http://host:8786", "is not a Dask scheduler address"),
    ("host", "is not a Dask scheduler address"),
    ("tcp://:8786", "is not a Dask scheduler address"),
])
def test_a_malformed_scheduler_is_refused_before_anything_connects_or_writes(tmp_path, configs, address, message):
    out = tmp_path / "out"
    _assert_one_line(_main("run", configs["evasion"], "--out", str(out), "--scheduler", address), message)
    assert not out.exists()


def test_scheduler_and_worker_options_that_do_not_fit(tmp_path, configs):
    out = tmp_path / "out"
    _assert_one_line(_main("run", configs["evasion"], "--out", str(out), "--scheduler", "localhost:8786",
                           "--executor", "processes"), "--scheduler goes with the dask executor")
    _assert_one_line(_main("run", configs["evasion"], "--out", str(out), "--workers", "0"), "--workers")
    assert not out.exists()
    from transferlab.experiments.executors import check_scheduler

    for good in ("localhost:8786", "tcp://10.0.0.5:8786", "tls://[::1]:8786", "scheduler.example.org:1"):
        assert check_scheduler(good) == good


# ---- audit on a run folder, ensembles and saved models -----------------------------------------------------------
RUN = {**TINY, "name": "audited", "surrogates": ["logistic_l", "svm_l"]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(parse_config(RUN), out, show_progress=False)
    return out


RUN_CATALOGUE = [
    ("a surrogate the run does not have", ["--surrogates", "svm_h"], "--surrogates: 'svm_h' is not a surrogate of "
     "this run"),
    ("a repetition the run does not have", ["--repetition", "1"], "--repetition 1 is out of range"),
    ("test points with a run folder", ["--points", "10"], "--points goes with a config"),
    ("a data path with a run folder", ["--data", "/tmp"], "--data goes with a config"),
    ("a zero budget", ["--eps", "0"], "0 moves no point"),
    ("a target that is not the run's", ["--target", "nn_h"], "not a target of this run"),
]


@pytest.mark.parametrize("what, args, message", RUN_CATALOGUE, ids=[c[0] for c in RUN_CATALOGUE])
def test_catalogue_of_bad_audit_options_on_a_run_folder(finished, what, args, message):
    options = {"--target": "logistic_l", **dict(zip(args[::2], args[1::2]))}
    _assert_one_line(_main("audit", str(finished), *[f"{k}={v}" for k, v in options.items()]), message)


def test_audit_of_a_run_honours_its_surrogates_option(finished):
    result = _main("audit", str(finished), "--target", "logistic_l", "--surrogates", "svm_l", "--eps", "1")
    assert result.returncode == 0, result.stderr
    assert "svm_l" in result.stdout and "logistic_l" not in result.stdout  # the table names surrogates only
    rows = transferlab.audit.audit_run(finished, "logistic_l", surrogates=["svm_l"])
    assert {r.surrogate for r in rows} == {"svm_l"} and all(np.isfinite(r.measured) for r in rows)
    every = transferlab.audit.audit_run(finished, "logistic_l")
    assert {r.surrogate for r in every} == {"logistic_l", "svm_l"}
    same = [r for r in every if r.surrogate == "svm_l"]
    assert [r.budget for r in same] == [r.budget for r in rows]
    np.testing.assert_allclose([[r.S, r.R, r.predicted, r.measured] for r in same],
                               [[r.S, r.R, r.predicted, r.measured] for r in rows], rtol=1e-12)


@pytest.fixture(scope="module")
def saved_logistic(tmp_path_factory):
    """A saved logistic regression fitted on MNIST89 rows (784 features, two classes)."""
    data = datasets.load("mnist89")
    rows = np.random.default_rng(0).choice(len(data.y), 60, replace=False)
    model = models.create("logistic_l").fit(data.X[rows], data.y[rows])
    return str(models.save(model, tmp_path_factory.mktemp("saved") / "mine"))


def test_audit_of_a_config_takes_ensembles_and_saved_models(tmp_path, saved_logistic):
    config = {**TINY, "surrogates": ["pair", "mine"], "targets": ["mine", "logistic_l"],
              "ensembles": {"pair": ["svm_l", "logistic_l"]}, "saved_models": {"mine": saved_logistic}}
    path = _write(tmp_path, config)
    result = _main("audit", str(path), "--target", "mine", "--eps", "0.5,1", "--points", "8")
    assert result.returncode == 0, result.stderr
    assert "pair" in result.stdout and "mine" in result.stdout
    rows = transferlab.audit.audit_config(parse_config(config), "logistic_l", ["pair", "mine"], n_points=8,
                                          eps=[1.0])
    by_name = {r.surrogate: r for r in rows}
    assert set(by_name) == {"pair", "mine"}
    assert np.isfinite(by_name["pair"].V) and np.isnan(by_name["mine"].V)  # a saved model has no resamples
    assert all(np.isfinite(r.R) and 0 <= r.predicted <= 1 for r in rows)


def test_audit_and_results_work_more_than_once_per_process(finished):
    """``from transferlab.audit import audit`` used to rebind the package's ``audit`` to the module, so a second
    ``transferlab.audit(...)`` called a module. A fresh interpreter, which has imported nothing else, calls each
    twice."""
    import subprocess

    script = (
        "import numpy as np, transferlab\n"
        "from transferlab import models\n"
        "X = np.random.default_rng(0).random((20, 4)); y = np.r_[np.zeros(10, int), np.ones(10, int)]\n"
        "m = models.create('logistic_l').fit(X, y)\n"
        "a = transferlab.audit(m, {'itself': m}, X, y, [1.0])\n"
        "b = transferlab.audit(m, {'itself': m}, X, y, [1.0])\n"
        "assert [r.predicted for r in a] == [r.predicted for r in b]\n"
        "import transferlab.audit\n"
        "assert len(transferlab.audit(m, {'itself': m}, X, y, [0.5, 1.0])) == 2\n"
        f"r1 = transferlab.results({str(finished)!r}); r2 = transferlab.results({str(finished)!r})\n"
        "assert len(r1.results) == len(r2.results) > 0\n"
        "print('ok')\n")
    pytest.importorskip("pandas")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_audit_budgets_are_checked_in_the_python_api_too():
    X, y = np.random.default_rng(0).random((20, 4)), np.r_[np.zeros(10, int), np.ones(10, int)]
    model = models.create("logistic_l").fit(X, y)
    for eps, message in (([], "no budget"), ([0.0], "0 moves no point"), ([float("nan")], "finite"),
                         ([True], "finite"), ("1,a", "'a' is not a number"), (1.0, "give a list")):
        with pytest.raises(ConfigError, match=message):
            transferlab.audit(model, {"x": model}, X, y, eps)


# ---- the store is input too -------------------------------------------------------------------------------------
def _set_config(db, change):
    config = yaml.safe_load(db.execute("SELECT value FROM meta WHERE key='config_yaml'").fetchone()[0])
    text = change if isinstance(change, str) else yaml.safe_dump({**config, **change})
    db.execute("UPDATE meta SET value=? WHERE key='config_yaml'", (text,))


STORE_CATALOGUE = [
    ("text in a numeric column", lambda db: db.execute("UPDATE results SET error='abc' WHERE rowid=1"),
     "table 'results', row 1, column 'error' holds text where a number is expected"),
    ("NULL where a number is expected", lambda db: db.execute("UPDATE results SET budget=NULL WHERE rowid=2"),
     "column 'budget' holds NULL"),
    ("text in a whole-number column", lambda db: db.execute("UPDATE results SET repetition='first'"),
     "column 'repetition' holds text where a whole number is expected"),
    ("text in a metric", lambda db: db.execute("UPDATE metrics SET S='big' WHERE rowid=1"), "column 'S'"),
    ("a transfer row without its surrogate", lambda db: db.execute(
        "UPDATE results SET surrogate=NULL WHERE setting='transfer'"), "names no surrogate"),
    ("text in the timings", lambda db: db.execute("UPDATE cells SET seconds='slow'"), "column 'seconds'"),
    ("a cell's files that are not JSON", lambda db: db.execute("UPDATE cells SET files='{'"),
     "column 'files' holds text that is not JSON"),
    ("a config that is a list", lambda db: _set_config(db, "[1, 2]"), "is not a mapping"),
    ("a config that is not YAML", lambda db: _set_config(db, "name: [unclosed"), "is not valid YAML"),
    ("a config with a key twice", lambda db: _set_config(db, "name: a\nname: b\n"), "given twice"),
    ("surrogates that are a number", lambda db: _set_config(db, {"surrogates": 5}), "field 'surrogates'"),
    ("a surrogate named by a path", lambda db: _set_config(db, {"surrogates": ["../../etc"]}), "field 'surrogates'"),
    ("an attack that is text", lambda db: _set_config(db, {"attack": "pgd"}), "field 'attack'"),
    ("fractions that are text", lambda db: _set_config(db, {"surrogate_fractions": "all"}),
     "field 'surrogate_fractions'"),
    ("a detector rate that is text", lambda db: _set_config(db, {"detector": {"fpr": "low"}}), "'detector.fpr'"),
    ("a missing config", lambda db: db.execute("DELETE FROM meta WHERE key='config_yaml'"), "holds no config"),
    ("versions that are not JSON", lambda db: db.execute("UPDATE meta SET value='{' WHERE key='versions'"),
     "meta value 'versions' is not a JSON object"),
    ("a last run whose time is text", lambda db: db.execute(
        "UPDATE meta SET value='{\"seconds\": \"long\"}' WHERE key='last_run'"), "'last_run' holds seconds"),
    ("a table missing", lambda db: db.execute("DROP TABLE sweep"), "no table 'sweep'"),
    ("a column missing", lambda db: db.execute("ALTER TABLE results DROP COLUMN error"), "has no column 'error'"),
]


@pytest.mark.parametrize("what, edit, message", STORE_CATALOGUE, ids=[c[0] for c in STORE_CATALOGUE])
def test_catalogue_of_edited_stores(finished, tmp_path, what, edit, message):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns(".lock"))
    (copy / "results.csv").write_text("keep me\n")
    with sqlite3.connect(copy / "store.sqlite") as db:
        edit(db)
    db.close()
    result = _main("report", str(copy))
    _assert_one_line(result, message)
    assert "store.sqlite" in result.stderr
    assert (copy / "results.csv").read_text() == "keep me\n"  # nothing written: refused while reading
    assert not (copy / "report.html").exists() and not (copy / "figures").exists()
    if importlib_util_has("pandas"):
        with pytest.raises(DataError, match=message.split(" holds")[0].replace("(", r"\(")):
            transferlab.results(copy)


def importlib_util_has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_an_edited_points_file_is_a_data_error(tmp_path):
    config = {**TINY, "name": "images", "targets": ["logistic_l"], "model_overrides": {}}
    out = tmp_path / "run"
    run_experiment(parse_config(config), out, show_progress=False)
    points = out / "points" / "r0_transfer_logistic_l_f1.npz"
    assert points.is_file()
    points.write_bytes(b"not a zip file")
    from transferlab.report import build_report

    with pytest.raises(DataError, match="is not a points file of this run"):
        build_report(out)


# ---- the run folder is a boundary ---------------------------------------------------------------------------------
def _sentinel(root: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder outside every run folder, shaped like what a run writes, with content to watch."""
    sentinel = root / "sentinel"
    for rel in ("keep.txt", "r0/target/logistic_l/spec.json", "r0_transfer_logistic_l_f1.npz", "a.png"):
        (sentinel / rel).parent.mkdir(parents=True, exist_ok=True)
        (sentinel / rel).write_bytes(f"sentinel {rel}".encode())
    return sentinel, _snapshot(sentinel)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("link, points_to", [
    ("models", "."),
    ("points", "."),
    ("models/r0/target/logistic_l", "r0/target/logistic_l"),
    ("models/r0", "r0"),
    ("store.sqlite", "keep.txt"),
    (".lock", "keep.txt"),
    ("config.yaml.tmp", "keep.txt"),
    ("figures", "."),
])
def test_a_planted_link_cannot_make_a_run_write_or_delete_outside(tmp_path, link, points_to):
    sentinel, before = _sentinel(tmp_path)
    run = tmp_path / "run"
    (run / link).parent.mkdir(parents=True, exist_ok=True)
    (run / link).symlink_to(sentinel / points_to if points_to != "." else sentinel)
    result = _main("run", str(_write(tmp_path, {**TINY, "targets": ["logistic_l"], "model_overrides": {}})),
                   "--out", str(run))
    _assert_one_line(result, "is a symbolic link")
    assert _snapshot(sentinel) == before
    assert not (run / "store.sqlite").exists() or (run / "store.sqlite").is_symlink()


def test_a_link_planted_during_a_run_is_refused_where_the_run_writes(tmp_path, finished):
    """Defence in depth: the writers check every path they write or delete, not only the folder at the start."""
    sentinel, before = _sentinel(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns(".lock"))
    model = models.load(run / "models/r0/target/logistic_l")
    shutil.rmtree(run / "models/r0/target/logistic_l")
    (run / "models/r0/target/logistic_l").symlink_to(sentinel / "r0/target/logistic_l")
    with pytest.raises(DataError, match="is a symbolic link"):
        artifacts.write_artifact(run, "models/r0/target/logistic_l", artifacts.ModelArtifact.of(model))
    shutil.rmtree(run / "points")
    (run / "points").symlink_to(sentinel)
    cell = common.Cell("craft", 0, "logistic_l", common.TRANSFER, 1.0)
    with pytest.raises(DataError, match="is a symbolic link"):
        artifacts.write_artifact(run, artifacts.points_file(cell),
                                 artifacts.points_artifact(eps_0=np.zeros((1, 2), np.float32)))
    from transferlab.report import build_report

    shutil.rmtree(run / "figures", ignore_errors=True)
    (run / "figures").symlink_to(sentinel)
    with pytest.raises(DataError, match="is a symbolic link"):
        build_report(run)
    with pytest.raises(DataError, match="names are never paths"):
        artifacts.write_artifact(run, "models/../../escaped", artifacts.ModelArtifact.of(model))
    assert _snapshot(sentinel) == before
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("name", ["../../outside.txt", "sub/weights", "", "..", "extra.json"])
def test_a_model_artifact_refuses_file_names_that_are_paths(name):
    """A ModelArtifact's file names come from a worker: a name that climbs out of the model folder, names a
    subfolder, or takes the place of the extra values' file is refused before anything is written."""
    with pytest.raises(DataError, match="is not a model file name"):
        artifacts.ModelArtifact({name: b"x"})


def test_a_saved_model_named_to_climb_out_never_reaches_the_runner(tmp_path, saved_logistic):
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    config = {**TINY, "targets": ["logistic_l"], "model_overrides": {}, "saved_models": {"../../../../x": saved_logistic}}
    with pytest.raises(ConfigError, match="'saved_models': '../../../../x' is not a valid name"):
        parse_config(config)
    _assert_one_line(_main("run", str(_write(tmp_path, config)), "--out", str(tmp_path / "a" / "b" / "c" / "run")),
                     "is not a valid name")
    assert _snapshot(outside) == {"keep.txt": b"keep"} and not (tmp_path / "a").exists()


# ---- values whose meaning was wrong -----------------------------------------------------------------------------
def test_every_registry_parameter_has_a_rule_that_overrides_are_checked_against():
    for name, spec in models.MODELS.items():
        rules = spec.factory.param_rules()
        for key, value in models.create(name).get_params().items():
            assert key in rules, f"{spec.factory.__name__}.{key} has no rule: its overrides would go unchecked"
            assert rules[key].accepts(value), (name, key, value)
    with pytest.raises(ConfigError, match="model 'nn_h'.epochs"):
        models.create("nn_h", epochs=0)


@st.composite
def off_grid_problem(draw):
    """x0 anywhere in the box (on a grid or not), z anywhere, a grid of 1 to 255 levels."""
    n = draw(st.integers(1, 4))
    levels = draw(st.sampled_from([1, 2, 3, 7, 255]))
    on_grid = draw(st.booleans())
    if on_grid:
        x0 = draw(arrays(np.int64, (n, 6), elements=st.integers(0, levels))) / levels
    else:
        x0 = draw(arrays(np.float64, (n, 6), elements=st.floats(0, 1, width=64)))
    z = draw(arrays(np.float64, (n, 6), elements=st.floats(-2, 2, width=64)))
    eps = draw(st.floats(0, 2, width=64))
    return torch.as_tensor(z), torch.as_tensor(x0), eps, levels


@settings(max_examples=120, deadline=None)
@given(off_grid_problem())
def test_quantised_points_stay_in_the_box_and_the_ball(problem):
    """quantize: 1 or 3 on data finer than the grid used to move unchanged coordinates onto the grid, out of the
    ball: now every coordinate moves at most as far as the attack moved it, and lands on the grid where it moved."""
    z, x0, eps, levels = problem
    mask = np.array([True, False, True, True, False, True])
    for ball in (L2Ball(eps), LinfBall(eps), L1Ball(eps)):
        for extra in ((), (FeatureAdditionOnly(),), (Mask(mask),)):
            domain = attacks.Intersection(ball, Box(0, 1), *extra, Quantize(levels))
            projected = domain.project(z, x0)
            x = domain.quantize(projected, x0)
            assert bool(domain.contains(x, x0, tol=1e-7).all()), (domain, x, x0)
            unchanged = x == x0
            on_grid = (x * levels - torch.round(x * levels)).abs() <= 1e-6
            assert bool((unchanged | on_grid).all())


def test_quantised_points_that_round_towards_x0_never_move_further_than_the_attack():
    x0 = torch.tensor([[0.3, 0.55, 0.9, 0.1]], dtype=torch.float64)  # off the grid of thirds
    domain = attacks.Intersection(L2Ball(0.12), Box(0, 1), Quantize(3))
    x = domain.quantize(domain.project(torch.tensor([[0.45, 0.55, 1.0, 0.0]], dtype=torch.float64), x0), x0)
    projected = domain.project(torch.tensor([[0.45, 0.55, 1.0, 0.0]], dtype=torch.float64), x0)
    assert bool(((x - x0).abs() <= (projected - x0).abs() + 1e-12).all())
    torch.testing.assert_close(x, torch.tensor([[1 / 3, 0.55, 0.9, 0.1]], dtype=torch.float64))


@pytest.fixture(scope="module")
def mnist_part():
    parts = datasets.split(datasets.load("mnist89"), n_target=200, n_surrogate=10, n_test=30, seed=0)
    return parts.target, parts.test


def test_an_attack_with_a_coarse_grid_keeps_its_points_in_the_domain(mnist_part):
    train, test = mnist_part
    X, y = test.X[:20], test.y[:20]
    model = models.create("logistic_l").fit(train.X, train.y)
    for levels in (1, 3):
        attack = attacks.PGD(norm=2, eps=1.0, constraints=(Quantize(levels),), steps=5)
        x_adv = attack.run(model, X, y).x_adv
        assert np.all(np.linalg.norm(x_adv - X, axis=1) <= 1.0 + 1e-9)
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_mifgsm_random_start_starts_inside_the_ball_and_changes_the_run(mnist_part):
    train, test = mnist_part
    X, y = test.X, test.y
    model = models.create("nn_l", epochs=1).fit(train.X, train.y)
    plain = attacks.MIFGSM(norm="inf", eps=0.1, steps=2).run(model, X, y).x_adv
    started = attacks.MIFGSM(norm="inf", eps=0.1, steps=2, random_start=True, seed=3).run(model, X, y).x_adv
    again = attacks.MIFGSM(norm="inf", eps=0.1, steps=2, random_start=True, seed=3).run(model, X, y).x_adv
    other = attacks.MIFGSM(norm="inf", eps=0.1, steps=2, random_start=True, seed=4).run(model, X, y).x_adv
    assert not np.allclose(plain, started) and not np.allclose(started, other)
    np.testing.assert_allclose(started, again, rtol=0, atol=1e-12)  # seeded: the same start, the same points
    for x_adv in (plain, started, other):
        assert np.abs(x_adv - X).max() <= 0.1 + 1e-9 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_a_poisoning_config_validates_its_solver_settings_without_building_the_attack(monkeypatch):
    """The config's attack.solver is the attack's own settings model, validated by the config (a bad value is
    reported by parse_config, see the catalogue) without building an attack; the attack takes it as it is."""
    from transferlab.attacks import poisoning

    calls = []
    original = poisoning.Poisoning.__init__
    monkeypatch.setattr(poisoning.Poisoning, "__init__",
                        lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    config = parse_config({**TINY, **_poisoning_solver(grid=3, step=0.5, tol=0.0, max_steps=5, mode="batch")})
    assert calls == []
    assert isinstance(config.attack.solver, poisoning.PoisoningSettings) and config.attack.solver.grid == 3
    assert poisoning.Poisoning(settings=config.attack.solver).settings is config.attack.solver


def test_the_config_reads_a_norm_as_the_python_api_does():
    """attack.norm takes what ``attacks.PGD(norm=...)`` takes (2, 2.0, "l2", "ℓ2", "linf", "∞", ...); it refused
    2.0 and "ℓ2", which the API accepts. Other values keep the field's error."""
    from transferlab.attacks.constraints import parse_norm

    for norm in (2, 2.0, "2", "l2", "L2", "ℓ2", 1, "l1", "inf", "linf", "Linf", "∞", float("inf")):
        config = parse_config({**TINY, "attack": {"norm": norm, "eps": [0, 1]}})
        assert parse_norm(config.attack.norm) == parse_norm(norm)
    for norm in ("3", True, "l3", [2]):
        with pytest.raises(ConfigError, match="attack.norm"):
            parse_config({**TINY, "attack": {"norm": norm, "eps": [0, 1]}})

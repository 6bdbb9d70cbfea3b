"""Hostile and mistaken input: a catalogue of bad command lines (each: exit 2, one line, no traceback, nothing
written), one writer per run folder, data fingerprints, the report's refusals, workers that end with their parent,
the Python API's error types, and property-based fuzzing of the config and data loaders."""

import gzip
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_runner import run_in_process, run_subprocess
from transferlab import attacks, datasets, models
from transferlab.errors import ConfigError, DataError, TransferlabError
from transferlab.experiments.config import parse_config, parse_yaml
from transferlab.experiments.runner import run_experiment

TINY = {
    "name": "tiny-hard",
    "dataset": {"name": "mnist89"},
    "split": {"n_target": 40, "n_surrogate": 40, "n_test": 10},
    "surrogates": ["logistic_l"],
    "targets": ["logistic_l", "rf_l"],
    "model_overrides": {"rf_l": {"n_estimators": 5}},
    "attack": {"norm": 2, "eps": [0, 1], "solver": {"max_iter": 5}},
    "variance": {"n_surrogates": 2},
}


#: a real process, where the test is about one (a lock held by another process, a catalogue case end to end)
_cli = run_subprocess


def _write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _assert_one_line(result, message):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _bomb_idx(folder: Path) -> None:
    """MNIST's four files, the training images replaced by a gzip stream far longer than its header says."""
    folder.mkdir()
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / (stem + ".gz")).write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes(4)))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 4, 28, 28) + bytes(4 * 784)))
    head = bytes([0, 0, 8, 3]) + struct.pack(">III", 4, 28, 28)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + bytes(200_000_000), 9))


CATALOGUE = [
    ("a negative budget", {"attack": {"norm": 2, "eps": [-1]}}, "attack.eps"),
    ("max_iter below 1", {"attack": {"norm": 2, "eps": [1], "solver": {"max_iter": -5}}}, "max_iter"),
    ("max_iter 0", {"attack": {"norm": 2, "eps": [1], "solver": {"max_iter": 0}}}, "max_iter"),
    ("an unknown solver key", {"attack": {"norm": 2, "eps": [1], "solver": {"max_iters": 5}}}, "max_iters"),
    ("a NaN bound", {"attack": {"norm": 2, "eps": [1], "lb": ".nan"}}, "attack.lb"),
    ("lb above ub", {"attack": {"norm": 2, "eps": [1], "lb": 1, "ub": 0}}, "attack.lb"),
    ("a duplicate target", {"targets": ["logistic_l", "logistic_l"]}, "listed twice"),
    ("a negative seed", {"seed": -1}, "seed"),
    ("a billion repetitions", {"repetitions": 1_000_000_000}, "repetitions"),
    ("a wrongly typed override", {"model_overrides": {"rf_l": {"n_estimators": "many"}}}, "n_estimators"),
    ("an unknown override", {"model_overrides": {"rf_l": {"trees": 5}}}, "trees"),
    ("an unknown model", {"targets": ["svm_x"]}, "svm_x"),
    ("a missing dataset", {"dataset": {"name": "mnist89", "path": "/nowhere"}}, "/nowhere"),
    ("an unknown poisoning solver key", {"kind": "poisoning", "split": {"n_target": 40, "n_surrogate": 40,
     "n_test": 10, "n_validation": 10}, "attack": {"kind": "poisoning", "fractions": [0.1],
     "solver": {"passes": 2}}}, "passes"),
    ("poisoning without a validation set", {"kind": "poisoning", "attack": {"kind": "poisoning",
     "fractions": [0.1]}}, "n_validation"),
    ("an FPR of 1", {"detector": {"fpr": 1}}, "detector.fpr"),
]


@pytest.mark.parametrize("what, change, message", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_catalogue_of_bad_configs(tmp_path, what, change, message):
    data = {**TINY, **change}
    text = yaml.safe_dump(data).replace("'.nan'", ".nan")
    result = run_in_process("run", str(_write(tmp_path, text)), "--out", str(tmp_path / "out"))
    _assert_one_line(result, message)
    assert not (tmp_path / "out" / "store.sqlite").exists()


def test_catalogue_of_bad_files_and_folders(tmp_path):
    config = _write(tmp_path, TINY)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _assert_one_line(run_in_process("run", str(config), "--out", str(a_file)), "is a file")
    _assert_one_line(run_in_process("run", str(tmp_path)), "is a folder")
    _assert_one_line(run_in_process("run", str(config), "--out", ""), "--out is empty")  # not the current folder
    with pytest.raises(ConfigError, match="--out is empty"):  # the Python API refuses it too
        run_experiment(parse_config(TINY), " ")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    _assert_one_line(run_in_process("run", str(latin)), "not UTF-8")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nname: bomb\n")
    _assert_one_line(run_in_process("run", str(bomb)), "anchor or alias")
    csv = tmp_path / "latin.csv"
    csv.write_bytes("a,b,label\n1,2,caf\xe9\n3,4,x\n".encode("latin-1"))
    data = {**TINY, "dataset": {"name": "csv", "path": str(csv)}}
    _assert_one_line(run_in_process("run", str(_write(tmp_path, data, "csv.yaml")), "--out", str(tmp_path / "o")),
                     "not UTF-8")
    gz = tmp_path / "mnist-bomb"
    _bomb_idx(gz)
    data = {**TINY, "dataset": {"name": "mnist89", "path": str(gz)}}
    _assert_one_line(run_in_process("run", str(_write(tmp_path, data, "gz.yaml")), "--out", str(tmp_path / "o2")),
                     "longer than its header says")
    zipbomb = tmp_path / "bomb.npz"
    zeros = bytes(1 << 26)  # 66 × 64 MiB: just over the 4 GiB an npz may decompress to (fastest deflate level)
    with zipfile.ZipFile(zipbomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            for _ in range(66):
                member.write(zeros)
    data = {**TINY, "dataset": {"name": "npz", "path": str(zipbomb)}}
    _assert_one_line(run_in_process("run", str(_write(tmp_path, data, "zip.yaml")), "--out", str(tmp_path / "o3")),
                     "would decompress")
    for folder in ("o", "o2", "o3"):
        assert not (tmp_path / folder / "store.sqlite").exists()


def test_an_idx_header_that_overflows_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1))
    with pytest.raises(DataError, match="announces"):
        datasets.read_idx(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("done")
    config = _write(out.parent, TINY, "finished.yaml")
    result = run_in_process("run", str(config), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, config


def test_a_second_writer_on_the_same_folder_is_refused(finished_run, tmp_path):
    import fcntl

    out, config = finished_run
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _assert_one_line(_cli("run", str(config), "--out", str(out)), "is writing to")
    rows = sqlite3.connect(out / "store.sqlite").execute("SELECT COUNT(*) FROM results").fetchone()[0]
    again = run_in_process("run", str(config), "--out", str(out))  # the lock is free again: a resume changes nothing
    assert again.returncode == 0, again.stderr
    assert sqlite3.connect(out / "store.sqlite").execute("SELECT COUNT(*) FROM results").fetchone()[0] == rows


def test_recording_a_cell_twice_never_duplicates_its_rows(tmp_path):
    from transferlab.experiments.store import Store

    store = Store(tmp_path / "store.sqlite")
    row = {"attack": "evasion", "repetition": 0, "surrogate": "a", "fraction": 1.0, "target": "b",
           "setting": "transfer", "budget": 1.0, "error": 0.5, "n_points": 4}
    for _ in range(2):
        store.record("craft/x", "craft", 1.0, {}, {}, {"results": [row]})
    assert len(store.table("results")) == 1
    store.close()


def test_a_resume_on_other_data_is_refused_unless_forced(finished_run, tmp_path):
    out, _ = finished_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    rng = np.random.default_rng(0)
    mnist = tmp_path / "mnist"  # the same config on other MNIST files: only the data's content differs
    mnist.mkdir()
    other = _write(tmp_path, TINY, "same.yaml")
    from transferlab.datasets import write_idx

    for stem, n in (("train", 120), ("t10k", 40)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = np.tile([8, 9], n // 2)
        write_idx(mnist / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(mnist / f"{stem}-labels-idx1-ubyte.gz", labels)
    refused = run_in_process("run", str(other), "--out", str(copy), "--data", str(mnist))
    _assert_one_line(refused, "other data")
    forced = run_in_process("run", str(other), "--out", str(copy), "--data", str(mnist), "--force")
    assert forced.returncode == 0, forced.stderr


def test_report_refuses_an_empty_or_corrupt_store_and_keeps_outputs(finished_run, tmp_path):
    out, _ = finished_run
    empty = tmp_path / "empty"
    empty.mkdir()
    from transferlab.experiments.store import Store

    Store(empty / "store.sqlite").close()
    (empty / "results.csv").write_text("keep me\n")
    _assert_one_line(run_in_process("report", str(empty)), "no finished cell")
    assert (empty / "results.csv").read_text() == "keep me\n"
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    _assert_one_line(run_in_process("report", str(corrupt)), "store")


def test_report_escapes_values_read_from_the_store(finished_run, tmp_path):
    import shutil

    from transferlab.report import build_report

    out, _ = finished_run
    copy = tmp_path / "xss"
    shutil.copytree(out, copy)
    with sqlite3.connect(copy / "store.sqlite") as db:
        config = yaml.safe_load(db.execute("SELECT value FROM meta WHERE key='config_yaml'").fetchone()[0])
        config["repetitions"] = "<script>alert(1)</script>"
        db.execute("UPDATE meta SET value=? WHERE key='config_yaml'", (yaml.safe_dump(config),))
        db.execute("UPDATE cells SET stage='<img src=x onerror=alert(2)>' WHERE rowid=1")
    html = build_report(copy).read_text()
    assert "<script>alert(1)" not in html and "<img src=x" not in html


def test_workers_end_with_their_parent(tmp_path):
    data = {**TINY, "name": "slow", "repetitions": 3, "targets": ["logistic_l", "nn_l"],
            "model_overrides": {"nn_l": {"epochs": 40}}}
    config = _write(tmp_path, data)
    process = subprocess.Popen([sys.executable, "-m", "transferlab.cli", "run", str(config), "--out",
                                str(tmp_path / "out"), "--workers", "2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    children: list[int] = []
    while time.time() < deadline and len(children) < 2:
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                                    text=True).stdout.split()]
        time.sleep(0.2)
    assert children, "no worker started"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(children):
        time.sleep(0.2)
    alive = _alive(children)
    assert not alive, f"workers {alive} outlived their parent"


def _alive(pids):
    """The processes of ``pids`` still running (neither gone nor zombies)."""
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]


def test_ctrl_c_stops_a_run_with_workers_and_the_run_resumes(tmp_path):
    """Ctrl-C reaches the whole process group, workers included. Found by a user probe: a worker interrupted while
    reading a cell off the pool's queue left the run waiting forever in the pool's shutdown, and workers
    interrupted in their imports printed tracebacks. Workers now ignore it and the run stops them. The run is
    long enough (nn_l trains 200 epochs) not to finish within the second the test waits on a busy machine: with
    40 epochs it once finished first (rc 0)."""
    data = {**TINY, "name": "slow", "repetitions": 3, "targets": ["logistic_l", "nn_l"],
            "model_overrides": {"nn_l": {"epochs": 200}}}
    config = _write(tmp_path, data)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "transferlab.cli", "run", str(config), "--out", str(out),
                                "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.time() + 120
    children: list[int] = []
    while time.time() < deadline and process.poll() is None and len(children) < 2:
        # the two workers (multiprocessing's resource tracker is a child too, and ignores Ctrl-C itself)
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(process.pid), "-f", "spawn_main"],
                                                    capture_output=True, text=True).stdout.split()]
        time.sleep(0.1)
    assert len(children) == 2, children
    # the workers are importing torch while they read their first cell off the queue: where it used to hang
    time.sleep(1.0)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError("the interrupted run did not exit") from None
    assert process.returncode != 0 and "Traceback" not in err, err
    deadline = time.time() + 10
    while time.time() < deadline and _alive(children):
        time.sleep(0.2)
    assert not _alive(children), "workers outlived the interrupted run"
    assert not (out / "results.csv").exists()
    resumed = run_in_process("run", str(config), "--out", str(out))  # and the run goes on where it stopped
    assert resumed.returncode == 0, resumed.stderr


def test_processes_started_for_a_local_dask_cluster_ignore_ctrl_c():
    """The local Dask cluster's workers are started inside ctrl_c_ignored: a process started there ignores SIGINT
    (so Ctrl-C reaches the run alone, which closes the cluster), and the caller's handler is restored."""
    from transferlab.experiments.executors import ctrl_c_ignored

    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_ignored():
        child = subprocess.run([sys.executable, "-c", "import signal; print(int(signal.getsignal(signal.SIGINT)))"],
                               capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == str(int(signal.SIG_IGN)), child.stdout + child.stderr
    assert signal.getsignal(signal.SIGINT) is before


def test_python_api_errors_are_transferlab_errors(tmp_path):
    X = np.random.default_rng(0).random((20, 4))
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    model = models.create("svm_l").fit(X, y)
    with pytest.raises(DataError, match="no rows"):
        attacks.PGDLineSearch(eps=1).run(model, np.zeros((0, 4)), np.zeros(0, int))
    with pytest.raises(DataError, match="fitted on 4 features"):
        attacks.PGDLineSearch(eps=1).run(model, np.zeros((3, 5)), np.zeros(3, int))
    folder = models.save(model, tmp_path / "m")
    spec = json.loads((folder / "spec.json").read_text())
    spec["params"]["bogus"] = 1
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="does not fit its spec"):
        models.load(folder)
    from safetensors.torch import save_file

    folder = models.save(model, tmp_path / "nan")
    save_file({"coef": torch.full((2, 4), float("nan"), dtype=torch.float64),
               "intercept": torch.zeros(2, dtype=torch.float64)}, str(folder / "weights.safetensors"))
    with pytest.raises(DataError, match="NaN"):
        models.load(folder)
    (folder / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        models.load(folder)
    with pytest.raises(ConfigError, match="class scores"):
        models.wrap(torch.nn.Linear(4, 1), n_classes=2, n_features=4)
    with pytest.raises(ConfigError, match="max_iter"):
        attacks.PGDLineSearch(eps=1, max_iter=0)
    with pytest.raises(ConfigError, match="tol"):
        attacks.PGDLineSearch(eps=1, tol=float("nan"))


# ---- fuzzing: whatever the input, the loaders raise a transferlab error or succeed -------------------------------
yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                         st.text(max_size=12))
yaml_values = st.recursive(yaml_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.sampled_from(
        ["name", "kind", "dataset", "split", "attack", "eps", "norm", "surrogates", "targets", "solver", "n_target",
         "n_test", "repetitions", "seed", "lb", "ub", "fractions", "detector", "fpr", "model_overrides", "svm_l",
         "epochs", "binary", "attack_class", "x"]), children, max_size=5)), max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(TINY) + ["kind", "detector", "seed", "bogus"]), yaml_values,
                       max_size=6))
def test_fuzzed_configs_raise_only_transferlab_errors(changes):
    try:
        parse_config({**TINY, **changes})
    except TransferlabError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzzed_yaml_text_raises_only_transferlab_errors(text):
    try:
        parse_config(parse_yaml(text, "fuzz"), "fuzz")
    except TransferlabError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600), st.sampled_from(["idx", "csv", "npz", "drebin-csv", "svmlight"]))
def test_fuzzed_data_files_raise_only_transferlab_errors(tmp_path_factory, payload, kind):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / ("f.gz" if kind == "idx" else f"f.{kind.split('-')[-1]}")
    path.write_bytes(payload if kind != "idx" or payload[:1] == b"x" else gzip.compress(payload))
    try:
        if kind == "idx":
            datasets.read_idx(path)
        else:
            datasets.load(kind, path=str(path))
    except TransferlabError:
        pass


def test_poisoning_and_label_mistakes_are_transferlab_errors(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((10, 4)), np.r_[np.zeros(5, int), np.ones(5, int)]
    with pytest.raises(ConfigError, match="exceeds the 10 training points"):
        attacks.Poisoning(n_points=20).run(X, y, X, y)
    with pytest.raises(DataError, match="validation set"):
        attacks.Poisoning(n_points=2).run(X, y, X[:0], y[:0])
    with pytest.raises(DataError, match="integers"):
        datasets.Dataset(X, y.astype(float), ["a", "b"], "floats")
    path = tmp_path / "continuous.npz"
    np.savez(path, X=X, y=np.r_[np.zeros(5), np.ones(4), 0.5])
    with pytest.raises(DataError, match="class labels"):
        datasets.load("npz", path=str(path))

"""Saved models are untrusted input: a catalogue of corrupted model folders, each refused with one DataError line
that names the file, before anything the folder describes is allocated.

Each case is (description, the saved model it starts from, how the folder is corrupted, a fragment of the
expected message). Cases that would hang or read forever if the check were missing (a cyclic forest, a spec that
is a link to /dev/zero or a FIFO) run in one subprocess with a timeout and a memory limit.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from transferlab import models
from transferlab.errors import ConfigError, DataError

D = 6  # features of the small dense models


def _data(n: int = 40, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    return X, (X[:, 0] + X[:, 1] > 1).astype(int)


def _fit_models() -> dict[str, models.Classifier]:
    X, y = _data()
    rng = np.random.default_rng(1)
    Xs = sp.random(40, 30, density=0.2, format="csr", random_state=2, data_rvs=lambda k: np.ones(k))
    ys = np.r_[np.zeros(20, int), np.ones(20, int)][rng.permutation(40)]
    images = rng.random((20, 144))
    return {
        "linear": models.LinearSVM(C=1.0).fit(X, y),
        "mlp": models.MLP(hidden=(4, 3), epochs=1).fit(X, y),
        "forest": models.RandomForest(n_estimators=3, max_depth=3).fit(X, y),
        "rbf": models.KernelSVM(gamma=0.5).fit(X, y),
        "rbf_sparse": models.KernelSVM(gamma=0.5).fit(Xs, ys),
        "cnn": models.CNN(channels=(2, 2, 2), dense=4, epochs=1).fit(images, np.arange(20) % 2),
    }


@pytest.fixture(scope="module")
def fitted() -> dict[str, models.Classifier]:
    return _fit_models()


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory) -> dict[str, Path]:
    """One pristine saved folder per model kind; every case corrupts its own copy."""
    root = tmp_path_factory.mktemp("saved")
    return {name: models.save(model, root / name) for name, model in fitted.items()}


# ---- ways to corrupt a folder ------------------------------------------------------------------------------------
def spec(change):
    """Edit spec.json as a dict (``change`` mutates it)."""
    def corrupt(folder: Path) -> None:
        data = json.loads((folder / "spec.json").read_text())
        change(data)
        (folder / "spec.json").write_text(json.dumps(data))
    return corrupt


def params(**values):
    return spec(lambda s: s["params"].update(values))


def field(**values):
    return spec(lambda s: s.update(values))


def spec_text(text: str | bytes):
    def corrupt(folder: Path) -> None:
        (folder / "spec.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return corrupt


def tensors(change):
    """Edit the weights as a dict of tensors (``change`` mutates it) and save them with safetensors."""
    def corrupt(folder: Path) -> None:
        state = load_file(str(folder / "weights.safetensors"))
        change(state)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "weights.safetensors"))
    return corrupt


def set_item(name: str, index, value):
    def change(state):
        state[name][index] = value
    return tensors(change)


def replace(name: str, make):
    def change(state):
        state[name] = make(state[name])
    return tensors(change)


def raw_weights(make):
    """Write weights.safetensors from its old bytes."""
    def corrupt(folder: Path) -> None:
        path = folder / "weights.safetensors"
        path.write_bytes(make(path.read_bytes()))
    return corrupt


def header(change):
    """Rewrite the safetensors header (``change`` mutates the parsed JSON), keeping the data bytes."""
    def make(data: bytes) -> bytes:
        n = int.from_bytes(data[:8], "little")
        head = json.loads(data[8:8 + n])
        change(head)
        text = json.dumps(head).encode()
        return len(text).to_bytes(8, "little") + text + data[8 + n:]
    return raw_weights(make)


def link(name: str, target: str):
    def corrupt(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).symlink_to(target)
    return corrupt


def fifo(name: str):
    def corrupt(folder: Path) -> None:
        (folder / name).unlink()
        os.mkfifo(folder / name)
    return corrupt


def remove(name: str):
    def corrupt(folder: Path) -> None:
        (folder / name).unlink()
    return corrupt


def as_folder(name: str):
    def corrupt(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()
    return corrupt


def forest(change):
    """Edit the forest's node arrays as numpy arrays; ``change(arrays, inner)`` gets the index of the inner nodes
    (of the first tree first)."""
    def edit(state):
        arrays = {k: v.numpy().copy() for k, v in state.items()}
        change(arrays, np.flatnonzero(arrays["left"] >= 0))
        state.update({k: torch.from_numpy(v) for k, v in arrays.items()})
    return tensors(edit)


def _cycle(a, inner):
    parent = next(i for i in inner if a["left"][a["left"][i]] >= 0)  # an inner node whose left child is inner
    a["left"][a["left"][parent]] = parent  # the child points back to its parent: scoring could loop forever


def _self_loop(a, inner):
    a["right"][inner[0]] = inner[0]


def _other_tree(a, inner):
    a["left"][inner[0]] = a["roots"][1] + 1  # a node of the second tree


def _two_parents(a, inner):
    a["right"][inner[0]] = a["left"][inner[0]]


def _one_child(a, inner):
    leaf = np.flatnonzero(a["left"] < 0)[0]
    a["right"][leaf] = leaf + 1


def _feature(value):
    def change(a, inner):
        a["feature"][inner[0]] = value
    return change


def _roots(a, inner):
    a["roots"][0] = 1


def _unnormalised(a, inner):
    a["value"][0] *= 2


def _negative_value(a, inner):
    a["value"][0] = [1.5, -0.5]


def _leaf_with_feature(a, inner):
    a["feature"][np.flatnonzero(a["left"] < 0)[0]] = 0


def _bad_child_marker(a, inner):
    leaf = np.flatnonzero(a["left"] < 0)[0]
    a["left"][leaf] = a["right"][leaf] = -5


def _sparse_index(change):
    def edit(state):
        index = state["support_vectors_index"].clone()
        change(index)
        state["support_vectors_index"] = index
    return tensors(edit)


def _swap_first_two(index):
    index[:, [0, 1]] = index[:, [1, 0]]


def _column_out_of_range(index):
    index[1, 0] = 30


def _row_out_of_range(index):
    index[0, -1] = 10 ** 6


#: cases that would hang or read forever without their check: run in a subprocess with a timeout
ISOLATED = {"cyclic forest", "spec.json is a link to /dev/zero", "spec.json is a FIFO",
            "weights.safetensors is a link to /dev/zero", "weights.safetensors is a FIFO"}
CASES = [
    # -- files ---------------------------------------------------------------------------------------------------
    ("spec.json is a link to /dev/zero", "linear", link("spec.json", "/dev/zero"), "spec.json is not a regular file"),
    ("spec.json is a FIFO", "linear", fifo("spec.json"), "spec.json is not a regular file"),
    ("spec.json is a folder", "linear", as_folder("spec.json"), "spec.json is not a regular file"),
    ("spec.json is missing", "linear", remove("spec.json"), "spec.json is missing"),
    ("spec.json of 2 MB", "linear", spec_text("{" + " " * (2 << 20) + "}"), "more than the 1,048,576"),
    ("weights.safetensors is a link to /dev/zero", "linear", link("weights.safetensors", "/dev/zero"),
     "weights.safetensors is not a regular file"),
    ("weights.safetensors is a FIFO", "linear", fifo("weights.safetensors"),
     "weights.safetensors is not a regular file"),
    ("weights.safetensors is missing", "linear", remove("weights.safetensors"), "weights.safetensors is missing"),
    # -- spec.json -----------------------------------------------------------------------------------------------
    ("spec.json is not JSON", "linear", spec_text("{not json"), "not valid JSON"),
    ("spec.json is not UTF-8", "linear", spec_text(b"\xff\xfe{}"), "not valid JSON"),
    ("spec.json nested 100,000 deep", "linear", spec_text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    ("spec.json repeats a key", "linear", spec_text('{"format": "transferlab-model/1", "format": 1}'),
     "appears twice"),
    ("spec.json is a list", "linear", spec_text("[1, 2]"), "not a transferlab model spec"),
    ("another format", "linear", field(format="transferlab-model/9"), "not a transferlab model spec"),
    ("a missing field", "linear", spec(lambda s: s.pop("n_features")), "lacks n_features"),
    ("an unknown field", "linear", field(pickle="x"), "unknown fields pickle"),
    ("an unknown class", "linear", field(**{"class": "Pickled"}), "not a saveable transferlab model"),
    ("5·10⁷ features (linear)", "linear", field(n_features=50_000_000), "n_features must be an integer from 1 to"),
    ("5·10⁷ features (MLP)", "mlp", field(n_features=50_000_000), "n_features must be an integer from 1 to"),
    ("a 20,000-wide layer on 10⁶ features", "mlp",
     spec(lambda s: s.update(n_features=1_000_000) or s["params"].update(hidden=[20_000, 200])),
     "more than the 268,435,456 transferlab loads"),
    ("a 20,000 × 20,000 MLP", "mlp", params(hidden=[20_000, 20_000]), "more than the 268,435,456 transferlab loads"),
    ("a 20,000-wide layer where the file has 4", "mlp", params(hidden=[20_000, 3]),
     "tensor '0.weight' has shape (4, 6)"),
    ("n_features other than the weights'", "linear", field(n_features=7), "tensor 'coef' has shape (2, 6)"),
    ("n_features as text", "linear", field(n_features="6"), "n_features must be an integer"),
    ("n_features true", "linear", field(n_features=True), "n_features must be an integer"),
    ("n_features 0", "linear", field(n_features=0), "n_features must be an integer"),
    ("one class", "linear", field(n_classes=1), "n_classes must be an integer from 2"),
    ("an extra score column (linear)", "linear", field(n_classes=3), "tensor 'coef' has shape (2, 6)"),
    ("an extra score column (MLP)", "mlp", field(n_classes=3), "has shape"),
    ("an extra score column (forest)", "forest", field(n_classes=3), "tensor 'value' has shape"),
    ("dtype float16", "linear", field(dtype="float16"), "dtype must be"),
    ("params not a mapping", "linear", field(params=[1]), "params must be a mapping"),
    ("an unknown parameter", "linear", params(bogus=1), "does not fit its spec: LinearSVM has no parameter 'bogus'"),
    ("batch_size 0", "linear", params(batch_size=0), "parameter 'batch_size' must be an integer >= 1"),
    ("batch_size -4", "mlp", params(batch_size=-4), "parameter 'batch_size'"),
    ("batch_size 2.5", "forest", params(batch_size=2.5), "parameter 'batch_size'"),
    ("batch_size as text", "rbf", params(batch_size="many"), "parameter 'batch_size'"),
    ("gamma NaN", "rbf", params(gamma=float("nan")), "parameter 'gamma' must be a finite number > 0, got nan"),
    ("gamma negative", "rbf", params(gamma=-0.5), "parameter 'gamma' must be a finite number > 0"),
    ("gamma infinite", "rbf", params(gamma=1e999), "parameter 'gamma'"),
    ("C 0", "linear", params(C=0), "parameter 'C' must be a finite number > 0"),
    ("C true", "linear", params(C=True), "parameter 'C'"),
    ("C null", "rbf", params(C=None), "parameter 'C'"),
    ("hidden as text", "mlp", params(hidden="abc"), "parameter 'hidden'"),
    ("hidden with a negative width", "mlp", params(hidden=[4, -3]), "parameter 'hidden'"),
    ("hidden with a float width", "mlp", params(hidden=[4, 3.5]), "parameter 'hidden'"),
    ("hidden nested", "mlp", params(hidden=[[4], 3]), "parameter 'hidden'"),
    ("epochs 0", "mlp", params(epochs=0), "parameter 'epochs'"),
    ("lr NaN", "mlp", params(lr=float("nan")), "parameter 'lr'"),
    ("a negative seed", "mlp", params(seed=-1), "parameter 'seed'"),
    ("n_estimators 0", "forest", params(n_estimators=0), "parameter 'n_estimators'"),
    ("n_estimators other than the trees", "forest", params(n_estimators=5), "tensor 'roots' has shape (3,)"),
    ("max_depth 0", "forest", params(max_depth=0), "parameter 'max_depth'"),
    ("n_jobs 0", "forest", params(n_jobs=0), "parameter 'n_jobs'"),
    ("CNN channels of two layers", "cnn", params(channels=[2, 2]), "parameter 'channels'"),
    ("CNN image_shape against n_features", "cnn", params(image_shape=[10, 10]), "image_shape=10×10"),
    ("CNN rows too small for its image", "cnn", field(n_features=100), "at least 12×12"),
    # -- weights.safetensors -------------------------------------------------------------------------------------
    ("garbage weights", "linear", raw_weights(lambda b: b"garbage"), "corrupt"),
    ("a header longer than the file", "linear", raw_weights(lambda b: (10 ** 12).to_bytes(8, "little") + b[8:]),
     "corrupt: its header claims 1,000,000,000,000 bytes"),
    ("a header that is not JSON", "linear", raw_weights(lambda b: (4).to_bytes(8, "little") + b"{{{{" + b[12:]),
     "corrupt"),
    ("a tensor with huge declared shape", "linear",
     header(lambda h: h["coef"].update(shape=[2, 10 ** 12])), "does not take the"),
    ("overlapping tensors", "linear",
     header(lambda h: h["intercept"].update(data_offsets=[0, 16])), "corrupt"),
    ("bytes after the tensors", "linear", raw_weights(lambda b: b + b"\0" * 8), "after the header"),
    ("a truncated file", "linear", raw_weights(lambda b: b[:-8]), "corrupt"),
    ("an unknown dtype", "linear", header(lambda h: h["intercept"].update(dtype="F16", data_offsets=[
        h["intercept"]["data_offsets"][0], h["intercept"]["data_offsets"][0] + 4])), "corrupt"),
    ("bad metadata", "linear", header(lambda h: h.update(__metadata__={"a": 1})), "__metadata__"),
    ("a missing tensor", "linear", tensors(lambda s: s.pop("intercept")), "holds the tensors coef"),
    ("an extra tensor", "linear", tensors(lambda s: s.update(extra=torch.zeros(2))), "holds the tensors"),
    ("extra score rows in coef", "linear", replace("coef", lambda t: torch.cat([t, t[:1]])),
     "tensor 'coef' has shape (3, 6)"),
    ("extra score columns in the MLP's output", "mlp",
     tensors(lambda s: s.update({"4.weight": torch.zeros(3, 3), "4.bias": torch.zeros(3)})),
     "tensor '4.weight' has shape (3, 3)"),
    ("extra score columns in the forest", "forest", replace("value", lambda t: torch.cat([t, t[:, :1]], 1)),
     "tensor 'value' has shape"),
    ("coef wider than n_features", "linear",
     replace("coef", lambda t: torch.zeros(2, 7, dtype=t.dtype)), "has shape (2, 7)"),
    ("float tree indices", "forest", replace("feature", lambda t: t.double()), "holds F64 values"),
    ("NaN weights", "linear", set_item("coef", (1, 0), float("nan")), "NaN"),
    ("an infinite threshold", "forest", set_item("threshold", 0, float("inf")), "NaN or infinite"),
    ("support vectors and dual coefficients disagree", "rbf", replace("dual_coef", lambda t: t[:-1]),
     "tensor 'dual_coef' has shape"),
    ("sparse support vectors: a column out of range", "rbf_sparse", _sparse_index(_column_out_of_range),
     "indices must lie in the"),
    ("sparse support vectors: a row out of range", "rbf_sparse", _sparse_index(_row_out_of_range),
     "indices must lie in the"),
    ("sparse support vectors: unsorted", "rbf_sparse", _sparse_index(_swap_first_two), "must be sorted"),
    ("sparse support vectors: float indices", "rbf_sparse", replace("support_vectors_index", lambda t: t.double()),
     "holds F64 values"),
    # -- a forest's trees ----------------------------------------------------------------------------------------
    ("cyclic forest", "forest", forest(_cycle), "they form a cycle"),
    ("a node that is its own child", "forest", forest(_self_loop), "point forward"),
    ("a child in another tree", "forest", forest(_other_tree), "leave the tree"),
    ("a node with two parents", "forest", forest(_two_parents), "child of exactly one node"),
    ("a leaf with one child", "forest", forest(_one_child), "a leaf of the forest"),
    ("a leaf with a feature", "forest", forest(_leaf_with_feature), "a leaf of the forest"),
    ("a child index of -5", "forest", forest(_bad_child_marker), "both children -1"),
    ("an out-of-range feature index", "forest", forest(_feature(D)),
     "splits on feature 6, outside the 6 features"),
    ("a negative feature index at a split", "forest", forest(_feature(-2)),
     "splits on feature -2"),
    ("tree roots not from node 0", "forest", forest(_roots), "tree roots must start at node 0"),
    ("node values that do not sum to 1", "forest", forest(_unnormalised), "class frequencies"),
    ("negative node values", "forest", forest(_negative_value), "class frequencies"),
]
def _corrupted(saved: dict[str, Path], root: Path, case) -> Path:
    description, source, corrupt, _ = case
    folder = root / "".join(c if c.isalnum() else "_" for c in description)
    shutil.copytree(saved[source], folder)
    corrupt(folder)
    return folder


def _probe(folder: Path, n_features: int) -> str:
    """Load and, if loading passes, score: the outcome as one line (as _SCRIPT does in a subprocess)."""
    try:
        model = models.load(folder)
        model.decision_function(np.zeros((3, n_features)))
    except DataError as exc:
        return "DataError: " + str(exc)
    return "loaded"


_SCRIPT = """
import json, sys
import numpy as np
from transferlab import models
from transferlab.errors import DataError

outcomes = {}
for folder, n_features in json.loads(sys.argv[1]):
    try:
        models.load(folder).decision_function(np.zeros((3, n_features)))
        outcomes[folder] = "loaded"
    except DataError as exc:
        outcomes[folder] = "DataError: " + str(exc)
print(json.dumps(outcomes))
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.fixture(scope="module")
def isolated(fitted, saved, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """{case: (folder, outcome)} of the ISOLATED cases, all run in one subprocess with a 300 s timeout and 4 GiB of
    address space, so that a missing check shows as a failure and not as a hung or swapping test run."""
    root = tmp_path_factory.mktemp("isolated")
    cases = [c for c in CASES if c[0] in ISOLATED]
    folders = {c[0]: _corrupted(saved, root, c) for c in cases}
    probes = [(str(folders[c[0]]), fitted[c[1]].n_features_in_) for c in cases]
    try:
        result = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(probes)], capture_output=True, text=True,
                                timeout=300, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        return {name: (folder, "timed out: it hangs") for name, folder in folders.items()}
    if result.returncode != 0:
        return {name: (folder, f"crashed: {result.stderr[-500:]}") for name, folder in folders.items()}
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: (folder, outcomes[str(folder)]) for name, folder in folders.items()}


def test_the_pristine_folders_load_and_score_as_saved(fitted, saved):
    for name, folder in saved.items():
        model = models.load(folder)
        X = np.random.default_rng(3).random((5, model.n_features_in_))
        np.testing.assert_allclose(model.decision_function(X), fitted[name].decision_function(X), rtol=1e-6,
                                   atol=1e-7)


def test_the_catalogue_names_are_unique_and_cover_the_isolated_cases():
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names) and ISOLATED <= set(names)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_corrupted_saved_model_is_one_data_error_line(fitted, saved, tmp_path, request, case):
    description, source, _, expected = case
    if description in ISOLATED:
        folder, outcome = request.getfixturevalue("isolated")[description]
    else:
        folder = _corrupted(saved, tmp_path, case)
        outcome = _probe(folder, fitted[source].n_features_in_)
    assert outcome.startswith("DataError: "), f"{description}: {outcome}"
    message = outcome.removeprefix("DataError: ")
    assert expected in message, f"{description}: {message}"
    assert "\n" not in message and len(message) < 700 and str(folder) in message


@pytest.mark.parametrize("change", [field(n_features=50_000_000), params(hidden=[20_000, 20_000])],
                         ids=["5e7 features", "20000x20000 layers"])
def test_a_spec_too_large_is_refused_from_its_numbers_before_the_weights_are_read(saved, tmp_path, change):
    folder = tmp_path / "m"
    shutil.copytree(saved["mlp"], folder)
    change(folder)
    (folder / "weights.safetensors").unlink()  # were the weights read, the message would say they are missing
    with pytest.raises(DataError, match="spec.json"):
        models.load(folder)


@pytest.mark.parametrize("model, name", [
    (models.KernelSVM(gamma=float("nan")), "gamma"), (models.KernelSVM(gamma=-1.0), "gamma"),
    (models.LinearSVM(C=-1), "C"), (models.Logistic(C=None), "C"), (models.MLP(batch_size=0), "batch_size"),
    (models.MLP(hidden="abc"), "hidden"), (models.RandomForest(n_estimators=0), "n_estimators"),
    (models.Ridge(alpha=-1.0), "alpha"), (models.MLP(epochs=True), "epochs"),
])
def test_parameters_are_checked_before_training(model, name):
    X, y = _data()
    with pytest.raises(ConfigError, match=f"parameter '{name}'"):
        model.fit(X, y)


def test_a_network_too_large_for_its_data_is_refused_before_it_is_built():
    X, y = _data(d=20_000)
    with pytest.raises(ConfigError, match="more than the 268,435,456"):
        models.MLP(hidden=(20_000,)).fit(X[:4], y[:4])

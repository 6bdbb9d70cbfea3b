"""The DREBIN case study's data side: the release folder and CSV loaders, svmlight, and feature selection."""

import os
import shutil
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp
from drebin_data import SEND_SMS, write_drebin_csv, write_drebin_folder, write_svmlight
from hypothesis import given, settings
from hypothesis import strategies as st

from transferlab import datasets
from transferlab.datasets import drebin as drebin_mod
from transferlab.errors import DataError


# ---- the release folder ----------------------------------------------------------------------------------------
def test_folder_round_trip(tmp_path):
    written = write_drebin_folder(tmp_path, n_apps=300, n_malware=100, unlisted_malware=3)
    ds = datasets.load("drebin", path=str(tmp_path))
    assert isinstance(ds.X, sp.csr_matrix) and ds.X.dtype == np.float64 and ds.X.has_sorted_indices
    assert np.array_equal(ds.X.toarray(), written.X)  # blank lines ignored, a repeated line is a single 1
    assert np.array_equal(ds.y, written.y) and ds.classes == ["benign", "malware"]
    assert ds.feature_names == written.feature_names == sorted(written.feature_names)
    assert ds.row_names == written.row_names == sorted(written.row_names)
    assert ds.name == "drebin"
    assert ds.description.startswith(f"DREBIN release at {tmp_path}: 300 apps (100 malware), "
                                     f"{len(written.feature_names)} features")
    assert "3 apps of sha256_family.csv have no feature file" in ds.description
    # malware asks for SEND_SMS far more often (the generator's signal)
    col = ds.feature_names.index(SEND_SMS)
    sms = ds.X[:, col].toarray().ravel()
    assert sms[ds.y == 1].mean() > sms[ds.y == 0].mean() + 0.4


def test_folder_may_be_feature_vectors_itself(tmp_path):
    written = write_drebin_folder(tmp_path, n_apps=40, n_malware=10)
    ds = datasets.load_drebin_folder(tmp_path / "feature_vectors")
    assert np.array_equal(ds.X.toarray(), written.X) and np.array_equal(ds.y, written.y)


def test_folder_is_independent_of_listing_and_line_order(tmp_path, monkeypatch):
    write_drebin_folder(tmp_path, n_apps=80, n_malware=30, seed=3)
    first = datasets.load_drebin_folder(tmp_path)
    # reverse every file's lines, and have the file system list the files in another order
    for f in (tmp_path / "feature_vectors").iterdir():
        f.write_text("\n".join(reversed(f.read_text().splitlines())))
    real_scandir = os.scandir

    class Shuffled:
        def __init__(self, path):
            self.entries = list(real_scandir(path))
            np.random.default_rng(1).shuffle(self.entries)

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(drebin_mod.os, "scandir", Shuffled)
    second = datasets.load_drebin_folder(tmp_path)
    assert (first.X != second.X).nnz == 0
    assert first.feature_names == second.feature_names and first.row_names == second.row_names
    assert np.array_equal(first.y, second.y)


def test_folder_hidden_files_and_upper_case_csv_hashes(tmp_path):
    written = write_drebin_folder(tmp_path, n_apps=30, n_malware=10)
    (tmp_path / "feature_vectors" / ".DS_Store").write_bytes(b"\x00\x01 not a feature file")
    csv = tmp_path / "sha256_family.csv"
    csv.write_text(csv.read_text().upper().replace("SHA256,FAMILY", "sha256,family"))
    ds = datasets.load_drebin_folder(tmp_path)
    assert len(ds) == 30 and np.array_equal(ds.y, written.y)


def test_folder_subset_and_select_columns_keep_names(tmp_path):
    write_drebin_folder(tmp_path, n_apps=50, n_malware=20)
    ds = datasets.load_drebin_folder(tmp_path)
    part = ds.subset(np.array([4, 0, 7]))
    assert part.row_names == [ds.row_names[i] for i in (4, 0, 7)]
    assert part.feature_names == ds.feature_names and part.description == ds.description
    mask = ds.subset(ds.y == 1)
    assert mask.row_names == [r for r, m in zip(ds.row_names, ds.y) if m]
    cols = np.array([3, 1, 10])
    narrow = ds.select_columns(cols)
    assert sp.isspmatrix_csr(narrow.X) and narrow.X.shape == (50, 3)
    assert np.array_equal(narrow.X.toarray(), ds.X.toarray()[:, cols])
    assert narrow.feature_names == [ds.feature_names[c] for c in cols] and narrow.row_names == ds.row_names


@pytest.mark.parametrize("case, match", [
    ("missing", "not found"),
    ("empty", "is empty"),
    ("no_feature_vectors", "no feature_vectors/ folder"),
    ("no_family_csv", "no sha256_family.csv"),
    ("no_app_files", "holds no app files"),
    ("malformed", r"line 3: 'permission android.permission.SEND_SMS' is not a 'prefix::value' feature"),
    ("header", r"line 1: header is 'hash,label', expected 'sha256,family'"),
    ("names_no_app", "names no app in"),
    ("all_malware", "single class"),
])
def test_folder_errors(tmp_path, case, match):
    root = tmp_path / "release"
    if case == "missing":
        pass
    elif case == "empty":
        root.mkdir()
    elif case == "no_feature_vectors":
        root.mkdir()
        (root / "readme.txt").write_text("hello")
    else:
        write_drebin_folder(root, n_apps=20, n_malware=5)
        fv, family_csv = root / "feature_vectors", root / "sha256_family.csv"
        first = sorted(fv.iterdir())[0]
        if case == "no_family_csv":
            family_csv.unlink()
        elif case == "no_app_files":
            shutil.rmtree(fv)
            fv.mkdir()
        elif case == "malformed":
            first.write_text("permission::android.permission.INTERNET\n\npermission android.permission.SEND_SMS\n")
        elif case == "header":
            family_csv.write_text("hash,label\n" + "\n".join(family_csv.read_text().splitlines()[1:]))
        elif case == "names_no_app":
            family_csv.write_text("sha256,family\n" + "ab" * 32 + ",Gone\n")
        elif case == "all_malware":
            family_csv.write_text("sha256,family\n" + "".join(f"{f.name},X\n" for f in fv.iterdir()))
    with pytest.raises(DataError, match=match) as info:
        datasets.load("drebin", path=str(root))
    assert "\n" not in str(info.value)
    if case == "malformed":
        assert str(first) in str(info.value)


# ---- the DREBIN-215-style CSV ----------------------------------------------------------------------------------
def test_csv_round_trip_drops_missing_rows(tmp_path):
    path = tmp_path / "drebin215.csv"
    written = write_drebin_csv(path, n=300, n_missing=2)
    ds = datasets.load("drebin-csv", path=str(path))
    assert isinstance(ds.X, sp.csr_matrix) and ds.X.dtype == np.float64
    assert np.array_equal(ds.X.toarray(), written.X) and np.array_equal(ds.y, written.y)
    assert ds.feature_names == written.feature_names and ds.classes == ["benign", "malware"]
    assert len(ds) == 298 and "2 rows with missing ('?') cells dropped" in ds.description
    assert ds.name == "drebin215"


def test_csv_custom_labels_and_column(tmp_path):
    path = tmp_path / "d.csv"
    written = write_drebin_csv(path, n=60, n_missing=0, malware_label="malware", benign_label="goodware")
    path.write_text(path.read_text().replace(",class\n", ",label\n", 1))
    ds = datasets.load("drebin-csv", path=str(path), label_column="label", malware_label="malware",
                       benign_label="goodware")
    assert np.array_equal(ds.y, written.y) and "dropped" not in ds.description


def test_csv_accepts_padded_and_decimal_binary_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,class\n1, 0,S\n1.0,0,B\n0,1.,B\n")
    ds = datasets.load_drebin_csv(path)
    assert ds.X.toarray().tolist() == [[1, 0], [1, 0], [0, 1]] and ds.y.tolist() == [1, 0, 0]


@pytest.mark.parametrize("text, options, match", [
    ("a,b,class\n1,0,S\n0,2,B\n", {}, r"line 3, column 'b': '2' is not 0, 1 or '\?'"),
    ("a,b,class\n1,0,S\n0,,B\n", {}, r"line 3, column 'b': '' is not 0, 1"),
    ("a,b,class\n1,0,S\n0,1,M\n", {}, r"line 3: class label 'M' is neither .* set malware_label= and benign_label="),
    ("a,b,class\n1,0,S\n0,1,S\n", {}, "single class"),
    ("a,b,class\n1,?,S\n0,1,B\n", {}, "single class"),
    ("a,b,class\n1,0,S\n0,1\n", {}, "line 3: 2 cells but the header has 3"),
    ("a,b,class\n1,0,S\n0,1,B\n", {"label_column": "kind"}, "no column named 'kind'; set label_column="),
    ("a,b,class\n", {}, "at least one data row"),
])
def test_csv_errors(tmp_path, text, options, match):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        datasets.load("drebin-csv", path=str(path), **options)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not found"):
        datasets.load_drebin_csv(tmp_path / "nope.csv")


# ---- svmlight ----------------------------------------------------------------------------------------------------
def test_svmlight_round_trip(tmp_path):
    path = tmp_path / "data.svm"
    written = write_svmlight(path, n=120, d=30)
    ds = datasets.load("svmlight", path=str(path))
    assert sp.isspmatrix_csr(ds.X) and ds.X.shape == (120, 30)
    assert np.allclose(ds.X.toarray(), written.X)
    assert ds.classes == ["-1", "1"] and np.array_equal(ds.y, (written.y == 1).astype(int))
    assert ds.feature_names == [f"f{j}" for j in range(30)]
    wide = datasets.load("svmlight", path=str(path), n_features=40)
    assert wide.X.shape == (120, 40) and len(wide.feature_names) == 40


@pytest.mark.parametrize("text", ["1 1:0.5\nnot a line\n", "1 a:b\n", "1 3:1 2:1\n"])
def test_svmlight_corrupt_file(tmp_path, text):
    path = tmp_path / "bad.svm"
    path.write_text(text)
    with pytest.raises(DataError, match="not a readable svmlight") as info:
        datasets.load_svmlight(path)
    assert "\n" not in str(info.value)


def test_svmlight_bad_options(tmp_path):
    path = tmp_path / "data.svm"
    write_svmlight(path, n=20, d=10)
    with pytest.raises(DataError, match="not a readable svmlight"):
        datasets.load_svmlight(path, n_features=3)  # fewer columns than the file uses
    with pytest.raises(DataError, match="n_features must be a positive integer"):
        datasets.load_svmlight(path, n_features=0)
    with pytest.raises(DataError, match="not found"):
        datasets.load_svmlight(tmp_path / "nope.svm")
    with pytest.raises(DataError, match="takes no option"):
        datasets.load("svmlight", path=str(path), zero_based=True)


# ---- feature selection -----------------------------------------------------------------------------------------
def _brute_force(X: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Top-k columns by exact |P(x=1|malware) - P(x=1|benign)|, ties to the lower index."""
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    scores = [abs(Fraction(int(X[y == 1, j].sum()), n1) - Fraction(int(X[y == 0, j].sum()), n0))
              for j in range(X.shape[1])]
    order = sorted(range(X.shape[1]), key=lambda j: (-scores[j], j))
    return np.array(sorted(order[:k]))


def _random_binary(seed: int, n: int, d: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    y = np.r_[0, 1, rng.integers(0, 2, size=n - 2)]
    X = (rng.random((n, d)) < rng.uniform(0.05, 0.6, size=d)).astype(float)
    return datasets.Dataset(X, y, ["benign", "malware"], "random")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(2, 30), d=st.integers(1, 25), k=st.integers(1, 30))
def test_selection_matches_brute_force(seed, n, d, k):
    ds = _random_binary(seed, n, d)  # few rows: many exact ties
    expected = _brute_force(ds.X, ds.y, k)
    dense = datasets.select_features(ds, k)
    sparse = datasets.select_features(datasets.Dataset(sp.csr_matrix(ds.X), ds.y, ds.classes, "s"), k)
    assert np.array_equal(dense, expected) and np.array_equal(sparse, expected)


class _NoDense(sp.csr_matrix):
    """A CSR matrix that refuses to become dense."""

    def toarray(self, *args, **kwargs):
        raise AssertionError("densified")

    todense = toarray


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selection_on_sparse_stays_sparse(tmp_path, seed):
    write_drebin_folder(tmp_path, n_apps=120, n_malware=40, seed=seed)
    ds = datasets.load_drebin_folder(tmp_path)
    expected = _brute_force(ds.X.toarray(), ds.y, 10)
    guarded = datasets.Dataset(_NoDense(ds.X), ds.y, ds.classes, ds.name, feature_names=ds.feature_names)
    chosen = datasets.select_features(guarded, 10)
    assert np.array_equal(chosen, expected) and np.all(np.diff(chosen) > 0)
    assert SEND_SMS in [ds.feature_names[c] for c in chosen]  # the generator's strongest signal
    narrow = ds.select_columns(chosen)
    assert sp.isspmatrix_csr(narrow.X) and narrow.X.shape == (120, 10)


def test_selection_edges():
    ds = _random_binary(0, 20, 6)
    assert np.array_equal(datasets.select_features(ds, 6), np.arange(6))
    assert np.array_equal(datasets.select_features(ds, 100), np.arange(6))
    for k in (0, -3):
        with pytest.raises(DataError, match="k="):
            datasets.select_features(ds, k)
    three = datasets.Dataset(ds.X, ds.y % 3, ["a", "b", "c"], "three")
    with pytest.raises(DataError, match="binary"):
        datasets.select_features(three, 2)
    one_class = datasets.Dataset(ds.X, np.zeros(20, int), ["benign", "malware"], "one")
    with pytest.raises(DataError, match="both classes"):
        datasets.select_features(one_class, 2)


# ---- the Dataset container ---------------------------------------------------------------------------------------
def test_dataset_new_fields_are_optional_and_checked():
    X, y = np.eye(3), np.array([0, 1, 0])
    plain = datasets.Dataset(X, y, ["a", "b"], "p", None, (1, 3))
    assert plain.feature_names is None and plain.row_names is None and plain.description == ""
    assert plain.subset(np.array([0, 2])).image_shape == (1, 3)
    narrow = plain.select_columns(np.array([True, False, True]))
    assert narrow.image_shape is None and np.array_equal(narrow.X, X[:, [0, 2]]) and narrow.feature_names is None
    with pytest.raises(DataError, match="2 feature names for 3 columns"):
        datasets.Dataset(X, y, ["a", "b"], "p", feature_names=["u", "v"])
    with pytest.raises(DataError, match="1 row names for 3 rows"):
        datasets.Dataset(X, y, ["a", "b"], "p", row_names=["r"])
    with pytest.raises(DataError, match="column indices"):
        plain.select_columns(np.array([3]))


def test_registry_lists_the_new_datasets():
    for name in ("drebin", "drebin-csv", "svmlight"):
        assert name in datasets.DATASETS
        with pytest.raises(DataError, match="needs path="):
            datasets.load(name)
    with pytest.raises(DataError, match="takes no option"):
        datasets.load("drebin", path="x", label_column="class")

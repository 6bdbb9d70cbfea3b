"""The data loaders hold at their edges (issue 15, part 5): a catalogue of bad inputs, each a one-line DataError
naming the file (and its line and column) or the option to fix; the inputs that used to cost gigabytes, loaded again
in a process whose address space is capped, to show they are refused without allocating; and the full-width sparse
data in the index type scikit-learn's solvers take. Every test writes its own small data."""

import io
import json
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from drebin_data import write_drebin_folder
from transferlab import datasets
from transferlab.datasets import dataset as limits
from transferlab.errors import DataError

LONG = 100_000  # the cell that cost 2.3 GB


# ---- writers: each writes its bad input under ``folder`` and returns (dataset name, load options) --------------
def _text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _csv(text, **options):
    return lambda folder: ("csv", {"path": str(_text(folder, "d.csv", text)), **options})


def _drebin_csv(text, **options):
    return lambda folder: ("drebin-csv", {"path": str(_text(folder, "d.csv", text)), **options})


def _svmlight(text, **options):
    return lambda folder: ("svmlight", {"path": str(_text(folder, "d.svm", text)), **options})


def _drebin_rows(n=6):
    return "".join("1,0,S\n" if i % 2 else "0,1,B\n" for i in range(n))


def _npy_header(shape, descr="<f8"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _npz_declaring(folder: Path, shape, descr="<f8", claim_size=True) -> Path:
    """An npz of a few hundred bytes whose ``X.npy`` header declares ``shape``. With ``claim_size`` the zip
    directory also claims the member is that large (an attacker controls both), so only the header tells."""
    path = folder / "d.npz"
    header = _npy_header(shape, descr)
    labels = io.BytesIO()
    np.save(labels, np.array([0, 1]))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("X.npy", header)
        archive.writestr("y.npy", labels.getvalue())
    if claim_size:
        size = len(header) + int(np.prod(shape)) * np.dtype(descr).itemsize
        raw = bytearray(path.read_bytes())
        local = raw.index(b"PK\x03\x04")
        central = raw.index(b"PK\x01\x02")
        raw[local + 22:local + 26] = struct.pack("<I", size)  # uncompressed size, local header
        raw[central + 24:central + 28] = struct.pack("<I", size)  # and in the central directory
        path.write_bytes(bytes(raw))
    return path


def _npz(shape, descr="<f8", claim_size=True):
    return lambda folder: ("npz", {"path": str(_npz_declaring(folder, shape, descr, claim_size))})


def _npz_objects(folder):
    path = folder / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", _npy_header((2, 2), "|O") + b"\0" * 32)
        archive.writestr("y.npy", _npy_header((2,), "<i8") + b"\0" * 16)
    return "npz", {"path": str(path)}


def _face(size=(250, 250), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(10, 10, 3)).astype(np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR)


def _lfw(folder: Path, people: dict) -> Path:
    """An LFW alignment folder: ``people`` maps a name to its number of 250×250 JPEG faces."""
    root = folder / "lfw"
    for k, (person, n) in enumerate(people.items()):
        (root / person).mkdir(parents=True)
        for i in range(1, n + 1):
            _face(seed=10 * k + i).save(root / person / f"{person}_{i:04d}.jpg", quality=85)
    return folder


def _jpeg_declaring(path: Path, width: int, height: int) -> None:
    """A 16×16 JPEG whose frame header (SOF0) is rewritten to declare ``width``×``height`` pixels: a few hundred
    bytes that a decoder would expand to width·height·3 bytes."""
    buffer = io.BytesIO()
    _face((16, 16)).save(buffer, format="JPEG")
    raw = bytearray(buffer.getvalue())
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(raw))


def _lfw_bomb(width, height):
    def write(folder):
        _lfw(folder, {"Ann_A": 2, "Bob_B": 2})
        _jpeg_declaring(folder / "lfw" / "Ann_A" / "Ann_A_0001.jpg", width, height)
        return "lfw", {"path": str(folder), "people": ["Ann_A", "Bob_B"]}
    return write


def _lfw_people(images, **options):
    """An LFW folder of ``images`` (person -> number of faces), loaded with ``options``."""
    return lambda folder: ("lfw", {"path": str(_lfw(folder, images)), **options})


def _drebin_folder(folder):
    write_drebin_folder(folder, n_apps=30, n_malware=10, n_features=40)
    return "drebin", {"path": str(folder)}


def _mnist(folder):
    rng = np.random.default_rng(0)
    for part, n in (("train", 30), ("t10k", 10)):
        datasets.write_idx(folder / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        datasets.write_idx(folder / f"{part}-labels-idx1-ubyte", np.arange(n) % 10)
    return "mnist", {"path": str(folder), "digits": (3, 5)}


# ---- the catalogue: (what a hostile or mistaken user gives, writer, bounds patched for the case, message) ---------
CASES = [
    # CSV: one huge cell (2.3 GB before: a fixed-width numpy string array as wide as the longest cell)
    ("csv: a 100,000-character feature cell", _csv("a,b,label\n1,2,0\n3," + "7" * LONG + ",1\n"), {},
     r"d.csv, line 3, column 'b': a cell of 100,000 characters, more than the 1,000 a cell may hold"),
    ("csv: a 100,000-digit label (int() refused it with a traceback)",
     _csv("a,label\n1," + "7" * LONG + "\n2,3\n"), {}, r"line 2, column 'label': a cell of 100,000 characters"),
    ("drebin-csv: a 100,000-character cell after 2,000 rows (2.4 GB before)",
     _drebin_csv("f1,f2,class\n" + _drebin_rows(2000) + "1," + "1" * LONG + ",S\n"), {},
     r"line 2002, column 'f2': a cell of 100,000 characters"),
    ("csv: a cell beyond the csv module's own limit", _csv("a,label\n" + "1" * 200_000 + ",0\n"), {},
     r"line 2: not a readable CSV row \(field larger than field limit"),
    ("csv: a header wider than MAX_FEATURES", _csv("a,b,c,d,e,label\n1,2,3,4,5,0\n"), {"MAX_FEATURES": 4},
     r"d.csv, line 1 \(the header\): 5 features, more than the 4"),
    ("csv: an empty line before the header", _csv("\na,label\n1,0\n2,1\n"), {}, "line 1: empty line before the header"),
    ("csv: an empty line between rows", _csv("a,label\n1,0\n\n2,1\n"), {}, "line 3: 0 cells but the header has 2"),
    ("csv: not UTF-8 after the first line", lambda folder: ("csv", {"path": str(_latin(folder))}), {}, "not UTF-8"),
    # label_column out of range: it wrapped around and another column silently became the labels
    ("csv: label_column past the last column", _csv("a,b,label\n1,2,0\n3,4,1\n", label_column=3), {},
     r"label_column=3 \(dataset.options.label_column\) is out of range: .*d.csv has 3 columns, indices 0..2"),
    ("csv: label_column far past the last column", _csv("a,b,label\n1,2,0\n3,4,1\n", label_column=7), {},
     r"label_column=7 \(dataset.options.label_column\) is out of range"),
    ("csv: a negative label_column", _csv("a,b,label\n1,2,0\n3,4,1\n", label_column=-1), {},
     r"label_column=-1 \(dataset.options.label_column\) is out of range: .*negative indices are not read"),
    ("csv: a label_column of digits out of range", _csv("a,b,label\n1,2,0\n3,4,1\n", label_column="5"), {},
     r"label_column='5' \(dataset.options.label_column\) is out of range"),
    ("csv: a boolean label_column", _csv("a,b,label\n1,2,0\n3,4,1\n", label_column=True), {},
     r"label_column \(dataset.options.label_column\) must be a column name or an index 0..2, got True"),
    ("drebin-csv: label_column out of range", _drebin_csv("f1,f2,class\n" + _drebin_rows(), label_column=3), {},
     r"label_column=3 \(dataset.options.label_column\) is out of range: .*has 3 columns"),
    # svmlight: absurd indices (2.2 GB for 3·10⁷ before: one feature name per column; 10¹²: an OverflowError)
    ("svmlight: a feature index of 3·10⁷", _svmlight("1 1:1 2:1\n-1 30000000:1\n"), {},
     r"d.svm, line 2: feature index 30000000 is beyond the 4,194,304 features transferlab reads"),
    ("svmlight: a feature index of 10¹²", _svmlight("1 1:1\n-1 3:1 1000000000000:1\n"), {},
     r"d.svm, line 2: feature index 1000000000000 does not fit a 32-bit integer"),
    ("svmlight: an index of 4,300 digits", _svmlight("1 1:1\n-1 " + "9" * 4300 + ":1\n"), {},
     r"d.svm, line 2: feature index 9{4300} does not fit"),
    ("svmlight: n_features of 10¹²", _svmlight("1 1:1\n-1 2:1\n", n_features=10**12), {},
     r"n_features=1,000,000,000,000 \(dataset.options.n_features\) is more than the 4,194,304 features"),
    # npz: headers are checked against what the members hold and what X costs as float64, before reading
    ("npz: a header declaring 8 TB in a few bytes", _npz((10**6, 10**6), claim_size=False), {},
     r"array 'X' declares shape \(1000000, 1000000\) \(8,000,000,000,000 bytes\) but holds 0 bytes"),
    ("npz: 600 MB of bytes that would be 4.8 GB as float64", _npz((60_000, 10_000), "|u1"), {},
     r"X of shape \(60000, 10000\) would take 4,800,000,000 bytes as float64, more than the 4,294,967,296"),
    ("npz: X wider than MAX_FEATURES", _npz((1, 5_000_000), "|u1"), {},
     r"d.npz, array 'X': 5,000,000 features, more than the 4,194,304"),
    ("npz: an object array", _npz_objects, {}, "array 'X' holds Python objects, which transferlab never unpickles"),
    # DREBIN release with more distinct features than MAX_FEATURES
    ("drebin: more distinct features than MAX_FEATURES", _drebin_folder, {"MAX_FEATURES": 10},
     r"feature_vectors/[0-9a-f]{64}: with this app the release holds more than 10 distinct features"),
    # LFW: decompression bombs, upscaling, and a class too small to train on
    ("lfw: a JPEG declaring 12,000×12,000 pixels", _lfw_bomb(12_000, 12_000), {},
     r"Ann_A_0001.jpg is 12,000×12,000 pixels, more than the 16,777,216 transferlab decodes"),
    ("lfw: a JPEG beyond Pillow's own bomb limit", _lfw_bomb(20_000, 20_000), {},
     r"Ann_A_0001.jpg declares more pixels than Pillow decodes, more than the 16,777,216"),
    ("lfw: resize 20", _lfw_people({"Ann_A": 2, "Bob_B": 2}, people=["Ann_A", "Bob_B"], resize=20), {},
     r"resize=20 \(dataset.options.resize\) makes each face 2,500×1,880 pixels, more than the 262,144"),
    ("lfw: resize 1e300", _lfw_people({"Ann_A": 2, "Bob_B": 2}, people=["Ann_A", "Bob_B"], resize=1e300), {},
     r"resize=1e\+300 \(dataset.options.resize\) makes each face"),
    ("lfw: a crop larger than any face, no resize",
     _lfw_people({"Ann_A": 2, "Bob_B": 2}, people=["Ann_A", "Bob_B"], crop=(0, 9000, 0, 9000), resize=None), {},
     r"crop=\(0, 9000, 0, 9000\) \(dataset.options.crop\) with no resize makes each face 9,000×9,000"),
    ("lfw: more faces × pixels than MAX_DENSE_BYTES",
     _lfw_people({"Ann_A": 2, "Bob_B": 2}, people=["Ann_A", "Bob_B"]), {"MAX_DENSE_BYTES": 50_000},
     r"4 faces of 62×47 pixels would take 93,248 bytes, more than the 50,000"),
    ("lfw: a person with one image", _lfw_people({"Ann_A": 3, "Dan_D": 1}, people=["Ann_A", "Dan_D"]), {},
     r"Dan_D \(in people, dataset.options.people\) has 1 image in .*: a class needs at least 2.* e.g. Ann_A"),
    ("lfw: one versus a rest of one image", _lfw_people({"Ann_A": 3, "Dan_D": 1}, people=["Ann_A"]), {},
     r"class 'other' \(everyone but Ann_A with at least min_faces=1 images\) has 1 image"),
    ("lfw: min_faces above a named person's images",
     _lfw_people({"Ann_A": 3, "Bob_B": 2}, people=["Ann_A", "Bob_B"], min_faces=3), {},
     r"Bob_B has 2 images in .*, fewer than min_faces=3; lower min_faces \(dataset.options.min_faces\)"),
    # MNIST: the float64 copy of the kept images is bounded too
    ("mnist: more kept images than MAX_DENSE_BYTES", _mnist, {"MAX_DENSE_BYTES": 10_000},
     r"images of digits \(3, 5\) would take more than the 10,000 bytes"),
]


def _latin(folder: Path) -> Path:
    path = folder / "d.csv"
    path.write_bytes("a,label\n1,x\n2,caf\xe9\n".encode("latin-1"))
    return path


@pytest.mark.parametrize("what, writer, patched, message", CASES, ids=[c[0] for c in CASES])
def test_catalogue_of_bad_data(tmp_path, monkeypatch, what, writer, patched, message):
    for bound, value in patched.items():
        monkeypatch.setattr(limits, bound, value)
    name, options = writer(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        datasets.load(name, **options)
    assert "\n" not in str(info.value)


# ---- memory: the inputs that cost gigabytes, refused in a process that cannot map more than ~350 MB extra -------
_CAPPED = r"""
import json, resource, sys
import PIL.Image, sklearn.datasets
from transferlab import datasets
from transferlab.errors import DataError

def mapped():
    return int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()

cap = mapped() + (350 << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
results = []
for name, options in json.loads(sys.argv[1]):
    try:
        datasets.load(name, **options)
        results.append("loaded")
    except DataError as exc:
        results.append(str(exc))
    except Exception as exc:  # a bug: reported by the test, as the case that raised it
        results.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(results))
"""

_HEAVY = ["csv: a 100,000-character feature cell",
          "drebin-csv: a 100,000-character cell after 2,000 rows (2.4 GB before)",
          "svmlight: a feature index of 3·10⁷", "svmlight: a feature index of 10¹²",
          "npz: a header declaring 8 TB in a few bytes", "npz: 600 MB of bytes that would be 4.8 GB as float64",
          "lfw: a JPEG declaring 12,000×12,000 pixels", "lfw: resize 20"]


def test_heavy_inputs_are_refused_without_allocating(tmp_path):
    """Each input is loaded under RLIMIT_AS: an allocation of the sizes they used to cost fails with a MemoryError,
    which the loader reports as 'does not fit in memory', not as the message of the bound."""
    cases = {c[0]: c for c in CASES}
    jobs, messages = [], []
    for k, what in enumerate(_HEAVY):
        folder = tmp_path / str(k)
        folder.mkdir()
        _, writer, patched, message = cases[what]
        assert not patched
        jobs.append(writer(folder))
        messages.append(message)
    done = subprocess.run([sys.executable, "-c", _CAPPED, json.dumps(jobs)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.splitlines()[-1])
    for what, message, result in zip(_HEAVY, messages, results):
        assert re.search(message, result), (what, result[:300])


# ---- full-width sparse data: 32-bit indices, so scikit-learn's liblinear and libsvm take it as it is ------------
DREBIN_WIDTH = 545_334  # distinct features of the full DREBIN release


def _fits_sklearn_svms(ds: datasets.Dataset) -> None:
    from sklearn.svm import SVC, LinearSVC

    assert sp.isspmatrix_csr(ds.X) and ds.X.indices.dtype == np.int32 and ds.X.indptr.dtype == np.int32
    linear = LinearSVC(C=1.0).fit(ds.X, ds.y)
    assert linear.coef_.shape == (1, ds.X.shape[1]) and linear.score(ds.X, ds.y) > 0.9
    rbf = SVC(kernel="rbf", C=10.0, gamma=0.5).fit(ds.X, ds.y)
    assert rbf.score(ds.X, ds.y) > 0.9


def test_full_width_svmlight_trains_sklearn_svms(tmp_path):
    rng = np.random.default_rng(0)
    y = np.r_[0, 1, rng.integers(0, 2, 198)]
    lines = []
    for i, label in enumerate(y):
        columns = set(rng.choice(np.arange(3, DREBIN_WIDTH), size=20, replace=False).tolist())
        columns.add(2 if label else 1)  # the class shows in one feature
        if i == 0:
            columns.add(DREBIN_WIDTH)  # one-based: the widest index makes the width
        lines.append(" ".join([str(2 * label - 1)] + [f"{j}:1" for j in sorted(columns)]))
    (tmp_path / "wide.svm").write_text("\n".join(lines) + "\n")
    ds = datasets.load("svmlight", path=str(tmp_path / "wide.svm"))
    assert ds.X.shape == (200, DREBIN_WIDTH) and ds.feature_names[DREBIN_WIDTH - 1] == f"f{DREBIN_WIDTH - 1}"
    _fits_sklearn_svms(ds)
    part = datasets.split(ds, 80, 80, 40).target  # a part keeps the index type
    assert part.X.indices.dtype == np.int32 and part.select_columns(np.arange(0, 500_000, 7)).X.indices.dtype \
        == np.int32


def test_wide_drebin_release_trains_sklearn_svms(tmp_path):
    """200 apps naming 20,000 distinct features between them (the full release's 545,334 cost 545,334 non-zeros
    and ten seconds here; the index type does not depend on the width, which the svmlight test above covers)."""
    rng = np.random.default_rng(1)
    root = tmp_path / "release"
    (root / "feature_vectors").mkdir(parents=True)
    width = 20_000
    owner = rng.permutation(np.arange(width) % 200)  # each feature belongs to one app
    y = np.r_[0, 1, rng.integers(0, 2, 198)]
    shas = [f"{i:064x}" for i in range(200)]
    for i in range(200):
        lines = [f"api_call::com/x/C{j};->m" for j in np.flatnonzero(owner == i)]
        lines.append("permission::SEND_SMS" if y[i] else "permission::INTERNET")
        (root / "feature_vectors" / shas[i]).write_text("\n".join(lines))
    (root / "sha256_family.csv").write_text("sha256,family\n" + "".join(f"{s},F\n" for s, m in zip(shas, y) if m))
    ds = datasets.load("drebin", path=str(root))
    assert ds.X.shape == (200, width + 2) and np.array_equal(ds.y, y)
    _fits_sklearn_svms(ds)


def test_a_dataset_keeps_int64_csr_in_32_bits():
    X = sp.random(30, 50, density=0.2, format="csr", random_state=0)
    wide = sp.csr_matrix(X)
    wide.indices, wide.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    ds = datasets.Dataset(wide, np.arange(30) % 2, ["a", "b"], "w")
    assert ds.X.indices.dtype == np.int32 and ds.X.indptr.dtype == np.int32
    assert np.array_equal(ds.X.toarray(), X.toarray())
    assert wide.indices.dtype == np.int64  # the caller's matrix is left as it was


# ---- what the bounds leave alone --------------------------------------------------------------------------------
def test_svmlight_names_cost_nothing_and_equal_the_list():
    names = datasets.ColumnNames(4)
    assert names == ["f0", "f1", "f2", "f3"] and list(names) == ["f0", "f1", "f2", "f3"] and len(names) == 4
    assert names[-1] == "f3" and names[1:3] == ["f1", "f2"] and names[np.int64(2)] == "f2"
    assert names != ["f0", "f1", "f2"] and names != ["f0", "f1", "f2", "g3"]
    with pytest.raises(IndexError):
        names[4]
    huge = datasets.ColumnNames(limits.MAX_FEATURES)
    assert len(huge) == limits.MAX_FEATURES and huge[123_456] == "f123456"
    assert pickle.loads(pickle.dumps(huge)) == huge


def test_label_column_in_range_still_picks_the_column(tmp_path):
    path = _text(tmp_path, "d.csv", "a,b,label\n1,2,0\n3,4,1\n")
    default = datasets.load("csv", path=str(path))
    for column in (2, "2", "label", np.int64(2)):
        picked = datasets.load("csv", path=str(path), label_column=column)
        assert np.array_equal(picked.X, default.X) and picked.y.tolist() == [0, 1]
    first = datasets.load("csv", path=str(path), label_column=0)
    assert first.X.tolist() == [[2.0, 0.0], [4.0, 1.0]] and first.classes == ["1", "3"]


def test_labels_that_only_look_numeric_are_names(tmp_path):
    """A superscript digit or a 19-digit label used to reach int() (a ValueError or a silent int64 overflow)."""
    path = _text(tmp_path, "d.csv", "a,label\n1,\u00b2\n2,3\n3,1234567890123456789\n")
    ds = datasets.load("csv", path=str(path))
    assert ds.classes == ["1234567890123456789", "3", "\u00b2"] and ds.y.tolist() == [2, 1, 0]


def test_a_cell_at_the_bound_is_read(tmp_path):
    path = _text(tmp_path, "d.csv", "a,label\n" + "0" * 999 + "1,0\n2,1\n")
    assert datasets.load("csv", path=str(path)).X[:, 0].tolist() == [1.0, 2.0]


def test_split_refuses_a_class_missing_from_a_training_part():
    X, y = np.zeros((12, 2)), np.r_[np.zeros(11, int), 1]
    ds = datasets.Dataset(X, y, ["many", "one"], "tiny")
    with pytest.raises(DataError, match=r"class 'one' has 1 of the 12 points, too few to put one in the target "
                                        r"part \(split.n_target=4\)"):
        datasets.split(ds, 4, 4, 4)
    two = datasets.Dataset(np.zeros((12, 2)), np.r_[np.zeros(10, int), 1, 1], ["many", "two"], "two")
    parts = datasets.split(two, 4, 4, 2)  # test drawn first, by quota: both of class 'two' are left for training
    assert set(parts.target.y) == set(parts.surrogate.y) == {0, 1}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_csv_streamed_round_trip(tmp_path_factory, n_rows, n_features, data):
    """Any table of finite numbers and text labels, the label column anywhere, reads back as it was written."""
    numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
    X = np.array(data.draw(st.lists(st.lists(numbers, min_size=n_features, max_size=n_features), min_size=n_rows,
                                    max_size=n_rows)))
    labels = data.draw(st.lists(st.sampled_from(["cat", "dog", "7", "x y"]), min_size=n_rows, max_size=n_rows))
    where = data.draw(st.integers(0, n_features))
    header = [f"c{j}" for j in range(n_features)]
    header.insert(where, "label")
    rows = [[repr(float(v)) for v in row] for row in X]
    for row, label in zip(rows, labels):
        row.insert(where, label)
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n\n")
    if len(set(labels)) < 2:
        with pytest.raises(DataError, match="single class"):
            datasets.load("csv", path=str(path), label_column=where)
        return
    ds = datasets.load("csv", path=str(path), label_column=where)
    assert np.array_equal(ds.X, X.reshape(n_rows, n_features))
    assert [ds.classes[k] for k in ds.y] == labels


# ---- inputs that loaded as something else: no features, an empty or repeated label, complex numbers ------------
def _npz_arrays(**arrays):
    def write(folder):
        np.savez(folder / "d.npz", **arrays)
        return "npz", {"path": str(folder / "d.npz")}
    return write


def _bom_csv(text, **options):
    def write(folder):
        path = folder / "d.csv"
        path.write_bytes(text.encode("utf-8-sig"))
        return "csv", {"path": str(path), **options}
    return write


MISREAD = [
    # no feature column: a label alone, or a file separated by ';' or tabs read as one column (0 features before)
    ("csv: a label column only", _csv("label\n0\n1\n0\n1\n"), {},
     r"d.csv, line 1 \(the header\): a single column \('label'\), no feature columns besides the label; is the "
     r"file comma-separated\? add the feature columns"),
    ("csv: separated by semicolons", _csv("a;b;label\n1;2;0\n3;4;1\n5;6;0\n"), {},
     r"a single column \('a;b;label'\), no feature columns .* its header holds ';' characters: save it with ','"),
    ("csv: separated by semicolons, label_column named", _csv("a;b;label\n1;2;0\n3;4;1\n", label_column="label"),
     {}, r"no feature columns besides the label; is the file comma-separated\? its header holds ';' characters"),
    ("csv: separated by tabs", _csv("a\tb\tlabel\n1\t2\t0\n3\t4\t1\n"), {}, r"its header holds tab characters"),
    ("drebin-csv: a class column only", _drebin_csv("class\nS\nB\n"), {}, r"no feature columns besides the label"),
    ("npz: X with no columns", _npz_arrays(X=np.zeros((4, 0)), y=np.array([0, 1, 0, 1])), {},
     r"d.npz: X has shape \(4, 0\), no feature columns"),
    # an empty label cell was a class named ''
    ("csv: an empty label cell", _csv("a,b,label\n1,2,cat\n3,4,\n5,6,dog\n"), {},
     r"d.csv, line 3, column 'label': the label cell is empty"),
    ("csv: a label cell of spaces", _csv("label,a\ncat,1\n  ,2\ndog,3\n", label_column="label"), {},
     r"line 3, column 'label': the label cell is empty"),
    # a repeated label column name: label_column="label" took the first, the other became a feature
    ("csv: the label column's name twice", _csv("label,x,label\n1,0.5,0\n3,0.1,1\n", label_column="label"), {},
     r"d.csv, line 1 \(the header\): columns 1 and 3 \(counting from 1\) are both named 'label', the label "
     r"column's name; rename all but one"),
    ("csv: the label column's name three times", _csv("l,l,x,l\n1,2,3,0\n1,2,3,1\n", label_column="l"), {},
     r"columns 1, 2 and 4 \(counting from 1\) are all named 'l'"),
    ("drebin-csv: the class column's name twice", _drebin_csv("class,f1,class\nS,1,S\nB,0,B\n"), {},
     r"columns 1 and 3 \(counting from 1\) are both named 'class'"),
    # complex arrays lost their imaginary part with only a ComplexWarning
    ("npz: complex X", _npz_arrays(X=np.array([[1 + 2j, 2], [3, 4j]]), y=np.array([0, 1])), {},
     r"d.npz: X is complex \(dtype complex128\); transferlab reads real features only"),
    ("npz: complex y", _npz_arrays(X=np.eye(2), y=np.array([0j, 1 + 0j])), {},
     r"d.npz: y is complex \(dtype complex128\); transferlab reads real labels only"),
    # a byte-order mark does not hide what follows it
    ("csv: not UTF-8 after a byte-order mark", lambda folder: ("csv", {"path": str(_latin_after_bom(folder))}), {},
     r"d.csv is not UTF-8 text \(line 3\)"),
]


def _latin_after_bom(folder: Path) -> Path:
    path = folder / "d.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "a,label\n1,x\n2,caf\xe9\n".encode("latin-1"))
    return path


@pytest.mark.parametrize("what, writer, patched, message", MISREAD, ids=[c[0] for c in MISREAD])
def test_misread_inputs_are_refused(tmp_path, monkeypatch, what, writer, patched, message):
    test_catalogue_of_bad_data(tmp_path, monkeypatch, what, writer, patched, message)


def test_a_byte_order_mark_is_dropped(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark, which stayed in the first column's name."""
    _, options = _bom_csv("label,a,b\n0,1,2\n1,3,4\n", label_column="label")(tmp_path)
    ds = datasets.load("csv", **options)
    assert ds.X.tolist() == [[1.0, 2.0], [3.0, 4.0]] and ds.classes == ["0", "1"]
    (tmp_path / "drebin").mkdir()
    _, options = _bom_csv("class,f1,f2\nS,1,0\nB,0,1\n")(tmp_path / "drebin")
    ds = datasets.load("drebin-csv", **options)
    assert ds.feature_names == ["f1", "f2"] and ds.y.tolist() == [1, 0]


def test_whole_number_labels_are_integers(tmp_path):
    """'1', '+1' and '1.0' are one class, as the npz loader reads 1.0 as 1; they were three text classes."""
    path = _text(tmp_path, "d.csv", "a,b,label\n1,2,1\n3,4,+1\n5,6,0\n7,8,1.0\n9,0,-1\n1,1,-1.00\n2,2,+0.0\n")
    ds = datasets.load("csv", path=str(path))
    assert ds.classes == ["-1", "0", "1"] and ds.y.tolist() == [2, 2, 1, 2, 0, 0, 1]
    text = _text(tmp_path, "t.csv", "a,label\n1,1\n2,1.5\n3,+1\n4,cat\n")  # not all whole numbers: text, as written
    assert datasets.load("csv", path=str(text)).classes == ["+1", "1", "1.5", "cat"]


def test_repeated_feature_names_are_read(tmp_path):
    """Only the label column's name must be unique: feature columns are read by position."""
    path = _text(tmp_path, "d.csv", "x,x,label\n1,2,0\n3,4,1\n")
    assert datasets.load("csv", path=str(path), label_column="label").X.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_a_label_column_chosen_by_position_may_share_its_name(tmp_path):
    """The repeated-name refusal is for a label column chosen by a name several columns have; chosen by index or
    by default (the last column) it is unambiguous, and such files load as they did."""
    default = datasets.load("csv", path=str(_text(tmp_path, "d.csv", "y,x,y\n1,0.5,0\n3,0.1,1\n")))
    assert default.X.tolist() == [[1.0, 0.5], [3.0, 0.1]] and default.y.tolist() == [0, 1]
    by_index = datasets.load("csv", path=str(_text(tmp_path, "e.csv", "l,l,x,l\n1,0,3,5\n1,1,3,6\n")), label_column=1)
    assert by_index.X.tolist() == [[1.0, 3.0, 5.0], [1.0, 3.0, 6.0]] and by_index.y.tolist() == [0, 1]

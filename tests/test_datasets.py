import gzip
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from transferlab import datasets
from transferlab.datasets import mnist as mnist_mod
from transferlab.errors import DataError


def test_embedded_mnist89_is_balanced_real_images(mnist89):
    assert mnist89.X.shape == (1000, 784)
    assert np.bincount(mnist89.y).tolist() == [500, 500]
    assert mnist89.X.min() == 0.0 and mnist89.X.max() == 1.0
    assert mnist89.classes == ["8", "9"] and mnist89.image_shape == (28, 28)


def test_split_is_disjoint_stratified_and_seeded(mnist89):
    s = datasets.split(mnist89, 300, 300, 200, 100, repetition=2, seed=7)
    rows = [tuple(map(bytes, (p.X * 255).astype(np.uint8))) for p in (s.target, s.surrogate, s.test, s.validation)]
    sets = [set(r) for r in rows]
    assert sum(len(x) for x in sets) == len(set().union(*sets))  # no image in two parts
    for part in (s.target, s.surrogate, s.test, s.validation):
        assert abs(part.y.mean() - 0.5) <= 0.01
    again = datasets.split(mnist89, 300, 300, 200, 100, repetition=2, seed=7)
    other = datasets.split(mnist89, 300, 300, 200, 100, repetition=3, seed=7)
    assert np.array_equal(s.target.X, again.target.X)
    assert not np.array_equal(s.target.X, other.target.X)
    sub = s.surrogate_subsample(0.2)
    assert len(sub) == 60 and abs(sub.y.mean() - 0.5) <= 0.02
    assert np.array_equal(sub.X, s.surrogate_subsample(0.2).X)
    assert not np.array_equal(sub.X, s.surrogate_subsample(0.2, draw=1).X)


def test_split_too_large_is_a_clear_error(mnist89):
    with pytest.raises(DataError, match="too few"):
        datasets.split(mnist89, 900, 900, 100)


def _write_mnist_folder(folder, n_train=30, n_test=10, compress=True):
    rng = np.random.default_rng(0)
    parts = {"train": n_train, "t10k": n_test}
    data = {}
    for part, n in parts.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.tile(np.arange(10, dtype=np.uint8), n // 10 + 1)[:n]
        suffix = ".gz" if compress else ""
        datasets.write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images)
        datasets.write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels)
        data[part] = (images, labels)
    return data


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_round_trip(tmp_path, compress):
    data = _write_mnist_folder(tmp_path, compress=compress)
    train_x, train_y, test_x, test_y = datasets.read_mnist_folder(tmp_path)
    assert np.array_equal(train_x, data["train"][0]) and np.array_equal(test_y, data["t10k"][1])
    ds = datasets.load("mnist", digits=(3, 5), path=tmp_path)
    keep = np.isin(np.r_[data["train"][1], data["t10k"][1]], (3, 5))
    assert len(ds) == keep.sum() and set(ds.y) == {0, 1} and ds.is_test.sum() == 2
    assert np.allclose(ds.X[0], data["train"][0][3].reshape(-1) / 255)


def test_keras_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y_train = np.arange(20, dtype=np.uint8) % 10
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_train[:10], y_test=y_train[:10])
    ds = datasets.load("mnist89", path=tmp_path)
    assert len(ds) == 6 and np.allclose(ds.X[0], x_train[8].reshape(-1) / 255)


def test_truncated_and_wrong_magic_idx_are_clear_errors(tmp_path):
    _write_mnist_folder(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        datasets.read_mnist_folder(tmp_path)
    path.write_bytes(b"\x00\x00\x07\x03" + raw[4:])
    with pytest.raises(DataError, match="magic"):
        datasets.read_idx(path)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(raw)[:50])
    with pytest.raises(DataError, match="gzip"):
        datasets.read_idx(gz)


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        datasets.load("mnist89", path=tmp_path / "nowhere")
    with pytest.raises(DataError, match="neither"):
        datasets.load("mnist89", path=tmp_path)
    with pytest.raises(DataError, match="not found"):
        datasets.load("csv", path=tmp_path / "x.csv")
    with pytest.raises(DataError, match="unknown dataset"):
        datasets.load("cifar")
    with pytest.raises(DataError, match="digits 8 and 9 only"):
        datasets.load("mnist", digits=(3, 5))


def test_csv_loads_and_nan_is_an_error(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("a,b,label\n0.1,0.2,cat\n0.3,0.4,dog\n0.5,0.6,cat\n")
    ds = datasets.load("csv", path=good, label_column="label")
    assert ds.X.shape == (3, 2) and ds.y.tolist() == [0, 1, 0] and ds.classes == ["cat", "dog"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n0.1,nan,0\n0.3,0.4,1\n")
    with pytest.raises(DataError, match="line 2.*NaN"):
        datasets.load("csv", path=bad)


def test_npz_loads_and_refuses_pickled_objects(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.eye(4), y=np.array([0, 1, 0, 1]))
    assert datasets.load("npz", path=tmp_path / "d.npz").X.shape == (4, 4)
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}] * 4, dtype=object), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError):
        datasets.load("npz", path=tmp_path / "obj.npz")


def test_sklearn_datasets():
    assert datasets.load("breast-cancer").X.shape == (569, 30)
    assert datasets.load("digits").n_classes == 10


def test_download_verifies_checksums_against_a_local_server(tmp_path):
    served = tmp_path / "mirror"
    served.mkdir()
    payload = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03abc")
    (served / "tiny-labels.gz").write_bytes(payload)
    (served / "other-labels.gz").write_bytes(gzip.compress(b"tampered"))
    import hashlib

    content = gzip.decompress(payload)
    good = {"tiny-labels": (hashlib.sha256(content).hexdigest(), len(content))}
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        dead = "http://127.0.0.1:9/"  # nothing listens there: the next mirror is tried
        folder = mnist_mod.download_mnist(tmp_path / "cache", mirrors=[dead, url], checksums=good)
        assert (folder / "tiny-labels.gz").read_bytes() == payload
        assert datasets.read_idx(folder / "tiny-labels.gz").tolist() == [97, 98, 99]
        bad = {"other-labels": (good["tiny-labels"][0], 8)}
        with pytest.raises(DataError, match="checksum mismatch"):
            mnist_mod.download_mnist(tmp_path / "cache2", mirrors=[url], checksums=bad)
        assert not any((tmp_path / "cache2").iterdir())  # nothing half-written is left
    finally:
        server.shutdown()

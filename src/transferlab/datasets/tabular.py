"""Generic datasets: a user's npz or CSV file, and scikit-learn's shipped datasets for quick checks."""

from __future__ import annotations

import csv
import os
import zlib
from pathlib import Path

import numpy as np

from transferlab.datasets.dataset import Dataset
from transferlab.errors import DataError


def _encode_labels(raw: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    raw = np.asarray(raw)
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            bad = raw[~np.isfinite(raw) | (raw != np.round(raw))][0]
            raise DataError(f"{source}: labels must be class labels, got the value {bad!r}; a classification "
                            "dataset needs whole-number or text labels")
        raw = raw.astype(np.int64)
    values, y = np.unique(raw, return_inverse=True)
    if values.size < 2:
        raise DataError(f"{source}: the labels hold a single class ({values.tolist()}); need two or more")
    return y.astype(np.int64), [str(v) for v in values.tolist()]


#: the most an npz file may decompress to (bytes), checked from its zip directory before anything is read
MAX_NPZ_BYTES = 1 << 32


def check_npz_size(path: Path, limit: int = MAX_NPZ_BYTES) -> None:
    """Refuse an npz whose members would decompress to more than ``limit`` bytes (a zip bomb), reading only the
    zip directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable npz file ({exc}); write it again with numpy.savez") from None
    if total > limit:
        raise DataError(f"{path} would decompress to {total:,} bytes, more than the {limit:,} transferlab reads; "
                        "it is corrupt or not a dataset")


def load_npz(path: str | os.PathLike, x_key: str = "X", y_key: str = "y", name: str | None = None) -> Dataset:
    """A dataset from an npz file holding a 2-D feature array ``x_key`` and a label array ``y_key``.

    The file is read with ``allow_pickle=False``: object arrays are refused, never unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    check_npz_size(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if x_key not in npz or y_key not in npz:
                raise DataError(f"{path} must hold arrays {x_key!r} and {y_key!r}; it holds {sorted(npz.files)}")
            X, raw_y = np.asarray(npz[x_key]), np.asarray(npz[y_key])
    except DataError:
        raise
    except (OSError, ValueError, zlib.error, EOFError) as exc:
        raise DataError(f"{path} is not a readable npz file ({exc})") from None
    if X.ndim != 2 or raw_y.ndim != 1:
        raise DataError(f"{path}: {x_key} must be 2-D and {y_key} 1-D, got {X.shape} and {raw_y.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{path}: {x_key} must be numeric, got dtype {X.dtype}")
    y, classes = _encode_labels(raw_y, str(path))
    return Dataset(X.astype(np.float64), y, classes, name or path.stem)


def read_csv_rows(path: Path, label_column: str | int) -> tuple[list[str], list[list[str]], int]:
    """A CSV file's header (cells stripped), its data rows (trailing empty lines dropped, every row as long as the
    header) and the index of ``label_column`` (a column name, or an index, negative from the end). UTF-8 only."""
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    while rows and not rows[-1]:
        rows.pop()
    if len(rows) < 2:
        raise DataError(f"{path} needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if isinstance(label_column, str) and not label_column.lstrip("-").isdigit():
        if label_column not in header:
            raise DataError(f"{path}: no column named {label_column!r}; set label_column= to one of the columns "
                            f"{header}")
        label_index = header.index(label_column)
    else:
        label_index = int(label_column) % len(header)
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} cells but the header has {len(header)}; fix that line")
    return header, body, label_index


def load_csv(path: str | os.PathLike, label_column: str | int = -1, name: str | None = None) -> Dataset:
    """A dataset from a CSV file with a header row; ``label_column`` is a column name or index (default: last).

    Every other column must be numeric; an empty or non-numeric cell, or NaN, is an error naming its row.
    """
    path = Path(path)
    header, body, label_index = read_csv_rows(path, label_column)
    features = [i for i in range(len(header)) if i != label_index]
    X = np.empty((len(body), len(features)))
    labels = []
    for r, row in enumerate(body, start=2):
        try:
            X[r - 2] = [float(row[i]) for i in features]
        except ValueError:
            raise DataError(f"{path}, line {r}: a feature cell is empty or not a number") from None
        labels.append(row[label_index].strip())
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{path}, line {r + 2}, column {header[features[c]]!r}: NaN or infinite value; "
                        "remove or impute it")
    numeric = all(s.lstrip("-").isdigit() for s in labels)
    y, classes = _encode_labels(np.array([int(s) for s in labels] if numeric else labels), str(path))
    return Dataset(X, y, classes, name or path.stem)


def load_svmlight(
    path: str | os.PathLike,
    n_features: int | None = None,
    zero_based: bool | str = "auto",
    name: str | None = None,
) -> Dataset:
    """A dataset from an svmlight/libsvm file (``label index:value ...`` lines), read with scikit-learn.

    X stays a sparse CSR matrix (float64); the labels are encoded 0..C-1 in sorted order (``classes`` holds the
    file's labels, e.g. ``["-1", "1"]``); ``feature_names`` are ``f0 .. f{d-1}``. ``n_features`` fixes the
    number of columns (e.g. to match a training file); ``zero_based`` is scikit-learn's (``"auto"`` guesses).
    """
    from sklearn.datasets import load_svmlight_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"svmlight file not found: {path}")
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer))
                                   or n_features < 1):
        raise DataError(f"n_features must be a positive integer (or left out), got {n_features!r}")
    try:
        X, raw_y = load_svmlight_file(str(path), n_features=n_features, zero_based=zero_based, dtype=np.float64)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{path} is not a readable svmlight/libsvm file ({reason}); each line must read "
                        "'label index:value ...'") from None
    y, classes = _encode_labels(raw_y, str(path))
    return Dataset(X.tocsr(), y, classes, name or path.stem, feature_names=[f"f{j}" for j in range(X.shape[1])])


def load_sklearn(name: str) -> Dataset:
    """scikit-learn's shipped ``breast-cancer`` (binary) or ``digits`` (10 classes, 8x8 images scaled to [0, 1])."""
    from sklearn import datasets as skd

    if name == "breast-cancer":
        bunch = skd.load_breast_cancer()
        X = bunch.data
        X = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))  # min-max to [0, 1], so a [0, 1] box applies
        return Dataset(X, bunch.target.astype(np.int64), [str(c) for c in bunch.target_names], name)
    if name == "digits":
        bunch = skd.load_digits()
        return Dataset(bunch.data / 16.0, bunch.target.astype(np.int64), [str(c) for c in range(10)], name,
                       image_shape=(8, 8))
    raise DataError(f"unknown scikit-learn dataset {name!r}")

"""Where data comes from: ``load(name, **options) -> Dataset`` and ``split(...) -> Split``.

Names: ``mnist89`` (embedded 1,000 images, or the full MNIST with ``path=``), ``mnist`` (any digits, ``digits=``,
``path=``), ``npz``, ``csv`` and ``svmlight`` (a user's file, ``path=``), ``breast-cancer`` and ``digits``
(scikit-learn's), ``drebin`` (the DREBIN Android malware release, ``path=``), ``drebin-csv`` (a DREBIN-215-style
CSV, ``path=``) and ``lfw`` (Labeled Faces in the Wild, ``path=``, ``people=``). :func:`select_features` keeps the k
features that tell malware from benign apps best.
"""

from __future__ import annotations

from typing import Any

from transferlab.datasets.dataset import ColumnNames, Dataset, Split, split
from transferlab.datasets.drebin import load_drebin_csv, load_drebin_folder
from transferlab.datasets.lfw import download_lfw, load_lfw
from transferlab.datasets.mnist import download_mnist, read_idx, read_mnist_folder, write_idx
from transferlab.datasets.selection import select_features
from transferlab.datasets.tabular import load_csv, load_npz, load_sklearn, load_svmlight
from transferlab.errors import DataError

#: name -> one-line description, as ``transferlab list datasets`` prints it
DATASETS: dict[str, str] = {
    "mnist89": "MNIST digits 8 (class 0) vs 9 (class 1), pixels/255; embedded 1,000 images, or full with path=DIR",
    "mnist": "MNIST restricted to digits=(a, b, ...), needs path=DIR (the IDX files or mnist.npz)",
    "npz": "your npz file: path=FILE holding arrays X (n, d) and y (n,)",
    "csv": "your CSV file with a header: path=FILE, label_column=NAME or INDEX 0..N-1 (default: last column)",
    "breast-cancer": "scikit-learn's breast cancer data, 569 points, 30 features min-max scaled to [0, 1]",
    "digits": "scikit-learn's 8x8 digits, 1,797 points, 10 classes, pixels scaled to [0, 1]",
    "svmlight": "your svmlight/libsvm file: path=FILE, n_features=D (default: the largest index seen); kept sparse",
    "drebin": "DREBIN Android malware (benign 0, malware 1), sparse binary features: path=DIR of the original "
              "release (feature_vectors/ + sha256_family.csv)",
    "drebin-csv": "DREBIN-215-style CSV of 0/1 features: path=FILE, label_column= (class), malware_label= (S), "
                  "benign_label= (B); rows with '?' dropped",
    "lfw": "Labeled Faces in the Wild, grey 62x47 as scikit-learn's: path=DIR (lfw*/ or lfw_home/), "
           "people=(A, B) (class 0, 1) or people=(A,) vs the rest with min_faces=N; resize=0.5, crop=(t, b, l, r)",
}


def load(name: str, **options: Any) -> Dataset:
    """Load dataset ``name`` (see :data:`DATASETS`) with its options; a clear :class:`DataError` on bad input."""
    try:
        return _load(name, **options)
    except MemoryError:
        raise DataError(f"dataset {name!r} does not fit in memory; use a smaller part of it") from None


def _load(name: str, **options: Any) -> Dataset:
    from transferlab.datasets.mnist import mnist_digits

    allowed = {"mnist89": {"path"}, "mnist": {"path", "digits"}, "npz": {"path", "x_key", "y_key"},
               "csv": {"path", "label_column"}, "breast-cancer": set(), "digits": set(),
               "svmlight": {"path", "n_features"}, "drebin": {"path"},
               "drebin-csv": {"path", "label_column", "malware_label", "benign_label"},
               "lfw": {"path", "people", "min_faces", "resize", "crop"}}
    if name not in allowed:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    unknown = set(options) - allowed[name]
    if unknown:
        raise DataError(f"dataset {name!r} takes no option(s) {sorted(unknown)}; it takes {sorted(allowed[name])}")
    path = options.get("path")
    if name == "mnist89":
        return mnist_digits((8, 9), path)
    if name == "lfw":
        if path is None or "people" not in options:
            raise DataError("dataset 'lfw' needs path=DIR (the LFW folder) and people=(A, B), or people=(A,) with "
                            "min_faces=N, e.g. people=('George_W_Bush', 'Colin_Powell')")
        return load_lfw(**options)
    if name == "mnist":
        if "digits" not in options:
            raise DataError("dataset 'mnist' needs digits=(a, b), e.g. digits=(3, 5)")
        return mnist_digits(tuple(options["digits"]), path)
    if name in ("npz", "csv", "svmlight", "drebin", "drebin-csv"):
        if path is None:
            raise DataError(f"dataset {name!r} needs path={'DIR' if name == 'drebin' else 'FILE'}")
        if name == "npz":
            return load_npz(path, options.get("x_key", "X"), options.get("y_key", "y"))
        if name == "svmlight":
            return load_svmlight(path, options.get("n_features"))
        if name == "drebin":
            return load_drebin_folder(path)
        if name == "drebin-csv":
            keys = ("label_column", "malware_label", "benign_label")
            return load_drebin_csv(path, **{k: options[k] for k in keys if k in options})
        return load_csv(path, options.get("label_column"))
    return load_sklearn(name)


__all__ = ["DATASETS", "ColumnNames", "Dataset", "Split", "load", "split", "download_mnist", "read_idx", "write_idx",
           "read_mnist_folder", "load_npz", "load_csv", "load_sklearn", "load_svmlight", "load_drebin_folder",
           "load_drebin_csv", "select_features", "load_lfw", "download_lfw"]

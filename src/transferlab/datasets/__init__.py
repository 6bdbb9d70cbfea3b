"""Where data comes from: ``load(name, **options) -> Dataset`` and ``split(...) -> Split``.

Names: ``mnist89`` (embedded 1,000 images, or the full MNIST with ``path=``), ``mnist`` (any digits, ``digits=``,
``path=``), ``npz`` and ``csv`` (a user's file, ``path=``), ``breast-cancer`` and ``digits`` (scikit-learn's).
"""

from __future__ import annotations

from typing import Any

from transferlab.datasets.dataset import Dataset, Split, split
from transferlab.datasets.mnist import download_mnist, read_idx, read_mnist_folder, write_idx
from transferlab.datasets.tabular import load_csv, load_npz, load_sklearn
from transferlab.errors import DataError

#: name -> one-line description, as ``transferlab list datasets`` prints it
DATASETS: dict[str, str] = {
    "mnist89": "MNIST digits 8 (class 0) vs 9 (class 1), pixels/255; embedded 1,000 images, or full with path=DIR",
    "mnist": "MNIST restricted to digits=(a, b, ...), needs path=DIR (the IDX files or mnist.npz)",
    "npz": "your npz file: path=FILE holding arrays X (n, d) and y (n,)",
    "csv": "your CSV file with a header: path=FILE, label_column=NAME_OR_INDEX (default: last column)",
    "breast-cancer": "scikit-learn's breast cancer data, 569 points, 30 features min-max scaled to [0, 1]",
    "digits": "scikit-learn's 8x8 digits, 1,797 points, 10 classes, pixels scaled to [0, 1]",
}


def load(name: str, **options: Any) -> Dataset:
    """Load dataset ``name`` (see :data:`DATASETS`) with its options; a clear :class:`DataError` on bad input."""
    from transferlab.datasets.mnist import mnist_digits

    allowed = {"mnist89": {"path"}, "mnist": {"path", "digits"}, "npz": {"path", "x_key", "y_key"},
               "csv": {"path", "label_column"}, "breast-cancer": set(), "digits": set()}
    if name not in allowed:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    unknown = set(options) - allowed[name]
    if unknown:
        raise DataError(f"dataset {name!r} takes no option(s) {sorted(unknown)}; it takes {sorted(allowed[name])}")
    path = options.get("path")
    if name == "mnist89":
        return mnist_digits((8, 9), path)
    if name == "mnist":
        if "digits" not in options:
            raise DataError("dataset 'mnist' needs digits=(a, b), e.g. digits=(3, 5)")
        return mnist_digits(tuple(options["digits"]), path)
    if name in ("npz", "csv"):
        if path is None:
            raise DataError(f"dataset {name!r} needs path=FILE")
        if name == "npz":
            return load_npz(path, options.get("x_key", "X"), options.get("y_key", "y"))
        return load_csv(path, options.get("label_column", -1))
    return load_sklearn(name)


__all__ = ["DATASETS", "Dataset", "Split", "load", "split", "download_mnist", "read_idx", "write_idx",
           "read_mnist_folder", "load_npz", "load_csv", "load_sklearn"]

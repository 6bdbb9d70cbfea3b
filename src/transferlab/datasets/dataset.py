"""The Dataset container and the paper's data split (target-train, surrogate-train, test, validation)."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from transferlab.errors import DataError

#: the most columns (features) a loader gives a dataset: 2**22 = 4,194,304, about 7.7 times the 545,334 features of
#: the full DREBIN release. A file asking for more (an svmlight index of 3·10⁷, a CSV header that wide, a DREBIN
#: release with more distinct features) is refused with a DataError naming the file and line, before anything sized
#: by the number of features is made: every model holds at least one weight per feature. The loaders read it from
#: this module when they run.
MAX_FEATURES = 1 << 22
#: the most bytes a loader spends on a dense float64 X (4 GiB): an npz holding small integers, or LFW faces with a
#: large ``resize``, is refused before the array is made
MAX_DENSE_BYTES = 1 << 32
_INT32_MAX = int(np.iinfo(np.int32).max)


def check_width(n_features: int, source: str, where: str = "") -> None:
    """Refuse ``n_features`` columns beyond :data:`MAX_FEATURES`; ``where`` (e.g. ``", line 7"``) locates the
    cause in ``source``."""
    if n_features > MAX_FEATURES:
        raise DataError(f"{source}{where}: {n_features:,} features, more than the {MAX_FEATURES:,} transferlab "
                        "reads (MAX_FEATURES); the file is corrupt, or keep fewer features")


def int32_indexed(X: Any) -> Any:
    """``X`` with 32-bit ``indices`` and ``indptr`` when it is a CSR/CSC matrix whose non-zeros and shape fit
    (scikit-learn's liblinear and libsvm solvers accept no other); anything else is returned as it is. The data
    array is shared, never copied."""
    if not sp.issparse(X) or X.format not in ("csr", "csc"):
        return X
    if X.indices.dtype == np.int32 and X.indptr.dtype == np.int32:
        return X
    if X.nnz > _INT32_MAX or max(X.shape) > _INT32_MAX:
        return X
    kind = sp.csr_matrix if X.format == "csr" else sp.csc_matrix
    return kind((X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32)), shape=X.shape, copy=False)


class ColumnNames(Sequence):
    """The names ``f0, f1, ..., f{n-1}`` of columns that have none of their own (an svmlight file's), made one at
    a time when asked for: a width of a million costs nothing. Equal to the list of the same names."""

    __slots__ = ("n", "prefix")

    def __init__(self, n: int, prefix: str = "f") -> None:
        self.n, self.prefix = int(n), prefix

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [f"{self.prefix}{j}" for j in range(*index.indices(self.n))]
        j = operator.index(index)
        if j < 0:
            j += self.n
        if not 0 <= j < self.n:
            raise IndexError(f"column {index} out of range for {self.n} columns")
        return f"{self.prefix}{j}"

    def __iter__(self) -> Iterator[str]:
        return (f"{self.prefix}{j}" for j in range(self.n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ColumnNames):
            return self.n == other.n and (self.n == 0 or self.prefix == other.prefix)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == self.n and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are not hashable

    def __repr__(self) -> str:
        return f"ColumnNames({self.n}, prefix={self.prefix!r})"

    def __reduce__(self) -> tuple:
        return (ColumnNames, (self.n, self.prefix))


@dataclass
class Dataset:
    """A labelled dataset.

    Attributes
    ----------
    X : float ndarray or scipy sparse matrix, shape (n_samples, n_features)
    y : int ndarray, shape (n_samples,), labels 0..C-1
    classes : names of the classes, ``classes[k]`` is the name of label k
    name : short name of the dataset
    is_test : optional bool ndarray marking points of an official test set (MNIST's t10k); :func:`split` draws the
        test part from them and the training parts from the others.
    image_shape : (height, width) when rows are flattened images, for convolutional models and figures.
    feature_names : optional name of each column of X (e.g. DREBIN's ``permission::android.permission.SEND_SMS``);
        a list, or a :class:`ColumnNames` (``f0 .. f{d-1}``, made when asked for) where the data name none.
    row_names : optional name of each row (e.g. the SHA-256 of the Android app it describes).
    description : optional one-line account of where the data came from and what was done to it.
    """

    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str
    is_test: np.ndarray | None = None
    image_shape: tuple[int, int] | None = None
    feature_names: list[str] | None = None
    row_names: list[str] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y)
        self.X = int32_indexed(self.X)  # a CSR/CSC matrix is kept in the index type scikit-learn's solvers take
        if self.y.size and self.y.dtype.kind not in "iu":
            raise DataError(f"dataset {self.name!r}: labels must be integers 0..C-1, got dtype {self.y.dtype}; "
                            "encode the classes first")
        if self.X.shape[0] != self.y.shape[0]:
            raise DataError(f"dataset {self.name!r}: {self.X.shape[0]} rows in X but {self.y.shape[0]} labels")
        values = self.X.data if sp.issparse(self.X) else self.X
        if not np.all(np.isfinite(values)):
            raise DataError(f"dataset {self.name!r} holds NaN or infinite values; clean or impute them first")
        if self.y.size and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise DataError(f"dataset {self.name!r}: labels must be 0..{len(self.classes) - 1}")
        if self.feature_names is not None and len(self.feature_names) != self.X.shape[1]:
            raise DataError(f"dataset {self.name!r}: {len(self.feature_names)} feature names for "
                            f"{self.X.shape[1]} columns; give one name per column")
        if self.row_names is not None and len(self.row_names) != self.X.shape[0]:
            raise DataError(f"dataset {self.name!r}: {len(self.row_names)} row names for {self.X.shape[0]} rows; "
                            "give one name per row")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: np.ndarray) -> Dataset:
        """The rows ``index`` as a new Dataset (``is_test`` is dropped: a subset is one part)."""
        rows = None if self.row_names is None else [self.row_names[i] for i in np.arange(len(self))[index]]
        return Dataset(self.X[index], self.y[index], self.classes, self.name, None, self.image_shape,
                       self.feature_names, rows, self.description)

    def select_columns(self, columns: np.ndarray) -> Dataset:
        """The feature columns ``columns`` (indices, or a boolean mask over the columns) as a new Dataset.

        Sparse X stays sparse (CSR); ``feature_names`` are restricted alike; ``image_shape`` is dropped (the
        columns no longer form an image); rows, labels, ``is_test``, ``row_names`` and ``description`` are kept.
        """
        columns = np.asarray(columns)
        if columns.dtype == bool:
            if columns.shape != (self.X.shape[1],):
                raise DataError(f"dataset {self.name!r}: a column mask needs {self.X.shape[1]} entries, "
                                f"got shape {columns.shape}")
            columns = np.flatnonzero(columns)
        columns = columns.astype(np.intp).ravel()
        if columns.size and (columns.min() < -self.X.shape[1] or columns.max() >= self.X.shape[1]):
            raise DataError(f"dataset {self.name!r} has {self.X.shape[1]} columns; column indices must be in "
                            f"0..{self.X.shape[1] - 1}")
        X = self.X.tocsr()[:, columns] if sp.issparse(self.X) else self.X[:, columns]
        names = None if self.feature_names is None else [self.feature_names[c] for c in columns]
        return Dataset(X, self.y, self.classes, self.name, self.is_test, None, names, self.row_names,
                       self.description)

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass
class Split:
    """Disjoint parts of one repetition of an experiment (the paper's Section 5 set-up).

    ``target`` trains the targets, ``surrogate`` the surrogates (the attacker's D̂, drawn from the same
    distribution but disjoint from the target's data), ``test`` holds the points attacked and scored, and
    ``validation`` is the attacker's validation set for poisoning (empty when not asked for).
    """

    target: Dataset
    surrogate: Dataset
    test: Dataset
    validation: Dataset | None
    repetition: int
    seed: int

    def surrogate_subsample(self, fraction: float, draw: int = 0) -> Dataset:
        """A stratified subsample of the surrogate data holding ``fraction`` of it (the paper uses 20%).

        ``draw`` picks another seeded sample of the same size (used to resample surrogates for V, Eq. 19).
        ``fraction == 1`` with ``draw == 0`` returns the surrogate data itself.
        """
        if not 0 < fraction <= 1:
            raise DataError(f"surrogate fraction must be in (0, 1], got {fraction}")
        if fraction == 1 and draw == 0:
            return self.surrogate
        n = len(self.surrogate)
        size = max(int(round(fraction * n)), self.surrogate.n_classes)
        seed = _seed(self.seed, self.repetition, 1_000 + draw, int(round(fraction * 1e6)))
        if size >= n:
            # a resample of the whole set: a bootstrap draw (with replacement) keeps the size and varies the data
            index = np.random.default_rng(seed).integers(0, n, size=n)
        else:
            index = _stratified_take(self.surrogate.y, size, seed)
        return self.surrogate.subset(np.sort(index))


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _stratified_take(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a stratified random sample of ``size`` rows of labels ``y``: each class gets its share of
    ``size`` (largest remainders round up), drawn without replacement."""
    rng = np.random.default_rng(seed)
    if size >= y.shape[0]:
        return rng.permutation(y.shape[0])
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * size / y.shape[0]
    take = np.floor(quota).astype(int)
    remainder_order = np.argsort(-(quota - take), kind="stable")
    take[remainder_order[: size - take.sum()]] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in zip(classes, take)]
    return rng.permutation(np.concatenate(picked))


def _check_training_parts(dataset: Dataset, parts: dict[str, np.ndarray], sizes: dict[str, int]) -> None:
    """Every class of ``dataset`` must have a point in the target and the surrogate part (both train models).

    The per-class counts of a stratified draw depend only on the class sizes and the part sizes, never on the seed,
    so checking one repetition checks them all."""
    present, counts = np.unique(dataset.y, return_counts=True)
    for part in ("target", "surrogate"):
        missing = np.setdiff1d(present, dataset.y[parts[part]])
        if missing.size:
            label = int(missing[0])
            name = dataset.classes[label] if label < len(dataset.classes) else label
            raise DataError(f"dataset {dataset.name!r}: class {str(name)!r} has {int(counts[present == label][0])} "
                            f"of the {len(dataset)} points, too few to put one in the {part} part (split.n_{part}="
                            f"{sizes['n_' + part]}); give more data of that class or larger split sizes")


def split(
    dataset: Dataset,
    n_target: int,
    n_surrogate: int,
    n_test: int,
    n_validation: int = 0,
    repetition: int = 0,
    seed: int = 0,
) -> Split:
    """Draw disjoint, stratified, seeded parts of ``dataset`` for one repetition.

    The parts are a pure function of ``(dataset, sizes, repetition, seed)``. When the dataset marks an official
    test set (``is_test``), the test part is drawn from it and the other parts from the rest, as in the paper's
    MNIST89 set-up (5,900 + 5,900 training images from the 11,800 of MNIST's training set).
    """
    sizes = {"n_target": n_target, "n_surrogate": n_surrogate, "n_test": n_test, "n_validation": n_validation}
    for key, value in sizes.items():
        if value < 0 or (key != "n_validation" and value == 0):
            raise DataError(f"split size {key} must be positive, got {value}")
    rng_seed = _seed(seed, repetition)
    all_index = np.arange(len(dataset))
    if dataset.is_test is not None and dataset.is_test.any():
        test_pool, train_pool = all_index[dataset.is_test], all_index[~dataset.is_test]
    else:
        test_pool = train_pool = all_index
    needed_train = n_target + n_surrogate + n_validation + (n_test if test_pool is train_pool else 0)
    if needed_train > train_pool.size or n_test > test_pool.size:
        raise DataError(
            f"dataset {dataset.name!r} has {train_pool.size} training and {test_pool.size} test points, too few "
            f"for target={n_target}, surrogate={n_surrogate}, validation={n_validation}, test={n_test}; "
            "ask for smaller parts or point at the full data with path=..."
        )
    parts: dict[str, np.ndarray] = {}
    remaining = train_pool
    order = [("test", n_test)] if test_pool is train_pool else []
    order += [("target", n_target), ("surrogate", n_surrogate), ("validation", n_validation)]
    if test_pool is not train_pool:
        taken = test_pool[_stratified_take(dataset.y[test_pool], n_test, _seed(rng_seed, 0))]
        parts["test"] = taken
    for i, (part, size) in enumerate(order, start=1):
        if size == 0:
            parts[part] = np.array([], dtype=int)
            continue
        taken = remaining[_stratified_take(dataset.y[remaining], size, _seed(rng_seed, i))]
        parts[part] = taken
        remaining = np.setdiff1d(remaining, taken, assume_unique=True)
    _check_training_parts(dataset, parts, sizes)
    subsets = {k: dataset.subset(np.sort(v)) for k, v in parts.items()}
    return Split(
        target=subsets["target"],
        surrogate=subsets["surrogate"],
        test=subsets["test"],
        validation=subsets["validation"] if n_validation else None,
        repetition=repetition,
        seed=seed,
    )

"""The Dataset container and the paper's data split (target-train, surrogate-train, test, validation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from transferlab.errors import DataError


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
    feature_names : optional name of each column of X (e.g. DREBIN's ``permission::android.permission.SEND_SMS``).
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
    subsets = {k: dataset.subset(np.sort(v)) for k, v in parts.items()}
    return Split(
        target=subsets["target"],
        surrogate=subsets["surrogate"],
        test=subsets["test"],
        validation=subsets["validation"] if n_validation else None,
        repetition=repetition,
        seed=seed,
    )

"""Model files from elsewhere, read without pickle: ``load_external(path)`` for ``.skops`` and ``.onnx`` files.

- ``.skops`` (scikit-learn estimators saved with ``skops.io.dump``): read by ``skops.io.loads`` with an explicit list of
  trusted types, :data:`TRUSTED_TYPES`, on top of skops' own defaults (never ``trusted=True``). skops leaves tree and
  neighbour-index types untrusted because scikit-learn indexes their node arrays without bounds checks; transferlab
  trusts them only because it checks them after loading: every tree's child and feature indices are checked
  against its node count and the features it receives, and a nearest-neighbour model is refitted on its stored
  points so the file's search tree is never queried. LightGBM's classes stay untrusted (its model text is parsed
  and traversed in C++ unchecked): bring a LightGBM model as ONNX. The estimator is then wrapped
  (:func:`~transferlab.models.wrap.wrap`): re-expressed in torch where it can be, a black-box target otherwise.
- ``.onnx``: a network whose operators transferlab converts becomes a differentiable torch module
  (:mod:`~transferlab.models.onnx_torch`); anything else (skl2onnx, onnxmltools, ... models) a black-box target run
  by ONNX Runtime (:mod:`~transferlab.models.onnx_runtime`).
- ``.pt2`` / ``.pt`` / ``.pkl`` / ``.joblib`` are refused: loading them unpickles (``torch.export.load`` too).

Every file is read whole after its size is checked (:data:`MAX_FILE_BYTES`), and a skops archive's unpacked size
is bounded too (:data:`MAX_UNPACKED_BYTES`).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier

#: the largest model file read (ONNX's protobuf cannot exceed 2 GiB anyway)
MAX_FILE_BYTES = 1 << 31
#: the most bytes a .skops archive may unpack to
MAX_UNPACKED_BYTES = 1 << 32

#: trusted beyond skops' defaults (which cover scikit-learn's estimators, numpy and scipy types); the tree and
#: neighbour types are checked or rebuilt after loading (see the module docstring)
TRUSTED_TYPES = [
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    *(f"sklearn.metrics._dist_metrics.{name}Distance64" for name in (
        "Euclidean", "SEuclidean", "Manhattan", "Chebyshev", "Minkowski", "Mahalanobis", "Hamming", "Canberra",
        "BrayCurtis", "Jaccard", "Matching", "Dice", "Kulsinski", "RogersTanimoto", "RussellRao", "SokalMichener",
        "SokalSneath", "Haversine")),
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
]

REFUSED_SUFFIXES = {".pt2": "torch.export.load unpickles payloads an archive marks as pickled",
                    ".pt": "torch.load of a full module unpickles", ".pth": "torch.load of a full module unpickles",
                    ".pkl": "it is a pickle", ".pickle": "it is a pickle", ".joblib": "joblib files are pickles"}


def read_bounded(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a model file, refusing one larger than ``max_bytes``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"model file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file (a folder, device or pipe); give a model file")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{path} is {size} bytes, more than the {max_bytes} transferlab reads; is it a model file?")
    return path.read_bytes()


def _require_skops() -> Any:
    try:
        import skops.io
    except ImportError:
        raise ConfigError(".skops files need the skops package: pip install 'transferlab[skops]'") from None
    return skops.io


def load_skops(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """The estimator in a ``.skops`` file, read with :data:`TRUSTED_TYPES` and checked (see the module docstring)."""
    sio = _require_skops()
    data = read_bounded(path, max_bytes)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED_BYTES:
            raise DataError(f"{path} unpacks to {unpacked} bytes, more than the {MAX_UNPACKED_BYTES} transferlab reads")
        untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    except DataError:
        raise
    except Exception as exc:  # zipfile's BadZipFile, json errors, skops' own: the file is not a skops archive
        raise DataError(f"{path} is not a valid .skops file, corrupt or truncated ({type(exc).__name__}: {exc}); save "
                        "it again with skops.io.dump") from None
    if untrusted:
        raise DataError(f"{path} holds types transferlab does not trust: {', '.join(untrusted)}; if you made the file "
                        "or trust its source, load it yourself with skops.io.load(path, trusted=[...]) and pass the "
                        "estimator to models.wrap, or export the model to ONNX (skl2onnx, onnxmltools)")
    try:
        estimator = sio.loads(data, trusted=TRUSTED_TYPES)
    except Exception as exc:  # skops raises many types for a malformed schema or array
        raise DataError(f"{path} is not a valid .skops file, corrupt or truncated ({type(exc).__name__}: {exc}); save "
                        "it again with skops.io.dump") from None
    check_loaded(estimator, str(path))
    return estimator


# ---- checks of what skops built -----------------------------------------------------------------------------------
def _check_tree(tree: Any, n_features: int | None, source: str) -> None:
    n, capacity = int(tree.node_count), int(tree.capacity)
    if not 1 <= n <= capacity:  # checked before any node is read: the node arrays are views of node_count entries
        raise DataError(f"{source}: a tree has {n} nodes for a capacity of {capacity}; the file is corrupt")
    left, right, feature = (np.asarray(a, dtype=np.int64) for a in (tree.children_left, tree.children_right,
                                                                    tree.feature))
    _check_nodes(left, right, left == -1, feature, min(int(tree.n_features), n_features or int(tree.n_features)),
                 source)
    if (right[left == -1] != -1).any():
        raise DataError(f"{source}: a tree has a node with one child; the file is corrupt")


def _check_nodes(left: np.ndarray, right: np.ndarray, leaf: np.ndarray, feature: np.ndarray, n_features: int,
                 source: str) -> None:
    """Children after their parent (so every path ends) and inside the tree, split features inside the rows."""
    index = np.arange(left.size)
    inner = ~leaf
    ok = ((left[inner] > index[inner]) & (left[inner] < left.size) & (right[inner] > index[inner])
          & (right[inner] < left.size) & (feature[inner] >= 0) & (feature[inner] < n_features))
    if not ok.all():
        raise DataError(f"{source}: a tree's node refers to a child or feature outside the model; the file is "
                        "corrupt or crafted")


def _check_predictor(predictor: Any, n_features: int | None, source: str) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = predictor.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 \
            or nodes.size < 1 or n_features is None:
        raise DataError(f"{source}: a gradient-boosting tree has malformed nodes; the file is corrupt")
    if nodes["is_categorical"].any():
        raise DataError(f"{source}: HistGradientBoosting with categorical splits cannot be checked; export it to "
                        "ONNX instead")
    leaf = nodes["is_leaf"].astype(bool)
    _check_nodes(nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), leaf,
                 nodes["feature_idx"].astype(np.int64), n_features, source)


def check_loaded(root: Any, source: str) -> None:
    """Check every tree in the object graph of a loaded estimator, and refit nearest-neighbour models on their
    stored points. ``n_features`` bounding a tree's split features is the least ``n_features_in_`` of the
    estimators above it, counted from the nearest step that gets transformed rows (a pipeline step, a stacking
    model's final estimator), which is conservative: a model that fails is refused, never run."""
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors._base import NeighborsBase
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.tree._tree import Tree

    seen: set[int] = set()
    stack: list[tuple[Any, int | None, bool]] = [(root, None, False)]
    while stack:
        obj, bound, reset = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            _check_tree(obj, bound, source)
            continue
        if isinstance(obj, TreePredictor):
            _check_predictor(obj, bound, source)
            continue
        children: list[Any] = []
        if isinstance(obj, BaseEstimator):
            own = getattr(obj, "n_features_in_", None)
            if own is not None:
                bound = int(own) if reset or bound is None else min(bound, int(own))
            if isinstance(obj, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)) and \
                    getattr(obj, "_preprocessor", None) is not None:
                raise DataError(f"{source}: HistGradientBoosting with categorical features cannot be checked; export "
                                "it to ONNX instead")
            if isinstance(obj, NeighborsBase) and hasattr(obj, "_fit_X"):
                _refit_neighbours(obj, source)
            reset = isinstance(obj, (Pipeline, ColumnTransformer, FeatureUnion))
            children = [(name, value) for name, value in vars(obj).items()]
        elif isinstance(obj, dict):
            children = list(obj.items())
        elif isinstance(obj, (list, tuple)):
            children = list(enumerate(obj))
        elif isinstance(obj, np.ndarray) and obj.dtype == object:
            children = list(enumerate(obj.ravel()))
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            children = list(vars(obj).items())
        for name, child in children:
            stack.append((child, bound, reset or name == "final_estimator_"))


def _refit_neighbours(model: Any, source: str) -> None:
    """A nearest-neighbour classifier fitted again on its stored points (fit only stores them and builds the
    search tree), so the tree read from the file is never used."""
    y = getattr(model, "_y", None)
    classes = getattr(model, "classes_", None)
    if y is None or classes is None or np.ndim(y) != 1 or np.ndim(classes) != 1:
        raise DataError(f"{source}: a nearest-neighbour model that is not a single-label classifier cannot be "
                        "checked; export it to ONNX instead")
    try:
        model.fit(model._fit_X, np.asarray(classes)[np.asarray(y)])
    except (ValueError, IndexError, TypeError) as exc:
        raise DataError(f"{source}: its nearest-neighbour model's stored points are malformed ({exc})") from None


# ---- the entry point ----------------------------------------------------------------------------------------------
def load_external(path: str | os.PathLike, device: str = "cpu", *, differentiable: bool | None = None,
                  output: str | None = None, output_kind: str | None = None,
                  max_bytes: int = MAX_FILE_BYTES) -> Classifier:
    """A model file from elsewhere as a transferlab classifier.

    Parameters
    ----------
    path : a ``.skops`` or ``.onnx`` file.
    differentiable : None: differentiable where transferlab can make it so (a scikit-learn model it re-expresses, an
        ONNX network whose operators it converts), a black-box target otherwise; True: refuse (ConfigError naming
        the cause) what cannot be differentiated, for a surrogate; False: always a black box.
    output, output_kind : for an ONNX model run by ONNX Runtime, the output holding the class scores and whether
        they are ``"scores"`` or ``"probabilities"`` (chosen as :mod:`~transferlab.models.onnx_runtime` says when
        not given; giving either runs the file in ONNX Runtime).
    max_bytes : the largest file read.
    """
    from transferlab.models.wrap import wrap

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise ConfigError(f"{path}: transferlab does not load {suffix} files ({REFUSED_SUFFIXES[suffix]}, which can "
                          "run code); export a torch network with torch.onnx.export(..., dynamo=False) to .onnx, and a "
                          "scikit-learn model with skops.io.dump to .skops")
    if suffix == ".skops":
        return wrap(load_skops(path, max_bytes), device=device, differentiable=differentiable)
    if suffix != ".onnx":
        raise ConfigError(f"{path}: unknown model file type {suffix or '(none)'}; give a .skops or .onnx file, or a "
                          "folder written by transferlab.models.save")
    return load_onnx(read_bounded(path, max_bytes), path.name, device, differentiable, output, output_kind)


def load_onnx(data: bytes, source: str, device: str = "cpu", differentiable: bool | None = None,
              output: str | None = None, output_kind: str | None = None) -> Classifier:
    """The ONNX model in ``data`` (named ``source`` in messages): converted to torch, or run by ONNX Runtime."""
    from transferlab.models.onnx_runtime import OnnxClassifier
    from transferlab.models.onnx_torch import torch_from_onnx

    if differentiable or (differentiable is None and output is None and output_kind is None):
        try:
            return torch_from_onnx(data, source, device=device)
        except (ConfigError, DataError):
            if differentiable:
                raise
    return OnnxClassifier(source, output, output_kind, device=device).load_bytes(data)

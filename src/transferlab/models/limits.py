"""The sizes transferlab accepts, and how a fitted state's tensors are declared.

Models, the saved-model loader and the experiment planner check data, parameters and files against these bounds
before anything is allocated: a model's :meth:`~transferlab.models.base.Classifier.state_layouts` declares its
tensors (:data:`Layout`), :func:`layout_size` counts their values against :data:`MAX_PARAMETERS`.
"""

from __future__ import annotations

import math

import numpy as np

from transferlab.errors import DataError

#: most matrix elements densified at once when scoring sparse rows (and most values of one block of a dense
#: gradient of sparse rows)
SPARSE_BLOCK_ELEMENTS = 1 << 23
#: most values (weights, support vectors, tree nodes...) a model may hold: 2**28, 1 GiB in float32. The paper's
#: MLP on DREBIN's full 545,334 features has 1.1·10⁸.
MAX_PARAMETERS = 1 << 28
#: most input features a model may take (DREBIN has 545,334)
MAX_FEATURES = 10_000_000
#: most classes a model may score
MAX_CLASSES = 100_000
#: the largest index scikit-learn's sparse solvers (liblinear, libsvm) take: CSR indices are int32
INT32_MAX = np.iinfo(np.int32).max

#: a tensor's declared shape: ints are sizes fixed by the spec; a string names a size the file sets, the same
#: string in two shapes being the same size (e.g. the number of support vectors "m")
Shape = tuple[int | str, ...]
#: a fitted state's tensors: name -> (shape, "float" or "int")
Layout = dict[str, tuple[Shape, str]]


def layout_size(layout: Layout, sizes: dict[str, int] | None = None) -> int:
    """The number of values of a layout's tensors (sizes the file sets count as ``sizes`` gives, else 1)."""
    total = 0
    for shape, _ in layout.values():
        total += math.prod(d if isinstance(d, int) else (sizes or {}).get(d, 1) for d in shape)
    return total


def check_size(n_features: int, n_classes: int) -> None:
    """DataError when data are wider, or have more classes, than a model may (what ``models.load`` takes back)."""
    if n_features > MAX_FEATURES or n_classes > MAX_CLASSES:
        raise DataError(f"X has {n_features:,} features and {n_classes:,} classes; a model takes at most "
                        f"{MAX_FEATURES:,} features and {MAX_CLASSES:,} classes: select features")

"""The classifier interface that attacks and metrics rely on.

Every classifier has ``fit(X, y) -> self``, ``decision_function(X) -> (n, n_classes)``, ``predict(X)`` and, when
differentiable, ``input_gradient(X, y, loss="margin")``: the gradient of the attacker's loss for every row in one
batched autograd call. Binary classifiers return two score columns ``[0, f(x)]`` so that one margin loss serves all
problems (for them it equals −y·f(x), the paper's binary margin, Eq. 1 with the margin loss of Section 3.1).

The registry's models derive from :class:`Estimator`: scikit-learn classifiers (``BaseEstimator`` and
``ClassifierMixin``: ``get_params``/``set_params``, ``clone``, ``GridSearchCV``, labels of any kind in
``classes_``, scikit-learn's input validation, :class:`NotFittedError`), which pass
``sklearn.utils.estimator_checks.check_estimator`` except for the checks :meth:`Estimator.expected_failed_checks`
names with their reasons.

Each class also declares, from its own definition, what its parameters may hold (:class:`Param`, checked by
:meth:`Classifier.check_params` before any training and when a saved model is loaded) and the tensors its fitted
state is made of given ``n_features``, ``n_classes`` and its parameters (:meth:`Classifier.state_layouts`), so a
saved model is checked against what its class says before anything is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from transferlab.errors import ConfigError, DataError
from transferlab.models.losses import get_loss


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


class NotDifferentiableError(TypeError):
    """The model has no input gradient (e.g. a random forest): attack it through a differentiable surrogate."""


class NotFittedError(sklearn.exceptions.NotFittedError, ConfigError):
    """A model used before ``fit``: scikit-learn's ``NotFittedError`` (so scikit-learn's tools recognise it) and a
    transferlab ConfigError (so the CLI prints it as one line)."""


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU; use device='cpu'")
    return device


# ---- parameters --------------------------------------------------------------------------------------------------
def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Param:
    """What one constructor parameter may hold.

    kind : ``"real"`` (a finite number), ``"int"``, ``"ints"`` (a list or tuple of integers, each checked against
        the bounds, with ``length`` entries), ``"device"`` (a torch device name such as ``"cpu"`` or ``"cuda:0"``).
    low, high : inclusive bounds (``open_low``: ``low`` itself is excluded).
    none : None is allowed too. also : further values allowed outside the bounds (``n_jobs=-1``).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    none: bool = False
    length: tuple[int, int] = (0, 64)
    also: tuple[Any, ...] = ()

    def describe(self) -> str:
        what = {"real": "a finite number", "int": "an integer", "ints": "integers",
                "device": "a torch device name ('cpu', 'cuda', 'cuda:0')"}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        if bounds:
            what += " " + " and ".join(bounds)
        if self.kind == "ints":
            lo, hi = self.length
            count = f"{lo}" if lo == hi else f"{lo} to {hi}"
            what = f"a list of {count} {what}"
        if self.also:
            what += " or " + " or ".join(map(repr, self.also))
        return f"None or {what}" if self.none else what

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none
        if _is_real(value) and value in self.also:
            return True
        if self.kind == "device":
            if not isinstance(value, (str, torch.device)):
                return False
            try:
                torch.device(value)
            except (RuntimeError, ValueError, TypeError):
                return False
            return True
        if self.kind == "ints":
            return (isinstance(value, (list, tuple)) and self.length[0] <= len(value) <= self.length[1]
                    and all(is_int(v) and self._in_bounds(v) for v in value))
        if self.kind == "int":
            return is_int(value) and self._in_bounds(value)
        return _is_real(value) and math.isfinite(value) and self._in_bounds(value)

    def _in_bounds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or value <= self.high


#: seeds of torch generators
SEED = Param("int", 0, 2 ** 63 - 1)


def as_tuple(value: Any) -> Any:
    """A list, array or other sequence parameter as a tuple; anything else (a string, a number) as it is, for
    :meth:`Classifier.check_params` to refuse."""
    if isinstance(value, (list, tuple, range, np.ndarray)):
        return tuple(value.tolist() if isinstance(value, np.ndarray) else value)
    return value


def check_X(X: Any, name: str = "X", allow_sparse: bool = False) -> Any:
    """X as a 2-D float64 ndarray, with a clear error for NaN/inf or a wrong shape; or, with ``allow_sparse``,
    a sparse X as a scipy CSR matrix, kept sparse, in canonical form (sorted, no duplicates) with int32 indices
    and row pointers: the index type scikit-learn's liblinear and libsvm take."""
    if sp.issparse(X):
        if allow_sparse:
            return _check_csr(X, name)
        X = X.toarray()
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{name} holds NaN or infinite values")
    return X


def _check_csr(X: Any, name: str) -> sp.csr_matrix:
    if X.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    X = sp.csr_matrix(X)  # shares the arrays of a CSR matrix (or array); converts other formats
    if X.nnz > INT32_MAX or max(X.shape) > INT32_MAX:
        raise DataError(f"{name} has shape {X.shape} and {X.nnz:,} stored values; scikit-learn's sparse solvers "
                        f"index at most {INT32_MAX:,}: use fewer rows or select features")
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    if X.indices.dtype != np.int32 or X.indptr.dtype != np.int32:
        X = sp.csr_matrix((X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32)), shape=X.shape)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    if not np.all(np.isfinite(X.data)):
        raise DataError(f"{name} holds NaN or infinite values")
    return X


def check_y(y: Any, n: int, n_classes: int | None = None) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y must hold {n} integer labels, got shape {y.shape} and dtype {y.dtype}")
    if n and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        raise DataError(f"labels must be 0..{(n_classes or 0) - 1}, got {y.min()}..{y.max()}")
    return y.astype(np.int64)


def array_tensor(X: np.ndarray, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.as_tensor(X, dtype, device)``; a read-only array (a memory map opened read-only) is copied first,
    as torch does not share memory it may not write."""
    if isinstance(X, np.ndarray) and not X.flags.writeable:
        X = X.copy()
    return torch.as_tensor(X, dtype=dtype, device=device)


# ---- sparse rows in torch ----------------------------------------------------------------------------------------
def sparse_tensor(X: sp.csr_matrix, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """Canonical CSR rows as a coalesced torch sparse COO tensor (its own index arrays: O(nnz) memory)."""
    X = X.tocsr()
    rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    index = torch.from_numpy(np.vstack([rows, X.indices.astype(np.int64)]))
    values = torch.from_numpy(np.asarray(X.data)).to(dtype)
    return torch.sparse_coo_tensor(index, values, X.shape, is_coalesced=True,
                                   check_invariants=False).to(device)


class _SparseLinear(torch.autograd.Function):
    """x Wᵀ + b for sparse rows x; the backward pass writes Wᵀ's gradient only at the columns the rows hold."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.sparse.mm(x, weight.T) + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1]:
            rows, cols = x.indices()
            # dL/dW[:, j] = Σ_rows dL/dz[row] · x[row, j]: one column update per stored value
            grad_weight = torch.zeros_like(weight).index_add_(1, cols, (grad[rows] * x.values()[:, None]).T)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return None, grad_weight, grad_bias


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x Wᵀ + b of a torch sparse COO batch x (n, d) with W (k, d): differentiable in W and b, never densifies x."""
    return _SparseLinear.apply(x, weight, bias)


def layout_size(layout: Layout, sizes: dict[str, int] | None = None) -> int:
    """The number of values of a layout's tensors (sizes the file sets count as ``sizes`` gives, else 1)."""
    total = 0
    for shape, _ in layout.values():
        total += math.prod(d if isinstance(d, int) else (sizes or {}).get(d, 1) for d in shape)
    return total


class Classifier(BaseEstimator):
    """Base class: fitted attributes end in ``_``; subclasses implement ``_fit`` and ``scores``.

    Parameters common to all: ``device`` (``"cpu"`` or ``"cuda"``) where scores and gradients are computed, and
    ``batch_size``, the rows scored per torch call (bounds memory, not a per-sample loop).

    ``get_params``, ``set_params`` and ``repr`` are scikit-learn's (:class:`sklearn.base.BaseEstimator`). The
    registry's models derive from :class:`Estimator`, which makes them scikit-learn classifiers (labels of any
    kind, scikit-learn's input validation); a user's wrapped model derives from this class directly and keeps its
    own conventions (:mod:`transferlab.models.blackbox`).
    """

    differentiable = True
    #: whether ``_fit`` takes a scipy CSR matrix as it is (scikit-learn's linear, kernel and forest models, the
    #: MLP's sparse first layer); other models get the rows densified
    accepts_sparse = False
    #: dtype of the torch computation; scikit-learn models use float64 so scores match scikit-learn's exactly
    dtype: torch.dtype = torch.float64
    #: what each constructor parameter may hold (merged along the class hierarchy by :meth:`param_rules`)
    PARAMS: dict[str, Param] = {"device": Param("device"), "batch_size": Param("int", 1, INT32_MAX)}

    def __init__(self, device: str = "cpu", batch_size: int = 4096) -> None:
        self.device = device
        self.batch_size = batch_size

    # ---- parameters --------------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The names of the constructor's parameters, in the constructor's order (``get_params`` sorts them)."""
        import inspect

        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    @classmethod
    def param_rules(cls) -> dict[str, Param]:
        """What every constructor parameter may hold: the ``PARAMS`` tables of the class and its bases."""
        rules: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            rules.update(vars(klass).get("PARAMS", {}))
        return rules

    def check_params(self) -> None:
        """Raise ConfigError naming the first parameter whose value its class does not allow (called before
        training and when a saved model is loaded; the constructor and ``set_params`` store values unchecked, as
        scikit-learn's estimators do)."""
        params = self.get_params(deep=False)
        for name, rule in self.param_rules().items():
            if name in params and not rule.accepts(params[name]):
                raise ConfigError(f"{type(self).__name__} parameter {name!r} must be {rule.describe()}, got "
                                  f"{_short(params[name])}")

    # ---- fitting -----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> Classifier:
        self.check_params()
        X = check_X(X, allow_sparse=self.accepts_sparse)
        y = check_y(y, X.shape[0])
        classes = np.unique(y)
        if classes.size < 2 or not np.array_equal(classes, np.arange(classes.size)):
            raise DataError(f"training labels must cover 0..C-1 with C >= 2, got classes {classes.tolist()}")
        check_size(X.shape[1], classes.size)
        self.n_classes_ = int(classes.size)
        self.n_features_in_ = X.shape[1]
        self._fit(X, y)
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        """Train on validated X (float64, or canonical CSR when ``accepts_sparse``) and labels 0..n_classes_-1."""
        raise NotImplementedError

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_classes_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")

    # ---- scores ------------------------------------------------------------------------------------------
    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """Differentiable decision scores (n, n_classes) of a tensor on ``torch_device`` with ``dtype``; column k
        is class ``classes_[k]`` (class k for a model without ``classes_``)."""
        raise NotImplementedError

    def affine_input(self) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None:
        """``(W, b, tail)`` with ``scores(x) = tail(x Wᵀ + b)`` when the model's first step is affine in x (linear
        models, the MLP's first layer): sparse rows then go through :func:`sparse_linear` and are never densified.
        None for the other models, whose sparse rows are densified a bounded block at a time."""
        return None

    def as_tensor(self, X: Any) -> torch.Tensor:
        """X (ndarray, tensor, or scipy sparse: densified) as a tensor on the model's device and dtype."""
        return self._to_tensor(self._checked_input(X))

    def _to_tensor(self, X: Any) -> torch.Tensor:
        """Checked X (see :meth:`_checked_input`) as a tensor on the model's device and dtype."""
        if isinstance(X, torch.Tensor):
            return X.to(device=self.torch_device, dtype=self.dtype)
        if sp.issparse(X):
            X = X.toarray()
        return array_tensor(X, self.dtype, self.torch_device)

    def check_features(self, X: Any) -> None:
        """A clear error when X has another number of features than the model was fitted on."""
        n = getattr(self, "n_features_in_", None)
        if n is not None and (X.ndim != 2 or X.shape[1] != n):
            raise DataError(f"{type(self).__name__} was fitted on {n} features but X has shape {tuple(X.shape)}")

    def _checked_input(self, X: Any) -> Any:
        """X to score: a torch tensor as it is, sparse rows as a canonical CSR matrix, anything else as a float64
        ndarray; its number of features checked. Raises DataError."""
        if not isinstance(X, torch.Tensor):
            X = check_X(X, allow_sparse=True)
        self.check_features(X)
        return X

    def _sparse_blocks(self, X: sp.csr_matrix, dense_rows: bool) -> list[slice]:
        """Row blocks of sparse X: ``batch_size`` rows when they stay sparse; when a block becomes dense (densified
        rows, or a dense gradient) at most :data:`SPARSE_BLOCK_ELEMENTS` values."""
        rows = self.batch_size
        if dense_rows:
            rows = max(1, min(rows, SPARSE_BLOCK_ELEMENTS // max(1, X.shape[1])))
        return [slice(i, i + rows) for i in range(0, X.shape[0], rows)]

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores of shape (n_samples, n_classes), as float64; for a binary model the two columns [0, f(x)].
        Sparse X is never densified as a whole."""
        self._check_fitted()
        X = self._checked_input(X)
        if isinstance(X, torch.Tensor):
            return self._score_tensor(X)
        if not sp.issparse(X):
            return self._score_array(X)
        affine = self.affine_input()
        if affine is None:  # densified a bounded block of rows at a time
            blocks = [self._score_array(X[rows].toarray()) for rows in self._sparse_blocks(X, True)]
        else:
            weight, bias, tail = affine
            with torch.no_grad():
                blocks = [tail(sparse_linear(sparse_tensor(X[rows], weight.dtype, weight.device), weight, bias))
                          .double().cpu().numpy() for rows in self._sparse_blocks(X, False)]
        return np.vstack(blocks) if blocks else np.zeros((0, self.n_classes_))

    def _score_array(self, X: np.ndarray) -> np.ndarray:
        """Scores of checked dense float64 rows."""
        return self._score_tensor(array_tensor(X, self.dtype, self.torch_device))

    def _score_tensor(self, X: torch.Tensor) -> np.ndarray:
        """Scores of a tensor of rows, ``batch_size`` rows per torch call, as float64."""
        X = X.to(device=self.torch_device, dtype=self.dtype)
        with torch.no_grad():
            parts = [self.scores(X[i:i + self.batch_size]) for i in range(0, X.shape[0], self.batch_size)]
        return torch.cat(parts).double().cpu().numpy() if parts else np.zeros((0, self.n_classes_))

    def predict(self, X: Any) -> np.ndarray:
        """The index of the highest score of each row (:meth:`Estimator.predict` maps it to the class label)."""
        return self.decision_function(X).argmax(axis=1)

    # ---- gradients ---------------------------------------------------------------------------------------
    def _label_indices(self, y: Any, n: int) -> np.ndarray:
        """The score columns of the labels ``y`` given to :meth:`loss` and :meth:`input_gradient`: here the
        labels are the indices themselves (0..n_classes_-1); :class:`Estimator` maps class labels."""
        return check_y(y, n, self.n_classes_)

    def loss(self, X: Any, y: Any, loss: str = "margin") -> np.ndarray:
        """The attacker's loss (``margin`` or ``cross_entropy``) for each row, as float64: the objective the
        attacks evaluate (:meth:`loss_tensor`), whose gradient is :meth:`input_gradient`."""
        scores = torch.as_tensor(self.decision_function(X))
        y = torch.as_tensor(self._label_indices(y, scores.shape[0]))
        return get_loss(loss)(scores, y).numpy()

    def loss_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        """Torch version of :meth:`loss` for attacks (no gradient): the loss of the scores of a tensor X (any
        dtype; the result is in the model's) with ``y`` the score columns (indices) of the labels."""
        with torch.no_grad():
            return get_loss(loss)(self.scores(X.to(self.dtype)), y)

    @property
    def loss_of_scores(self) -> bool:
        """Whether :meth:`loss_tensor` is the loss of :meth:`scores` (so an attack that computes the scores itself
        may apply the loss to them): true for every model but an ensemble with ``combine="normalized"``."""
        return True

    def _require_gradient(self) -> None:
        if not self.differentiable:
            raise NotDifferentiableError(
                f"{type(self).__name__} has no input gradient; craft attacks on a differentiable surrogate "
                "(e.g. svm_rbf_h or nn_h) and transfer them")

    def input_gradient(self, X: Any, y: Any, loss: str = "margin") -> np.ndarray:
        """∇_x of the attacker's loss for every row of X, in one batched call; same shape as X.

        Rows are independent (scores of one row do not depend on the others), so the gradient of the summed
        loss is the per-row gradient. ``y`` are labels as :meth:`loss` takes them (for the registry's models the
        class labels of ``classes_``, see :class:`Estimator`).

        For a sparse X the gradient is still a dense float64 array of X's shape (the gradients of these models
        have no zeros to exploit: a linear model's combines rows of W, an MLP's is W₁ᵀ δ); it is computed a block of rows
        at a time, so beyond the returned array memory holds one block of at most
        :data:`SPARSE_BLOCK_ELEMENTS` values, and X is never densified as a whole. Attacks need gradients of the
        rows they attack only: pass those rows (in batches, for very wide data) rather than a whole data set.
        """
        self._check_fitted()
        self._require_gradient()
        get_loss(loss)
        X = self._checked_input(X)
        y = self._label_indices(y, X.shape[0])
        if sp.issparse(X):
            out = np.empty(X.shape, dtype=np.float64)
            for rows in self._sparse_blocks(X, True):
                out[rows] = self._sparse_gradient(X[rows], y[rows], loss).double().cpu().numpy()
            return out
        Xt = self._to_tensor(X)
        yt = torch.as_tensor(y, device=self.torch_device)
        return self.input_gradient_tensor(Xt, yt, loss).double().cpu().numpy()

    def _sparse_gradient(self, X: sp.csr_matrix, y: np.ndarray, loss: str) -> torch.Tensor:
        """The dense input gradient of a block of sparse rows: through the affine first step when there is one
        (∇ₓ = (∂L/∂z) W with z = x Wᵀ + b), else of the densified block."""
        yt = torch.as_tensor(y, device=self.torch_device)
        affine = self.affine_input()
        if affine is None:
            return self.input_gradient_tensor(self._to_tensor(X.toarray()), yt, loss)
        weight, bias, tail = affine
        with torch.no_grad():
            z = sparse_linear(sparse_tensor(X, weight.dtype, weight.device), weight, bias)
        z.requires_grad_(True)
        with torch.enable_grad():
            value = get_loss(loss)(tail(z), yt).sum()
            (grad_z,) = torch.autograd.grad(value, z)
        return grad_z @ weight

    def input_gradient_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        """Torch version of :meth:`input_gradient` for attacks: tensors in, tensor out, on the model's device;
        ``y`` are score columns (indices 0..n_classes_-1), as :meth:`loss_tensor` takes them."""
        self._require_gradient()
        loss_fn = get_loss(loss)
        grads = []
        for i in range(0, X.shape[0], self.batch_size):
            xb = X[i:i + self.batch_size].detach().to(self.dtype).requires_grad_(True)
            with torch.enable_grad():
                value = loss_fn(self.scores(xb), y[i:i + self.batch_size]).sum()
                (grad,) = torch.autograd.grad(value, xb)
            grads.append(grad)
        return torch.cat(grads) if grads else torch.zeros_like(X)

    # ---- persistence -------------------------------------------------------------------------------------
    def state_layouts(self) -> list[Layout]:
        """The tensors a fitted model of this class is saved as, given ``n_features_in_``, ``n_classes_`` and the
        parameters: one layout per way the class can be saved. ``transferlab.models.load`` checks a file's
        tensors against these before it reads them."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def check_state(self, state: dict[str, torch.Tensor]) -> None:
        """Check the values of tensors that match a layout (indices in range, structure), raising DataError;
        the shapes, dtypes and finiteness are checked already."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Fitted state as named tensors (saved with safetensors, never pickled)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")


def check_size(n_features: int, n_classes: int) -> None:
    """DataError when data are wider, or have more classes, than a model may (what ``models.load`` takes back)."""
    if n_features > MAX_FEATURES or n_classes > MAX_CLASSES:
        raise DataError(f"X has {n_features:,} features and {n_classes:,} classes; a model takes at most "
                        f"{MAX_FEATURES:,} features and {MAX_CLASSES:,} classes: select features")


def _first_line(exc: BaseException) -> str:
    """A scikit-learn error message as one line (the CLI prints one), without the dump of the array."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("array=")]
    return " ".join(lines) if lines else type(exc).__name__


#: the scikit-learn estimator checks that every registry model fails, and why (see :meth:`Estimator.expected_failed_checks`)
_TWO_COLUMNS = ("a binary model's decision_function returns the two columns [0, f(x)] (transferlab's interface: one "
                "margin loss, max_{c≠y} f_c − f_y, serves binary and multiclass problems alike, and column k always "
                "scores classes_[k]), where scikit-learn expects the single column f(x); the check's other assertions "
                "(accuracy, labels, predict against decision_function, feature-count errors) are run with two "
                "columns by tests/test_estimators.py")
SKLEARN_EXPECTED_FAILURES: dict[str, str] = {"check_classifiers_train": _TWO_COLUMNS,
                                             "check_classifiers_classes": _TWO_COLUMNS}


class Estimator(ClassifierMixin, Classifier):
    """A registry model as a scikit-learn classifier.

    - Parameters are stored by the constructor and ``set_params`` as given; :meth:`fit` checks them (the class's
      :class:`Param` table) before anything else, so ``sklearn.base.clone`` and ``GridSearchCV`` work as for any
      scikit-learn estimator.
    - ``fit(X, y)`` validates X and y with scikit-learn's ``validate_data`` (dense, scipy sparse, pandas frames,
      lists), takes labels of any kind (integers, strings, −1/+1, ...) and keeps them, sorted, in ``classes_``;
      training sees their indices 0..C−1, so a model fitted on labels 0..C−1 is exactly what it always was.
    - ``predict`` returns labels of ``classes_``; ``decision_function`` has one column per class, column k
      scoring ``classes_[k]``. For two classes it is the two columns [0, f(x)] (transferlab's interface), where
      scikit-learn's convention would be the one column f(x): ``decision_function(X)[:, 1]`` is that column.
    - The labels given to :meth:`loss` and :meth:`input_gradient` are class labels too, as ``y`` of ``fit`` and
      ``score``; the torch methods the attacks call (:meth:`loss_tensor`, :meth:`input_gradient_tensor`) take
      score columns, the indices of the labels in ``classes_`` (``classes_`` is 0..C−1 for the engine's data, so
      both are the same there).
    - Calling a method before ``fit`` raises :class:`NotFittedError` (scikit-learn's, and a ConfigError).
    """

    #: scikit-learn checks this class fails on purpose, with the reason; see :meth:`expected_failed_checks`
    EXPECTED_FAILED_CHECKS: dict[str, str] = SKLEARN_EXPECTED_FAILURES

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # every registry model takes scipy sparse rows: the linear, kernel and forest models and the MLP as they
        # are, the CNN densified (its rows are images)
        tags.input_tags.sparse = True
        return tags

    def expected_failed_checks(self) -> dict[str, str]:
        """The scikit-learn estimator checks this model fails on purpose, each with the reason, for
        ``sklearn.utils.estimator_checks.check_estimator(model, expected_failed_checks=...)``: the
        ``EXPECTED_FAILED_CHECKS`` tables of the class and its bases."""
        checks: dict[str, str] = {}
        for klass in reversed(type(self).__mro__):
            checks.update(vars(klass).get("EXPECTED_FAILED_CHECKS", {}))
        return checks

    # ---- fitting -----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> Estimator:
        """Train on rows X (dense or scipy sparse) and labels y (any kind: kept in ``classes_``)."""
        self.check_params()
        X, y = self._validated_fit_data(X, y)
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise DataError(f"{type(self).__name__}: y {_first_line(exc)}") from None
        classes, index = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise DataError(f"y holds 1 class ({_short(classes.tolist()[0]) if classes.size else 'none'}); "
                            f"{type(self).__name__} needs labels of at least 2 classes to fit")
        check_size(X.shape[1], classes.size)
        self.classes_ = classes
        self.n_classes_ = int(classes.size)
        self._fit(X, index.reshape(-1).astype(np.int64))
        return self

    def _validated_fit_data(self, X: Any, y: Any) -> tuple[Any, np.ndarray]:
        X, y = _from_torch(X), _from_torch(y)
        try:
            X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, ensure_all_finite=False)
        except ValueError as exc:
            raise DataError(f"{type(self).__name__}.fit: {_first_line(exc)}") from None
        X = self._finite(X)
        if sp.issparse(X) and not self.accepts_sparse:
            X = X.toarray()
        return X, y

    @staticmethod
    def _finite(X: Any) -> Any:
        """Validated rows, CSR in canonical int32 form, with a DataError for NaN or infinite values."""
        if sp.issparse(X):
            return _check_csr(X, "X")
        if not np.all(np.isfinite(X)):
            raise DataError("X holds NaN or infinite values; remove those rows or impute the values")
        return X

    # ---- scores ------------------------------------------------------------------------------------------
    def check_features(self, X: Any) -> None:
        n = getattr(self, "n_features_in_", None)
        if n is not None and (X.ndim != 2 or X.shape[1] != n):
            got = f"{X.shape[1]} features" if X.ndim == 2 else f"shape {tuple(X.shape)}"
            raise DataError(f"X has {got}, but {type(self).__name__} is expecting {n} features as input (it was "
                            f"fitted on {n} features)")

    def _checked_input(self, X: Any) -> Any:
        """X to score, validated by scikit-learn's ``validate_data`` (feature count and names against fit); a
        torch tensor (the attacks' input) is taken as it is."""
        if isinstance(X, torch.Tensor):
            self.check_features(X)
            return X
        if getattr(X, "ndim", None) == 2:
            self.check_features(X)
        try:
            X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float64, ensure_all_finite=False,
                              ensure_min_samples=0)
        except ValueError as exc:
            raise DataError(f"{type(self).__name__}: {_first_line(exc)}") from None
        return self._finite(X)

    def predict(self, X: Any) -> np.ndarray:
        """The label, from ``classes_``, of the highest score of each row."""
        index = super().predict(X)
        return self._classes()[index]

    def _classes(self) -> np.ndarray:
        classes = getattr(self, "classes_", None)
        return np.arange(self.n_classes_) if classes is None else classes

    # ---- labels ------------------------------------------------------------------------------------------
    def _label_indices(self, y: Any, n: int) -> np.ndarray:
        """The indices in ``classes_`` of the class labels ``y`` (DataError for a label the model does not know)."""
        y = np.asarray(_from_torch(y))
        if y.shape != (n,):
            raise DataError(f"y must hold {n} labels, one per row of X, got shape {y.shape}")
        classes = self._classes()
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            index = np.searchsorted(classes, y).clip(0, classes.size - 1)
            known = np.asarray(classes[index] == y, dtype=bool)
        except (TypeError, ValueError):
            known = np.zeros(n, dtype=bool)
            index = np.zeros(n, dtype=np.int64)
        if not known.all():
            raise DataError(f"label {_short(y[~known][0])} is not one of {type(self).__name__}'s classes_ "
                            f"{_short(classes.tolist())}: give class labels as fit got them")
        return index.astype(np.int64)


def _from_torch(value: Any) -> Any:
    """A torch tensor as a numpy array (scikit-learn's validation reads numpy); anything else as it is."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value

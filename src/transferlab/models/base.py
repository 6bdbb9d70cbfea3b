"""The classifier interface that attacks and metrics rely on.

Every classifier has ``fit(X, y) -> self``, ``decision_function(X) -> (n, n_classes)``, ``predict(X)`` and, when
differentiable, ``input_gradient(X, y, loss="margin")``: the gradient of the attacker's loss for every row in one
batched autograd call. Binary classifiers return two score columns ``[0, f(x)]`` so that one margin loss serves all
problems (for them it equals −y·f(x), the paper's binary margin, Eq. 1 with the margin loss of Section 3.1).

The registry's models derive from :class:`~transferlab.models.estimator.Estimator`, which makes them
scikit-learn classifiers. The pieces this interface is built from have their own modules: parameter rules
(:mod:`~transferlab.models.params`), input checks (:mod:`~transferlab.models.inputs`), sparse rows in torch
(:mod:`~transferlab.models.sparse`) and the size bounds and state layouts (:mod:`~transferlab.models.limits`).

Each class also declares, from its own definition, what its parameters may hold
(:class:`~transferlab.models.params.Param`, checked by
:meth:`Classifier.check_params` before any training and when a saved model is loaded) and the tensors its fitted
state is made of given ``n_features``, ``n_classes`` and its parameters (:meth:`Classifier.state_layouts`), so a
saved model is checked against what its class says before anything is allocated.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator

from transferlab.errors import ConfigError, DataError
from transferlab.models.inputs import array_tensor, check_X, check_y
# MAX_PARAMETERS and layout_size are importable from here too, as the experiment planner does
from transferlab.models.limits import (INT32_MAX, MAX_PARAMETERS, SPARSE_BLOCK_ELEMENTS, Layout,  # noqa: F401
                                       check_size, layout_size)
from transferlab.models.losses import get_loss
from transferlab.models.params import Param, short
from transferlab.models.sparse import sparse_linear, sparse_tensor



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


class Classifier(BaseEstimator):
    """Base class: fitted attributes end in ``_``; subclasses implement ``_fit`` and ``scores``.

    Parameters common to all: ``device`` (``"cpu"`` or ``"cuda"``) where scores and gradients are computed, and
    ``batch_size``, the rows scored per torch call (bounds memory, not a per-sample loop).

    ``get_params``, ``set_params`` and ``repr`` are scikit-learn's (:class:`sklearn.base.BaseEstimator`). The
    registry's models derive from :class:`~transferlab.models.estimator.Estimator`, which makes them scikit-learn
    classifiers (labels of any kind, scikit-learn's input validation); a user's wrapped model derives from this class directly and keeps its
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
                                  f"{short(params[name])}")

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

    @property
    def affine_scores(self) -> bool:
        """Whether the scores are affine in x, f(x) = W x + b (linear models, a wrapped bare linear classifier): an
        attack may then maximise its objective in closed form along each direction. False unless a model says so."""
        return False

    def rbf_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
        """``(S, ‖s‖², β, b, γ)`` with ``scores(x) = exp(−γ‖x − s_j‖²)_j β + b`` (S dense, one support vector per
        row; β one column per class) when the scores are an RBF kernel expansion (the registry's RBF SVMs, a
        wrapped bare binary RBF ``SVC``): an attack's line search then scores candidates from cached kernel terms.
        None for every other model."""
        return None

    def affine_input(self) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None:
        """``(W, b, tail)`` with ``scores(x) = tail(x Wᵀ + b)`` when the model's first step is affine in x (linear
        models, the MLP's first layer): sparse rows then go through :func:`~transferlab.models.sparse.sparse_linear`
        and are never densified. None for the other models, whose sparse rows are densified a bounded block at a
        time."""
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

    def check_feature_names(self, X: Any) -> None:
        """A clear error when X is a table (a pandas DataFrame) whose column names are not, in order, those the
        model was fitted with (``feature_names_in_``, kept from a wrapped estimator fitted on a DataFrame):
        scikit-learn's own rule, since the rows are scored by position. Other inputs carry no names to check."""
        names = getattr(self, "feature_names_in_", None)
        columns = getattr(X, "columns", None)  # arrays, tensors and sparse matrices have none
        if names is None or columns is None:
            return
        got, fitted = [str(c) for c in columns], [str(n) for n in names]
        if got != fitted:
            raise DataError(f"X's columns {short(got)} are not the feature names the model was fitted with "
                            f"{short(fitted)}, in that order; select them as X[model.feature_names_in_]")

    def _checked_input(self, X: Any) -> Any:
        """X to score: a torch tensor as it is (finite values checked), sparse rows as a canonical CSR matrix,
        anything else as a float64 ndarray (a table's column names checked first, :meth:`check_feature_names`);
        its number of features checked. Raises DataError."""
        if isinstance(X, torch.Tensor):
            return self._checked_tensor(X)
        self.check_feature_names(X)
        X = check_X(X, allow_sparse=True)
        self.check_features(X)
        return X

    def _checked_tensor(self, X: torch.Tensor) -> torch.Tensor:
        """A tensor of rows to score, as it is: its number of features checked, and its values finite (the attacks
        pass their own tensors to :meth:`scores`, not through here)."""
        self.check_features(X)
        if not bool(torch.isfinite(X).all()):
            raise DataError("X holds NaN or infinite values; remove those rows or impute the values")
        return X

    def _sparse_blocks(self, X: sp.csr_matrix, dense_rows: bool) -> list[slice]:
        """Row blocks of sparse X: ``batch_size`` rows when they stay sparse; when a block becomes dense (densified
        rows, or a dense gradient) at most :data:`~transferlab.models.limits.SPARSE_BLOCK_ELEMENTS` values."""
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

    @property
    def rows_per_call(self) -> int:
        """Rows of dense X per torch call when scoring or differentiating: ``batch_size`` (a model whose kernels run
        faster on smaller blocks, the CNN on the CPU, takes fewer)."""
        return self.batch_size

    def _score_tensor(self, X: torch.Tensor) -> np.ndarray:
        """Scores of a tensor of rows, ``batch_size`` rows per torch call (a model that scores faster in smaller
        blocks cuts them in its own :meth:`scores`, for every caller), as float64."""
        X = X.to(device=self.torch_device, dtype=self.dtype)
        rows = self.batch_size
        with torch.no_grad():
            parts = [self.scores(X[i:i + rows]) for i in range(0, X.shape[0], rows)]
        return torch.cat(parts).double().cpu().numpy() if parts else np.zeros((0, self.n_classes_))

    def predict(self, X: Any) -> np.ndarray:
        """The index of the highest score of each row (:meth:`~transferlab.models.estimator.Estimator.predict`
        maps it to the class label)."""
        return self.decision_function(X).argmax(axis=1)

    def predicted_index(self, X: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The class index :meth:`predict` gives each row of the tensor ``X`` (on the model's device), from its
        ``scores``: the highest score. A model whose prediction follows another rule overrides it (a
        wrapped multiclass SVC: libsvm's vote), so an attack counts a point as evaded exactly where the model's
        prediction changes."""
        return scores.argmax(1)

    # ---- gradients ---------------------------------------------------------------------------------------
    def _label_indices(self, y: Any, n: int) -> np.ndarray:
        """The score columns of the labels ``y`` given to :meth:`loss` and :meth:`input_gradient`: here the
        labels are the indices themselves (0..n_classes_-1); :class:`~transferlab.models.estimator.Estimator` maps
        class labels."""
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
        class labels of ``classes_``, see :class:`~transferlab.models.estimator.Estimator`).

        For a sparse X the gradient is still a dense float64 array of X's shape (the gradients of these models
        have no zeros to exploit: a linear model's combines rows of W, an MLP's is W₁ᵀ δ); it is computed a block of rows
        at a time, so beyond the returned array memory holds one block of at most
        :data:`~transferlab.models.limits.SPARSE_BLOCK_ELEMENTS` values, and X is never densified as a whole.
        Attacks need gradients of the rows they attack only: pass those rows (in batches, for very wide data) rather than a whole data set.
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
        if X.shape[0] == 0:
            return torch.zeros_like(X)
        out = torch.empty(X.shape, dtype=self.dtype, device=X.device)
        rows = self.rows_per_call
        for i in range(0, X.shape[0], rows):
            xb = X[i:i + rows].detach().to(self.dtype).requires_grad_(True)
            with torch.enable_grad():
                value = loss_fn(self.scores(xb), y[i:i + rows]).sum()
                (out[i:i + rows],) = torch.autograd.grad(value, xb)
        return out

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

"""The classifier interface that attacks and metrics rely on.

Every classifier has ``fit(X, y) -> self``, ``decision_function(X) -> (n, n_classes)``, ``predict(X)`` and, when
differentiable, ``input_gradient(X, y, loss="margin")``: the gradient of the attacker's loss for every row in one
batched autograd call. Binary classifiers return two score columns ``[0, f(x)]`` so that one margin loss serves all
problems (for them it equals −y·f(x), the paper's binary margin).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.models.losses import get_loss


#: most matrix elements densified at once when scoring sparse rows
SPARSE_BLOCK_ELEMENTS = 1 << 23


class NotDifferentiableError(TypeError):
    """The model has no input gradient (e.g. a random forest): attack it through a differentiable surrogate."""


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU; use device='cpu'")
    return device


def check_X(X: Any, name: str = "X", allow_sparse: bool = False) -> Any:
    """X as a 2-D float64 ndarray (or, with ``allow_sparse``, a scipy CSR matrix kept sparse), with a clear error
    for NaN/inf or a wrong shape."""
    if sp.issparse(X):
        if allow_sparse:
            X = sp.csr_matrix(X, dtype=np.float64)
            if not np.all(np.isfinite(X.data)):
                raise DataError(f"{name} holds NaN or infinite values")
            return X
        X = X.toarray()
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
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


class Classifier:
    """Base class: fitted attributes end in ``_``; subclasses implement ``_fit`` and ``scores``.

    Parameters common to all: ``device`` (``"cpu"`` or ``"cuda"``) where scores and gradients are computed, and
    ``batch_size``, the rows scored per torch call (bounds memory, not a per-sample loop).
    """

    differentiable = True
    #: whether ``_fit`` takes a scipy CSR matrix as it is (scikit-learn's linear, kernel and forest models do);
    #: other models get the rows densified
    accepts_sparse = False
    #: dtype of the torch computation; scikit-learn models use float64 so scores match scikit-learn's exactly
    dtype: torch.dtype = torch.float64

    def __init__(self, device: str = "cpu", batch_size: int = 4096) -> None:
        self.device = device
        self.batch_size = batch_size

    # ---- parameters, in scikit-learn's style -------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (as scikit-learn's ``get_params``, used by ``list models`` and ``save``)."""
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ---- fitting -----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> Classifier:
        X = check_X(X, allow_sparse=self.accepts_sparse)
        y = check_y(y, X.shape[0])
        classes = np.unique(y)
        if classes.size < 2 or not np.array_equal(classes, np.arange(classes.size)):
            raise DataError(f"training labels must cover 0..C-1 with C >= 2, got classes {classes.tolist()}")
        self.n_classes_ = int(classes.size)
        self.n_features_in_ = X.shape[1]
        self._fit(X, y)
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_classes_"):
            raise ConfigError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")

    # ---- scores ------------------------------------------------------------------------------------------
    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """Differentiable decision scores (n, n_classes) of a tensor on ``torch_device`` with ``dtype``."""
        raise NotImplementedError

    def as_tensor(self, X: Any) -> torch.Tensor:
        """X (ndarray, tensor, or scipy sparse: densified) as a tensor on the model's device and dtype."""
        if isinstance(X, torch.Tensor):
            self.check_features(X)
            return X.to(device=self.torch_device, dtype=self.dtype)
        X = check_X(X)
        self.check_features(X)
        return torch.as_tensor(X, dtype=self.dtype, device=self.torch_device)

    def check_features(self, X: Any) -> None:
        """A clear error when X has another number of features than the model was fitted on."""
        n = getattr(self, "n_features_in_", None)
        if n is not None and (X.ndim != 2 or X.shape[1] != n):
            raise DataError(f"{type(self).__name__} was fitted on {n} features but X has shape {tuple(X.shape)}")

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores of shape (n_samples, n_classes), as float64."""
        self._check_fitted()
        if sp.issparse(X):
            # sparse rows are densified a block at a time (bounded memory), never the whole matrix
            X = check_X(X, allow_sparse=True)
            self.check_features(X)
            rows = max(1, min(self.batch_size, SPARSE_BLOCK_ELEMENTS // max(1, X.shape[1])))
            blocks = [self.decision_function(X[i:i + rows].toarray()) for i in range(0, X.shape[0], rows)]
            return np.vstack(blocks) if blocks else np.zeros((0, self.n_classes_))
        Xt = self.as_tensor(X)
        with torch.no_grad():
            parts = [self.scores(Xt[i:i + self.batch_size]) for i in range(0, Xt.shape[0], self.batch_size)]
        return torch.cat(parts).double().cpu().numpy() if parts else np.zeros((0, self.n_classes_))

    def predict(self, X: Any) -> np.ndarray:
        return self.decision_function(X).argmax(axis=1)

    # ---- gradients ---------------------------------------------------------------------------------------
    def loss(self, X: Any, y: Any, loss: str = "margin") -> np.ndarray:
        """The attacker's loss (``margin`` or ``cross_entropy``) for each row, as float64."""
        scores = torch.as_tensor(self.decision_function(X))
        y = torch.as_tensor(check_y(y, scores.shape[0], self.n_classes_))
        return get_loss(loss)(scores, y).numpy()

    def input_gradient(self, X: Any, y: Any, loss: str = "margin") -> np.ndarray:
        """∇_x of the attacker's loss for every row of X, in one batched call; same shape as X.

        Rows are independent (scores of one row do not depend on the others), so the gradient of the summed
        loss is the per-row gradient.
        """
        self._check_fitted()
        Xt = self.as_tensor(X)
        yt = torch.as_tensor(check_y(y, Xt.shape[0], self.n_classes_), device=self.torch_device)
        return self.input_gradient_tensor(Xt, yt, loss).double().cpu().numpy()

    def input_gradient_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        """Torch version of :meth:`input_gradient` for attacks: tensors in, tensor out, on the model's device."""
        if not self.differentiable:
            raise NotDifferentiableError(
                f"{type(self).__name__} has no input gradient; craft attacks on a differentiable surrogate "
                "(e.g. svm_rbf_h or nn_h) and transfer them")
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
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Fitted state as named tensors (saved with safetensors, never pickled)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")

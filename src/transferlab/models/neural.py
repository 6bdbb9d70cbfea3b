"""Neural networks trained in torch with seeded, deterministic training: the paper's MLP (2×200 ReLU) and the
small MNIST CNN (Carlini & Wagner's: three 3×3 conv layers of 64 filters, then 32 units), for any image shape.

The MLP takes sparse data as it is: its first layer multiplies sparse rows (a minibatch of the CSR matrix as a
torch sparse tensor), so training on DREBIN's 545,334 binary features holds the CSR matrix, the weights and the
optimiser's state, never the densified data."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models.estimator import Estimator
from transferlab.models.inputs import array_tensor
from transferlab.models.limits import INT32_MAX, MAX_PARAMETERS, Layout, layout_size
from transferlab.models.params import SEED, Param
from transferlab.models.sparse import sparse_linear, sparse_tensor
from transferlab.models.subnormals import subnormals_flushed, without_subnormals


class TorchNet(Estimator):
    """Base of the torch-trained networks: mini-batch Adam on cross-entropy with L2 weight decay.

    Training is a pure function of (data, parameters, seed): initialisation and shuffling draw from a
    ``torch.Generator`` seeded with ``seed``. Scores are the network's logits; ``module_`` is the fitted module.
    """

    dtype = torch.float32
    PARAMS = {"weight_decay": Param("real", 0), "epochs": Param("int", 1),
              "batch_size_train": Param("int", 1, INT32_MAX), "lr": Param("real", 0, open_low=True), "seed": SEED}

    def __init__(self, weight_decay: float = 0.0, epochs: int = 30, batch_size_train: int = 64, lr: float = 1e-3,
                 seed: int = 0, device: str = "cpu", batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size_train = batch_size_train
        self.lr = lr
        self.seed = seed

    def build_module(self, n_features: int, n_classes: int) -> nn.Module:
        raise NotImplementedError

    def meta_module(self, n_features: int, n_classes: int) -> nn.Module:
        """The module's structure on torch's ``meta`` device: shapes without memory (the global RNG untouched)."""
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return self.build_module(n_features, n_classes)

    def state_layouts(self) -> list[Layout]:
        module = self.meta_module(self.n_features_in_, self.n_classes_)
        return [{name: (tuple(t.shape), "float") for name, t in module.state_dict().items()}]

    def _fit(self, X: np.ndarray | sp.csr_matrix, y: np.ndarray) -> None:
        size = layout_size(self.state_layouts()[0])
        if size > MAX_PARAMETERS:
            raise ConfigError(f"{type(self).__name__} on {X.shape[1]:,} features would have {size:,} weights, more "
                              f"than the {MAX_PARAMETERS:,} transferlab allows: use smaller layers or select features")
        device = self.torch_device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = self.build_module(X.shape[1], self.n_classes_)
        self.module_ = self.laid_out(module.to(device=device, dtype=self.dtype))
        # sparse rows stay sparse: each minibatch becomes a torch sparse tensor for the first layer
        Xt = None if sp.issparse(X) else array_tensor(X, self.dtype, device)
        if Xt is None:
            weight, bias, tail = self.affine_input()
        yt = torch.as_tensor(y, device=device)
        generator = torch.Generator().manual_seed(self.seed)
        # on sparse data the first layer is as wide as the data (545,334 inputs for DREBIN): Adam's fused kernel
        # (the same update, computed in one pass) avoids temporaries of the weights' size; dense data keeps the
        # default kernel, so that results on dense data stay bit for bit what they were
        fused = {"fused": True} if Xt is None else {}
        optimiser = torch.optim.Adam(self.module_.parameters(), lr=self.lr, weight_decay=self.weight_decay, **fused)
        loss_fn = nn.CrossEntropyLoss()
        self.module_.train()
        with subnormals_flushed():  # weight decay would leave subnormal weights: see models/subnormals.py
            for _ in range(self.epochs):
                order = torch.randperm(X.shape[0], generator=generator).to(device)
                for i in range(0, X.shape[0], self.batch_size_train):
                    batch = order[i:i + self.batch_size_train]
                    optimiser.zero_grad(set_to_none=True)
                    if Xt is not None:
                        out = self.module_(Xt[batch])
                    else:
                        batch_rows = sparse_tensor(X[batch.cpu().numpy()], self.dtype, device)
                        out = tail(sparse_linear(batch_rows, weight, bias))
                    loss_fn(out, yt[batch]).backward()
                    optimiser.step()
        self.module_.eval()
        for p in self.module_.parameters():
            p.requires_grad_(False)
            p.copy_(without_subnormals(p))  # torch's other threads do not flush: see models/subnormals.py

    def laid_out(self, module: nn.Module) -> nn.Module:
        """The module with its weights in the memory format its kernels run fastest in (as it is; the CNN's in
        channels-last)."""
        return module

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return self.module_(X)

    def to(self, device: str | None = None, dtype: torch.dtype | None = None) -> TorchNet:
        """Move the fitted network (e.g. to float64 for finite-difference checks, or to ``cuda``)."""
        if device is not None:
            self.device = device
        if dtype is not None:
            self.dtype = dtype
        if hasattr(self, "module_"):
            self.module_.to(device=self.torch_device, dtype=self.dtype)
        return self

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.module_.state_dict().items()}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        module = self.meta_module(self.n_features_in_, self.n_classes_)
        # the loaded tensors become the weights (no second copy), without subnormals (see models/subnormals.py)
        module.load_state_dict({k: without_subnormals(v) for k, v in state.items()}, assign=True)
        self.module_ = self.laid_out(module.to(device=self.torch_device, dtype=self.dtype)).eval()
        for p in self.module_.parameters():
            p.requires_grad_(False)


class MLP(TorchNet):
    """Multi-layer perceptron with ReLU hidden layers (the paper's NN: ``hidden=(200, 200)``).

    Sparse data (a scipy CSR matrix) is trained on, scored and differentiated without densifying it: the first
    layer x W₁ᵀ + b₁ takes sparse rows (:func:`~transferlab.models.sparse.sparse_linear`).
    """

    accepts_sparse = True
    PARAMS = {"hidden": Param("ints", 1, MAX_PARAMETERS, length=(0, 64))}

    def __init__(self, hidden: tuple[int, ...] = (200, 200), weight_decay: float = 0.0, epochs: int = 30,
                 batch_size_train: int = 64, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                 batch_size: int = 4096) -> None:
        super().__init__(weight_decay, epochs, batch_size_train, lr, seed, device, batch_size)
        self.hidden = hidden

    def build_module(self, n_features: int, n_classes: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = n_features
        for h in map(int, self.hidden):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)

    def affine_input(self) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], Any]]:
        first = self.module_[0]
        return first.weight, first.bias, self.module_[1:]


#: rows per convolution call of the CNN on the CPU: smaller activations (64×64×26×26 floats per layer) keep more of
#: them in the caches; with channels-last weights, blocks of 1,024 rows ran forward passes 1.4× and input
#: gradients 1.3× slower than blocks of 64 at one thread (measured once). Results do not depend on it: each row's
#: scores come from its own image only.
CPU_ROWS = 64


class CNN(TorchNet):
    """Small CNN for grey images given as flat rows: conv3×3(64)-ReLU, conv3×3(64)-ReLU, maxpool 2,
    conv3×3(64)-ReLU, maxpool 2, dense 32-ReLU, dense n_classes (after Carlini & Wagner's MNIST network).

    ``image_shape=(height, width)`` gives the shape of the rows' images (a Dataset's ``image_shape``, e.g. (62, 47)
    for LFW); with None, rows of a square number of features are square images (MNIST's 28×28). The dense layer's
    size follows from the shape; the smallest image is 12×12. As every parameter, it is checked by ``fit``.
    """

    PARAMS = {"channels": Param("ints", 1, 1 << 16, length=(3, 3)), "dense": Param("int", 1, 1 << 20),
              "image_shape": Param("ints", 1, 1 << 16, none=True, length=(2, 2))}
    #: scikit-learn's estimator checks fit on rows of 1 to 10 features, which are no images of at least 12×12
    #: pixels: every check that fits the CNN fails with the ConfigError saying so (the API checks that fit nothing
    #: pass; tests/test_estimators.py runs the fitting ones that matter, clone, labels, errors, on images)
    EXPECTED_FAILED_CHECKS = dict.fromkeys(
        ("check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
         "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
         "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
         "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimator_sparse_tag",
         "check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_estimators_pickle",
         "check_f_contiguous_array_estimator", "check_classifier_data_not_an_array", "check_supervised_y_2d",
         "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_fit2d_1feature",
         "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
         "check_fit2d_predict1d", "check_classifiers_train", "check_classifiers_classes"),
        "the CNN's rows are images of at least 12×12 pixels and the check fits it on rows of 1 to 10 features, "
        "which it refuses (ConfigError: not an image)")

    def __init__(self, channels: tuple[int, ...] = (64, 64, 64), dense: int = 32, weight_decay: float = 0.0,
                 epochs: int = 10, batch_size_train: int = 64, lr: float = 1e-3, seed: int = 0,
                 device: str = "cpu", batch_size: int = 1024, image_shape: tuple[int, int] | None = None) -> None:
        super().__init__(weight_decay, epochs, batch_size_train, lr, seed, device, batch_size)
        self.channels = channels
        self.dense = dense
        self.image_shape = image_shape

    @property
    def rows_per_call(self) -> int:
        """On the CPU at most :data:`CPU_ROWS` rows per call, whose activations stay in the cache; elsewhere
        ``batch_size``."""
        if self.torch_device.type == "cpu":
            return min(self.batch_size, CPU_ROWS)
        return self.batch_size

    def laid_out(self, module: nn.Module) -> nn.Module:
        """The module with its convolutions' weights in channels-last (NHWC) memory format: oneDNN's convolution,
        pooling and ReLU kernels then run on NHWC activations without reordering, faster on the CPU than
        NCHW (measured by ``bench/cnn.py --before``, together with the row blocks). The values are the same; only the
        order of the floating-point sums within a kernel differs. On the CPU only: the CUDA path is unmeasured."""
        return module.to(memory_format=torch.channels_last) if self.torch_device.type == "cpu" else module

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """The logits; outside autograd (scoring, an attack's candidates) at most :attr:`rows_per_call` rows per
        call, in ``torch.inference_mode``, into one preallocated result. Inside autograd the caller's rows as they
        are (:meth:`input_gradient_tensor` passes blocks of :attr:`rows_per_call` rows)."""
        rows = self.rows_per_call
        if (torch.is_grad_enabled() and X.requires_grad) or X.shape[0] <= rows:
            return self.module_(X)
        out = torch.empty((X.shape[0], self.n_classes_), dtype=self.dtype, device=X.device)
        with torch.inference_mode():
            for i in range(0, X.shape[0], rows):
                out[i:i + rows] = self.module_(X[i:i + rows])
        return out

    def input_shape(self, n_features: int) -> tuple[int, int]:
        """(height, width) of the images of ``n_features``-feature rows: ``image_shape``, or the square."""
        if self.image_shape is not None:
            h, w = (int(v) for v in self.image_shape)
            if h * w != n_features:
                raise ConfigError(f"image_shape={h}×{w} has {h * w} pixels but the rows have {n_features} features; "
                                  "set image_shape to the data's (its Dataset.image_shape)")
            return h, w
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ConfigError(f"the CNN cannot tell the image shape of rows of {n_features} features (not a square); "
                              "pass image_shape=(height, width), the Dataset's image_shape, e.g. (62, 47) for LFW")
        return side, side

    def build_module(self, n_features: int, n_classes: int) -> nn.Module:
        h, w = self.input_shape(n_features)
        after_h, after_w = (((side - 4) // 2 - 2) // 2 for side in (h, w))
        if after_h < 1 or after_w < 1:
            raise ConfigError(f"the CNN needs images of at least 12×12 pixels; got {h}×{w}")
        c1, c2, c3 = (int(c) for c in self.channels)
        return nn.Sequential(
            nn.Unflatten(1, (1, h, w)),
            nn.Conv2d(1, c1, 3), nn.ReLU(), nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c3 * after_h * after_w, self.dense), nn.ReLU(), nn.Linear(self.dense, n_classes),
        )

"""Fitted scikit-learn classifiers and pipelines re-expressed exactly in torch.

Each pipeline step becomes a :class:`Piece`, a small ``nn.Module`` that computes what the step's ``transform`` (or
the final classifier's ``decision_function``) computes, in the same order of operations, so the scores equal
scikit-learn's to float64 rounding and autograd gives the input gradient through the whole pipeline, down to the raw
features where the attacker's box lives. A piece keeps its arrays as buffers and everything else in
:meth:`Piece.config` (JSON), so a re-expressed model is saved as a spec plus safetensors, never pickled.

:func:`reexpress` builds the pieces of a fitted estimator; :func:`not_reexpressible` says, from the estimator's types
and parameters alone (fitted or not), why one cannot be re-expressed, or returns None.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from transferlab.models.kernel import rbf_kernel
from transferlab.models.linear import binary_to_two_columns, linear_parameters


class NotReexpressible(ValueError):
    """The estimator (or one of its pipeline steps) has no exact torch re-expression; the message says which."""


def _dense(a: Any) -> np.ndarray:
    return np.asarray(a.toarray() if hasattr(a, "toarray") else a, dtype=np.float64)


class Piece(nn.Module):
    """One step of a re-expressed pipeline. Its tensors are buffers (``state_dict``), its settings ``config()``;
    ``type(piece)(**piece.config(), **piece.state_dict())`` rebuilds it."""

    def __init__(self, **tensors: Any) -> None:
        super().__init__()
        for name, value in tensors.items():
            if value is None:
                self.register_buffer(name, None)
            else:
                value = torch.as_tensor(value)
                self.register_buffer(name, value.double() if value.is_floating_point() else value)

    def config(self) -> dict[str, Any]:
        return {}


# ---- transforms ----------------------------------------------------------------------------------------------------
class Affine(Piece):
    """y = ((x − sub) / div) · mul + add, clipped to [low, high]; every term optional, in the order scikit-learn's
    scalers apply them (StandardScaler, RobustScaler: sub, div; MaxAbsScaler: div; MinMaxScaler: mul, add)."""

    def __init__(self, sub: Any = None, div: Any = None, mul: Any = None, add: Any = None, low: Any = None,
                 high: Any = None) -> None:
        super().__init__(sub=sub, div=div, mul=mul, add=add, low=low, high=high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sub is not None:
            x = x - self.sub
        if self.div is not None:
            x = x / self.div
        if self.mul is not None:
            x = x * self.mul
        if self.add is not None:
            x = x + self.add
        if self.low is not None:
            x = torch.clamp(x, self.low, self.high)
        return x


class Project(Piece):
    """y = (x @ weight − offset) / div: PCA and IncrementalPCA (weight = components_ᵀ, offset = mean_ @
    components_ᵀ, div = √explained_variance_ when whitened, as scikit-learn computes it), TruncatedSVD and random
    projections."""

    def __init__(self, weight: Any, offset: Any = None, div: Any = None) -> None:
        super().__init__(weight=weight, offset=offset, div=div)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight
        if self.offset is not None:
            x = x - self.offset
        if self.div is not None:
            x = x / self.div
        return x


class Select(Piece):
    """The columns a fitted feature selector keeps (any ``SelectorMixin``: VarianceThreshold, SelectKBest, ...)."""

    def __init__(self, index: Any) -> None:
        super().__init__(index=torch.as_tensor(index, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)


class Normalize(Piece):
    """Each row divided by its l1, l2 or max norm (``Normalizer``); rows of norm 0 are left as they are."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        self.norm = norm

    def config(self) -> dict[str, Any]:
        return {"norm": self.norm}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "l2":
            sq = (x * x).sum(1, keepdim=True)
            norms = torch.sqrt(torch.where(sq == 0, torch.ones_like(sq), sq))  # no NaN gradient at a zero row
        else:
            norms = x.abs().sum(1, keepdim=True) if self.norm == "l1" else x.abs().amax(1, keepdim=True)
            norms = torch.where(norms == 0, torch.ones_like(norms), norms)
        return x / norms


def fold_affine(transforms: Sequence[Piece], weight: torch.Tensor, bias: torch.Tensor,
                n_features: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The affine map z = x Wᵀ + b that ``transforms`` (a pipeline's steps) followed by z = y weightᵀ + bias make
    of the raw rows x, when every step is affine (an unclipped scaler, a projection, a feature selector); None
    otherwise (a ``Normalizer``, a clipping scaler). Folded from the last step back: a step y = x A + c turns
    (W, b) into (W Aᵀ, b + W c), so the result is (out, n_features) and nothing of size n_features² is built."""
    widths = [n_features]
    for piece in transforms:
        if isinstance(piece, Project):
            widths.append(piece.weight.shape[1])
        elif isinstance(piece, Select):
            widths.append(piece.index.numel())
        elif isinstance(piece, Affine) and piece.low is None:
            widths.append(widths[-1])
        else:
            return None
    for piece, width in zip(reversed(list(transforms)), reversed(widths[:-1])):
        if isinstance(piece, Affine):  # y = x ⊙ s + o, applied as scikit-learn's scalers apply their terms
            ones = torch.ones(width, dtype=weight.dtype, device=weight.device)
            scale = ones / piece.div if piece.div is not None else ones
            scale = scale * piece.mul if piece.mul is not None else scale
            offset = -piece.sub * scale if piece.sub is not None else torch.zeros_like(ones)
            offset = offset + piece.add if piece.add is not None else offset
            weight, bias = weight * scale, bias + weight @ offset
        elif isinstance(piece, Project):  # y = x (P / div) − offset / div
            div = piece.div if piece.div is not None else torch.ones(piece.weight.shape[1], dtype=weight.dtype,
                                                                     device=weight.device)
            shift = piece.offset / div if piece.offset is not None else None
            weight, bias = weight @ (piece.weight / div).T, bias if shift is None else bias - weight @ shift
        else:  # Select: y = x[:, index]
            wider = torch.zeros(weight.shape[0], width, dtype=weight.dtype, device=weight.device)
            weight = wider.index_add_(1, piece.index, weight)
    return weight, bias


def _transform_piece(step: Any) -> Piece:
    from sklearn import decomposition, preprocessing, random_projection
    from sklearn.feature_selection import SelectorMixin

    if isinstance(step, preprocessing.StandardScaler):
        return Affine(sub=step.mean_ if step.with_mean else None, div=step.scale_ if step.with_std else None)
    if isinstance(step, preprocessing.RobustScaler):
        return Affine(sub=step.center_ if step.with_centering else None,
                      div=step.scale_ if step.with_scaling else None)
    if isinstance(step, preprocessing.MaxAbsScaler):
        clip = getattr(step, "clip", False)
        return Affine(div=step.scale_, low=-1.0 if clip else None, high=1.0 if clip else None)
    if isinstance(step, preprocessing.MinMaxScaler):
        low, high = step.feature_range
        return Affine(mul=step.scale_, add=step.min_, low=float(low) if step.clip else None,
                      high=float(high) if step.clip else None)
    if isinstance(step, preprocessing.Normalizer):
        return Normalize(step.norm)
    if isinstance(step, (decomposition.PCA, decomposition.IncrementalPCA)):
        components = _dense(step.components_)
        div = None
        if step.whiten:
            div = np.sqrt(np.asarray(step.explained_variance_, dtype=np.float64))
            div[div < np.finfo(div.dtype).eps] = np.finfo(div.dtype).eps
        return Project(components.T, np.asarray(step.mean_, dtype=np.float64) @ components.T, div)
    if isinstance(step, (decomposition.TruncatedSVD, random_projection.BaseRandomProjection)):
        return Project(_dense(step.components_).T)
    if isinstance(step, SelectorMixin):
        return Select(step.get_support(indices=True))
    raise NotReexpressible(f"{type(step).__name__} has no exact torch re-expression")


#: the transforms :func:`reexpress` knows (any SelectorMixin too); other steps make a pipeline a black box
TRANSFORMS = ("StandardScaler", "RobustScaler", "MaxAbsScaler", "MinMaxScaler", "Normalizer", "PCA",
              "IncrementalPCA", "TruncatedSVD", "GaussianRandomProjection", "SparseRandomProjection")


# ---- classifiers ---------------------------------------------------------------------------------------------------
class LinearHead(Piece):
    """f(x) = W x + b (W: one row per class, rows [0, w] for a binary model): every ``LinearClassifierMixin``
    (LogisticRegression binary or multinomial, RidgeClassifier, LinearSVC, SGDClassifier, Perceptron, ...) and a
    ``OneVsRestClassifier`` of them."""

    def __init__(self, weight: Any, bias: Any) -> None:
        super().__init__(weight=weight, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


KERNELS = ("linear", "rbf", "poly", "sigmoid")


class SVCHead(Piece):
    """libsvm's ``SVC``/``NuSVC`` with a linear, RBF, polynomial or sigmoid kernel (γ: the fitted ``_gamma``).

    Binary: scores [0, f] with f = Σ_i α_i K(x, s_i) + b, scikit-learn's ``decision_function``. ``predict`` follows
    libsvm: class 1 where f ≥ 0.

    More classes, one-vs-one: d_p(x) for every pair p = (i, j), i < j (libsvm's sign: d_p > 0 votes for i). The
    scores are scikit-learn's ``decision_function_shape="ovr"`` scores, votes_c + S_c / (3 (|S_c| + 1)), whatever
    the estimator's own ``decision_function_shape``; S_c, the sum of the pairwise decision values signed towards
    class c, is the smooth part: the votes are piecewise constant, so the input gradient is the gradient of
    S_c / (3 (|S_c| + 1)), an increasing function of S_c, and it is the gradient of exactly the scores the attack
    evaluates. Their argmax is the vote winner wherever the top vote is not tied; ``predict`` is libsvm's own rule
    everywhere (most votes, a tie to the lowest class index), so it equals scikit-learn's ``predict`` exactly, and
    with ``break_ties=True`` it is the argmax of the scores, as in scikit-learn.
    """

    def __init__(self, support_vectors: Any, dual_coef: Any, intercept: Any, n_support: list[int], kernel: str,
                 gamma: float, coef0: float, degree: int, break_ties: bool) -> None:
        super().__init__(support_vectors=support_vectors, dual_coef=dual_coef, intercept=intercept)
        self.n_support, self.kernel, self.gamma = [int(n) for n in n_support], kernel, float(gamma)
        self.coef0, self.degree, self.break_ties = float(coef0), int(degree), bool(break_ties)
        k = len(self.n_support)
        if kernel not in KERNELS or k < 2 or self.dual_coef.shape != (k - 1, self.support_vectors.shape[0]) \
                or sum(self.n_support) != self.support_vectors.shape[0] or self.intercept.shape != (k * (k - 1) // 2,):
            raise ValueError("SVC parameters of inconsistent shapes")
        self.n_classes = k
        # pair p = (i, j): its decision values are K(x, S) @ pair_coef[:, p] + intercept[p]
        starts = np.r_[0, np.cumsum(self.n_support)]
        dual = self.dual_coef.cpu().numpy()
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        coef = np.zeros((self.support_vectors.shape[0], len(pairs)))
        sign = np.zeros((len(pairs), k))
        for p, (i, j) in enumerate(pairs):
            si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
            coef[si, p], coef[sj, p] = dual[j - 1, si], dual[i, sj]
            sign[p, i], sign[p, j] = 1.0, -1.0
        self.register_buffer("pair_coef", torch.as_tensor(coef), persistent=False)
        self.register_buffer("pair_sign", torch.as_tensor(sign), persistent=False)
        self.register_buffer("first", torch.as_tensor(sign > 0, dtype=torch.float64), persistent=False)
        self.register_buffer("second", torch.as_tensor(sign < 0, dtype=torch.float64), persistent=False)
        self.register_buffer("sv_sq_norms", (self.support_vectors ** 2).sum(1), persistent=False)

    def config(self) -> dict[str, Any]:
        return {"n_support": self.n_support, "kernel": self.kernel, "gamma": self.gamma, "coef0": self.coef0,
                "degree": self.degree, "break_ties": self.break_ties}

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "rbf":
            return rbf_kernel(x, self.support_vectors, self.gamma, self.sv_sq_norms)
        dot = x @ self.support_vectors.T
        if self.kernel == "poly":
            return (self.gamma * dot + self.coef0) ** self.degree
        if self.kernel == "sigmoid":
            return torch.tanh(self.gamma * dot + self.coef0)
        return dot

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """(n, n_pairs) one-vs-one decision values with libsvm's sign (for two classes: −f)."""
        return self.gram(x) @ self.pair_coef + self.intercept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.pairwise(x)
        if self.n_classes == 2:
            return torch.cat([torch.zeros_like(dec), -dec], 1)
        # scikit-learn's _ovr_decision_function: d_p >= 0 votes for i
        votes = (dec >= 0).to(dec.dtype) @ self.first + (dec < 0).to(dec.dtype) @ self.second
        confidence = dec @ self.pair_sign
        return votes + confidence / (3 * (confidence.abs() + 1))

    def predict_index(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.pairwise(x)
        if self.n_classes > 2 and self.break_ties:
            return self.forward(x).argmax(1)
        # libsvm: d_p > 0 votes for i, otherwise for j; the first class with the most votes wins
        votes = (dec > 0).to(dec.dtype) @ self.first + (dec <= 0).to(dec.dtype) @ self.second
        return votes.argmax(1)


def _svc_head(svc: Any) -> SVCHead:
    if svc.kernel not in KERNELS:
        raise NotReexpressible(f"{type(svc).__name__}(kernel={svc.kernel!r}) has no torch re-expression; kernels "
                               f"{', '.join(KERNELS)} have one")
    classes = len(svc.classes_)
    dual, intercept = _dense(svc.dual_coef_), np.asarray(svc.intercept_, dtype=np.float64)
    if classes == 2:  # scikit-learn's public binary coefficients are libsvm's with the sign flipped
        dual, intercept = -dual, -intercept
    return SVCHead(_dense(svc.support_vectors_), dual, intercept, list(svc.n_support_), svc.kernel, svc._gamma,
                   svc.coef0, svc.degree, getattr(svc, "break_ties", False))


class MLPHead(Piece):
    """scikit-learn's ``MLPClassifier``: hidden layers with its activation (identity, logistic, tanh, relu), scores
    the output layer's logits: [0, z] for a binary model (its probability is sigmoid(z)), z for more classes (its
    probabilities are softmax(z))."""

    ACTIVATIONS = {"identity": lambda x: x, "logistic": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}

    def __init__(self, activation: str, n_layers: int, **layers: Any) -> None:
        super().__init__(**layers)
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.activation, self.n_layers = activation, int(n_layers)

    def config(self) -> dict[str, Any]:
        return {"activation": self.activation, "n_layers": self.n_layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_first_layer(x @ self.w0 + self.b0)

    def after_first_layer(self, z: torch.Tensor) -> torch.Tensor:
        """The scores from the first layer's pre-activations z = x W₀ + b₀."""
        act = self.ACTIVATIONS[self.activation]
        for i in range(1, self.n_layers):
            z = act(z) @ getattr(self, f"w{i}") + getattr(self, f"b{i}")
        return torch.cat([torch.zeros_like(z), z], 1) if z.shape[1] == 1 else z


def _mlp_head(mlp: Any) -> MLPHead:
    n_out = mlp.coefs_[-1].shape[1]
    if not ((mlp.out_activation_ == "logistic" and n_out == 1 and len(mlp.classes_) == 2)
            or (mlp.out_activation_ == "softmax" and n_out == len(mlp.classes_) > 2)):
        raise NotReexpressible(f"MLPClassifier with output {mlp.out_activation_!r} and {n_out} outputs is not a "
                               "single-label classifier (multilabel models are not supported)")
    layers = {f"w{i}": np.asarray(w, dtype=np.float64) for i, w in enumerate(mlp.coefs_)}
    layers.update({f"b{i}": np.asarray(b, dtype=np.float64) for i, b in enumerate(mlp.intercepts_)})
    return MLPHead(mlp.activation, len(mlp.coefs_), **layers)


def _linear_head(model: Any) -> LinearHead:
    from sklearn.multiclass import OneVsRestClassifier

    if isinstance(model, OneVsRestClassifier):
        rows = [linear_parameters(e) for e in model.estimators_]  # each binary: rows [0, w]
        weight, bias = binary_to_two_columns(np.vstack([w[1:] for w, _ in rows]), np.array([b[1] for _, b in rows]))
    else:
        weight, bias = linear_parameters(model)
    if weight.shape[0] != len(model.classes_):
        raise NotReexpressible(f"{type(model).__name__} has {weight.shape[0]} score rows for {len(model.classes_)} "
                               "classes (a multilabel model?)")
    return LinearHead(weight, bias)


def _is_linear(model: Any, binary: bool = False) -> bool:
    """A linear classifier, or a one-vs-rest of binary ones (there a linear-kernel SVC is one too)."""
    from sklearn.linear_model._base import LinearClassifierMixin
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC, NuSVC

    if isinstance(model, OneVsRestClassifier):
        return all(_is_linear(e, binary=True) for e in getattr(model, "estimators_", [model.estimator]))
    return isinstance(model, LinearClassifierMixin) or binary and isinstance(model, (SVC, NuSVC)) \
        and model.kernel == "linear"


def _head_piece(model: Any) -> Piece:
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, NuSVC

    if isinstance(model, (SVC, NuSVC)):
        return _svc_head(model)
    if isinstance(model, MLPClassifier):
        return _mlp_head(model)
    if _is_linear(model):
        return _linear_head(model)
    raise NotReexpressible(f"{type(model).__name__} has no exact torch re-expression (linear classifiers, SVC/NuSVC "
                           "and MLPClassifier have)")


PIECES: dict[str, type[Piece]] = {cls.__name__: cls for cls in (Affine, Project, Select, Normalize, LinearHead,
                                                                 SVCHead, MLPHead)}


# ---- pipelines -----------------------------------------------------------------------------------------------------
def steps(estimator: Any) -> list[tuple[str, Any]]:
    """(name, step) of a pipeline, nested pipelines flattened and ``"passthrough"``/None steps dropped; a bare
    estimator is one step named after its class."""
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline):
        return [(type(estimator).__name__.lower(), estimator)]
    out: list[tuple[str, Any]] = []
    for name, step in estimator.steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        out += [(f"{name}.{n}", s) for n, s in steps(step)] if isinstance(step, Pipeline) else [(name, step)]
    return out


def not_reexpressible(estimator: Any) -> str | None:
    """Why ``estimator`` (a classifier or a pipeline ending in one, fitted or not) cannot be re-expressed in torch,
    judged from its types and parameters; None when it can."""
    from sklearn.feature_selection import SelectorMixin
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, NuSVC

    parts = steps(estimator)
    if not parts:
        return "the pipeline has no steps"
    for name, step in parts[:-1]:
        if type(step).__name__ not in TRANSFORMS and not isinstance(step, SelectorMixin):
            return (f"step {name!r} ({type(step).__name__}) is not differentiable or has no torch re-expression "
                    f"(steps that have one: {', '.join(TRANSFORMS)}, feature selectors)")
    name, last = parts[-1]
    if isinstance(last, (SVC, NuSVC)):
        if last.kernel not in KERNELS:
            return (f"step {name!r} is {type(last).__name__}(kernel={last.kernel!r}); kernels {', '.join(KERNELS)} "
                    "have a re-expression")
        return None
    if isinstance(last, MLPClassifier) or _is_linear(last):
        return None
    return (f"step {name!r} ({type(last).__name__}) is not differentiable or has no torch re-expression (linear "
            "classifiers, SVC/NuSVC and MLPClassifier have)")


def reexpress(estimator: Any) -> tuple[list[Piece], Piece]:
    """The transform pieces and the classifier piece of a fitted classifier or pipeline ending in one; raises
    :class:`NotReexpressible` naming the step that has no re-expression."""
    reason = not_reexpressible(estimator)
    if reason is not None:
        raise NotReexpressible(reason)
    parts = steps(estimator)
    return [_transform_piece(step) for _, step in parts[:-1]], _head_piece(parts[-1][1])

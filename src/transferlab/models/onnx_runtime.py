"""A deployed model as an ONNX file, run by ONNX Runtime: a black-box target.

Any exporter works (skl2onnx for scikit-learn, onnxmltools for LightGBM/XGBoost, ``torch.onnx``, tf2onnx): the model
has one input of feature rows (flat, or of a fixed shape such as (1, 28, 28), filled row by row) and an output of
class scores or probabilities. Which output, and which kind, is chosen as follows (or given): the only float output,
else the one named like ``*prob*``; it is taken as probabilities when its name says so and its rows on a fixed probe
lie in [0, 1] and sum to 1 (skl2onnx's ``probabilities`` of an SVC holds decision values, so the probe decides),
otherwise as scores. Probabilities become log-probabilities as for
:class:`~transferlab.models.blackbox.BlackBoxClassifier`; a single score column s becomes [0, s]. Two columns whose
argmax contradicts the model's own label output on every probe row are swapped (skl2onnx writes a binary SVC's
decision values as [f, −f]).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier, NotDifferentiableError
from transferlab.models.inputs import check_X
from transferlab.models.limits import SPARSE_BLOCK_ELEMENTS
from transferlab.models.blackbox import PROBABILITY_FLOOR
from transferlab.models.onnx_torch import model_input, parse_model

OUTPUT_KINDS = ("scores", "probabilities")
_NUMPY_TYPES = {1: np.float32, 11: np.float64}


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("running .onnx models needs onnxruntime: pip install 'transferlab[onnx]'") from None
    return onnxruntime


class OnnxClassifier(Classifier):
    """An ONNX model scored by ONNX Runtime, a batch of rows at a time; ``source`` names it in messages.

    ``classes_`` are the class labels the file declares (skl2onnx and onnxmltools write them), else 0..K−1; labels
    given to ``loss`` and returned by ``predict`` (the argmax of the scores) are indices into them.
    """

    differentiable = False
    accepts_sparse = True

    def __init__(self, source: str, output: str | None = None, output_kind: str | None = None, device: str = "cpu",
                 batch_size: int = 4096) -> None:
        super().__init__(device, batch_size)
        if output_kind is not None and output_kind not in OUTPUT_KINDS:
            raise ConfigError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {output_kind!r}")
        self.source, self.output, self.output_kind = source, output, output_kind

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.source!r}, output={self.output_!r}, output_kind={self.output_kind_!r})"

    def load_bytes(self, data: bytes) -> OnnxClassifier:
        """Use the ONNX model in ``data``."""
        ort = _require_onnxruntime()
        proto = parse_model(data, self.source)
        self.input_name_, elem_type, self.input_shape_, self.fixed_batch_ = model_input(proto, self.source)
        if elem_type not in _NUMPY_TYPES:
            raise DataError(f"{self.source}: input {self.input_name_!r} is not a float or double tensor")
        self.input_dtype_ = _NUMPY_TYPES[elem_type]
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3
        try:
            self.session_ = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a model it cannot run
            raise DataError(f"{self.source}: ONNX Runtime cannot load the model ({type(exc).__name__}: {exc})") \
                from None
        self.output_ = self._pick_output()
        self.onnx_bytes_ = data
        self.n_features_in_ = math.prod(self.input_shape_)
        rng = np.random.default_rng(0)
        probe = np.r_[np.zeros((1, self.n_features_in_)), rng.normal(size=(7, self.n_features_in_))]
        raw = self._run(probe)
        self.output_kind_ = self.output_kind or ("probabilities" if "prob" in self.output_.lower() and raw.ndim == 2
                                                 and raw.shape[1] > 1 and np.all((raw >= 0) & (raw <= 1))
                                                 and np.allclose(raw.sum(1), 1, atol=1e-4) else "scores")
        width = raw.shape[1] if raw.ndim == 2 else 1
        self.n_classes_ = 2 if width == 1 else width
        if width == 1 and self.output_kind_ == "probabilities":
            raise DataError(f"{self.source}: output {self.output_!r} has one column; give output_kind='scores'")
        self.classes_ = self._class_labels(proto)
        self.swap_ = self._reversed_binary_scores(probe, raw)
        return self

    def _reversed_binary_scores(self, probe: np.ndarray, raw: np.ndarray) -> bool:
        """Whether two score columns are in the opposite order to the model's own label output (skl2onnx writes a
        binary SVC's decision values as [f, −f]): then the argmax disagrees with the label on every probe row."""
        labels = [o.name for o in self.session_.get_outputs() if o.name != self.output_
                  and o.type in ("tensor(int64)", "tensor(int32)", "tensor(string)")]
        if self.n_classes_ != 2 or raw.ndim != 2 or raw.shape[1] != 2 or len(labels) != 1:
            return False
        predicted = self._run(probe, labels[0], numeric=False).reshape(-1)
        index = np.array([np.flatnonzero(self.classes_.astype(str) == str(v))[:1].tolist() or [-1]
                          for v in predicted]).reshape(-1)
        return bool(index.size and (index >= 0).all() and (raw.argmax(1) != index).all())

    def _pick_output(self) -> str:
        outputs = self.session_.get_outputs()
        names = [o.name for o in outputs]
        if self.output is not None:
            if self.output not in names:
                raise ConfigError(f"{self.source} has no output {self.output!r}; its outputs are {', '.join(names)}")
            return self.output
        scores = [o.name for o in outputs
                  if o.type in ("tensor(float)", "tensor(double)") or o.type.startswith("seq(map")]
        if len(scores) > 1:
            scores = [n for n in scores if "prob" in n.lower()] or scores
        if len(scores) != 1:
            raise ConfigError(f"{self.source}: cannot tell which output holds the class scores ({', '.join(names)}); "
                              "give output=NAME")
        return scores[0]

    def _class_labels(self, proto: Any) -> np.ndarray:
        for node in proto.graph.node:
            for attr in node.attribute:
                if attr.name in ("classlabels_ints", "classlabels_int64s"):
                    labels = np.asarray(list(attr.ints))
                elif attr.name == "classlabels_strings":
                    labels = np.asarray([s.decode() for s in attr.strings])
                else:
                    continue
                if len(labels) == self.n_classes_:
                    return labels
        return np.arange(self.n_classes_)

    def _run(self, X: np.ndarray, output: str | None = None, numeric: bool = True) -> np.ndarray:
        """An output (the chosen one by default) for the rows X (float64, 2-D), in runs of the model's fixed batch
        size if it has one."""
        step = self.fixed_batch_ or max(1, X.shape[0])
        parts = []
        for i in range(0, X.shape[0], step):
            block = X[i:i + step]
            n = block.shape[0]
            if self.fixed_batch_ and n < step:
                block = np.vstack([block, np.zeros((step - n, block.shape[1]))])
            feed = block.astype(self.input_dtype_).reshape(block.shape[0], *self.input_shape_)
            try:
                out = self.session_.run([output or self.output_], {self.input_name_: feed})[0]
            except Exception as exc:  # onnxruntime's errors for an input the model refuses
                raise DataError(f"{self.source}: ONNX Runtime fails on a batch of shape {feed.shape} "
                                f"({type(exc).__name__}: {exc})") from None
            if isinstance(out, list):  # ZipMap: one {label: probability} per row
                out = np.array([[row[k] for k in sorted(row)] for row in out]) if out else np.zeros((0, 1))
            out = np.asarray(out, dtype=np.float64 if numeric else None)
            parts.append(out.reshape(out.shape[0], -1)[:n])
        return np.concatenate(parts) if parts else np.zeros((0, 1))

    def check_features(self, X: Any) -> None:
        n = getattr(self, "n_features_in_", None)
        if n is not None and (X.ndim != 2 or X.shape[1] != n):
            raise DataError(f"{self.source} takes rows of {n} features (input {self.input_name_!r} of shape "
                            f"{list(self.input_shape_)} per row) but X has shape {tuple(X.shape)}")

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores (n_samples, n_classes) computed by ONNX Runtime (log-probabilities for a probability output)."""
        self._check_fitted()
        X = check_X(X, allow_sparse=True)
        self.check_features(X)
        rows = max(1, min(self.batch_size, SPARSE_BLOCK_ELEMENTS // max(1, X.shape[1])))
        parts = []
        for i in range(0, X.shape[0], rows):
            block = X[i:i + rows]
            raw = self._run(block.toarray() if sp.issparse(block) else block)
            if raw.shape[0] != block.shape[0] or raw.shape[1] not in ({1} if self.n_classes_ == 2 else set()) | {
                    self.n_classes_} or not np.all(np.isfinite(raw)):
                raise DataError(f"{self.source}: output {self.output_!r} gave {raw.shape} values (finite: "
                                f"{bool(np.all(np.isfinite(raw)))}) for {block.shape[0]} rows of {self.n_classes_} "
                                "classes")
            if self.swap_:
                raw = raw[:, ::-1]
            if self.output_kind_ == "probabilities":
                if raw.min() < -1e-6 or raw.max() > 1 + 1e-6:
                    raise DataError(f"{self.source}: output {self.output_!r} holds values outside [0, 1]; load it "
                                    "with output_kind='scores'")
                raw = np.log(np.clip(raw, PROBABILITY_FLOOR, None))
                raw = raw[:, 1:] - raw[:, :1] if self.n_classes_ == 2 else raw
            parts.append(np.c_[np.zeros(raw.shape[0]), raw] if raw.shape[1] == 1 else raw)
        return np.vstack(parts) if parts else np.zeros((0, self.n_classes_))

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.decision_function(X.detach().cpu().numpy()), dtype=X.dtype, device=X.device)

    def fit(self, X: Any, y: Any) -> Classifier:
        raise ConfigError(f"{self.source} is a model file used as it is; it cannot be retrained (for poisoning, give "
                          "a recipe: an unfitted scikit-learn estimator, models.wrap(estimator, recipe=True))")

    def input_gradient_tensor(self, X: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> torch.Tensor:
        self._require_gradient()  # raises: a black box has no gradient, whichever base class version runs
        return super().input_gradient_tensor(X, y, loss)

    def _require_gradient(self) -> None:
        raise NotDifferentiableError(
            f"{self.source} is a black-box target run by ONNX Runtime: it has no input gradient; attack it through a "
            "differentiable surrogate (a registry model, a wrapped scikit-learn model, or a network whose ONNX "
            "operators transferlab converts to torch: load_external(path, differentiable=True))")

"""Saving and loading wrapped models without pickle: a folder with ``spec.json`` (``"format":
"transferlab-wrapped/1"``) and the model's data.

- :class:`~transferlab.models.wrap.SklearnModel` (a scikit-learn model re-expressed in torch): its pieces' settings in
  the spec and their tensors in ``weights.safetensors``, plus ``recipe.skops``, the unfitted estimator that ``fit``
  clones (written when skops is installed);
- :class:`~transferlab.models.blackbox.BlackBoxClassifier`: the fitted estimator in ``model.skops``, refused at save
  time (with what to do instead) when it holds types :func:`~transferlab.models.external.load_skops` would not load;
- :class:`~transferlab.models.onnx_runtime.OnnxClassifier`: its ``model.onnx`` and output choice;
- :class:`~transferlab.models.wrap.WrappedModule`: the module exported with ``torch.onnx.export`` to ``model.onnx``,
  checked to convert back to the same scores, which loads as a differentiable module (refused with a ConfigError
  saying how to save it otherwise when its operators do not convert).

``models.save`` / ``models.load`` dispatch here: :func:`handles` says which models, :func:`is_wrapped_path` which
paths (a folder of this format, or a ``.skops``/``.onnx`` file read by
:func:`~transferlab.models.external.load_external`).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier
from transferlab.models.blackbox import BlackBoxClassifier, EstimatorWrapper
from transferlab.models.external import (MAX_FILE_BYTES, REFUSED_SUFFIXES, TRUSTED_TYPES, load_external, load_onnx,
                                         load_skops, read_bounded)
from transferlab.models.sklearn_torch import PIECES
from transferlab.models.wrap import SklearnModel, WrappedModule

FORMAT = "transferlab-wrapped/1"
#: the largest spec.json read
MAX_SPEC_BYTES = 1 << 24


def handles(model: Any) -> bool:
    """Whether ``models.save`` should write ``model`` with :func:`save_wrapped`."""
    from transferlab.models.onnx_runtime import OnnxClassifier

    return isinstance(model, (EstimatorWrapper, OnnxClassifier, WrappedModule))


def is_wrapped_path(path: str | os.PathLike) -> bool:
    """Whether ``models.load(path)`` should read ``path`` with :func:`load_wrapped`: a model file (.skops, .onnx, or
    one of the refused kinds, which gets its explanation) or a folder written by :func:`save_wrapped`."""
    path = Path(path)
    if path.suffix.lower() in {".skops", ".onnx", *REFUSED_SUFFIXES} and not path.is_dir():
        return True
    spec = path / "spec.json"
    if not spec.is_file() or spec.stat().st_size > MAX_SPEC_BYTES:
        return False
    try:
        return json.loads(spec.read_text()).get("format") == FORMAT
    except (ValueError, AttributeError, OSError):
        return False


def _tensors_of(model: SklearnModel) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    pieces, tensors = [], {}
    for i, piece in enumerate([*model.transforms_, model.head_]):
        pieces.append({"type": type(piece).__name__, "config": piece.config()})
        for name, tensor in piece.state_dict().items():
            tensors[f"{i}.{name}"] = tensor.detach().cpu().contiguous()
    return pieces, tensors


def _skops_bytes(estimator: Any, what: str) -> bytes:
    from transferlab.models.external import _require_skops

    sio = _require_skops()
    data = sio.dumps(estimator)
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise ConfigError(f"{what} holds types transferlab does not load from .skops files ({', '.join(untrusted)}); "
                          "export it to ONNX instead (onnxmltools.convert_lightgbm(model, initial_types=..., "
                          "zipmap=False) for LightGBM, skl2onnx.to_onnx for scikit-learn) and use the .onnx file")
    return data


def _export_module(model: WrappedModule) -> bytes:
    """The module as ONNX bytes, checked to convert back to the same scores."""
    from transferlab.models.onnx_torch import OnnxModule, require_onnx, torch_from_onnx

    module = model.module_
    if isinstance(module, OnnxModule):
        return module.onnx_bytes
    require_onnx()
    how = ("; save its weights yourself (safetensors.torch.save_file(module.state_dict(), ...)) and wrap the rebuilt "
           "module in your session, or build it from operators torch.onnx exports and transferlab converts")
    example = torch.zeros(2, model.n_features_in_, dtype=model.dtype, device=model.torch_device)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        data = buffer.getvalue()
        back = torch_from_onnx(data, repr(model), dtype=model.dtype)
    except (ConfigError, DataError) as exc:
        raise ConfigError(f"cannot save {model!r} as ONNX: {exc}{how}") from None
    except Exception as exc:  # torch.onnx's own errors for a module it cannot export
        raise ConfigError(f"cannot save {model!r}: torch.onnx.export fails ({type(exc).__name__}: {exc}){how}") \
            from None
    probe = torch.as_tensor(np.random.default_rng(0).normal(size=(4, model.n_features_in_)), dtype=model.dtype)
    with torch.no_grad():
        expected, got = module(probe.to(model.torch_device)).cpu(), back.module_(probe)
    tolerance = 1e-4 if model.dtype == torch.float32 else 1e-9
    if expected.shape != got.shape or not torch.allclose(expected.double(), got.double(), rtol=tolerance,
                                                         atol=tolerance * max(1.0, float(expected.abs().max()))):
        raise ConfigError(f"cannot save {model!r}: its ONNX export does not give the module's scores{how}")
    return data


def save_wrapped(model: Classifier, folder: str | os.PathLike) -> Path:
    """Write a wrapped model to ``folder`` (created if needed)."""
    from safetensors.torch import save_file

    from transferlab.models.onnx_runtime import OnnxClassifier

    model._check_fitted()
    folder = Path(folder)
    spec: dict[str, Any] = {"format": FORMAT, "class": type(model).__name__, "n_classes": int(model.n_classes_),
                            "n_features": None if model.n_features_in_ is None else int(model.n_features_in_)}
    files: dict[str, bytes] = {}
    if isinstance(model, EstimatorWrapper):
        spec["classes"] = model.classes_.tolist()
        spec["description"] = model.name_
    if isinstance(model, SklearnModel):
        spec["pieces"], tensors = _tensors_of(model)
        spec["recipe"] = None
        if model.estimator is not None:
            from sklearn.base import clone

            try:
                files["recipe.skops"] = _skops_bytes(clone(model.estimator), model.name_)
                spec["recipe"] = "recipe.skops"
            except ConfigError:
                pass  # no skops, or a recipe it would not load: the saved model is used as it is, not retrained
    elif isinstance(model, BlackBoxClassifier):
        files["model.skops"] = _skops_bytes(model.estimator_, model.name_)
        spec.update(file="model.skops", reason=model.reason)
    elif isinstance(model, OnnxClassifier):
        files["model.onnx"] = model.onnx_bytes_
        spec.update(file="model.onnx", source=model.source, output=model.output_, output_kind=model.output_kind_)
    elif isinstance(model, WrappedModule):
        files["model.onnx"] = _export_module(model)
        spec.update(file="model.onnx", dtype=str(model.dtype).removeprefix("torch."))
    else:
        raise ConfigError(f"{type(model).__name__} is not a wrapped model; save it with transferlab.models.save")
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, SklearnModel):
        save_file(tensors, str(folder / "weights.safetensors"))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "spec.json").write_text(json.dumps(spec, indent=2))
    return folder


def _load_sklearn(folder: Path, spec: dict[str, Any], device: str) -> SklearnModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(folder / "weights.safetensors"))
    except FileNotFoundError:
        raise DataError(f"{folder}: weights.safetensors is missing") from None
    except (ValueError, OSError, SafetensorError) as exc:
        raise DataError(f"{folder}: weights.safetensors is corrupt ({exc})") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"{folder}: the saved weights {name!r} hold NaN or infinite values")
    recipe = load_skops(folder / spec["recipe"]) if spec.get("recipe") == "recipe.skops" else None
    pieces = []
    for i, piece in enumerate(spec["pieces"]):
        cls = PIECES[piece["type"]]
        tensors = {k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(i)}
        pieces.append(cls(**piece["config"], **tensors))
    model = SklearnModel(recipe, device=device)
    model.set_pieces(pieces[:-1], pieces[-1])
    model.classes_ = np.asarray(spec["classes"])
    model.n_classes_, model.n_features_in_ = int(spec["n_classes"]), int(spec["n_features"])
    model.description_ = str(spec["description"])
    # the probe row is bounded by the saved weights (a model's input width is at most their size, or 2^20)
    if not 1 <= model.n_features_in_ <= max(1 << 20, sum(t.numel() for t in state.values())):
        raise ValueError(f"n_features={model.n_features_in_} does not fit the saved weights")
    if len(model.classes_) != model.n_classes_ or model.decision_function(np.zeros((1, model.n_features_in_))).shape \
            != (1, model.n_classes_):
        raise ValueError("the pieces do not make scores of one column per class")
    return model


def load_wrapped(path: str | os.PathLike, device: str = "cpu") -> Classifier:
    """Read a model written by :func:`save_wrapped`, or a ``.skops``/``.onnx`` file (:func:`load_external`)."""
    path = Path(path)
    if not path.is_dir():
        return load_external(path, device=device)
    try:
        spec = json.loads(read_bounded(path / "spec.json", MAX_SPEC_BYTES))
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{path}/spec.json is not valid JSON; save the model again") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise DataError(f"{path}/spec.json is not a wrapped transferlab model spec")
    try:
        cls = spec["class"]
        if cls == "SklearnModel":
            return _load_sklearn(path, spec, device)
        if spec.get("file") not in ("model.skops", "model.onnx"):
            raise KeyError("file")
        if cls == "BlackBoxClassifier":
            model = BlackBoxClassifier(None, str(spec.get("reason", "")), device=device)
            model.estimator = None
            model.adopt(load_skops(path / "model.skops"))
            model.estimator = model.estimator_
            return model
        data = read_bounded(path / spec["file"], MAX_FILE_BYTES)
        if cls == "OnnxClassifier":
            return load_onnx(data, str(spec.get("source", path / spec["file"])), device, False, spec["output"],
                             spec["output_kind"])
        if cls == "WrappedModule":
            from transferlab.models.onnx_torch import torch_from_onnx

            dtype = {"float32": torch.float32, "float64": torch.float64}[spec["dtype"]]
            return torch_from_onnx(data, str(path / spec["file"]), dtype=dtype, device=device)
        raise KeyError("class")
    except (DataError, ConfigError):
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise DataError(f"{path}: the saved model does not fit its spec ({type(exc).__name__}: {exc}); save it again "
                        "with transferlab.models.save") from None

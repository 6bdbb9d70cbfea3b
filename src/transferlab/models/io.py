"""Save and load fitted models without pickle: ``spec.json`` (class, parameters, shapes) + ``weights.safetensors``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from transferlab.errors import DataError
from transferlab.models.base import Classifier
from transferlab.models.forest import RandomForest
from transferlab.models.kernel import KernelSVM
from transferlab.models.linear import LinearClassifier, LinearSVM, Logistic, Ridge
from transferlab.models.neural import CNN, MLP

_CLASSES = {cls.__name__: cls for cls in (LinearClassifier, LinearSVM, Logistic, Ridge, KernelSVM, MLP, CNN,
                                          RandomForest)}


def save(model: Classifier, folder: str | os.PathLike) -> Path:
    """Write a fitted model to ``folder`` (created if needed)."""
    model._check_fitted()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in model.get_params().items()}
    spec = {"format": "transferlab-model/1", "class": type(model).__name__, "params": params,
            "n_classes": model.n_classes_, "n_features": model.n_features_in_,
            "dtype": str(model.dtype).removeprefix("torch.")}
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_tensors().items()},
              str(folder / "weights.safetensors"))
    (folder / "spec.json").write_text(json.dumps(spec, indent=2))
    return folder


def load(folder: str | os.PathLike, device: str = "cpu") -> Classifier:
    """Read a model written by :func:`save`."""
    folder = Path(folder)
    try:
        spec = json.loads((folder / "spec.json").read_text())
        state = load_file(str(folder / "weights.safetensors"))
    except FileNotFoundError as exc:
        raise DataError(f"{folder} is not a saved transferlab model ({exc.filename} is missing)") from None
    except (ValueError, OSError, SafetensorError) as exc:
        raise DataError(f"{folder}: the saved model is corrupt ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("params"), dict):
        raise DataError(f"{folder}/spec.json is not a transferlab model spec")
    if spec.get("format") != "transferlab-model/1" or spec.get("class") not in _CLASSES:
        raise DataError(f"{folder}/spec.json is not a transferlab model spec")
    try:
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["params"].items()}
        params["device"] = device
        model = _CLASSES[spec["class"]](**params)
        model.n_classes_, model.n_features_in_ = int(spec["n_classes"]), int(spec["n_features"])
        if spec.get("dtype") in ("float32", "float64"):
            model.dtype = getattr(torch, spec["dtype"])
        for name, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise DataError(f"{folder}: the saved weights {name!r} hold NaN or infinite values")
        model.load_state_tensors(state)
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise DataError(f"{folder}: the saved model does not fit its spec ({type(exc).__name__}: {exc}); save it "
                        "again with transferlab.models.save") from None
    return model

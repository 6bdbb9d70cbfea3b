"""Save and load fitted models without pickle: ``spec.json`` (class, parameters, shapes) + ``weights.safetensors``.

A saved model is untrusted input, and :func:`load` checks it before it allocates anything it describes:

1. ``spec.json`` must be a regular file of at most :data:`MAX_SPEC_BYTES`, a JSON object with exactly the fields
   :func:`save` writes; ``n_features``, ``n_classes`` and every parameter must be what the model's class allows
   (:meth:`~transferlab.models.base.Classifier.check_params`), and the weights a model of that class with these
   numbers holds (its :meth:`~transferlab.models.base.Classifier.state_layouts`) at most
   :data:`~transferlab.models.limits.MAX_PARAMETERS`;
2. ``weights.safetensors`` must be a regular file of at most :data:`MAX_WEIGHTS_BYTES` whose header (read first,
   at most :data:`MAX_HEADER_BYTES`) names exactly the tensors of one of the class's layouts, with their dtypes
   and shapes, laid out back to back to the end of the file;
3. only then are the tensors read, and their values checked: finite, and whatever the class requires of them
   (:meth:`~transferlab.models.base.Classifier.check_state`: a forest's trees, sparse indices in range).

Every failure is a :class:`~transferlab.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

import json
import math
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import torch
from safetensors.torch import save_file

from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier
from transferlab.models.limits import MAX_CLASSES, MAX_FEATURES, MAX_PARAMETERS, Layout, layout_size
from transferlab.models.params import as_tuple, is_int
from transferlab.models.forest import RandomForest
from transferlab.models.kernel import KernelSVM
from transferlab.models.linear import LinearClassifier, LinearSVM, Logistic, Ridge
from transferlab.models.neural import CNN, MLP

_CLASSES = {cls.__name__: cls for cls in (LinearClassifier, LinearSVM, Logistic, Ridge, KernelSVM, MLP, CNN,
                                          RandomForest)}
FORMAT = "transferlab-model/1"
#: largest spec.json read
MAX_SPEC_BYTES = 1 << 20
#: largest safetensors header read
MAX_HEADER_BYTES = 1 << 20
#: largest weights.safetensors read: MAX_PARAMETERS float64 values and a header
MAX_WEIGHTS_BYTES = 8 * MAX_PARAMETERS + 8 + MAX_HEADER_BYTES
#: the safetensors dtypes transferlab saves, as (numpy dtype, kind)
_DTYPES = {"F64": (np.dtype("<f8"), "float"), "F32": (np.dtype("<f4"), "float"),
           "I64": (np.dtype("<i8"), "int"), "I32": (np.dtype("<i4"), "int")}
_SPEC_FIELDS = ("format", "class", "params", "n_classes", "n_features", "dtype")
#: fields a spec may have besides those: ``classes``, the labels of a model fitted on labels other than 0..C−1
#: (a spec without it, as every spec written before labels were kept, is a model of classes 0..C−1)
_OPTIONAL_FIELDS = ("classes",)
#: longest class label saved
MAX_LABEL_CHARS = 1000
_RESAVE = "save the model again with transferlab.models.save"


def save(model: Classifier, folder: str | os.PathLike) -> Path:
    """Write a fitted model to ``folder`` (created if needed); wrapped models (a user's scikit-learn, ONNX or torch
    model) are written by :func:`transferlab.models.wrapped_io.save_wrapped`."""
    from transferlab.models import wrapped_io

    if wrapped_io.handles(model):
        return wrapped_io.save_wrapped(model, folder)
    model._check_fitted()
    folder = Path(folder)
    values = model.get_params(deep=False)
    params = {k: _json_value(values[k]) for k in model.param_names()}  # the constructor's order
    spec = {"format": FORMAT, "class": type(model).__name__, "params": params,
            "n_classes": model.n_classes_, "n_features": model.n_features_in_,
            "dtype": str(model.dtype).removeprefix("torch.")}
    classes = _classes_field(model)
    if classes is not None:
        spec["classes"] = classes
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_tensors().items()},
              str(folder / "weights.safetensors"))
    (folder / "spec.json").write_text(json.dumps(spec, indent=2))
    return folder


def load(folder: str | os.PathLike, device: str = "cpu") -> Classifier:
    """Read a model written by :func:`save`, checking it as untrusted input (see the module's docstring); a
    wrapped model's folder or a ``.skops``/``.onnx`` file is read by
    :func:`transferlab.models.wrapped_io.load_wrapped`."""
    from transferlab.models import wrapped_io

    folder = Path(folder)
    if not folder.is_dir() and wrapped_io.is_wrapped_path(folder):  # a model file
        return wrapped_io.load_wrapped(folder, device)
    spec_path, weights_path = folder / "spec.json", folder / "weights.safetensors"
    spec = _read_json(spec_path, folder)
    if isinstance(spec, dict) and spec.get("format") == wrapped_io.FORMAT:
        return wrapped_io.load_wrapped(folder, device)
    model = _model_of_spec(spec, spec_path, device)
    with _open_regular(weights_path, MAX_WEIGHTS_BYTES, folder) as (handle, size):
        header, data_start = _read_header(handle, size, weights_path)
        _match_layout(model, header, weights_path)
        state = _read_tensors(handle, header, data_start, weights_path)
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"{weights_path}: the saved weights {name!r} hold NaN or infinite values; {_RESAVE}")
    try:
        model.check_state(state)
    except DataError as exc:
        raise DataError(f"{weights_path}: {exc}; the file is corrupt or was edited: {_RESAVE}") from None
    try:
        model.load_state_tensors(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise DataError(f"{folder}: the saved model does not fit its spec ({type(exc).__name__}: {exc}); "
                        f"{_RESAVE}") from None
    return model


# ---- files -------------------------------------------------------------------------------------------------------
@contextmanager
def _open_regular(path: Path, limit: int, folder: Path) -> Iterator[tuple[BinaryIO, int]]:
    """``path`` opened for reading, with its size, if it is a regular file of at most ``limit`` bytes: not a device,
    a pipe or a folder, which could be read forever or block (it is opened non-blocking, then checked)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DataError(f"{folder} is not a saved transferlab model ({path.name} is missing); give a folder "
                        "written by transferlab.models.save") from None
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror}); give a folder written by "
                        "transferlab.models.save") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path} is not a regular file (a device, pipe, socket or folder); a saved model is the "
                            "plain files transferlab.models.save writes")
        if info.st_size > limit:
            raise DataError(f"{path} is {info.st_size:,} bytes, more than the {limit:,} transferlab reads; it is not "
                            f"a transferlab model file: {_RESAVE}")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle, info.st_size


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {repeated!r} appears twice")
    return dict(pairs)


def _parse_json(raw: bytes, path: Path) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise DataError(f"{path} is corrupt: not valid JSON ({reason}); {_RESAVE}") from None


def _read_json(path: Path, folder: Path) -> Any:
    with _open_regular(path, MAX_SPEC_BYTES, folder) as (handle, _):
        raw = handle.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:  # it grew while read
        raise DataError(f"{path} is more than {MAX_SPEC_BYTES:,} bytes; it is not a transferlab model spec")
    return _parse_json(raw, path)


# ---- spec.json ---------------------------------------------------------------------------------------------------
def _model_of_spec(spec: Any, path: Path, device: str) -> Classifier:
    """The unfitted-but-shaped model a spec describes, every field and parameter checked; its declared weights
    counted from the class's layouts before anything is read."""
    bad = lambda what: DataError(f"{path}: {what}; {_RESAVE}")  # noqa: E731
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise DataError(f"{path} is not a transferlab model spec (no \"format\": \"{FORMAT}\"); {_RESAVE}")
    missing = [k for k in _SPEC_FIELDS if k not in spec]
    unknown = [k for k in spec if k not in _SPEC_FIELDS + _OPTIONAL_FIELDS]
    if missing or unknown:
        raise bad(f"the spec {'lacks ' + ', '.join(missing) if missing else 'has unknown fields ' + ', '.join(unknown)}"
                  f" (a spec has {', '.join(_SPEC_FIELDS)})")
    name = spec["class"]
    if not isinstance(name, str) or name not in _CLASSES:
        raise bad(f"class {str(name)[:60]!r} is not a saveable transferlab model; it is one of {', '.join(_CLASSES)}")
    cls = _CLASSES[name]
    for field, high in (("n_features", MAX_FEATURES), ("n_classes", MAX_CLASSES)):
        value, low = spec[field], 2 if field == "n_classes" else 1
        if not is_int(value) or not low <= value <= high:
            raise bad(f"{field} must be an integer from {low} to {high:,}, got {str(value)[:60]}")
    if spec["dtype"] not in ("float32", "float64"):
        raise bad(f"dtype must be \"float32\" or \"float64\", got {str(spec['dtype'])[:60]!r}")
    params = spec["params"]
    if not isinstance(params, dict):
        raise bad("params must be a mapping of the model's parameters")
    allowed = cls.param_names()
    for key in params:
        if key not in allowed:
            raise DataError(f"{path}: the saved model does not fit its spec: {name} has no parameter "
                            f"{str(key)[:60]!r} (its parameters are {', '.join(allowed)}); {_RESAVE}")
    params = {k: as_tuple(v) for k, v in params.items()}
    params["device"] = device
    try:
        model = cls(**params)
        model.check_params()
    except (ConfigError, TypeError, ValueError) as exc:
        raise bad(str(exc)) from None
    model.n_classes_, model.n_features_in_ = spec["n_classes"], spec["n_features"]
    model.classes_ = _read_classes(spec.get("classes"), spec["n_classes"], bad)
    model.dtype = getattr(torch, spec["dtype"])
    try:
        layouts = model.state_layouts()
    except ConfigError as exc:
        raise bad(str(exc)) from None
    size = min(layout_size(layout) for layout in layouts)
    if size > MAX_PARAMETERS:
        raise bad(f"a {name} of {model.n_features_in_:,} features and {model.n_classes_} classes with these "
                  f"parameters holds {size:,} weights, more than the {MAX_PARAMETERS:,} transferlab loads")
    return model


def _json_value(value: Any) -> Any:
    """A parameter as JSON: tuples as lists, numpy scalars as Python numbers."""
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _classes_field(model: Classifier) -> list[Any] | None:
    """The ``classes`` field of a model's spec: its labels when they are not 0..C−1 (then None: no field)."""
    classes = np.asarray(getattr(model, "classes_", np.arange(model.n_classes_)))
    if classes.dtype.kind in "iu" and np.array_equal(classes, np.arange(model.n_classes_)):
        return None
    labels = classes.tolist()
    kinds = {_label_kind(v) for v in labels}
    if len(kinds) != 1 or None in kinds:
        raise ConfigError(f"{type(model).__name__} has classes_ {str(labels)[:60]}; a saved model's labels must be "
                          "all integers, all numbers or all strings")
    if kinds == {"str"} and max(map(len, labels)) > MAX_LABEL_CHARS:
        raise ConfigError(f"{type(model).__name__} has a class label longer than {MAX_LABEL_CHARS} characters; "
                          "use shorter labels to save it")
    return labels


def _label_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else None
    return "str" if isinstance(value, str) else None


def _read_classes(labels: Any, n_classes: int, bad: Any) -> np.ndarray:
    """The labels of a spec's ``classes`` field (0..n_classes−1 without one): a list of n_classes distinct
    integers, finite numbers, booleans or strings, sorted (as ``fit`` keeps them)."""
    if labels is None:
        return np.arange(n_classes)
    if not isinstance(labels, list) or len(labels) != n_classes:
        raise bad(f"classes must be a list of the model's {n_classes} class labels")
    kinds = {_label_kind(v) for v in labels}
    if len(kinds) != 1 or None in kinds or (kinds == {"str"} and max(map(len, labels)) > MAX_LABEL_CHARS):
        raise bad(f"classes must be {n_classes} labels, all integers, all finite numbers, all booleans or all "
                  f"strings of at most {MAX_LABEL_CHARS} characters")
    classes = np.asarray(labels)
    if classes.ndim != 1 or not np.all(classes[1:] > classes[:-1]):
        raise bad("classes must be distinct labels in increasing order, as fit keeps them")
    return classes


# ---- weights.safetensors -----------------------------------------------------------------------------------------
def _read_header(handle: BinaryIO, size: int, path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]],
                                                                     int]:
    """The safetensors header: {name: (dtype, shape, begin, end)} with the data's offset in the file, after
    checking that the tensors' byte ranges follow each other exactly to the end of the file."""
    corrupt = lambda what: DataError(f"{path} is corrupt: {what}; {_RESAVE}")  # noqa: E731
    if size < 8:
        raise corrupt(f"{size} bytes, shorter than a safetensors header")
    length = int.from_bytes(handle.read(8), "little")
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise corrupt(f"its header claims {length:,} bytes, the file has {size - 8:,} after the length and a header "
                      f"is at most {MAX_HEADER_BYTES:,}")
    header = _parse_json(handle.read(length), path)
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise corrupt("its __metadata__ is not a mapping of strings")
    entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise corrupt(f"tensor {name[:60]!r} is not described by dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPES:
            raise corrupt(f"tensor {name[:60]!r} has dtype {str(dtype)[:20]!r}; transferlab saves "
                          f"{', '.join(_DTYPES)}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(is_int(d) and d >= 0 for d in shape):
            raise corrupt(f"tensor {name[:60]!r} has shape {str(shape)[:60]}, not a list of sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise corrupt(f"tensor {name[:60]!r} has data_offsets {str(offsets)[:60]}, not [begin, end]")
        if offsets[1] - offsets[0] != math.prod(shape) * _DTYPES[dtype][0].itemsize:
            raise corrupt(f"tensor {name[:60]!r} of shape {tuple(shape)} and dtype {dtype} does not take the "
                          f"{offsets[1] - offsets[0]:,} bytes its offsets give")
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    end = 0
    for name, (_, _, begin, stop) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin != end:
            raise corrupt(f"tensor {name[:60]!r} starts at byte {begin:,} of the data, not where the previous "
                          f"ends ({end:,})")
        end = stop
    if end != size - 8 - length:
        raise corrupt(f"its tensors take {end:,} bytes, the file holds {size - 8 - length:,} after the header")
    return entries, 8 + length


def _show(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _match_layout(model: Classifier, header: dict[str, tuple[str, tuple[int, ...], int, int]], path: Path) -> None:
    """The header's tensors must be exactly one layout of the model's class: names, kinds of dtype and shapes
    (a named size equal wherever it appears), and hold at most MAX_PARAMETERS values."""
    cls = type(model).__name__
    what = f"a {cls} of {model.n_features_in_:,} features and {model.n_classes_} classes with the spec's parameters"
    fix = f"the spec and the weights do not belong together: {_RESAVE}"
    layouts = model.state_layouts()
    layout: Layout | None = next((lay for lay in layouts if set(lay) == set(header)), None)
    if layout is None:
        expected = " or ".join(", ".join(lay) for lay in layouts)
        raise DataError(f"{path} holds the tensors {', '.join(header) or 'none'}; {what} holds {expected}; {fix}")
    sizes: dict[str, int] = {}
    for name, (shape, kind) in layout.items():
        dtype, actual = header[name][0], header[name][1]
        if _DTYPES[dtype][1] != kind:
            raise DataError(f"{path}: tensor {name!r} holds {dtype} values; {what} holds {kind} values there; {fix}")
        ok = len(actual) == len(shape)
        for want, got in zip(shape, actual):
            if isinstance(want, str):
                ok = ok and sizes.setdefault(want, got) == got
            else:
                ok = ok and want == got
        if not ok:
            raise DataError(f"{path}: tensor {name!r} has shape {_show(actual)}; {what} has {_show(shape)}"
                            + (f" with {', '.join(f'{k}={v}' for k, v in sizes.items())}" if sizes else "")
                            + f"; {fix}")
    total = layout_size(layout, sizes)
    if total > MAX_PARAMETERS:
        raise DataError(f"{path} holds {total:,} values, more than the {MAX_PARAMETERS:,} transferlab loads; {fix}")


def _read_tensors(handle: BinaryIO, header: dict[str, tuple[str, tuple[int, ...], int, int]], data_start: int,
                  path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checked header, read from the open file (no second opening: what was checked is read)."""
    state = {}
    for name, (dtype, shape, begin, end) in sorted(header.items(), key=lambda item: item[1][2]):
        handle.seek(data_start + begin)
        buffer = bytearray(end - begin)
        if handle.readinto(buffer) != len(buffer):
            raise DataError(f"{path} is corrupt: it ended inside tensor {name!r} (was it truncated?); {_RESAVE}")
        array = np.frombuffer(buffer, dtype=_DTYPES[dtype][0]).reshape(shape)
        state[name] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))
    return state

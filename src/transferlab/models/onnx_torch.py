"""A user's network from an ONNX file as a differentiable torch module: the safe route for a torch model.

Why ONNX and not ``torch.export``: ``torch.export.load`` of a ``.pt2`` archive calls ``torch.load(...,
weights_only=False)`` and ``pickle.loads`` on every payload the archive marks as pickled (torch 2.13,
``torch/export/pt2_archive/_package.py``; its docstring: "uses pickle under the hood ... Never load data from an
untrusted source"), so a crafted file runs code on load. An ONNX file is a protobuf: data
only. Here each node of its graph is mapped to a torch function from a fixed table of the operators of
feed-forward networks (:data:`OPERATORS`: Gemm, MatMul, Conv, pooling, batch norm, the usual activations, and the
shape operators ``torch.onnx.export`` emits); a graph with any other operator is refused with the list, and can still
be a black-box target run by ONNX Runtime (:mod:`transferlab.models.onnx_runtime`). Autograd then gives the input
gradient of the converted network. Its one output is taken as the class scores: export the logits (a network ending
in a softmax would give probabilities as scores). Tensors an operator would create are bounded
(:data:`MAX_TENSOR_ELEMENTS`) before they are made, so a small file cannot make us allocate without limit.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.errors import ConfigError, DataError

#: the most elements one intermediate tensor may hold (2 GiB of float64); lower batch_size for bigger networks
MAX_TENSOR_ELEMENTS = 1 << 28


def require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ConfigError("reading or writing .onnx files needs the onnx package: pip install 'transferlab[onnx]'") \
            from None
    return onnx


def parse_model(data: bytes, source: str) -> Any:
    """The ``onnx.ModelProto`` in ``data`` (the bytes of ``source``), checked; DataError if corrupt or truncated."""
    onnx = require_onnx()
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError: the file is not a valid model
        raise DataError(f"{source} is not a valid ONNX model, corrupt or truncated ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); export it again") from None
    if not proto.graph.node:
        raise DataError(f"{source} is not a valid ONNX model (its graph has no nodes); export it again")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise DataError(f"{source} keeps its weights in external data files; save the model as one .onnx file")
    return proto


def model_input(proto: Any, source: str) -> tuple[str, int, tuple[int, ...], int | None]:
    """(name, element type, per-row shape, fixed batch size or None) of the model's one input."""
    initialised = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initialised]
    if len(inputs) != 1:
        raise DataError(f"{source} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); transferlab "
                        "scores models with one input of feature rows")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
        raise DataError(f"{source}: input {inputs[0].name!r} has shape {dims}; transferlab needs (batch, features...) "
                        "with every dimension but the batch fixed; export it with a fixed feature shape")
    return inputs[0].name, tensor.elem_type, tuple(dims[1:]), dims[0]


def _check_size(numel: int, op: str, source: str) -> None:
    if numel > MAX_TENSOR_ELEMENTS:
        raise DataError(f"{source}: operator {op} would make a tensor of {numel} elements (at most "
                        f"{MAX_TENSOR_ELEMENTS}); lower batch_size, or the file is not a plain network")


def _conv_shape(x: torch.Tensor, w: torch.Tensor, a: dict[str, Any]) -> list[int]:
    nd = x.dim() - 2
    k = [int(v) for v in w.shape[2:]] if w is not None else list(a["kernel_shape"])
    pads, strides = list(a.get("pads", [0] * 2 * nd)), list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    out = [x.shape[0], w.shape[0] if w is not None else x.shape[1]]
    for i in range(nd):
        extent = dil[i] * (k[i] - 1) + 1
        if pads[i] > extent or pads[i + nd] > extent or strides[i] < 1 or dil[i] < 1:
            raise ValueError("pads larger than the kernel, or a stride/dilation below 1")
        out.append((x.shape[2 + i] + pads[i] + pads[i + nd] - extent) // strides[i] + 1)
    return out


def _padded(x: torch.Tensor, pads: list[int], value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """x with asymmetric ONNX pads applied (then symmetric padding 0), or x and the symmetric padding."""
    nd = len(pads) // 2
    if pads[:nd] == pads[nd:]:
        return x, pads[:nd]
    torch_pads = [p for i in reversed(range(nd)) for p in (pads[i], pads[i + nd])]
    return F.pad(x, torch_pads, value=value), [0] * nd


def _conv(args: list, a: dict[str, Any]) -> torch.Tensor:
    x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
    nd = x.dim() - 2
    x, padding = _padded(x, list(a.get("pads", [0] * 2 * nd)))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, stride=tuple(a.get("strides", [1] * nd)), padding=tuple(padding),
              dilation=tuple(a.get("dilations", [1] * nd)), groups=int(a.get("group", 1)))


def _pool(kind: str) -> Callable[[list, dict[str, Any]], torch.Tensor]:
    def run(args: list, a: dict[str, Any]) -> torch.Tensor:
        x = args[0]
        nd = x.dim() - 2
        k = tuple(a["kernel_shape"])
        pads = list(a.get("pads", [0] * 2 * nd))
        strides = tuple(a.get("strides", [1] * nd))
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            x, padding = _padded(x, pads, value=float("-inf"))
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
            return fn(x, k, strides, tuple(padding), tuple(a.get("dilations", [1] * nd)), ceil_mode=ceil)
        if pads[:nd] != pads[nd:]:
            raise ValueError("asymmetric pads in AveragePool")
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        return fn(x, k, strides, tuple(pads[:nd]), ceil_mode=ceil,
                  count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


def _softmax(fn: Callable) -> Callable[[list, dict[str, Any], int], torch.Tensor]:
    def run(args: list, a: dict[str, Any], opset: int) -> torch.Tensor:
        x = args[0]
        axis = int(a.get("axis", -1 if opset >= 13 else 1)) % x.dim()
        if opset >= 13:
            return fn(x, dim=axis)
        flat = x.reshape(math.prod(x.shape[:axis]), -1)  # before opset 13: softmax of the rows flattened at axis
        return fn(flat, dim=1).reshape(x.shape)
    return run


def _reshape(args: list, a: dict[str, Any]) -> torch.Tensor:
    x, shape = args[0], [int(v) for v in args[1].tolist()]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def _gather(args: list, a: dict[str, Any]) -> torch.Tensor:
    x, idx = args
    axis = int(a.get("axis", 0)) % x.dim()
    flat = idx.reshape(-1).long() % x.shape[axis]
    return x.index_select(axis, flat).reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])


def _axes(args: list, a: dict[str, Any]) -> list[int] | None:
    axes = args[1] if len(args) > 1 and args[1] is not None else a.get("axes")
    return None if axes is None else [int(v) for v in (axes.tolist() if isinstance(axes, torch.Tensor) else axes)]


def _unsqueeze(args: list, a: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    rank = x.dim() + len(_axes(args, a))
    for axis in sorted(v % rank for v in _axes(args, a)):
        x = x.unsqueeze(axis)
    return x


def _squeeze(args: list, a: dict[str, Any]) -> torch.Tensor:
    axes = _axes(args, a)
    return args[0].squeeze() if axes is None else args[0].squeeze(tuple(v % args[0].dim() for v in axes))


def _clip(args: list, a: dict[str, Any]) -> torch.Tensor:
    low = args[1] if len(args) > 1 and args[1] is not None else a.get("min")
    high = args[2] if len(args) > 2 and args[2] is not None else a.get("max")
    return torch.clamp(args[0], low, high)


def _flatten(args: list, a: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    axis = int(a.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _slice(args: list, a: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    values = [None if v is None else v.tolist() for v in args[1:5]] + [None] * (5 - len(args))
    starts, ends, axes, steps = (values[:4] if len(args) > 1 else
                                 [a.get("starts"), a.get("ends"), a.get("axes"), None])
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step < 1:
            raise ValueError("Slice with a step below 1")
        index[axis % x.dim()] = slice(start, end, step)
    return x[tuple(index)]


def _gemm(args: list, a: dict[str, Any]) -> torch.Tensor:
    x, w = args[0], args[1]
    x, w = (x.T if a.get("transA", 0) else x), (w.T if a.get("transB", 0) else w)
    y = float(a.get("alpha", 1.0)) * (x @ w)
    return y + float(a.get("beta", 1.0)) * args[2] if len(args) > 2 and args[2] is not None else y


def _div(args: list, a: dict[str, Any]) -> torch.Tensor:
    x, y = args
    return torch.div(x, y, rounding_mode="trunc") if not x.is_floating_point() and not y.is_floating_point() else x / y


def _batch_norm(args: list, a: dict[str, Any]) -> torch.Tensor:
    if a.get("training_mode", 0):
        raise ValueError("BatchNormalization in training mode")
    x, scale, bias, mean, var = args[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(a.get("epsilon", 1e-5)))


def _layer_norm(args: list, a: dict[str, Any]) -> torch.Tensor:
    x = args[0]
    axis = int(a.get("axis", -1)) % x.dim()
    return F.layer_norm(x, x.shape[axis:], args[1], args[2] if len(args) > 2 else None, float(a.get("epsilon", 1e-5)))


_ONNX_INT = {6: torch.int32, 7: torch.int64, 9: torch.bool}
_ONNX_FLOAT = {1, 10, 11, 16}


def _simple(fn: Callable) -> Callable[[list, dict[str, Any]], torch.Tensor]:
    return lambda args, a: fn(args[0])


OPERATORS: dict[str, Callable] = {
    "Gemm": _gemm, "MatMul": lambda args, a: args[0] @ args[1], "Conv": _conv,
    "Add": lambda args, a: args[0] + args[1], "Sub": lambda args, a: args[0] - args[1],
    "Mul": lambda args, a: args[0] * args[1], "Div": _div, "Pow": lambda args, a: args[0] ** args[1],
    "Neg": _simple(torch.neg), "Abs": _simple(torch.abs), "Sqrt": _simple(torch.sqrt), "Erf": _simple(torch.erf),
    "Relu": _simple(torch.relu), "Sigmoid": _simple(torch.sigmoid), "Tanh": _simple(torch.tanh),
    "Softplus": _simple(F.softplus), "Identity": _simple(lambda x: x), "Dropout": _simple(lambda x: x),
    "LeakyRelu": lambda args, a: F.leaky_relu(args[0], float(a.get("alpha", 0.01))),
    "Elu": lambda args, a: F.elu(args[0], float(a.get("alpha", 1.0))),
    "Gelu": lambda args, a: F.gelu(args[0], approximate=a.get("approximate", b"none").decode()),
    "Clip": _clip, "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "Flatten": _flatten,
    "Reshape": _reshape, "Transpose": lambda args, a: args[0].permute(
        *(a["perm"] if "perm" in a else reversed(range(args[0].dim())))),
    "Shape": lambda args, a: torch.tensor(args[0].shape[int(a.get("start", 0)):a.get("end")], dtype=torch.int64,
                                          device=args[0].device),
    "Slice": _slice, "Mod": lambda args, a: (torch.fmod if a.get("fmod", 0) else torch.remainder)(*args),
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Concat": lambda args, a: torch.cat(args, int(a["axis"])),
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda args, a: args[0].mean(tuple(range(2, args[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda args, a: args[0].amax(tuple(range(2, args[0].dim())), keepdim=True),
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm,
    "Cast": None, "Constant": None,  # handled in OnnxModule (they need the compute dtype / become buffers)
}
_WITH_OPSET = {"Softmax", "LogSoftmax"}


def _output_numel(op: str, args: list, a: dict[str, Any]) -> int | None:
    """Elements of the output of the operators that can make a tensor larger than their inputs (checked first)."""
    shapes = [tuple(t.shape) for t in args if isinstance(t, torch.Tensor)]
    if op in ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "Clip"):
        return math.prod(torch.broadcast_shapes(*shapes))
    if op == "MatMul":
        (sa, sb) = shapes
        if len(sa) < 2 or len(sb) < 2:
            return max(math.prod(sa), math.prod(sb))
        return math.prod(torch.broadcast_shapes(sa[:-2], sb[:-2])) * sa[-2] * sb[-1]
    if op == "Gemm":
        return (shapes[0][1] if a.get("transA", 0) else shapes[0][0]) * \
            (shapes[1][0] if a.get("transB", 0) else shapes[1][1])
    if op == "Concat":
        return sum(math.prod(s) for s in shapes)
    if op == "Gather":
        return math.prod(shapes[1]) * math.prod(shapes[0]) // max(1, shapes[0][int(a.get("axis", 0))])
    if op in ("Conv", "MaxPool", "AveragePool"):
        return math.prod(_conv_shape(args[0], args[1] if op == "Conv" else None, a))
    return None


class OnnxModule(nn.Module):
    """The graph of an ONNX model as a torch module: flat rows of ``n_features`` in, (n, n_classes) logits out
    (a single output column z becomes the two columns [0, z])."""

    def __init__(self, proto: Any, source: str) -> None:
        super().__init__()
        onnx = require_onnx()
        from onnx import numpy_helper

        graph = proto.graph
        self.source = source
        self.opset = max([o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] or [0])
        unsupported = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                              for n in graph.node if n.domain not in ("", "ai.onnx") or n.op_type not in OPERATORS})
        if unsupported:
            raise ConfigError(f"{source}: operators {', '.join(unsupported)} have no torch conversion in transferlab "
                              f"(it converts {', '.join(sorted(OPERATORS))}); use the file as a black-box target "
                              "(load_external(path, differentiable=False)), run by ONNX Runtime")
        self.input_name, _, self.input_shape, _ = model_input(proto, source)
        if len(graph.output) != 1:
            raise DataError(f"{source} has {len(graph.output)} outputs; a network converted to torch must have one, "
                            "its class logits")
        self.output_name = graph.output[0].name
        self.n_features = math.prod(self.input_shape)
        self.names: dict[str, str] = {}

        def constant(name: str, array: np.ndarray) -> None:
            key = f"c{len(self.names)}"
            self.register_buffer(key, torch.as_tensor(np.array(array)))  # floats take the module's dtype in .to()
            self.names[name] = key

        for t in graph.initializer:
            constant(t.name, numpy_helper.to_array(t))
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                value = attrs.get("value")
                if value is not None:
                    constant(node.output[0], numpy_helper.to_array(value))
                elif "value_float" in attrs or "value_floats" in attrs:
                    constant(node.output[0], np.asarray(attrs.get("value_float", attrs.get("value_floats")),
                                                        dtype=np.float32))
                elif "value_int" in attrs or "value_ints" in attrs:
                    constant(node.output[0], np.asarray(attrs.get("value_int", attrs.get("value_ints")),
                                                        dtype=np.int64))
                else:
                    raise ConfigError(f"{source}: a Constant node of a kind transferlab does not convert")
                continue
            if node.op_type in ("Dropout", "MaxPool", "BatchNormalization") and \
                    any(name for name in node.output[1:]):
                raise ConfigError(f"{source}: {node.op_type} with a second output (training mode) is not converted")
            if node.op_type == "Cast" and attrs.get("to") not in _ONNX_FLOAT | set(_ONNX_INT):
                raise ConfigError(f"{source}: Cast to ONNX type {attrs.get('to')} is not converted")
            self.nodes.append((node.op_type, list(node.input), list(node.output[:1]), attrs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        env: dict[str, Any] = {name: getattr(self, key) for name, key in self.names.items()}
        env[self.input_name] = x.reshape(x.shape[0], *self.input_shape)
        for op, inputs, outputs, attrs in self.nodes:
            args = [env[name] if name else None for name in inputs]
            if op == "Cast":
                env[outputs[0]] = args[0].to(dtype if attrs["to"] in _ONNX_FLOAT else _ONNX_INT[attrs["to"]])
                continue
            args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != dtype
                    else a for a in args]
            try:
                numel = _output_numel(op, args, attrs)
                if numel is not None:
                    _check_size(numel, op, self.source)
                fn = OPERATORS[op]
                env[outputs[0]] = fn(args, attrs, self.opset) if op in _WITH_OPSET else fn(args, attrs)
            except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
                raise DataError(f"{self.source}: operator {op} fails on inputs of shapes "
                                f"{[tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]} "
                                f"({type(exc).__name__}: {exc})") from None
        out = env[self.output_name]
        if out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise DataError(f"{self.source}: the output has shape {tuple(out.shape)} for {x.shape[0]} rows; the "
                            "network must return (batch, n_classes) logits")
        return torch.cat([torch.zeros_like(out), out], 1) if out.shape[1] == 1 else out


def torch_from_onnx(data: bytes, source: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
                    batch_size: int = 4096) -> Any:
    """The network in the ONNX bytes ``data`` as a differentiable
    :class:`~transferlab.models.wrap.WrappedModule` (ConfigError naming any operator it cannot convert)."""
    from transferlab.models.wrap import WrappedModule

    module = OnnxModule(parse_model(data, source), source).to(dtype=dtype).eval()
    module.onnx_bytes = data
    with torch.no_grad():
        probe = [module(torch.zeros(n, module.n_features, dtype=dtype)) for n in (1, 3)]
    if probe[0].shape[1] != probe[1].shape[1] or probe[0].shape[1] < 2:
        raise DataError(f"{source}: the output does not have one row of class logits per input row; export the "
                        "network with a dynamic batch axis (dynamic_axes={'input': {0: 'batch'}})")
    return WrappedModule(module, probe[0].shape[1], module.n_features, device=device, dtype=dtype,
                         batch_size=batch_size)

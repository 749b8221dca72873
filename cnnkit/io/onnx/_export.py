"""Export a cnnkit model to ONNX: one function per layer type in ``EXPORTERS``.

The walk follows ``forward``: containers (``Sequential``, ``Graph``) are unrolled and
every leaf layer is run once on a zero input of ``input_shape``, so each exporter
sees the concrete input arrays (for shapes) and the layer's real output. Add a layer
with::

    @register_exporter(MyLayer)
    def _my_layer(b: Builder, layer, names, xs, y) -> str:   # -> the output's ONNX name
        return b.node("Relu", names)

Initializers carry the layers' dotted ``state_dict`` names (``features.0.weight``).
"""

from __future__ import annotations

import numpy as np

from ..._errors import type_error, value_error
from ...functional.window import resolve_padding
from ...nn import (ELU, AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Concat, Conv2d, Dropout,
                   Flatten, Graph, Identity, LeakyReLU, Linear, LocalResponseNorm, LogSoftmax, MaxPool2d, ReLU,
                   ReLU6, ScaledTanh, Sequential, Sigmoid, Softmax, Tanh)
from ...nn.lenet_layers import EuclideanRBF, PadTo, SparseConv2d, Subsampling
from . import SUPPORTED_EXPORT_OPSETS, require_onnx
from ._layers import ImportedLayer

EXPORTERS: dict[type, callable] = {}


def register_exporter(*classes):
    def deco(fn):
        for cls in classes:
            EXPORTERS[cls] = fn
        return fn
    return deco


class Builder:
    """Collects nodes and initializers; ``node`` returns the new output's name."""

    def __init__(self, opset: int):
        self.onnx = require_onnx()
        self.opset = opset
        self.nodes, self.initializers, self._used = [], [], set()
        self.prefix = ""  # the dotted name of the layer being exported

    def fresh(self, hint: str) -> str:
        base = (hint or "v").replace("/", "_")
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def const(self, value, suffix: str, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.fresh(f"{self.prefix}.{suffix}" if self.prefix else suffix)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs, n_out: int = 1, **attrs):
        outs = [self.fresh(f"{self.prefix or op}:{op}") for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), outs, name=self.fresh(
            f"{self.prefix or op}/{op}"), **attrs))
        return outs[0] if n_out == 1 else outs


def export(model, path, input_shape, opset: int = 17, *, input_name="input", output_name="output",
           dynamic_batch: bool = True, external_data: bool = False) -> str:
    """Write ``model`` (in eval mode) to ``path``; input of ``input_shape`` (with the batch axis).

    The file passes ``onnx.checker.check_model(full_check=True)``; ``opset`` 13 to 21.
    With ``dynamic_batch`` the first axis is named ``N`` (any batch size). With
    ``external_data`` the initializers of 1 KiB or more go to ``<path>.data`` next to the
    model (needed above protobuf's 2 GiB limit), 64-byte aligned.
    """
    onnx = require_onnx()
    where = "cnnkit.onnx.export"
    lo, hi = SUPPORTED_EXPORT_OPSETS
    if not isinstance(opset, int) or not lo <= opset <= hi:
        raise value_error(where, f"opset must be an int from {lo} to {hi}", opset=opset)
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise value_error(where, "input_shape must be positive ints including the batch axis",
                          input_shape=tuple(input_shape))
    dtype = _model_dtype(model)
    was_training = model.training
    model.eval()
    try:
        b = Builder(opset)
        b._used.update({input_name})
        x = np.zeros(shape, dtype=dtype)
        out_names, ys = _walk(b, model, [input_name], [x], "")
    finally:
        if was_training:
            model.train()
    outs = out_names if isinstance(out_names, list) else [out_names]
    ys = ys if isinstance(ys, tuple) else (ys,)
    final = []
    for i, (name, y) in enumerate(zip(outs, ys)):
        oname = output_name if len(outs) == 1 else f"{output_name}{i}"
        b.nodes.append(onnx.helper.make_node("Identity", [name], [oname], name=b.fresh(f"{oname}/Identity")))
        final.append((oname, y))
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    dims = lambda s: (["N"] + list(s[1:])) if dynamic_batch else list(s)  # noqa: E731
    graph = onnx.helper.make_graph(
        b.nodes, type(model).__name__, [onnx.helper.make_tensor_value_info(input_name, elem, dims(shape))],
        [onnx.helper.make_tensor_value_info(n, elem, dims(y.shape)) for n, y in final],
        initializer=b.initializers)
    ops = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(graph, opset_imports=ops, producer_name="cnnkit",
                                   ir_version=onnx.helper.find_min_ir_version_for(ops))
    from ..._atomic import atomic_write_bytes
    if external_data:
        _move_to_external(proto, str(path), atomic_write_bytes)
    else:
        onnx.checker.check_model(proto, full_check=True)
    atomic_write_bytes(str(path), proto.SerializeToString())
    return str(path)


def _move_to_external(proto, path: str, write) -> None:
    """Move large initializers' bytes into ``<path>.data`` (written first, atomically)."""
    import os
    onnx = require_onnx()
    # full check before the move: the checker cannot see external bytes held in memory
    onnx.checker.check_model(proto, full_check=True)
    location = os.path.basename(path) + ".data"
    chunks, offset = [], 0
    for t in proto.graph.initializer:
        raw = onnx.numpy_helper.to_array(t).tobytes() if not t.raw_data else t.raw_data
        if len(raw) < 1024:
            continue
        pad = (-offset) % 64
        chunks.append(b"\0" * pad)
        offset += pad
        chunks.append(raw)
        onnx.external_data_helper.set_external_data(t, location, offset=offset, length=len(raw))
        t.data_location = onnx.TensorProto.EXTERNAL
        t.ClearField("raw_data")
        offset += len(raw)
    write(os.path.join(os.path.dirname(os.path.abspath(path)), location), b"".join(chunks))


def _model_dtype(model):
    for p in model.parameters():
        return p.data.dtype
    return np.float32


def _walk(b: Builder, layer, names: list, xs: list, prefix: str):
    """Export ``layer`` applied to ONNX values ``names`` (concrete arrays ``xs``): (names, outputs)."""
    if isinstance(layer, Graph):
        values = dict(zip(layer.input_names, zip(names, xs)))
        for node, inputs in layer.nodes:
            child = layer._children[node]
            ins = [values[i] for i in inputs]
            n, y = _walk(b, child, [v[0] for v in ins], [v[1] for v in ins], _join(prefix, node))
            values[node] = (n, y)
        outs = [values[o] for o in layer.output_names]
        if len(outs) == 1:
            return outs[0]
        return [o[0] for o in outs], tuple(o[1] for o in outs)
    if isinstance(layer, Sequential):
        n, y = (names[0] if len(names) == 1 else names), (xs[0] if len(xs) == 1 else tuple(xs))
        for key, child in layer.named_children():
            n, y = _walk(b, child, n if isinstance(n, list) else [n], list(y) if isinstance(y, tuple) else [y],
                         _join(prefix, key))
        return n, y
    fn = None
    for cls in type(layer).__mro__:
        if cls in EXPORTERS:
            fn = EXPORTERS[cls]
            break
    if fn is None:
        raise type_error("cnnkit.onnx.export", "no ONNX exporter for this layer type (add one with "
                         "register_exporter)", layer=prefix or "<root>", type=type(layer).__name__)
    y = layer(*xs)
    b.prefix = prefix
    out = fn(b, layer, names, xs, y)
    return out, y


def _join(prefix, key):
    return f"{prefix}.{key}" if prefix else str(key)


def _onnx_pads(pads4):
    top, bottom, left, right = pads4
    return [int(top), int(left), int(bottom), int(right)]  # ONNX: begins, then ends


# ---- layers -------------------------------------------------------------------------
@register_exporter(Conv2d)
def _conv(b, layer, names, xs, y):
    pads = resolve_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation, xs[0].shape[2:],
                           layer.label())
    w = layer.weight.data[:, :, ::-1, ::-1] if layer.flip else layer.weight.data
    ins = [names[0], b.const(w, "weight")]
    if layer.bias is not None:
        ins.append(b.const(layer.bias.data, "bias"))
    out = b.node("Conv", ins, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                 dilations=list(layer.dilation), pads=_onnx_pads(pads), group=layer.groups)
    if layer.fused_add:  # fuse_for_inference's residual Add: the second input
        out = b.node("Add", [out, names[1]])
    if layer.fused_relu and layer.fused_relu_max is not None:  # fuse_for_inference's ReLU6
        dt = layer.weight.data.dtype
        cap = b.const(np.array(layer.fused_relu_max, dt), "max")
        return b.node("Clip", [out, b.const(np.array(0, dt), "min"), cap])
    return b.node("Relu", [out]) if layer.fused_relu else out  # fuse_for_inference's ReLU


@register_exporter(SparseConv2d)
def _sparse_conv(b, layer, names, xs, y):
    ins = [names[0], b.const(layer.dense_weight(), "weight")]  # the masked dense kernel
    if layer.bias is not None:
        ins.append(b.const(layer.bias.data, "bias"))
    return b.node("Conv", ins, kernel_shape=list(layer.kernel_size), strides=[1, 1], pads=[0, 0, 0, 0])


@register_exporter(Linear)
def _linear(b, layer, names, xs, y):
    if xs[0].ndim == 2:
        ins = [names[0], b.const(layer.weight.data, "weight")]
        if layer.bias is not None:
            ins.append(b.const(layer.bias.data, "bias"))
        return b.node("Gemm", ins, transB=1)
    out = b.node("MatMul", [names[0], b.const(layer.weight.data.T, "weight_t")])
    return b.node("Add", [out, b.const(layer.bias.data, "bias")]) if layer.bias is not None else out


@register_exporter(Flatten)
def _flatten(b, layer, names, xs, y):
    nd = xs[0].ndim
    start, end = layer.start_dim % nd, layer.end_dim % nd
    if end == nd - 1 and start > 0:
        return b.node("Flatten", names, axis=start)  # (prod(shape[:start]), rest): same when start == 1
    target = [0] * start + [-1] + list(y.shape[start + 1:])
    return b.node("Reshape", [names[0], b.const(np.array(target, np.int64), "shape")])


def _act(op, **fixed):
    def fn(b, layer, names, xs, y):
        return b.node(op, names, **{k: (v(layer) if callable(v) else v) for k, v in fixed.items()})
    return fn


register_exporter(ReLU)(_act("Relu"))
register_exporter(Sigmoid)(_act("Sigmoid"))
register_exporter(Tanh)(_act("Tanh"))
register_exporter(LeakyReLU)(_act("LeakyRelu", alpha=lambda l: float(l.negative_slope)))
register_exporter(ELU)(_act("Elu", alpha=lambda l: float(l.alpha)))
register_exporter(Identity, Dropout)(_act("Identity"))


@register_exporter(ReLU6)
def _relu6(b, layer, names, xs, y):
    dt = xs[0].dtype
    return b.node("Clip", [names[0], b.const(np.array(0, dt), "min"), b.const(np.array(6, dt), "max")])


@register_exporter(ScaledTanh)
def _scaled_tanh(b, layer, names, xs, y):
    dt = xs[0].dtype
    t = b.node("Tanh", [b.node("Mul", [names[0], b.const(np.array(2 / 3, dt), "in_scale")])])
    return b.node("Mul", [t, b.const(np.array(1.7159, dt), "out_scale")])


@register_exporter(Softmax, LogSoftmax)
def _softmax(b, layer, names, xs, y):
    nd = xs[0].ndim
    dim = layer.dim if layer.dim is not None else (0 if nd in (0, 1, 3) else 1)  # PyTorch's legacy rule
    return b.node("Softmax" if isinstance(layer, Softmax) else "LogSoftmax", names, axis=int(dim))


@register_exporter(BatchNorm1d, BatchNorm2d)
def _batch_norm(b, layer, names, xs, y):
    if layer.running_mean is None:
        raise value_error(layer.label(), "only BatchNorm with running statistics exports (ONNX's "
                          "BatchNormalization is the inference form)", track_running_stats=False)
    c, dt = layer.num_features, xs[0].dtype
    gamma = layer.weight.data if layer.weight is not None else np.ones(c, dt)
    beta = layer.bias.data if getattr(layer, "bias", None) is not None else np.zeros(c, dt)
    ins = [names[0], b.const(gamma, "weight"), b.const(beta, "bias"), b.const(layer.running_mean, "running_mean"),
           b.const(layer.running_var, "running_var")]
    return b.node("BatchNormalization", ins, epsilon=float(layer.eps))


@register_exporter(LocalResponseNorm)
def _lrn(b, layer, names, xs, y):
    if layer.size % 2 == 0:  # ONNX puts the extra channel after, PyTorch/cnnkit before
        raise value_error(layer.label(), "only odd LRN sizes export: for an even size ONNX's window is "
                          "shifted by one channel from PyTorch's", size=layer.size)
    return b.node("LRN", names, size=layer.size, alpha=float(layer.alpha), beta=float(layer.beta),
                  bias=float(layer.k))


def _pool_attrs(layer, x, dilation=(1, 1)):
    from ...functional._check import pair
    k = pair(layer.kernel_size, "kernel_size", layer.label())
    s = pair(layer.stride, "stride", layer.label())
    d = pair(dilation, "dilation", layer.label())
    pads = resolve_padding(layer.padding, k, s, d, x.shape[2:], layer.label())
    return dict(kernel_shape=list(k), strides=list(s), pads=_onnx_pads(pads), ceil_mode=int(layer.ceil_mode))


@register_exporter(MaxPool2d)
def _max_pool(b, layer, names, xs, y):
    if layer.return_indices:
        raise value_error(layer.label(), "return_indices=True does not export", return_indices=True)
    attrs = _pool_attrs(layer, xs[0], layer.dilation)
    from ...functional._check import pair
    return b.node("MaxPool", names, dilations=list(pair(layer.dilation, "dilation", layer.label())), **attrs)


@register_exporter(AvgPool2d)
def _avg_pool(b, layer, names, xs, y):
    attrs = _pool_attrs(layer, xs[0])
    if layer.divisor_override is None:
        return b.node("AveragePool", names, count_include_pad=int(layer.count_include_pad), **attrs)
    kh, kw = attrs["kernel_shape"]
    out = b.node("AveragePool", names, count_include_pad=1, **attrs)  # sum / (kh*kw)
    return b.node("Mul", [out, b.const(np.array(kh * kw / layer.divisor_override, xs[0].dtype), "scale")])


@register_exporter(AdaptiveAvgPool2d)
def _adaptive_avg(b, layer, names, xs, y):
    h, w = xs[0].shape[2:]
    ho, wo = y.shape[2:]
    if ho == wo == 1:
        return b.node("GlobalAveragePool", names)
    if h % ho or w % wo:  # uneven bins: a MatMul with the averaging matrix over H*W
        m = np.kron(_bins(h, ho), _bins(w, wo)).T.astype(xs[0].dtype)                 # (H*W, Ho*Wo)
        flat = b.node("Reshape", [names[0], b.const(np.array([0, 0, -1], np.int64), "flat_shape")])
        out = b.node("MatMul", [flat, b.const(m, "bins")])                            # (N, C, Ho*Wo)
        return b.node("Reshape", [out, b.const(np.array([0, 0, ho, wo], np.int64), "out_shape")])
    return b.node("AveragePool", names, kernel_shape=[h // ho, w // wo], strides=[h // ho, w // wo])


def _bins(size, out):
    """(out, size): row i averages inputs floor(i*size/out) .. ceil((i+1)*size/out) - 1."""
    m = np.zeros((out, size))
    for i in range(out):
        lo, hi = (i * size) // out, -(-((i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@register_exporter(Add)
def _add(b, layer, names, xs, y):
    out = b.node("Identity", names) if len(names) == 1 else b.node("Add" if len(names) == 2 else "Sum", names)
    return b.node("Relu", [out]) if layer.fused_relu else out  # fuse_for_inference's ReLU


@register_exporter(Concat)
def _concat(b, layer, names, xs, y):
    return b.node("Concat", names, axis=int(layer.dim))


@register_exporter(Subsampling)
def _subsampling(b, layer, names, xs, y):
    x = xs[0]
    h, w = x.shape[2:]
    src = names[0]
    if h % 2 or w % 2:  # drop the odd trailing row/column, as the layer does
        src = b.node("Slice", [src, b.const(np.array([0, 0], np.int64), "starts"),
                               b.const(np.array([h // 2 * 2, w // 2 * 2], np.int64), "ends"),
                               b.const(np.array([2, 3], np.int64), "axes")])
    mean = b.node("AveragePool", [src], kernel_shape=[2, 2], strides=[2, 2])  # sum / 4
    coef = b.const((4 * layer.weight.data).reshape(-1, 1, 1).astype(x.dtype), "weight_x4")
    return b.node("Add", [b.node("Mul", [mean, coef]),
                          b.const(layer.bias.data.reshape(-1, 1, 1).astype(x.dtype), "bias")])


@register_exporter(EuclideanRBF)
def _rbf(b, layer, names, xs, y):
    x = b.node("Unsqueeze", [names[0], b.const(np.array([1], np.int64), "axes")])           # (N, 1, in)
    diff = b.node("Sub", [x, b.const(layer.weight.astype(xs[0].dtype), "weight")])          # (N, out, in)
    sq = b.node("ReduceSum", [b.node("Mul", [diff, diff]), b.const(np.array([2], np.int64), "reduce_axes")],
                keepdims=0)                                                                 # (N, out)
    return b.node("Neg", [sq]) if layer.negate else sq


@register_exporter(PadTo)
def _pad_to(b, layer, names, xs, y):
    h, w = xs[0].shape[2:]
    top, left = (layer.size - h) // 2, (layer.size - w) // 2
    bottom, right = layer.size - h - top, layer.size - w - left
    pads = np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)
    return b.node("Pad", [names[0], b.const(pads, "pads")], mode="constant")


def _shortcut_a(b, layer, names, xs, y):
    x, s = xs[0], layer.stride
    h, w = x.shape[2:]
    sub = b.node("Slice", [names[0], b.const(np.array([0, 0], np.int64), "starts"),
                           b.const(np.array([h, w], np.int64), "ends"), b.const(np.array([2, 3], np.int64), "axes"),
                           b.const(np.array([s, s], np.int64), "steps")])
    before = (layer.out_channels - layer.in_channels) // 2
    after = layer.out_channels - layer.in_channels - before
    return b.node("Pad", [sub, b.const(np.array([0, before, 0, 0, 0, after, 0, 0], np.int64), "pads")])


def _register_zoo():
    from ...models.resnet import ShortcutA
    register_exporter(ShortcutA)(_shortcut_a)


_register_zoo()


@register_exporter(ImportedLayer)
def _imported(b, layer, names, xs, y):
    return layer.to_onnx(b, names, xs, y)

"""ONNX operator -> cnnkit layer, one handler per operator (``HANDLERS``).

A handler gets a :class:`Ctx` (the node's inputs, constant or traced, its attributes and
the opset) and returns ``(layer, dynamic_input_names)``: constant inputs (weights) are
absorbed into the layer as Parameters. Nodes whose inputs are all constant are folded
by :mod:`._import` before any handler runs; ``FOLD_ONLY`` operators (Shape, Gather, ...)
are accepted only in that case (static shape arithmetic).
"""

from __future__ import annotations

import numpy as np

from ...nn import (ELU, AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Concat, Conv2d, Flatten,
                   Identity, LeakyReLU, Linear, LocalResponseNorm, LogSoftmax, MaxPool2d, ReLU, ReLU6, Sequential,
                   Sigmoid, Softmax, Tanh)
from ...nn.module import Parameter
from . import _layers as L
from ._security import OnnxFormatError

HANDLERS: dict = {}
FOLD_ONLY = {"Constant", "ConstantOfShape", "Shape", "Gather", "Cast", "Range", "Size", "Equal", "Where",
             "Expand", "Floor", "Ceil", "Min", "Max", "ReduceProd"}


def handler(*ops):
    def deco(fn):
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return deco


class Ctx:
    """What a handler may read: ``attr``, ``const``/``is_const``, ``shape`` (traced), ``opset``."""

    def __init__(self, node, attrs, consts, values, opset, where, initializer_names):
        self.node, self.attrs, self.opset, self.where = node, attrs, opset, where
        self._consts, self._values, self._inits = consts, values, initializer_names

    def attr(self, name, default=None):
        return self.attrs.get(name, default)

    def has(self, i):
        return i < len(self.node.input) and self.node.input[i] != ""

    def is_const(self, i):
        return self.has(i) and self.node.input[i] in self._consts

    def const(self, i, default=None, required=True):
        if not self.has(i):
            return default
        name = self.node.input[i]
        if name not in self._consts:
            if required:
                raise self.error(f"input {i} ({name!r}) must be a constant (an initializer or folded "
                                 "shape arithmetic), found a computed tensor")
            return default
        return self._consts[name]

    def traced(self, i):
        return self._values[self.node.input[i]][1]

    def dyn(self, i):
        name = self.node.input[i]
        if name in self._consts:
            raise self.error(f"input {i} ({name!r}) is expected to be a computed tensor, found a constant")
        return name

    def error(self, what):
        return OnnxFormatError(f"{self.where}: node {self.node.name!r} ({self.node.op_type}): {what}")


def _float(arr, dtype):
    return Parameter(np.array(arr, dtype=dtype))


def _spatial_pads(ctx, kernel, stride, dilation, in_hw):
    """ONNX ``pads``/``auto_pad`` -> cnnkit padding (a str or (top, bottom, left, right))."""
    auto = ctx.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(in_hw, kernel, stride, dilation):
            out = -(-size // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads += [small, big] if auto == "SAME_UPPER" else [big, small]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            return (pads[0], pads[2])
        return tuple(pads)
    if auto not in ("NOTSET", ""):
        raise ctx.error(f"unknown auto_pad {auto!r}")
    p = list(ctx.attr("pads", [0, 0, 0, 0]))
    if len(p) != 4:
        raise ctx.error(f"only 2-D (NCHW) windows are supported; pads={p}")
    if min(p) < 0:
        raise ctx.error(f"negative pads are not supported; pads={p}")
    if p[0] == p[2] and p[1] == p[3]:
        return (p[0], p[1])      # symmetric: the (ph, pw) pair the zoo's layers use
    return (p[0], p[2], p[1], p[3])  # ONNX [top, left, bottom, right] -> (top, bottom, left, right)


@handler("Conv")
def _conv(ctx):
    w = ctx.const(1)
    if w.ndim != 4:
        raise ctx.error(f"only 2-D convolutions are supported; weight shape {w.shape}")
    b = ctx.const(2, None)
    cout, cin_g, kh, kw = w.shape
    groups = int(ctx.attr("group", 1))
    kernel = tuple(ctx.attr("kernel_shape", [kh, kw]))
    if tuple(kernel) != (kh, kw):
        raise ctx.error(f"kernel_shape {list(kernel)} differs from the weight's {[kh, kw]}")
    stride = tuple(ctx.attr("strides", [1, 1]))
    dilation = tuple(ctx.attr("dilations", [1, 1]))
    x = ctx.traced(0)
    if x.ndim != 4 or x.shape[1] != cin_g * groups:
        raise ctx.error(f"input shape {tuple(x.shape)} does not fit weight {tuple(w.shape)} with group={groups}")
    if b is not None and b.shape != (cout,):
        raise ctx.error(f"bias shape {tuple(b.shape)} does not match {cout} output channels")
    pads = _spatial_pads(ctx, kernel, stride, dilation, x.shape[2:])
    conv = Conv2d(cin_g * groups, cout, (kh, kw), stride=stride, padding=pads, dilation=dilation, groups=groups,
                  bias=b is not None, dtype=x.dtype)
    conv.weight = _float(w, x.dtype)
    if b is not None:
        conv.bias = _float(b, x.dtype)
    return conv, [ctx.dyn(0)]


def _pool_common(ctx):
    kernel = tuple(ctx.attr("kernel_shape"))
    if len(kernel) != 2:
        raise ctx.error(f"only 2-D pooling is supported; kernel_shape={list(kernel)}")
    stride = tuple(ctx.attr("strides", [1, 1]))
    dilation = tuple(ctx.attr("dilations", [1, 1]))
    pads = _spatial_pads(ctx, kernel, stride, dilation, ctx.traced(0).shape[2:])
    return kernel, stride, dilation, pads, bool(ctx.attr("ceil_mode", 0))


@handler("MaxPool")
def _max_pool(ctx):
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise ctx.error("the Indices output of MaxPool is not supported")
    if int(ctx.attr("storage_order", 0)) != 0:
        raise ctx.error("storage_order=1 is not supported")
    kernel, stride, dilation, pads, ceil = _pool_common(ctx)
    return MaxPool2d(kernel, stride=stride, padding=pads, dilation=dilation, ceil_mode=ceil), [ctx.dyn(0)]


@handler("AveragePool")
def _avg_pool(ctx):
    kernel, stride, dilation, pads, ceil = _pool_common(ctx)
    if dilation != (1, 1):
        raise ctx.error(f"dilated average pooling is not supported; dilations={list(dilation)}")
    include = bool(ctx.attr("count_include_pad", 0))  # ONNX's default is 0, PyTorch's True
    return AvgPool2d(kernel, stride=stride, padding=pads, ceil_mode=ceil, count_include_pad=include), [ctx.dyn(0)]


@handler("GlobalAveragePool")
def _gap(ctx):
    if ctx.traced(0).ndim != 4:
        raise ctx.error("only 4-D input is supported")
    return AdaptiveAvgPool2d(1), [ctx.dyn(0)]


@handler("GlobalMaxPool")
def _gmp(ctx):
    return L.GlobalMaxPool(), [ctx.dyn(0)]


@handler("BatchNormalization")
def _bn(ctx):
    x = ctx.traced(0)
    scale, bias, mean, var = (ctx.const(i) for i in (1, 2, 3, 4))
    c = scale.shape[0]
    if x.ndim < 2 or x.shape[1] != c or any(a.shape != (c,) for a in (bias, mean, var)):
        raise ctx.error(f"shapes do not match: input {tuple(x.shape)}, scale {scale.shape}, bias {bias.shape}, "
                        f"mean {mean.shape}, var {var.shape}")
    if not int(ctx.attr("spatial", 1)):  # opsets 7-8: per-element statistics
        raise ctx.error("spatial=0 (per-element statistics) is not supported")
    if int(ctx.attr("training_mode", 0)):
        raise ctx.error("training_mode=1 is not supported (the inference form only)")
    cls = BatchNorm2d if x.ndim == 4 else BatchNorm1d
    if x.ndim not in (2, 3, 4):
        raise ctx.error(f"input rank {x.ndim} is not supported")
    bn = cls(c, eps=float(ctx.attr("epsilon", 1e-5)), momentum=1.0 - float(ctx.attr("momentum", 0.9)),
             dtype=x.dtype)
    bn.weight, bn.bias = _float(scale, x.dtype), _float(bias, x.dtype)
    bn.register_buffer("running_mean", np.array(mean, dtype=x.dtype))
    bn.register_buffer("running_var", np.array(var, dtype=x.dtype))
    return bn, [ctx.dyn(0)]


@handler("LRN")
def _lrn(ctx):
    size = int(ctx.attr("size"))
    if size % 2 == 0:
        raise ctx.error(f"even LRN sizes are not supported (ONNX's window differs from cnnkit's by one "
                        f"channel); size={size}")
    return LocalResponseNorm(size, alpha=float(ctx.attr("alpha", 1e-4)), beta=float(ctx.attr("beta", 0.75)),
                             k=float(ctx.attr("bias", 1.0))), [ctx.dyn(0)]


@handler("Relu")
def _relu(ctx):
    return ReLU(), [ctx.dyn(0)]


@handler("LeakyRelu")
def _leaky(ctx):
    return LeakyReLU(float(ctx.attr("alpha", 0.01))), [ctx.dyn(0)]


@handler("Elu")
def _elu(ctx):
    return ELU(float(ctx.attr("alpha", 1.0))), [ctx.dyn(0)]


@handler("Sigmoid")
def _sigmoid(ctx):
    return Sigmoid(), [ctx.dyn(0)]


@handler("Tanh")
def _tanh(ctx):
    return Tanh(), [ctx.dyn(0)]


@handler("Neg")
def _neg(ctx):
    return L.Neg(), [ctx.dyn(0)]


@handler("PRelu")
def _prelu(ctx):
    x, slope = ctx.traced(0), ctx.const(1)
    if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] and slope.shape[0] > 1:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))  # a common (C,) slope means per channel
    return L.PReLU(slope.astype(x.dtype)), [ctx.dyn(0)]


@handler("Clip")
def _clip(ctx):
    if ctx.opset < 11:
        lo, hi = ctx.attr("min", None), ctx.attr("max", None)
    else:
        lo = ctx.const(1, None)
        hi = ctx.const(2, None)
        lo = None if lo is None or lo.size == 0 else float(lo.reshape(-1)[0])
        hi = None if hi is None or hi.size == 0 else float(hi.reshape(-1)[0])
    if lo == 0 and hi == 6:
        return ReLU6(), [ctx.dyn(0)]
    if lo == 0 and hi is None:
        return ReLU(), [ctx.dyn(0)]
    return L.Clip(lo, hi), [ctx.dyn(0)]


@handler("Softmax", "LogSoftmax")
def _softmax(ctx):
    log = ctx.node.op_type == "LogSoftmax"
    nd = ctx.traced(0).ndim
    if ctx.opset >= 13:
        axis = int(ctx.attr("axis", -1)) % nd
        return (LogSoftmax if log else Softmax)(dim=axis), [ctx.dyn(0)]
    axis = int(ctx.attr("axis", 1)) % nd
    if axis == nd - 1:  # coercing to 2-D changes nothing when the axis is the last one
        return (LogSoftmax if log else Softmax)(dim=axis), [ctx.dyn(0)]
    return L.CoercedSoftmax(axis, log), [ctx.dyn(0)]


@handler("Gemm")
def _gemm(ctx):
    if not ctx.is_const(1) or ctx.is_const(0):
        raise ctx.error("only Gemm with a computed A and a constant B (a fully connected layer) is supported")
    a = ctx.traced(0)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    bmat = ctx.const(1)
    w = alpha * (bmat if int(ctx.attr("transB", 0)) else bmat.T)      # (out, in)
    out_f, in_f = w.shape
    c = ctx.const(2, None)
    bias = None
    if c is not None:
        if c.size not in (1, out_f) or (c.ndim == 2 and c.shape[0] != 1):
            raise ctx.error(f"bias C of shape {c.shape} is not a per-output vector ({out_f},)")
        bias = beta * np.broadcast_to(c.reshape(-1), (out_f,))
    lin = Linear(in_f, out_f, bias=bias is not None, dtype=a.dtype)
    lin.weight = _float(w, a.dtype)
    if bias is not None:
        lin.bias = _float(bias, a.dtype)
    if int(ctx.attr("transA", 0)):
        return Sequential(L.Transpose([1, 0]), lin), [ctx.dyn(0)]
    return lin, [ctx.dyn(0)]


@handler("MatMul")
def _matmul(ctx):
    if ctx.is_const(1):
        w = ctx.const(1)
        a = ctx.traced(0)
        if w.ndim == 2 and a.ndim >= 2:
            lin = Linear(w.shape[0], w.shape[1], bias=False, dtype=a.dtype)
            lin.weight = _float(w.T, a.dtype)
            return lin, [ctx.dyn(0)]
        raise ctx.error(f"MatMul with a constant of shape {w.shape} is not supported")
    if ctx.is_const(0):
        raise ctx.error("MatMul with a constant first operand is not supported")
    return L.MatMul(), [ctx.dyn(0), ctx.dyn(1)]


@handler("Add", "Sub", "Mul", "Div")
def _binary(ctx):
    op = ctx.node.op_type
    if ctx.is_const(0) or ctx.is_const(1):
        pos = 1 if ctx.is_const(1) else 0
        c = ctx.const(pos)
        dyn = ctx.traced(1 - pos)
        trainable = ctx.node.input[pos] in ctx._inits and c.dtype.kind == "f" and c.size > 1
        return L.Binary(op, c.astype(dyn.dtype), pos, trainable), [ctx.dyn(1 - pos)]
    if op == "Add":
        return Add(), [ctx.dyn(0), ctx.dyn(1)]
    return L.Binary(op), [ctx.dyn(0), ctx.dyn(1)]


@handler("Sum")
def _sum(ctx):
    n = len(ctx.node.input)
    if any(ctx.is_const(i) for i in range(n)):
        raise ctx.error("Sum with constant operands is not supported")
    return Add(), [ctx.dyn(i) for i in range(n)]


@handler("Concat")
def _concat(ctx):
    n = len(ctx.node.input)
    if any(ctx.is_const(i) for i in range(n)):
        raise ctx.error("Concat of computed and constant tensors is not supported")
    return Concat(int(ctx.attr("axis"))), [ctx.dyn(i) for i in range(n)]


@handler("Flatten")
def _flatten(ctx):
    axis = int(ctx.attr("axis", 1))
    nd = ctx.traced(0).ndim
    if axis % max(nd, 1) == 1 or (nd == 2 and axis in (1, -1)):
        return Flatten(1), [ctx.dyn(0)]
    return L.OnnxFlatten(axis), [ctx.dyn(0)]


@handler("Reshape")
def _reshape(ctx):
    target = ctx.const(1)
    return L.Reshape(target.tolist(), bool(ctx.attr("allowzero", 0)),
                     batch_from_input=ctx.node.input[1] in ctx.batch_derived and target.size > 0
                     and int(target[0]) == ctx.trace_batch), [ctx.dyn(0)]


@handler("Transpose")
def _transpose(ctx):
    nd = ctx.traced(0).ndim
    return L.Transpose(ctx.attr("perm", list(range(nd))[::-1])), [ctx.dyn(0)]


@handler("Squeeze", "Unsqueeze")
def _squeeze(ctx):
    axes = ctx.attr("axes", None) if ctx.opset < 13 else (None if not ctx.has(1) else ctx.const(1).tolist())
    if ctx.node.op_type == "Unsqueeze":
        return L.Unsqueeze(axes), [ctx.dyn(0)]
    return L.Squeeze(axes), [ctx.dyn(0)]


@handler("Pad")
def _pad(ctx):
    x = ctx.traced(0)
    if ctx.opset < 11:
        mode, pads, value = ctx.attr("mode", "constant"), list(ctx.attr("pads")), float(ctx.attr("value", 0.0))
    else:
        mode = ctx.attr("mode", "constant")
        pads = ctx.const(1).tolist()
        v = ctx.const(2, None)
        value = 0.0 if v is None or v.size == 0 else float(v.reshape(-1)[0])
        if ctx.has(3):  # axes (opset 18): pads name only these axes
            axes = [a % x.ndim for a in ctx.const(3).tolist()]
            full = [0] * (2 * x.ndim)
            for j, a in enumerate(axes):
                full[a], full[a + x.ndim] = pads[j], pads[j + len(axes)]
            pads = full
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ctx.error(f"only constant padding is supported; mode={mode!r}")
    if min(pads) < 0:
        raise ctx.error(f"negative pads are not supported; pads={pads}")
    return L.Pad(pads, value), [ctx.dyn(0)]


@handler("Dropout", "Identity")
def _identity(ctx):
    if ctx.node.op_type == "Dropout" and len(ctx.node.output) > 1 and ctx.node.output[1]:
        pass  # the mask output is left undefined; a consumer of it fails as a missing input
    return Identity(), [ctx.dyn(0)]


@handler("Slice")
def _slice(ctx):
    x = ctx.traced(0)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = ctx.const(1).tolist(), ctx.const(2).tolist()
        axes = ctx.const(3).tolist() if ctx.has(3) else list(range(len(starts)))
        steps = ctx.const(4).tolist() if ctx.has(4) else [1] * len(starts)
    slices = []
    for a, s, e, st in zip(axes, starts, ends, steps):
        n = x.shape[a % x.ndim]
        s, e, st = int(s), int(e), int(st)
        # clamp the int64 sentinels ONNX exporters use for "to the end"
        s = max(min(s, n), -n - 1) if st > 0 else max(min(s, n - 1), -n - 1)
        e = None if (st > 0 and e >= n) or (st < 0 and e < -n) else e
        slices.append((int(a), s, e, st))
    return L.Slice(slices), [ctx.dyn(0)]


@handler("ReduceSum")
def _reduce_sum(ctx):
    if ctx.opset < 13:
        axes = ctx.attr("axes", [])
    else:
        axes = ctx.const(1).tolist() if ctx.has(1) else []
    if not axes and int(ctx.attr("noop_with_empty_axes", 0)):
        return Identity(), [ctx.dyn(0)]
    return L.ReduceSum(axes, bool(ctx.attr("keepdims", 1))), [ctx.dyn(0)]

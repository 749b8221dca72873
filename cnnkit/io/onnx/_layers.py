"""Layers that ONNX graphs need and ``cnnkit.nn`` lacks: shape plumbing (Reshape,
Transpose, Squeeze/Unsqueeze, Slice, Pad, ONNX Flatten), element-wise arithmetic with
broadcasting (``Binary``, ``MatMul``), ``PReLU``, ``Clip``, ``GlobalMaxPool`` and the
pre-opset-13 "coerce to 2-D" softmax. Each has an explicit backward and a ``to_onnx``
so an imported model exports again.
"""

from __future__ import annotations

import numpy as np

from ..._errors import value_error
from ...functional import activation as A
from ...nn.containers import _unbroadcast
from ...nn.module import Layer, Parameter


class ImportedLayer(Layer):
    """Base class: ``to_onnx(builder, names, xs, y)`` re-exports the layer."""

    def to_onnx(self, b, names, xs, y):  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class Reshape(ImportedLayer):
    """ONNX Reshape with a static target: ``0`` copies the input's size (unless ``allowzero``),
    ``-1`` is inferred. ``batch_from_input``: the first entry was folded from the traced batch
    size, so it follows the input's batch size instead.
    Shape: input ``(*)``, output ``target``."""

    def __init__(self, target, allowzero: bool = False, batch_from_input: bool = False):
        super().__init__()
        self.target = [int(t) for t in target]
        self.allowzero, self.batch_from_input = bool(allowzero), bool(batch_from_input)

    def _shape(self, in_shape):
        t = list(self.target)
        if self.batch_from_input:
            t[0] = in_shape[0]
        if not self.allowzero:
            t = [in_shape[i] if v == 0 else v for i, v in enumerate(t)]
        return t

    def forward(self, x):
        self._cache = x.shape
        return x.reshape(self._shape(x.shape))

    def backward(self, dy):
        return dy.reshape(self._take_cache())

    def to_onnx(self, b, names, xs, y):
        t = list(self.target)
        if self.batch_from_input:
            t[0] = 0
        return b.node("Reshape", [names[0], b.const(np.array(t, np.int64), "shape")],
                      **({"allowzero": 1} if self.allowzero else {}))

    def extra_repr(self):
        return f"target={self.target}"


class OnnxFlatten(ImportedLayer):
    """ONNX Flatten: ``(prod(shape[:axis]), prod(shape[axis:]))``, always 2-D."""

    def __init__(self, axis: int = 1):
        super().__init__()
        self.axis = int(axis)

    def forward(self, x):
        self._cache = x.shape
        axis = self.axis % x.ndim if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)

    def backward(self, dy):
        return dy.reshape(self._take_cache())

    def to_onnx(self, b, names, xs, y):
        return b.node("Flatten", names, axis=self.axis)


class Transpose(ImportedLayer):
    def __init__(self, perm):
        super().__init__()
        self.perm = [int(p) for p in perm]

    def forward(self, x):
        self._cache = True
        return np.transpose(x, self.perm)

    def backward(self, dy):
        self._take_cache()
        return np.transpose(dy, np.argsort(self.perm))

    def to_onnx(self, b, names, xs, y):
        return b.node("Transpose", names, perm=self.perm)


class Squeeze(ImportedLayer):
    """Drop size-1 axes (``axes=None``: all of them)."""

    def __init__(self, axes=None):
        super().__init__()
        self.axes = None if axes is None else [int(a) for a in axes]

    def forward(self, x):
        self._cache = x.shape
        return np.squeeze(x, axis=None if self.axes is None else tuple(self.axes))

    def backward(self, dy):
        return dy.reshape(self._take_cache())

    def to_onnx(self, b, names, xs, y):
        if self.axes is None:
            return b.node("Squeeze", names)
        return b.node("Squeeze", [names[0], b.const(np.array(self.axes, np.int64), "axes")])


class Unsqueeze(ImportedLayer):
    def __init__(self, axes):
        super().__init__()
        self.axes = [int(a) for a in axes]

    def forward(self, x):
        self._cache = x.shape
        out_rank = x.ndim + len(self.axes)
        return np.expand_dims(x, tuple(sorted(a % out_rank for a in self.axes)))

    def backward(self, dy):
        return dy.reshape(self._take_cache())

    def to_onnx(self, b, names, xs, y):
        return b.node("Unsqueeze", [names[0], b.const(np.array(self.axes, np.int64), "axes")])


class Slice(ImportedLayer):
    """``x[slices]`` with static starts/ends/steps (ONNX Slice on a tensor)."""

    def __init__(self, slices):
        super().__init__()
        self.slices = [tuple(s) for s in slices]  # (axis, start, end, step)

    def _index(self, ndim):
        idx = [slice(None)] * ndim
        for axis, start, end, step in self.slices:
            idx[axis % ndim] = slice(start, end, step)
        return tuple(idx)

    def forward(self, x):
        self._cache = (x.shape, x.dtype)
        return np.array(x[self._index(x.ndim)])

    def backward(self, dy):
        shape, dtype = self._take_cache()
        dx = np.zeros(shape, dtype=dy.dtype)
        dx[self._index(len(shape))] = dy
        return dx

    def to_onnx(self, b, names, xs, y):
        big = np.iinfo(np.int64)
        col = lambda i, d: np.array([d if s[i] is None else s[i] for s in self.slices], np.int64)  # noqa: E731
        ends = np.array([(big.max if s[3] > 0 else big.min) if s[2] is None else s[2] for s in self.slices],
                        np.int64)
        starts = np.array([(0 if s[3] > 0 else -1) if s[1] is None else s[1] for s in self.slices], np.int64)
        return b.node("Slice", [names[0], b.const(starts, "starts"), b.const(ends, "ends"),
                                b.const(col(0, 0), "axes"), b.const(col(3, 1), "steps")])


class Pad(ImportedLayer):
    """Constant padding: ``pads`` in ONNX order (all begins, then all ends), non-negative."""

    def __init__(self, pads, value: float = 0.0):
        super().__init__()
        self.pads = [int(p) for p in pads]
        self.value = float(value)

    def forward(self, x):
        n = x.ndim
        if len(self.pads) != 2 * n:
            raise value_error(self.label(), f"pads has {len(self.pads)} values for a {n}-D input "
                              f"(ONNX wants 2 per axis: {2 * n})", pads=tuple(self.pads), input=tuple(x.shape))
        self._cache = x.shape
        # np.full and one copy: np.pad took 88 us on a 28x28 image (LeNet-5's first node)
        y = np.full(tuple(s + self.pads[i] + self.pads[i + n] for i, s in enumerate(x.shape)), self.value,
                    dtype=x.dtype)
        y[tuple(slice(self.pads[i], self.pads[i] + s) for i, s in enumerate(x.shape))] = x
        return y

    def backward(self, dy):
        shape = self._take_cache()
        return np.array(dy[tuple(slice(self.pads[i], self.pads[i] + s) for i, s in enumerate(shape))])

    def to_onnx(self, b, names, xs, y):
        return b.node("Pad", [names[0], b.const(np.array(self.pads, np.int64), "pads"),
                              b.const(np.array(self.value, xs[0].dtype), "value")], mode="constant")


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


class Binary(ImportedLayer):
    """``a op b`` with NumPy (= ONNX multidirectional) broadcasting, op in Add/Sub/Mul/Div.

    Two inputs, or one input and a constant ``weight`` at position ``const_pos`` (0 or 1):
    a Parameter when ``trainable`` (an initializer such as a bias), else a buffer."""

    def __init__(self, op: str, const=None, const_pos: int = 1, trainable: bool = False):
        super().__init__()
        self.op, self.const_pos = op, int(const_pos)
        if const is None:
            self.register_buffer("weight", None)
        elif trainable:
            self.weight = Parameter(np.array(const))
        else:
            self.register_buffer("weight", np.array(const))

    def _const(self):
        w = self._parameters.get("weight")  # (the tables directly: Layer.__getattr__ costs 1 us)
        return w.data if w is not None else self._buffers.get("weight")

    def forward(self, *xs):
        c = self._const()
        if c is not None:
            xs = (xs[0], c) if self.const_pos == 1 else (c, xs[0])
        a, b = xs
        self._cache = (a, b)
        y = _BINARY[self.op](a, b)
        if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype == y.dtype:
            return y  # (what the cast below gives, without np.result_type)
        return y.astype(np.result_type(a, b), copy=False)

    def backward(self, dy):
        a, b = self._take_cache()
        if self.op == "Add":
            da, db = dy, dy
        elif self.op == "Sub":
            da, db = dy, -dy
        elif self.op == "Mul":
            da, db = dy * b, dy * a
        else:
            da, db = dy / b, -dy * a / (b * b)
        da, db = _unbroadcast(da, np.shape(a)), _unbroadcast(db, np.shape(b))
        if self.weight is None:
            return da, db
        if isinstance(self.weight, Parameter):
            self.weight.accumulate(db if self.const_pos == 1 else da)
        return da if self.const_pos == 1 else db

    def to_onnx(self, b, names, xs, y):
        if self.weight is None:
            return b.node(self.op, names)
        c = b.const(self._const(), "weight")
        return b.node(self.op, [names[0], c] if self.const_pos == 1 else [c, names[0]])

    def extra_repr(self):
        return self.op + ("" if self.weight is None else f", const={tuple(np.shape(self._const()))}")


class MatMul(ImportedLayer):
    """``a @ b`` (NumPy matmul semantics), both inputs dynamic."""

    def forward(self, a, b):
        self._cache = (a, b)
        return np.matmul(a, b)

    def backward(self, dy):
        a, b = self._take_cache()
        if a.ndim == 1 or b.ndim == 1:
            raise ValueError("MatMul: backward through 1-D operands is not implemented")
        da = np.matmul(dy, np.swapaxes(b, -1, -2))
        db = np.matmul(np.swapaxes(a, -1, -2), dy)
        return _unbroadcast(da, a.shape), _unbroadcast(db, b.shape)

    def to_onnx(self, b, names, xs, y):
        return b.node("MatMul", names)


class PReLU(ImportedLayer):
    """``y = x if x > 0 else slope * x``, ``slope`` a trainable Parameter broadcast to x."""

    def __init__(self, slope):
        super().__init__()
        self.weight = Parameter(np.array(slope))

    def forward(self, x):
        s = self.weight.data
        self._cache = (x, s)
        return np.where(x > 0, x, x * s).astype(x.dtype, copy=False)

    def backward(self, dy):
        x, s = self._take_cache()
        neg = x <= 0
        self.weight.accumulate(_unbroadcast(dy * x * neg, s.shape).reshape(s.shape))
        return np.where(neg, dy * s, dy).astype(dy.dtype, copy=False)

    def to_onnx(self, b, names, xs, y):
        return b.node("PRelu", [names[0], b.const(self.weight.data, "weight")])


class Clip(ImportedLayer):
    """``min(max(x, lo), hi)``; the gradient passes where ``lo <= x <= hi``."""

    def __init__(self, lo=None, hi=None):
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x):
        lo = -np.inf if self.lo is None else self.lo
        hi = np.inf if self.hi is None else self.hi
        self._cache = (x >= lo) & (x <= hi)
        return np.clip(x, lo, hi).astype(x.dtype, copy=False)

    def backward(self, dy):
        return dy * self._take_cache()

    def to_onnx(self, b, names, xs, y):
        dt = xs[0].dtype
        ins = [names[0], "" if self.lo is None else b.const(np.array(self.lo, dt), "min")]
        if self.hi is not None:
            ins.append(b.const(np.array(self.hi, dt), "max"))
        return b.node("Clip", ins)


class GlobalMaxPool(ImportedLayer):
    """Max over all spatial axes, keeping them as size 1; the gradient goes to the first argmax."""

    def forward(self, x):
        n, c = x.shape[:2]
        flat = x.reshape(n, c, -1)                                            # (N, C, H*W)
        idx = flat.argmax(axis=2)
        self._cache = (x.shape, idx)
        return np.take_along_axis(flat, idx[:, :, None], 2).reshape((n, c) + (1,) * (x.ndim - 2))

    def backward(self, dy):
        shape, idx = self._take_cache()
        n, c = shape[:2]
        dx = np.zeros((n, c, int(np.prod(shape[2:]))), dtype=dy.dtype)
        np.put_along_axis(dx, idx[:, :, None], dy.reshape(n, c, 1), 2)
        return dx.reshape(shape)

    def to_onnx(self, b, names, xs, y):
        return b.node("GlobalMaxPool", names)


class CoercedSoftmax(ImportedLayer):
    """Softmax/LogSoftmax before opset 13: the input is seen as 2-D
    ``(prod(shape[:axis]), prod(shape[axis:]))`` and normalized along its second axis."""

    def __init__(self, axis: int = 1, log: bool = False):
        super().__init__()
        self.axis, self.log = int(axis), bool(log)

    def forward(self, x):
        axis = self.axis % x.ndim
        x2 = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)    # (outer, inner)
        fwd = A.log_softmax_forward if self.log else A.softmax_forward
        y, cache = fwd(x2, 1)
        self._cache = (cache, x.shape)
        return y.reshape(x.shape)

    def backward(self, dy):
        cache, shape = self._take_cache()
        bwd = A.log_softmax_backward if self.log else A.softmax_backward
        return bwd(dy.reshape(cache[0].shape), cache).reshape(shape)

    def to_onnx(self, b, names, xs, y):
        shape = xs[0].shape
        axis = self.axis % len(shape)
        flat = b.node("Flatten", names, axis=axis)
        s = b.node("LogSoftmax" if self.log else "Softmax", [flat], axis=1)
        return b.node("Reshape", [s, b.const(np.array([0] + list(shape[1:]), np.int64), "shape")])


class ReduceSum(ImportedLayer):
    def __init__(self, axes, keepdims: bool = True):
        super().__init__()
        self.axes, self.keepdims = [int(a) for a in axes], bool(keepdims)

    def forward(self, x):
        axes = tuple(a % x.ndim for a in self.axes) if self.axes else tuple(range(x.ndim))
        self._cache = (x.shape, axes)
        return np.sum(x, axis=axes, keepdims=self.keepdims)

    def backward(self, dy):
        shape, axes = self._take_cache()
        if not self.keepdims:
            dy = np.expand_dims(dy, axes)
        return np.broadcast_to(dy, shape).copy()

    def to_onnx(self, b, names, xs, y):
        return b.node("ReduceSum", [names[0], b.const(np.array(self.axes, np.int64), "axes")],
                      keepdims=int(self.keepdims))


class Neg(ImportedLayer):
    def forward(self, x):
        self._cache = True
        return -x

    def backward(self, dy):
        self._take_cache()
        return -dy

    def to_onnx(self, b, names, xs, y):
        return b.node("Neg", names)

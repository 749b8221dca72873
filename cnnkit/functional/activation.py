"""Activation kernels: element-wise nonlinearities and softmax, forward/backward pairs.

Every op is a pure pair ``y, cache = <op>_forward(x, ...)`` and
``dx = <op>_backward(dy, cache)``, plus a plain ``<op>(x, ...) -> y``. Inputs of any
rank are accepted; float32 stays float32 and float64 stays float64.

What the cache holds (some ops keep the output, which is all the backward needs):

==============  ===================================  ==============================
op              forward                              cache -> backward
==============  ===================================  ==============================
relu            ``max(x, 0)``                        output y: ``dy * (y > 0)``
leaky_relu      ``x if x > 0 else slope * x``        mask ``x > 0``
elu             ``x if x > 0 else a*(exp(x) - 1)``   local slope ``1`` or ``a*exp(x)``
sigmoid         ``1 / (1 + exp(-x))``                output y: ``dy * y * (1 - y)``
tanh            ``tanh(x)``                          output y: ``dy * (1 - y^2)``
scaled_tanh     ``1.7159 * tanh(2x/3)``              inner ``t = tanh(2x/3)``
softmax         ``exp(x_i) / sum_j exp(x_j)``        output y
log_softmax     ``x_i - log sum_j exp(x_j)``         output y
==============  ===================================  ==============================

At a kink the gradient follows PyTorch: relu'(0) = 0, leaky_relu'(0) = slope,
elu'(0) = alpha. Because their caches do not hold ``x``, the element-wise ops also
work with ``inplace=True`` (``x`` is overwritten with ``y``, as ``torch.nn.ReLU``).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._errors import type_error, value_error
from ..runtime import jit_kernels, parallel_ranges
from ._check import check_array
from .window import is_channel_major

# LeCun et al. 1998, "Efficient BackProp" / LeNet-5 (appendix A): f(x) = A tanh(S x)
# with A = 1.7159 and S = 2/3, chosen so that f(1) = 1 and f(-1) = -1.
SCALED_TANH_A = 1.7159
SCALED_TANH_S = 2.0 / 3.0


# ---- shared checks (used by every kernel file of this family) ---------------------
def _check_float(x, where: str, *, name: str = "input", min_ndim: int = 0) -> np.ndarray:
    """A float32/float64 ndarray of any rank ``>= min_ndim``."""
    check_array(x, where, ndim=getattr(x, "ndim", 0), name=name)  # type and dtype only
    if x.ndim < min_ndim:
        raise value_error(where, f"expected a {name} with at least {min_ndim} dimension(s), "
                          f"got {x.ndim}-D", **{name: tuple(x.shape)})
    return x


def _check_dy(dy, shape: tuple, dtype, where: str) -> np.ndarray:
    """The upstream gradient must have the forward output's shape and dtype."""
    check_array(dy, where, ndim=getattr(dy, "ndim", 0), name="dy")
    if dy.shape != tuple(shape):
        raise value_error(where, "dy must have the shape of the forward output",
                          dy=tuple(dy.shape), output=tuple(shape))
    if dy.dtype != dtype:
        raise type_error(where, "dy must have the dtype of the forward output",
                         **{"dy.dtype": str(dy.dtype), "output.dtype": str(np.dtype(dtype))})
    return dy


def _check_number(value, name: str, where: str) -> float:
    """A real Python/NumPy number (not a bool), returned as a Python float.

    A Python float is a "weak" scalar for NumPy, so ``x * slope`` keeps ``x``'s dtype
    even when the caller passed an ``np.float64``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise type_error(where, f"{name} must be a real number", **{name: value})
    return float(value)


def _normalize_axis(axis, ndim: int, where: str) -> int:
    """``axis`` in ``[-ndim, ndim)`` (a 0-D array has the axes -1 and 0, as in PyTorch)."""
    rank = max(ndim, 1)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise type_error(where, "axis must be an int", axis=axis)
    if not -rank <= axis < rank:
        raise value_error(where, f"axis out of range for a {ndim}-D input "
                          f"(expected -{rank} <= axis < {rank})", axis=int(axis), ndim=ndim)
    return int(axis) % rank


def _finish(x: np.ndarray, y: np.ndarray, inplace: bool) -> np.ndarray:
    """Write ``y`` into ``x`` for ``inplace=True`` (and return ``x``), else return ``y``."""
    if inplace:
        np.copyto(x, y)
        return x
    return y


# ---- ReLU ---------------------------------------------------------------------------
def relu_forward(x: np.ndarray, inplace: bool = False):
    """``y = max(x, 0)``. The cache is the mask ``y > 0`` (booleans, in y's memory layout)
    and y's dtype: a quarter of y's bytes, and y itself is not kept alive for the backward
    (the next layer usually keeps a copy of its own: ResNet-20's step at batch 128 held
    92 MiB of ReLU outputs, now 23 MiB of masks).

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "relu")
    y = x if inplace else np.empty_like(x)  # same memory layout as x
    mask = np.empty_like(y, dtype=np.bool_)  # (likewise)
    jit = jit_kernels()
    xf = _dense_flat(x) if jit is not None else None
    yf = _dense_flat(y) if xf is not None else None
    mf = _dense_flat(mask) if yf is not None else None
    if mf is not None:  # compiled select over the memory in order, in ranges on the workers
        _stream(lambda a, b: jit.relu_and_mask(xf[a:b], yf[a:b], mf[a:b]), xf.size, 2 * xf.size)
    else:
        def op(s):
            np.maximum(x[s], 0, out=y[s])
            np.greater(y[s], 0, out=mask[s])
        _by_channels(op, x)
    return y, (mask, y.dtype)


# The compiled ReLU and add kernels run on the calling thread below this many elements:
# they stream memory at a few tens of microseconds per megabyte, about what handing half
# the range to a worker thread costs (an empty round trip: 46-52 us). Measured, 2
# threads, us, serial / on the workers: ReLU of 301 K elements 27 / 68, 524 K 49 / 70,
# 2 M 226 / 141. LeNet-5 epoch (bench_train --limit 19200, three runs each, alternating):
# ratio 1.16-1.19 -> 1.13-1.14; ResNet-20 and MobileNet v1 steps in-process 0.99-1.00.
STREAM_SERIAL_BELOW = 1 << 20


def _stream(fn, n: int, work: int) -> None:
    """``fn(lo, hi)`` over ``[0, n)``: serially below STREAM_SERIAL_BELOW elements, else
    by ``parallel_ranges`` (``work``: the elements touched, for its own threshold)."""
    if n < STREAM_SERIAL_BELOW:
        fn(0, n)
    else:
        parallel_ranges(fn, n, work)


def _dense_flat(a: np.ndarray) -> np.ndarray | None:
    """A 1-D view of ``a``'s memory when it is C-contiguous or channel-major (C, N, H, W)
    memory seen as (N, C, H, W) - what conv and batch-norm outputs are - else None. Two
    arrays of the same shape and layout give views whose elements correspond."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if is_channel_major(a):
        return a.transpose(1, 0, 2, 3).reshape(-1)
    return None


def relu_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy * (y > 0)``; the gradient at exactly 0 is 0 (as PyTorch). Where ``y <= 0``
    an infinite ``dy`` gives NaN (``inf * 0``) and a NaN ``y`` gives 0; PyTorch's
    threshold_backward selects instead (0, and ``dy``). NumPy's selects (``np.where``,
    ``copyto(where=)``) were 4x slower than this multiply on a ResNet's gradient layouts.

    Where dy and y lie in memory alike, densely (C-contiguous, or channel-major as conv
    and batch-norm outputs are), a compiled loop runs over the memory in order, with the
    same bits: 0.9 ms against NumPy's 1.4 for (128, 16, 32, 32). Other layouts (a cropped
    view of a padded gradient buffer, say) take NumPy, by channels: compiled loops over
    such short strided rows were 4x slower than NumPy."""
    mask, dtype = cache
    _check_dy(dy, mask.shape, dtype, "relu_backward")
    jit = jit_kernels()
    if jit is not None and _same_dense_layout(dy, mask):
        dx = np.empty_like(dy)
        gf, mf, df = _dense_flat(dy), _dense_flat(mask), _dense_flat(dx)
        _stream(lambda a, b: jit.relu_backward(gf[a:b], mf[a:b], df[a:b]), mf.size, 3 * mf.size)
        return dx
    dx = np.empty_like(dy)
    _by_channels(lambda s: np.multiply(dy[s], mask[s], out=dx[s]), dy)
    return dx


def _same_dense_layout(a: np.ndarray, b: np.ndarray) -> bool:
    """Both C-contiguous, or both channel-major (C, N, H, W) memory seen as (N, C, H, W):
    then ``_dense_flat`` gives views whose elements correspond (the itemsizes may differ)."""
    if a.flags.c_contiguous and b.flags.c_contiguous:
        return True
    return a.ndim == 4 and is_channel_major(a) and is_channel_major(b)


# ---- addition (a residual join), with an optional ReLU -----------------------------
def add(a: np.ndarray, b: np.ndarray, relu: bool = False) -> np.ndarray:
    """``a + b`` (then ``max(., 0)`` with ``relu``, as :func:`relu` computes it), a new
    array. Same-shape float arrays are added on cnnkit's worker threads: by a compiled
    loop over the memory in order where both lie in it alike (C-contiguous, or
    channel-major as conv and batch-norm outputs are), else by NumPy, ranges of channels
    at once. Anything else (broadcasting, mixed dtypes) is NumPy's ``a + b``. The bits
    equal NumPy's ``a + b`` (and ReLU layer's) in every case.

    Measured (2 threads, (128, 16, 32, 32) float32): 1.26 ms for NumPy's ``a + b``, 0.63
    compiled; a channel-major array plus a cropped view of a padded buffer (a Winograd
    conv's input gradient): 2.54 ms NumPy, 1.34 by channels."""
    same = a.shape == b.shape and a.dtype == b.dtype and a.dtype.kind == "f" and a.ndim >= 2
    if not same:
        y = np.add(a, b)
        return relu_forward(y, inplace=True)[0] if relu else y
    jit = jit_kernels()
    if jit is not None and a.strides == b.strides:
        af = _dense_flat(a)
        if af is not None:
            y = np.empty_like(a)  # (the same layout as a)
            bf, yf = _dense_flat(b), _dense_flat(y)
            _stream(lambda lo, hi: jit.add(af[lo:hi], bf[lo:hi], yf[lo:hi], relu), af.size, 3 * af.size)
            return y
    y = np.empty_like(a)

    def part(s):
        np.add(a[s], b[s], out=y[s])
        if relu:
            np.maximum(y[s], 0, out=y[s])
    _by_channels(part, a)
    return y


def add_relu_forward(a: np.ndarray, b: np.ndarray):
    """``max(a + b, 0)`` and its ReLU's cache, as :func:`add` then :func:`relu_forward`
    give them (the same bits), in one pass where a and b lie in memory alike: a residual
    join and the ReLU after it (Graph uses it when the ReLU alone reads the Add). The
    backward is :func:`relu_backward` with the cache, for both inputs."""
    jit = jit_kernels()
    if jit is not None and a.shape == b.shape and a.dtype == b.dtype and a.dtype.kind == "f" \
            and a.strides == b.strides:
        af, bf = _dense_flat(a), _dense_flat(b)
        if af is not None:
            y = np.empty_like(a)
            mask = np.empty_like(y, dtype=np.bool_)
            yf, mf = _dense_flat(y), _dense_flat(mask)
            _stream(lambda lo, hi: jit.add_relu_and_mask(af[lo:hi], bf[lo:hi], yf[lo:hi], mf[lo:hi]), af.size,
                    3 * af.size)
            return y, (mask, y.dtype)
    return relu_forward(add(a, b), inplace=True)


def _by_channels(op, a: np.ndarray) -> None:
    """``op(index)`` over ranges of axis 1 on cnnkit's worker threads (whole array for 0/1-D)."""
    if a.ndim < 2:
        op(Ellipsis)
        return
    parallel_ranges(lambda c0, c1: op((slice(None), slice(c0, c1))), a.shape[1], 2 * a.size)


def relu(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    return relu_forward(x, inplace)[0]


# ---- LeakyReLU ----------------------------------------------------------------------
def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01, inplace: bool = False):
    """``y = x if x > 0 else negative_slope * x``. The cache is the mask ``x > 0``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "leaky_relu")
    slope = _check_number(negative_slope, "negative_slope", "leaky_relu")
    positive = x > 0
    y = np.where(positive, x, x * slope)
    return _finish(x, y, inplace), (positive, slope, x.dtype)


def leaky_relu_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy if x > 0 else negative_slope * dy`` (so ``negative_slope`` at 0, as PyTorch)."""
    positive, slope, dtype = cache
    _check_dy(dy, positive.shape, dtype, "leaky_relu_backward")
    return np.where(positive, dy, dy * slope)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01, inplace: bool = False) -> np.ndarray:
    return leaky_relu_forward(x, negative_slope, inplace)[0]


# ---- ELU ----------------------------------------------------------------------------
def elu_forward(x: np.ndarray, alpha: float = 1.0, inplace: bool = False):
    """``y = x if x > 0 else alpha * (exp(x) - 1)`` (Clevert et al. 2015).

    The cache is the local slope ``dy/dx``: 1 for ``x > 0``, else ``alpha * exp(x)``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "elu")
    alpha = _check_number(alpha, "alpha", "elu")
    positive = x > 0
    x_neg = np.minimum(x, 0)                 # exp only of non-positive values: no overflow
    y = np.where(positive, x, alpha * np.expm1(x_neg))
    slope = np.where(positive, 1, alpha * np.exp(x_neg)).astype(x.dtype, copy=False)
    return _finish(x, y, inplace), (slope,)


def elu_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy * (1 if x > 0 else alpha * exp(x))`` (``alpha`` at 0, as PyTorch)."""
    (slope,) = cache
    _check_dy(dy, slope.shape, slope.dtype, "elu_backward")
    return dy * slope


def elu(x: np.ndarray, alpha: float = 1.0, inplace: bool = False) -> np.ndarray:
    return elu_forward(x, alpha, inplace)[0]


# ---- Sigmoid ------------------------------------------------------------------------
def sigmoid_forward(x: np.ndarray):
    """``y = 1 / (1 + exp(-x))``, evaluated without overflow for any ``|x|``:
    with ``e = exp(-|x|) <= 1``, ``y = 1/(1 + e)`` for ``x >= 0`` and ``e/(1 + e)`` else.
    The cache is the output ``y``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "sigmoid")
    e = np.exp(-np.abs(x))
    y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return y, (y,)


def sigmoid_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy * y * (1 - y)``."""
    (y,) = cache
    _check_dy(dy, y.shape, y.dtype, "sigmoid_backward")
    return dy * y * (1 - y)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return sigmoid_forward(x)[0]


# ---- Tanh ---------------------------------------------------------------------------
def tanh_forward(x: np.ndarray):
    """``y = tanh(x)``. The cache is the output ``y``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "tanh")
    y = np.tanh(x)
    return y, (y,)


def tanh_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy * (1 - y^2)``."""
    (y,) = cache
    _check_dy(dy, y.shape, y.dtype, "tanh_backward")
    return dy * (1 - y * y)


def tanh(x: np.ndarray) -> np.ndarray:
    return tanh_forward(x)[0]


# ---- Scaled tanh (LeCun 1998) -------------------------------------------------------
def scaled_tanh_forward(x: np.ndarray):
    """``y = A * tanh(S * x)`` with ``A = 1.7159``, ``S = 2/3`` (LeCun et al. 1998,
    the squashing function of LeNet-5: ``f(1) = 1``, ``f(-1) = -1``).
    The cache is the inner ``t = tanh(S * x)``.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "scaled_tanh")
    t = np.tanh(x * SCALED_TANH_S)
    return t * SCALED_TANH_A, (t,)


def scaled_tanh_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy * A * S * (1 - t^2)``."""
    (t,) = cache
    _check_dy(dy, t.shape, t.dtype, "scaled_tanh_backward")
    return dy * ((1 - t * t) * (SCALED_TANH_A * SCALED_TANH_S))


def scaled_tanh(x: np.ndarray) -> np.ndarray:
    return scaled_tanh_forward(x)[0]


# ---- Softmax and LogSoftmax ---------------------------------------------------------
def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    """``x - max(x, axis)``: every exponent is <= 0, so ``exp`` cannot overflow.
    (``initial`` lets an empty axis through: its softmax is empty, as in PyTorch.)"""
    return x - x.max(axis=axis, keepdims=True, initial=-np.inf)


def softmax_forward(x: np.ndarray, axis: int):
    """``y_i = exp(x_i) / sum_j exp(x_j)`` along ``axis`` (max-subtracted, stable).
    The cache is the output ``y``.

    Shape: input ``(*)``, output ``(*)``, same shape; every slice along ``axis`` sums to 1.
    """
    _check_float(x, "softmax")
    ax = _normalize_axis(axis, x.ndim, "softmax")
    x1 = x.reshape(x.shape or (1,))         # a 0-D input is one class: softmax = 1
    e = np.exp(_shifted(x1, ax))
    y = (e / e.sum(axis=ax, keepdims=True)).reshape(x.shape)
    return y, (y, ax)


def softmax_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx_i = y_i * (dy_i - sum_j dy_j y_j)`` (the softmax Jacobian applied to ``dy``)."""
    y, ax = cache
    _check_dy(dy, y.shape, y.dtype, "softmax_backward")
    y1, dy1 = y.reshape(y.shape or (1,)), dy.reshape(y.shape or (1,))
    dx = y1 * (dy1 - (dy1 * y1).sum(axis=ax, keepdims=True))
    return dx.reshape(y.shape)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    return softmax_forward(x, axis)[0]


def log_softmax_forward(x: np.ndarray, axis: int):
    """``y_i = x_i - m - log sum_j exp(x_j - m)`` with ``m = max_j x_j`` along ``axis``.
    The cache is the output ``y`` (``exp(y)`` is the softmax).

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "log_softmax")
    ax = _normalize_axis(axis, x.ndim, "log_softmax")
    z = _shifted(x.reshape(x.shape or (1,)), ax)
    y = (z - np.log(np.exp(z).sum(axis=ax, keepdims=True))).reshape(x.shape)
    return y, (y, ax)


def log_softmax_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx_i = dy_i - softmax_i * sum_j dy_j`` with ``softmax = exp(y)``."""
    y, ax = cache
    _check_dy(dy, y.shape, y.dtype, "log_softmax_backward")
    y1, dy1 = y.reshape(y.shape or (1,)), dy.reshape(y.shape or (1,))
    dx = dy1 - np.exp(y1) * dy1.sum(axis=ax, keepdims=True)
    return dx.reshape(y.shape)


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    return log_softmax_forward(x, axis)[0]

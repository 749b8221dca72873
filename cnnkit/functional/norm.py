"""Normalization kernels: batch normalization and local response normalization.

Each op is a pure pair ``y, cache = <op>_forward(...)`` / ``<op>_backward(dy, cache)``
plus a plain ``<op>(...) -> y``. The one side effect in this file is documented
loudly on :func:`batch_norm_forward`: in training it updates the running-statistic
arrays it is given, in place.

Legend: N batch size, C channels, L length, H, W height and width,
n values per channel (``N * L`` or ``N * H * W``), S the LRN window size.

dtypes: float32 and float64; the output, the gradients and the updated running
statistics keep the input's dtype. Per-channel sums (means, variances, the
reductions in backward) are accumulated in float64 and cast back to the input
dtype; elementwise work stays in the input dtype, so float32 inputs never make
float64 arrays of their own size.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .._errors import type_error, value_error
from ..runtime import jit_kernels, parallel_ranges
from .activation import relu_backward, relu_forward
from ._check import check_array, check_same_dtype

__all__ = [
    "batch_norm", "batch_norm_forward", "batch_norm_backward",
    "local_response_norm", "local_response_norm_forward", "local_response_norm_backward",
    "alexnet_alpha_to_torch",
]


# ---------------------------------------------------------------------------------
# shared checks
# ---------------------------------------------------------------------------------
def _real(value, name: str, where: str) -> float:
    """A real number (not a bool) as a Python float (a weak scalar: it never upcasts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise type_error(where, f"{name} must be a real number", **{name: value})
    return float(value)


def _check_dy(dy, shape: tuple, where: str) -> None:
    if not isinstance(dy, np.ndarray):
        raise type_error(where, "dy must be a numpy.ndarray", dy=type(dy).__name__)
    if dy.shape != shape:
        raise value_error(where, "dy must have the shape of the forward output",
                          dy=tuple(dy.shape), output=shape)


# ---------------------------------------------------------------------------------
# batch normalization
# ---------------------------------------------------------------------------------
class BatchNormCache(NamedTuple):
    """What :func:`batch_norm_backward` needs from the forward pass."""
    batch_stats: bool            # True: normalized with this batch's statistics
    xhat: np.ndarray | None      # (N, C, ...) normalized input; None with running statistics,
    inv_std: np.ndarray          # (C,) 1 / sqrt(var + eps), input dtype   (then built from:)
    weight: np.ndarray | None    # (C,) gamma, or None (affine=False)
    has_bias: bool
    x: np.ndarray | None = None       # running statistics: a copy of the input, (N, C, ...);
    #                                   compiled batch statistics: the input rows themselves
    mean: np.ndarray | None = None    # (C,) the mean x was centred on (running or batch), input dtype
    relu_mask: np.ndarray | None = None  # a fused ReLU: y > 0 (booleans, (N, C, ...) as y)


def _channel_axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))  # every axis but C


def _bshape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)  # (1, C, 1, ...) broadcasts over (N, C, ...)


def _check_channel_vector(v, name: str, channels: int, where: str) -> None:
    if v is None:
        return
    if not isinstance(v, np.ndarray):
        raise type_error(where, f"{name} must be a numpy.ndarray or None",
                         **{name: type(v).__name__})
    if v.shape != (channels,):
        raise value_error(where, f"{name} must have shape (C,) = ({channels},), one value per "
                          "channel of the input", **{f"{name}.shape": tuple(v.shape)},
                          channels=channels)


def _channel_rows(x: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (C, M) with M = N * prod(...): a view when x is channel-major in memory."""
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _from_channel_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """(C, M) -> an (N, C, ...) view of the same channel-major memory."""
    return np.moveaxis(rows.reshape((shape[1], shape[0]) + tuple(shape[2:])), 0, 1)


def _row_sums(a: np.ndarray) -> np.ndarray:
    """Per-row sums of a (C, M) array as float64 (C,). NumPy sums a contiguous row pairwise
    in the input dtype (relative error about log2(M) * eps), several times faster than
    converting every element to float64 first."""
    return a.sum(axis=1).astype(np.float64)


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row dot products of two (C, M) arrays, summed pairwise (see _row_sums): (C,)."""
    return _row_sums(np.multiply(a, b))


def check_batch_size(x: np.ndarray, where: str) -> None:
    """Batch statistics need more than one value per channel (n = 0 is allowed: empty)."""
    n = math.prod(x.shape[i] for i in _channel_axes(x.ndim))
    if n == 1:
        raise value_error(where, "expected more than 1 value per channel when training "
                          "(batch statistics of a single value are undefined)",
                          input=tuple(x.shape))


def batch_norm_forward(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                       running_mean: np.ndarray | None, running_var: np.ndarray | None,
                       training: bool, momentum: float = 0.1, eps: float = 1e-5, *, relu: bool = False):
    r"""Batch normalization over every axis but the channel axis 1.

    Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
    Reducing Internal Covariate Shift", ICML 2015, Algorithm 1::

        mu_c    = mean over (N, L) or (N, H, W) of x[:, c]
        var_c   = mean of (x[:, c] - mu_c)^2            (biased, n in the denominator)
        xhat    = (x - mu_c) / sqrt(var_c + eps)
        y       = gamma_c * xhat + beta_c

    Batch statistics are used when ``training`` is true, or when no running
    statistics are given (``running_mean is running_var is None``, i.e.
    ``track_running_stats=False``); otherwise ``running_mean``/``running_var``
    take the place of ``mu``/``var`` (inference).

    **Side effect (the only one in cnnkit.functional):** when ``training`` is true
    and running statistics are given, ``running_mean`` and ``running_var`` are
    updated *in place* with PyTorch's rule::

        running_mean = (1 - momentum) * running_mean + momentum * mu
        running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)

    (the running variance uses the unbiased estimate). ``momentum`` must be a
    number here; ``BatchNorm``'s ``momentum=None`` (a cumulative average) is
    resolved by the layer, which passes ``1 / num_batches_tracked``.

    ``weight``/``bias`` may be ``None`` (no scale / no shift). An empty batch
    (n = 0) gives an empty output and leaves the running statistics alone, as
    PyTorch does; training with exactly one value per channel (n = 1) is an error.

    Shape:
        - x: (N, C), (N, C, L) or (N, C, H, W); y: the same shape and dtype.
        - weight, bias, running_mean, running_var: (C,), the dtype of x.

    ``relu=True`` returns ``max(y, 0)`` instead, computed in the same pass where Numba
    is installed, and the backward then takes the ReLU's gradient too (the mask ``y > 0``
    is in the cache): a batch norm followed by a ReLU, with the same bits as
    :func:`cnnkit.functional.relu_forward` / ``relu_backward`` around it. Sequential and
    Graph containers use it for a BatchNorm whose only reader is a ReLU.

    With batch statistics and the compiled kernels (Numba) the cache keeps x itself (no
    copy when x is channel-major, as conv outputs are; as PyTorch keeps its input) and the
    backward computes xhat from it again: change x in place after the forward and the
    gradients are wrong. Without Numba the cache keeps a private xhat.

    Returns ``(y, cache)``; pass the cache to :func:`batch_norm_backward`.
    """
    where = "batch_norm"
    check_array(x, where, ndim=(2, 3, 4), layout="N, C, *")
    channels = x.shape[1]
    for name, v in (("weight", weight), ("bias", bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        _check_channel_vector(v, name, channels, where)
    check_same_dtype(where, input=x, weight=weight, bias=bias,
                     running_mean=running_mean, running_var=running_var)
    if (running_mean is None) != (running_var is None):
        raise value_error(where, "running_mean and running_var must both be given or both be None",
                          running_mean=type(running_mean).__name__,
                          running_var=type(running_var).__name__)
    eps = _real(eps, "eps", where)
    axes = _channel_axes(x.ndim)
    n = math.prod(x.shape[i] for i in axes)  # values per channel
    batch_stats = bool(training) or running_mean is None
    update = bool(training) and running_mean is not None
    if update:
        if momentum is None:
            raise type_error(where, "momentum must be a number; momentum=None (cumulative "
                             "average) is resolved by the BatchNorm layer, which passes "
                             "1 / num_batches_tracked", momentum=None)
        momentum = _real(momentum, "momentum", where)
    if batch_stats:
        check_batch_size(x, where)

    # Every pass runs on X, a (C, M) channel-major view (no copy when x is channel-major,
    # as conv outputs are): contiguous rows make each reduction and update one fast pass.
    # Channels are independent, so ranges of them run on cnnkit's worker threads.
    X = _channel_rows(x)                                                       # (C, M)
    if not batch_stats:
        y, cache = _batch_norm_running(x, X, weight, bias, running_mean, running_var, eps)
        return _then_relu(y, cache, inplace=True) if relu else (y, cache)
    # An empty batch (n = 0) has no statistics: mean 0 and variance 1 keep the
    # arithmetic finite; the output is empty and the running stats stay (PyTorch).
    mean64, var64 = np.zeros(channels), np.ones(channels)                      # (C,) biased var
    inv_std = np.empty(channels, dtype=x.dtype)                                # (C,)

    jit = jit_kernels() if n > 0 else None
    if jit is not None:  # the same statistics and arithmetic, 3 passes instead of about 11
        # No xhat: the backward computes it again from x (kept, not copied, as PyTorch keeps
        # its input), to the same bits. Not writing it took 0.83 -> 0.35 ms off a
        # (16, 131072) forward with a fused ReLU, 2 threads (ResNet-20's first stage).
        y = np.empty(X.shape, dtype=x.dtype)                                   # (C, M)
        # the fused ReLU's mask, (C, M), filled by the compiled pass
        mask = np.empty(X.shape, dtype=np.bool_) if relu else np.empty((0, 0), dtype=np.bool_)
        empty = np.empty(0, dtype=x.dtype)
        w_k, b_k = (empty if v is None else v for v in (weight, bias))
        parallel_ranges(lambda c0, c1: jit.batch_norm_forward(X, w_k, b_k, y, mean64, var64, inv_std,
                                                              eps, c0, c1, mask), channels, 3 * X.size)
        xhat = None
    else:
        xhat = np.empty(X.shape, dtype=x.dtype)                                # (C, M)
        y = xhat if weight is None and bias is None and not relu else np.empty_like(xhat)  # (C, M)
        mask = np.empty((0, 0), dtype=np.bool_)

    def normalize(c0, c1):  # channels c0..c1-1
        Xr, xh = X[c0:c1], xhat[c0:c1]
        if n > 0:
            mean64[c0:c1] = _row_sums(Xr) / n
        np.subtract(Xr, mean64[c0:c1].astype(x.dtype)[:, None], out=xh)       # centred
        if n > 0:
            var64[c0:c1] = _row_dots(xh, xh) / n
        inv_std[c0:c1] = 1.0 / np.sqrt(var64[c0:c1] + eps)
        np.multiply(xh, inv_std[c0:c1, None], out=xh)                          # xhat
        if weight is not None:
            np.multiply(xh, weight[c0:c1, None], out=y[c0:c1])
        if bias is not None:
            np.add(y[c0:c1] if weight is not None else xh, bias[c0:c1, None], out=y[c0:c1])
        if weight is None and bias is None and y is not xhat:  # (a fused ReLU's own output)
            y[c0:c1] = xh
    if jit is None:
        parallel_ranges(normalize, channels, 3 * X.size)

    if update and n > 0:
        unbiased = var64 * (n / (n - 1))
        running_mean[...] = (1.0 - momentum) * running_mean.astype(np.float64) + momentum * mean64
        running_var[...] = (1.0 - momentum) * running_var.astype(np.float64) + momentum * unbiased
    y = _from_channel_rows(y, x.shape)  # an (N, C, ...) view
    weight = None if weight is None else weight.copy()  # (C,) immune to in-place updates
    if xhat is None:  # compiled: the backward rebuilds xhat from the input rows X (x's memory
        # when x is channel-major, as conv outputs are; else the copy the kernel read) and
        # the mean they were centred on
        cache = BatchNormCache(batch_stats, None, inv_std, weight, bias is not None,
                               _from_channel_rows(X, x.shape), mean64.astype(x.dtype))
    else:
        cache = BatchNormCache(batch_stats, _from_channel_rows(xhat, x.shape), inv_std, weight, bias is not None)
    if relu and mask.size:
        return y, cache._replace(relu_mask=_from_channel_rows(mask, x.shape))
    return _then_relu(y, cache, inplace=True) if relu else (y, cache)


def _then_relu(y: np.ndarray, cache: BatchNormCache, inplace: bool):
    """The ReLU after a batch norm (relu_forward, y overwritten), its mask into the cache."""
    y, (mask, _) = relu_forward(y, inplace=inplace)
    return y, cache._replace(relu_mask=mask)


def running_affine(weight, bias, running_mean, running_var, eps):
    """Batch norm with running statistics as a per-channel affine map ``y = x * scale + shift``:
    ``(inv_std, scale, shift)``, float64 (C,) each, with ``inv_std = 1 / sqrt(var + eps)``,
    ``scale = gamma * inv_std`` and ``shift = beta - mean * scale`` (as PyTorch's CPU kernel
    folds them). ``weight``/``bias`` may be None. Also used to fold a BatchNorm into a conv."""
    inv64 = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)                # (C,)
    scale64 = inv64 if weight is None else inv64 * weight
    shift64 = -running_mean.astype(np.float64) * scale64
    if bias is not None:
        shift64 += bias
    return inv64, scale64, shift64


def _batch_norm_running(x, X, weight, bias, running_mean, running_var, eps):
    """Inference with running statistics: ``y = x * scale + shift`` (:func:`running_affine`),
    two passes instead of four. The cache is a copy of the input: xhat is rebuilt in the
    backward only if dgamma is wanted."""
    inv64, scale64, shift64 = running_affine(weight, bias, running_mean, running_var, eps)
    scale, shift = scale64.astype(x.dtype)[:, None], shift64.astype(x.dtype)[:, None]  # (C, 1)
    y = np.empty(X.shape, dtype=x.dtype)                                       # (C, M)
    keep = np.empty(X.shape, dtype=x.dtype)                                    # (C, M)

    def affine(c0, c1):  # channels c0..c1-1
        keep[c0:c1] = X[c0:c1]
        np.multiply(X[c0:c1], scale[c0:c1], out=y[c0:c1])
        y[c0:c1] += shift[c0:c1]
    parallel_ranges(affine, X.shape[0], 3 * X.size)
    weight = None if weight is None else weight.copy()  # (C,) immune to in-place updates
    return _from_channel_rows(y, x.shape), BatchNormCache(
        False, None, inv64.astype(x.dtype), weight, bias is not None, _from_channel_rows(keep, x.shape),
        running_mean.astype(x.dtype))


def batch_norm_backward(dy: np.ndarray, cache: BatchNormCache):
    r"""Gradients of :func:`batch_norm_forward`: ``(dx, dweight, dbias)``.

    Per channel, with ``sigma = sqrt(var + eps)`` and means over the n values::

        dbeta  = sum(dy)
        dgamma = sum(dy * xhat)
        dx     = (gamma / sigma) * (dy - mean(dy) - xhat * mean(dy * xhat))   batch statistics
        dx     = (gamma / sigma) * dy                                         running statistics

    The first is the compact closed form of Ioffe & Szegedy's chain rule (the mean
    and the variance both depend on every x of the channel); with running
    statistics the op is a per-channel affine map. ``dweight``/``dbias`` are
    ``None`` when the forward had no weight/bias.

    Shape:
        - dy, dx: (N, C, ...) as the forward's x; dweight, dbias: (C,).
    """
    where = "batch_norm_backward"
    batch_stats, xhat, inv_std, weight, has_bias, x_kept, mean, relu_mask = cache
    shape, dtype = (xhat.shape, xhat.dtype) if xhat is not None else (x_kept.shape, x_kept.dtype)
    _check_dy(dy, shape, where)
    n = math.prod(shape[i] for i in _channel_axes(len(shape)))
    jit = jit_kernels() if batch_stats and n > 0 else None
    mask = np.empty((0, 0), dtype=np.bool_)
    if relu_mask is not None and jit is not None:
        mask = _channel_rows(relu_mask)  # (C, M) as D: the ReLU's gradient inside the compiled passes
    elif relu_mask is not None:  # the fused ReLU's backward first
        dy = relu_backward(dy, (relu_mask, dtype))
    D = _channel_rows(dy)                                                      # (C, M)
    XH = _channel_rows(xhat) if xhat is not None else None                     # (C, M)
    x_rows = _channel_rows(x_kept) if x_kept is not None else None             # (C, M)
    channels = D.shape[0]
    dbeta64, dgamma64 = np.empty(channels), np.empty(channels)                 # (C,)
    scale = inv_std if weight is None else weight * inv_std                    # (C,) gamma / sigma
    dx = np.empty(D.shape, dtype=dtype)                                        # (C, M)

    if jit is not None:  # the same arithmetic in 2 passes instead of about 13
        if x_rows is None:  # (a forward run without the compiled kernels: xhat kept)
            x_rows, mean, inv_std = XH, np.zeros(channels, dtype=dtype), np.ones(channels, dtype=dtype)
        parallel_ranges(lambda c0, c1: jit.batch_norm_backward(D, x_rows, mean, inv_std, scale, dx, dbeta64,
                                                               dgamma64, c0, c1, mask), channels, 4 * D.size)
    elif batch_stats and XH is None and n > 0:  # a compiled forward, its backward without: xhat again
        XH = np.subtract(x_rows, mean[:, None])
        XH *= inv_std[:, None]

    def channel_grads(c0, c1):  # channels c0..c1-1 (run on worker threads)
        Dr, dxr, sc = D[c0:c1], dx[c0:c1], scale[c0:c1, None]
        dbeta64[c0:c1] = _row_sums(Dr)
        if XH is not None:
            dgamma64[c0:c1] = _row_dots(Dr, XH[c0:c1])
        elif weight is not None:  # running statistics: xhat from the kept input, as the forward did
            XHr = np.subtract(x_rows[c0:c1], mean[c0:c1, None])
            XHr *= inv_std[c0:c1, None]
            dgamma64[c0:c1] = _row_dots(Dr, XHr)
        np.multiply(Dr, sc, out=dxr)
        if batch_stats and n > 0:
            # dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat)), as two per-channel affine terms
            a = (sc[:, 0] * (dgamma64[c0:c1] / n)).astype(dtype)            # (c,)
            b = (sc[:, 0] * (dbeta64[c0:c1] / n)).astype(dtype)             # (c,)
            t = np.multiply(XH[c0:c1], a[:, None])
            t += b[:, None]
            dxr -= t
    if jit is None:
        parallel_ranges(channel_grads, channels, 4 * D.size)
    dx = _from_channel_rows(dx, shape)
    dweight = None if weight is None else dgamma64.astype(dtype)
    dbias = dbeta64.astype(dtype) if has_bias else None
    return dx, dweight, dbias


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """:func:`batch_norm_forward` without the cache (same in-place running-stat update)."""
    return batch_norm_forward(x, weight, bias, running_mean, running_var, training,
                              momentum, eps)[0]


# ---------------------------------------------------------------------------------
# local response normalization
# ---------------------------------------------------------------------------------
def alexnet_alpha_to_torch(alpha: float, n: int) -> float:
    """The PyTorch/ONNX/Caffe ``alpha`` equal to AlexNet's ``alpha`` for window ``n``.

    AlexNet (section 3.3) writes ``k + alpha * sum(a^2)``; PyTorch, ONNX and Caffe
    write ``k + alpha / n * sum(a^2)``. So the paper's ``alpha = 1e-4, n = 5`` is
    ``alpha = 5e-4`` here.
    """
    return float(alpha) * int(n)


def _window_sum(v: np.ndarray, before: int, after: int) -> np.ndarray:
    """``out[:, c] = sum of v[:, c - before : c + after + 1]`` along axis 1, zero-padded."""
    channels = v.shape[1]
    pad = [(0, 0)] * v.ndim
    pad[1] = (before, after)
    padded = np.pad(v, pad)                                        # (N, before + C + after, ...)
    out = padded[:, 0:channels].copy()                             # (N, C, ...)
    for j in range(1, before + after + 1):  # S - 1 shifted adds; S is small (AlexNet: 5)
        out += padded[:, j:j + channels]
    return out


class LocalResponseNormCache(NamedTuple):
    x: np.ndarray        # (N, C, ...)
    s: np.ndarray        # (N, C, ...) k + alpha/S * window sum of x^2
    d: np.ndarray        # (N, C, ...) s ** beta
    size: int
    alpha: float
    beta: float


def check_lrn_args(x, size, alpha, beta, k, where: str):
    """Validate LRN's input and arguments; returns ``(size, alpha, beta, k)`` as int/floats."""
    if not isinstance(x, np.ndarray):
        raise type_error(where, "input must be a numpy.ndarray", input=type(x).__name__)
    if x.ndim < 3:
        raise value_error(where, f"expected a 3-D or higher input (N, C, *), got {x.ndim}-D",
                          input=tuple(x.shape))
    check_array(x, where, ndim=x.ndim)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise type_error(where, "size must be an int", size=size)
    if size < 1:
        raise value_error(where, "size must be at least 1 (the number of channels in the window)",
                          size=size)
    return int(size), _real(alpha, "alpha", where), _real(beta, "beta", where), _real(k, "k", where)


def local_response_norm_forward(x: np.ndarray, size: int, alpha: float = 1e-4,
                                beta: float = 0.75, k: float = 1.0):
    r"""Local response normalization across channels (PyTorch/ONNX/Caffe convention).

    ::

        s_c = k + alpha / S * sum_{c' = c - S//2}^{c + (S-1)//2} x_{c'}^2
        y_c = x_c / s_c^beta

    The window of ``S = size`` channels is zero-padded with ``S//2`` channels before
    and ``(S-1)//2`` after (``torch.nn.functional.local_response_norm``); the
    average divides by S even where the window overhangs the edge.

    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NeurIPS 2012, section 3.3, write
    ``k + alpha * sum`` without ``/ n`` (with k=2, n=5, alpha=1e-4, beta=0.75):
    their alpha corresponds to ``alpha * n`` here, see
    :func:`alexnet_alpha_to_torch` (5e-4 for the paper's values). Caffe's
    reference AlexNet uses alpha=1e-4 in Caffe's ``/n`` convention, which is
    5 times weaker than the paper.

    Shape:
        - x: (N, C, *) with at least one trailing axis ((N, C, L), (N, C, H, W), ...);
          y: the same shape and dtype.
    """
    where = "local_response_norm"
    size, alpha, beta, k = check_lrn_args(x, size, alpha, beta, k, where)
    s = _window_sum(x * x, size // 2, (size - 1) // 2)                         # (N, C, ...)
    s *= alpha / size
    s += k
    d = s ** beta                                                              # (N, C, ...)
    y = x / d
    return y, LocalResponseNormCache(x, s, d, size, alpha, beta)


def local_response_norm_backward(dy: np.ndarray, cache: LocalResponseNormCache) -> np.ndarray:
    r"""Gradient of :func:`local_response_norm_forward` with respect to x.

    ``x_j`` enters its own output and the sum ``s_c`` of every channel ``c`` whose
    window contains ``j`` (``j - (S-1)//2 <= c <= j + S//2``)::

        dx_j = dy_j / s_j^beta
               - (2 * alpha * beta / S) * x_j * sum_{c = j - (S-1)//2}^{j + S//2} dy_c * y_c / s_c

    (``d y_c / d s_c = -beta * y_c / s_c`` and ``d s_c / d x_j = 2 alpha / S * x_j``.)
    The second sum is the forward's window sum with the padding mirrored.

    Shape:
        - dy, dx: the forward's x shape.
    """
    where = "local_response_norm_backward"
    x, s, d, size, alpha, beta = cache
    _check_dy(dy, x.shape, where)
    t = dy * x / (d * s)                                                       # dy_c * y_c / s_c
    back = _window_sum(t, (size - 1) // 2, size // 2)                          # (N, C, ...)
    dx = dy / d - (2.0 * alpha * beta / size) * x * back
    return dx.astype(x.dtype, copy=False)


def local_response_norm(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> np.ndarray:
    """:func:`local_response_norm_forward` without the cache."""
    return local_response_norm_forward(x, size, alpha, beta, k)[0]

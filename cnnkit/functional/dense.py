"""Fully connected (affine) layer and flatten kernels.

# N: batch size, *: any extra leading axes, I: in_features, O: out_features, M: N * prod(*)

Large GEMMs are cut into column ranges of their result (output features forward and
for dw, input features for dx) that run on cnnkit's worker threads
(:func:`cnnkit.runtime.parallel_map`); every part writes its own columns.
"""

from __future__ import annotations

import numbers
import math

import numpy as np

from .._errors import type_error, value_error
from ..runtime import get_num_threads, parallel_map, split_range
from ._check import check_array, check_same_dtype
from .activation import _check_dy, _check_float


def _check_linear(x, w, b, where: str) -> None:
    _check_float(x, where, min_ndim=1)
    check_array(w, where, ndim=2, name="weight", layout="out_features, in_features")
    if b is not None:
        check_array(b, where, ndim=1, name="bias", layout="out_features")
    check_same_dtype(where, input=x, weight=w, bias=b)
    if x.shape[-1] != w.shape[1]:
        raise value_error(where, f"the input's last dimension must equal in_features = "
                          f"weight.shape[1] = {w.shape[1]}, got {x.shape[-1]}",
                          input=tuple(x.shape), weight=tuple(w.shape))
    if b is not None and b.shape[0] != w.shape[0]:
        raise value_error(where, "bias must have out_features = weight.shape[0] elements",
                          bias=tuple(b.shape), weight=tuple(w.shape))


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """``y = x @ w.T + b`` (``torch.nn.functional.linear``).

    Shape:
        x ``(N, *, I)`` (or ``(I,)``), w ``(O, I)``, b ``(O,)`` or None -> y ``(N, *, O)``.
    """
    _check_linear(x, w, b, "linear")
    y = _matmul_by_columns(x, w.T)                   # (N, *, O)
    if b is not None:
        y += b
    return y, (x, w, b is not None)


def linear_backward(dy: np.ndarray, cache, need_dx: bool = True, need_dw: bool = True):
    """``dx = dy @ w``, ``dw = dy^T x`` summed over all leading axes, ``db = sum(dy)``.

    Returns ``(dx, dw, db)``; ``db`` is None when the forward had no bias, ``dx``/``dw``
    are None when ``need_dx``/``need_dw`` is False (their GEMM is skipped).
    """
    x, w, has_bias = cache
    _check_dy(dy, x.shape[:-1] + (w.shape[0],), x.dtype, "linear_backward")
    dy2 = dy.reshape(-1, w.shape[0])                 # (M, O)
    x2 = x.reshape(-1, w.shape[1])                   # (M, I)
    dx = _matmul_by_columns(dy, w) if need_dx else None     # (N, *, I)
    dw = _matmul_by_columns(dy2.T, x2) if need_dw else None  # (O, I)
    db = dy2.sum(axis=0) if has_bias else None       # (O,)
    return dx, dw, db


# Below this many multiply-adds a GEMM is not worth handing to threads (about 0.5 ms on
# one core; LeNet-5's 64x400 @ 400x120, 3M, took 0.44 ms split over 2 threads, 0.1 ms whole).
_PARALLEL_MACS = 1 << 24


def _matmul_by_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (b 2-D), its result's columns split over the worker threads."""
    cols = b.shape[1]
    if get_num_threads() < 2 or a.size * cols < _PARALLEL_MACS or cols < 2:
        return a @ b
    out = np.empty(a.shape[:-1] + (cols,), dtype=np.result_type(a, b))

    def part(ranges):
        for j0, j1 in ranges:
            np.matmul(a, b[:, j0:j1], out=out[..., j0:j1])
    parallel_map(part, split_range(cols, get_num_threads()))
    return out


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    return linear_forward(x, w, b)[0]


# ---- Flatten ------------------------------------------------------------------------
def _flat_dims(start_dim, end_dim, ndim: int, where: str) -> tuple[int, int]:
    rank = max(ndim, 1)                   # a 0-D input flattens to (1,), as torch.flatten
    if type(start_dim) is int and type(end_dim) is int and -rank <= start_dim < rank \
            and -rank <= end_dim < rank and start_dim % rank <= end_dim % rank:
        return start_dim % rank, end_dim % rank  # (the common case, without the ABC checks: 1 us)
    for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise type_error(where, f"{name} must be an int", **{name: d})
        if not -rank <= d < rank:
            raise value_error(where, f"{name} out of range for a {ndim}-D input "
                              f"(expected -{rank} <= {name} < {rank})",
                              start_dim=int(start_dim), end_dim=int(end_dim), ndim=ndim)
    start, end = int(start_dim) % rank, int(end_dim) % rank
    if start > end:
        raise value_error(where, "start_dim must not come after end_dim",
                          start_dim=int(start_dim), end_dim=int(end_dim), ndim=ndim)
    return start, end


def flatten_forward(x: np.ndarray, start_dim: int = 1, end_dim: int = -1):
    """Merge the axes ``start_dim..end_dim`` (inclusive) into one (``torch.flatten``).

    Returns a view where NumPy can (as torch). The cache is the input shape.

    Shape:
        ``(d0, ..., d_start, ..., d_end, ...)`` -> ``(d0, ..., prod(d_start..d_end), ...)``.
    """
    _check_float(x, "flatten")
    start, end = _flat_dims(start_dim, end_dim, x.ndim, "flatten")
    shape = x.shape or (1,)
    merged = math.prod(shape[start:end + 1])         # explicit: reshape(-1) fails for N = 0
    return x.reshape(shape[:start] + (merged,) + shape[end + 1:]), (x.shape,)


def flatten_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy`` reshaped back to the input's shape."""
    (shape,) = cache
    check_array(dy, "flatten_backward", ndim=getattr(dy, "ndim", 0), name="dy")
    if dy.size != math.prod(shape):
        raise value_error("flatten_backward", "dy must have as many elements as the input",
                          dy=tuple(dy.shape), input=tuple(shape))
    return dy.reshape(shape)


def flatten(x: np.ndarray, start_dim: int = 1, end_dim: int = -1) -> np.ndarray:
    return flatten_forward(x, start_dim, end_dim)[0]

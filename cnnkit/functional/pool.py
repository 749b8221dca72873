"""Max and average pooling over the same sliding window as convolution.

Letters: N batch, C channels, kH/kW window, Ho/Wo output size, Hp/Wp padded size.

Both loop over the kH*kW window offsets, each a strided slice of the padded
input (``window.window_slices``):
- max pooling keeps a running maximum and the offset that produced it; its
  backward routes each gradient to that argmax (the lecture's
  ``delta^l = delta^{l+1}`` for the winner, 0 elsewhere); overlapping windows add up.
  Ties go to the first maximum in row-major window order and NaN wins, as in
  PyTorch's CPU kernel.
- average pooling sums the slices and divides by the window's count; its
  backward spreads ``dy / n`` over the window.
"""

from __future__ import annotations

import functools

import numpy as np

from .._errors import value_error
from ..runtime import jit_kernels, parallel_ranges
from .activation import relu_backward, relu_forward
from ._check import check_array, memo, pair
from .window import (as_nchw, crop_channel_major, is_channel_major, output_hw, pad_channel_major, padded_size,
                     planes, resolve_padding, window_slices)

_ALL = (slice(None), slice(None))


def check_pool_spec(kernel_size, stride, padding, dilation, where, *, max_pool: bool):
    """Validate pooling arguments (no input needed); return (kernel, stride, dilation)."""
    kernel = pair(kernel_size, "kernel_size", where, minimum=1)
    stride = kernel if stride is None else pair(stride, "stride", where, minimum=1)
    dilation = pair(dilation, "dilation", where, minimum=1)
    pads = resolve_padding(padding, kernel, stride, dilation, (1, 1), where)
    if not isinstance(padding, str):  # PyTorch's rule; 'same' pads are derived, not chosen
        if max(pads[:2]) * 2 > kernel[0] or max(pads[2:]) * 2 > kernel[1]:
            raise value_error(where, "padding must be at most half of the kernel size",
                              padding=padding, kernel_size=kernel_size)
    return kernel, stride, dilation


def _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode, where, *, max_pool: bool):
    """Check ``x`` and the arguments: ``(kernel, stride, dilation, pads, out_hw)``, the
    arguments' part remembered per call signature (``_check.memo``)."""
    check_array(x, where, ndim=4, layout="N, C, H, W")
    return memo(_pool_plan, tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode, where, max_pool)


def _pool_plan(x_shape, kernel_size, stride, padding, dilation, ceil_mode, where, max_pool):
    kernel, stride, dilation = check_pool_spec(kernel_size, stride, padding, dilation, where,
                                               max_pool=max_pool)
    pads = resolve_padding(padding, kernel, stride, dilation, x_shape[2:], where)
    out_hw = output_hw(x_shape[2:], kernel, stride, dilation, pads, where, ceil_mode=ceil_mode,
                       input_shape=x_shape, padding=padding)
    return kernel, stride, dilation, pads, out_hw


def max_pool2d_forward(x: np.ndarray, kernel_size, stride=None, padding=0, dilation=1,
                       ceil_mode: bool = False, *, relu: bool = False, where: str = "max_pool2d"):
    """Max over each window. Returns ``(y, cache)``.

    ``relu=True`` computes the max pool of ``max(x, 0)`` as ``max(max pool of x, 0)``:
    the ReLU commutes with the max, and on the pooled output it touches a window's worth
    of elements fewer (a quarter for 2x2). The backward keeps a ReLU's mask of the pooled
    output and routes only the windows whose maximum is positive, the gradient of the two
    layers one after the other (their values; a zero gradient may differ in sign). Sequential
    and Graph use it for a ReLU whose only reader is a max pool.

    Padding is -inf (never the maximum). ``stride`` defaults to ``kernel_size``.

    Four paths give identical results:
    - 2x2 windows at stride 2 inside the input, where Numba is installed: one compiled
      pass takes each window's max and remembers which pixel won (the argmax rule below);
      the backward routes by that byte, and neither keeps the input or y;
    - 3x3 windows without dilation at column stride 1 or 2, any padding (ResNet's,
      GoogLeNet's and AlexNet's overlapping pools), where Numba is installed: the same,
      one compiled pass per plane through a -inf-padded scratch plane in cache; the
      backward zeroes dx and adds each dy at its window's stored argmax. Against the
      separable NumPy forward and the compiled search by equality in the backward, 2
      threads, ms, forward / backward: (8, 64, 112, 112) 3x3 s2 p1 5.3 / 11.5 -> 2.8-3.0
      / 2.5; (32, 96, 55, 55) 3x3 s2 9.2 / 14.4 -> 5.4-7.0 / 2.9; (32, 192, 28, 28) s2
      p1 4.3 / 8.9 -> 3.7-3.9 / 1.6; (32, 480, 14, 14) 3x3 s1 p1 5.6 / 16.6 -> 6.7 / 3.2;
      the cache holds one byte per output instead of the padded input, the row maxima
      and y;
    - separable (finite output): a 2-D max is a max along W followed by a max along
      H, so only kW + kH running maxima are taken instead of kH*kW; backward finds
      each winner again by equality, first along H, then along W, which picks the
      first maximum in row-major window order (PyTorch's tie rule); where Numba is
      installed (``cnnkit.runtime.set_jit``) one compiled pass does that search;
    - argmax (an output with NaN or infinities, and ``max_pool2d_indices``): one running
      maximum over all kH*kW offsets that remembers which offset won (NaN wins,
      as in PyTorch).

    Shape:
        ``H_out = floor_or_ceil((H + 2P - dilation*(kH - 1) - 1)/stride) + 1``, y is
        (N, C, H_out, W_out).
    """
    y, cache = _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, where)
    if not relu:
        return y, cache
    y, (mask, dtype) = relu_forward(y, inplace=True)  # (y is the caller's: no cache holds it)
    return y, ("relu", mask, dtype, cache)


def _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, where):
    """max_pool2d_forward without the ReLU."""
    kernel, stride, dilation, pads, out_hw = _pool_args(
        x, kernel_size, stride, padding, dilation, ceil_mode, where, max_pool=True)
    size_hw = padded_size(out_hw, kernel, stride, dilation)
    geo = (x.shape, pads, size_hw, kernel, stride, dilation, out_hw)
    two = jit_kernels() if _two_by_two(x.shape, kernel, stride, dilation, pads, out_hw) else None
    three = jit_kernels() if two is None and _three_by_three(kernel, stride, dilation) else None
    if two is not None or three is not None:  # compiled: max and argmax in one pass over x, no padded copy
        nchw = x.flags.c_contiguous  # (else channel-major, as cnnkit's layers return)
        src = x if nchw else x.transpose(1, 0, 2, 3)
        y = np.empty((x.shape[1], x.shape[0]) + tuple(out_hw), dtype=x.dtype)  # (C, N, Ho, Wo)
        arg = np.empty(y.shape, dtype=np.uint8)
        xf, sn, sc = planes(x) if three is not None else (None, 0, 0)  # (other layouts: an NCHW copy)

        def run(c0, c1):  # channels c0..c1-1, on cnnkit's worker threads
            if two is not None:
                two.max_pool_2x2_argmax(src, nchw, y, arg, c0, c1)
            else:
                three.max_pool_3x3_argmax(xf, sn, sc, *x.shape[2:], y, arg, *stride, pads[0], pads[2], c0, c1)
        parallel_ranges(run, x.shape[1], x.size + y.size)
        return as_nchw(y), ("argmax", geo, arg)  # (the cache does not hold y: the caller owns it)
    xp = pad_channel_major(x, pads, size_hw, fill=-np.inf)  # (C, N, Hp, Wp)
    c, n = xp.shape[:2]
    m = np.empty((c, n, size_hw[0], out_hw[1]), dtype=x.dtype)  # (C, N, Hp, Wo)
    y = np.empty((c, n) + tuple(out_hw), dtype=x.dtype)  # (C, N, Ho, Wo)

    def pool(c0, c1):  # channels c0..c1-1, on cnnkit's worker threads
        _max_along(xp[c0:c1], 3, kernel[1], stride[1], dilation[1], out_hw[1], m[c0:c1])
        _max_along(m[c0:c1], 2, kernel[0], stride[0], dilation[0], out_hw[0], y[c0:c1])
    parallel_ranges(pool, c, xp.size + m.size)
    # np.maximum propagates NaN, so a finite y means: no NaN and no +inf in x, and a
    # finite maximum in every window (the separable backward's equality test then finds
    # each winner). Otherwise (or if the sum overflows) the argmax path starts over.
    if bool(np.isfinite(np.sum(y))) if y.size else True:
        return as_nchw(y.copy()), ("separable", geo, xp, m, y)  # the caller may change its y in place
    y, arg = _max_argmax(xp, pads, kernel, stride, dilation, out_hw)
    return as_nchw(y), ("argmax", geo, arg)


def max_pool2d_backward(dy: np.ndarray, cache) -> np.ndarray:
    """Route each ``dy`` to the argmax of its window; overlapping windows accumulate."""
    if cache[0] == "relu":  # the forward's ReLU on the pooled output: its gradient first
        dy, cache = relu_backward(dy, cache[1:3]), cache[3]
    path, (x_shape, pads, size_hw, kernel, stride, dilation, out_hw) = cache[:2]
    dy_cn = dy.transpose(1, 0, 2, 3)  # (C, N, Ho, Wo)
    tiles = tuple(kernel) == tuple(stride) and tuple(dilation) == (1, 1)
    jit = jit_kernels() if path == "separable" and not tiles else None
    if jit is not None:  # compiled: each dy added at its window's first maximum, one pass
        xp, _, y = cache[2:]
        dxp = np.zeros(xp.shape, dtype=dy.dtype)  # (C, N, Hp, Wp)
        parallel_ranges(lambda c0, c1: jit.max_pool_route(dy_cn, xp, y, dxp, *kernel, *stride, *dilation, c0, c1),
                        xp.shape[0], 2 * xp.size)
        return crop_channel_major(dxp, pads, x_shape[2:])
    if path == "separable" and tiles:  # (not the compiled scan above: its branches mispredict)
        xp, _, y = cache[2:]
        dxp = np.empty(xp.shape, dtype=dy.dtype)  # (C, N, Hp, Wp)
        two = jit_kernels() if tuple(kernel) == (2, 2) else None
        if two is not None:  # 2x2: one compiled pass of selects
            parallel_ranges(lambda c0, c1: two.max_pool_2x2_route(dy_cn, xp, y, dxp, c0, c1),
                            xp.shape[0], 2 * xp.size)
        else:  # non-overlapping windows: one NumPy pass per offset
            parallel_ranges(lambda c0, c1: _route_tiles(dy_cn[c0:c1], xp[c0:c1], y[c0:c1], kernel, dxp[c0:c1]),
                            xp.shape[0], 2 * xp.size)
    elif path == "separable":
        xp, m, y = cache[2:]
        dxp = np.empty(xp.shape, dtype=dy.dtype)  # (C, N, Hp, Wp)

        def route(c0, c1):  # channels c0..c1-1, on cnnkit's worker threads
            dm = _route_along(dy_cn[c0:c1], m[c0:c1], y[c0:c1], 2, kernel[0], stride[0], dilation[0],
                              np.empty(m[c0:c1].shape, dtype=dy.dtype))  # (c, N, Hp, Wo)
            _route_along(dm, xp[c0:c1], m[c0:c1], 3, kernel[1], stride[1], dilation[1], dxp[c0:c1])
        parallel_ranges(route, xp.shape[0], 2 * xp.size)
    else:
        arg = cache[2]
        two = jit_kernels() if _two_by_two(x_shape, kernel, stride, dilation, pads, out_hw) else None
        if two is not None:  # compiled: every element of dx written once
            dx = np.empty((x_shape[1], x_shape[0]) + tuple(x_shape[2:]), dtype=dy.dtype)  # (C, N, H, W)
            nchw = dy.flags.c_contiguous
            src = dy if nchw else dy_cn
            parallel_ranges(lambda c0, c1: two.max_pool_2x2_arg_route(src, nchw, arg, dx, c0, c1), dx.shape[0],
                            2 * dx.size)
            return as_nchw(dx)
        jit = jit_kernels()
        if jit is not None:  # compiled: dx zeroed, then one add per dy at the pixel arg names
            dx = np.empty((x_shape[1], x_shape[0]) + tuple(x_shape[2:]), dtype=dy.dtype)  # (C, N, H, W)
            nchw = dy.flags.c_contiguous
            src = dy if nchw else dy_cn
            parallel_ranges(lambda c0, c1: jit.max_pool_arg_scatter(src, nchw, arg, dx, *kernel, *stride, pads[0],
                                                                    pads[2], *dilation, c0, c1),
                            dx.shape[0], dx.size + 2 * dy.size)
            return as_nchw(dx)
        dxp = np.zeros((x_shape[1], x_shape[0]) + tuple(size_hw), dtype=dy.dtype)  # (C, N, Hp, Wp)
        for k, (_, _, rows_cols) in enumerate(window_slices(kernel, stride, dilation, out_hw)):
            dxp[_ALL + rows_cols] += np.where(arg == k, dy_cn, 0)
    return crop_channel_major(dxp, pads, x_shape[2:])


def _two_by_two(x_shape, kernel, stride, dilation, pads, out_hw) -> bool:
    """2x2 windows at stride 2 that lie inside the input (no padding, no ceil-mode window
    past the edge): the compiled max/argmax pass (``_jit.max_pool_2x2_argmax``) and its
    route take them. Against the separable NumPy passes (plus a finiteness sum and a copy
    of y) and the route by equality with y, 2 threads, ms, forward / backward: LeNet-5's
    (64, 6, 28, 28) 0.21 / 0.14 -> 0.11 / 0.11; cnn_bn's (128, 32, 28, 28) 1.06 / 1.70 ->
    0.50 / 0.62; (8, 64, 112, 112) 3.4 / 3.0 -> 0.37 / 1.05."""
    return (tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and tuple(dilation) == (1, 1)
            and not any(pads) and 2 * out_hw[0] <= x_shape[2] and 2 * out_hw[1] <= x_shape[3])


def _three_by_three(kernel, stride, dilation) -> bool:
    """3x3 windows without dilation at column stride 1 or 2, any padding: the compiled
    max/argmax pass (``_jit.max_pool_3x3_argmax``), whose backward adds each dy at its
    window's stored argmax (``_jit.max_pool_arg_scatter``), take them."""
    return tuple(kernel) == (3, 3) and tuple(dilation) == (1, 1) and stride[1] in (1, 2)


def _along(axis: int, t: int, s: int, d: int, n_out: int) -> tuple:
    """Index of offset ``t``'s strided slice along ``axis`` (2 = rows, 3 = columns)."""
    idx = [slice(None)] * 4
    idx[axis] = slice(t * d, t * d + s * (n_out - 1) + 1, s)
    return tuple(idx)


def _max_along(xp, axis, k, s, d, n_out, y):
    """Running maximum over the k window offsets along one axis, into ``y``."""
    y[...] = xp[_along(axis, 0, s, d, n_out)]
    for t in range(1, k):
        np.maximum(y, xp[_along(axis, t, s, d, n_out)], out=y)
    return y


def _route_tiles(dy, xp, y, kernel, dxp):
    """Backward of a max pool whose windows tile the input (kernel == stride, no dilation):
    each window offset, in row-major order, takes the gradient of the outputs whose maximum
    it holds and that no earlier offset claimed (PyTorch's first-maximum rule); the last
    offset takes what is left. Every input position lies in at most one window, so the
    offsets' slices of dx are disjoint and are written, not accumulated (into ``dxp``).
    The claims are kept as booleans (``taken``), a quarter of the memory traffic of a
    running float remainder."""
    kh, kw = kernel
    ho, wo = y.shape[2:]
    if xp.shape[2] != ho * kh or xp.shape[3] != wo * kw:
        dxp[...] = 0  # rows or columns that no window reads (floor mode) get no gradient
    hit, taken = np.empty(y.shape, dtype=bool), np.zeros(y.shape, dtype=bool)  # (a 1x1 window: none taken)
    finite = bool(np.isfinite(np.sum(dy))) if dy.size else True
    offsets = [(i, j) for i in range(kh) for j in range(kw)]
    for t, (i, j) in enumerate(offsets):
        sl = (slice(None), slice(None), slice(i, i + kh * ho, kh), slice(j, j + kw * wo, kw))
        if t == len(offsets) - 1:
            np.logical_not(taken, out=hit)  # the outputs no earlier offset claimed
        else:
            np.equal(xp[sl], y, out=hit)
            if t == 0:
                taken[...] = hit
            else:
                np.greater(hit, taken, out=hit)  # a maximum here, and at no earlier offset
                taken |= hit
        if finite:
            np.multiply(dy, hit, out=dxp[sl])
        else:
            dxp[sl] = np.where(hit, dy, 0)  # inf * 0 would give NaN


def _route_along(dy, xp, y, axis, k, s, d, dxp):
    """Backward of ``_max_along``: each dy goes to the first offset equal to its max
    (accumulated into ``dxp``, which is zeroed first; returned)."""
    n_out = y.shape[axis]
    dxp[...] = 0
    rest = dy.copy()  # gradient not yet routed
    hit, g = np.empty(y.shape, dtype=bool), np.empty_like(rest)
    finite = bool(np.isfinite(np.sum(dy))) if dy.size else True
    for t in range(k):
        sl = _along(axis, t, s, d, n_out)
        np.equal(xp[sl], y, out=hit)
        if finite:
            np.multiply(rest, hit, out=g)  # rest where this offset is the max, else 0
        else:
            g = np.where(hit, rest, 0).astype(dy.dtype, copy=False)  # inf * 0 would give NaN
        rest -= g
        dxp[sl] += g
    return dxp


def _max_argmax(xp, pads, kernel, stride, dilation, out_hw):
    """Running maximum over all kH*kW offsets, remembering the winning offset.

    As PyTorch, padding never wins: each window starts at -inf with its first real
    pixel as the provisional argmax (so an all -inf window routes there), and a
    later offset wins only if strictly greater (first maximum wins ties) or NaN.
    """
    first = [np.maximum(0, -(-(p - np.arange(o) * s) // d))  # first offset index that is inside the input
             for p, o, s, d in ((pads[0], out_hw[0], stride[0], dilation[0]),
                                (pads[2], out_hw[1], stride[1], dilation[1]))]
    y = np.full((xp.shape[0], xp.shape[1]) + tuple(out_hw), -np.inf, dtype=xp.dtype)  # (C, N, Ho, Wo)
    arg = np.empty(y.shape, dtype=np.uint8 if kernel[0] * kernel[1] < 256 else np.int32)
    arg[...] = first[0][:, None] * kernel[1] + first[1][None, :]
    for k, (_, _, rows_cols) in enumerate(window_slices(kernel, stride, dilation, out_hw)):
        v = xp[_ALL + rows_cols]
        better = (v > y) | np.isnan(v)
        np.copyto(y, v, where=better)
        np.copyto(arg, k, where=better)
    return y, arg


def max_pool2d_indices(x: np.ndarray, kernel_size, stride=None, padding=0, dilation=1,
                       ceil_mode: bool = False) -> np.ndarray:
    """PyTorch's ``return_indices``: flat ``row * W + col`` of each window's maximum."""
    kernel, stride, dilation, pads, out_hw = _pool_args(
        x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d", max_pool=True)
    xp = pad_channel_major(x, pads, padded_size(out_hw, kernel, stride, dilation), fill=-np.inf)
    _, arg = _max_argmax(xp, pads, kernel, stride, dilation, out_hw)
    i, j = np.divmod(arg.astype(np.int64), kernel[1])  # (C, N, Ho, Wo) window offsets
    rows = np.arange(out_hw[0])[:, None] * stride[0] - pads[0] + i * dilation[0]
    cols = np.arange(out_hw[1])[None, :] * stride[1] - pads[2] + j * dilation[1]
    return as_nchw(rows * x.shape[3] + cols)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """The output of :func:`max_pool2d_forward` alone."""
    return max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def _window_counts(size, pad_before, pad_after, k, s, out, include_pad):
    """Per output index, how many elements a window averages over along one axis
    (PyTorch: padding counts when ``include_pad``; the ceil-mode overhang never does)."""
    start = np.arange(out) * s - pad_before
    end = np.minimum(start + k, size + pad_after)
    if not include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, size)
    return end - start


@functools.lru_cache(maxsize=256)
def _offsets(kernel, stride, out_hw) -> tuple:
    """The (rows, cols) slices of each window offset, row-major (no dilation)."""
    return tuple(rows_cols for _, _, rows_cols in window_slices(kernel, stride, (1, 1), out_hw))


@functools.lru_cache(maxsize=256)
def _divisor(in_hw, pads, kernel, stride, out_hw, count_include_pad, divisor_override, dtype) -> np.ndarray:
    """Each output position's divisor, (Ho, Wo), read-only (it is shared between calls)."""
    if divisor_override is not None:
        divisor = np.full(out_hw, divisor_override, dtype=dtype)
    else:
        ch = _window_counts(in_hw[0], pads[0], pads[1], kernel[0], stride[0], out_hw[0], count_include_pad)
        cw = _window_counts(in_hw[1], pads[2], pads[3], kernel[1], stride[1], out_hw[1], count_include_pad)
        divisor = np.outer(ch, cw).astype(dtype)
    divisor.flags.writeable = False
    return divisor


def avg_pool2d_forward(x: np.ndarray, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                       count_include_pad: bool = True, divisor_override: int | None = None, *,
                       where: str = "avg_pool2d"):
    """Mean over each window. Returns ``(y, cache)``.

    The divisor is the window size including zero padding (``count_include_pad``,
    PyTorch's default) or only the real pixels, or ``divisor_override``.

    Shape:
        ``H_out = floor_or_ceil((H + 2P - kH)/stride) + 1``; y is (N, C, H_out, W_out).
    """
    kernel, stride, _, pads, out_hw = _pool_args(
        x, kernel_size, stride, padding, 1, ceil_mode, where, max_pool=False)
    if divisor_override is not None and (not isinstance(divisor_override, (int, np.integer))
                                         or divisor_override < 1):
        raise value_error(where, "divisor_override must be a positive int",
                          divisor_override=divisor_override)
    size_hw = padded_size(out_hw, kernel, stride, (1, 1))
    xp = pad_channel_major(x, pads, size_hw)  # (C, N, Hp, Wp)
    offsets = _offsets(kernel, stride, out_hw)
    divisor = _divisor(tuple(x.shape[2:]), pads, kernel, stride, out_hw, bool(count_include_pad),
                       divisor_override, x.dtype)
    y = np.empty((x.shape[1], x.shape[0]) + tuple(out_hw), dtype=x.dtype)  # (C, N, Ho, Wo)

    def window_means(c0, c1):  # channels c0..c1-1, on cnnkit's worker threads
        yc, src = y[c0:c1], xp[c0:c1]
        np.copyto(yc, src[_ALL + offsets[0]])
        for rows_cols in offsets[1:]:
            yc += src[_ALL + rows_cols]
        yc /= divisor
    parallel_ranges(window_means, y.shape[0], len(offsets) * y.size + xp.size)
    cache = (x.shape, pads, size_hw, kernel, stride, out_hw, divisor)
    return as_nchw(y), cache


def avg_pool2d_backward(dy: np.ndarray, cache) -> np.ndarray:
    """Spread each ``dy`` evenly (``dy / n``) over its window."""
    x_shape, pads, size_hw, kernel, stride, out_hw, divisor = cache
    dy_cn = dy.transpose(1, 0, 2, 3)  # (C, N, Ho, Wo)
    offsets = _offsets(kernel, stride, out_hw)
    # Windows that tile the buffer exactly (kernel == stride) touch each position once:
    # each offset's slice is written, with no zeroing and no read-modify-write.
    tiles = tuple(kernel) == tuple(stride) and tuple(size_hw) == (out_hw[0] * kernel[0], out_hw[1] * kernel[1])
    make = np.empty if tiles else np.zeros
    dxp = make((x_shape[1], x_shape[0]) + tuple(size_hw), dtype=dy.dtype)  # (C, N, Hp, Wp)

    def spread(c0, c1):  # channels c0..c1-1, on cnnkit's worker threads
        share = dy_cn[c0:c1] / divisor  # (c, N, Ho, Wo)
        out = dxp[c0:c1]
        for rows_cols in offsets:
            if tiles:
                out[_ALL + rows_cols] = share
            else:
                out[_ALL + rows_cols] += share
    parallel_ranges(spread, dxp.shape[0], (len(offsets) + 1) * dy.size)
    return crop_channel_major(dxp, pads, x_shape[2:])


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """The output of :func:`avg_pool2d_forward` alone."""
    return avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)[0]


def adaptive_avg_pool2d_forward(x: np.ndarray, output_size, *, where: str = "adaptive_avg_pool2d"):
    """Average pooling to a fixed output size (PyTorch's bins).

    Output cell ``i`` averages input rows ``floor(i*H/Ho)`` to ``ceil((i+1)*H/Ho)``
    (bins may overlap when H is not a multiple of Ho). ``output_size=1`` is global
    average pooling. ``None`` in ``output_size`` keeps that input size.
    """
    check_array(x, where, ndim=4, layout="N, C, H, W")
    n, c, h, w = x.shape
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size, output_size)
    if not (isinstance(output_size, (tuple, list)) and len(output_size) == 2):
        raise value_error(where, "output_size must be an int or a pair", output_size=output_size)
    ho, wo = (h if output_size[0] is None else output_size[0]), (w if output_size[1] is None else output_size[1])
    if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in (ho, wo)):
        raise value_error(where, "output_size must be positive", output_size=output_size)
    if h < 1 or w < 1:
        raise value_error(where, "input height and width must be positive", input=tuple(x.shape))
    rows = [(i * h // ho, -(-(i + 1) * h // ho)) for i in range(ho)]
    cols = [(j * w // wo, -(-(j + 1) * w // wo)) for j in range(wo)]
    if (ho, wo) == (1, 1):  # global average pooling: (N, C, 1, 1)
        y = _global_mean(x).reshape(n, c, 1, 1)
    elif (h, w) == (ho, wo):
        y = x.copy()  # every bin is one pixel: the identity (e.g. LeNet's 5x5 features)
    elif h % ho == 0 and w % wo == 0:  # equal, disjoint bins: one reshaped mean
        y = x.reshape(n, c, ho, h // ho, wo, w // wo).mean(axis=(3, 5))
    else:
        y = np.empty((n, c, ho, wo), dtype=x.dtype)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y, (x.shape, x.dtype, rows, cols)


def _global_mean(x: np.ndarray) -> np.ndarray:
    """The mean of each (n, c) plane, (N, C), as one matrix-vector product with ones over
    x's memory (NCHW or channel-major, no copy), then divided by H*W. ``x.mean(axis=(2,
    3))`` runs NumPy's reduction loop once per plane, which short planes make slow:
    (1, 2048, 7, 7) 44 -> 7 us, (128, 64, 8, 8) 179 -> 31 us; BLAS sums in the input's
    precision (differences from NumPy's pairwise sums: 1 ulp here)."""
    n, c, h, w = x.shape
    ones = np.ones(h * w, dtype=x.dtype)
    if is_channel_major(x):
        sums = (x.transpose(1, 0, 2, 3).reshape(c, n, h * w) @ ones).T
    else:
        sums = np.ascontiguousarray(x).reshape(n, c, h * w) @ ones
    return sums / x.dtype.type(h * w)


def adaptive_avg_pool2d_backward(dy: np.ndarray, cache) -> np.ndarray:
    x_shape, dtype, rows, cols = cache
    if len(rows) == 1 and len(cols) == 1:
        scale = np.asarray(1.0 / (x_shape[2] * x_shape[3]), dtype=dy.dtype)
        return np.broadcast_to(dy * scale, x_shape).copy()
    h, w = x_shape[2:]
    if (h, w) == (len(rows), len(cols)):
        return dy.copy()
    if h % len(rows) == 0 and w % len(cols) == 0:  # equal, disjoint bins
        bh, bw = h // len(rows), w // len(cols)
        g = dy * np.asarray(1.0 / (bh * bw), dtype=dy.dtype)
        return np.repeat(np.repeat(g, bh, axis=2), bw, axis=3)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            area = np.asarray((r1 - r0) * (c1 - c0), dtype=dy.dtype)
            dx[:, :, r0:r1, c0:c1] += (dy[:, :, i, j] / area)[:, :, None, None]
    return dx


def adaptive_avg_pool2d(x, output_size):
    return adaptive_avg_pool2d_forward(x, output_size)[0]


def global_avg_pool2d(x):
    """Mean over H and W, keeping (N, C, 1, 1)."""
    return adaptive_avg_pool2d_forward(x, 1)[0]


__all__ = ["check_pool_spec", "max_pool2d_forward", "max_pool2d_backward", "max_pool2d_indices", "max_pool2d",
           "avg_pool2d_forward", "avg_pool2d_backward", "avg_pool2d",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward", "adaptive_avg_pool2d",
           "global_avg_pool2d"]

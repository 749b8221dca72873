"""The slow, obvious loop versions of conv and pooling: the oracle for the tests.

Nothing here is meant to be fast. Each function loops over output positions and
does exactly what the lecture says, so that it can be read line by line and
trusted; the fast kernels in ``conv.py`` and ``pool.py`` are tested against it
(and both against PyTorch).

Arguments are already normalized (no ints-or-pairs, no ``'same'``):
``kernel``, ``stride``, ``dilation`` are ``(h, w)`` pairs and ``padding`` is
``(top, bottom, left, right)``. ``same_padding`` and ``out_size`` are the plain
reference formulas that tests use to normalize before calling in here.

Letters: N batch, C input channels, F output channels (filters), G groups,
H/W input height/width, Ho/Wo output height/width, kh/kw kernel height/width.
"""

from __future__ import annotations

import math

import numpy as np


# ---- sizes ----------------------------------------------------------------------
def out_size(size, kernel, stride=1, pad_before=0, pad_after=0, dilation=1, ceil_mode=False):
    """``floor((I + P_before + P_after - d*(K-1) - 1)/S) + 1`` (the lecture's
    ``(I - K + 2P)/S + 1`` with dilation). With ``ceil_mode`` the division rounds
    up, but, as in PyTorch, the last window must start inside the input or the
    left padding, otherwise it is dropped."""
    span = dilation * (kernel - 1) + 1             # the window's extent on the input
    room = size + pad_before + pad_after - span    # how far the window can slide
    if ceil_mode:
        out = -(-room // stride) + 1               # ceil(room / stride) + 1
        if (out - 1) * stride >= size + pad_before:
            out -= 1                               # last window would start in the right padding
    else:
        out = room // stride + 1                   # floor(room / stride) + 1
    return out


def same_padding(size, kernel, stride=1, dilation=1):
    """TensorFlow SAME (= ONNX SAME_UPPER): output ``ceil(I/S)``, extra pixel after.

    Returns ``(before, after)`` with ``total = max((O-1)*S + d*(K-1) + 1 - I, 0)``.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


# ---- convolution ----------------------------------------------------------------
def _pad(x, padding, value=0.0):
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv2d_forward_naive(x, w, b, stride, padding, dilation, groups, flip=False):
    """y[n, f, i, j] = b[f] + sum over the window of x_padded * w[f] (a correlation).

    x (N, C, H, W), w (F, C/G, kh, kw), b (F,) or None. ``flip=True`` rotates the
    kernel by 180 degrees first: a true convolution.
    """
    N, C, H, W = x.shape
    F, Cg, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    top, bottom, left, right = padding
    if flip:
        w = w[:, :, ::-1, ::-1]
    xp = _pad(x, padding)
    Ho = out_size(H, kh, sh, top, bottom, dh)
    Wo = out_size(W, kw, sw, left, right, dw)
    Fg = F // groups                                # filters per group
    y = np.zeros((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            g = f // Fg                             # the group filter f belongs to
            c0, c1 = g * Cg, (g + 1) * Cg           # the input channels it sees
            for i in range(Ho):
                for j in range(Wo):
                    h0, w0 = i * sh, j * sw         # window corner in the padded input
                    window = xp[n, c0:c1,
                                h0:h0 + dh * (kh - 1) + 1:dh,
                                w0:w0 + dw * (kw - 1) + 1:dw]   # (C/G, kh, kw)
                    y[n, f, i, j] = np.sum(window * w[f])
            if b is not None:
                y[n, f] += b[f]
    return y


def conv2d_backward_naive(dy, x, w, b, stride, padding, dilation, groups, flip=False):
    """The lecture's "dot product accounting": every output y[n, f, i, j] was a dot
    product of w[f] with one window of x, so its gradient dy[n, f, i, j] adds
    ``w[f] * dy`` into that window of dx and ``window * dy`` into dw[f].

    Returns ``(dx, dw, db)``; ``db`` is None when ``b`` is None. With ``flip``
    the gradient is with respect to the unflipped ``w``.
    """
    N, C, H, W = x.shape
    F, Cg, kh, kw = w.shape
    sh, sw = stride
    dh, dwl = dilation
    top, bottom, left, right = padding
    w_eff = w[:, :, ::-1, ::-1] if flip else w      # the kernel the forward really used
    xp = _pad(x, padding)
    dxp = np.zeros_like(xp)
    dw_eff = np.zeros(w.shape, dtype=w.dtype)
    Ho, Wo = dy.shape[2], dy.shape[3]
    Fg = F // groups
    for n in range(N):
        for f in range(F):
            g = f // Fg
            c0, c1 = g * Cg, (g + 1) * Cg
            for i in range(Ho):
                for j in range(Wo):
                    h0, w0 = i * sh, j * sw
                    rows = slice(h0, h0 + dh * (kh - 1) + 1, dh)
                    cols = slice(w0, w0 + dwl * (kw - 1) + 1, dwl)
                    g_out = dy[n, f, i, j]
                    dxp[n, c0:c1, rows, cols] += w_eff[f] * g_out
                    dw_eff[f] += xp[n, c0:c1, rows, cols] * g_out
    dx = dxp[:, :, top:top + H, left:left + W]
    dw = dw_eff[:, :, ::-1, ::-1] if flip else dw_eff   # chain rule through the flip
    db = None if b is None else dy.sum(axis=(0, 2, 3)).astype(b.dtype)
    return np.ascontiguousarray(dx), np.ascontiguousarray(dw), db


# ---- pooling ----------------------------------------------------------------------
def window_indices(i, kernel, stride, pad_before, dilation, size):
    """The input rows (unpadded coordinates) that window ``i`` covers and that
    exist: rows that fall into the padding are left out."""
    start = i * stride - pad_before
    return [start + a * dilation for a in range(kernel)
            if 0 <= start + a * dilation < size]


def max_pool2d_naive(x, kernel, stride, padding, dilation, ceil_mode):
    """Max over each window; the padding counts as -inf (it never wins).

    Returns ``(y, argmax)`` where ``argmax[n, c, i, j]`` is the flat index
    ``row * W + col`` in the unpadded input, as PyTorch's ``return_indices``.
    Ties go to the first maximum in row-major window order; a NaN wins over
    everything (the last NaN in the window), as PyTorch's CPU kernel:
    ``if (val > maxval || isnan(val))``.
    """
    N, C, H, W = x.shape
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    top, bottom, left, right = padding
    Ho = out_size(H, kh, sh, top, bottom, dh, ceil_mode)
    Wo = out_size(W, kw, sw, left, right, dw, ceil_mode)
    y = np.full((N, C, Ho, Wo), -np.inf, dtype=x.dtype)
    argmax = np.zeros((N, C, Ho, Wo), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                rows = window_indices(i, kh, sh, top, dh, H)
                for j in range(Wo):
                    cols = window_indices(j, kw, sw, left, dw, W)
                    best, best_idx = None, -1
                    for r in rows:
                        for s in cols:
                            v = x[n, c, r, s]
                            if best is None or v > best or np.isnan(v):
                                best, best_idx = v, r * W + s
                    if best is not None:
                        y[n, c, i, j] = best
                        argmax[n, c, i, j] = best_idx
    return y, argmax


def max_pool2d_backward_naive(dy, argmax, x_shape):
    """Route each dy to its window's argmax; overlapping windows accumulate."""
    N, C, H, W = x_shape
    dx = np.zeros((N, C, H * W), dtype=dy.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    dx[n, c, argmax[n, c, i, j]] += dy[n, c, i, j]
    return dx.reshape(x_shape)


def _avg_windows(x_shape, kernel, stride, padding, ceil_mode, count_include_pad,
                 divisor_override):
    """Yield ``(i, j, rows, cols, divisor)`` for each output position of an average pool.

    As PyTorch: a window is first clipped to the padded input (which matters in
    ceil mode), its size there is the divisor with ``count_include_pad``;
    otherwise the divisor is the number of real input pixels in the window.
    """
    N, C, H, W = x_shape
    kh, kw = kernel
    sh, sw = stride
    top, bottom, left, right = padding
    Ho = out_size(H, kh, sh, top, bottom, 1, ceil_mode)
    Wo = out_size(W, kw, sw, left, right, 1, ceil_mode)
    for i in range(Ho):
        h0 = i * sh - top
        h1 = min(h0 + kh, H + bottom)               # clipped to the padded input
        rows = range(max(h0, 0), min(h1, H))        # the real rows
        for j in range(Wo):
            w0 = j * sw - left
            w1 = min(w0 + kw, W + right)
            cols = range(max(w0, 0), min(w1, W))
            if divisor_override is not None:
                divisor = divisor_override
            elif count_include_pad:
                divisor = (h1 - h0) * (w1 - w0)
            else:
                divisor = len(rows) * len(cols)
            yield i, j, rows, cols, divisor


def avg_pool2d_naive(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True,
                     divisor_override=None):
    """Mean over each window (the sum divided by the divisor described above)."""
    N, C, H, W = x.shape
    windows = list(_avg_windows(x.shape, kernel, stride, padding, ceil_mode,
                                count_include_pad, divisor_override))
    Ho = out_size(H, kernel[0], stride[0], padding[0], padding[1], 1, ceil_mode)
    Wo = out_size(W, kernel[1], stride[1], padding[2], padding[3], 1, ceil_mode)
    y = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i, j, rows, cols, divisor in windows:
                total = 0.0
                for r in rows:
                    for s in cols:
                        total += x[n, c, r, s]
                y[n, c, i, j] = total / divisor
    return y


def avg_pool2d_backward_naive(dy, x_shape, kernel, stride, padding, ceil_mode=False,
                              count_include_pad=True, divisor_override=None):
    """Spread each dy over its window: every real input pixel gets ``dy / divisor``."""
    N, C, H, W = x_shape
    dx = np.zeros(x_shape, dtype=dy.dtype)
    windows = list(_avg_windows(x_shape, kernel, stride, padding, ceil_mode,
                                count_include_pad, divisor_override))
    for n in range(N):
        for c in range(C):
            for i, j, rows, cols, divisor in windows:
                for r in rows:
                    for s in cols:
                        dx[n, c, r, s] += dy[n, c, i, j] / divisor
    return dx


def adaptive_avg_pool2d_naive(x, output_size):
    """Output cell (i, j) averages rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1``
    (and the same for columns), as PyTorch's AdaptiveAvgPool2d."""
    N, C, H, W = x.shape
    Ho, Wo = output_size
    y = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        r0, r1 = (i * H) // Ho, -(-((i + 1) * H) // Ho)
        for j in range(Wo):
            c0, c1 = (j * W) // Wo, -(-((j + 1) * W) // Wo)
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


def adaptive_avg_pool2d_backward_naive(dy, x_shape):
    N, C, H, W = x_shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for i in range(Ho):
        r0, r1 = (i * H) // Ho, -(-((i + 1) * H) // Ho)
        for j in range(Wo):
            c0, c1 = (j * W) // Wo, -(-((j + 1) * W) // Wo)
            dx[:, :, r0:r1, c0:c1] += dy[:, :, i:i + 1, j:j + 1] / ((r1 - r0) * (c1 - c0))
    return dx

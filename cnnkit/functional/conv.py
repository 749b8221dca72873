"""2-D convolution (correlation, no kernel flip) as im2col + one GEMM per group.

Letters: N batch, C input channels, F output channels (filters), G groups,
Cg = C/G, Fg = F/G, kH/kW kernel, Ho/Wo output size, L = N*Ho*Wo, K = Cg*kH*kW.

The lecture's sliding-window dot product
``S(i, j) = sum_m sum_n I(i*s + m*d, j*s + n*d) K(m, n)`` (summed over input
channels, plus a bias) is computed for all windows at once: the window contents
are copied into a column matrix ``x_col`` (K, L) by looping over the kH*kW kernel
offsets (one strided slice each), and ``y = w (Fg, K) @ x_col (K, L)`` per group.

Backward ("dot product accounting"):
- ``db = sum of dy`` over N, Ho, Wo;
- ``dw = dy (Fg, L) @ x_col.T (L, K)``: each weight met every input it multiplied;
- ``dx``: ``dx_col = w.T @ dy`` scattered back into the windows (col2im, again by
  kernel offsets). At stride 1 this equals a "full" correlation of dy with the
  kernel rotated by 180 degrees and in/out channels swapped: backpropagation is
  a flipped convolution (tests check that identity).

Outputs are NCHW-shaped views of channel-major (C, N, H, W) memory, which is what
the next convolution's im2col reads fastest; use ``np.ascontiguousarray`` if you
need NCHW memory.
"""

from __future__ import annotations

import numpy as np

from .._errors import value_error
from ._check import check_array, check_same_dtype, pair
from .window import (as_nchw, crop_channel_major, output_hw, pad_channel_major, padded_size,
                     resolve_padding, window_slices)


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride=1,
                   padding=0, dilation=1, groups: int = 1, flip: bool = False, *,
                   where: str = "conv2d"):
    """Forward pass of a 2-D convolution. Returns ``(y, cache)``.

    Args:
        x: input (N, C, H, W). w: weight (F, C/groups, kH, kW). b: bias (F,) or None.
        stride, dilation: int or (h, w). padding: int, (h, w), (top, bottom, left,
            right), 'valid' or 'same' (output = ceil(input/stride), extra pixel at
            the bottom/right).
        groups: split channels into groups convolved separately (``groups == C``
            is depthwise; F = m*C gives a channel multiplier m).
        flip: True computes a true convolution (kernel rotated 180 degrees);
            the default is the correlation that CNNs use.

    Shape:
        ``H_out = floor((H + P_top + P_bottom - dilation*(kH - 1) - 1)/stride + 1)``,
        likewise ``W_out``; y is (N, F, H_out, W_out).
    """
    stride, dilation, pads, out_hw = check_conv_args(x, w, b, stride, padding, dilation, groups, where)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    g, fg = groups, f // groups
    ho, wo = out_hw
    w_eff = w[:, :, ::-1, ::-1] if flip else w

    if (kh, kw) == (1, 1) and stride == (1, 1) and pads == (0, 0, 0, 0):
        x_col = x.transpose(1, 0, 2, 3).reshape(g, cg, n * ho * wo)  # (G, K=Cg, L), no copy when channel-major
    else:
        xp = pad_channel_major(x, pads, padded_size(out_hw, (kh, kw), stride, dilation))  # (C, N, Hp, Wp)
        x_col = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
        for i, j, rows_cols in window_slices((kh, kw), stride, dilation, out_hw):
            x_col[:, i, j] = xp[(slice(None), slice(None)) + rows_cols]  # (C, N, Ho, Wo)
        x_col = x_col.reshape(g, cg * kh * kw, n * ho * wo)  # (G, K, L)

    w_mat = w_eff.reshape(g, fg, cg * kh * kw)  # (G, Fg, K)
    y = np.matmul(w_mat, x_col) if g > 1 else (w_mat[0] @ x_col[0])[None]  # (G, Fg, L)
    y = y.reshape(f, n, ho, wo)  # (F, N, Ho, Wo)
    if b is not None:
        y += b[:, None, None, None]
    cache = (x.shape, x_col, w_mat, w.shape, pads, stride, dilation, groups, flip, b is not None)
    return as_nchw(y), cache


def conv2d_backward(dy: np.ndarray, cache):
    """Gradients of a 2-D convolution: ``(dx, dw, db)`` (db is None without bias)."""
    x_shape, x_col, w_mat, w_shape, pads, stride, dilation, groups, flip, has_bias = cache
    n, c, h, wd = x_shape
    f, cg, kh, kw = w_shape
    g, fg = groups, f // groups
    ho, wo = dy.shape[2], dy.shape[3]
    if dy.shape != (n, f, ho, wo):
        raise value_error("conv2d_backward", "dy must have the forward output's shape",
                          dy=tuple(dy.shape), expected=(n, f, ho, wo))

    dy_cn = dy.transpose(1, 0, 2, 3)  # (F, N, Ho, Wo)
    db = dy_cn.sum(axis=(1, 2, 3)) if has_bias else None
    dy_mat = dy_cn.reshape(g, fg, n * ho * wo)  # (G, Fg, L)

    if g > 1:
        dw = np.matmul(dy_mat, x_col.transpose(0, 2, 1))  # (G, Fg, K)
        dx_col = np.matmul(w_mat.transpose(0, 2, 1), dy_mat)  # (G, K, L)
    else:
        dw = (dy_mat[0] @ x_col[0].T)[None]
        dx_col = (w_mat[0].T @ dy_mat[0])[None]
    dw = dw.reshape(w_shape)
    if flip:
        dw = np.ascontiguousarray(dw[:, :, ::-1, ::-1])

    if (kh, kw) == (1, 1) and stride == (1, 1) and pads == (0, 0, 0, 0):
        dx = as_nchw(dx_col.reshape(c, n, h, wd))
    else:
        dx_col = dx_col.reshape(c, kh, kw, n, ho, wo)  # (C, kH, kW, N, Ho, Wo)
        hp, wp = padded_size((ho, wo), (kh, kw), stride, dilation)
        dxp = np.zeros((c, n, hp, wp), dtype=dy.dtype)  # (C, N, Hp, Wp)
        for i, j, rows_cols in window_slices((kh, kw), stride, dilation, (ho, wo)):
            dxp[(slice(None), slice(None)) + rows_cols] += dx_col[:, i, j]
        dx = crop_channel_major(dxp, pads, (h, wd))
    return dx, dw, db


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, flip=False):
    """The output of :func:`conv2d_forward` alone."""
    return conv2d_forward(x, w, b, stride, padding, dilation, groups, flip)[0]


def check_conv_args(x, w, b, stride, padding, dilation, groups, where):
    """Validate a convolution call; return (stride, dilation, pads, out_hw)."""
    check_array(x, where, ndim=4, layout="N, C, H, W")
    check_array(w, where, ndim=4, name="weight", layout="F, C/groups, kH, kW")
    if b is not None:
        check_array(b, where, ndim=1, name="bias")
    check_same_dtype(where, input=x, weight=w, bias=b)
    stride = pair(stride, "stride", where, minimum=1)
    dilation = pair(dilation, "dilation", where, minimum=1)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise value_error(where, "groups must be a positive int", groups=groups)
    f, cg, kh, kw = w.shape
    if min(kh, kw) < 1:
        raise value_error(where, "kernel_size must be positive", weight=tuple(w.shape))
    if f % groups:
        raise value_error(where, "out_channels must be divisible by groups",
                          out_channels=f, groups=groups)
    if x.shape[1] != cg * groups:
        raise value_error(where, f"input has {x.shape[1]} channels, but weight expects "
                          f"{cg * groups} (weight in_channels/groups={cg} x groups={groups})",
                          input=tuple(x.shape), weight=tuple(w.shape), groups=groups)
    if b is not None and b.shape != (f,):
        raise value_error(where, f"bias must have one value per output channel ({f})",
                          bias=tuple(b.shape))
    pads = resolve_padding(padding, (kh, kw), stride, dilation, x.shape[2:], where)
    out_hw = output_hw(x.shape[2:], (kh, kw), stride, dilation, pads, where,
                       input_shape=x.shape, padding=padding)
    return stride, dilation, pads, out_hw


__all__ = ["conv2d_forward", "conv2d_backward", "conv2d", "check_conv_args"]

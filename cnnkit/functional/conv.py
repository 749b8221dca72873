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
    geo = _Geometry(x.shape, w.shape, pads, stride, dilation, out_hw)
    w_mat = (w[:, :, ::-1, ::-1] if flip else w).reshape(g, fg, cg * kh * kw)  # (G, Fg, K)

    depthwise = cg == 1 and fg == 1 and geo.mode != "pointwise"
    if depthwise:  # K*K shifted multiply-adds instead of a column matrix and tiny GEMMs
        xp = geo.pad(x)  # (C, N, Hp, Wp)
        y = np.zeros((c,) + geo.tap_shape, dtype=x.dtype)  # (C, L) or (C, N, Ho, Wo)
        tmp = np.empty_like(y)
        for k, tap in geo.taps(xp):
            y += np.multiply(tap, w_mat[:, 0, k].reshape((c,) + (1,) * (y.ndim - 1)), out=tmp)
        cache_x = xp
    else:
        cache_x = geo.im2col(x).reshape(g, cg * kh * kw, -1)  # (G, K, L)
        y = _matmul(w_mat, cache_x)  # (G, Fg, L)
    y = geo.col_to_output(y.reshape(f, -1))  # (F, N, Ho, Wo), compact
    if b is not None:
        y += b[:, None, None, None]
    cache = (geo, cache_x, w_mat, groups, flip, b is not None, depthwise)
    return as_nchw(y), cache


def conv2d_backward(dy: np.ndarray, cache, need_dx: bool = True, need_dw: bool = True):
    """Gradients of a 2-D convolution: ``(dx, dw, db)`` (db is None without bias).

    ``need_dx=False`` / ``need_dw=False`` skip that gradient (it is returned as None):
    a first layer needs no dx (no GEMM, no col2im), a frozen one no dw."""
    geo, cache_x, w_mat, groups, flip, has_bias, depthwise = cache
    n, c, h, wd = geo.x_shape
    f, cg, kh, kw = geo.w_shape
    if dy.shape != (n, f) + geo.out_hw:
        raise value_error("conv2d_backward", "dy must have the forward output's shape",
                          dy=tuple(dy.shape), expected=(n, f) + geo.out_hw)
    dy_cn = dy.transpose(1, 0, 2, 3)  # (F, N, Ho, Wo)
    db = dy_cn.sum(axis=(1, 2, 3)) if has_bias else None
    dy_col = geo.output_to_col(dy_cn)  # (F, L) or (F, N, Ho, Wo)

    if depthwise:  # cache_x is the padded input
        xp = cache_x
        dw = np.empty((c, kh * kw), dtype=dy.dtype)
        dot = "cl,cl->c" if dy_col.ndim == 2 else "cnhw,cnhw->c"
        if need_dw:
            for k, tap in geo.taps(xp):
                dw[:, k] = np.einsum(dot, dy_col, tap)  # sum of dy * x over every position
        dx = None
        if need_dx:
            dxp, tmp = geo.zeros_padded(dy.dtype), np.empty_like(dy_col)
            scale = (c,) + (1,) * (dy_col.ndim - 1)
            for k, dtap in geo.taps(dxp):
                dtap += np.multiply(dy_col, w_mat[:, 0, k].reshape(scale), out=tmp)
            dx = crop_channel_major(dxp, geo.pads, (h, wd))
        dw = dw.reshape(geo.w_shape)
    else:
        dy_mat = dy_col.reshape(groups, f // groups, -1)  # (G, Fg, L)
        dw = dx = None
        if need_dw:
            dw = _matmul(dy_mat, cache_x.transpose(0, 2, 1)).reshape(geo.w_shape)  # (G, Fg, K) -> (F, Cg, kH, kW)
        if need_dx:
            dx_col = _matmul(w_mat.transpose(0, 2, 1), dy_mat)  # (G, K, L)
            dx = geo.col2im(dx_col.reshape(c, kh * kw, -1))  # (N, C, H, W) view of (C, N, H, W)
    if not need_dw:
        dw = None
    elif flip:
        dw = np.ascontiguousarray(dw[:, :, ::-1, ::-1])
    return dx, dw, db


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(G, M, K) @ (G, K, L) per group; one BLAS GEMM when G == 1."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return np.matmul(a, b)


class _Geometry:
    """Where each kernel offset ("tap") reads, for the three ways of building columns.

    - ``pointwise``: 1x1 kernel, stride 1, no padding: the input itself is the
      column matrix (C, N*H*W) - no copy when it is channel-major.
    - ``shift`` (stride 1): flatten the padded input to (C, N*Hp*Wp); then tap
      (i, j) is the contiguous run starting at ``i*D*Wp + j*D``. Columns are
      computed for every padded-grid position (a few extra at the right and
      bottom borders, dropped afterwards) in exchange for long contiguous copies.
    - ``strided`` (stride > 1, one input channel, or a padded grid much larger than
      the output): one strided 2-D slice per tap (window_slices).
    """

    # Shift mode computes a column for every padded-grid position. Measured (fwd + bwd,
    # 2 threads): past 1.3 padded-grid positions per output (5x5 'valid' on 14x14: 1.96;
    # 3x3 'same' on 7x7: 1.65) the strided copies are as fast or faster, and with one
    # input channel strided is about 2x faster; in between the two are within noise.
    shift_max_waste = 1.3

    def __init__(self, x_shape, w_shape, pads, stride, dilation, out_hw):
        self.x_shape, self.w_shape, self.pads = tuple(x_shape), tuple(w_shape), pads
        self.stride, self.dilation, self.out_hw = stride, dilation, tuple(out_hw)
        n, c, h, wd = x_shape
        kh, kw = w_shape[2:]
        ho, wo = out_hw
        self.mode = "pointwise" if (kh, kw) == (1, 1) and stride == (1, 1) and pads == (0, 0, 0, 0) else None
        self.padded_hw = padded_size(out_hw, (kh, kw), stride, dilation)
        hp, wp = self.padded_hw
        if self.mode != "pointwise":
            waste = hp * wp / max(ho * wo, 1)
            depthwise = w_shape[1] == 1 and w_shape[0] == c > 1  # contiguous taps pay off there
            shift = stride == (1, 1) and c > 1 and (waste <= self.shift_max_waste or depthwise)
            self.mode = "shift" if shift else "strided"
        if self.mode == "shift":
            self.offsets = [i * dilation[0] * wp + j * dilation[1] for i in range(kh) for j in range(kw)]
            self.cols = max(n * hp * wp - self.offsets[-1], 0)  # positions whose window fits the buffer
            self.tap_shape = (self.cols,)
        else:
            self.cols = n * ho * wo
            self.tap_shape = (n, ho, wo)

    def pad(self, x: np.ndarray) -> np.ndarray:
        return pad_channel_major(x, self.pads, self.padded_hw)  # (C, N, Hp, Wp)

    def zeros_padded(self, dtype) -> np.ndarray:
        n, c = self.x_shape[:2]
        return np.zeros((c, n) + tuple(self.padded_hw), dtype=dtype)  # (C, N, Hp, Wp)

    def taps(self, xp: np.ndarray):
        """Yield ``(k, view)`` for every tap k (row-major over the kernel): the view of
        the padded (C, N, Hp, Wp) buffer that tap reads, shaped (C,) + tap_shape."""
        if self.mode == "shift":
            flat = xp.reshape(xp.shape[0], -1)  # (C, N*Hp*Wp)
            for k, off in enumerate(self.offsets):
                yield k, flat[:, off:off + self.cols]
        else:
            kernel = self.w_shape[2:]
            for k, (_, _, rows_cols) in enumerate(window_slices(kernel, self.stride, self.dilation,
                                                                self.out_hw)):
                yield k, xp[(slice(None), slice(None)) + rows_cols]  # (C, N, Ho, Wo)

    def im2col(self, x: np.ndarray) -> np.ndarray:
        """(C, kH*kW, L) columns (pointwise: (C, L))."""
        n, c, h, wd = self.x_shape
        if self.mode == "pointwise":
            return x.transpose(1, 0, 2, 3).reshape(c, n * h * wd)  # (C, L): copies only if not channel-major
        kk = self.w_shape[2] * self.w_shape[3]
        x_col = np.empty((c, kk) + self.tap_shape, dtype=x.dtype)
        for k, tap in self.taps(self.pad(x)):
            x_col[:, k] = tap
        return x_col

    def col_to_output(self, y: np.ndarray) -> np.ndarray:
        """(F, L) result -> compact (F, N, Ho, Wo) (drops the shift mode's extra columns)."""
        f, (ho, wo), n = y.shape[0], self.out_hw, self.x_shape[0]
        if self.mode != "shift":
            return y.reshape(f, n, ho, wo)
        hp, wp = self.padded_hw
        out = np.empty((f, n, ho, wo), dtype=y.dtype)
        full = np.empty((f, n * hp * wp), dtype=y.dtype)  # (F, N*Hp*Wp)
        full[:, :self.cols] = y
        out[...] = full.reshape(f, n, hp, wp)[:, :, :ho, :wo]
        return out

    def output_to_col(self, dy_cn: np.ndarray) -> np.ndarray:
        """(F, N, Ho, Wo) gradient -> the column layout, (F, L) (zeros at extra columns)
        or (F, N, Ho, Wo) for strided and pointwise."""
        f, n = dy_cn.shape[:2]
        if self.mode != "shift":
            return dy_cn
        hp, wp = self.padded_hw
        ho, wo = self.out_hw
        full = np.zeros((f, n, hp, wp), dtype=dy_cn.dtype)  # (F, N, Hp, Wp)
        full[:, :, :ho, :wo] = dy_cn
        return full.reshape(f, -1)[:, :self.cols]

    def col2im(self, dx_col: np.ndarray) -> np.ndarray:
        """Add (C, kH*kW, L) column gradients back into the windows: the adjoint of im2col."""
        n, c, h, wd = self.x_shape
        if self.mode == "pointwise":
            return as_nchw(dx_col.reshape(c, n, h, wd))
        dxp = self.zeros_padded(dx_col.dtype)
        dx_col = dx_col.reshape((c, dx_col.shape[1]) + self.tap_shape)
        for k, tap in self.taps(dxp):
            tap += dx_col[:, k]
        return crop_channel_major(dxp, self.pads, (h, wd))


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

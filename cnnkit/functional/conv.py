"""2-D convolution (correlation, no kernel flip) as im2col + one GEMM per group.

Letters: N batch, C input channels, F output channels (filters), G groups,
Cg = C/G, Fg = F/G, kH/kW kernel, Ho/Wo output size, L = N*Ho*Wo, K = Cg*kH*kW.

The lecture's sliding-window dot product
``S(i, j) = sum_m sum_n I(i*s + m*d, j*s + n*d) K(m, n)`` (summed over input
channels, plus a bias) is computed for all windows at once: the window contents
are copied into a column matrix ``x_col`` (K, L) by looping over the kH*kW kernel
offsets (one strided slice each), and ``y = w (Fg, K) @ x_col (K, L)`` per group.
The columns are built a few images at a time into one reused buffer of about
4 MiB, so the GEMM reads them from cache rather than from memory; the backward
builds them again instead of keeping them (the cache holds the padded input, a
kH*kW-th of the columns' size), unless they total at most 8 MiB. The chunks run on
cnnkit's worker threads (``cnnkit.runtime``).

Backward ("dot product accounting"):
- ``db = sum of dy`` over N, Ho, Wo;
- ``dw = dy (Fg, L) @ x_col.T (L, K)``: each weight met every input it multiplied
  (summed chunk by chunk);
- ``dx``: ``dx_col = w.T @ dy`` scattered back into the windows (col2im, again by
  kernel offsets, chunk by chunk). At stride 1 this equals a "full" correlation of
  dy with the kernel rotated by 180 degrees and in/out channels swapped: backpropagation is
  a flipped convolution (tests check that identity). Where that is faster (strided
  mode, 32 or more input channels per group; ``_Geometry.dx_geometry``) the backward
  computes dx exactly so, with the forward's own im2col + GEMM.

Three kinds of convolution skip the columns where Numba is installed (compiled loops in
``_jit.py``, ``cnnkit.runtime.set_jit``; the NumPy code here stays as their twin):
depthwise ones (one input channel per filter, kH*kW shifted multiply-adds per channel);
at stride 1 with one group, those whose K = C*kH*kW is at most 32 (a network's
first layer: the same shifted multiply-adds per image, summed over channels); and 3x3
stride-1 ones with 16+ channels and enough output tiles, which run as Winograd
F(2x2, 3x3) (``winograd.py``; 2.25x fewer multiply-adds, see ``_winograd``). Where
the columns are built in strided mode, the copies (im2col) and adds (col2im) are
compiled too, in NumPy's order (the same bits).

Outputs are NCHW-shaped views of channel-major (C, N, H, W) memory, which is what
the next convolution's im2col reads fastest; use ``np.ascontiguousarray`` if you
need NCHW memory.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from .._errors import value_error
from ..runtime import get_num_threads, jit_kernels, parallel_map, parallel_ranges, split_range, workers_again
from . import winograd
from .activation import add
from ._check import check_array, check_same_dtype, memo, pair
from .window import (Planes, as_nchw, crop_channel_major, output_hw, pad_channel_major, padded_size, planes,
                     resolve_padding, window_slices)


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride=1,
                   padding=0, dilation=1, groups: int = 1, flip: bool = False, *,
                   relu: bool = False, relu_max: float | None = None, residual: np.ndarray | None = None,
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
        relu: apply ``max(y, 0)`` to the output while each part of it is in cache
            (inference: ``cnnkit.nn.fuse_for_inference``). The cache then serves no
            backward: :func:`conv2d_backward` refuses it.
        relu_max: with ``relu``, ``min(max(y, 0), relu_max)`` instead (6: a fused ReLU6,
            MobileNetV2's; NaN kept). The 1x1, im2col, stride-2 direct and 3x3 depthwise
            kernels clamp as they store; other paths take one more pass.
        residual: an array added to the output before the ReLU, ``y = conv + residual``
            with ``Add``'s result (a residual join folded into the conv for inference,
            ``cnnkit.nn.fuse_for_inference``; no backward either). Of the output's shape
            and dtype, the im2col and 1x1 convs add it in the GEMM epilogue, while each
            part of the output is in cache: ResNet-50's 1x1 64->256 at 56x56, batch 1,
            conv then add 0.67 ms, fused 0.33 (the GEMM alone 0.25). Otherwise (other
            kernels, broadcasting, another dtype) it is added after the conv.

    For a backward the cache keeps x itself wherever the kernels read x rather than a
    padded copy (1x1 convs, columns built from x, Winograd from 32 channels, 3x3 'same'
    depthwise convs), as a training BatchNorm and PyTorch keep their input: change x in
    place between the forward and the backward and the gradients are wrong.

    Shape:
        ``H_out = floor((H + P_top + P_bottom - dilation*(kH - 1) - 1)/stride + 1)``,
        likewise ``W_out``; y is (N, F, H_out, W_out).
    """
    stride, dilation, pads, out_hw = check_conv_args(x, w, b, stride, padding, dilation, groups, where)
    if relu_max is not None and not (isinstance(relu_max, (int, float, np.floating, np.integer))
                                     and not isinstance(relu_max, bool) and 0 < relu_max < np.inf):
        raise value_error(where, "relu_max must be a positive finite number (6 for a ReLU6) or None",
                          relu_max=relu_max)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    g, fg = groups, f // groups
    ho, wo = out_hw
    geo = _geometry(tuple(x.shape), tuple(w.shape), pads, stride, dilation, tuple(out_hw), groups)
    w_mat = (w[:, :, ::-1, ::-1] if flip else w).reshape(g, fg, cg * kh * kw)  # (G, Fg, K)

    depthwise = cg == 1 and fg == 1 and geo.mode != "pointwise"
    jit = jit_kernels() if depthwise else None
    direct = _direct(geo, depthwise)
    prepared = not flip and winograd.frozen(w)  # constant weights: their filter transform is kept
    wino = _winograd(geo, prepared)
    inference = relu or residual is not None  # no backward: nothing kept for one
    in_epilogue = (residual is not None and wino is None and direct is None and not depthwise
                   and (geo.mode == "pointwise" or (geo.mode == "strided" and not geo.batch_inner))
                   and residual.shape == (n, f) + tuple(out_hw) and residual.dtype == x.dtype)
    relu_after = relu and residual is not None and not in_epilogue  # after the residual's add
    relu = relu and not relu_after
    hi = x.dtype.type(np.inf if relu_max is None else relu_max)  # the kernels' cap
    flat = _flat_depthwise(geo) if jit is not None else None  # (stride 1 or 2)
    stem = _direct_s2(geo, depthwise) if relu and residual is None else None  # (inference only)
    if flat == 2 and not inference:
        flat = None  # (the stride-2 backward reads the padded copy that depthwise_forward keeps)
    # the paths whose kernels apply relu_max as they store (others: one more pass below)
    capped = relu_max is None or (wino is None and direct is None and (flat is not None or not depthwise))
    if wino is not None:  # 3x3, stride 1: Winograd F(2x2, 3x3), 2.25x fewer multiply-adds
        with workers_again():  # (batch-1 inference: its tile rows on the workers all the same)
            y, saved = winograd.forward(x, w_mat.reshape(f, c, kh, kw), b, pads, out_hw, relu, wino,
                                        u=winograd.prepared_filter(w) if prepared else None)
        cache_x, kept = _WinogradSaved(saved, wino), None
    elif direct is not None:  # a tiny K = C*kH*kW: compiled shifted multiply-adds, no columns
        cache_x = geo.source(x)  # padded (C, N, Hp, Wp), as the column path keeps
        y = np.empty((f, n) + tuple(out_hw), dtype=x.dtype)
        wk = np.ascontiguousarray(w_mat.reshape(f, c, kh, kw))
        bk = b if b is not None else _unused(1, x.dtype)
        parallel_ranges(lambda n0, n1: direct.conv_direct_forward(cache_x, wk, bk, y, *dilation, n0, n1, relu),
                        n, y.size * cg * kh * kw)
        kept = None
    elif stem is not None:
        # a few input channels at stride 2 (MobileNet's 3->32 3x3 stem; not ResNet's 7x7, K = 147):
        # the image split into four flat phases, each tap a unit-stride run of one
        # (_jit.conv_direct_s2_forward); units of eight filters of one image, on the workers at
        # batch 1 too
        y = np.empty((f, n) + tuple(out_hw), dtype=x.dtype)
        wk = np.ascontiguousarray(w_mat.reshape(f, c, kh, kw))
        bk = b if b is not None else _unused(1, x.dtype)
        xf, sn, sc = planes(x)
        units, macs = n * -(-f // stem.DIRECT_FILTER_BLOCK), y.size * cg * kh * kw
        with workers_again():  # (below DIRECT_S2_PARALLEL_MACS the hand-off costs more than it saves)
            parallel_ranges(lambda u0, u1: stem.conv_direct_s2_forward(xf, sn, sc, h, wd, wk, bk, y, pads[0], pads[2],
                                                                       u0, u1, relu, hi, stem.DIRECT_S2_BAND),
                            units, macs if macs >= stem.DIRECT_S2_PARALLEL_MACS else 0)
        cache_x, kept = None, None
    elif flat is not None:
        # MobileNet's 3x3 'same' and (inference) stride-2 ones: each plane flat (at stride 2 split
        # into its even and odd positions), all its outputs in one vectorized loop; no padded
        # copy: a backward reads x itself (depthwise_backward_3x3_same)
        y = np.empty((c, n) + tuple(out_hw), dtype=x.dtype)
        wk = np.ascontiguousarray(w_mat.reshape(c, kh, kw))
        bk = b if b is not None else _unused(1, x.dtype)
        src = Planes(x)  # (its planes() taken once: the kernels read them, a backward keeps them)
        kernel = jit.depthwise_3x3_same if flat == 1 else jit.depthwise_3x3_s2_same
        # (on the workers from 256K outputs at stride 1, 128K at stride 2: a hand-off costs
        # 30-40 us. conv2d_forward, 2 threads, us, serial / split: stride 1, batch 1, 512 @14
        # 38 / 96, 1024 @7 47 / 102, 256 @28 57 / 110, 128 @56 137 / 111, batch 8 512 @14 267 /
        # 196; stride 2 (and the column-phase kernel before, split), batch 1, 512 @14 49 / 77 /
        # 104, 256 @28 56 / 85 / 121, 128 @56 87 / 103 / 119, 64 @112 140 / 136 / 146; batch 8
        # 512 @14 331 / 212 / 401)
        parallel_ranges(lambda c0, c1: kernel(src.flat, src.sn, src.sc, n, h, wd, wk, bk, y, c0, c1, relu, hi),
                        c, flat * y.size)
        cache_x = None if inference else src
    elif (jit is not None and inference and (kh, kw) == (3, 3) and tuple(stride) == (2, 2)
          and tuple(dilation) == (1, 1) and out_hw[1] >= jit.K3_PHASES_MIN_WIDTH):
        # no backward: the padded plane as even and odd columns, a channel at a time in cache
        y = np.empty((c, n) + tuple(out_hw), dtype=x.dtype)
        wk = np.ascontiguousarray(w_mat.reshape(c, kh, kw))
        bk = b if b is not None else _unused(1, x.dtype)
        xf, sn, sc = planes(x)
        parallel_ranges(lambda c0, c1: jit.depthwise_3x3_s2_phases(xf, sn, sc, n, h, wd, geo.padded_hw[0], wk, bk, y,
                                                                   pads[0], pads[2], c0, c1, relu),
                        c, 2 * kh * kw * y.size)
        cache_x = None
    elif jit is not None:  # the same multiply-adds as below, compiled: padding and taps, one pass
        # (C, N, Hp, Wp), for the backward; with a fused ReLU (no backward) none is kept
        xp = np.empty((0 if inference else c, n) + tuple(geo.padded_hw), dtype=x.dtype)
        y = np.empty((c, n) + tuple(out_hw), dtype=x.dtype)
        wk = np.ascontiguousarray(w_mat.reshape(c, kh, kw))
        bk = b if b is not None else _unused(1, x.dtype)
        parallel_ranges(lambda c0, c1: jit.depthwise_forward(x.transpose(1, 0, 2, 3), xp, wk, bk, y, pads[0],
                                                             pads[2], *stride, *dilation, c0, c1, relu),
                        c, 2 * kh * kw * y.size)
        cache_x = xp
    elif depthwise:  # K*K shifted multiply-adds instead of a column matrix and tiny GEMMs
        xp = np.ascontiguousarray(geo.pad(x))  # (C, N, Hp, Wp)
        y = np.empty((c,) + geo.tap_shape, dtype=x.dtype)  # (C, L) or (C, N, Ho, Wo)

        def depthwise_forward(c0, c1):  # channels c0..c1-1, on cnnkit's worker threads
            for b0, b1 in geo.channel_blocks(c0, c1, x.dtype.itemsize):  # each block stays in cache
                yc, tmp = y[b0:b1], None
                for k, tap in geo.taps(xp[b0:b1]):
                    wk = w_mat[b0:b1, 0, k].reshape((b1 - b0,) + (1,) * (y.ndim - 1))
                    if tmp is None:
                        np.multiply(tap, wk, out=yc)
                        tmp = np.empty_like(yc)
                    else:
                        yc += np.multiply(tap, wk, out=tmp)
        parallel_ranges(depthwise_forward, c, 2 * kh * kw * y.size)
        cache_x = xp
        y = geo.col_to_output(y.reshape(f, -1))  # (F, N, Ho, Wo), compact
    else:
        # small convs: chunk -> columns, for the backward (a fused ReLU has none: without this
        # check a batch-1 forward copied its columns into fresh memory, ResNet-50's 7x7 stem
        # 1.88 -> 1.19 ms, its 3x3 s2 128->128 1.29 -> 0.86)
        keep = not inference and geo.keeps_columns(x.dtype.itemsize)
        y, cache_x, kept = _forward_columns(x, geo, w_mat, keep, b, relu, residual if in_epilogue else None, hi)
    if b is not None and depthwise and jit is None:
        y += b[:, None, None, None]
    if relu and depthwise and jit is None:
        np.maximum(y, 0, out=y)
    if relu and not capped:  # (np.minimum keeps NaN)
        np.minimum(y, hi, out=y)
    if residual is not None and not in_epilogue:  # Add's semantics, then the ReLU
        out = add(as_nchw(y), residual, relu=relu_after)
        if relu_after and relu_max is not None:
            np.minimum(out, hi, out=out)
        return out, None
    if inference:  # nothing for a backward to use
        return as_nchw(y), None
    cache = (geo, cache_x, None if depthwise else kept, w_mat, groups, flip, b is not None, depthwise)
    return as_nchw(y), cache


def _forward_columns(x: np.ndarray, geo: "_Geometry", w_mat: np.ndarray, keep: bool,
                     b: np.ndarray | None = None, relu: bool = False, residual: np.ndarray | None = None,
                     hi=np.inf):
    """im2col + GEMM (+ bias, + residual (N, F, Ho, Wo), and ReLU if asked, while the chunk's
    result is in cache; a residual only in modes whose results go straight into y), chunk
    by chunk on the worker threads: ``(y, source, kept)`` with y as channel-major (F, N,
    Ho, Wo) memory, ``source`` the padded input the columns were read from, and ``kept``
    the chunks' columns (a dict) when ``keep``, else None. The ReLU is capped at ``hi``
    (a ReLU6: 6) in the same pass where compiled without a residual, else just after."""
    n, f = x.shape[0], geo.w_shape[0]
    cache_x = geo.column_source(x)  # padded (C, N, Hp, Wp), x itself, or (C, N*H*W) for pointwise
    y = np.empty((f, n) + geo.out_hw, dtype=x.dtype)
    kept = {} if keep else None
    g_, fg_ = w_mat.shape[:2]
    bias = None if b is None else b.reshape(g_, fg_, 1)  # (G, Fg, 1)
    # (G, Fg, N*Ho*Wo), like y's columns (a copy only if the residual is not channel-major)
    r_cols = None if residual is None else np.reshape(residual.transpose(1, 0, 2, 3), (g_, fg_, -1))
    jit = jit_kernels() if relu or b is not None or residual is not None else None

    def forward_chunks(chunks):  # each worker thread: its own buffers, its own images
        buf, res = geo.buffers(x.dtype, rows=kept is None)
        for ch in chunks:
            cols = geo.columns(cache_x, ch, buf if kept is None else np.empty_like(buf))  # (G, K, m)
            if kept is not None:
                kept[ch] = cols
            out = _matmul(w_mat, cols, geo.result_view(y, ch, res))  # (G, Fg, m)
            if jit is not None and r_cols is not None:  # bias, residual and ReLU in one compiled pass
                jit.bias_add_relu(out, bias if bias is not None else _unused(3, x.dtype), r_cols[:, :, ch[2]:ch[3]],
                                  relu)
                if relu and hi < np.inf:
                    np.minimum(out, hi, out=out)
            elif jit is not None:  # bias and ReLU in one compiled pass
                jit.bias_relu(out, bias if bias is not None else _unused(3, x.dtype), relu, hi)
            else:
                if bias is not None:
                    out += bias
                if r_cols is not None:
                    out += r_cols[:, :, ch[2]:ch[3]]
                if relu:
                    np.maximum(out, 0, out=out)
                    if hi < np.inf:
                        np.minimum(out, hi, out=out)
            geo.store(y, ch, res)  # shift mode: keep the valid grid positions
    chunks = list(geo.chunks(x.dtype.itemsize, rows=kept is None))
    with workers_again() if len(chunks) > 1 else _no_context:  # (batch 1: runs of rows on the workers)
        parallel_map(forward_chunks, chunks, small=geo.serial(x.dtype.itemsize))
    return y, cache_x, kept


def conv2d_backward(dy: np.ndarray, cache, need_dx: bool = True, need_dw: bool = True):
    """Gradients of a 2-D convolution: ``(dx, dw, db)`` (db is None without bias).

    ``need_dx=False`` / ``need_dw=False`` skip that gradient (it is returned as None):
    a first layer needs no dx (no GEMM, no col2im), a frozen one no dw."""
    if cache is None:
        raise value_error("conv2d_backward", "this forward applied a fused ReLU (relu=True, for "
                          "inference) and kept nothing for a backward", cache=None)
    geo, cache_x, kept, w_mat, groups, flip, has_bias, depthwise = cache
    n, c, h, wd = geo.x_shape
    f, cg, kh, kw = geo.w_shape
    if dy.shape != (n, f) + geo.out_hw:
        raise value_error("conv2d_backward", "dy must have the forward output's shape",
                          dy=tuple(dy.shape), expected=(n, f) + geo.out_hw)
    dy_cn = dy.transpose(1, 0, 2, 3)  # (F, N, Ho, Wo)
    db = _bias_gradient(dy_cn) if has_bias else None

    dx = None
    jit = jit_kernels() if depthwise else None
    direct = _direct(geo, depthwise)
    if isinstance(cache_x, _WinogradSaved):  # (the forward's choice, whatever the switches say now)
        dx, dw = winograd.backward(dy_cn, cache_x.saved, geo.x_shape, geo.pads, need_dx, need_dw, cache_x.kernels)
    elif direct is not None:  # compiled, by images; each range returns its share of dw (float64)
        wk = np.ascontiguousarray(w_mat.reshape(f, c, kh, kw))
        dx_cn = np.empty((c, n, h, wd), dtype=dy.dtype) if need_dx else _unused(4, dy.dtype)
        parts = []
        parallel_ranges(lambda n0, n1: parts.append(direct.conv_direct_backward(
            cache_x, wk, dy_cn, dx_cn, geo.pads[0], geo.pads[2], *geo.dilation, n0, n1, need_dx, need_dw)),
            n, 2 * dy.size * cg * kh * kw)
        dx = as_nchw(dx_cn) if need_dx else None
        dw = sum(parts[1:], parts[0]).astype(dy.dtype) if need_dw else None  # (an empty batch: one range)
    elif jit is not None:  # compiled loops (cache_x is the padded input, or x for the flat kernels)
        wk = np.ascontiguousarray(w_mat.reshape(c, kh, kw))
        dwk = np.empty((c, kh, kw), dtype=dy.dtype) if need_dw else _unused(3, dy.dtype)
        dh, dwl = geo.dilation
        by_phases = (kh, kw, dh, dwl) == (3, 3, 1, 1) and geo.stride == (2, 2)
        k3_pad1 = ((kh, kw, dh, dwl) == (3, 3, 1, 1) and geo.pads == (1, 1, 1, 1)
                   and not isinstance(cache_x, Planes) and tuple(cache_x.shape[2:]) == (h + 2, wd + 2))
        if isinstance(cache_x, Planes):  # 3x3 'same' (the flat forward): from x and dy, flat planes
            dx = np.empty((c, n, h, wd), dtype=dy.dtype) if need_dx else _unused(4, dy.dtype)
            gf, sgn, sgc = planes(dy)

            def backward(c0, c1):
                jit.depthwise_backward_3x3_same(cache_x.flat, cache_x.sn, cache_x.sc, gf, sgn, sgc, n, h, wd, wk,
                                                dx, dwk, c0, c1, need_dx, need_dw)
        elif geo.stride == (1, 1) and k3_pad1:  # MobileNet's: dx rows, nine taps in registers
            dx = np.empty((c, n, h, wd), dtype=dy.dtype) if need_dx else _unused(4, dy.dtype)

            def backward(c0, c1):
                jit.depthwise_backward_3x3_s1(cache_x, wk, dy_cn, dx, dwk, c0, c1, need_dx, need_dw)
        elif geo.stride == (1, 1):  # dy spread on the padded grid, one flat run per tap
            dx = np.empty((c, n, h, wd), dtype=dy.dtype) if need_dx else _unused(4, dy.dtype)

            def backward(c0, c1):
                jit.depthwise_backward_flat(cache_x, wk, dy_cn, dx, dwk, geo.pads[0], geo.pads[2], dh, dwl,
                                            c0, c1, need_dx, need_dw)
        elif by_phases:  # by even/odd phases, into dx
            dx = np.empty((c, n, h, wd), dtype=dy.dtype) if need_dx else _unused(4, dy.dtype)

            def backward(c0, c1):
                jit.depthwise_backward_3x3_s2(cache_x, wk, dy_cn, dx, dwk, geo.pads[0], geo.pads[2], c0, c1,
                                              need_dx, need_dw)
        else:  # one pass over dy for both, row by row
            dxp = geo.zeros_padded(dy.dtype) if need_dx else _unused(4, dy.dtype)

            def backward(c0, c1):
                jit.depthwise_backward_rows(cache_x, wk, dy_cn, dxp, dwk, *geo.stride, dh, dwl, c0, c1,
                                            need_dx, need_dw)
        parallel_ranges(backward, c, 3 * kh * kw * dy_cn.size)
        if need_dx:
            dx = as_nchw(dx) if geo.stride == (1, 1) or by_phases else crop_channel_major(dxp, geo.pads, (h, wd))
        else:
            dx = None
        dw = dwk.reshape(geo.w_shape) if need_dw else None
    elif depthwise:  # cache_x is the padded input
        dy_col = geo.output_to_col(dy_cn)  # (F, L) or (F, N, Ho, Wo)
        xp = cache_x
        dw = np.empty((c, kh * kw), dtype=dy.dtype)
        dxp = geo.zeros_padded(dy.dtype) if need_dx else None

        def depthwise_backward(c0, c1):  # channels c0..c1-1, on cnnkit's worker threads
            for b0, b1 in geo.channel_blocks(c0, c1, dy.dtype.itemsize):  # each block stays in cache
                dyc = dy_col[b0:b1]
                if need_dw and dyc.ndim == 2:  # (c, L) rows: one fused pass per tap
                    for k, tap in geo.taps(xp[b0:b1]):  # sum of dy * x over every position
                        dw[b0:b1, k] = np.einsum("cl,cl->c", dyc, tap)
                elif need_dw:  # strided taps: a contiguous product, then a pairwise sum per channel
                    prod = np.empty(dyc.shape, dtype=dyc.dtype)  # (einsum's order over 4-D views
                    for k, tap in geo.taps(xp[b0:b1]):      # depends on the block's shape)
                        dw[b0:b1, k] = np.multiply(dyc, tap, out=prod).reshape(b1 - b0, -1).sum(axis=1)
                if need_dx:
                    tmp, scale = np.empty_like(dyc), (b1 - b0,) + (1,) * (dy_col.ndim - 1)
                    for k, dtap in geo.taps(dxp[b0:b1]):
                        dtap += np.multiply(dyc, w_mat[b0:b1, 0, k].reshape(scale), out=tmp)
        parallel_ranges(depthwise_backward, c, 3 * kh * kw * dy_col.size)
        if need_dx:
            dx = crop_channel_major(dxp, geo.pads, (h, wd))
        dw = dw.reshape(geo.w_shape)
    else:  # cache_x is the padded input; its columns are rebuilt chunk by chunk
        dx_geo = geo.dx_geometry if need_dx else None  # stride 1: dx as a convolution of dy
        if dx_geo is not None:
            g, fg = groups, f // groups
            w_rot = w_mat.reshape(g, fg, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
            w_rot = np.ascontiguousarray(w_rot).reshape(g, cg, fg * kh * kw)  # (G, Cg, Fg*kH*kW)
            dx = as_nchw(_forward_columns(dy, dx_geo, w_rot, keep=False)[0])
            need_dx = False  # done: the chunks below only sum dw
        dxp = geo.zeros_source(dy.dtype) if need_dx else None
        w_t = w_mat.transpose(0, 2, 1)  # (G, K, Fg)

        by_rows = w_mat.size >= geo.dw_rows_min  # dw summed as (G, Fg, K), else as its transpose

        def backward_chunks(chunks):  # each worker: its own dw sum; dx only in its images
            dw_sum = None
            buf, dbuf = geo.buffers(dy.dtype)
            for ch in chunks:
                dy_mat = geo.gradient_columns(dy_cn, ch, dbuf)  # (G, Fg, m)
                if need_dw:
                    cols = kept.get(ch) if kept is not None else None  # (G, K, m)
                    cols = geo.columns(cache_x, ch, buf) if cols is None else cols
                    # dw.T = x_col @ dy.T, (G, K, Fg): OpenBLAS runs this orientation 5-40%
                    # faster than dy @ x_col.T (LeNet's C2 chunk 0.33 -> 0.20 ms, 64->64 at
                    # 14x14 1.64 -> 1.26, ResNet-50's 1x1 256->64 8.9 -> 7.9); but a large dw
                    # is then transposed, which costs more (see dw_rows_min)
                    part = (_matmul(dy_mat, cols.transpose(0, 2, 1)) if by_rows
                            else _matmul(cols, dy_mat.transpose(0, 2, 1)))
                    if dw_sum is None:
                        dw_sum = part
                    else:
                        dw_sum += part
                if need_dx:
                    dx_col = _matmul(w_t, dy_mat, geo.dx_columns(buf, dxp, ch))  # (G, K, m)
                    geo.add_columns(dxp, ch, dx_col, buf)
            if need_dw and dw_sum is None:  # (no chunks: an empty batch)
                dw_sum = np.zeros(w_mat.shape if by_rows else w_t.shape, dtype=dy.dtype)
            return dw_sum
        dy_cn = geo.gradient_source(dy_cn)
        itemsize = dy.dtype.itemsize
        if need_dw or need_dx:
            parts = parallel_map(backward_chunks, geo.chunks(itemsize), small=geo.serial(itemsize))
        if need_dw:  # (G, Fg, K), or (G, K, Fg) transposed, -> (F, Cg, kH, kW)
            dw = sum(parts[1:], parts[0])
            dw = (dw if by_rows else np.ascontiguousarray(dw.transpose(0, 2, 1))).reshape(geo.w_shape)
        if need_dx:
            dx = geo.finish_dx(dxp)  # (N, C, H, W) view of (C, N, H, W)
    if not need_dw:
        dw = None
    elif flip:
        dw = np.ascontiguousarray(dw[:, :, ::-1, ::-1])
    return dx, dw, db


def _bias_gradient(dy_cn: np.ndarray) -> np.ndarray:
    """``db = dy summed over N, Ho, Wo`` from dy as (F, N, Ho, Wo). Where dy's memory is
    dense (channel-major or NCHW) the sums are a matrix-vector product with ones (BLAS),
    per (image, channel) row for NCHW and then over the images: NumPy's reduction over
    those axes, or over the rows of 196 elements, took 0.16 ms for 8 x 512 x 14 x 14, the
    product 0.04 (0.47 -> 0.13 ms at 128 x 32 x 28 x 28), as close to float64 sums."""
    f = dy_cn.shape[0]
    if dy_cn.size == 0:  # (no reshape of an empty array to -1 columns)
        return dy_cn.sum(axis=(1, 2, 3))
    if dy_cn.flags.c_contiguous:
        rows = dy_cn.reshape(f, -1)
        return rows @ np.ones(rows.shape[1], rows.dtype)
    nchw = dy_cn.transpose(1, 0, 2, 3)
    if nchw.flags.c_contiguous:
        rows = nchw.reshape(-1, nchw.shape[2] * nchw.shape[3])
        return (rows @ np.ones(rows.shape[1], rows.dtype)).reshape(nchw.shape[0], f).sum(axis=0)
    return dy_cn.sum(axis=(1, 2, 3))


def _flat_depthwise(geo: "_Geometry"):
    """The stride (1 or 2) of a depthwise conv that the flat 3x3 inference kernels take
    (``_jit.depthwise_3x3_same``: padding 1 all round; ``_jit.depthwise_3x3_s2_same``:
    even planes, padding 1 on top and left, output half the size), else None."""
    (h, wd), (kh, kw), pads = geo.x_shape[2:], geo.w_shape[2:], geo.pads
    if (kh, kw) != (3, 3) or tuple(geo.dilation) != (1, 1):
        return None
    if tuple(geo.stride) == (1, 1) and tuple(pads) == (1, 1, 1, 1):
        return 1
    if (tuple(geo.stride) == (2, 2) and pads[0] == pads[2] == 1 and h % 2 == wd % 2 == 0
            and tuple(geo.out_hw) == (h // 2, wd // 2)):
        return 2
    return None


def _unused(ndim: int, dtype) -> np.ndarray:
    """An empty array that a compiled kernel takes in place of one it is told not to use
    (Numba needs an array of the right type there, not None)."""
    return np.empty((0,) * ndim, dtype=dtype)


def _direct_s2(geo: "_Geometry", depthwise: bool):
    """The compiled kernels when this conv (inference: a fused ReLU) runs direct at stride 2
    (one group, no dilation, not 1x1, K = C*kH*kW at most ``DIRECT_S2_MAX_K``, outputs of
    ``DIRECT_S2_MIN_PIXELS`` or more: see cnnkit/functional/_jit.py), else None."""
    if (depthwise or geo.groups != 1 or geo.stride != (2, 2) or geo.dilation != (1, 1)
            or geo.w_shape[2] * geo.w_shape[3] == 1):
        return None
    jit = jit_kernels()
    if (jit is None or geo.x_shape[1] * geo.w_shape[2] * geo.w_shape[3] > jit.DIRECT_S2_MAX_K
            or geo.out_hw[0] * geo.out_hw[1] < jit.DIRECT_S2_MIN_PIXELS):
        return None
    return jit


def _direct(geo: "_Geometry", depthwise: bool):
    """The compiled kernels when this conv runs direct (stride 1, one group, not 1x1, and
    K = C*kH*kW at most ``DIRECT_MAX_K``: see cnnkit/functional/_jit.py), else None."""
    if depthwise or geo.groups != 1 or geo.stride != (1, 1) or geo.mode == "pointwise":
        return None
    jit = jit_kernels()
    if jit is None or geo.x_shape[1] * geo.w_shape[2] * geo.w_shape[3] > jit.DIRECT_MAX_K:
        return None
    return jit


class _WinogradSaved:
    """What a Winograd forward keeps for the backward: ``saved`` = (padded input, U), and
    the transform kernels it used."""

    def __init__(self, saved, kernels):
        self.saved, self.kernels = saved, kernels


# Winograd F(2x2, 3x3) (winograd.py) runs a 3x3 stride-1 conv with one group, where Numba
# compiles its tile transforms (in NumPy they are many passes over memory, slower than
# im2col), when
# - it has WINOGRAD_MIN_CHANNELS input and output channels or more (the first layers'
#   few channels go to the direct kernel or im2col);
# - the batch has WINOGRAD_MIN_TILES 2x2 output tiles or more: the filter transform and the
#   16 (F, C) matrices U cost as much as a few dozen tiles' GEMMs. Measured (forward +
#   backward, 2 threads, 7 alternating rounds, Winograd / im2col): 256->256 at 14x14
#   batch 1 (49 tiles) 1.37-1.85, batch 2 (98) 0.97, batch 4 (196) 0.78; 128->128 at
#   28x28 batch 1 (196) 0.93; 64->64 at 56x56 batch 1 (784) 0.76;
# - the tiles do not reach far past the output (odd sizes): 512->512 at 7x7 (8x8 of
#   tiles for 7x7 outputs) lost at batch 8 and 32 (1.13).
# Batched convs gained (2 threads): 32->32 at 28x28 batch 128 0.75; 64->64 at 14x14 0.68;
# 64->64 at 56x56 batch 8 0.72; 128->128 at 28x28 batch 8 0.63; ResNet-20's 16->16 at
# 32x32, 32->32 at 16x16, 64->64 at 8x8 (batch 128) 0.87, 0.88, 0.83.
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_TILES = 128
WINOGRAD_MAX_WASTE = 1.2  # tile area / output area
# - with frozen weights (winograd.frozen: an inference model from fuse_for_inference) the
#   filter transform is made once and kept (winograd.prepared_filter), and with few tiles
#   the filters are split between the threads (winograd.FILTER_SPLIT_MAX_TILES). Alone (U
#   in cache), Winograd then won at every batch-1 size measured down to 4 tiles, with up to
#   WINOGRAD_MAX_WASTE_PREPARED of waste. 2 threads, fused ReLU, us, Winograd / im2col:
#   512->512 at 14x14 (49 tiles) 1755 / 3672; 256->256 at 14x14 502 / 751; 64->64 at 14x14
#   79 / 197; 128->128 at 28x28 533 / 1101; 512->512 at 7x7 (16 tiles for 49 outputs:
#   waste 1.31) 724-763 / 914-1033, batch 2 1261 / 1850; 512->512 at 4x4 335 / 396; at 5x5
#   (waste 1.44) 901 / 784, 256->256 at 5x5 284 / 288; at 3x3 (1.78) 372 / 536. But in a
#   network the weights come from memory, and U is 16/9 of them: ResNet-50's 512->512 at
#   7x7 took 1.11-1.17 ms in its batch-1 run either way, and the whole network was even
#   with Winograd from 1 or from WINOGRAD_MIN_TILES_PREPARED tiles (28.84 / 28.75 ms): so
#   few tiles keep im2col (and 50 MiB less of U for ResNet-50).
WINOGRAD_MIN_TILES_PREPARED = 48
WINOGRAD_MAX_WASTE_PREPARED = 1.35


def _winograd(geo: "_Geometry", prepared: bool = False):
    """The compiled kernels when this conv runs as Winograd F(2x2, 3x3), else None.
    ``prepared``: the filter transform is kept (frozen weights), not made per call."""
    f, cg, kh, kw = geo.w_shape
    if (kh, kw) != (3, 3) or geo.stride != (1, 1) or geo.dilation != (1, 1) or geo.groups != 1:
        return None
    th, tw = winograd.tile_grid(geo.out_hw)
    tiles = geo.x_shape[0] * th * tw
    least = WINOGRAD_MIN_TILES_PREPARED if prepared else WINOGRAD_MIN_TILES
    if min(cg, f) < WINOGRAD_MIN_CHANNELS or tiles < least:
        return None
    waste = WINOGRAD_MAX_WASTE_PREPARED if prepared else WINOGRAD_MAX_WASTE
    if 4 * th * tw > waste * geo.out_hw[0] * geo.out_hw[1]:
        return None
    return jit_kernels()


_no_context = contextlib.nullcontext()


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(G, M, K) @ (G, K, L) per group, into ``out`` if given; one BLAS GEMM when G == 1."""
    if a.shape[0] == 1:
        if out is None:
            return (a[0] @ b[0])[None]
        np.matmul(a[0], b[0], out=out[0])
        return out
    return np.matmul(a, b, out=out)


class _Geometry:
    """Where each kernel offset ("tap") reads, for the three ways of building columns.

    - ``pointwise``: 1x1 kernel, stride 1, no padding: the input itself is the
      column matrix (C, N*H*W) - no copy when it is channel-major.
    - ``shift`` (stride 1): flatten the padded input to (C, N*Hp*Wp); then tap
      (i, j) is the contiguous run starting at ``i*D*Wp + j*D``. Columns are
      computed for every padded-grid position (a few extra at the right and
      bottom borders, dropped afterwards) in exchange for long contiguous copies.
    - ``strided`` (stride > 1, one input channel, or a padded grid much larger than
      the output): one strided 2-D slice per tap (window_slices). At stride 1 with
      narrow outputs (``batch_inner``) the columns are ordered (taps, Ho, Wo, images)
      so that each slice's rows are Wo*images long.
    """

    # Shift mode computes a column for every padded-grid position. Measured (fwd + bwd,
    # 2 threads): past 1.3 padded-grid positions per output (5x5 'valid' on 14x14: 1.96;
    # 3x3 'same' on 7x7: 1.65) the strided copies are as fast or faster, and with one
    # input channel strided is about 2x faster; in between the two are within noise.
    shift_max_waste = 1.3
    # Columns are built this many bytes' worth of whole images at a time, so they are
    # in cache when the GEMM reads them. Measured on (128, 32, 28, 28) with a 3x3
    # kernel, 2 threads: im2col of the whole batch 17-27 ms, in 4 MiB chunks 6-8 ms
    # (1 MiB: 8.4, 16 MiB: 12.8), and the GEMM is faster too (25 ms vs 34).
    chunk_bytes = 4 << 20
    # ... except for strided convs (stride > 1), whose columns come from a strided copy
    # that is slower than the GEMM's reads: there, chunks the size of a core's L2 cache
    # (1 MiB on the AVX-512 host). Measured (fwd + bwd, 2 threads, ms, 4 MiB vs 1 MiB,
    # in-process): 3x3 s2 32->64 at 16x16 batch 128 6.3 vs 5.5, 16->32 at 32x32 8.1 vs
    # 7.3, 64->64 at 14x14 9.6 vs 8.8, 32->64 at 28x28 15.4 vs 14.7; AlexNet's 11x11 s4
    # and ResNet-50's 7x7 s2 stem even. Stride-1 convs keep 4 MiB: 5x5 64->64 at 14x14
    # 15.9 vs 18.0, LeNet-5's C3 0.78 vs 0.88.
    strided_chunk_bytes = 1 << 20
    # ... and a batch-1 image's columns above this size are cut into runs of rows (row_run)
    row_run_bytes = 1 << 20
    # From this many weights up the backward sums dw as (G, Fg, K), dy @ x_col.T, instead
    # of its transpose, which is faster to compute but must be transposed after: NumPy
    # transposes a 1024x1024 float32 matrix in 3.7 ms (a copy takes 0.07). Whole backward,
    # 2 threads, 12 alternating rounds in one process, rows / transposed: 1x1 1024->1024
    # @7 batch 8 0.53, 512->512 @14 0.92; 3x3 s2 512->512 @14 batch 1 0.23, batch 8 0.72;
    # 3x3 512->512 @7 batch 1 0.44. Below: 3x3 s2 128->128 (147K weights) 1.05, 1x1
    # 256->64 1.11, AlexNet's conv1 1.19, LeNet's C3 1.37; 256->256 1x1 (66K) 0.98.
    dw_rows_min = 1 << 18
    # Strided mode builds its columns from x itself from this size of input up (column_source),
    # at column stride 2 (split into even and odd phases: _jit._im2col_unpadded_s2) from less:
    # ResNet-50's 7x7 s2 stem at batch 1 (588 KiB) forward 1.29 -> 0.90 ms, 3x3 s2 256 @28
    # 0.79 -> 0.74; at 128 KiB (16 channels 16x16 batch 8) 0.08 ms, 10% slower
    unpadded_min_bytes = 1 << 20
    unpadded_s2_min_bytes = 256 << 10
    # Below this many bytes of columns a conv runs as one chunk on the calling thread:
    # LeNet-5 at batch 2 took 6.2 ms a step with its chunks handed to 2 threads, 4.0 serially.
    parallel_bytes = 1 << 20
    # A 1x1 conv of one image (inference) whose input (its "columns": no copies) is under
    # this many bytes runs as one GEMM with BLAS on every core, instead of two column
    # ranges on the workers. Measured (ONNX models at batch 1, 2 threads, 6 alternating
    # rounds): ResNet-50 164 -> 152 ms, MobileNet v1 33.1 -> 28.4 ms. Not for batches: the
    # MobileNet v1 training step at batch 8 took 8% longer with it (BLAS's threads spin
    # after each call, on the cores that the depthwise convs' workers need), and for
    # im2col convs LeNet-5's step at batch 64 7% longer.
    pointwise_parallel_bytes = 16 << 20
    # Up to this many bytes the forward keeps its columns for the backward instead of
    # building them again (LeNet-5's two convs at batch 64: 5.0 and 3.8 MB; its training
    # step went from about 18 to 16 ms, the epoch bench from 1.82x PyTorch to 1.65x).
    keep_bytes = 8 << 20
    # Modes whose stride-1 backward computes dx as a convolution of dy (im2col of dy and
    # a GEMM with Cg rows and K = Fg*kH*kW) instead of w.T @ dy (K = Fg) scattered back by
    # col2im, from ``dx_min_channels`` input channels per group up. Measured (backward,
    # batch 128, 2 threads, 9 alternating rounds): 3x3 64->64 at 14x14 63 -> 53 ms, at
    # 8x8 29 -> 22 ms, 32->64 at 14x14 35 -> 34; but shift mode 32->32 at 28x28 66 -> 76,
    # and LeNet's 6->16 5x5 (6-row GEMMs) 3.6 -> 6.6 ms.
    dx_by_convolution = ("strided",)
    dx_min_channels = 32
    # ... and only while the weights are at most this many times the input's size: the
    # rotated kernel is a transposed copy of them (backward, 2 threads, 10 alternating
    # rounds, col2im / by convolution: 3x3 512->512 @7 batch 1 (94x) 0.57, 256 @14 batch 1
    # (12x) 0.78, 512 @7 batch 8 (12x) 0.85, batch 32 (2.9x) 0.97; 256 @14 batch 8 (1.5x) 1.01)
    dx_max_weight_ratio = 2
    # Depthwise convs run channel blocks of about this many bytes of output through all
    # their kH*kW shifted multiply-adds before moving on (see channel_blocks). Measured
    # (forward + backward of MobileNet v1's seven depthwise shapes at batch 8, 2 threads,
    # 7 alternating rounds, ms in all): one block per thread 313, 512 KiB 202, 1 MiB 192,
    # 2 MiB 228, 4 MiB 256; 32-128 KiB blocks lose at 14x14 and 7x7 (call overhead).
    depthwise_block_bytes = 1 << 20
    # Strided mode orders a chunk's columns (kH*kW, Ho, Wo, images) - the image index
    # innermost ("batch-inner") - where the output is at most this wide: each tap's copy
    # (and col2im's add) then moves rows of Wo*images elements instead of Wo. A chunk's
    # padded input is transposed to (C, Hp, Wp, images) first, and its result back.
    batch_inner_max_width = 16
    # Below parallel_bytes of columns, a conv with at least this many multiply-adds still
    # hands its one chunk's GEMM to BLAS on every core (see serial). Measured at batch 1,
    # 2 threads: MobileNet v1's 1x1 512->512 @14 1.69 -> 1.13 ms; the whole net
    # (bench_onnx) 50 -> 28 ms, ResNet-50 about 184 -> 165 ms.
    blas_thread_macs = 1 << 22

    @property
    def batch_inner(self) -> bool:
        """Batch-inner column order: strided mode at stride 1, narrow outputs, and more
        than one image (for one, the transposes cost and lengthen nothing: LeNet-5's
        6->16 5x5 at 14x14, batch 1, 155 -> 96 us a forward without them)."""
        return (self.mode == "strided" and self.stride == (1, 1) and self.out_hw[1] <= self.batch_inner_max_width
                and self.x_shape[0] > 1)

    def __init__(self, x_shape, w_shape, pads, stride, dilation, out_hw, groups=1):
        self.x_shape, self.w_shape, self.pads = tuple(x_shape), tuple(w_shape), pads
        self.groups = groups
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
        self._grid_size = hp * wp if self.mode == "shift" else ho * wo  # (see _grid: computed once,
        self._columns_per_image = c * kh * kw * self._grid_size        # small convs call these often)

    def pad(self, x: np.ndarray) -> np.ndarray:
        return pad_channel_major(x, self.pads, self.padded_hw)  # (C, N, Hp, Wp)

    def zeros_padded(self, dtype) -> np.ndarray:
        n, c = self.x_shape[:2]
        return np.zeros((c, n) + tuple(self.padded_hw), dtype=dtype)  # (C, N, Hp, Wp)

    def channel_blocks(self, c0: int, c1: int, itemsize: int):
        """Channels c0..c1-1 cut into blocks of about ``depthwise_block_bytes`` of output
        each: a depthwise conv makes kH*kW passes over its output, which then stay in cache."""
        per_channel = itemsize * int(np.prod(self.tap_shape))
        step = max(1, self.depthwise_block_bytes // max(per_channel, 1))
        for b0 in range(c0, c1, step):
            yield b0, min(c1, b0 + step)

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

    # ---- chunked im2col / GEMM / col2im (everything but depthwise) -----------------
    # A chunk is (n0, n1, a, b): images n0..n1-1, whose columns are a..b-1 of the
    # grid (the padded grid, flattened, in shift mode; the output grid otherwise).

    def source(self, x: np.ndarray) -> np.ndarray:
        """What the columns are read from (and what the backward keeps): the padded
        input as contiguous (C, N, Hp, Wp), or (C, N*H*W) for pointwise."""
        n, c, h, wd = self.x_shape
        if self.mode == "pointwise":
            return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(c, n * h * wd)
        return np.ascontiguousarray(self.pad(x))

    def column_source(self, x: np.ndarray):
        """:meth:`source`, except in strided mode (not batch-inner) where Numba is
        installed: x itself (a ``window.Planes``), whose columns the compiled im2col
        builds with the zero padding in place (``_jit.im2col_unpadded``) - no padded copy
        written first and kept for the backward (nor a channel-major copy of an NCHW x, or
        of an unpadded 1x1 stride-2 input). Measured (3x3 s2 128->128 @28, batch 8, 2
        threads, 25 alternating rounds in one process, ms): NCHW x forward 1.78 -> 1.67,
        forward + backward 4.68 -> 4.50; channel-major x 1.72 -> 1.68 and 4.71 -> 4.80
        (even). From ``unpadded_min_bytes`` of input up (``unpadded_s2_min_bytes`` at
        column stride 2): below, the padded copy is cheap and the per-row bounds cost more
        (LeNet-5's convs at batch 1 took 3-5 us longer, of 17-22)."""
        least = self.unpadded_s2_min_bytes if self.stride[1] == 2 else self.unpadded_min_bytes
        if self.mode == "strided" and not self.batch_inner and x.nbytes >= least and jit_kernels() is not None:
            return Planes(x)
        return self.source(x)

    def zeros_source(self, dtype) -> np.ndarray:
        """The gradient buffer matching :meth:`source` (pointwise: filled by the GEMMs)."""
        n, c, h, wd = self.x_shape
        if self.mode == "pointwise":
            return np.empty((c, n * h * wd), dtype=dtype)
        if self.batch_inner:  # add_columns writes every image whole
            return np.empty((c, n) + tuple(self.padded_hw), dtype=dtype)
        return self.zeros_padded(dtype)

    def _grid(self) -> int:
        """Grid positions per image: the padded grid in shift mode, else the output."""
        return self._grid_size

    def _image_columns(self) -> int:
        """Column-matrix elements per image: C * kH * kW * grid positions."""
        return self._columns_per_image

    def threads(self, itemsize: int) -> int:
        """Worker threads worth using: 1 below ``parallel_bytes`` of columns, where
        handing chunks to threads costs more than it saves (a 1x1 conv of one image:
        below ``pointwise_parallel_bytes``, where one BLAS-threaded GEMM is faster)."""
        size = self._image_columns() * self.x_shape[0] * itemsize
        one_image_1x1 = self.mode == "pointwise" and self.x_shape[0] == 1
        limit = self.pointwise_parallel_bytes if one_image_1x1 else self.parallel_bytes
        return get_num_threads() if size >= limit else 1

    def serial(self, itemsize: int) -> bool:
        """Run the chunks on the calling thread with BLAS on one thread: under
        ``parallel_bytes`` of columns and ``blas_thread_macs`` multiply-adds. A conv with
        few columns but a large GEMM (batch 1: ResNet-50's 3x3 512->512 at 7x7 has 0.9 MB
        of columns and 116M multiply-adds) is one chunk whose GEMM gets every core."""
        n, f = self.x_shape[0], self.w_shape[0]
        macs = f * (self._image_columns() // self.groups) * n
        return self.threads(itemsize) == 1 and macs < self.blas_thread_macs

    def keeps_columns(self, itemsize: int) -> bool:
        size = self._image_columns() * self.x_shape[0] * itemsize
        return self.mode != "pointwise" and size <= self.keep_bytes

    def chunk_images(self, itemsize: int) -> int:
        """Images per chunk: about ``chunk_bytes`` of columns, and a chunk per worker
        thread at least (pointwise: all, its chunks are column ranges)."""
        n = self.x_shape[0]
        if self.mode == "pointwise":
            return n
        per_image = self._image_columns() * itemsize
        size = self.strided_chunk_bytes if self.stride != (1, 1) else self.chunk_bytes
        return max(1, min(size // per_image, -(-n // self.threads(itemsize))))

    def buffers(self, dtype, rows: bool = False):
        """A column buffer for one chunk, and a zeroed (F, images * grid) one that holds
        a chunk's results (forward) or padded output gradient (backward) in shift mode.
        ``rows``: for the chunks of ``chunks(rows=True)``."""
        ci = self.chunk_images(np.dtype(dtype).itemsize)
        cols = 0 if self.mode == "pointwise" else self._image_columns() * ci
        run = self.row_run(np.dtype(dtype).itemsize) if rows else 0
        if run:
            return np.empty(self._image_columns() // self.out_hw[0] * run, dtype=dtype), None
        if self.batch_inner:  # room behind the columns for a chunk's transposed padded input
            cols += self.x_shape[1] * self.padded_hw[0] * self.padded_hw[1] * ci
            return np.empty(cols, dtype=dtype), np.empty((self.w_shape[0], ci * self._grid()), dtype=dtype)
        res = np.zeros((self.w_shape[0], ci * self._grid()), dtype=dtype) if self.mode == "shift" else None
        return np.empty(cols, dtype=dtype), res

    def row_run(self, itemsize: int) -> int:
        """Output rows per chunk for ``chunks(rows=True)``, or 0 for whole images. In
        strided mode (not batch-inner), a batch of fewer images than worker threads whose
        image has more than ``row_run_bytes`` of columns is cut into runs of output rows,
        as many as a multiple of the threads and about that size each, so that every
        worker builds and multiplies columns in its cache. Measured (batch 1, inference,
        2 threads, ms, whole image vs runs): ResNet-50's 7x7 s2 stem 1.22 -> 1.03; its 3x3
        s2 128->128 @56 0.85 -> 0.82, 512->512 @14 0.93 -> 0.88, 3x3 256->256 @14 0.91 ->
        0.85; AlexNet's 11x11 s4 0.62 -> 0.59. Not for batches, where the images already
        feed every worker: AlexNet's 11x11 s4 at batch 16 took 10% longer in runs (the stem
        15% less)."""
        n, ho = self.x_shape[0], self.out_hw[0]
        threads = get_num_threads()
        if self.mode != "strided" or self.batch_inner or n >= threads or ho < 2:
            return 0
        per_row = self._image_columns() // ho * itemsize
        if per_row * ho <= self.row_run_bytes:
            return 0
        runs = -(-per_row * ho // self.row_run_bytes)
        runs = min(ho, -(-runs // threads) * threads)
        return -(-ho // runs)

    def chunks(self, itemsize: int, rows: bool = False):
        """(n0, n1, a, b): images n0..n1-1, columns a..b-1 of the (G, K, N*grid) whole.
        ``rows=True`` (the forward without kept columns, which writes disjoint parts of y;
        not the backward, whose col2im windows overlap between rows) may cut an image into
        runs of output rows (see row_run): n1 == n0 + 1 and a, b inside that image."""
        n, grid = self.x_shape[0], self._grid()
        run = self.row_run(itemsize) if rows else 0
        if run:
            wo = self.out_hw[1]
            for m in range(n):
                for r in range(0, self.out_hw[0], run):
                    yield m, m + 1, m * grid + r * wo, m * grid + min(r + run, self.out_hw[0]) * wo
            return
        if self.mode == "pointwise":  # no copies: one column range per worker thread
            for a, b in split_range(n * grid, self.threads(itemsize)):
                yield 0, n, a, b
            return
        ci = self.chunk_images(itemsize)
        for n0 in range(0, n, ci):
            n1 = min(n, n0 + ci)
            b = min(n1 * grid, self.cols) if self.mode == "shift" else n1 * grid
            yield n0, n1, n0 * grid, b

    def columns(self, src: np.ndarray, chunk, buf: np.ndarray) -> np.ndarray:
        """The chunk's (G, K, m) column matrix (im2col), built in ``buf``."""
        n0, n1, a, b = chunk
        c, g = self.x_shape[1], self.groups
        kk = self.w_shape[2] * self.w_shape[3]
        jit = jit_kernels()
        if isinstance(src, Planes) and jit is None:  # (Numba switched off since the forward)
            src = self.source(src.x)
        if self.mode == "pointwise":
            return src.reshape(g, c // g, -1)[:, :, a:b]  # a view: no copy
        if self.mode == "shift":
            flat = src.reshape(c, -1)  # (C, N*Hp*Wp)
            cols = buf[:c * kk * (b - a)].reshape(c, kk, b - a)
            for k, off in enumerate(self.offsets):
                cols[:, k] = flat[:, a + off:b + off]
        elif self.batch_inner:
            xt = self._transposed_input(buf, chunk)  # (C, Hp, Wp, images)
            xt[...] = src[:, n0:n1].transpose(0, 2, 3, 1)
            cols = buf[:c * kk * (b - a)].reshape((c, kk) + self.out_hw + (n1 - n0,))
            for k, rows_cols in enumerate(self._tap_slices):
                cols[:, k] = xt[(slice(None),) + rows_cols]
        else:  # output rows r0..r0+rows-1 of images n0..n1-1 (all rows but in a run of rows)
            wo, sh = self.out_hw[1], self.stride[0]
            rows, r0 = (b - a) // ((n1 - n0) * wo), (a - n0 * self._grid()) // wo
            cols = buf[:c * kk * (b - a)].reshape(c, kk, n1 - n0, rows, wo)
            if isinstance(src, Planes):  # from x, the padding zeroed in place
                h, wd = self.x_shape[2:]
                jit.im2col_unpadded(src.flat, src.sn, src.sc, h, wd, cols, n0, r0, self.w_shape[3],
                                    *self.stride, *self.dilation, self.pads[0], self.pads[2], jit.COPY_BLOCK)
            elif jit is not None:  # the same copies, compiled (no per-row overhead)
                jit.im2col_strided(src, cols, n0, r0, self.w_shape[3], *self.stride, *self.dilation)
            else:
                for k, (rs, cs) in enumerate(self._tap_slices):
                    rs = slice(rs.start + r0 * sh, rs.start + (r0 + rows - 1) * sh + 1, sh)
                    cols[:, k] = src[:, n0:n1, rs, cs]
        return cols.reshape(g, (c // g) * kk, b - a)

    def _transposed_input(self, buf: np.ndarray, chunk) -> np.ndarray:
        """Batch-inner mode: the (C, Hp, Wp, images) scratch behind the chunk's columns."""
        n0, n1, a, b = chunk
        c, kk = self.x_shape[1], self.w_shape[2] * self.w_shape[3]
        (hp, wp), start = self.padded_hw, c * kk * (b - a)
        return buf[start:start + c * hp * wp * (n1 - n0)].reshape(c, hp, wp, n1 - n0)

    def result_view(self, y: np.ndarray, chunk, res: np.ndarray) -> np.ndarray:
        """Where the chunk's (G, Fg, m) GEMM result goes: straight into y's
        (F, N, Ho, Wo) memory, or (shift mode, batch-inner) into ``res``, for :meth:`store`."""
        _, _, a, b = chunk
        g, f = self.groups, self.w_shape[0]
        if self.mode == "shift" or self.batch_inner:
            return res.reshape(g, f // g, -1)[:, :, :b - a]
        return y.reshape(g, f // g, -1)[:, :, a:b]

    def store(self, y: np.ndarray, chunk, res: np.ndarray) -> None:
        """Shift mode: copy the chunk's valid positions from ``res`` into y; batch-inner:
        its (F, Ho, Wo, images) result, transposed."""
        if self.batch_inner:
            n0, n1, a, b = chunk
            y[:, n0:n1] = res[:, :b - a].reshape((res.shape[0],) + self.out_hw + (n1 - n0,)).transpose(0, 3, 1, 2)
        elif self.mode == "shift":
            n0, n1 = chunk[:2]
            (hp, wp), (ho, wo) = self.padded_hw, self.out_hw
            y[:, n0:n1] = res.reshape(res.shape[0], -1, hp, wp)[:, :n1 - n0, :ho, :wo]

    def gradient_columns(self, dy_cn: np.ndarray, chunk, res: np.ndarray) -> np.ndarray:
        """The chunk's output gradient as (G, Fg, m) columns; shift mode pads it to the
        grid in ``res`` (zeros at the positions that are not outputs)."""
        n0, n1, a, b = chunk
        g, f = self.groups, self.w_shape[0]
        if self.mode == "pointwise":  # dy_cn is (F, L) here
            return dy_cn.reshape(g, f // g, -1)[:, :, a:b]
        if self.batch_inner:  # (F, Ho, Wo, images)
            res[:, :b - a].reshape((f,) + self.out_hw + (n1 - n0,))[...] = dy_cn[:, n0:n1].transpose(0, 2, 3, 1)
            return res.reshape(g, f // g, -1)[:, :, :b - a]
        if self.mode != "shift":
            return np.reshape(dy_cn[:, n0:n1], (g, f // g, b - a))  # copies unless channel-major
        (hp, wp), (ho, wo) = self.padded_hw, self.out_hw
        res.reshape(f, -1, hp, wp)[:, :n1 - n0, :ho, :wo] = dy_cn[:, n0:n1]
        return res.reshape(g, f // g, -1)[:, :, :b - a]

    def gradient_source(self, dy_cn: np.ndarray) -> np.ndarray:
        """Pointwise: the (F, N, Ho, Wo) gradient as (F, L), copied once if need be."""
        return np.reshape(dy_cn, (dy_cn.shape[0], -1)) if self.mode == "pointwise" else dy_cn

    def dx_columns(self, buf: np.ndarray, dxp: np.ndarray, chunk) -> np.ndarray:
        """Where ``w.T @ dy`` goes: ``buf`` (for :meth:`add_columns`), or for pointwise
        the gradient buffer itself (columns and input are the same memory)."""
        _, _, a, b = chunk
        c, g = self.x_shape[1], self.groups
        if self.mode == "pointwise":
            return dxp.reshape(g, c // g, -1)[:, :, a:b]
        kk = self.w_shape[2] * self.w_shape[3]
        return buf[:c * kk * (b - a)].reshape(g, (c // g) * kk, b - a)

    def add_columns(self, dxp: np.ndarray, chunk, dx_col: np.ndarray, buf: np.ndarray) -> None:
        """col2im: add the chunk's (G, K, m) column gradients back into their windows
        (``buf`` is the chunk's column buffer, which ``dx_col`` lives in)."""
        n0, n1, a, b = chunk
        c = self.x_shape[1]
        kk = self.w_shape[2] * self.w_shape[3]
        if self.mode == "pointwise":
            return  # dx_columns wrote them in place
        if self.mode == "shift":
            # Stop at the chunk's last image: the columns whose windows reach past it
            # are padded-grid positions that are no output (their gradient is zero),
            # and another thread may be adding into the next image.
            end = n1 * self.padded_hw[0] * self.padded_hw[1]
            flat, cols = dxp.reshape(c, -1), dx_col.reshape(c, kk, b - a)
            for k, off in enumerate(self.offsets):
                hi = min(b + off, end)
                flat[:, a + off:hi] += cols[:, k, :hi - a - off]
        elif self.batch_inner:  # add into a (C, Hp, Wp, images) scratch, then transpose it in
            xt = self._transposed_input(buf, chunk)
            xt[...] = 0
            cols = dx_col.reshape((c, kk) + self.out_hw + (n1 - n0,))
            jit = jit_kernels()
            if jit is not None:  # the same adds in the same order, compiled
                jit.col2im_batch_inner(cols, xt, self.w_shape[3], *self.dilation)
            else:
                for k, rows_cols in enumerate(self._tap_slices):
                    xt[(slice(None),) + rows_cols] += cols[:, k]
            dxp[:, n0:n1] = xt.transpose(0, 3, 1, 2)
        else:
            cols = dx_col.reshape((c, kk, n1 - n0) + self.out_hw)
            jit = jit_kernels()
            if jit is not None:  # the same adds in the same order, compiled
                jit.col2im_strided(cols, dxp, n0, self.w_shape[3], *self.stride, *self.dilation)
            else:
                for k, rows_cols in enumerate(self._tap_slices):
                    dxp[(slice(None), slice(n0, n1)) + rows_cols] += cols[:, k]

    def finish_dx(self, dxp: np.ndarray) -> np.ndarray:
        """The gradient buffer as the input's (N, C, H, W) gradient (a view when possible)."""
        n, c, h, wd = self.x_shape
        if self.mode == "pointwise":
            return as_nchw(dxp.reshape(c, n, h, wd))
        return crop_channel_major(dxp, self.pads, (h, wd))

    @functools.cached_property
    def dx_geometry(self) -> "_Geometry | None":
        """At stride 1 the input gradient is itself a convolution: dy, padded by
        ``dilation*(k-1) - pad`` on each side, correlated with the kernel rotated by 180
        degrees and its in/out channels swapped. This is that convolution's geometry, or
        None where the column-scatter path (col2im) is used instead: other strides, pads
        wider than the dilated kernel, modes not in ``dx_by_convolution``, fewer than
        ``dx_min_channels`` input channels per group, and weights of more than
        ``dx_max_weight_ratio`` times the input's size."""
        n, c, h, wd = self.x_shape
        f, cg, kh, kw = self.w_shape
        if (self.stride != (1, 1) or self.mode not in self.dx_by_convolution or cg < self.dx_min_channels
                or f * cg * kh * kw > self.dx_max_weight_ratio * n * c * h * wd):
            return None
        (dh, dw), (top, bottom, left, right) = self.dilation, self.pads
        pads = (dh * (kh - 1) - top, dh * (kh - 1) - bottom, dw * (kw - 1) - left, dw * (kw - 1) - right)
        if min(pads) < 0:
            return None
        return _geometry((n, f) + self.out_hw, (c, f // self.groups, kh, kw), pads, (1, 1), self.dilation,
                         (h, wd), self.groups)

    @functools.cached_property
    def _tap_slices(self):
        return [rc for _, _, rc in window_slices(self.w_shape[2:], self.stride, self.dilation, self.out_hw)]

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


@functools.lru_cache(maxsize=256)
def _geometry(*args) -> _Geometry:
    """One _Geometry per distinct call shape (a training step meets the same ones every
    time; it never changes after construction)."""
    return _Geometry(*args)


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
    return memo(_conv_plan, tuple(x.shape), tuple(w.shape), None if b is None else tuple(b.shape),
                stride, padding, dilation, groups, where)


def _conv_plan(x_shape, w_shape, b_shape, stride, padding, dilation, groups, where):
    """The shape checks of :func:`check_conv_args` (remembered per call signature)."""
    stride = pair(stride, "stride", where, minimum=1)
    dilation = pair(dilation, "dilation", where, minimum=1)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise value_error(where, "groups must be a positive int", groups=groups)
    f, cg, kh, kw = w_shape
    if min(kh, kw) < 1:
        raise value_error(where, "kernel_size must be positive", weight=w_shape)
    if f % groups:
        raise value_error(where, "out_channels must be divisible by groups",
                          out_channels=f, groups=groups)
    if x_shape[1] != cg * groups:
        raise value_error(where, f"input has {x_shape[1]} channels, but weight expects "
                          f"{cg * groups} (weight in_channels/groups={cg} x groups={groups})",
                          input=x_shape, weight=w_shape, groups=groups)
    if b_shape is not None and b_shape != (f,):
        raise value_error(where, f"bias must have one value per output channel ({f})",
                          bias=b_shape)
    pads = resolve_padding(padding, (kh, kw), stride, dilation, x_shape[2:], where)
    out_hw = output_hw(x_shape[2:], (kh, kw), stride, dilation, pads, where,
                       input_shape=x_shape, padding=padding)
    return stride, dilation, pads, out_hw


__all__ = ["conv2d_forward", "conv2d_backward", "conv2d", "check_conv_args"]

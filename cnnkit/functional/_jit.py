"""Numba-compiled loops for the kernels that NumPy can only run as many full passes.

Imported by :func:`cnnkit.runtime.jit_kernels` on first use (never by ``import
cnnkit``: importing Numba costs about 0.3 s), and only when Numba is installed and
the JIT is on (``cnnkit.runtime.set_jit``, ``CNNKIT_JIT=0``). Every kernel here has a
NumPy twin in the calling module, which runs without Numba; the tests run both.

The functions are compiled once per dtype and cached on disk (``cache=True``, in
``__pycache__`` beside this file, or Numba's user cache when that is read-only), and
release the GIL (``nogil=True``) so that cnnkit's worker threads run them at once on
their own ranges of channels.

Depthwise convolution (one input channel per filter): kH*kW shifted multiply-adds
over the output. In NumPy each is a full pass over memory (two, with the temporary);
here all taps of a stretch of output are summed while it is in L1 cache.

- Forward, stride 1, outputs at most ``FLAT_MAX_WIDTH`` wide: the "shift" trick per
  channel - a block of padded images is one flat run, tap (p, q) is that run shifted
  by ``p*dh*Wp + q*dw``, so every inner loop is long and vectorizes; the positions
  that are not outputs (right border) are computed and dropped. Wider or strided
  outputs: one output row at a time (rows of 28+ elements vectorize well enough).
  Measured on one thread, float32, batch 8, 3x3: 512 @14 flat 1.3 ms vs rows 2.7;
  1024 @7 0.9 vs 2.7; 32 @112 rows 3.6 vs flat 7.8; 256 @28 rows 2.8 vs flat 3.6.
- 3x3 without dilation, stride 1 or 2 (MobileNet's): all nine taps of an output summed
  in registers, row by row (``_forward_3x3``), or at stride 1 with outputs 13-15 wide
  16 values a row in a loop of constant length (``_forward_3x3_rows16``: LLVM leaves
  loops of a run-time 13-15 scalar).
- Inference (a fused ReLU or ReLU6, no padded copy kept), 3x3 padded by 1 (MobileNet's):
  each plane taken flat, all its outputs in one vectorized loop whatever the row width
  (``depthwise_3x3_same``: reads that would wrap to the next row are selects of zero on a
  column mask; ``depthwise_3x3_s2_same``: even planes split into even and odd positions,
  every tap a unit-stride load). Batch 1, one thread, 512 @14: 81 -> 36 us, stride 2 130
  -> 46 us.
- The forward pads its input a channel at a time (the padded copy, which the backward
  reads, is written while the channel is in cache), and sums the taps in row-major
  order, as the NumPy path does, with the same float32 products and sums: the two give
  the same bits. With a fused ReLU (inference: no backward) no padded copy is kept;
  the 3x3 kernels pad each channel into one reused buffer. Batch 1, MobileNet v1's
  depthwise shapes, in-process against the previous kernels: 0.80-1.0 (32 @112 0.85-0.91,
  64 @112 stride 2 0.80-0.82, 512 @14 0.83-0.96), a few within noise either way.
- Backward of 3x3 'same' convs (the flat forward keeps x, not a padded copy):
  ``depthwise_backward_3x3_same``, dy and x planes taken flat as in the forward.
- Backward at stride 1 otherwise: dx is the forward kernel run on dy (zero-padded by the
  kernel's reach) with the kernel rotated 180 degrees (conv2d's caller arranges it);
  dw[c, p, q] is a dot product of dy (laid out on the padded grid, zeros elsewhere)
  with the shifted flat input, summed in float64 with reassociation allowed (so that
  it vectorizes; fastmath flags appear only in such sums). For 3x3 'same' (MobileNet's)
  the sums run in float32 blocks of DW_BLOCK positions, with fused multiply-adds, and
  float64 across blocks (``_dw_3x3``): 1.7x faster, its error below PyTorch's.
- Backward at stride > 1: one pass over dy for both, row by row; 3x3 at stride 2 by
  even/odd phases instead (``depthwise_backward_3x3_s2``).
"""

from __future__ import annotations

import numba
import numpy as np

FLAT_MAX_WIDTH = 16  # widest output the flat (shift) forward takes; see above
FLAT_BLOCK = 4096    # padded-grid positions per flat block (16 KiB of float32 scratch)
PAD_ZERO_FIRST = 4096  # channels of up to this many padded elements are zeroed whole (_pad_channel)
K3_ROWS16_MIN_WIDTH, K3_ROWS16_MAX_WIDTH = 13, 15  # the 3x3 stride-1 output widths _forward_3x3_rows16 takes
K3_PHASES_MIN_WIDTH = 8  # narrowest 3x3 stride-2 output that the fused-ReLU forward computes from phases
PHASE_BLOCK = 4096  # phase-plane elements per block of images (depthwise_backward_3x3_s2)
DW_BLOCK = 256  # positions whose products _dw_3x3 sums in the input's precision before float64
WINOGRAD_ADJOINT_FLAT_MIN = 64  # tiles of an image in a chunk from which winograd_input_adjoint goes by columns

_U = numba.uint64  # an unsigned index has no negative-index check (which stops vectorizing)


@numba.njit(nogil=True, cache=True)
def depthwise_forward(x, xp, w, b, y, pt, pl, sh, sw, dh, dw, c0, c1, relu):  # pragma: no cover - compiled
    """``y[c, n, i, j] = sum_{p,q} w[c, p, q] * xp[c, n, i*sh + p*dh, j*sw + q*dw] (+ b[c])``
    for channels c0..c1-1, where xp (C, N, Hp, Wp) is filled here, a channel at a time,
    with x (C, N, H, W, any strides) zero-padded by pt rows on top and pl columns on the
    left (xp is what the backward reads). w: (C, kH, kW); b: (C,) or empty for none;
    y: (C, N, Ho, Wo). The bias is added after the taps, as the NumPy path does; with
    ``relu`` each channel's output is then clamped at 0 while it is in cache.

    An xp with no channels, (0, N, Hp, Wp), asks for no padded copy (a forward with no
    backward: a fused ReLU): 3x3 kernels then pad each image into one scratch plane that
    stays in L1, the others into a buffer of their own."""
    keep = xp.shape[0] > 0
    has_bias = b.shape[0] > 0
    k3 = (w.shape[1] == 3 and w.shape[2] == 3 and dh == 1 and dw == 1 and sh == sw and sh <= 2)
    if k3:
        buf = xp if keep else np.zeros((1, xp.shape[1], xp.shape[2], xp.shape[3]), dtype=xp.dtype)
        narrow = sh == 1 and K3_ROWS16_MIN_WIDTH <= y.shape[3] <= K3_ROWS16_MAX_WIDTH
        for c in range(c0, c1):
            d = c if keep else 0
            if keep:
                _pad_channel(x, buf, c, d, pt, pl)
            else:  # the one scratch plane: its border stays zero, each channel overwrites the rest
                _copy_interior(x, buf, c, pt, pl)
            bv = b[c] if has_bias else y.dtype.type(0)
            if narrow:  # (the ReLU applied as each value is stored)
                _forward_3x3_rows16(buf, d, w, y, c, has_bias, bv, relu)
            else:
                _forward_3x3(buf, d, w, y, c, sh, has_bias, bv, relu)
        return
    if not keep:
        xp = np.empty((x.shape[0], xp.shape[1], xp.shape[2], xp.shape[3]), dtype=xp.dtype)
    flat = sh == 1 and sw == 1 and y.shape[3] <= FLAT_MAX_WIDTH
    hw = xp.shape[2] * xp.shape[3]
    scratch = np.empty(max(1, FLAT_BLOCK // hw) * hw if flat else 0, dtype=y.dtype)
    wq = (xp.shape[3] + sw - 1) // sw
    ph = np.empty((sw, xp.shape[1], xp.shape[2], wq) if sw > 1 else (0, 0, 0, 0), dtype=y.dtype)
    for c in range(c0, c1):
        _pad_channel(x, xp, c, c, pt, pl)
        bv = b[c] if has_bias else y.dtype.type(0)
        if flat:
            _forward_flat(xp, w, y, dh, dw, c, scratch, has_bias, bv)
        elif sw > 1:
            _column_phases(xp, c, sw, ph)
            _forward_rows(ph, w, y, sh, sw, dh, dw, c, has_bias, bv)
        else:
            _forward_rows(xp[c:c + 1], w, y, sh, 1, dh, dw, c, has_bias, bv)
        if relu:
            relu_channel(y, c)


@numba.njit(nogil=True, cache=True)
def depthwise_3x3_s2_phases(xf, sn, sc, nb, h, wd, hp, w, b, y, pt, pl, c0, c1, relu):  # pragma: no cover
    """The forward of a 3x3 stride-2 depthwise conv with no padded copy kept (a fused
    ReLU: inference), outputs at least ``K3_PHASES_MIN_WIDTH`` wide, for channels c0..c1-1:
    each channel's padded plane (hp rows) is kept in one scratch array as its even and
    odd columns (_copy_phases), from which every tap is a unit-stride load
    (_forward_3x3_s2_phases). Plane (n, c) of x (h x wd, rows contiguous) starts at
    ``xf[n*sn + c*sc]`` (window.planes); b: (C,) or empty; y: (C, N, Ho, Wo)."""
    ph = np.zeros((2, nb, hp, y.shape[3] + 1), dtype=y.dtype)
    has_bias = b.shape[0] > 0
    for c in range(c0, c1):
        _copy_phases(xf, sn, sc, nb, h, wd, ph, c, pt, pl)
        _forward_3x3_s2_phases(ph, w, y, c, has_bias, b[c] if has_bias else y.dtype.type(0), relu)


@numba.njit(nogil=True, cache=True)
def depthwise_3x3_same(xf, sn, sc, nb, h, wd, w, b, y, c0, c1, relu, hi):  # pragma: no cover - compiled
    """The forward of a 3x3 stride-1 depthwise conv padded by 1 on every side (MobileNet's;
    output h x wd), with no padded copy kept (a fused ReLU: inference), for channels
    c0..c1-1. Plane (n, c) of x (h x wd, contiguous) starts at ``xf[n*sn + c*sc]``
    (window.planes); b: (C,) or empty; y: (C, N, h, wd). With ``relu`` the outputs are
    clamped to [0, hi] (hi = inf for a ReLU, 6 for a ReLU6; NaN kept).

    Each plane is taken flat: copied whole (one unit-stride run) between wd + 1 zeros
    above and below, so that tap (p, q) of output t is ``buf[t + p*wd + q]`` for every t
    of the plane, and the nine taps of all h*wd outputs are one loop, however narrow the
    rows. Read flat, the left taps of a row's first output would take the previous row's
    last input and the right taps of its last output the next row's first: those reads
    are replaced by zero (a select on a column mask, which vectorizes; never a multiply
    by a 0/1 mask, which would let an inf or NaN through), exactly the zeros of the
    padding. The same products summed in the same order as ``_forward_3x3`` (the same
    bits, NaN and -0.0 included).

    One thread, the kernel alone, batch 1, us (this / depthwise_forward's padded rows):
    512 @14 36 / 81, 1024 @7 45 / 84, 256 @28 49 / 82, 128 @56 89 / 107, 32 @112 93 / 112;
    batch 8, 512 @14 261 / 513, 128 @56 1283 / 2142 (``/tmp/s18/flat.py``)."""
    hw = h * wd
    buf = np.zeros(hw + 2 * wd + 2, dtype=y.dtype)
    inner = buf[wd + 1:wd + 1 + hw]
    left = np.ones(hw, dtype=np.bool_)  # False where a left tap would wrap (column 0)
    right = np.ones(hw, dtype=np.bool_)  # False where a right tap would wrap (column wd - 1)
    for i in range(h):
        left[i * wd] = False
        right[i * wd + wd - 1] = False
    zero = y.dtype.type(0)
    has_bias = b.shape[0] > 0
    one, two, uw = _U(1), _U(2), _U(wd)
    for c in range(c0, c1):
        w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
        w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
        w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
        bv = b[c] if has_bias else zero
        for n in range(nb):
            start = n * sn + c * sc
            src = xf[start:start + hw]
            for t in range(hw):
                inner[t] = src[t]
            out = y[c, n].reshape(-1)
            for t in range(hw):
                k0 = _U(t)
                k1 = k0 + uw
                k2 = k1 + uw
                lt, rt = left[t], right[t]
                v = w00 * (buf[k0] if lt else zero)
                v += w01 * buf[k0 + one]
                v += w02 * (buf[k0 + two] if rt else zero)
                v += w10 * (buf[k1] if lt else zero)
                v += w11 * buf[k1 + one]
                v += w12 * (buf[k1 + two] if rt else zero)
                v += w20 * (buf[k2] if lt else zero)
                v += w21 * buf[k2 + one]
                v += w22 * (buf[k2 + two] if rt else zero)
                if has_bias:
                    v += bv
                if relu:  # (relu()'s select: NaN kept)
                    v = zero if v <= zero else v
                    v = hi if v > hi else v
                out[t] = v


@numba.njit(nogil=True, cache=True, inline="always")
def _taps3x3_s2(buf, ue, uo, u, uwo, lt, w00, w01, w02, w10, w11, w12, w20, w21, w22, has_bias, bv,
                relu, hi):  # pragma: no cover - compiled
    """Output u of depthwise_3x3_s2_same from the even (from ue) and odd (from uo) columns
    in buf, the left taps zero unless ``lt``: the nine taps in row-major order, the bias,
    the ReLU capped at hi (relu()'s select: NaN kept)."""
    one, zero = _U(1), buf.dtype.type(0)
    v = w00 * (buf[uo + u - uwo - one] if lt else zero)
    v += w01 * buf[ue + u - uwo]
    v += w02 * buf[uo + u - uwo]
    v += w10 * (buf[uo + u - one] if lt else zero)
    v += w11 * buf[ue + u]
    v += w12 * buf[uo + u]
    v += w20 * (buf[uo + u + uwo - one] if lt else zero)
    v += w21 * buf[ue + u + uwo]
    v += w22 * buf[uo + u + uwo]
    if has_bias:
        v += bv
    if relu:
        v = zero if v <= zero else v
        v = hi if v > hi else v
    return v


@numba.njit(nogil=True, cache=True)
def depthwise_backward_3x3_same(xf, sxn, sxc, gf, sgn, sgc, nb, h, wd, w, dx, dwk, c0, c1, need_dx,
                                need_dw):  # pragma: no cover - compiled
    """The backward of depthwise_3x3_same's conv (3x3, stride 1, padding 1 all round) from x
    itself, for channels c0..c1-1: plane (n, c) of x starts at ``xf[n*sxn + c*sxc]``, of dy
    at ``gf[n*sgn + c*sgc]`` (window.planes). dx: (C, N, h, wd); dwk: (C, 3, 3).

    Each plane of dy (and, for dw, of x) is copied whole between wd + 1 zeros above and
    below, as in the forward, so every tap is a flat shift and the wrapped reads at the
    first and last columns are selects of zero (the padding):

    - ``dx(t) = sum_{p,q} w[p, q] * dy(t + (1-p)*wd + (1-q))`` in the order of the padded
      kernels (w row-major: the same bits as depthwise_backward_flat's);
    - ``dwk[c, p, q] = sum_t dy(t) * x(t + (p-1)*wd + (q-1))`` by _dw_3x3_same, a plane at a
      time summed in dy's precision, the planes' sums in float64.

    With it the forward keeps no padded copy (it keeps x, as the 1x1 and Winograd convs
    do). Against depthwise_forward's padded copy and depthwise_backward_3x3_s1 (dy copied
    onto the padded grid a row at a time), conv2d forward + backward, batch 8, 2 threads,
    ms: 512 @14 0.85 -> 0.62, 1024 @7 0.79 -> 0.63, 256 @28 1.77 -> 1.05, 128 @56 3.14 ->
    2.60, 32 @112 3.17 -> 2.46 (the forward alone 0.37 -> 0.19 at 512 @14;
    ``/tmp/s18/dwtrain2.py``). One thread, the backward alone, us: 512 @14 dx 270 / 406,
    dw 422 / 330, both 637 / 591: the three copies of x cost dw what the forward saves."""
    hw = h * wd
    gb = np.zeros(hw + 2 * wd + 2, dtype=dx.dtype)  # a plane of dy between zero rows
    xb = np.zeros((3, hw + 2 * wd + 2), dtype=dx.dtype)  # a plane of x, the same way, three times:
    # as it is, without its last column (what the left taps read: at column 0 they wrap onto
    # it) and without its first (the right taps')
    gi = gb[wd + 1:wd + 1 + hw]
    left = np.ones(hw, dtype=np.bool_)  # False at column 0 (a read one to the left wraps)
    right = np.ones(hw, dtype=np.bool_)  # False at column wd - 1
    for i in range(h):
        left[i * wd] = False
        right[i * wd + wd - 1] = False
    zero = dx.dtype.type(0)
    one, two, uw = _U(1), _U(2), _U(wd)
    for c in range(c0, c1):
        w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
        w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
        w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
        sums = np.zeros(9)
        for n in range(nb):
            start = n * sgn + c * sgc
            src = gf[start:start + hw]
            for t in range(hw):
                gi[t] = src[t]
            if need_dx:
                out = dx[c, n].reshape(-1)
                for t in range(hw):  # gb[t + wd + 1] is dy(t)
                    k0 = _U(t)
                    k1 = k0 + uw
                    k2 = k1 + uw
                    lt, rt = left[t], right[t]
                    v = w00 * (gb[k2 + two] if rt else zero)
                    v += w01 * gb[k2 + one]
                    v += w02 * (gb[k2] if lt else zero)
                    v += w10 * (gb[k1 + two] if rt else zero)
                    v += w11 * gb[k1 + one]
                    v += w12 * (gb[k1] if lt else zero)
                    v += w20 * (gb[k0 + two] if rt else zero)
                    v += w21 * gb[k0 + one]
                    v += w22 * (gb[k0] if lt else zero)
                    out[t] = v
            if need_dw:
                start = n * sxn + c * sxc
                src = xf[start:start + hw]
                for k in range(3):
                    xi = xb[k, wd + 1:wd + 1 + hw]
                    for t in range(hw):
                        xi[t] = src[t]
                for i in range(h):
                    xb[0, wd + 1 + i * wd + wd - 1] = zero
                    xb[2, wd + 1 + i * wd] = zero
                _dw_3x3_same(gi, xb[0], xb[1], xb[2], wd, sums)
        if need_dw:
            for k in range(9):
                dwk[c, k // 3, k % 3] = sums[k]


@numba.njit(nogil=True, cache=True, inline="always")
def _add_nine(sums, s00, s01, s02, s10, s11, s12, s20, s21, s22):  # pragma: no cover - compiled
    """``sums[3p + q] += s_pq``: a block's nine dw sums into the float64 totals."""
    sums[0] += s00
    sums[1] += s01
    sums[2] += s02
    sums[3] += s10
    sums[4] += s11
    sums[5] += s12
    sums[6] += s20
    sums[7] += s21
    sums[8] += s22


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _dw_3x3_same(g, xl, xb, xr, wd, sums):  # pragma: no cover - compiled
    """``sums[3p + q] += sum_t g[t] * x(t + (p-1)*wd + (q-1))`` over one plane (g: its dy,
    flat; xb: its x between wd + 1 zeros above and below; xl, xr: the same without its last,
    its first column, which the left and right taps read where they wrap to another row).
    As in _dw_3x3, each block of ``DW_BLOCK`` positions is summed in g's precision (16-lane
    vectors, fused multiply-adds), the blocks' sums in float64. (With selects on column
    masks instead of the two copies, this loop ran 2.8x slower.)"""
    zero = g.dtype.type(0)
    one, two, uw = _U(1), _U(2), _U(wd)
    n = g.shape[0]
    for t0 in range(0, n, DW_BLOCK):
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
        for t in range(t0, min(t0 + DW_BLOCK, n)):
            k0 = _U(t)
            k1 = k0 + uw
            k2 = k1 + uw
            gv = g[k0]  # (an unsigned index: a signed one's check stops LLVM vectorizing)
            s00 += gv * xl[k0]
            s01 += gv * xb[k0 + one]
            s02 += gv * xr[k0 + two]
            s10 += gv * xl[k1]
            s11 += gv * xb[k1 + one]
            s12 += gv * xr[k1 + two]
            s20 += gv * xl[k2]
            s21 += gv * xb[k2 + one]
            s22 += gv * xr[k2 + two]
        _add_nine(sums, s00, s01, s02, s10, s11, s12, s20, s21, s22)


K3_S2_SCRATCH_MAX_WIDTH = 31  # widest output depthwise_3x3_s2_same computes as whole phase rows


@numba.njit(nogil=True, cache=True)
def depthwise_3x3_s2_same(xf, sn, sc, nb, h, wd, w, b, y, c0, c1, relu, hi):  # pragma: no cover - compiled
    """The forward of a 3x3 stride-2 depthwise conv of even-sized planes, padded by 1 on
    top and on the left (MobileNet's; output h/2 x wd/2, the bottom and right padding is
    never read), with no padded copy kept (a fused ReLU: inference), for channels c0..c1-1.
    Plane (n, c) of x (h x wd, contiguous) starts at ``xf[n*sn + c*sc]``; b: (C,) or
    empty; y: (C, N, h/2, wd/2); with ``relu`` outputs clamped to [0, hi].

    Taken flat, a plane of even width splits into its even and odd positions in one
    vectorized pass (_split_flat): E holds x's even columns and O its odd ones, row after
    row, each input row a run of wo = wd/2. With u = i*wd + j (output (i, j)), the taps of
    rows 2i-1, 2i, 2i+1 are ``O[u-wo-1] E[u-wo] O[u-wo]``, ``O[u-1] E[u] O[u]``,
    ``O[u+wo-1] E[u+wo] O[u+wo]``: unit-stride loads at fixed offsets. Zeros before E and
    O stand for the top padding; the left taps of column 0 are a select of zero (the left
    padding), as in depthwise_3x3_same. Outputs up to ``K3_S2_SCRATCH_MAX_WIDTH`` wide are
    computed for every u of the plane (the odd input rows' positions too, discarded) in one
    loop into scratch, then their rows copied out; wider ones row by row straight into y.
    The same products summed in the same order as ``_forward_3x3`` (the same bits).

    One thread, the kernel alone, us (this, whole rows / row by row / the kernels before:
    from column phases, or for 7 wide depthwise_forward): batch 1, 512 @14 46 / 54 / 130,
    256 @28 51 / 58 / 110, 128 @56 79 / 82 / 98, 64 @112 169 / 138 / 141; batch 8,
    512 @14 358 / 421 / 1287 (``/tmp/s18/s2.py``)."""
    ho, wo = h // 2, wd // 2
    hw, half = h * wd, (h * wd) // 2
    eb, ob = wo + 1, 2 * (wo + 1) + half  # E and O start here in buf, each after wo + 1 zeros
    buf = np.zeros(ob + half + wo, dtype=y.dtype)  # (+ wo: the discarded positions' reads)
    ph = buf[eb:]
    left = np.ones(half, dtype=np.bool_)  # False at column 0
    for i in range(ho):
        left[i * wd] = False
    whole = wo <= K3_S2_SCRATCH_MAX_WIDTH
    scratch = np.empty(half if whole else 0, dtype=y.dtype)
    zero = y.dtype.type(0)
    has_bias = b.shape[0] > 0
    uwo, ue, uo = _U(wo), _U(eb), _U(ob)
    for c in range(c0, c1):
        w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
        w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
        w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
        bv = b[c] if has_bias else zero
        for n in range(nb):
            _split_flat(xf, _U(n * sn + c * sc), hw, ph, _U(ob - eb))
            out = y[c, n].reshape(-1)
            if whole:  # every u of the plane, one run
                for t in range(half):
                    scratch[t] = _taps3x3_s2(buf, ue, uo, _U(t), uwo, left[t], w00, w01, w02, w10, w11, w12,
                                             w20, w21, w22, has_bias, bv, relu, hi)
            else:  # output row i straight into y
                for i in range(ho):
                    row, base = out[i * wo:], _U(i * wd)
                    for j in range(wo):
                        row[j] = _taps3x3_s2(buf, ue, uo, base + _U(j), uwo, j > 0, w00, w01, w02, w10, w11, w12,
                                             w20, w21, w22, has_bias, bv, relu, hi)
            if whole:
                for i in range(ho):
                    src, row = scratch[i * wd:], out[i * wo:]
                    for j in range(wo):
                        row[j] = src[j]


@numba.njit(nogil=True, cache=True)
def _copy_phases(xf, sn, sc, nb, h, wd, ph, c, pt, pl):  # pragma: no cover - compiled
    """Channel c of x placed at (pt, pl) of a zero-bordered padded plane kept as its even
    and odd columns: ``ph[0, n, pt + a, t]`` = column 2t, ``ph[1, n, pt + a, t]`` = column
    2t + 1 of the padded row (positions outside x are not written: they stay zero).

    Both phases are written in one loop, as rows of the one array ph at run-time offsets
    from a flat view, from a flat x: LLVM vectorizes it (two loads a step, shuffled).
    With x's rows as 1-D views of a (C, N, H, W) view and one loop per phase in blocks of
    eight, it stayed scalar: one thread, batch 1, 64 @112 151 -> 56 us, 128 @56 94 -> 38,
    256 @28 73 -> 44."""
    rows, wq = max(0, min(h, ph.shape[2] - pt)), ph.shape[3]
    bounds = _phase_bounds(wd, pl, wq)
    phf = ph.reshape(-1)
    half = _U(ph.shape[1] * ph.shape[2] * wq)  # from a row of even columns to its odd columns
    for n in range(nb):
        for a in range(rows):
            eb = _U((n * ph.shape[2] + pt + a) * wq)
            _split_row(xf, n * sn + c * sc + a * wd - pl, phf, eb, eb + half, bounds)


@numba.njit(nogil=True, cache=True, inline="always")
def _phase_bounds(wd, pl, wq):  # pragma: no cover - compiled
    """``(t0, te, u0, to, ta, tb)`` for a row of wd placed pl columns into a padded row
    kept as wq even and wq odd columns: the even columns 2t inside x are t = t0..te-1, the
    odd ones 2t + 1 are u0..to-1, both ta..tb-1."""
    t0 = min(wq, (pl + 1) // 2)  # 2t - pl >= 0
    te = max(t0, min(wq, (wd - 1 + pl) // 2 + 1))  # 2t - pl <= wd - 1
    u0 = min(wq, pl // 2)  # 2t + 1 - pl >= 0
    to = max(u0, min(wq, (wd - 2 + pl) // 2 + 1))
    ta = max(t0, u0)
    return t0, te, u0, to, ta, max(ta, min(te, to))


@numba.njit(nogil=True, cache=True, inline="always")
def _split_row(xf, sb, phf, eb, ob, bounds):  # pragma: no cover - compiled
    """The columns inside x of one padded row into its even (``phf[eb:]``) and odd
    (``phf[ob:]``) columns; x's row starts at ``xf[sb + pl]`` (sb: shifted to padded
    columns), ``bounds`` from _phase_bounds; the other positions are not written. Both
    phases in one loop, as rows of one array at run-time offsets from a flat view, from a
    flat x: LLVM vectorizes it (two loads a step, shuffled); the few edge columns apart."""
    t0, te, u0, to, ta, tb = bounds
    two = _U(2)
    ua, ue, uo = _U(sb + 2 * ta), eb + _U(ta), ob + _U(ta)
    for t in range(tb - ta):
        u = _U(t)
        v0, v1 = xf[ua + two * u], xf[ua + two * u + _U(1)]
        phf[ue + u] = v0
        phf[uo + u] = v1
    for t in range(t0, ta):
        phf[eb + _U(t)] = xf[sb + 2 * t]
    for t in range(tb, te):
        phf[eb + _U(t)] = xf[sb + 2 * t]
    for t in range(u0, ta):
        phf[ob + _U(t)] = xf[sb + 2 * t + 1]
    for t in range(tb, to):
        phf[ob + _U(t)] = xf[sb + 2 * t + 1]


@numba.njit(nogil=True, cache=True)
def _forward_3x3_s2_phases(ph, w, y, c, has_bias, bv, relu):  # pragma: no cover - compiled
    """``_forward_3x3`` at stride 2 from the even/odd columns of the padded plane
    (_copy_phases): window j reads e[j], o[j], e[j + 1] of its three rows, so every load
    is unit-stride. The same products summed in the same order (the same bits).

    MobileNet v1's stride-2 depthwise convs at batch 1, one thread, the whole kernel
    (copy + taps), us: 64 @112 329 -> 249, 128 @56 203 -> 160, 256 @28 156 -> 129; but
    512 @14 (7 wide) 120 -> 133. Of the 249: the taps 46 (176 with stride-2 loads from
    the plain padded plane), the de-interleaving copy 148, which now vectorizes
    (_copy_phases: 151 -> 56 us). With that copy, conv2d_forward at batch 1, 2 threads,
    ms: 64 @112 0.26 -> 0.15, 128 @56 0.18 -> 0.11, 256 @28 (14 wide, then under
    ``K3_PHASES_MIN_WIDTH``, now 8) 0.17 -> 0.12; 512 @14 (7 wide) 0.139 -> 0.134, even."""
    nb, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
    w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
    w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
    for n in range(nb):
        for i in range(ho):
            out = y[c, n, i]
            e0, o0 = ph[0, n, 2 * i], ph[1, n, 2 * i]
            e1, o1 = ph[0, n, 2 * i + 1], ph[1, n, 2 * i + 1]
            e2, o2 = ph[0, n, 2 * i + 2], ph[1, n, 2 * i + 2]
            for j in range(wo):
                v = w00 * e0[j]
                v += w01 * o0[j]
                v += w02 * e0[j + 1]
                v += w10 * e1[j]
                v += w11 * o1[j]
                v += w12 * e1[j + 1]
                v += w20 * e2[j]
                v += w21 * o2[j]
                v += w22 * e2[j + 1]
                if has_bias:
                    v += bv
                if relu:
                    v = zero if v <= zero else v
                out[j] = v


@numba.njit(nogil=True, cache=True)
def _copy_interior(x, buf, c, pt, pl):  # pragma: no cover - compiled
    """buf[0, n, pt:pt+H, pl:pl+W] = x[c, n] (cut to buf's size): a zero-bordered scratch
    plane refilled for channel c, its border untouched. Against zeroing and refilling it
    whole (_pad_channel), MobileNet's 512 @14 at batch 1, one thread: 48 -> 25 us."""
    nb, h, wd = x.shape[1], x.shape[2], x.shape[3]
    rows, cols = max(0, min(h, buf.shape[2] - pt)), max(0, min(wd, buf.shape[3] - pl))
    for n in range(nb):
        for a in range(rows):
            src, dst = x[c, n, a], buf[0, n, pt + a, pl:]
            for j in range(cols):
                dst[j] = src[j]


@numba.njit(nogil=True, cache=True)
def _pad_channel(x, xp, c, d, pt, pl):  # pragma: no cover - compiled
    """xp[d] = x[c] with pt zero rows above and pl zero columns on the left, zeros below
    and to the right up to xp's size (rows or columns that xp has no room for are cut).
    A channel of up to ``PAD_ZERO_FIRST`` elements (all N padded images, in L1) is zeroed
    as one flat run, then the rows are copied in: its rows are too short for loops per
    border. In a larger one each element is written once, borders then rows, instead of
    twice (64 @112 stride 2, batch 8: 7.1 -> 5.0 ms for the whole forward)."""
    nb, h, wd = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = xp.shape[2], xp.shape[3]
    rows, cols = max(0, min(h, hp - pt)), max(0, min(wd, wp - pl))
    left = min(pl, wp)
    zero = xp.dtype.type(0)
    if nb * hp * wp <= PAD_ZERO_FIRST:
        flat = xp.reshape(xp.shape[0], nb * hp * wp)[d]
        for t in range(nb * hp * wp):
            flat[t] = zero
        for n in range(nb):
            for a in range(rows):
                src, dst = x[c, n, a], xp[d, n, pt + a, left:]
                for j in range(cols):
                    dst[j] = src[j]
        return
    for n in range(nb):
        for a in range(hp):
            dst = xp[d, n, a]
            if a < pt or a >= pt + rows:
                for j in range(wp):
                    dst[j] = zero
                continue
            src, inner = x[c, n, a - pt], dst[left:left + cols]
            for j in range(left):
                dst[j] = zero
            for j in range(cols):
                inner[j] = src[j]
            for j in range(left + cols, wp):
                dst[j] = zero


# Inner loops run over 1-D slices: indexing a 2-D array with a computed index
# (``x2[c, s + t]``) costs a negative-index check per element that stops LLVM from
# vectorizing (measured: 77 us vs 21 us for 90,000 multiply-adds).

@numba.njit(nogil=True, cache=True)
def _forward_flat(xp, w, y, dh, dw, c, scratch, has_bias, bv):  # pragma: no cover - compiled
    """Channel c by the shift trick (see the module docstring), the bias (if any) added
    as the valid positions are copied out."""
    nb, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    hp, wp = xp.shape[2], xp.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    hw = hp * wp
    x2 = xp.reshape(xp.shape[0], nb * hw)
    blk = max(1, FLAT_BLOCK // hw)  # scratch holds blk * hw elements
    for n0 in range(0, nb, blk):
        m = min(blk, nb - n0)
        run = (m - 1) * hw + (ho - 1) * wp + wo  # last output's position + 1
        base = n0 * hw
        acc = scratch[:run]
        src = x2[c, base:base + run]
        wv = w[c, 0, 0]
        for t in range(run):
            acc[t] = wv * src[t]
        for p in range(kh):
            for q in range(kw):
                if p == 0 and q == 0:
                    continue
                wv = w[c, p, q]
                s = base + p * dh * wp + q * dw
                src = x2[c, s:s + run]
                for t in range(run):
                    acc[t] += wv * src[t]
        for k in range(m):
            for i in range(ho):
                out, res = y[c, n0 + k, i], acc[k * hw + i * wp:]
                if has_bias:
                    for j in range(wo):
                        out[j] = res[j] + bv
                else:
                    for j in range(wo):  # (a loop: slice assignment is slow in Numba)
                        out[j] = res[j]


@numba.njit(nogil=True, cache=True)
def _forward_3x3(xp, d, w, y, c, s, has_bias, bv, relu=False):  # pragma: no cover - compiled
    """Channel c of a 3x3 depthwise conv: padded images xp[d] (N, Hp, Wp), filter w[c]
    (3, 3), stride s = 1 or 2 (both axes), no dilation, into y[c] (N, Ho, Wo). (The
    arrays whole and their indices: views made per channel cost 0.2 us each.) Each output row is
    written once, its nine taps read from three input rows and summed in registers in
    the order the other paths add them (row-major taps, then the bias:
    the same bits). The tap offsets are literals in the inner loops: with offsets computed
    from arguments LLVM did not vectorize them (10x slower). Against the shift trick and
    the row kernel, which pass over the output once per tap (one thread, kernels alone,
    ms): MobileNet's 128 @56 batch 1 0.54-0.83 -> 0.16-0.20; 64 @112 0.85-1.13 -> 0.36;
    128 @56 batch 8 5.0-7.5 -> 2.4; stride 2, 512 @14 0.50 -> 0.11, 128 @56 batch 8
    3.4 -> 2.0; 512 @14 batch 8 (flat) 1.15-1.9 -> 1.1-1.5."""
    nb, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
    w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
    w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
    for n in range(nb):
        for i in range(ho):
            out = y[c, n, i]
            r0, r1, r2 = xp[d, n, i * s], xp[d, n, i * s + 1], xp[d, n, i * s + 2]
            if s == 1:
                for j in range(wo):
                    v = w00 * r0[j]
                    v += w01 * r0[j + 1]
                    v += w02 * r0[j + 2]
                    v += w10 * r1[j]
                    v += w11 * r1[j + 1]
                    v += w12 * r1[j + 2]
                    v += w20 * r2[j]
                    v += w21 * r2[j + 1]
                    v += w22 * r2[j + 2]
                    if has_bias:
                        v += bv
                    if relu:  # (relu()'s select: NaN kept)
                        v = zero if v <= zero else v
                    out[j] = v
            else:
                for j in range(wo):
                    v = w00 * r0[2 * j]
                    v += w01 * r0[2 * j + 1]
                    v += w02 * r0[2 * j + 2]
                    v += w10 * r1[2 * j]
                    v += w11 * r1[2 * j + 1]
                    v += w12 * r1[2 * j + 2]
                    v += w20 * r2[2 * j]
                    v += w21 * r2[2 * j + 1]
                    v += w22 * r2[2 * j + 2]
                    if has_bias:
                        v += bv
                    if relu:  # (relu()'s select: NaN kept)
                        v = zero if v <= zero else v
                    out[j] = v


@numba.njit(nogil=True, cache=True)
def _forward_3x3_rows16(xp, d, w, y, c, has_bias, bv, relu=False):  # pragma: no cover - compiled
    """``_forward_3x3`` at stride 1 for outputs up to 16 wide: every output row is computed
    as 16 values in a loop of constant length (one 16-lane vector; LLVM leaves loops of a
    run-time 7 or 14 scalar), written straight into y (no scratch, no copying out). The values past the row's end
    land on the next row's start (of this channel) and are overwritten when that row is
    computed, in order; they read past the padded row, into the next one. Rows whose 16
    values or reads would leave this channel's y or xp planes take a plain loop. Same
    sums in the same order as the other paths (the same bits).

    One thread, kernel alone, us, on the AVX-512 host (rows16 / _forward_3x3 / the flat
    shift kernel this replaced), batch 8 with about 100k outputs a row: 13 wide 322 / 429
    / 417, 14 wide 323 / 437 / 440, 15 wide 278 / 478 / 411; batch 1 14 wide 54 / 59 /
    69. At 8, 12, 16 and 20-32 wide _forward_3x3 was fastest (8 wide 361 / 543 / 636,
    16 wide 218 / 254 / 303), and the flat kernel lost at every width, so it is gone."""
    nb, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    hp, wp = xp.shape[2], xp.shape[3]
    w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
    w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
    w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
    xf, yf = xp[d].reshape(-1), y[c].reshape(-1)
    xn, yn = _U(xf.shape[0]), _U(yf.shape[0])
    two, uw = _U(2), _U(wp)
    for n in range(nb):
        for i in range(ho):
            k, o = _U((n * hp + i) * wp), _U((n * ho + i) * wo)
            if o + _U(16) <= yn and k + two * uw + _U(18) <= xn:
                for j in range(16):
                    v = _taps3x3(xf, k + _U(j), uw, w00, w01, w02, w10, w11, w12, w20, w21, w22)
                    if has_bias:
                        v += bv
                    if relu:
                        v = zero if v <= zero else v
                    yf[o + _U(j)] = v
            else:
                for j in range(wo):
                    v = _taps3x3(xf, k + _U(j), uw, w00, w01, w02, w10, w11, w12, w20, w21, w22)
                    if has_bias:
                        v += bv
                    if relu:
                        v = zero if v <= zero else v
                    yf[o + _U(j)] = v


@numba.njit(nogil=True, cache=True, inline="always")
def _taps3x3(xf, t, uw, w00, w01, w02, w10, w11, w12, w20, w21, w22, backwards=False):  # pragma: no cover
    """The nine taps ``w_pq * xf[t + p*uw + q]`` at flat position t of a padded plane of
    row length uw, summed in row-major order of (p, q), or from (2, 2) back to (0, 0)
    with ``backwards`` (dx of a depthwise conv: the rotated kernel, in the order its
    unrotated taps are added)."""
    one, two = _U(1), _U(2)
    t1 = t + uw
    t2 = t1 + uw
    if backwards:
        v = w22 * xf[t2 + two]
        v += w21 * xf[t2 + one]
        v += w20 * xf[t2]
        v += w12 * xf[t1 + two]
        v += w11 * xf[t1 + one]
        v += w10 * xf[t1]
        v += w02 * xf[t + two]
        v += w01 * xf[t + one]
        v += w00 * xf[t]
        return v
    v = w00 * xf[t]
    v += w01 * xf[t + one]
    v += w02 * xf[t + two]
    v += w10 * xf[t1]
    v += w11 * xf[t1 + one]
    v += w12 * xf[t1 + two]
    v += w20 * xf[t2]
    v += w21 * xf[t2 + one]
    v += w22 * xf[t2 + two]
    return v


@numba.njit(nogil=True, cache=True)
def _column_phases(xp, c, sw, ph):  # pragma: no cover - compiled
    """``ph[r, n, a, j] = xp[c, n, a, j*sw + r]``: channel c's padded columns split by their
    remainder mod the column stride, so that a strided tap reads a contiguous run."""
    wp = xp.shape[3]
    for n in range(xp.shape[1]):
        for a in range(xp.shape[2]):
            row = xp[c, n, a]
            for r in range(sw):
                dst = ph[r, n, a]
                for j in range((wp - r + sw - 1) // sw):
                    dst[j] = row[j * sw + r]


@numba.njit(nogil=True, cache=True)
def _forward_rows(ph, w, y, sh, sw, dh, dw, c, has_bias, bv):  # pragma: no cover - compiled
    """Channel c, one output row at a time; ph: the channel's padded input split into
    column phases (sw, N, Hp, ceil(Wp/sw)) (at sw = 1, just the channel), so that every
    tap reads a contiguous run: column j*sw + q*dw is phase (q*dw) % sw, index
    (q*dw) // sw + j."""
    nb, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    for n in range(nb):
        for i in range(ho):
            out = y[c, n, i]
            for p in range(kh):
                for q in range(kw):
                    wv, off = w[c, p, q], q * dw
                    src = ph[off % sw, n, i * sh + p * dh, off // sw:off // sw + wo]
                    if p == 0 and q == 0:
                        for j in range(wo):
                            out[j] = wv * src[j]
                    else:
                        for j in range(wo):
                            out[j] += wv * src[j]
            if has_bias:  # while the row is in L1
                for j in range(wo):
                    out[j] += bv


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def depthwise_backward_3x3_s1(xp, w, dy, dx, dwk, c0, c1, need_dx, need_dw):  # pragma: no cover
    """:func:`depthwise_backward_flat` for 3x3, stride 1, no dilation, one row and column
    of padding on every side (MobileNet's), xp (C, N, H+2, W+2): for a cache that holds
    the padded copy (a forward run without the JIT; the compiled forward of these convs
    keeps x, for depthwise_backward_3x3_same). Per channel, dy goes
    once onto a zero-bordered copy g of the padded grid (its row i, column j at (i+1,
    j+1)); then

    - dx row by row, all nine taps of an element summed in registers
      (:func:`_dx_3x3_s1`) and written straight into dx: no scratch passes per tap, no
      copying out;
    - ``dwk[c, p, q] = sum_t g[t] * x[t + (p-1)*Wp + (q-1)]``, the same terms as
      depthwise_backward_flat, all nine in one pass (1.44 -> 1.20 us a channel of 8
      images 14x14, one thread), summed in float32 blocks (:func:`_dw_3x3`).

    Batch 8, 512 @14, 2 threads, conv2d_backward, ms: dx only 0.53 -> 0.35 (PyTorch
    0.22); both 0.89 -> 0.64 (0.52); dw alone unchanged, 0.49 (0.19)."""
    nb, h, wd = dy.shape[1], dy.shape[2], dy.shape[3]
    wp = wd + 2
    hw = (h + 2) * wp
    g = np.zeros(nb * hw + 2 * wp + 32, dtype=dy.dtype)  # the borders are never written
    x2 = xp.reshape(xp.shape[0], nb * hw)
    first, last = wp + 1, (nb - 1) * hw + h * wp + wd + 1  # dy's first and one past its last position
    one, two = _U(1), _U(2)
    for c in range(c0, c1):
        for n in range(nb):
            for i in range(h):
                src, dst = dy[c, n, i], g[n * hw + (i + 1) * wp + 1:]
                for j in range(wd):
                    dst[j] = src[j]
        if need_dx:
            _dx_3x3_s1(g, w, dx, c, wp, hw)
        if need_dw:  # the nine sums in one pass over g
            _dw_3x3(g[first:last], x2[c, first - wp - 1:], x2[c, first - 1:], x2[c, first + wp - 1:], dwk[c])


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _dw_3x3(g, xa, xb, xc, dwc):  # pragma: no cover - compiled
    """``dwc[p, q] = sum_t g[t] * row_p[t + q]`` over g's positions, rows a, b, c: the
    padded input shifted by a row up, none, a row down. Each block of ``DW_BLOCK``
    positions is summed in g's precision (16-lane vectors: a lane's sum has a handful of
    terms, with fused multiply-adds), the blocks' sums in float64. Against float64
    products summed in float64, as this was until 2026-11-27, conv2d_backward of
    depthwise 3x3 convs, batch 8, one thread, dw alone (ms): 512 @14 0.67 -> 0.39, 256
    @28 1.03 -> 0.54, 128 @56 2.25 -> 1.38; with dx, 512 @14 0.93 -> 0.66. The error,
    measured as |dw - exact| / sum_t |g[t] * x[...]| in float32 epsilons: at most 0.41
    (mean 0.003-0.10) over MobileNet's shapes and small ones, against 0.004-0.15 for the
    float64 sums and 0.60-1.64 for PyTorch 2.13's float32 conv backward on the same data
    (tests/functional/test_jit.py holds it below PyTorch's)."""
    zero = g.dtype.type(0)
    one, two = _U(1), _U(2)
    n = g.shape[0]
    t00 = t01 = t02 = t10 = t11 = t12 = t20 = t21 = t22 = 0.0
    for t0 in range(0, n, DW_BLOCK):
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
        for t in range(t0, min(t0 + DW_BLOCK, n)):
            u = _U(t)
            gv = g[u]
            s00 += gv * xa[u]
            s01 += gv * xa[u + one]
            s02 += gv * xa[u + two]
            s10 += gv * xb[u]
            s11 += gv * xb[u + one]
            s12 += gv * xb[u + two]
            s20 += gv * xc[u]
            s21 += gv * xc[u + one]
            s22 += gv * xc[u + two]
        t00 += s00
        t01 += s01
        t02 += s02
        t10 += s10
        t11 += s11
        t12 += s12
        t20 += s20
        t21 += s21
        t22 += s22
    dwc[0, 0], dwc[0, 1], dwc[0, 2] = t00, t01, t02
    dwc[1, 0], dwc[1, 1], dwc[1, 2] = t10, t11, t12
    dwc[2, 0], dwc[2, 1], dwc[2, 2] = t20, t21, t22


@numba.njit(nogil=True, cache=True)
def _dx_3x3_s1(g, w, dx, c, wp, hw):  # pragma: no cover - compiled
    """``dx[c, n, a, b] = sum_{p,q} w[c, p, q] * g[n*hw + (a + 2 - p)*wp + b + 2 - q]``, taps in
    row-major order (the order depthwise_backward_flat adds them). Rows up to 16 wide are
    computed as 16 values in a loop of constant length, as in _forward_3x3_rows16 (the
    spill lands on the next row of this channel and is overwritten in order)."""
    nb, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
    w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
    w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
    df = dx[c].reshape(-1)
    dn, uw = _U(df.shape[0]), _U(wp)
    for n in range(nb):
        for a in range(h):
            k, o = _U(n * hw + a * wp), _U((n * h + a) * wd)
            if wd <= 16 and o + _U(16) <= dn:
                for b in range(16):
                    df[o + _U(b)] = _taps3x3(g, k + _U(b), uw, w22, w21, w20, w12, w11, w10, w02, w01, w00,
                                             True)
            else:
                for b in range(wd):
                    df[o + _U(b)] = _taps3x3(g, k + _U(b), uw, w22, w21, w20, w12, w11, w10, w02, w01, w00,
                                             True)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def depthwise_backward_flat(xp, w, dy, dx, dwk, pt, pl, dh, dw, c0, c1, need_dx, need_dw):  # pragma: no cover
    """Stride 1, channels c0..c1-1: dy is spread on the padded grid (zeros elsewhere) as
    g, a block of images at a time; then per tap (p, q), shifted by s = p*dh*Wp + q*dw:
    ``dxp[s + t] += w[c, p, q] * g[t]`` (dxp: a zeroed scratch block whose unpadded
    part is copied to dx (C, N, H, W), pads (pt, pl)) and
    ``dwk[c, p, q] = sum_t g[t] * x[s + t]``, float64 products summed in float64."""
    nb, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    hp, wp = xp.shape[2], xp.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    hw = hp * wp
    x2 = xp.reshape(xp.shape[0], nb * hw)
    blk = max(1, FLAT_BLOCK // hw)
    g = np.zeros(blk * hw, dtype=dy.dtype)  # only output positions are ever written
    dxs = np.empty(blk * hw, dtype=dy.dtype)
    sums = np.zeros((kh, kw), dtype=np.float64)
    for c in range(c0, c1):
        sums[:] = 0.0
        for n0 in range(0, nb, blk):
            m = min(blk, nb - n0)
            run = (m - 1) * hw + (ho - 1) * wp + wo
            base = n0 * hw
            for k in range(m):
                for i in range(ho):
                    row, dst = dy[c, n0 + k, i], g[k * hw + i * wp:]
                    for j in range(wo):
                        dst[j] = row[j]
            gr = g[:run]
            if need_dx:
                dxs[:] = 0.0
            for p in range(kh):
                for q in range(kw):
                    s = p * dh * wp + q * dw
                    if need_dw:
                        src = x2[c, base + s:base + s + run]
                        total = 0.0
                        for t in range(run):
                            total += np.float64(gr[t]) * np.float64(src[t])
                        sums[p, q] += total
                    if need_dx:
                        wv, dst = w[c, p, q], dxs[s:s + run]
                        for t in range(run):
                            dst[t] += wv * gr[t]
            if need_dx:
                for k in range(m):
                    for a in range(dx.shape[2]):
                        out, src = dx[c, n0 + k, a], dxs[k * hw + (a + pt) * wp + pl:]
                        for b in range(dx.shape[3]):
                            out[b] = src[b]
        if need_dw:
            for p in range(kh):
                for q in range(kw):
                    dwk[c, p, q] = sums[p, q]


@numba.njit(nogil=True, cache=True)
def depthwise_backward_rows(xp, w, dy, dxp, dwk, sh, sw, dh, dw, c0, c1, need_dx, need_dw):  # pragma: no cover
    """Any stride, in one pass over dy for channels c0..c1-1:
    ``dxp[c, n, i*sh + p*dh, j*sw + q*dw] += w[c, p, q] * dy[c, n, i, j]`` (dxp zeroed
    by the caller) and ``dwk[c, p, q] = sum_{n,i,j} dy * xp`` with float64 products,
    summed in float64 (one partial sum per output column, added up at the end)."""
    nb, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    span = (wo - 1) * sw + 1
    acc = np.zeros((kh, kw, wo), dtype=np.float64)
    for c in range(c0, c1):
        acc[:] = 0.0
        for n in range(nb):
            for i in range(ho):
                g = dy[c, n, i]
                for p in range(kh):
                    r = i * sh + p * dh
                    for q in range(kw):
                        off = q * dw
                        if need_dw:  # (dxp and dwk are only indexed when needed)
                            a, src = acc[p, q], xp[c, n, r, off:off + span:sw]
                            for j in range(wo):
                                a[j] += np.float64(g[j]) * np.float64(src[j])
                        if need_dx:
                            wv, dst = w[c, p, q], dxp[c, n, r, off:off + span:sw]
                            for j in range(wo):
                                dst[j] += wv * g[j]
        if need_dw:
            for p in range(kh):
                for q in range(kw):
                    total = 0.0
                    a = acc[p, q]
                    for j in range(wo):
                        total += a[j]
                    dwk[c, p, q] = total


@numba.njit(nogil=True, cache=True)
def depthwise_backward_3x3_s2(xp, w, dy, dx, dwk, pt, pl, c0, c1, need_dx, need_dw):  # pragma: no cover
    """Depthwise backward for 3x3 at stride 2, no dilation (MobileNet's four downsampling
    convs), for channels c0..c1-1, by phases: a channel's padded input xp (2*Ho + 1 rows
    and columns) split into its four even/odd row/column planes, a block of images one
    after the other, each image's plane Ho + 1 rows of Wo + 1 (``w1``). Tap (p, q) then
    reads phase (p % 2, q % 2) shifted by ``(p // 2) * w1 + q // 2``: a contiguous run,
    whatever the image width. With dy laid out the same way (zeros in the extra row and
    column), ``dw[p, q]`` is one long dot product per block (all nine in one pass,
    _dw_3x3_phases) and each phase of dx a sum of one to four shifted copies of dy, interleaved
    straight into dx (C, N, H, W) (padding pt rows on top and pl columns on the left
    dropped; every element written, zeros where no window reaches).

    It replaced a kernel that did each tap of each output row as a loop of Wo stride-2
    steps (plus a zeroed padded dx, cropped afterwards). conv2d_backward, batch 8, 2
    threads, ms (PyTorch in the same run): 512 @14 3.94 -> 0.51 (0.29-0.46); 256 @28 3.66
    -> 0.64-0.72 (0.47-0.83); 128 @56 4.44 -> 1.76 (1.19-2.03); 64 @112 6.15 -> 2.76-3.39
    (3.45-4.90). The pairs of even/odd columns are read and written in one loop each:
    LLVM then vectorizes them with shuffles (64 @112, dw alone 7.4 -> 3.0 ms)."""
    nb, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    w1 = wo + 1
    plane = (ho + 1) * w1
    per = max(1, min(nb, PHASE_BLOCK // plane))  # images per block
    size = per * plane
    front = w1 + 1  # zeros before the first image: dx reads dy up to w1 + 1 before a position
    ph = np.zeros((4, size + w1 + 2), dtype=xp.dtype)  # (p%2)*2 + q%2; slack for shifted reads
    g = np.zeros(front + size + w1 + 2, dtype=dy.dtype)  # dy; zeros at row Ho and column Wo
    sums = np.zeros(9, dtype=np.float64)
    one = _U(1)
    hx, wx = dx.shape[2], dx.shape[3]
    pairs = max(0, min(wx // 2, (2 * wo - 1 - pl) // 2 + 1))  # dx column pairs inside the padded grid
    for c in range(c0, c1):
        sums[:] = 0.0
        for n0 in range(0, nb, per):
            m = min(per, nb - n0)
            for n in range(m):
                dn = dy[c, n0 + n]
                for i in range(ho):
                    o, iu = _U(front + n * plane + i * w1), _U(i)
                    for j in range(wo):
                        g[o + _U(j)] = dn[iu, _U(j)]
            if need_dw:
                p0, p1, p2, p3 = ph[0], ph[1], ph[2], ph[3]
                for n in range(m):
                    xn = xp[c, n0 + n]  # (2*Ho + 1, 2*Wo + 1)
                    for u in range(ho + 1):
                        o, r = _U(n * plane + u * w1), _U(2 * u)
                        for k in range(wo):  # both columns of a pair in one loop: vector shuffles
                            p0[o + _U(k)] = xn[r, _U(2 * k)]
                            p1[o + _U(k)] = xn[r, _U(2 * k) + one]
                        p0[o + _U(wo)] = xn[r, _U(2 * wo)]
                        p1[o + _U(wo)] = 0  # (no such column: read against dy's zeros, and
                        if u < ho:          # then must hold no NaN left by another channel)
                            for k in range(wo):
                                p2[o + _U(k)] = xn[r + one, _U(2 * k)]
                                p3[o + _U(k)] = xn[r + one, _U(2 * k) + one]
                            p2[o + _U(wo)] = xn[r + one, _U(2 * wo)]
                            p3[o + _U(wo)] = 0
                        else:
                            for k in range(wo + 1):
                                p2[o + _U(k)] = 0
                                p3[o + _U(k)] = 0
                _dw_3x3_phases(g[front:front + m * plane], ph.reshape(-1), ph.shape[1], w1, sums)
            if need_dx:
                w00, w01, w02 = w[c, 0, 0], w[c, 0, 1], w[c, 0, 2]
                w10, w11, w12 = w[c, 1, 0], w[c, 1, 1], w[c, 1, 2]
                w20, w21, w22 = w[c, 2, 0], w[c, 2, 1], w[c, 2, 2]
                d0, d1, d2, d3 = ph[0], ph[1], ph[2], ph[3]
                f, b1, b2 = _U(front), _U(w1), _U(w1 + 1)
                phf, lr = ph.reshape(-1), _U(ph.shape[1])  # the four phases: rows of one array,
                for t in range(m * plane):  # written in one loop (vectorized; four row views were not)
                    s, u = _U(t) + f, _U(t)  # dP[s] = sum over the phase's taps of w * dy[s - shift]
                    phf[u] = w00 * g[s] + w02 * g[s - one] + w20 * g[s - b1] + w22 * g[s - b2]
                    phf[lr + u] = w01 * g[s] + w21 * g[s - b1]
                    phf[_U(2) * lr + u] = w10 * g[s] + w12 * g[s - one]
                    phf[_U(3) * lr + u] = w11 * g[s]
                for n in range(m):
                    xn = dx[c, n0 + n]
                    for u in range(ho + 1):
                        o = n * plane + u * w1
                        for a in range(2):  # padded row 2u + a, dx row r
                            r = 2 * u + a - pt
                            if r < 0 or r >= hx or (a == 1 and u == ho):
                                continue
                            even, odd, ru = (d0, d1, _U(r)) if a == 0 else (d2, d3, _U(r))
                            # dx columns 2j and 2j + 1 are padded columns 2j + pl and 2j + 1 + pl
                            src0, src1 = (even, odd) if pl % 2 == 0 else (odd, even)
                            s0, s1 = _U(o + pl // 2), _U(o + (pl + 1) // 2)
                            for j in range(pairs):  # both of a pair in one loop: vector shuffles
                                xn[ru, _U(2 * j)] = src0[s0 + _U(j)]
                                xn[ru, _U(2 * j) + one] = src1[s1 + _U(j)]
                            for col in range(2 * pairs, wx):  # the rest; zeros past the padded grid
                                q = col + pl
                                if q > 2 * wo:
                                    xn[ru, col] = 0
                                elif q % 2 == 0:
                                    xn[ru, col] = even[o + q // 2]
                                else:
                                    xn[ru, col] = odd[o + q // 2]
            if need_dx:  # input rows past the padded grid: no window reads them
                for n in range(nb):
                    for r in range(max(0, 2 * ho + 1 - pt), hx):
                        dx[c, n, r, :] = 0
        if need_dw:
            for k in range(9):
                dwk[c, k // 3, k % 3] = sums[k]


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _dw_3x3_phases(g, phf, lr, w1, sums):  # pragma: no cover - compiled
    """``sums[3p + q] += sum_t g[t] * P_pq[t + (p // 2)*w1 + q // 2]``, P_pq the phase
    (p % 2, q % 2): row ``2*(p % 2) + q % 2`` of the (4, lr) phase array (flat, ``phf``).
    All nine in one pass over g, in blocks of ``DW_BLOCK`` positions summed in g's
    precision (fused multiply-adds), the blocks in float64: as _dw_3x3 does for stride 1.
    It replaced nine float64 dot products, one pass each. (One kernel with nine run-time
    offsets for both strides ran the stride-1 dw 10-15% slower than _dw_3x3, whose
    offsets within a row are constants: kept apart.)"""
    zero = g.dtype.type(0)
    n = g.shape[0]
    ul, o1 = _U(lr), _U(1)
    r1, r2, r3 = ul, _U(2) * ul, _U(3) * ul
    b1, b2 = _U(w1), _U(w1 + 1)
    for t0 in range(0, n, DW_BLOCK):
        s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
        for t in range(t0, min(t0 + DW_BLOCK, n)):
            u = _U(t)
            gv = g[u]
            s00 += gv * phf[u]
            s01 += gv * phf[r1 + u]
            s02 += gv * phf[u + o1]
            s10 += gv * phf[r2 + u]
            s11 += gv * phf[r3 + u]
            s12 += gv * phf[r2 + u + o1]
            s20 += gv * phf[u + b1]
            s21 += gv * phf[r1 + u + b1]
            s22 += gv * phf[u + b2]
        _add_nine(sums, s00, s01, s02, s10, s11, s12, s20, s21, s22)


# ---- batch normalization with batch statistics (training) ----------------------------
# NumPy makes about eleven passes over memory for the forward (sums, centring, a squared
# temporary, scaling, gamma, beta) and thirteen for the backward; these loops make three
# and two per channel row, the statistics in float64 (reassociated, so they vectorize).

@numba.njit(nogil=True, cache=True)
def batch_norm_forward(X, weight, bias, y, mean64, var64, inv_std, eps, c0, c1, mask):  # pragma: no cover
    """Rows c0..c1-1 of X (C, M): mean and biased variance in float64 (two passes), then
    ``y = xhat * weight + bias`` with ``xhat = (x - mean) * inv_std``, in X's dtype: the
    same operations as the NumPy path (xhat itself is not stored: the backward computes
    it again from X, to the same bits). weight/bias: (C,) or empty for none. A mask of
    X's shape (booleans, not empty) asks for a ReLU after it: ``y = max(., 0)`` (relu()'s
    select) and ``mask = . > 0``, as relu_and_mask writes them.

    No fastmath here (only in the sums, _bn_stats): with reassociation allowed LLVM may
    fold ``((x - mean) * inv_std) * weight`` into ``(x - mean) * (inv_std * weight)``."""
    m = X.shape[1]
    zero = X.dtype.type(0)
    has_w, has_b = weight.shape[0] > 0, bias.shape[0] > 0
    for c in range(c0, c1):
        row = X[c]
        mean64[c], var64[c], inv_std[c] = _bn_stats(row, eps)
        mu, iv = row.dtype.type(mean64[c]), inv_std[c]
        g = weight[c] if has_w else row.dtype.type(1.0)
        b = bias[c] if has_b else row.dtype.type(0.0)
        out = y[c]
        if mask.shape[0] > 0:
            mk = mask[c]
            for t in range(m):
                v = _bn_affine((row[t] - mu) * iv, g, b, has_w, has_b)
                out[t] = zero if v <= zero else v
                mk[t] = v > zero
        else:
            for t in range(m):
                out[t] = _bn_affine((row[t] - mu) * iv, g, b, has_w, has_b)


@numba.njit(nogil=True, cache=True, inline="always")
def _bn_affine(v, g, b, has_weight, has_bias):  # pragma: no cover - compiled
    """``v * g + b`` as the NumPy path rounds it (a multiply, then an add), with the factor
    or the term left out when the layer has none."""
    if has_weight:
        v = v * g
    if has_bias:
        v = v + b
    return v


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def _bn_stats(row, eps):  # pragma: no cover - compiled
    """A channel row's mean and biased variance in float64 (two passes, reassociated so
    that they vectorize), and ``1 / sqrt(var + eps)``. Not inlined: its callers compile
    without fastmath, and an inlined body would take theirs."""
    m = row.shape[0]
    s = 0.0
    for t in range(m):
        s += np.float64(row[t])
    mean = s / m
    s = 0.0
    for t in range(m):
        d = np.float64(row[t]) - mean
        s += d * d
    var = s / m
    return mean, var, 1.0 / np.sqrt(var + eps)


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def _bn_grad_sums(d, x, mu, iv):  # pragma: no cover - compiled
    """``(sum(dy), sum(dy * xhat))`` of a channel row in float64 (reassociated so that they
    vectorize), xhat = ``(x - mu) * iv`` in x's dtype."""
    sb, sg = 0.0, 0.0
    for t in range(d.shape[0]):
        v = np.float64(d[t])
        sb += v
        sg += v * np.float64((x[t] - mu) * iv)
    return sb, sg


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def _bn_grad_sums_masked(d, x, mu, iv, mk):  # pragma: no cover - compiled
    """:func:`_bn_grad_sums` of ``dy = d * mk`` (relu_backward's product)."""
    one, zero = d.dtype.type(1), d.dtype.type(0)
    sb, sg = 0.0, 0.0
    for t in range(d.shape[0]):
        v = np.float64(d[t] * (one if mk[t] else zero))
        sb += v
        sg += v * np.float64((x[t] - mu) * iv)
    return sb, sg


@numba.njit(nogil=True, cache=True)
def batch_norm_backward(D, X, mean, inv_std, scale, dx, dbeta64, dgamma64, c0, c1, mask):  # pragma: no cover
    """Rows c0..c1-1: ``dbeta = sum(dy)``, ``dgamma = sum(dy * xhat)`` (float64, one pass),
    then ``dx = dy*scale - (xhat*a + b)`` with ``a = scale*dgamma/n``, ``b = scale*dbeta/n``
    in D's dtype, the same operations as the NumPy path. xhat is ``(x - mean) * inv_std``
    from the forward's input X (C, M) and its mean in X's dtype, as the forward computed
    it. A mask (not empty: the forward's fused ReLU) stands for a ReLU's backward first:
    dy is ``dy * mask``, relu_backward's product, in both passes."""
    m = D.shape[1]
    one, zero = D.dtype.type(1), D.dtype.type(0)
    for c in range(c0, c1):
        d, x, mu, iv = D[c], X[c], mean[c], inv_std[c]
        if mask.shape[0] > 0:
            sb, sg = _bn_grad_sums_masked(d, x, mu, iv, mask[c])
        else:
            sb, sg = _bn_grad_sums(d, x, mu, iv)
        dbeta64[c], dgamma64[c] = sb, sg
        sc = scale[c]
        a = d.dtype.type(np.float64(sc) * (sg / m))
        b = d.dtype.type(np.float64(sc) * (sb / m))
        out = dx[c]
        if mask.shape[0] > 0:
            mk = mask[c]
            for t in range(m):
                out[t] = (d[t] * (one if mk[t] else zero)) * sc - (((x[t] - mu) * iv) * a + b)
        else:
            for t in range(m):
                out[t] = d[t] * sc - (((x[t] - mu) * iv) * a + b)


# ---- padding (window.pad_channel_major) ---------------------------------------------
@numba.njit(nogil=True, cache=True)
def pad_channel_major(x, xp, top, left, fill, c0, c1):  # pragma: no cover - compiled
    """Channels c0..c1-1 of x (C, N, H, W) (any strides) into xp (C, N, Hp, Wp) at row
    ``top`` and column ``left``, the rest of xp set to ``fill``; rows and columns past
    Hp/Wp are cropped. Each element of xp is written once, a row at a time. NumPy's
    strided copies pay per row: (128, 16, 32, 32) into 34x34, 2 threads, 0.37 -> 0.25
    ms; (128, 64, 8, 8) 0.24 -> 0.18 ms. (The copy loop runs over a slice of the row: with
    ``row[left + j]`` Numba's wraparound check kept it scalar, 1.5x slower than NumPy.)"""
    n, h, w = x.shape[1], x.shape[2], x.shape[3]
    hp, wp = xp.shape[2], xp.shape[3]
    top, left = min(top, hp), min(left, wp)
    hh, ww = max(0, min(h, hp - top)), max(0, min(w, wp - left))
    for c in range(c0, c1):
        for m in range(n):
            src, dst = x[c, m], xp[c, m]
            for i in range(top):
                row = dst[i]
                for j in range(wp):
                    row[j] = fill
            for i in range(hh):
                row, s = dst[top + i], src[i]
                for j in range(left):
                    row[j] = fill
                inner = row[left:left + ww]
                for j in range(ww):
                    inner[j] = s[j]
                for j in range(left + ww, wp):
                    row[j] = fill
            for i in range(top + hh, hp):
                row = dst[i]
                for j in range(wp):
                    row[j] = fill


# ---- ReLU ----------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def relu(x, y):  # pragma: no cover - compiled
    """``y = max(x, 0)`` over 1-D arrays (y may be x), NaN kept as NaN (as PyTorch and
    np.maximum do). np.maximum checks for NaN on its way; this select vectorizes:
    2M float32 elements 1.79 -> 0.67 ms on one thread."""
    zero = x.dtype.type(0)
    for t in range(x.shape[0]):
        v = x[t]
        y[t] = zero if v <= zero else v


@numba.njit(nogil=True, cache=True)
def add(a, b, y, relu):  # pragma: no cover - compiled
    """``y = a + b`` over 1-D arrays, clamped at 0 (as :func:`relu`) with ``relu``."""
    zero = y.dtype.type(0)
    if relu:
        for t in range(a.shape[0]):
            v = a[t] + b[t]
            y[t] = zero if v <= zero else v
    else:
        for t in range(a.shape[0]):
            y[t] = a[t] + b[t]


@numba.njit(nogil=True, cache=True)
def relu_backward(dy, mask, dx):  # pragma: no cover - compiled
    """``dx = dy * mask`` over 1-D arrays (mask: the forward's ``y > 0``, booleans),
    NumPy's multiply by the mask to the bit."""
    zero, one = dx.dtype.type(0), dx.dtype.type(1)
    for t in range(mask.shape[0]):
        dx[t] = dy[t] * (one if mask[t] else zero)


@numba.njit(nogil=True, cache=True)
def relu_and_mask(x, y, mask):  # pragma: no cover - compiled
    """``relu`` (y may be x) that also writes ``mask = y > 0`` for the backward."""
    zero = x.dtype.type(0)
    for t in range(x.shape[0]):
        v = x[t]
        y[t] = zero if v <= zero else v
        mask[t] = v > zero


@numba.njit(nogil=True, cache=True)
def add_relu_and_mask(a, b, y, mask):  # pragma: no cover - compiled
    """``y = max(a + b, 0)`` (relu()'s select) and ``mask = a + b > 0``, over 1-D arrays:
    add() then relu_and_mask() in one pass, the same bits."""
    zero = y.dtype.type(0)
    for t in range(a.shape[0]):
        v = a[t] + b[t]
        y[t] = zero if v <= zero else v
        mask[t] = v > zero


@numba.njit(nogil=True, cache=True)
def bias_relu(out, b, relu, hi):  # pragma: no cover - compiled
    """The GEMM epilogue of a conv chunk, one pass: ``out[g, f, :] += b[g, f, 0]`` (b: (G,
    Fg, 1), or empty for no bias), then ``max(., 0)`` if ``relu`` (NaN kept), NumPy's bits,
    and ``min(., hi)`` (hi = inf for a ReLU, 6 for a fused ReLU6).
    NumPy takes a pass for each: on ResNet-50's 1x1 1024x256 at 14x14, batch 1, the two
    passes added 0.2-0.4 ms to a 0.82 ms GEMM; this one 0.05-0.15 ms."""
    has_bias = b.shape[0] > 0
    zero = out.dtype.type(0)
    for g in range(out.shape[0]):
        for f in range(out.shape[1]):
            row = out[g, f]
            bv = b[g, f, 0] if has_bias else zero
            if relu:
                for t in range(row.shape[0]):
                    v = row[t] + bv
                    v = zero if v <= zero else v
                    row[t] = hi if v > hi else v
            else:
                for t in range(row.shape[0]):
                    row[t] += bv


@numba.njit(nogil=True, cache=True)
def bias_add_relu(out, b, r, relu):  # pragma: no cover - compiled
    """``bias_relu`` with a residual: ``out[g, f, :] += b[g, f, 0]`` (if any), then
    ``+= r[g, f, :]``, then ``max(., 0)`` if ``relu`` (NaN kept): a conv's output and
    an Add after it (conv2d_forward's ``residual``) in one pass, with the Add's bits."""
    has_bias = b.shape[0] > 0
    zero = out.dtype.type(0)
    for g in range(out.shape[0]):
        for f in range(out.shape[1]):
            row, rr = out[g, f], r[g, f]
            bv = b[g, f, 0] if has_bias else zero
            for t in range(row.shape[0]):
                v = row[t] + bv if has_bias else row[t]
                v += rr[t]
                if relu:
                    v = zero if v <= zero else v
                row[t] = v


@numba.njit(nogil=True, cache=True)
def relu_channel(y, c):  # pragma: no cover - compiled
    """``y[c] = max(y[c], 0)`` in place for a (C, N, H, W) C-contiguous y (NaN kept)."""
    flat = y.reshape(y.shape[0], y.shape[1] * y.shape[2] * y.shape[3])[c]
    relu(flat, flat)


# ---- max pooling ---------------------------------------------------------------------
# 2x2 stride-2 and 3x3 windows have compiled forwards that keep each window's argmax
# (``max_pool_2x2_argmax``, ``max_pool_3x3_argmax``: the taps as literal selects in
# registers; generic loops over a window's pixels stayed scalar, 6x slower than these).
# Other windows keep NumPy's separable forward (a running maximum along W, then H:
# vectorized passes that compiled scalar loops did not beat - 3x3 s2 on (8, 96, 55, 55):
# 4.3 ms NumPy on 2 threads, 11 ms for a compiled max without the argmax on one). Their
# backward (``max_pool_route``) is the scatter NumPy needs
# many passes for, where windows overlap. Where they tile the input (kernel == stride),
# pool.py's NumPy pass per offset is faster: this scan's early exit mispredicts at random
# positions of the maximum (2 threads, alternating, ms, compiled / NumPy: (64, 6, 28, 28)
# 2x2 0.97 / 0.68, (64, 16, 10, 10) 0.56 / 0.51, (128, 32, 28, 28) 10.4 / 8.5, (128, 64,
# 14, 14) 5.6 / 4.1; branch-free variants of the scan were no faster). For 2x2 windows
# with stride 2, the commonest, ``max_pool_2x2_route`` writes all four positions of each
# window by selects, with literal offsets: forward + backward, in-process against the NumPy
# pass per offset, (128, 32, 28, 28) 17.1 -> 10.9 ms, (128, 64, 14, 14) 9.1 -> 5.8,
# (64, 6, 28, 28) 1.12 -> 0.97, (64, 16, 10, 10) 0.71 -> 0.56. A first compiled 2x2 forward
# that kept the argmax ran 1.3-1.8x slower than NumPy's two passes; the select version
# with whole planes indexed in 2-D (max_pool_2x2_argmax) then beat them, and the route by
# equality is left to 2x2 pools with padding or ceil-mode windows past the edge.

@numba.njit(nogil=True, cache=True)
def max_pool_2x2_route(dy, xp, y, dxp, c0, c1):  # pragma: no cover - compiled
    """Backward of a 2x2 max pool with stride 2 (windows that tile the input), channels
    c0..c1-1, as pool.py's ``_route_tiles``: ``dy[c, n, i, j]`` goes to the first of the
    window's four positions, in row-major order, that equals its maximum ``y`` (finite:
    the separable forward's path), the last position if none does; the other three get
    0, and so do the rows and columns that no window reads. xp, dxp: (C, N, Hp, Wp). Each
    element of dxp is written once, by selects (no branches, no scatter): (128, 32, 28,
    28), 2 threads, 11.7 -> 6.7 ms against the NumPy pass per offset. The zeros are +0.0
    (NumPy's ``dy * False`` gives -0.0 where dy < 0; equal values, as PyTorch's +0.0)."""
    ho, wo = y.shape[2], y.shape[3]
    hp, wp = dxp.shape[2], dxp.shape[3]
    zero = dxp.dtype.type(0)
    for c in range(c0, c1):
        for n in range(y.shape[1]):
            for i in range(ho):
                yr, g = y[c, n, i], dy[c, n, i]
                a0, a1 = xp[c, n, 2 * i], xp[c, n, 2 * i + 1]
                b0, b1 = dxp[c, n, 2 * i], dxp[c, n, 2 * i + 1]
                for j in range(wo):
                    m, v = yr[j], g[j]
                    t0 = a0[2 * j] == m
                    t1 = a0[2 * j + 1] == m
                    t2 = a1[2 * j] == m
                    b0[2 * j] = v if t0 else zero
                    b0[2 * j + 1] = v if t1 & (t0 ^ True) else zero
                    b1[2 * j] = v if t2 & ((t0 | t1) ^ True) else zero
                    b1[2 * j + 1] = v if (t0 | t1 | t2) ^ True else zero
                for j in range(2 * wo, wp):
                    b0[j] = zero
                    b1[j] = zero
            for a in range(2 * ho, hp):
                row = dxp[c, n, a]
                for j in range(wp):
                    row[j] = zero


@numba.njit(nogil=True, cache=True)
def max_pool_2x2_argmax(x, nchw, y, arg, c0, c1):  # pragma: no cover - compiled
    """2x2 max pool, stride 2, no padding, channels c0..c1-1: ``y[c, n, i, j]`` the max of
    the window at (2i, 2j) of image n, channel c, and ``arg`` its offset 0-3 in row-major
    order, by pool.py's ``_max_argmax`` rule (PyTorch's): an offset wins if strictly
    greater or NaN, so ties go to the first maximum and a NaN to the last NaN. x is (N,
    C, H, W) with ``nchw``, else (C, N, H, W); whichever is contiguous, so that each plane
    is a contiguous 2-D array (indexing the whole array of any strides cost 3.7x).
    Selects, no branches (the rule as data, not control flow)."""
    for c in range(c0, c1):
        for n in range(y.shape[1]):
            _max_2x2_plane(x[n, c] if nchw else x[c, n], y[c, n], arg[c, n])


@numba.njit(nogil=True, cache=True)
def _max_2x2_plane(x, y, arg):  # pragma: no cover - compiled
    for i in range(y.shape[0]):
        r0, r1 = 2 * i, 2 * i + 1
        for j in range(y.shape[1]):
            q0, q1 = 2 * j, 2 * j + 1
            m, a = x[r0, q0], 0
            v = x[r0, q1]
            b = (v > m) | (v != v)
            m, a = (v, 1) if b else (m, a)
            v = x[r1, q0]
            b = (v > m) | (v != v)
            m, a = (v, 2) if b else (m, a)
            v = x[r1, q1]
            b = (v > m) | (v != v)
            m, a = (v, 3) if b else (m, a)
            y[i, j] = m
            arg[i, j] = a


@numba.njit(nogil=True, cache=True)
def max_pool_2x2_arg_route(dy, nchw, arg, dx, c0, c1):  # pragma: no cover - compiled
    """The backward of :func:`max_pool_2x2_argmax`: each ``dy`` to the offset ``arg``
    names, +0.0 to the window's three other pixels and to the rows and columns no window
    reads; every element of dx (C, N, H, W) written once. dy is (N, C, Ho, Wo) with
    ``nchw``, else (C, N, Ho, Wo). (Whole planes indexed in 2-D: row views made per row
    ran 4x slower.)"""
    for c in range(c0, c1):
        for n in range(dx.shape[1]):
            _route_2x2_plane(dy[n, c] if nchw else dy[c, n], arg[c, n], dx[c, n])


@numba.njit(nogil=True, cache=True)
def _route_2x2_plane(g, arg, d):  # pragma: no cover - compiled
    zero = d.dtype.type(0)
    ho, wo = arg.shape[0], arg.shape[1]
    for i in range(ho):
        r0, r1 = 2 * i, 2 * i + 1
        for j in range(wo):
            v, a = g[i, j], arg[i, j]
            q0, q1 = 2 * j, 2 * j + 1
            d[r0, q0] = v if a == 0 else zero
            d[r0, q1] = v if a == 1 else zero
            d[r1, q0] = v if a == 2 else zero
            d[r1, q1] = v if a == 3 else zero
        for j in range(2 * wo, d.shape[1]):
            d[r0, j] = zero
            d[r1, j] = zero
    for r in range(2 * ho, d.shape[0]):
        for j in range(d.shape[1]):
            d[r, j] = zero


@numba.njit(nogil=True, cache=True)
def max_pool_3x3_argmax(xf, sn, sc, h, w, y, arg, sh, sw, pt, pl, c0, c1):  # pragma: no cover - compiled
    """3x3 max pool without dilation, column stride ``sw`` 1 or 2 (ResNet's and
    GoogLeNet's 3x3 s2 and s1, AlexNet's), channels c0..c1-1: ``y[c, n, i, j]`` the max
    of window (i, j) over its pixels inside the input, ``arg`` the winner's offset
    ``p*3 + q``, by pool.py's ``_max_argmax`` rule (PyTorch's): the window's first pixel
    inside the input starts as the argmax at -inf, and a later one wins if strictly
    greater or NaN (ties to the first maximum, a NaN to the last NaN).

    Each plane is copied into a -inf-padded scratch plane (in cache; at stride 2 as its
    even and odd columns, so that every tap loads at unit stride), then each output's
    nine taps are compared in registers by selects with literal offsets. One thread,
    (1, 64, 112, 112) 3x3 s2 p1: 0.44 ms; 0.90 with stride-2 loads; a loop over each
    window's pixels, or over the outputs per tap, stayed scalar at 5.8; 0.19 with the
    phases copied two loads a step (_pad_phases; 0.41 with a branch per element). Plane
    (n, c) of x (h x w, rows contiguous) starts at ``xf[n*sn + c*sc]`` (window.planes);
    y and arg are (C, N, Ho, Wo)."""
    ho, wo = y.shape[2], y.shape[3]
    hp = (ho - 1) * sh + 3
    ninf = y.dtype.type(-np.inf)
    if sw == 2:
        ph = np.empty((2, hp, wo + 1), dtype=y.dtype)  # the padded plane's even, odd columns
        for c in range(c0, c1):
            for n in range(y.shape[1]):
                _pad_phases(xf, n * sn + c * sc, h, w, ph, pt, pl, ninf)
                for i in range(ho):
                    r0, r = i * sh - pt, i * sh
                    _max3x3_row_s2(ph[0, r], ph[1, r], ph[0, r + 1], ph[1, r + 1], ph[0, r + 2], ph[1, r + 2],
                                   y[c, n, i], arg[c, n, i], pl, 3 * (-r0 if r0 < 0 else 0))
        return
    buf = np.empty((hp, wo + 2), dtype=y.dtype)
    for c in range(c0, c1):
        for n in range(y.shape[1]):
            base = n * sn + c * sc
            _pad_plane(xf[base:base + h * w].reshape(h, w), buf, pt, pl, ninf)
            for i in range(ho):
                r0, r = i * sh - pt, i * sh
                _max3x3_row_s1(buf[r], buf[r + 1], buf[r + 2], y[c, n, i], arg[c, n, i], pl,
                               3 * (-r0 if r0 < 0 else 0))


@numba.njit(nogil=True, cache=True)
def _pad_plane(x, buf, pt, pl, fill):  # pragma: no cover - compiled
    """buf = x placed at (pt, pl), ``fill`` around it; each element written once (rows
    and columns of x that buf has no room for are cut)."""
    h, w = x.shape[0], x.shape[1]
    hp, wp = buf.shape[0], buf.shape[1]
    cols = max(0, min(w, wp - pl))
    for rr in range(hp):
        d = buf[rr]
        r = rr - pt
        if r < 0 or r >= h:
            for s in range(wp):
                d[s] = fill
            continue
        src = x[r]
        for s in range(min(pl, wp)):
            d[s] = fill
        for s in range(cols):
            d[pl + s] = src[s]
        for s in range(pl + cols, wp):
            d[s] = fill


@numba.njit(nogil=True, cache=True)
def _pad_phases(xf, base, h, w, ph, pt, pl, fill):  # pragma: no cover - compiled
    """``ph[0, rr, t]``, ``ph[1, rr, t]``: columns 2t and 2t + 1 of the plane at
    ``xf[base:]`` (h rows of w) placed at (pt, pl), with ``fill`` around it (x's rows and
    columns past ph's reach are cut): the padding here, the columns inside x by
    _split_row (as _copy_phases)."""
    hp, wq = ph.shape[1], ph.shape[2]
    phf = ph.reshape(-1)
    half = _U(hp * wq)  # from a row of even columns to its odd columns
    bounds = _phase_bounds(w, pl, wq)
    t0, te, u0, to = bounds[0], bounds[1], bounds[2], bounds[3]
    for rr in range(hp):
        eb = _U(rr * wq)
        ob = eb + half
        r = rr - pt
        if r < 0 or r >= h:
            for t in range(wq):
                phf[eb + _U(t)] = fill
                phf[ob + _U(t)] = fill
            continue
        for t in range(t0):
            phf[eb + _U(t)] = fill
        for t in range(te, wq):
            phf[eb + _U(t)] = fill
        for t in range(u0):
            phf[ob + _U(t)] = fill
        for t in range(to, wq):
            phf[ob + _U(t)] = fill
        _split_row(xf, base + r * w - pl, phf, eb, ob, bounds)


@numba.njit(nogil=True, cache=True, inline="always")
def _tap_max(v, m, a, k):  # pragma: no cover - compiled
    """One step of the running max/argmax: v wins if strictly greater or NaN."""
    t = (v > m) | (v != v)
    return (v, k) if t else (m, a)


@numba.njit(nogil=True, cache=True, inline="always")
def _max3x3_row_s1(a0, a1, a2, ym, am, pl, base):  # pragma: no cover - compiled
    """One output row at stride 1 from the three padded rows it reads; ``base`` is 3 times
    the first window row inside the input."""
    ninf = ym.dtype.type(-np.inf)
    for j in range(ym.shape[0]):
        s0 = j - pl
        m, a = ninf, base + (-s0 if s0 < 0 else 0)  # (the first pixel inside the input)
        m, a = _tap_max(a0[j], m, a, 0)
        m, a = _tap_max(a0[j + 1], m, a, 1)
        m, a = _tap_max(a0[j + 2], m, a, 2)
        m, a = _tap_max(a1[j], m, a, 3)
        m, a = _tap_max(a1[j + 1], m, a, 4)
        m, a = _tap_max(a1[j + 2], m, a, 5)
        m, a = _tap_max(a2[j], m, a, 6)
        m, a = _tap_max(a2[j + 1], m, a, 7)
        m, a = _tap_max(a2[j + 2], m, a, 8)
        ym[j] = m
        am[j] = a


@numba.njit(nogil=True, cache=True, inline="always")
def _max3x3_row_s2(e0, o0, e1, o1, e2, o2, ym, am, pl, base):  # pragma: no cover - compiled
    """One output row at column stride 2 from the even (e) and odd (o) columns of the
    three padded rows it reads: window j's columns are e[j], o[j], e[j + 1]."""
    ninf = ym.dtype.type(-np.inf)
    for j in range(ym.shape[0]):
        s0 = 2 * j - pl
        m, a = ninf, base + (-s0 if s0 < 0 else 0)
        m, a = _tap_max(e0[j], m, a, 0)
        m, a = _tap_max(o0[j], m, a, 1)
        m, a = _tap_max(e0[j + 1], m, a, 2)
        m, a = _tap_max(e1[j], m, a, 3)
        m, a = _tap_max(o1[j], m, a, 4)
        m, a = _tap_max(e1[j + 1], m, a, 5)
        m, a = _tap_max(e2[j], m, a, 6)
        m, a = _tap_max(o2[j], m, a, 7)
        m, a = _tap_max(e2[j + 1], m, a, 8)
        ym[j] = m
        am[j] = a


@numba.njit(nogil=True, cache=True)
def max_pool_arg_scatter(dy, nchw, arg, dx, kh, kw, sh, sw, pt, pl, dh, dw, c0, c1):  # pragma: no cover - compiled
    """The backward of a max pool whose forward kept each window's argmax offset ``arg``
    (C, N, Ho, Wo) (pool.py's ``_max_argmax`` or :func:`max_pool_3x3_argmax`): dx (C, N,
    H, W) zeroed, then each ``dy``
    added at the pixel its ``arg`` names (overlapping windows accumulate, output by output
    in row-major order, as PyTorch's CPU kernel adds them; an offset outside the input,
    from a window with no pixel inside it, adds nothing). dy is (N, C, Ho, Wo) with
    ``nchw``, else (C, N, Ho, Wo)."""
    for c in range(c0, c1):
        for n in range(dx.shape[1]):
            _scatter_plane(dy[n, c] if nchw else dy[c, n], arg[c, n], dx[c, n], kw, sh, sw, pt, pl, dh, dw)


@numba.njit(nogil=True, cache=True)
def _scatter_plane(g, arg, d, kw, sh, sw, pt, pl, dh, dw):  # pragma: no cover - compiled
    zero = d.dtype.type(0)
    for r in range(d.shape[0]):
        for s in range(d.shape[1]):
            d[r, s] = zero
    if kw == 3:  # a literal divisor: the offset's row and column without a division instruction
        _scatter_adds(g, arg, d, 3, sh, sw, pt, pl, dh, dw)
    else:
        _scatter_adds(g, arg, d, kw, sh, sw, pt, pl, dh, dw)


@numba.njit(nogil=True, cache=True, inline="always")
def _scatter_adds(g, arg, d, kw, sh, sw, pt, pl, dh, dw):  # pragma: no cover - compiled
    h, w = d.shape[0], d.shape[1]
    for i in range(arg.shape[0]):
        gi, ai = g[i], arg[i]
        for j in range(arg.shape[1]):
            a = np.int64(ai[j])
            r = i * sh - pt + (a // kw) * dh
            s = j * sw - pl + (a % kw) * dw
            if 0 <= r < h and 0 <= s < w:
                d[r, s] += gi[j]


@numba.njit(nogil=True, cache=True)
def max_pool_route(dy, xp, y, dxp, kh, kw, sh, sw, dh, dw, c0, c1):  # pragma: no cover - compiled
    """Channels c0..c1-1: each ``dy[c, n, i, j]`` is added to ``dxp`` (the zeroed padded
    gradient, (C, N, Hp, Wp)) at the first position of its window, in row-major order,
    that holds the window's maximum ``y`` - PyTorch's tie rule. y is finite (the
    forward's separable path)."""
    ho, wo = y.shape[2], y.shape[3]
    for c in range(c0, c1):
        for n in range(y.shape[1]):
            for i in range(ho):
                for j in range(wo):
                    m, found = y[c, n, i, j], False
                    for p in range(kh):
                        row = xp[c, n, i * sh + p * dh]
                        for q in range(kw):
                            if row[j * sw + q * dw] == m:
                                dxp[c, n, i * sh + p * dh, j * sw + q * dw] += dy[c, n, i, j]
                                found = True
                                break
                        if found:
                            break


# ---- small convolutions, direct -------------------------------------------------------
# A conv whose GEMM has a tiny inner dimension K = C*kH*kW (a network's first layer: LeNet's
# 1->6 5x5, K = 25; a 3-channel 3x3, K = 27) spends im2col + GEMM time copying columns
# that are used only F times each. Computed directly, by the shift trick per image
# (every tap a shifted flat run of the padded image, the sums in L1), it is faster.
# Measured (forward, 2 threads): 1->6 5x5 at 28x28 b64 1.15 -> 0.52 ms; 3->16 3x3 at
# 32x32 b128 5.35 -> 3.65; 1->32 3x3 at 28x28 b128 2.73 -> 2.37; but 6->16 5x5 (K = 150)
# 1.08 -> 1.46, so only up to DIRECT_MAX_K. The forward takes eight filters per pass over
# the image (conv_direct_forward); it used to take one, with a kernel row 3 or 5 wide
# summed in one pass over the accumulator (1->6 5x5 at 28x28 b64 0.80 -> 0.60 ms against
# one pass per tap), which the filter blocks beat 1.8-3.5x (their docstring).
# The backward's dw likewise takes eight filters per pass over the image (_direct_dw).
DIRECT_MAX_K = 32


@numba.njit(nogil=True, cache=True)
def conv_direct_forward(xp, w, b, y, dh, dw, n0, n1, relu):  # pragma: no cover - compiled
    """Stride 1, one group: ``y[f, n] = sum_{c,p,q} w[f, c, p, q] * (xp[c, n] shifted by
    (p*dh, q*dw))`` (+ b[f]) for images n0..n1-1. xp: padded input (C, N, Hp, Wp);
    w: (F, C, kH, kW); b: (F,) or empty; y: (F, N, Ho, Wo).

    Filters go eight at a time (``DIRECT_FILTER_BLOCK``): each tap's shifted run of the
    image is read once for eight accumulator rows (in L1) instead of once per filter, and
    the eight multiply-adds per input value share its load. Each output sums its taps in
    (c, p, q) order, then the bias, as before (the same bits). One thread, against one
    filter at a time with a kernel row per pass: 1->32 3x3 at 28x28 batch 128 3.50 ->
    0.99 ms, LeNet-5's 1->6 5x5 at 28x28 batch 64 0.43 -> 0.24, ResNet-20's 3->16 3x3 at
    32x32 batch 128 2.85 -> 1.23. Training steps in-process (2 threads): LeNet-5 0.93,
    the demo's cnn 0.97, ResNet-20 0.985. Kernel rows three or five taps wide then go in
    one pass over the accumulators (_direct_row3x8, _direct_row5x8): 3->16 2.65 -> 1.47
    ms, 1->32 1.50 -> 1.04, one thread, the same bits."""
    nc, nb, hp, wp = xp.shape
    f_, _, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    hw = hp * wp
    run = (ho - 1) * wp + wo
    x2 = xp.reshape(nc, nb * hw)
    acc = np.empty((DIRECT_FILTER_BLOCK, run), dtype=y.dtype)
    wk = np.zeros(DIRECT_FILTER_BLOCK, dtype=y.dtype)
    wr = np.zeros((DIRECT_FILTER_BLOCK, kw), dtype=y.dtype)  # a kernel row's taps, per filter
    zero = y.dtype.type(0)
    for n in range(n0, n1):
        for f0 in range(0, f_, DIRECT_FILTER_BLOCK):
            nf = min(DIRECT_FILTER_BLOCK, f_ - f0)
            first = True
            for c in range(nc):
                for p in range(kh):
                    s = n * hw + p * dh * wp
                    if kw == 3 or kw == 5:  # the row's taps in one pass (same order, same bits)
                        for k in range(nf):
                            for q in range(kw):
                                wr[k, q] = w[f0 + k, c, p, q]
                        if kw == 3:
                            _direct_row3x8(x2[c, s:s + run], x2[c, s + dw:s + dw + run],
                                           x2[c, s + 2 * dw:s + 2 * dw + run], wr, acc, first, run)
                        else:
                            _direct_row5x8(x2[c, s:s + run], x2[c, s + dw:s + dw + run],
                                           x2[c, s + 2 * dw:s + 2 * dw + run], x2[c, s + 3 * dw:s + 3 * dw + run],
                                           x2[c, s + 4 * dw:s + 4 * dw + run], wr, acc, first, run)
                        first = False
                        continue
                    for q in range(kw):
                        for k in range(nf):
                            wk[k] = w[f0 + k, c, p, q]
                        _direct_tap8(x2[c, s + q * dw:s + q * dw + run], wk, acc, first, run)
                        first = False
            for k in range(nf):
                bv = b[f0 + k] if b.shape[0] > 0 else zero
                for i in range(ho):
                    out, res = y[f0 + k, n, i], acc[k, i * wp:]
                    for j in range(wo):
                        v = res[j] + bv if b.shape[0] > 0 else res[j]
                        if relu:  # (a fused ReLU, for inference: relu()'s select. A call of
                            v = zero if v <= zero else v  # relu() here made the taps 2.8x slower)
                        out[j] = v


DIRECT_FILTER_BLOCK = 8  # filters per pass of conv_direct_forward (a last, partial block fills rows nobody reads)


# ---- stride-2 convolutions of a few input channels, direct (inference) -------------------
# A network's stem (MobileNet's 3->32 3x3 s2, K = 27) at batch 1 spent most of its time on
# columns: im2col writes K rows of the whole output, then a GEMM with a short K reads them
# back. Here the padded image is split once into its
# four phases (even/odd rows x even/odd columns, each flat), so that every tap of a
# stride-2 kernel is a unit-stride flat run of one phase, and the taps of a kernel row go
# through _direct_row3x8 / _direct_tap8 as at stride 1: eight filters per pass over
# accumulator rows that hold a band of output rows (DIRECT_S2_BAND values each: whole
# images up to about 128x128 outputs; bands that fit L1, 640 values, took 338 us instead of 214 at
# 3->32 3x3 on 224x224, one thread: the passes are short, their set-up adds up).
# Inference only (no backward reads these phases): conv.py uses it for a fused ReLU.
# conv2d_forward with a fused ReLU, 2 threads, us, direct / im2col: 3->32 3x3 on 224x224
# batch 1 206 / 298, batch 8 1192 / 2078; 3->24 on 96x96 45 / 121; 3->16 on 64x64 batch 16
# 221 / 296; but 3->32 on 56x56 batch 4 (28x28 outputs) 87 / 80 and 3->16 on 32x32 batch
# 16 109 / 96 (hence DIRECT_S2_MIN_PIXELS), and ResNet's 7x7 (K = 147) at batch 1 1144 /
# 985 (DIRECT_S2_MAX_K). MobileNet v1 and v2 imported from ONNX, batch 1: 0.971, 0.976.
DIRECT_S2_MAX_K = 32
DIRECT_S2_MIN_PIXELS = 1024
DIRECT_S2_BAND = 16384
DIRECT_S2_PARALLEL_MACS = 8 << 20


@numba.njit(nogil=True, cache=True)
def conv_direct_s2_forward(xf, sn, sc, h, wd, w, b, y, pt, pl, u0, u1, relu, hi, band):  # pragma: no cover - compiled
    """Stride 2, one group, no dilation: ``y[f, n, i, j] = sum_{c,p,q} w[f, c, p, q] *
    xpad[c, n, 2i + p, 2j + q]`` (+ b[f]), then ``min(max(., 0), hi)`` if ``relu`` (NaN
    kept), for the work units u0..u1-1: unit u is image ``u // blocks``, filters ``8 * (u %
    blocks)`` on (blocks = ceil(F / 8)). Plane (n, c) of x (h x wd, rows contiguous)
    starts at ``xf[n*sn + c*sc]`` (window.planes); x sits at (pt, pl) of a zero padding;
    w: (F, C, kH, kW); b: (F,) or empty; y: (F, N, Ho, Wo).

    Each image's padded planes are split into phases (c, a, e) (rows 2r + a, columns 2s +
    e, flat, hq x wq with hq = Ho + (kH - 1) // 2, wq = Wo + (kW - 1) // 2): tap (p, q)
    of output rows i0..i1-1 is the run of phase (p % 2, q % 2) from (i0 + p // 2) * wq +
    q // 2, the wq - Wo columns past each output row computed and dropped; output rows go
    in bands of about ``band`` accumulator values (conv.py passes DIRECT_S2_BAND). Each
    output sums its taps in (c, p, q) order, then the bias."""
    nc, f_, kh, kw = w.shape[1], w.shape[0], w.shape[2], w.shape[3]
    ho, wo = y.shape[2], y.shape[3]
    hq, wq = ho + (kh - 1) // 2, wo + (kw - 1) // 2
    blocks = (f_ + DIRECT_FILTER_BLOCK - 1) // DIRECT_FILTER_BLOCK
    rows = max(1, min(ho, (band - wo) // wq + 1))  # output rows per band
    acc = np.empty((DIRECT_FILTER_BLOCK, (rows - 1) * wq + wo), dtype=y.dtype)
    ph = np.empty((nc * 4, hq * wq), dtype=y.dtype)  # phase (c, a, e) in row (2c + a)*2 + e
    wr = np.zeros((DIRECT_FILTER_BLOCK, 3), dtype=y.dtype)  # three taps of a kernel row, per filter
    wk = np.zeros(DIRECT_FILTER_BLOCK, dtype=y.dtype)
    zero = y.dtype.type(0)
    has_bias = b.shape[0] > 0
    image = -1
    for u in range(u0, u1):
        n, f0 = u // blocks, (u % blocks) * DIRECT_FILTER_BLOCK
        nf = min(DIRECT_FILTER_BLOCK, f_ - f0)
        if n != image:
            _phases_s2(xf, n * sn, sc, h, wd, ph, wq, pt, pl)
            image = n
        for i0 in range(0, ho, rows):
            i1 = min(ho, i0 + rows)
            run = (i1 - i0 - 1) * wq + wo
            first = True
            for c in range(nc):
                for p in range(kh):
                    even, base = (2 * c + p % 2) * 2, (i0 + p // 2) * wq  # phase (c, p % 2, 0)
                    q = 0
                    while q + 3 <= kw:  # three taps a pass over the accumulators
                        for k in range(nf):
                            for t in range(3):
                                wr[k, t] = w[f0 + k, c, p, q + t]
                        s0 = base + q // 2
                        s1 = base + (q + 1) // 2
                        s2 = base + (q + 2) // 2
                        _direct_row3x8(ph[even + q % 2, s0:s0 + run], ph[even + (q + 1) % 2, s1:s1 + run],
                                       ph[even + q % 2, s2:s2 + run], wr, acc, first, run)
                        first = False
                        q += 3
                    while q < kw:
                        for k in range(nf):
                            wk[k] = w[f0 + k, c, p, q]
                        s0 = base + q // 2
                        _direct_tap8(ph[even + q % 2, s0:s0 + run], wk, acc, first, run)
                        first = False
                        q += 1
            for k in range(nf):
                bv = b[f0 + k] if has_bias else zero
                for i in range(i0, i1):
                    out, res = y[f0 + k, n, i], acc[k, (i - i0) * wq:]
                    for j in range(wo):
                        v = res[j] + bv if has_bias else res[j]
                        if relu:
                            v = zero if v <= zero else v
                            v = hi if v > hi else v
                        out[j] = v


@numba.njit(nogil=True, cache=True)
def _phases_s2(xf, base, sc, h, wd, ph, wq, pt, pl):  # pragma: no cover - compiled
    """``ph[(2c + a)*2 + e, r * wq + s]`` = the padded plane c (x at ``xf[base + c*sc]``, placed at
    (pt, pl) in zeros) at row 2r + a, column 2s + e; rows by _split_row (both column
    phases in one vectorized pass)."""
    hq = ph.shape[1] // wq
    bounds = _phase_bounds(wd, pl, wq)
    ph[:] = 0
    phf = ph.reshape(-1)
    plane = _U(hq * wq)
    for c in range(ph.shape[0] // 4):
        for rr in range(2 * hq):
            r = rr - pt
            if r < 0 or r >= h:
                continue
            eb = _U((c * 2 + rr % 2) * 2) * plane + _U((rr // 2) * wq)
            _split_row(xf, base + c * sc + r * wd - pl, phf, eb, eb + plane, bounds)


@numba.njit(nogil=True, cache=True)
def _direct_row3x8(s0, s1, s2, wk, acc, first, run):  # pragma: no cover - compiled
    """A kernel row of three taps for the eight filters of a block, in one pass over their
    accumulator rows: each row loaded and stored once for three multiply-adds (a tap per
    pass moved the rows three times as often); the taps added in order, the same bits.
    The rows are written from one flat view of acc (see the Winograd section's header):
    conv_direct_forward, one thread, 3->16 at 32x32 batch 128 1.47-1.60 -> 1.29-1.37 ms,
    1->32 at 28x28 1.05 -> 1.01-1.08. (_direct_row5x8 kept its row views: LeNet-5's 1->6
    5x5 ran 0.268 -> 0.283 with the flat view.)"""
    af, ur = acc.reshape(-1), _U(acc.shape[1])  # the eight rows of one array, from a flat view
    w00, w01, w02 = wk[0, 0], wk[0, 1], wk[0, 2]
    w10, w11, w12 = wk[1, 0], wk[1, 1], wk[1, 2]
    w20, w21, w22 = wk[2, 0], wk[2, 1], wk[2, 2]
    w30, w31, w32 = wk[3, 0], wk[3, 1], wk[3, 2]
    w40, w41, w42 = wk[4, 0], wk[4, 1], wk[4, 2]
    w50, w51, w52 = wk[5, 0], wk[5, 1], wk[5, 2]
    w60, w61, w62 = wk[6, 0], wk[6, 1], wk[6, 2]
    w70, w71, w72 = wk[7, 0], wk[7, 1], wk[7, 2]
    if first:
        for t in range(run):
            x0, x1, x2 = s0[t], s1[t], s2[t]
            v = w00 * x0
            v += w01 * x1
            v += w02 * x2
            af[_U(t)] = v
            v = w10 * x0
            v += w11 * x1
            v += w12 * x2
            af[ur + _U(t)] = v
            v = w20 * x0
            v += w21 * x1
            v += w22 * x2
            af[_U(2) * ur + _U(t)] = v
            v = w30 * x0
            v += w31 * x1
            v += w32 * x2
            af[_U(3) * ur + _U(t)] = v
            v = w40 * x0
            v += w41 * x1
            v += w42 * x2
            af[_U(4) * ur + _U(t)] = v
            v = w50 * x0
            v += w51 * x1
            v += w52 * x2
            af[_U(5) * ur + _U(t)] = v
            v = w60 * x0
            v += w61 * x1
            v += w62 * x2
            af[_U(6) * ur + _U(t)] = v
            v = w70 * x0
            v += w71 * x1
            v += w72 * x2
            af[_U(7) * ur + _U(t)] = v
    else:
        for t in range(run):
            x0, x1, x2 = s0[t], s1[t], s2[t]
            v = af[_U(t)]
            v += w00 * x0
            v += w01 * x1
            v += w02 * x2
            af[_U(t)] = v
            v = af[ur + _U(t)]
            v += w10 * x0
            v += w11 * x1
            v += w12 * x2
            af[ur + _U(t)] = v
            v = af[_U(2) * ur + _U(t)]
            v += w20 * x0
            v += w21 * x1
            v += w22 * x2
            af[_U(2) * ur + _U(t)] = v
            v = af[_U(3) * ur + _U(t)]
            v += w30 * x0
            v += w31 * x1
            v += w32 * x2
            af[_U(3) * ur + _U(t)] = v
            v = af[_U(4) * ur + _U(t)]
            v += w40 * x0
            v += w41 * x1
            v += w42 * x2
            af[_U(4) * ur + _U(t)] = v
            v = af[_U(5) * ur + _U(t)]
            v += w50 * x0
            v += w51 * x1
            v += w52 * x2
            af[_U(5) * ur + _U(t)] = v
            v = af[_U(6) * ur + _U(t)]
            v += w60 * x0
            v += w61 * x1
            v += w62 * x2
            af[_U(6) * ur + _U(t)] = v
            v = af[_U(7) * ur + _U(t)]
            v += w70 * x0
            v += w71 * x1
            v += w72 * x2
            af[_U(7) * ur + _U(t)] = v


@numba.njit(nogil=True, cache=True)
def _direct_row5x8(s0, s1, s2, s3, s4, wk, acc, first, run):  # pragma: no cover - compiled
    """_direct_row3x8 for a kernel row of five taps (LeNet-5's C1)."""
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    a4, a5, a6, a7 = acc[4], acc[5], acc[6], acc[7]
    w00, w01, w02, w03, w04 = wk[0, 0], wk[0, 1], wk[0, 2], wk[0, 3], wk[0, 4]
    w10, w11, w12, w13, w14 = wk[1, 0], wk[1, 1], wk[1, 2], wk[1, 3], wk[1, 4]
    w20, w21, w22, w23, w24 = wk[2, 0], wk[2, 1], wk[2, 2], wk[2, 3], wk[2, 4]
    w30, w31, w32, w33, w34 = wk[3, 0], wk[3, 1], wk[3, 2], wk[3, 3], wk[3, 4]
    w40, w41, w42, w43, w44 = wk[4, 0], wk[4, 1], wk[4, 2], wk[4, 3], wk[4, 4]
    w50, w51, w52, w53, w54 = wk[5, 0], wk[5, 1], wk[5, 2], wk[5, 3], wk[5, 4]
    w60, w61, w62, w63, w64 = wk[6, 0], wk[6, 1], wk[6, 2], wk[6, 3], wk[6, 4]
    w70, w71, w72, w73, w74 = wk[7, 0], wk[7, 1], wk[7, 2], wk[7, 3], wk[7, 4]
    if first:
        for t in range(run):
            x0, x1, x2, x3, x4 = s0[t], s1[t], s2[t], s3[t], s4[t]
            v = w00 * x0
            v += w01 * x1
            v += w02 * x2
            v += w03 * x3
            v += w04 * x4
            a0[t] = v
            v = w10 * x0
            v += w11 * x1
            v += w12 * x2
            v += w13 * x3
            v += w14 * x4
            a1[t] = v
            v = w20 * x0
            v += w21 * x1
            v += w22 * x2
            v += w23 * x3
            v += w24 * x4
            a2[t] = v
            v = w30 * x0
            v += w31 * x1
            v += w32 * x2
            v += w33 * x3
            v += w34 * x4
            a3[t] = v
            v = w40 * x0
            v += w41 * x1
            v += w42 * x2
            v += w43 * x3
            v += w44 * x4
            a4[t] = v
            v = w50 * x0
            v += w51 * x1
            v += w52 * x2
            v += w53 * x3
            v += w54 * x4
            a5[t] = v
            v = w60 * x0
            v += w61 * x1
            v += w62 * x2
            v += w63 * x3
            v += w64 * x4
            a6[t] = v
            v = w70 * x0
            v += w71 * x1
            v += w72 * x2
            v += w73 * x3
            v += w74 * x4
            a7[t] = v
    else:
        for t in range(run):
            x0, x1, x2, x3, x4 = s0[t], s1[t], s2[t], s3[t], s4[t]
            v = a0[t]
            v += w00 * x0
            v += w01 * x1
            v += w02 * x2
            v += w03 * x3
            v += w04 * x4
            a0[t] = v
            v = a1[t]
            v += w10 * x0
            v += w11 * x1
            v += w12 * x2
            v += w13 * x3
            v += w14 * x4
            a1[t] = v
            v = a2[t]
            v += w20 * x0
            v += w21 * x1
            v += w22 * x2
            v += w23 * x3
            v += w24 * x4
            a2[t] = v
            v = a3[t]
            v += w30 * x0
            v += w31 * x1
            v += w32 * x2
            v += w33 * x3
            v += w34 * x4
            a3[t] = v
            v = a4[t]
            v += w40 * x0
            v += w41 * x1
            v += w42 * x2
            v += w43 * x3
            v += w44 * x4
            a4[t] = v
            v = a5[t]
            v += w50 * x0
            v += w51 * x1
            v += w52 * x2
            v += w53 * x3
            v += w54 * x4
            a5[t] = v
            v = a6[t]
            v += w60 * x0
            v += w61 * x1
            v += w62 * x2
            v += w63 * x3
            v += w64 * x4
            a6[t] = v
            v = a7[t]
            v += w70 * x0
            v += w71 * x1
            v += w72 * x2
            v += w73 * x3
            v += w74 * x4
            a7[t] = v


@numba.njit(nogil=True, cache=True, inline="always")
def _direct_tap8(src, wk, acc, first, run):  # pragma: no cover - compiled
    """acc[k, t] (=, or +=) wk[k] * src[t] for the eight rows of a filter block: one load
    of each input value for eight multiply-adds (a loop over the rows stayed scalar). The
    rows are written from one flat view of acc (see the Winograd section's header)."""
    w0, w1, w2, w3 = wk[0], wk[1], wk[2], wk[3]
    w4, w5, w6, w7 = wk[4], wk[5], wk[6], wk[7]
    af, ur = acc.reshape(-1), _U(acc.shape[1])  # the eight rows of one array, from a flat view
    if first:
        for t in range(run):
            xv = src[t]
            af[_U(t)] = w0 * xv
            af[ur + _U(t)] = w1 * xv
            af[_U(2) * ur + _U(t)] = w2 * xv
            af[_U(3) * ur + _U(t)] = w3 * xv
            af[_U(4) * ur + _U(t)] = w4 * xv
            af[_U(5) * ur + _U(t)] = w5 * xv
            af[_U(6) * ur + _U(t)] = w6 * xv
            af[_U(7) * ur + _U(t)] = w7 * xv
    else:
        for t in range(run):
            xv = src[t]
            af[_U(t)] += w0 * xv
            af[ur + _U(t)] += w1 * xv
            af[_U(2) * ur + _U(t)] += w2 * xv
            af[_U(3) * ur + _U(t)] += w3 * xv
            af[_U(4) * ur + _U(t)] += w4 * xv
            af[_U(5) * ur + _U(t)] += w5 * xv
            af[_U(6) * ur + _U(t)] += w6 * xv
            af[_U(7) * ur + _U(t)] += w7 * xv


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def conv_direct_backward(xp, w, dy, dx, pt, pl, dh, dw, n0, n1, need_dx, need_dw):  # pragma: no cover
    """Gradients of :func:`conv_direct_forward` for images n0..n1-1: dx (C, N, H, W) of
    those images (pads (pt, pl) cropped off), and this range's share of dw returned as
    float64 (F, C, kH, kW) (see :func:`_direct_dw`). Per image and filter, dy is spread on
    the padded grid (zeros elsewhere) as g; per tap, ``dxp[s:] += w * g``."""
    nc, nb, hp, wp = xp.shape
    f_, _, kh, kw = w.shape
    ho, wo = dy.shape[2], dy.shape[3]
    hw = hp * wp
    run = (ho - 1) * wp + wo
    dwk = _direct_dw(xp, dy, kh, kw, dh, dw, n0, n1) if need_dw else np.zeros((f_, nc, kh, kw), dtype=np.float64)
    if not need_dx:
        return dwk
    g = np.zeros(hw, dtype=dy.dtype)  # only output positions are ever written
    dxs = np.empty((nc, hw), dtype=dy.dtype)
    for n in range(n0, n1):
        dxs[:] = 0.0
        for f in range(f_):
            for i in range(ho):
                row, dst = dy[f, n, i], g[i * wp:]
                for j in range(wo):
                    dst[j] = row[j]
            gr = g[:run]
            for c in range(nc):
                for p in range(kh):
                    for q in range(kw):
                        s = p * dh * wp + q * dw
                        wv, d = w[f, c, p, q], dxs[c, s:s + run]
                        for t in range(run):
                            d[t] += wv * gr[t]
        for c in range(nc):
            for a in range(dx.shape[2]):
                out, src = dx[c, n, a], dxs[c, (a + pt) * wp + pl:]
                for j in range(dx.shape[3]):
                    out[j] = src[j]
    return dwk


@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def _direct_dw(xp, dy, kh, kw, dh, dw, n0, n1):  # pragma: no cover - compiled
    """dw of the direct conv for images n0..n1-1, float64 (F, C, kH, kW): per image, eight
    filters at a time (dy spread on the padded grid as eight rows g, zeros elsewhere),
    each tap's shifted run of the image read once for eight dot products ``g_k . x[s:]``,
    summed in dy's dtype per image (reassociated, so that they vectorize) and added into
    float64 across images. The previous kernel took the products and sums in float64, a
    filter at a time: one thread, 3->16 3x3 at 32x32 batch 128 3.25 -> 1.30 ms, 1->32 3x3 at
    28x28 2.09 -> 0.93, LeNet-5's 1->6 5x5 0.43 -> 0.26 (relative differences 2e-7)."""
    nc, nb, hp, wp = xp.shape
    f_ = dy.shape[0]
    ho, wo = dy.shape[2], dy.shape[3]
    hw = hp * wp
    run = (ho - 1) * wp + wo
    x2 = xp.reshape(nc, nb * hw)
    g = np.zeros((8, hw), dtype=dy.dtype)  # only output positions are ever written
    dwk = np.zeros((f_, nc, kh, kw), dtype=np.float64)
    zero = dy.dtype.type(0)
    for n in range(n0, n1):
        for f0 in range(0, f_, 8):
            nf = min(8, f_ - f0)
            for k in range(8):
                gk = g[k]
                for i in range(ho):
                    dst = gk[i * wp:]
                    if k < nf:
                        row = dy[f0 + k, n, i]
                        for j in range(wo):
                            dst[j] = row[j]
                    else:  # (rows past a last, partial block: zeros)
                        for j in range(wo):
                            dst[j] = zero
            g0, g1, g2, g3, g4, g5, g6, g7 = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
            for c in range(nc):
                for p in range(kh):
                    for q in range(kw):
                        s = n * hw + p * dh * wp + q * dw
                        src = x2[c, s:s + run]
                        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
                        for t in range(run):
                            xv = src[t]
                            a0 += g0[t] * xv
                            a1 += g1[t] * xv
                            a2 += g2[t] * xv
                            a3 += g3[t] * xv
                            a4 += g4[t] * xv
                            a5 += g5[t] * xv
                            a6 += g6[t] * xv
                            a7 += g7[t] * xv
                        sums = (a0, a1, a2, a3, a4, a5, a6, a7)
                        for k in range(nf):
                            dwk[f0 + k, c, p, q] += np.float64(sums[k])
    return dwk


# ---- Winograd F(2x2, 3x3) transforms (cnnkit/functional/winograd.py) -----------------
# What keeps LLVM from vectorizing a loop here: an index with a run-time offset,
# ``a[p + i]``, gets Numba's negative-index wraparound (slice first, ``b = a[p:]``, then
# ``b[i]``); more than a few arrays written in one loop exceed LLVM's run-time alias checks
# (one output per loop); and loops under 16 iterations stay scalar. The output transform
# and its adjoint therefore run their sums over the whole chunk's tiles (M's and dM's
# rows are the chunk's tiles end to end), and only split or join tile rows in short
# loops. The input transform and its adjoint read the padded input's rows at stride 2 per
# tile row and stay scalar there; the input transform therefore goes column-first, its row
# sums in long loops over an image's tiles (_winograd_input_by_columns), as its adjoint does
# on wide images (WINOGRAD_ADJOINT_FLAT_MIN tiles of an image in the chunk;
# _winograd_input_adjoint_by_columns). Where one loop computes several rows of V, M or dM
# (or of a scratch array), they are rows of one array written at run-time offsets from
# one flat view (``v[c].reshape(-1)``): LLVM vectorizes such a loop (one runtime alias
# check against the arrays it reads), where separate row views written in one loop stay
# scalar and one loop per row pays its overhead sixteen times a channel. Four rows a loop:
# the input transform 1.5-2.2x faster per chunk, the output transform 1.2-1.4x, its
# adjoint 1.2-1.4x (sixteen rows a loop made it 2x slower), the same bits. A
# "slot layout" that made the input transform's loops long everywhere (polyphase planes
# of the input, a spare slot per tile row) ran it 2.2x faster but cost more elsewhere
# than it saved (see the README's Speed section).
# A chunk is the tile rows r0..r1-1 of the whole batch (tile row R is image R // th,
# row R % th of its tiles); tile (R, tx) is column p = (R - r0)*tw + tx of the chunk's
# (channels, 16, tiles) arrays: a channel's 16 transformed values lie close together,
# which made the input transform 25-45% faster than (16, channels, tiles) (1.5-2x on the
# AVX-512 host for 32 and 64 channels). The GEMMs read each (channels, tiles) slice at a
# stride; winograd.py pads the rows so that stride is not a multiple of 4 KiB, and the
# arrays may have spare columns past the chunk's tiles (tw comes from the image's width).
# The input transform works image share by image share (column-first), its adjoint tile
# row by tile row or likewise; the output transform and its adjoint over all the chunk's
# tiles at once.

@numba.njit(nogil=True, cache=True)
def winograd_input(xp, v, r0, r1):  # pragma: no cover - compiled
    """``v[c, 4i+j, p] = (B^T d B)[i, j]`` for every 4x4 input tile d of the padded
    input xp (C, N, 2*th + 2, 2*tw + 2) in tile rows r0..r1-1; v: (C, 16, (r1-r0)*tw).
    Column-first, an image's share of the chunk at a time: :func:`_winograd_input_by_columns`.
    (Until 2026-11-27 images of under 128 tiles took row-first
    loops, per tile row B^T down its four rows, then across the columns; since the
    column-first row sums write V's rows four to a loop that path is faster at every size:
    one thread, one chunk, 64 channels 8x8 72 -> 43 us, 32 at 16x16 50 -> 18, 64 at 14x14
    55 -> 34, 256 at 14x14 147 -> 92, 16 at 12x12 21 -> 11.)"""
    _winograd_input_by_columns(xp, v, r0, r1)


@numba.njit(nogil=True, cache=True)
def _winograd_input_by_columns(xp, v, r0, r1):  # pragma: no cover - compiled
    """:func:`winograd_input` with the column transform first. Each padded row that the
    chunk's tiles read is transformed across once (``C_j = (d B)[:, j]`` per tile column:
    a0 - a2, a1 + a2, a2 - a1, a1 - a3), into even-row and odd-row arrays ce, co laid out
    tile row after tile row (tw a row). Tile (ty, tx) reads rows 2ty..2ty+3, which are
    ce[ty], co[ty], ce[ty+1], co[ty+1] at tx: the rows' B^T is then four loops over all of
    an image's tiles in the chunk, each reading ce[j] and co[j] at t and t + tw and writing
    four rows of V. The same sums in another order than the row-first loops that small
    images took until 2026-11-27 (a few float32 ulps; the NumPy twin adds as those did).

    One thread, a 512 KiB chunk, kernel alone, against the row-first loops: 16x16 tiles
    (16->16 at 32x32) 38 -> 19 us a chunk (a whole conv's input 2.6 -> 1.24 ms); 12x12
    0.68x, 20x20 0.62x, 32x32 0.56x, 28x28 with 18 tile rows a chunk 0.50x; 112 tiles an
    image-chunk even, shorter runs lost (8x8 tiles: 2.3x slower) - with the row sums one
    loop per V row then, sixteen a channel (see winograd_input for the four-row loops).
    The eight scratch rows are padded to a multiple of 16 floats plus 16: unpadded, 13-,
    14-, 15- and 18-wide tile rows ran 1.1-1.9x slower than the other path (aliasing
    between the scratch rows, it seems), padded 0.68-1.06x. The ResNet-20 training step
    (batch 128), in-process against the previous commit: 0.94-0.98 in five runs of six
    (1.04 in one); cnn_bn's within noise (1.00-1.02)."""
    nc, wp, ln = xp.shape[0], xp.shape[3], v.shape[2]
    th, tw = (xp.shape[2] - 2) // 2, (wp - 2) // 2
    cap = ((min(r1 - r0, th) + 1) * tw + 15) // 16 * 16 + 16
    cs = np.empty((8, cap), dtype=xp.dtype)
    ce, co = cs[:4], cs[4:]  # C_j of the even padded rows 2u, and of the odd rows 2u + 1
    one, two, three, uw = _U(1), _U(2), _U(3), _U(tw)
    for c in range(nc):
        rr = r0
        while rr < r1:  # an image's tile rows ty0..ty0+cnt-1 at a time
            n, ty0 = rr // th, rr % th
            cnt = min(th - ty0, r1 - rr)
            for u in range(cnt + 1):
                o = _U(u * tw)
                for a in range(2):
                    dst, r = (ce if a == 0 else co), _U(2 * (ty0 + u) + a)
                    for tx in range(tw):
                        k = _U(2 * tx)
                        a0, a1 = xp[c, n, r, k], xp[c, n, r, k + one]
                        a2, a3 = xp[c, n, r, k + two], xp[c, n, r, k + three]
                        t = o + _U(tx)
                        _cols_bt(dst, t, a0, a1, a2, a3)
            _rows_bt(ce, co, v[c].reshape(-1), ln, (rr - r0) * tw, cnt * tw, uw)
            rr += cnt


@numba.njit(nogil=True, cache=True, inline="always")
def _cols_bt(dst, t, a0, a1, a2, a3):  # pragma: no cover - compiled
    """One tile's column sums of a padded row, ``(d B)[:, j]``, into ``dst[j, t]``."""
    dst[0, t] = a0 - a2
    dst[1, t] = a1 + a2
    dst[2, t] = a2 - a1
    dst[3, t] = a1 - a3


@numba.njit(nogil=True, cache=True, inline="always")
def _rows_bt(ce, co, vf, ln, off, n, uw):  # pragma: no cover - compiled
    """B^T down the rows, (r0 - r2, r1 + r2, r2 - r1, r1 - r3), for n tiles from the even-
    and odd-row column sums ce, co (tile row after tile row, uw a row) into V's 16 rows
    (vf: a channel's (16, ln) rows as one flat array, each written from ``off``): four
    loops, each reading ce[j] and co[j] at t and t + uw and writing four rows of V (rows of
    one array at run-time offsets, which LLVM vectorizes)."""
    for j in range(4):
        e, od = ce[j], co[j]
        oa = _U(j * ln + off)
        ob, oc, odd = oa + _U(4 * ln), oa + _U(8 * ln), oa + _U(12 * ln)
        for t in range(n):
            u = _U(t)
            e0, e1, o0, o1 = e[u], e[u + uw], od[u], od[u + uw]
            vf[oa + u] = e0 - e1
            vf[ob + u] = o0 + e1
            vf[oc + u] = e1 - o0
            vf[odd + u] = o0 - o1


@numba.njit(nogil=True, cache=True)
def winograd_input_from_x(xf, sn, sc, h, wd, top, left, th, tw, v, r0, r1):  # pragma: no cover - compiled
    """:func:`winograd_input` read from x itself instead of its padded copy: the padded
    input is x placed at (top, left) in a zero (2*th + 2, 2*tw + 2) plane, as
    ``pad_channel_major`` builds it, and plane (n, c) of x (h x wd, rows contiguous)
    starts at ``xf[n*sn + c*sc]`` (window.planes). The same column-first sums as
    :func:`_winograd_input_by_columns`, so the same bits; a padded row outside x gives
    zero column sums, and only the tiles at the left and right edges check their four
    columns (loaded from columns clamped into x, then selected: a per-element branch there
    made the kernel 1.5x slower than the padded one, 36 against 24 us a chunk at 32
    channels 28x28; now 28-30), the others read x's row directly. Saves the forward's
    padded copy, a pass over the input kept until the backward (see winograd.py's
    FROM_X_MIN_CHANNELS for when). The column pass below is a loop of its own beside
    _winograd_input_by_columns' (both end in _cols_bt and _rows_bt): the padded path run
    through this kernel with no padding (no edge tiles) was 5-7% slower, one thread,
    kernel alone (32 channels 28x28 22.3 -> 23.8 us, 64 at 14x14 21.1 -> 22.8), and it is
    the path of the 16-channel convs."""
    nc, ln = v.shape[0], v.shape[2]
    cap = ((min(r1 - r0, th) + 1) * tw + 15) // 16 * 16 + 16
    cs = np.empty((8, cap), dtype=v.dtype)
    ce, co = cs[:4], cs[4:]  # C_j of the even padded rows 2u, and of the odd rows 2u + 1
    zero = v.dtype.type(0)
    one, two, three, uw = _U(1), _U(2), _U(3), _U(tw)
    t_lo = min(tw, (left + 1) // 2)  # tiles whose four columns 2tx - left .. 2tx + 3 - left are in x
    t_hi = max(t_lo, min(tw, (wd - 4 + left) // 2 + 1))
    # the other tiles: for each, its four columns' offsets from the padded row's start,
    # clamped into x (always safe to load), and whether each is inside x
    edges = np.empty(tw, dtype=np.int64)
    eoff = np.empty((tw, 4), dtype=np.int64)
    inside = np.empty((tw, 4), dtype=np.bool_)
    ne = 0
    for tx in range(tw):
        if tx < t_lo or tx >= t_hi:
            edges[ne] = tx
            for i in range(4):
                q = 2 * tx + i - left  # x's column
                inside[ne, i] = 0 <= q < wd
                eoff[ne, i] = min(max(q, 0), wd - 1) + left
            ne += 1
    for c in range(nc):
        rr = r0
        while rr < r1:  # an image's tile rows ty0..ty0+cnt-1 at a time
            n, ty0 = rr // th, rr % th
            cnt = min(th - ty0, r1 - rr)
            for u in range(cnt + 1):
                o = _U(u * tw)
                for a in range(2):
                    dst = ce if a == 0 else co
                    xr = 2 * (ty0 + u) + a - top  # x's row of this padded row
                    if xr < 0 or xr >= h:
                        for j in range(4):
                            for tx in range(tw):
                                dst[j, o + _U(tx)] = zero
                        continue
                    row = n * sn + c * sc + xr * wd - left  # x's row, shifted to padded columns
                    for tx in range(t_lo, t_hi):
                        k = _U(row + 2 * tx)
                        a0, a1, a2, a3 = xf[k], xf[k + one], xf[k + two], xf[k + three]
                        t = o + _U(tx)
                        _cols_bt(dst, t, a0, a1, a2, a3)
                    for ei in range(ne):  # the edge tiles: columns outside x are zero
                        a0, a1 = xf[_U(row + eoff[ei, 0])], xf[_U(row + eoff[ei, 1])]
                        a2, a3 = xf[_U(row + eoff[ei, 2])], xf[_U(row + eoff[ei, 3])]
                        a0 = a0 if inside[ei, 0] else zero
                        a1 = a1 if inside[ei, 1] else zero
                        a2 = a2 if inside[ei, 2] else zero
                        a3 = a3 if inside[ei, 3] else zero
                        t = o + _U(edges[ei])
                        _cols_bt(dst, t, a0, a1, a2, a3)
            _rows_bt(ce, co, v[c].reshape(-1), ln, (rr - r0) * tw, cnt * tw, uw)
            rr += cnt


@numba.njit(nogil=True, cache=True)
def winograd_output(m, y, b, r0, r1, th, relu):  # pragma: no cover - compiled
    """``y tile = A^T M A`` (+ b[f]; clamped at 0 with ``relu``) for the tiles of tile rows
    r0..r1-1, from m (F, 16, >= (r1-r0)*tw) into y (F, N, Ho, Wo); the parts of border tiles
    past Ho or Wo are dropped.

    The sums run over the whole chunk's tiles at once (per tile row, tw long with offsets
    added at run time, they stayed scalar): one loop per filter reads M's sixteen rows and
    writes the tiles' four outputs as rows of one scratch array (vectorized; see the
    section's header); only the interleaving of each tile's 2x2 outputs into y's rows goes
    tile row by tile row. Per chunk, one thread, against the per-tile-row version: 0.30
    (16->16 at 32x32) to 0.76 (256 channels at 14x14), the same bits; against twelve loops
    a filter, one row each: 0.73-0.83."""
    nf, ho, wo, ln = y.shape[0], y.shape[2], y.shape[3], m.shape[2]
    tw = (wo + 1) // 2
    ns = (r1 - r0) * tw  # m may have spare columns past the chunk's tiles
    q = np.empty((4, ns), dtype=y.dtype)  # each tile's outputs (0,0) (0,1) (1,0) (1,1)
    qf = q.reshape(-1)
    row = np.empty(2 * tw, dtype=y.dtype)
    zero = y.dtype.type(0)
    un, ul = _U(ns), _U(ln)
    for f in range(nf):
        bv = b[f] if b.shape[0] > 0 else zero
        mf = m[f].reshape(-1)  # M's 16 rows for this filter, one array (see the docstring)
        for t in range(ns):
            u = _U(t)
            m0, m1, m2, m3 = mf[u], mf[ul + u], mf[_U(2) * ul + u], mf[_U(3) * ul + u]
            m4, m5, m6, m7 = mf[_U(4) * ul + u], mf[_U(5) * ul + u], mf[_U(6) * ul + u], mf[_U(7) * ul + u]
            m8, m9, m10, m11 = mf[_U(8) * ul + u], mf[_U(9) * ul + u], mf[_U(10) * ul + u], mf[_U(11) * ul + u]
            m12, m13, m14, m15 = mf[_U(12) * ul + u], mf[_U(13) * ul + u], mf[_U(14) * ul + u], mf[_U(15) * ul + u]
            s0, s1 = m0 + m1 + m2, m1 - m2 - m3  # A^T on each row of the tile: (m0 + m1 + m2, m1 - m2 - m3)
            s2, s3 = m4 + m5 + m6, m5 - m6 - m7
            s4, s5 = m8 + m9 + m10, m9 - m10 - m11
            s6, s7 = m12 + m13 + m14, m13 - m14 - m15
            qf[u] = s0 + s2 + s4 + bv  # and down the columns
            qf[un + u] = s1 + s3 + s5 + bv
            qf[_U(2) * un + u] = s2 - s4 - s6 + bv
            qf[_U(3) * un + u] = s3 - s5 - s7 + bv
        for rr in range(r0, r1):
            n, r = rr // th, 2 * (rr % th)
            p = (rr - r0) * tw
            for k in range(min(2, ho - r)):
                qa, qb = q[2 * k, p:], q[2 * k + 1, p:]
                for tx in range(tw):
                    row[2 * tx] = qa[tx]
                    row[2 * tx + 1] = qb[tx]
                out = y[f, n, r + k]
                if relu:
                    for j in range(wo):
                        out[j] = zero if row[j] <= zero else row[j]
                else:
                    for j in range(wo):
                        out[j] = row[j]


@numba.njit(nogil=True, cache=True)
def winograd_output_adjoint(dy, dm, r0, r1, th):  # pragma: no cover - compiled
    """The adjoint of :func:`winograd_output` (without bias): ``dM = A dY A^T`` per tile,
    dy (F, N, Ho, Wo) (any strides; zero past Ho and Wo) into dm (F, 16, >= (r1-r0)*tw).

    Tile row by tile row, dy's two rows are split into each tile's four values; the sums
    then run over the whole chunk's tiles at once, a loop per row of the tiles writing its
    four rows of dM (rows of one array from a flat view: vectorized; all sixteen in one loop
    ran 2x slower). Per chunk, one thread, against a per-tile-row version: 0.41 (16->16 at
    32x32) to 0.78, about even for 256 channels at 14x14; against 24 loops a filter, one
    row each: 0.6-0.8. The same bits."""
    nf, ho, wo = dy.shape[0], dy.shape[2], dy.shape[3]
    tw = (wo + 1) // 2
    ns = (r1 - r0) * tw  # dm may have spare columns past the chunk's tiles
    row = np.zeros((2, 2 * tw), dtype=dy.dtype)  # columns past wo stay zero
    g = np.empty((4, ns), dtype=dy.dtype)  # each tile's dY (0,0) (0,1) (1,0) (1,1)
    gf = g.reshape(-1)
    ul = _U(dm.shape[2])
    for f in range(nf):
        for rr in range(r0, r1):
            n, r = rr // th, 2 * (rr % th)
            for k in range(2):
                rk = row[k]
                if r + k < ho:
                    src = dy[f, n, r + k]
                    for j in range(wo):
                        rk[j] = src[j]
                else:
                    for j in range(2 * tw):
                        rk[j] = 0
            p = (rr - r0) * tw
            for k in range(2):  # (g's two rows written from one flat view: vectorized)
                rk, oa = row[k], _U(2 * k * ns + p)
                ob = oa + _U(ns)
                for tx in range(tw):
                    u = _U(tx)
                    gf[oa + u] = rk[_U(2) * u]
                    gf[ob + u] = rk[_U(2) * u + _U(1)]
        g00, g01, g10, g11 = g[0], g[1], g[2], g[3]
        df = dm[f].reshape(-1)  # dM's 16 rows for this filter, one array (see the docstring)
        for i in range(4):  # a loop for each row of the tiles, writing its four values
            o = _U(4 * i) * ul
            for t in range(ns):
                u = _U(t)
                a0, a1, b0, b1 = g00[u], g01[u], g10[u], g11[u]
                # A down the tiles' columns: (g0, g0 + g1, g0 - g1, -g1) ...
                if i == 0:
                    sa, sb = a0, a1
                elif i == 1:
                    sa, sb = a0 + b0, a1 + b1
                elif i == 2:
                    sa, sb = a0 - b0, a1 - b1
                else:
                    sa, sb = -b0, -b1
                df[o + u] = sa  # ... and across their rows
                df[o + ul + u] = sa + sb
                df[o + _U(2) * ul + u] = sa - sb
                df[o + _U(3) * ul + u] = -sb


@numba.njit(nogil=True, cache=True)
def winograd_input_adjoint(dv, dx, halo, r0, r1, th, tw, top, left):  # pragma: no cover - compiled
    """The adjoint of :func:`winograd_input`: ``dD = B dV B^T`` per tile, summed where
    tiles overlap, for tile rows r0..r1-1, into dx (C, N, H, W): the gradient of the
    input without its padding (padded row/column ``top + i``/``left + j`` is dx's i/j; the
    padding's rows and columns are dropped). Every dx row that the range owns is written
    (no zeroing needed); when r0 is not an image's first tile row, the two padded rows it
    shares with the tile row above go to ``halo`` (C, 2, 2*tw + 2) instead, for the caller
    to add once every range is done (another thread owns that row above). A dense dx, not
    a view into a padded buffer: the ReLU and batch-norm backwards that read it next ran
    2-5x slower on such a view.

    Where an image's share of the chunk has at least ``WINOGRAD_ADJOINT_FLAT_MIN`` tiles,
    :func:`_winograd_input_adjoint_by_columns` does it (long loops); else, per tile row,
    B across the columns (loops of tw tiles), then down the rows."""
    if min(th, r1 - r0) * tw >= WINOGRAD_ADJOINT_FLAT_MIN:
        _winograd_input_adjoint_by_columns(dv, dx, halo, r0, r1, th, tw, top, left)
        return
    nc, h, w = dx.shape[0], dx.shape[2], dx.shape[3]
    wp = 2 * tw + 2
    t = np.empty((4, wp), dtype=dx.dtype)
    rows = np.empty((4, wp), dtype=dx.dtype)
    for c in range(nc):
        for rr in range(r0, r1):
            n, r = rr // th, 2 * (rr % th)
            p = (rr - r0) * tw
            for i in range(4):  # B across the columns, overlapping tiles summed
                ti = t[i]
                va, vb, vc, vd = dv[c, 4 * i], dv[c, 4 * i + 1], dv[c, 4 * i + 2], dv[c, 4 * i + 3]
                ti[0], ti[1] = 0, 0
                for tx in range(tw):
                    g0, g1, g2, g3 = va[p + tx], vb[p + tx], vc[p + tx], vd[p + tx]
                    ti[2 * tx] += g0
                    ti[2 * tx + 1] += g1 - g2 + g3
                    ti[2 * tx + 2] = g1 + g2 - g0
                    ti[2 * tx + 3] = -g3
            t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
            for j in range(wp):  # and B down the rows: the tile row's four padded rows
                rows[0, j] = t0[j]
                rows[1, j] = t1[j] - t2[j] + t3[j]
                rows[2, j] = t1[j] + t2[j] - t0[j]
                rows[3, j] = -t3[j]
            for k in range(4):
                if k < 2 and rr == r0 and r > 0:  # shared with the tile row above: into the halo
                    hk = halo[c, k]
                    for j in range(wp):
                        hk[j] = rows[k, j]
                    continue
                hh = r + k - top
                if hh < 0 or hh >= h:
                    continue  # a padding row
                dst, src = dx[c, n, hh], rows[k, left:]
                if k < 2 and r > 0:  # written by the tile row above: add
                    for j in range(w):
                        dst[j] += src[j]
                else:
                    for j in range(w):
                        dst[j] = src[j]


@numba.njit(nogil=True, cache=True)
def _winograd_input_adjoint_by_columns(dv, dx, halo, r0, r1, th, tw, top, left):  # pragma: no cover
    """:func:`winograd_input_adjoint` the other way round, the adjoint of
    :func:`_winograd_input_by_columns`: first B down the rows for all of an image's tiles in
    the chunk at once (long loops): tile row ty adds to padded rows 2ty..2ty+3, kept as
    even rows and odd rows, a tile column at a time (de[j], do[j]: tw values a padded row,
    row after row), so the two tile rows that share a padded row are summed in one loop
    reading dV at t and t - tw. Then B across the columns, padded row by padded row
    (overlapping tiles summed), straight into dx's row (or the halo). Each padded row is
    written whole once per image share, so no row is added to but the halo's. The same
    sums in another order (a few float32 ulps from the other path).

    One thread, one chunk, kernel alone, ms (row-first / this): 16x16 tiles (16->16 at
    32x32, 2 images) 0.040 / 0.030; 14x14 (32->32 at 28x28) 0.035 / 0.026; 28x28 (64->64
    at 56x56) 0.162 / 0.094; 12x12 0.078 / 0.069; 10x10 even; 8x8 1.23x slower, 4x4 2.1x
    slower (the short loops). Since both scratch rows are written per loop (2026-11-27,
    rows of one array), 16x16 tiles (ResNet-20's 32->32) 52.5 -> 47.3 us and 10x10 20.2 ->
    16.0 against the row-first loops, 7x7 67 -> 70, 6x6 23 -> 25, 4x4 75 -> 91: hence
    WINOGRAD_ADJOINT_FLAT_MIN = 64."""
    nc, h, w = dx.shape[0], dx.shape[2], dx.shape[3]
    wp = 2 * tw + 2
    cap = ((min(r1 - r0, th) + 1) * tw + 15) // 16 * 16 + 16
    dd = np.empty((8, cap), dtype=dx.dtype)
    de, do = dd[:4], dd[4:]  # even padded rows 2u and odd rows 2u + 1, per tile column j
    ddf, uc = dd.reshape(-1), _U(cap)
    row = np.empty(wp, dtype=dx.dtype)
    uw, one, two = _U(tw), _U(1), _U(2)
    for c in range(nc):
        rr = r0
        while rr < r1:  # an image's tile rows ty0..ty0+cnt-1 at a time
            n, ty0 = rr // th, rr % th
            cnt = min(th - ty0, r1 - rr)
            p = (rr - r0) * tw
            for j in range(4):  # B down the rows: rows (g0, g1 - g2 + g3, g1 + g2 - g0, -g3)
                g0, g1, g2, g3 = dv[c, j, p:], dv[c, 4 + j, p:], dv[c, 8 + j, p:], dv[c, 12 + j, p:]
                oe, oo = _U(j) * uc, _U(4 + j) * uc  # rows j of de and do, in the one array dd
                for s in range(tw):  # (see the docstring for the loops' shape)
                    u = _U(s)
                    ddf[oe + u] = g0[u]
                    ddf[oo + u] = g1[u] - g2[u] + g3[u]
                for s in range(tw, cnt * tw):  # rows shared by tile rows ty (at s) and ty - 1
                    u = _U(s)
                    t = u - uw
                    ddf[oe + u] = g0[u] + (g1[t] + g2[t] - g0[t])
                    ddf[oo + u] = (g1[u] - g2[u] + g3[u]) - g3[t]
                for s in range(cnt * tw, (cnt + 1) * tw):  # the last tile row's bottom rows
                    u = _U(s)
                    t = u - uw
                    ddf[oe + u] = g1[t] + g2[t] - g0[t]
                    ddf[oo + u] = -g3[t]
            for u in range(cnt + 1):  # B across the columns: (D0, D1 - D2 + D3, D1 + D2 - D0, -D3)
                for a in range(2):
                    hh = 2 * (ty0 + u) + a - top
                    to_halo = u == 0 and rr == r0 and ty0 > 0  # shared with the tile row above
                    if not to_halo and (hh < 0 or hh >= h):
                        continue  # a padding row
                    src, q = (de if a == 0 else do), u * tw
                    d0, d1, d2, d3 = src[0, q:], src[1, q:], src[2, q:], src[3, q:]
                    row[0] = d0[0]
                    row[1] = d1[0] - d2[0] + d3[0]
                    for v in range(1, tw):  # columns shared by tiles tx (at v) and tx - 1
                        k, t = _U(v), _U(v) - one
                        row[two * k] = d0[k] + (d1[t] + d2[t] - d0[t])
                        row[two * k + one] = (d1[k] - d2[k] + d3[k]) - d3[t]
                    t = uw - one
                    row[two * uw] = d1[t] + d2[t] - d0[t]
                    row[two * uw + one] = -d3[t]
                    if to_halo:
                        hk = halo[c, a]
                        for j in range(wp):
                            hk[j] = row[j]
                    else:
                        dst, src_row = dx[c, n, hh], row[left:]
                        for j in range(w):
                            dst[j] = src_row[j]
            rr += cnt


# ---- strided im2col / col2im (conv.py's "strided" mode) --------------------------------
# NumPy copies one kernel offset at a time as a strided 4-D slice, whose inner loops are
# one output row (Wo elements, at stride sw) long; here the same copies and adds run
# with no per-row overhead: each image's plane and each tap's (Ho, Wo) block are flat
# arrays indexed with unsigned offsets (no row views, no negative-index checks).
# Against row views (one thread, kernel alone, 3x3 stride 2, ms): im2col 32 channels
# 56 images 8x8 out 0.77 -> 0.52, 64 channels 28x28 out 2.5 -> 1.1, 128 at 14x14 1.02
# -> 0.64, 256 at 7x7 even; col2im 0.84 -> 0.53, 2.4 -> 1.7, 1.07 -> 0.71, 0.60 -> 0.57.

@numba.njit(nogil=True, cache=True)
def im2col_strided(src, cols, n0, r0, kw, sh, sw, dh, dw):  # pragma: no cover - compiled
    """``cols[c, p*kw + q, m, i, j] = src[c, n0 + m, (r0 + i)*sh + p*dh, j*sw + q*dw]``:
    src the padded input (C, N, Hp, Wp), cols (C, kH*kW, images, rows, Wo) for output
    rows r0.. of images n0.., both C-contiguous and indexed flat, in the order cols is
    laid out.

    At stride 2 the row copy goes in blocks of 8 (a constant trip count: LLVM turns the
    stride-2 loads into wide loads and shuffles; a plain loop of Wo stayed scalar). One
    flat view of each array instead of a view per (channel, image, tap) block: kernel
    alone, 3x3 s2, 1.3-2x faster (16 channels 4 images 16x16 out 44 -> 28 us; 32 channels
    8 images 8x8 out 75 -> 37; 128 channels 2 images 14x14 out 160 -> 126)."""
    nc, kk, nm, ho, wo = cols.shape
    nb, hp, wp = src.shape[1], src.shape[2], src.shape[3]
    sf, cf = src.reshape(-1), cols.reshape(-1)
    wo8 = wo // 8 * 8
    for c in range(nc):
        for k in range(kk):
            p, q = k // kw, k % kw
            for m in range(nm):
                base = _U(((c * nb + n0 + m) * hp + p * dh + r0 * sh) * wp + q * dw)
                o = _U(((c * kk + k) * nm + m) * ho * wo)
                for i in range(ho):
                    a, oi = base + _U(i * sh * wp), o + _U(i * wo)
                    if sw == 2:
                        for j0 in range(0, wo8, 8):
                            a8, o8 = a + _U(2 * j0), oi + _U(j0)
                            for j in range(8):
                                cf[o8 + _U(j)] = sf[a8 + _U(2 * j)]
                        for j in range(wo8, wo):
                            cf[oi + _U(j)] = sf[a + _U(2 * j)]
                    else:
                        for j in range(wo):
                            cf[oi + _U(j)] = sf[a + _U(j * sw)]


@numba.njit(nogil=True, cache=True, inline="always")
def _column_runs(wd, wo, kw, sw, dw, pl):  # pragma: no cover - compiled
    """``(first, past)``: for each kernel column q, the output columns j whose input column
    ``j*sw + q*dw - pl`` lies inside x (wd wide) are first[q]..past[q]-1 (of wo)."""
    first, past = np.empty(kw, dtype=np.int64), np.empty(kw, dtype=np.int64)
    for q in range(kw):
        off = q * dw - pl  # input column of output column j: j*sw + off
        first[q] = min(wo, max(0, (-off + sw - 1) // sw))  # the first j with j*sw + off >= 0
        past[q] = max(first[q], min(wo, (wd - 1 - off) // sw + 1))  # past the last with j*sw + off < wd
    return first, past


@numba.njit(nogil=True, cache=True)
def im2col_unpadded(xf, sn, sc, h, wd, cols, n0, r0, kw, sh, sw, dh, dw, pt, pl, blk):  # pragma: no cover - compiled
    """im2col_strided from the input itself instead of a padded copy: ``cols[c, p*kw + q,
    m, i, j] = x[n0 + m, c, (r0 + i)*sh + p*dh - pt, j*sw + q*dw - pl]``, 0 where that is
    outside x. x is the flat memory of (N, C, H, W) with plane (n, c) at ``n*sn + c*sc``
    (window.planes: NCHW or channel-major, rows contiguous); cols (C, kH*kW, images, rows,
    Wo) C-contiguous. Each (tap, output row) copies the run of columns inside x and zeroes
    the few outside it; a row outside x is zeroed whole. Column stride 2 goes to
    _im2col_unpadded_s2 (phases). Saves the padded copy of x that the forward otherwise
    writes first and the backward keeps."""
    nc, kk, nm, ho, wo = cols.shape
    if sw == 2:
        _im2col_unpadded_s2(xf, sn, sc, h, wd, cols, n0, r0, kw, sh, dh, dw, pt, pl, blk)
        return
    cf = cols.reshape(-1)
    zero = cols.dtype.type(0)
    first, past = _column_runs(wd, wo, kw, sw, dw, pl)
    for c in range(nc):
        for k in range(kk):
            p, q = k // kw, k % kw
            off = q * dw - pl
            j0, j1 = first[q], past[q]
            for m in range(nm):
                o = _U(((c * kk + k) * nm + m) * ho * wo)
                plane = (n0 + m) * sn + c * sc
                for i in range(ho):
                    oi = o + _U(i * wo)
                    ri = (r0 + i) * sh + p * dh - pt
                    if ri < 0 or ri >= h:
                        for j in range(wo):
                            cf[oi + _U(j)] = zero
                        continue
                    for j in range(j0):
                        cf[oi + _U(j)] = zero
                    for j in range(j1, wo):
                        cf[oi + _U(j)] = zero
                    a = _U(plane + ri * wd + j0 * sw + off)  # x at output column j0
                    ob = oi + _U(j0)
                    for t in range(j1 - j0):
                        cf[ob + _U(t)] = xf[a + _U(t * sw)]


@numba.njit(nogil=True, cache=True, inline="always")
def _split_flat(src, start, n, ph, uh):  # pragma: no cover - compiled
    """``ph[t] = src[start + 2t]``, ``ph[uh + t] = src[start + 2t + 1]``: the even and odd
    positions of the n elements from start (uh = (n + 1) // 2), in one loop of two loads a
    step, which LLVM vectorizes (wide loads, shuffled)."""
    two, one = _U(2), _U(1)
    for t in range(n // 2):
        u = _U(t)
        v0, v1 = src[start + two * u], src[start + two * u + one]
        ph[u] = v0
        ph[uh + u] = v1
    if n % 2:
        ph[uh - one] = src[start + _U(n - 1)]


COPY_BLOCK = 16  # elements per block copy of _im2col_unpadded_s2's runs (passed at run time; see there)


@numba.njit(nogil=True, cache=True)
def _im2col_unpadded_s2(xf, sn, sc, h, wd, cols, n0, r0, kw, sh, dh, dw, pt, pl, blk):  # pragma: no cover - compiled
    """im2col_unpadded at column stride 2. A run's elements are 2 apart in x, but
    consecutive in one of the two phases of the plane taken flat (``even[t] =
    plane[2t]``, ``odd[t] = plane[2t + 1]``): each (channel, image) plane is split into
    them first (one vectorized pass, two loads a step), then each output row's run is a
    unit-stride copy, in blocks of ``blk`` (COPY_BLOCK) elements, the last block running
    past the run into memory written later: the zeros after it and the next rows of the
    same (channel, tap, image) block, never past the block (the blocks are visited
    channel, image, tap, with each plane's phases in L1: 0.67 of the old time, where
    memory order, all of a channel's planes split first, gave 0.75). A row of 14 is then
    one 16-lane load and store instead of 8-element blocks of stride-2 loads and a scalar
    tail. ``blk`` is an argument, not a constant, because LLVM unrolls a loop of constant
    length 16 into 16 scalar moves but vectorizes one of run-time length. One thread,
    kernel alone, bits equal, us (before / after): 128 channels 28x28 -> 14x14 92 -> 62,
    256 @28 182 -> 121, 512 @14 158 -> 135; the 7x7 s2 stem at 224 (3 channels) 564 -> 177."""
    nc, kk, nm, ho, wo = cols.shape
    cf = cols.reshape(-1)
    zero = cols.dtype.type(0)
    hw = h * wd
    half = (hw + 1) // 2
    ph = np.empty(2 * half + 2 * blk, dtype=cols.dtype)  # even, then odd positions; room for an overrun
    uh = _U(half)
    first, past = _column_runs(wd, wo, kw, 2, dw, pl)
    one = _U(1)
    for c in range(nc):
        for m in range(nm):
            plane = _U((n0 + m) * sn + c * sc)
            _split_flat(xf, plane, hw, ph, uh)
            for k in range(kk):
                p, q = k // kw, k % kw
                off = q * dw - pl
                j0, j1 = first[q], past[q]
                run = j1 - j0
                blocks = (run + blk - 1) // blk
                o = _U(((c * kk + k) * nm + m) * ho * wo)
                oend = o + _U(ho * wo)
                for i in range(ho):
                    oi = o + _U(i * wo)
                    ri = (r0 + i) * sh + p * dh - pt
                    if ri < 0 or ri >= h:  # (zeros written out as in im2col_unpadded: an inline
                        for j in range(wo):  # helper for them took 256 @28 batch 1 0.74 -> 1.08 ms)
                            cf[oi + _U(j)] = zero
                        continue
                    for j in range(j0):
                        cf[oi + _U(j)] = zero
                    f = _U(ri * wd + 2 * j0 + off)  # the plane's element at output column j0 (>= 0)
                    a = (f & one) * uh + (f >> one)
                    ob = oi + _U(j0)
                    inside = ob + _U(blocks * blk) <= oend  # (an overrun lands on this block's later rows)
                    if inside and blocks == 1:
                        for t in range(blk):
                            cf[ob + _U(t)] = ph[a + _U(t)]
                    elif inside:
                        for b in range(blocks):
                            ab, obb = a + _U(b * blk), ob + _U(b * blk)
                            for t in range(blk):
                                cf[obb + _U(t)] = ph[ab + _U(t)]
                    else:
                        for t in range(run):
                            cf[ob + _U(t)] = ph[a + _U(t)]
                    for j in range(j1, wo):
                        cf[oi + _U(j)] = zero


@numba.njit(nogil=True, cache=True)
def col2im_strided(cols, dxp, n0, kw, sh, sw, dh, dw):  # pragma: no cover - compiled
    """The adjoint: ``dxp[c, n0 + m, i*sh + p*dh, j*sw + q*dw] += cols[c, p*kw + q, m, i, j]``,
    flat as im2col_strided; each element of dxp gets its taps in order (the same bits as
    NumPy's pass per tap). (Blocks of 8 at stride 2 measured slower here than the plain loop.)
    At stride 2 with outputs at least ``COL2IM_PHASES_MIN_WIDTH`` wide, by phases
    (_col2im_s2)."""
    nc, kk, nm, ho, wo = cols.shape
    if sw == 2 and wo >= COL2IM_PHASES_MIN_WIDTH:
        _col2im_s2(cols, dxp, n0, kw, sh, dh, dw)
        return
    nb, hp, wp = dxp.shape[1], dxp.shape[2], dxp.shape[3]
    df, cf = dxp.reshape(-1), cols.reshape(-1)
    for c in range(nc):
        for k in range(kk):
            p, q = k // kw, k % kw
            for m in range(nm):
                base = _U(((c * nb + n0 + m) * hp + p * dh) * wp + q * dw)
                o = _U(((c * kk + k) * nm + m) * ho * wo)
                for i in range(ho):
                    a, oi = base + _U(i * sh * wp), o + _U(i * wo)
                    for j in range(wo):
                        df[a + _U(j * sw)] += cf[oi + _U(j)]


COL2IM_PHASES_MIN_WIDTH = 16  # narrowest stride-2 output that col2im_strided adds by phases


@numba.njit(nogil=True, cache=True)
def _col2im_s2(cols, dxp, n0, kw, sh, dh, dw):  # pragma: no cover - compiled
    """col2im_strided at column stride 2, as _im2col_unpadded_s2 builds the columns: each
    (channel, image) plane of dxp is split into its even and odd positions (taken flat),
    each output row's taps are added to one phase at unit stride (vectorized), and the
    phases are put back. Each element gets its taps in the same order (the same bits).
    One thread, kernel alone, us (before / after): the 7x7 s2 stem at 224 (3 channels)
    552 -> 164; 128 channels 56 -> 28 wide 253 -> 167; 16 channels 32 -> 16, 8 images
    85 -> 61; but 28 -> 14 wide 74 -> 79 (a row of 14 adds is mostly a scalar tail),
    hence the floor on the width."""
    nc, kk, nm, ho, wo = cols.shape
    nb, hp, wp = dxp.shape[1], dxp.shape[2], dxp.shape[3]
    df, cf = dxp.reshape(-1), cols.reshape(-1)
    hw = hp * wp
    half = (hw + 1) // 2
    uh = _U(half)
    ph = np.empty(2 * half, dtype=dxp.dtype)  # even, then odd positions of a plane
    two, one = _U(2), _U(1)
    for c in range(nc):
        for m in range(nm):
            plane = _U((c * nb + n0 + m) * hw)
            _split_flat(df, plane, hw, ph, uh)
            for k in range(kk):
                p, q = k // kw, k % kw
                o = _U(((c * kk + k) * nm + m) * ho * wo)
                for i in range(ho):
                    f = _U((i * sh + p * dh) * wp + q * dw)  # the plane's element at output column 0
                    a, oi = (f & one) * uh + (f >> one), o + _U(i * wo)
                    for j in range(wo):
                        ph[a + _U(j)] += cf[oi + _U(j)]
            for t in range(hw // 2):
                u = _U(t)
                df[plane + two * u] = ph[u]
                df[plane + two * u + one] = ph[uh + u]
            if hw % 2:
                df[plane + _U(hw - 1)] = ph[uh - one]


@numba.njit(nogil=True, cache=True)
def col2im_batch_inner(cols, xt, kw, dh, dw):  # pragma: no cover - compiled
    """Batch-inner col2im (stride 1): ``xt[c, i + p*dh, j + q*dw, m] += cols[c, p*kw + q, i,
    j, m]`` with xt (C, Hp, Wp, images) and cols (C, kH*kW, Ho, Wo, images), tap after tap
    as NumPy adds them (the same bits). NumPy's 25 slice adds of LeNet-5's C2 (32 images, 6
    channels, 5x5 on 14x14) took 0.60 ms; these loops 0.1-0.2 ms."""
    nc, kk, ho, wo, nm = cols.shape
    for c in range(nc):
        for k in range(kk):
            p, q = k // kw, k % kw
            for i in range(ho):
                src, dst = cols[c, k, i], xt[c, i + p * dh]
                for j in range(wo):
                    s, d = src[j], dst[j + q * dw]
                    for m in range(nm):
                        d[m] += s[m]

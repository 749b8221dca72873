"""3x3 stride-1 convolution by Winograd's minimal filtering algorithm F(2x2, 3x3).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2015). A 2x2 block
of outputs of a 3x3 correlation reads a 4x4 input tile d. Instead of 2*2*9 = 36
multiplications it takes 16:

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, 4x4)

with the fixed matrices below. Summed over input channels, the elementwise product
becomes 16 independent matrix products, one per position (i, j) of the 4x4 tile:

    M[ij] (F, tiles) = U[ij] (F, C) @ V[ij] (C, tiles),   U = G g G^T,  V = B^T d B

so a conv is: transform the input tiles (V), 16 GEMMs, transform back (Y). The GEMMs
do 16*F*C multiply-adds per 2x2 outputs where im2col does 36: 2.25x fewer.

Backward: the forward is linear in U and in V, so the gradients go back through the
same steps transposed (exact, not an approximation):

    dM[ij] = (A dY A^T)[ij],  dU[ij] = dM[ij] @ V[ij]^T,  dV[ij] = U[ij]^T @ dM[ij],
    dg = G^T dU G,            dd = B dV B^T (summed where input tiles overlap).

Rounding: the transforms add and subtract at most four values per step, with factors
1 and 1/2, so the error stays within a few float32 ulps of the sum of |terms| (the
tests hold it to the same tolerance as the im2col path, against PyTorch).

The work runs in chunks of tile rows (a tile row: one image's row of 2-pixel-high
tiles) sized to stay in L2 cache, on cnnkit's worker threads. The transforms are
compiled loops (``_jit.winograd_*``); the NumPy functions here compute the same
transforms, one tile row at a time, and are what the compiled ones are tested against
(to rounding: the compiled input transform, and its adjoint on images of 64 tiles or
more, sum in another order).
``cnnkit.functional.conv`` uses this path where Numba is available (see
``conv._winograd`` for when).
"""

from __future__ import annotations

import types
import weakref

import numpy as np

from ..runtime import get_num_threads, parallel_map, split_range
from .window import Planes, pad_channel_major

# F(2x2, 3x3) with interpolation points 0, 1, -1 (and infinity).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)

# Tile rows per chunk: about this many bytes of V (16 x channels x tiles), so that V and
# M stay in L2 cache (512 KiB a core here) between transform and GEMM. Measured (forward
# + backward, one thread, ms, 64/128/256/512/1024/2048 KiB): 32->32 at 28x28 batch 128
# 216/165/143/112/137/183; 64->64 at 56x56 batch 8 94/124/105/72/140/106; 16->16 at 32x32
# batch 128 84/63/58/58/62/73 (a busy host: +-15%).
CHUNK_BYTES = 512 << 10
# A chunk holds at least this many GEMM multiply-adds (16 x F x C x tiles), however few
# channels: each chunk pays for 16 sgemm calls and four kernel calls (about 60 us at 16
# channels), which small-channel chunks of CHUNK_BYTES did not amortize. Measured
# (forward + backward, 2 threads, 9 alternating rounds, ms, without / with): 16->16 at
# 32x32 batch 128 (512 -> 1536 tiles a chunk) 8.98 / 7.03; 32->32 at 28x28 (196 -> 392)
# 21.5 / 18.5; 32->32 at 16x16 (256 -> 384) 6.25 / 5.75. Chunks of 1 MiB instead (the
# other way to make them bigger) lost for 64 channels: 64->64 at 14x14, 98 -> 245 tiles,
# 14.9 / 15.7, and at 8x8, 128 -> 256 tiles, 4.6 / 4.9; with 6.4 and 8.4 M multiply-adds
# those keep their chunks here.
MIN_CHUNK_MACS = 6 << 20
# Below this many multiply-adds (GEMMs, whole batch) a conv runs in the calling thread.
SERIAL_MACS = 1 << 22
# A forward of fewer tiles than this (batch 1 from 14x14 down; only frozen weights run
# Winograd with so few, conv._winograd) computes V once and splits the filters between the
# worker threads, each doing its 16 GEMMs over all tiles: chunks of tile rows each read all
# of U (16 MiB at 512 channels) for a few tiles. Batch 1, fused ReLU, U kept, 2 threads,
# us, tile rows / filters: 512->512 at 14x14 3704 / 1597, 256->256 at 14x14 535 / 467,
# 512->512 at 7x7 1110 / 621; but 128->128 at 28x28 (196 tiles) 412 / 440.
FILTER_SPLIT_MAX_TILES = 128


# (G g G^T)[i, j] = sum_kl G[i, k] G[j, l] g[k, l]: the filter transform is one matrix,
# kron(G, G) (16, 9), applied to every flattened 3x3 kernel - one GEMM for a whole layer.
G_KRON = np.kron(G, G)


def transform_filter(w: np.ndarray) -> np.ndarray:
    """``U = G g G^T`` for every (filter, channel): (F, C, 3, 3) -> (16, F, C), as U[4i + j]."""
    f, c = w.shape[:2]
    return (G_KRON.astype(w.dtype) @ w.reshape(f * c, 9).T).reshape(16, f, c)


def frozen(w: np.ndarray) -> bool:
    """True when no one can write to w's memory through NumPy: w and every array it is a
    view of are read-only, and the memory is owned by one of them or is an immutable
    ``bytes``. (An owner whose ``flags.writeable`` is set back to True can be written
    again: such an array is not frozen from then on, but a transform made before stays
    cached; assign a new array instead.) ``cnnkit.nn.fuse_for_inference`` freezes the
    weights of the convs it makes inference-only."""
    a = w
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return a is None or isinstance(a, bytes)


# The filter transforms of frozen weights, made once: id(w) -> (weak reference to w, U). An
# entry goes when its array does (the weak reference's callback).
_PREPARED: dict = {}


def prepared_filter(w: np.ndarray) -> np.ndarray:
    """``transform_filter(w)`` of a :func:`frozen` w, computed on its first use and kept
    while w lives (as ONNX Runtime prepacks constant weights). Its cost at batch 1 was more
    than the GEMMs it saves: ResNet-50's 3x3 convs, 2 threads, us, transform / whole conv
    with it / with U kept: 128->128 @28 117 / 708 / 537; 256->256 @14 468 / 1321 / 613
    (im2col: 865); 512->512 @7 2639 / 4849 / 1643 (im2col: 1082)."""
    key = id(w)
    entry = _PREPARED.get(key)
    if entry is not None and entry[0]() is w:
        return entry[1]
    u = transform_filter(w)
    u.flags.writeable = False
    _PREPARED[key] = (weakref.ref(w, lambda _, key=key: _PREPARED.pop(key, None)), u)
    return u


def filter_gradient(du: np.ndarray) -> np.ndarray:
    """``dg = G^T dU G``: (16, F, C) -> (F, C, 3, 3), the adjoint of transform_filter."""
    f, c = du.shape[1:]
    return (du.reshape(16, f * c).T @ G_KRON.astype(du.dtype)).reshape(f, c, 3, 3)


# ---- the four tile transforms in NumPy (twins of _jit.winograd_*) ---------------------

def _tile_row(rr: int, th: int):
    n, ty = divmod(rr, th)
    return n, 2 * ty


def winograd_input(xp, v, r0, r1):
    """``v[c, 4i+j, p] = (B^T d B)[i, j]`` for the 4x4 input tiles d of tile rows
    r0..r1-1 of the padded input xp (C, N, 2*th + 2, 2*tw + 2); v: (C, 16, (r1-r0)*tw)."""
    th, tw = (xp.shape[2] - 2) // 2, (xp.shape[3] - 2) // 2
    bt = BT.astype(xp.dtype)
    for rr in range(r0, r1):
        n, r = _tile_row(rr, th)
        d = np.lib.stride_tricks.sliding_window_view(xp[:, n, r:r + 4], 4, axis=2)[:, :, ::2]  # (C, 4, tw, 4)
        p = (rr - r0) * tw
        v[:, :, p:p + tw] = np.einsum("ik,cktl,jl->cijt", bt, d, bt).reshape(xp.shape[0], 16, tw)


def winograd_output(m, y, b, r0, r1, th, relu):
    """``Y = A^T M A`` (+ b; ReLU) from m (F, 16, >= (r1-r0)*tw) into y (F, N, Ho, Wo)."""
    nf, ho, wo = y.shape[0], y.shape[2], y.shape[3]
    tw = -(-wo // 2)
    at = AT.astype(y.dtype)
    for rr in range(r0, r1):
        n, r = _tile_row(rr, th)
        p = (rr - r0) * tw
        tiles = np.einsum("ai,fijt,bj->ftab", at, m[:, :, p:p + tw].reshape(nf, 4, 4, tw), at)
        rows = tiles.transpose(0, 2, 1, 3).reshape(nf, 2, 2 * tw)  # (F, 2, 2*tw)
        if b.shape[0]:
            rows += b[:, None, None]
        if relu:
            np.maximum(rows, 0, out=rows)
        k = min(2, ho - r)
        y[:, n, r:r + k] = rows[:, :k, :wo]


def winograd_output_adjoint(dy, dm, r0, r1, th):
    """``dM = A dY A^T`` per tile: dy (F, N, Ho, Wo) (zero past Ho, Wo) into dm (F, 16, >= (r1-r0)*tw)."""
    nf, ho, wo = dy.shape[0], dy.shape[2], dy.shape[3]
    tw = -(-wo // 2)
    at = AT.astype(dy.dtype)
    for rr in range(r0, r1):
        n, r = _tile_row(rr, th)
        k = min(2, ho - r)
        g = np.zeros((nf, 2, 2 * tw), dtype=dy.dtype)
        g[:, :k, :wo] = dy[:, n, r:r + k]
        tiles = g.reshape(nf, 2, tw, 2).transpose(0, 2, 1, 3)  # (F, tw, 2, 2)
        p = (rr - r0) * tw
        dm[:, :, p:p + tw] = np.einsum("ai,ftab,bj->fijt", at, tiles, at).reshape(nf, 16, tw)


def winograd_input_adjoint(dv, dx, halo, r0, r1, th, tw, top, left):
    """``dD = B dV B^T`` per tile, summed where tiles overlap, for tile rows r0..r1-1,
    into dx (C, N, H, W), the input's gradient without the padding (padded row/column
    ``top + i``/``left + j`` is dx's i/j). Every dx row the range owns is written. When r0
    is not an image's first tile row, its two padded rows shared with the tile row above
    go to halo (C, 2, 2*tw + 2) instead, for the caller to add when every range is done."""
    nc, h, w = dx.shape[0], dx.shape[2], dx.shape[3]
    bt = BT.astype(dx.dtype)
    for rr in range(r0, r1):
        n, r = _tile_row(rr, th)
        p = (rr - r0) * tw
        d = np.einsum("ik,cijt,jl->cktl", bt, dv[:, :, p:p + tw].reshape(nc, 4, 4, tw), bt)  # (C, 4, tw, 4)
        rows = np.zeros((nc, 4, 2 * tw + 2), dtype=dx.dtype)
        for col in range(4):  # overlapping tiles: columns 2*tx + col
            rows[:, :, col:col + 2 * tw:2] += d[:, :, :, col]
        for k in range(4):
            if k < 2 and rr == r0 and r > 0:
                halo[:, k] = rows[:, k]
            elif 0 <= r + k - top < h:
                if k < 2 and r > 0:
                    dx[:, n, r + k - top] += rows[:, k, left:left + w]
                else:
                    dx[:, n, r + k - top] = rows[:, k, left:left + w]


NUMPY_KERNELS = types.SimpleNamespace(winograd_input=winograd_input, winograd_output=winograd_output,
                                      winograd_output_adjoint=winograd_output_adjoint,
                                      winograd_input_adjoint=winograd_input_adjoint)


# ---- the conv, chunk by chunk ----------------------------------------------------------

def tile_grid(out_hw) -> tuple[int, int]:
    """(th, tw): 2x2 output tiles down and across (the last ones may reach past the output)."""
    return -(-out_hw[0] // 2), -(-out_hw[1] // 2)


def _row_length(k: int) -> int:
    """Columns per row of the V, M, dM and dV buffers for a chunk of k tiles: k rounded up
    to 4 more than a multiple of 8. The GEMMs read each (channels, tiles) slice of a
    (channels, 16, row) buffer at a stride of 16 rows; at k = 128 or 256 that stride is a
    multiple of 4 KiB, so the slice's rows all fall in the same few L1 sets. Measured on
    the AVX-512 host (forward + backward, 2 threads, ms, k vs this length, in-process):
    16->16 at 32x32 batch 128 10.9 / 9.7; 32->32 at 16x16 7.7 / 6.8; 64->64 at 8x8 7.0 /
    6.2; 256->256 at 14x14 batch 8 even. An odd length was as good for the GEMMs and
    slower in the transforms (unaligned rows); 8 more than a multiple of 16 leaves fewer
    L1 sets for 64 channels."""
    return k + (4 - k) % 8


def _rows(buf: np.ndarray, channels: int, k: int) -> np.ndarray:
    """A (channels, 16, _row_length(k)) view of the start of a flat buffer; the chunk's
    tiles are its first k columns."""
    return buf[:16 * channels * _row_length(k)].reshape(channels, 16, _row_length(k))


def _plan(n: int, th: int, tw: int, c: int, f: int, itemsize: int):
    """``(chunks, most, small)``: tile-row ranges of about CHUNK_BYTES of V (or M) each
    (whole images where one fits), at least one per worker thread; the most tiles in one
    of them (the buffers' size); and whether the conv is small enough (SERIAL_MACS) to
    run in the calling thread."""
    rows, per_row = n * th, 16 * max(c, f) * tw * itemsize
    budget, share = CHUNK_BYTES // per_row, -(-rows // get_num_threads())
    least = -(-MIN_CHUNK_MACS // (16 * c * f * tw))  # tile rows that give the GEMMs enough work
    if least > budget:
        budget = max(th, round(least / th) * th) if least >= th else least  # (whole images)
    elif th <= budget < share:  # whole images: an image cut between chunks costs each piece
        budget = budget // th * th  # two more padded rows and shorter loops (32->32 at 28x28
        # batch 128, 18 tile rows a chunk -> 14: forward + backward 20.4 -> 19.2 ms; the
        # cnn_bn step 0.97 in-process). Not where the thread share decides (small batches).
    step = max(1, min(budget, share))
    chunks = [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]
    return chunks, min(step, rows) * tw, 16 * f * c * rows * tw < SERIAL_MACS


# From this many input channels the compiled input transform reads x itself
# (_jit.winograd_input_from_x: padding as zeros where a tile leaves x), instead of a
# padded copy that the forward writes first and the backward keeps (window.Planes keeps x by
# reference, as BatchNorm and the 1x1 conv do). Measured (forward + backward, 2 threads,
# 15 alternating rounds in one process, ms, padded copy / from x, same bits): 32->32 at
# 28x28 batch 128 16.7 / 15.7, 64->64 at 14x14 15.2 / 13.8, 32->32 at 16x16 5.86 / 5.54,
# 64->64 at 56x56 batch 8 12.9 / 12.4, 128->128 at 28x28 batch 8 11.9 / 11.5, 256->256 at
# 14x14 batch 8 16.1 / 15.7, 64->64 at 8x8 batch 128 even; but 16->16 at 32x32 batch 128
# 7.3-7.6 / 7.6-7.8 (the edge tiles' checks cost the kernel alone 24 -> 29 us a chunk at
# 32 channels, 28x28; in place the pass it saves outweighs them from 32 channels on).
FROM_X_MIN_CHANNELS = 32


def _input(kernels, src, v, r0, r1, top, left, th, tw):
    """The input transform of tile rows r0..r1-1 into v, from a padded copy or from x
    (a ``window.Planes``, placed at (top, left) of the (2*th + 2, 2*tw + 2) padded grid)."""
    if isinstance(src, Planes):
        h, wd = src.x.shape[2:]
        kernels.winograd_input_from_x(src.flat, src.sn, src.sc, h, wd, top, left, th, tw, v, r0, r1)
    else:
        kernels.winograd_input(src, v, r0, r1)


def forward(x, w, b, pads, out_hw, relu=False, kernels=NUMPY_KERNELS, u=None):
    """y (F, N, Ho, Wo) channel-major, and (xp, U) for :func:`backward`: xp the input
    zero-padded to the tile grid, (C, N, 2*th + 2, 2*tw + 2), or (compiled kernels, from
    FROM_X_MIN_CHANNELS input channels) x itself as a ``window.Planes``. ``u``: w's filter
    transform if the caller has it (:func:`prepared_filter`)."""
    n, c = x.shape[:2]
    f = w.shape[0]
    th, tw = tile_grid(out_hw)
    if c >= FROM_X_MIN_CHANNELS and hasattr(kernels, "winograd_input_from_x"):
        xp = Planes(x)
    else:
        xp = np.ascontiguousarray(pad_channel_major(x, pads, (2 * th + 2, 2 * tw + 2)))
    u = transform_filter(w) if u is None else u
    y = np.empty((f, n) + tuple(out_hw), dtype=x.dtype)
    bias = b if b is not None else np.empty(0, dtype=x.dtype)
    chunks, most, small = _plan(n, th, tw, c, f, x.dtype.itemsize)
    if n * th * tw < FILTER_SPLIT_MAX_TILES:  # few tiles: V once, the filters split between the workers
        rows = n * th
        k = rows * tw
        v = _rows(np.empty(16 * c * _row_length(k), dtype=x.dtype), c, k)
        _input(kernels, xp, v, 0, rows, pads[0], pads[2], th, tw)

        def run_filters(parts):
            for f0, f1 in parts:
                m = _rows(np.empty(16 * (f1 - f0) * _row_length(k), dtype=x.dtype), f1 - f0, k)
                np.matmul(u[:, f0:f1], v[:, :, :k].transpose(1, 0, 2), out=m[:, :, :k].transpose(1, 0, 2))
                kernels.winograd_output(m, y[f0:f1], bias[f0:f1], 0, rows, th, relu)
        parallel_map(run_filters, split_range(f, 1 if small else get_num_threads()), small=small)
        return y, (xp, u)

    def run(parts):  # each worker: its own V (C, 16, k) and M (F, 16, k) buffers
        v, m = np.empty(16 * c * _row_length(most), dtype=x.dtype), np.empty(16 * f * _row_length(most), dtype=x.dtype)
        for r0, r1 in parts:
            k = (r1 - r0) * tw
            vk, mk = _rows(v, c, k), _rows(m, f, k)
            _input(kernels, xp, vk, r0, r1, pads[0], pads[2], th, tw)
            np.matmul(u, vk[:, :, :k].transpose(1, 0, 2), out=mk[:, :, :k].transpose(1, 0, 2))  # 16 (F, C) @ (C, k)
            kernels.winograd_output(mk, y, bias, r0, r1, th, relu)
    parallel_map(run, chunks, small=small)
    return y, (xp, u)


def backward(dy_cn, saved, x_shape, pads, need_dx=True, need_dw=True, kernels=NUMPY_KERNELS):
    """``(dx, dw)`` from dy as (F, N, Ho, Wo) (any strides): dx an (N, C, H, W) view of
    dense channel-major memory (None unless need_dx), dw (F, C, 3, 3) (None unless need_dw)."""
    xp, u = saved
    n, c, h, wd = x_shape
    f, ho, wo = dy_cn.shape[0], dy_cn.shape[2], dy_cn.shape[3]
    th, tw = tile_grid((ho, wo))
    top, _, left, _ = pads
    dx_cn = np.empty((c, n, h, wd), dtype=dy_cn.dtype) if need_dx else None
    chunks, most, small = _plan(n, th, tw, c, f, dy_cn.dtype.itemsize)
    ut = u.transpose(0, 2, 1)  # (16, C, F)
    halos, no_halo = {}, np.empty((0, 2, 0), dtype=dy_cn.dtype)  # first tile rows below a chunk boundary

    def run(parts):  # each worker: its own buffers and its own share of dU
        dtype = dy_cn.dtype
        cap = _row_length(most)
        v = np.empty(16 * c * cap if need_dw else 0, dtype=dtype)
        dm, dv = np.empty(16 * f * cap, dtype=dtype), np.empty(16 * c * cap if need_dx else 0, dtype=dtype)
        du = np.zeros((16, f, c), dtype=dtype) if need_dw else None
        for r0, r1 in parts:
            k = (r1 - r0) * tw
            dmk = _rows(dm, f, k)
            kernels.winograd_output_adjoint(dy_cn, dmk, r0, r1, th)
            if need_dw:
                vk = _rows(v, c, k)
                _input(kernels, xp, vk, r0, r1, top, left, th, tw)
                du += np.matmul(dmk[:, :, :k].transpose(1, 0, 2), vk[:, :, :k].transpose(1, 2, 0))  # 16 (F, k) @ (k, C)
            if need_dx:
                dvk = _rows(dv, c, k)
                np.matmul(ut, dmk[:, :, :k].transpose(1, 0, 2), out=dvk[:, :, :k].transpose(1, 0, 2))  # 16 (C, F) @ (F, k)
                if r0 % th:  # r0 starts inside an image: its top two rows go to a halo
                    halos[r0] = np.empty((c, 2, 2 * tw + 2), dtype=dtype)
                kernels.winograd_input_adjoint(dvk, dx_cn, halos.get(r0, no_halo), r0, r1, th, tw, top, left)
        return du
    parts = parallel_map(run, chunks, small=small)
    dx = dw = None
    if need_dx:
        for r0, halo in halos.items():
            img, ty = divmod(r0, th)
            for k in range(2):
                if 0 <= 2 * ty + k - top < h:
                    dx_cn[:, img, 2 * ty + k - top] += halo[:, k, left:left + wd]
        dx = dx_cn.transpose(1, 0, 2, 3)
    if need_dw:
        dw = filter_gradient(sum(parts[1:], parts[0]))
    return dx, dw

"""The Numba-compiled kernels (cnnkit.functional._jit) and their switch.

The random sweeps of test_conv.py run whichever path is on (the compiled one where
Numba is installed, which CI installs); here, with ``jit_mode`` parametrized (the
switch in conftest.py):
- the sweeps' depthwise configurations and random small-K (direct) ones, with the JIT
  on and off, against PyTorch, and the depthwise forward's bits both ways;
- the shapes the sweeps cannot reach: wide stride-1 rows (the row kernel), batches of
  several flat blocks, dilation, channel multipliers staying on the GEMM path, the
  gradients one at a time, two threads; the ReLU forward in several layouts;
- the switch: set_jit, CNNKIT_JIT=0, and that ``import cnnkit`` does not import Numba.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit import runtime
from cnnkit.functional import conv
from cnnkit.functional.conv import conv2d_backward, conv2d_forward
from cnnkit.functional.window import Planes
from tests.functional import test_conv as T

numba = pytest.importorskip("numba")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel:UserWarning")


def _is_depthwise(cfg):
    return cfg["groups"] == cfg["c_in"] == cfg["c_out"] and (cfg["kernel"], cfg["stride"], cfg["pads"]) != \
        ((1, 1), (1, 1), (0, 0, 0, 0))


DEPTHWISE = [c for c in T.TORCH_CONFIGS + T.NAIVE_CONFIGS if _is_depthwise(c)]


def _is_direct(cfg):
    kh, kw = cfg["kernel"]
    return (cfg["groups"] == 1 and cfg["stride"] == (1, 1) and not _is_depthwise(cfg)
            and ((kh, kw), cfg["pads"]) != ((1, 1), (0, 0, 0, 0)) and cfg["c_in"] * kh * kw <= 32)


def _drawn_configs(count, keep, seed):
    """``count`` random configurations of the test_conv sweeps' kind for which ``keep(cfg)``
    holds (drawn with the sweeps' generator and kept when they qualify)."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < count:
        cfg = T.draw_conv_config(rng, small=bool(rng.random() < 0.5))
        if keep(cfg):
            out.append(cfg)
    return out


DIRECT = [c for c in T.TORCH_CONFIGS + T.NAIVE_CONFIGS if _is_direct(c)] + _drawn_configs(130, _is_direct, 20261126)


def test_sweeps_hold_enough_direct_configurations():
    assert len(DIRECT) >= 60
    assert any(c["dilation"] != (1, 1) for c in DIRECT) and any(c["flip"] for c in DIRECT)
    assert any(c["c_in"] > 1 for c in DIRECT) and any(c["n"] == 0 for c in DIRECT)
    for kw in (3, 5):  # LeNet's and the 3x3 stems' kernels, dilated too
        assert any(c["kernel"][1] == kw and c["dilation"][1] > 1 for c in DIRECT)
        assert any(c["kernel"][1] == kw and c["c_in"] > 1 for c in DIRECT)


@pytest.mark.parametrize("f", [1, 7, 8, 9, 17, 32])
@pytest.mark.parametrize("c,k,dil,pad", [(1, 3, 1, 1), (1, 5, 1, 2), (3, 3, 2, 2), (1, 5, 2, 0), (2, 4, 1, 1)])
def test_direct_forward_filter_blocks_sum_taps_in_order(f, c, k, dil, pad):
    """The direct forward's blocks of eight filters (DIRECT_FILTER_BLOCK; one, a partial
    one, several; kernel rows of 3 and 5 taps in one pass, 4 a tap at a time) give each
    output its taps summed in (c, p, q) order, then the bias: the bits of that sum written
    out in NumPy float32, with a fused ReLU too."""
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    rng = np.random.default_rng(f * 100 + c * 10 + k + dil)
    n, h = 3, 11
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = h + 2 * pad - dil * (k - 1)
    ref = None
    for ci in range(c):
        for p in range(k):
            for q in range(k):
                tap = xp[:, None, ci, p * dil:p * dil + ho, q * dil:q * dil + ho] * w[None, :, ci, p, q, None, None]
                ref = tap if ref is None else ref + tap
    assert conv._direct(conv._geometry((n, c, h, h), (f, c, k, k), (pad,) * 4, (1, 1), (dil, dil), (ho, ho), 1),
                        False) is not None
    np.testing.assert_array_equal(conv2d_forward(x, w, None, 1, pad, dil)[0], ref)
    with_bias = ref + b[None, :, None, None]
    np.testing.assert_array_equal(conv2d_forward(x, w, b, 1, pad, dil)[0], with_bias)
    np.testing.assert_array_equal(conv2d_forward(x, w, b, 1, pad, dil, relu=True)[0],
                                  np.where(with_bias <= 0, np.float32(0), with_bias))


def _sweep_matches_torch(configs):
    for cfg in configs:
        for dtype in (np.float32, np.float64):
            x, w, b, dy = T.conv_arrays(cfg, dtype)
            T.check_against(cfg, dtype, T.run_fast(cfg, x, w, b, dy), T.torch_conv(cfg, x, w, b, dy),
                            T.abs_scales(cfg, x, w, b, dy))


@pytest.mark.parametrize("jit_mode", [True, False])
def test_direct_sweep_matches_torch(jit_mode):
    """The sweeps' small-K convs (compiled direct path with the JIT on, im2col off)."""
    _sweep_matches_torch(DIRECT)


def _geo(x, w, pads, stride=(1, 1), g=1, dil=(1, 1)):
    """The conv geometry of input shape x, weight shape w (for the path choice tests)."""
    from cnnkit.functional.window import output_hw
    return conv._Geometry(x, w, pads, stride, dil, output_hw(x[2:], w[2:], stride, dil, pads, "t"), g)


def test_direct_choice():
    """Direct: stride 1, one group, not 1x1, K = C*kH*kW <= 32 (LeNet's C1, a 3-channel
    3x3); im2col for LeNet's C2 (K = 150), stride 2, groups, 1x1."""
    geo = _geo
    assert conv._direct(geo((64, 1, 28, 28), (6, 1, 5, 5), (2, 2, 2, 2)), False) is not None
    assert conv._direct(geo((8, 3, 32, 32), (16, 3, 3, 3), (1, 1, 1, 1)), False) is not None
    assert conv._direct(geo((64, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)), False) is None
    assert conv._direct(geo((8, 3, 32, 32), (16, 3, 3, 3), (1, 1, 1, 1), (2, 2)), False) is None
    assert conv._direct(geo((8, 4, 32, 32), (8, 2, 3, 3), (1, 1, 1, 1), g=2), False) is None
    assert conv._direct(geo((8, 16, 32, 32), (16, 16, 1, 1), (0, 0, 0, 0)), False) is None
    previous = runtime.set_jit(False)
    try:
        assert conv._direct(geo((64, 1, 28, 28), (6, 1, 5, 5), (2, 2, 2, 2)), False) is None
    finally:
        runtime.set_jit(previous)


def _taps_in_order(x, w, stride, pads):
    """Each output's taps summed in (c, p, q) order in float32 (products rounded, then
    sums), as the direct kernels do: (N, F, Ho, Wo)."""
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
    ho, wo = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    ref = None
    for ci in range(x.shape[1]):
        for p in range(kh):
            for q in range(kw):
                win = xp[:, None, ci, p:p + stride * (ho - 1) + 1:stride, q:q + stride * (wo - 1) + 1:stride]
                tap = win * w[None, :, ci, p, q, None, None]
                ref = tap if ref is None else ref + tap
    return ref


def _count_calls(monkeypatch, name):
    """Count the calls of the compiled kernel ``name`` (so that a test sees its path taken)."""
    jit, calls = runtime.jit_kernels(), []
    kernel = getattr(jit, name)
    monkeypatch.setattr(jit, name, lambda *a: (calls.append(1), kernel(*a))[1])
    return calls


@pytest.mark.parametrize("f", [1, 8, 13, 32])
@pytest.mark.parametrize("n,c,hw,k,pads", [
    (1, 3, (64, 64), (3, 3), (1, 1, 1, 1)),    # MobileNet's stem, smaller
    (2, 3, (65, 67), (3, 3), (0, 1, 0, 1)),    # 'same' at stride 2 on odd sizes: the extra pixel after
    (1, 1, (66, 70), (5, 5), (2, 2, 2, 2)),    # kernel rows of 3 + 2 taps
    (3, 2, (68, 64), (2, 2), (0, 0, 0, 0)),    # even kernel, no padding
    (1, 3, (64, 71), (1, 7), (0, 0, 3, 3)),    # a 1x7 row: 3 + 3 + 1 taps
    (1, 2, (72, 66), (4, 3), (3, 0, 1, 2)),    # uneven padding on every side
])
@pytest.mark.parametrize("band", [16384, 100], ids=["whole", "bands"])
def test_direct_s2_forward_sums_taps_in_order(monkeypatch, f, n, c, hw, k, pads, band):
    """The stride-2 direct forward (inference: a fused ReLU; the image as four flat
    phases, _jit.conv_direct_s2_forward) gives each output its taps summed in (c, p, q)
    order, then the bias, then the ReLU (or ReLU6): the bits of that sum written out in
    NumPy float32, for blocks of eight filters, partial ones, several images and kernels
    of 1-7 columns; the output rows whole or in bands of ``band`` values (DIRECT_S2_BAND:
    100 makes bands of one or two rows)."""
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    monkeypatch.setattr(runtime.jit_kernels(), "DIRECT_S2_BAND", band)
    rng = np.random.default_rng(f * 1000 + n * 100 + c * 10 + k[1])
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    w = rng.standard_normal((f, c) + k).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    calls = _count_calls(monkeypatch, "conv_direct_s2_forward")
    with_bias = _taps_in_order(x, w, 2, pads) + b[None, :, None, None]
    relu = np.where(with_bias <= 0, np.float32(0), with_bias)
    np.testing.assert_array_equal(conv2d_forward(x, w, b, 2, pads, relu=True)[0], relu)
    np.testing.assert_array_equal(conv2d_forward(x, w, b, 2, pads, relu=True, relu_max=6)[0],
                                  np.minimum(relu, np.float32(6)))
    np.testing.assert_array_equal(conv2d_forward(x, w, None, 2, pads, relu=True)[0],
                                  np.maximum(_taps_in_order(x, w, 2, pads), np.float32(0)))
    assert len(calls) == (0 if c == f == 1 else 3)  # (1 -> 1 channel is depthwise: its own kernels)


def test_direct_s2_layouts_threads_nan_and_float64(monkeypatch):
    """The same bits from a channel-major or strided input as from NCHW and on one or two
    threads (the units of eight filters split); NaN and inf stay in the windows that read
    them (NaN through the ReLU); float64 against PyTorch; the plain forward (no fused
    ReLU, a backward may follow) keeps the im2col path."""
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 3, 96, 80)).astype(np.float32)
    w = rng.standard_normal((20, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    calls = _count_calls(monkeypatch, "conv_direct_s2_forward")
    want = conv2d_forward(x, w, b, 2, 1, relu=True)[0]
    channel_major = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    strided = np.zeros((3, 3, 96, 160), np.float32)[:, :, :, ::2]
    strided[...] = x
    for layout in (channel_major, strided):
        np.testing.assert_array_equal(conv2d_forward(layout, w, b, 2, 1, relu=True)[0], want)
    for threads in (1, 2):
        runtime.set_num_threads(threads)
        try:
            np.testing.assert_array_equal(conv2d_forward(x, w, b, 2, 1, relu=True)[0], want)
        finally:
            runtime.set_num_threads(1)
    assert len(calls) == 5
    bad = x.copy()
    bad[0, 1, 10, 11], bad[2, 0, 50, 0] = np.nan, np.inf
    got = conv2d_forward(bad, w, b, 2, 1, relu=True)[0]
    ref = _taps_in_order(bad, w, 2, (1, 1, 1, 1)) + b[None, :, None, None]
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(got, np.where(ref <= 0, np.float32(0), ref))
    assert np.isnan(got[0, :, 5, 5]).all() and np.isnan(got[0, :, 5, 6]).all()
    assert np.isnan(got[2]).any() or np.isinf(got[2]).any()
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    ref64 = torch.relu(TF.conv2d(torch.from_numpy(x64), torch.from_numpy(w64), torch.from_numpy(b64), 2, 1)).numpy()
    np.testing.assert_allclose(conv2d_forward(x64, w64, b64, 2, 1, relu=True)[0], ref64, rtol=1e-12, atol=1e-12)
    before = len(calls)
    y, cache = conv2d_forward(x, w, b, 2, 1)
    assert len(calls) == before and cache is not None
    np.testing.assert_allclose(np.maximum(y, 0), want, rtol=1e-5, atol=1e-5)


def test_direct_s2_choice():
    """Stride-2 direct: a fused ReLU's conv with one group, no dilation, not 1x1, K =
    C*kH*kW <= 32 and 32x32 outputs or more (MobileNet's 3->32 3x3 stem at 224); im2col
    for ResNet's 7x7 stem (K = 147), small outputs, stride 1 or (2, 1), dilation, groups,
    depthwise, 1x1, and with the JIT off."""
    geo = lambda x, w, pads, stride=(2, 2), g=1, dil=(1, 1): _geo(x, w, pads, stride, g, dil)
    assert conv._direct_s2(geo((1, 3, 224, 224), (32, 3, 3, 3), (1, 1, 1, 1)), False) is not None
    assert conv._direct_s2(geo((8, 1, 64, 64), (16, 1, 5, 5), (2, 2, 2, 2)), False) is not None
    assert conv._direct_s2(geo((1, 3, 224, 224), (64, 3, 7, 7), (3, 3, 3, 3)), False) is None
    assert conv._direct_s2(geo((16, 3, 32, 32), (16, 3, 3, 3), (1, 1, 1, 1)), False) is None
    assert conv._direct_s2(geo((1, 3, 64, 64), (16, 3, 3, 3), (1, 1, 1, 1), (1, 1)), False) is None
    assert conv._direct_s2(geo((1, 3, 64, 64), (16, 3, 3, 3), (1, 1, 1, 1), (2, 1)), False) is None
    assert conv._direct_s2(geo((1, 3, 80, 80), (16, 3, 3, 3), (2, 2, 2, 2), dil=(2, 2)), False) is None
    assert conv._direct_s2(geo((1, 4, 64, 64), (8, 2, 3, 3), (1, 1, 1, 1), g=2), False) is None
    assert conv._direct_s2(geo((1, 3, 64, 64), (3, 1, 3, 3), (1, 1, 1, 1), g=3), True) is None
    assert conv._direct_s2(geo((1, 16, 64, 64), (16, 16, 1, 1), (0, 0, 0, 0)), False) is None
    previous = runtime.set_jit(False)
    try:
        assert conv._direct_s2(geo((1, 3, 224, 224), (32, 3, 3, 3), (1, 1, 1, 1)), False) is None
    finally:
        runtime.set_jit(previous)


@pytest.mark.parametrize("jit_mode", [True])
@pytest.mark.parametrize("need", ["both", "dx", "dw"])
def test_direct_two_threads_and_one_gradient(jit_mode, need):
    """Images split over two threads give the same bits as one thread (dw: the ranges'
    float64 shares summed); need_dx / need_dw alone give the same as both."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((9, 3, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    out = []
    for threads in (1, 2):
        runtime.set_num_threads(threads)
        try:
            y, cache = conv2d_forward(x, w, None, 1, 1)
            dy = np.asarray(np.random.default_rng(12).standard_normal(y.shape), np.float32)
            got = conv2d_backward(dy, cache, need_dx=need != "dw", need_dw=need != "dx")
            out.append((y,) + got[:2])
        finally:
            runtime.set_num_threads(1)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    for a, b in zip(out[0][1:], out[1][1:]):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    both = conv2d_backward(dy, cache)
    if need == "dx":
        assert out[1][2] is None and np.array_equal(out[1][1], both[0])
    if need == "dw":
        assert out[1][1] is None and np.allclose(out[1][2], both[1], rtol=1e-6, atol=1e-6)


def test_sweeps_hold_enough_depthwise_configurations():
    assert len(DEPTHWISE) >= 60
    assert any(c["stride"] != (1, 1) for c in DEPTHWISE) and any(c["stride"] == (1, 1) for c in DEPTHWISE)
    assert any(c["dilation"] != (1, 1) for c in DEPTHWISE) and any(c["flip"] for c in DEPTHWISE)


def test_jit_is_used_by_default_where_numba_is_installed():
    """So that the sweeps in test_conv.py test the compiled path."""
    assert runtime.jit_kernels() is not None


@pytest.mark.parametrize("jit_mode", [True, False])
def test_depthwise_sweep_matches_torch(jit_mode):
    _sweep_matches_torch(DEPTHWISE)


def test_depthwise_forward_same_bits_both_ways():
    """The compiled forward sums the same float32 products in the same order as NumPy."""
    for cfg in DEPTHWISE:
        x, w, b, dy = T.conv_arrays(cfg, np.float32)
        ys = []
        for on in (True, False):
            previous = runtime.set_jit(on)
            try:
                ys.append(T.run_fast(cfg, x, w, b, dy)[0])
            finally:
                runtime.set_jit(previous)
        assert np.array_equal(ys[0], ys[1]), cfg


def _torch_depthwise(x, w, b, dy, stride, padding, dilation):
    xt, wt = torch.from_numpy(np.array(x)).requires_grad_(), torch.from_numpy(np.array(w)).requires_grad_()
    bt = None if b is None else torch.from_numpy(np.array(b)).requires_grad_()
    y = TF.conv2d(xt, wt, bt, stride, padding, dilation, w.shape[0])
    y.backward(torch.from_numpy(np.array(dy)))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


SHAPES = [  # (N, C, H, W, kernel, stride, padding, dilation): what the sweeps do not reach
    (2, 3, 20, 40, 3, 1, 1, 1),       # 40 wide: the row kernel at stride 1
    (3, 4, 30, 33, (3, 5), 1, (2, 4), (2, 2)),  # wide, dilated, non-square
    (20, 5, 14, 14, 3, 1, 1, 1),      # 20 padded 16x16 images: two flat blocks
    (37, 2, 7, 7, 3, 1, 1, 1),        # 9x9: 50 images per block, one partial
    (5, 6, 9, 9, 5, 1, 4, 2),         # padding wider than the kernel's reach needs
    (2, 3, 29, 31, 3, 2, 1, 1),       # stride 2, wide
    (2, 3, 13, 12, 3, (1, 2), 0, 1),  # stride 1 on rows, 2 on columns
    (2, 3, 40, 41, (3, 4), 3, 2, (1, 2)),  # stride 3: three column phases, dilated
    (1, 8, 112, 112, 3, 1, 1, 1),     # MobileNet's first depthwise
]


@pytest.mark.parametrize("jit_mode", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_shapes_match_torch_float64(jit_mode, shape, bias):
    n, c, h, wd, k, stride, padding, dilation = shape
    k = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(hash((shape, bias)) % 2**32)
    x = T.make_array(rng, (n, c, h, wd), "transposed", np.float64)
    w = rng.standard_normal((c, 1) + k)
    b = rng.standard_normal(c) if bias else None
    y, cache = conv2d_forward(x, w, b, stride, padding, dilation, c)
    dy = rng.standard_normal(y.shape)
    got = (y, *conv2d_backward(dy, cache))
    ref = _torch_depthwise(x, w, b, dy, stride, padding, dilation)
    for name, g, r in zip(("y", "dx", "dw", "db"), got, ref):
        if r is None:
            assert g is None
            continue
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-11, err_msg=f"{name} for {shape}")


@pytest.mark.parametrize("jit_mode", [True])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_one_gradient_at_a_time(jit_mode, stride):
    """need_dx / need_dw alone give the same bits as both together, and None for the other."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 11, 11)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    y, cache = conv2d_forward(x, w, None, stride, 1, 1, 6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, _ = conv2d_backward(dy, cache)
    dx_only = conv2d_backward(dy, cache, need_dw=False)
    dw_only = conv2d_backward(dy, cache, need_dx=False)
    assert dx_only[1] is None and dw_only[0] is None
    assert np.array_equal(dx_only[0], dx) and np.array_equal(dw_only[1], dw)


@pytest.mark.parametrize("jit_mode", [True])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_two_threads_same_bits(jit_mode, stride):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 64, 30, 30)).astype(np.float32)
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    dy = None
    results = []
    for threads in (1, 2):
        runtime.set_num_threads(threads)
        try:
            y, cache = conv2d_forward(x, w, None, stride, 1, 1, 64)
            dy = rng.standard_normal(y.shape).astype(np.float32) if dy is None else dy
            results.append((y, *conv2d_backward(dy, cache)[:2]))
        finally:
            runtime.set_num_threads(1)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("jit_mode", [True])
@pytest.mark.parametrize("k,stride,padding", [(3, 2, 1), (5, 1, 2), (3, 1, 0)])
def test_depthwise_cache_immune_to_in_place_changes(jit_mode, k, stride, padding):
    """Where the forward pads x into a copy (stride 2, 5x5, no padding), the backward reads
    that copy, not x. (A 3x3 'same' conv at stride 1 keeps x itself, as the 1x1 and Winograd
    convs and a training BatchNorm do: see conv2d_forward.)"""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 9, 9))
    w = rng.standard_normal((4, 1, k, k))
    y, cache = conv2d_forward(x, w, None, stride, padding, 1, 4)
    assert not isinstance(cache[1], Planes)
    dy = rng.standard_normal(y.shape)
    ref = _torch_depthwise(x, w, None, dy, stride, padding, 1)
    x[...] = 0.0
    dx, dw, _ = conv2d_backward(dy, cache)
    np.testing.assert_allclose(dw, ref[2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, ref[1], rtol=1e-12, atol=1e-12)


def _strided_mode(cfg):
    """True when the sweeps' configuration builds its columns in strided mode, image by
    image (the compiled im2col_strided / col2im_strided)."""
    x, w, b, _ = T.conv_arrays(cfg, np.float64)
    cache = conv2d_forward(x, w, b, stride=cfg["stride_arg"], padding=cfg["padding_arg"],
                           dilation=cfg["dilation_arg"], groups=cfg["groups"])[1]
    geo = cache[0]
    return not cache[7] and geo.mode == "strided" and not geo.batch_inner and not isinstance(cache[1], conv._WinogradSaved)


STRIDED = [c for c in T.TORCH_CONFIGS[::2] if _strided_mode(c)]


def test_sweeps_hold_enough_strided_configurations():
    assert len(STRIDED) >= 60
    assert any(c["stride"] != (1, 1) for c in STRIDED) and any(c["dilation"] != (1, 1) for c in STRIDED)
    assert any(1 < c["groups"] for c in STRIDED)


@pytest.mark.parametrize("jit_mode", [True, False])
def test_strided_im2col_sweep_matches_torch(jit_mode):
    """Half of the PyTorch sweep's strided-mode convs, with compiled and NumPy im2col/col2im."""
    _sweep_matches_torch(STRIDED)


def _assert_same_bits_both_ways(cfg):
    """y and every gradient of ``cfg`` (float32) with the JIT on and off, to the bit."""
    x, w, b, dy = T.conv_arrays(cfg, np.float32)
    out = {}
    for mode in (True, False):
        previous = runtime.set_jit(mode)
        try:
            out[mode] = T.run_fast(cfg, x, w, b, dy)
        finally:
            runtime.set_jit(previous)
    for a, r in zip(out[True], out[False]):
        assert (a is None and r is None) or np.array_equal(a, r), cfg


def test_strided_im2col_same_bits_both_ways():
    """The compiled copies and adds run in NumPy's order: y and every gradient agree to the bit."""
    for cfg in STRIDED[:40]:
        _assert_same_bits_both_ways(cfg)


def test_set_jit_switches_and_validates():
    previous = runtime.set_jit(False)
    try:
        assert runtime.jit_kernels() is None
        assert runtime.set_jit(True) is False
        assert runtime.jit_kernels() is not None
        with pytest.raises(ValueError, match="set_jit"):
            runtime.set_jit("yes")
    finally:
        runtime.set_jit(previous)


def _run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env}, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_environment_turns_jit_off_and_import_does_not_load_numba():
    code = ("import sys, cnnkit; from cnnkit import runtime; print('numba' in sys.modules, "
            "runtime.jit_kernels() is None)")
    assert _run(code, CNNKIT_JIT="0") == "False True"
    assert _run(code, CNNKIT_JIT="1") == "False False"


@pytest.mark.parametrize("layout", ["nchw", "channel_major", "strided", "2d", "0-size"])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_forward_same_bits_both_ways_and_torch(layout, inplace, dtype):
    """The compiled ReLU (dense memory) and np.maximum (everything else) give the same
    bits, keep NaN and infinities as PyTorch does, and the output keeps x's layout."""
    from cnnkit.functional.activation import relu_forward
    rng = np.random.default_rng(9)
    base = rng.standard_normal((6, 5, 7, 9)).astype(dtype)
    base[0, 0, 0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    x = {"nchw": base, "channel_major": np.ascontiguousarray(base.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3),
         "strided": base[:, ::2], "2d": base.reshape(30, 63), "0-size": base[:0]}[layout]
    ref = torch.relu(torch.from_numpy(np.array(x))).numpy()
    outs = []
    for on in (True, False):
        previous = runtime.set_jit(on)
        try:
            xin = x.copy(order="K") if inplace else x
            y = relu_forward(xin, inplace)[0]
            assert (y is xin) == inplace and (y.size == 0 or layout == "strided" or y.strides == xin.strides)
            outs.append(y)
        finally:
            runtime.set_jit(previous)
    assert np.array_equal(outs[0], outs[1], equal_nan=True)
    assert np.array_equal(outs[0], ref, equal_nan=True)


@pytest.mark.parametrize("relu", [False, True], ids=["no-relu", "relu"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("kind", ["shift", "strided", "pointwise", "groups"])
def test_bias_relu_epilogue_same_bits_both_ways(kind, bias, relu):
    """The compiled epilogue of the column path (bias and fused ReLU in one pass) gives
    NumPy's bits, NaN and -0.0 included, on every column mode and with groups."""
    rng = np.random.default_rng(7)
    c, f, k, stride, pad, groups = {"shift": (5, 6, 3, 1, 1, 1), "strided": (5, 6, 3, 2, 1, 1),
                                    "pointwise": (5, 6, 1, 1, 0, 1), "groups": (6, 4, 3, 1, 1, 2)}[kind]
    x = rng.standard_normal((3, c, 16, 16)).astype(np.float32)
    x[0, 0, 2, 2], x[1, 1, 4, 4] = np.nan, -0.0
    w = rng.standard_normal((f, c // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32) if bias else None
    geo = conv._geometry(x.shape, w.shape, (pad,) * 4, (stride, stride), (1, 1),
                         ((16 + 2 * pad - k) // stride + 1,) * 2, groups)
    assert geo.mode == ("pointwise" if kind == "pointwise" else "strided" if kind == "strided" else "shift")
    out = {}
    for mode in (True, False):
        previous = runtime.set_jit(mode)
        try:
            out[mode] = conv2d_forward(x, w, b, stride, pad, groups=groups, relu=relu)[0]
        finally:
            runtime.set_jit(previous)
    assert np.isnan(out[True]).any()
    np.testing.assert_array_equal(out[True], out[False])
    assert np.array_equal(np.signbit(out[True]), np.signbit(out[False]))
    ref = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                    stride, pad, groups=groups)
    ref = (torch.relu(ref) if relu else ref).numpy()
    np.testing.assert_allclose(out[True], ref, rtol=1e-5, atol=1e-5)


DW_FUSED_SHAPES = [  # (N, C, H, W, kernel, stride, padding): the fused-ReLU (no padded copy) paths
    (1, 6, 14, 14, 3, 1, 1),    # 3x3 s1 padded by 1: flat planes with column masks (depthwise_3x3_same)
    (2, 5, 7, 9, 3, 1, 1),      # two images, 9 wide
    (1, 4, 32, 32, 3, 1, 1),    # 32 wide
    (3, 2, 13, 15, 3, 1, 1),    # odd sizes
    (1, 4, 40, 33, 3, 1, 1),
    (1, 3, 1, 1, 3, 1, 1),      # one pixel: every tap but the centre is padding
    (2, 2, 5, 1, 3, 1, 1),      # one column: both masks on every output
    (1, 2, 1, 6, 3, 1, 1),      # one row
    (1, 24, 112, 112, 3, 1, 1),  # 301K outputs: split over the worker threads
    (1, 6, 14, 14, 3, 1, (1, 2)),  # 3x3 s1 padded otherwise: the padded-row kernels
    (3, 2, 13, 15, 3, 1, (2, 1)),
    (1, 4, 14, 14, 3, 2, 1),    # 3x3 s2 of even sizes padded by 1: even/odd split of flat planes
    (2, 3, 8, 12, 3, 2, 1),     # (depthwise_3x3_s2_same), all positions of a plane at once
    (1, 2, 2, 2, 3, 2, 1),      # one output
    (1, 3, 2, 10, 3, 2, 1),     # one output row
    (1, 3, 14, 16, 3, 2, (1, 0, 1, 0)),  # no padding at the bottom and right (never read)
    (1, 2, 12, 80, 3, 2, 1),    # 40 wide: row by row into y
    (2, 96, 56, 56, 3, 2, 1),   # 150K outputs: split over the worker threads
    (3, 4, 15, 15, 3, 2, 1),    # 3x3 s2, odd size (the padded image is cut), 8 wide: column phases
    (2, 3, 13, 13, 3, 2, 1),    # 3x3 s2, 7 wide: the row kernel
    (2, 3, 33, 37, 3, 2, 1),    # 3x3 s2, outputs 16+ wide: even/odd column phases
    (1, 3, 34, 40, 3, 2, 0),    # the same without padding
    (1, 2, 36, 35, 3, 2, (1, 2)),  # and with 2 columns of padding (one phase starts later)
    (1, 3, 12, 12, 3, 1, (0, 2)),  # 3x3 with padding on one axis only
    (2, 3, 11, 13, 5, 1, 2),    # 5x5: the general kernels, in a buffer of their own
    (2, 3, 11, 13, 3, 2, 0),    # no padding, stride 2
]


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("shape", DW_FUSED_SHAPES)
def test_depthwise_fused_relu_same_bits_as_unfused(shape, bias):
    """With a fused ReLU the compiled depthwise forward keeps no padded copy (3x3 kernels
    pad each image into one scratch plane): max(y, 0) of the plain forward to the bit, NaN
    and -0.0 included, in both memory layouts of x; and PyTorch's numbers."""
    n, c, h, wd, k, stride, padding = shape
    rng = np.random.default_rng(abs(hash(shape)) % 2**32)
    w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    for layout in ("contiguous", "transposed", "channel_major"):
        if layout == "channel_major":  # (C, N, H, W) memory, as a conv or batch norm returns
            x = np.ascontiguousarray(rng.standard_normal((c, n, h, wd)).astype(np.float32)).transpose(1, 0, 2, 3)
        else:
            x = T.make_array(rng, (n, c, h, wd), layout, np.float32)
        x[0, 0, min(1, h - 1), min(1, wd - 1)], x[-1, -1, max(-2, -h), max(-2, -wd)] = np.nan, -0.0
        fused, cache = conv2d_forward(x, w, b, stride, padding, groups=c, relu=True)
        assert cache is None
        plain = conv2d_forward(x, w, b, stride, padding, groups=c)[0]
        expect = np.where(plain <= 0, np.float32(0), plain)  # the kernels' ReLU: NaN stays NaN
        assert np.isnan(fused).any()
        np.testing.assert_array_equal(fused, expect)
        assert np.array_equal(np.signbit(fused), np.signbit(expect))
        x[0, 0, min(1, h - 1), min(1, wd - 1)] = 0.0
        xt = torch.from_numpy(np.array(x))
        if isinstance(padding, tuple) and len(padding) == 4:  # (top, bottom, left, right): torch pads apart
            top, bottom, left, right = padding
            xt, tpad = TF.pad(xt, (left, right, top, bottom)), 0
        else:
            tpad = padding
        ref = torch.relu(TF.conv2d(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b), stride,
                                   tpad, groups=c))
        got = conv2d_forward(x, w, b, stride, padding, groups=c, relu=True)[0]
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h,wd,stride", [(14, 14, 1), (9, 9, 1), (20, 20, 1), (15, 15, 2), (40, 37, 2)])
def test_depthwise_fused_relu_turns_minus_zero_to_zero(h, wd, stride):
    """The compiled 3x3 depthwise forward clamps each value as it stores it: a sum that
    is -0.0 (a zero filter on negative inputs) becomes +0.0, as relu() makes it, on the
    16-value rows (14 wide), the row kernel (9, 20 wide) and stride 2 (8 and 20 wide: from
    column phases)."""
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    rng = np.random.default_rng(h * 31 + stride)
    x = -np.abs(rng.standard_normal((1, 3, h, wd))).astype(np.float32) - 0.5
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    w[1] = 0.0
    plain = conv2d_forward(x, w, None, stride, 1, groups=3)[0]
    assert np.signbit(plain[0, 1, 1:-1, 1:-1]).all() and (plain[0, 1] == 0).all()  # interior sums: -0.0
    fused = conv2d_forward(x, w, None, stride, 1, groups=3, relu=True)[0]
    np.testing.assert_array_equal(fused, np.maximum(plain, 0))
    assert not np.signbit(fused).any()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("layout", ["contiguous", "channel_major"])
def test_depthwise_same_masks_keep_rows_apart(layout, stride):
    """Taken flat, a row's last input sits next to the next row's first:
    depthwise_3x3_same (and at stride 2 depthwise_3x3_s2_same) must read zeros there (the
    padding), never those inputs. An inf or NaN in the first or last column reaches only
    its own row's neighbours, and every output equals the padded-row kernel's (the same
    bits)."""
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    rng = np.random.default_rng(8)
    n, c, h, wd = (2, 3, 6, 5) if stride == 1 else (2, 3, 8, 6)
    x = rng.standard_normal((c, n, h, wd) if layout == "channel_major" else (n, c, h, wd)).astype(np.float32)
    if layout == "channel_major":
        x = x.transpose(1, 0, 2, 3)
    x[0, 0, 2, wd - 1], x[1, 2, 3, 0], x[0, 1, 0, 0], x[1, 1, h - 1, wd - 1] = np.inf, np.nan, np.nan, -np.inf
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    fused = conv2d_forward(x, w, b, stride, 1, groups=c, relu=True)[0]
    plain = conv2d_forward(x, w, b, stride, 1, groups=c)[0]  # the padded copy, kept for a backward
    np.testing.assert_array_equal(fused, np.where(plain <= 0, np.float32(0), plain))
    if stride == 2:  # (depthwise_3x3_s2_same: the left taps of column 0; the bits above say it all)
        return
    bad = ~np.isfinite(plain)  # (before the ReLU, which turns -inf into 0)
    assert bad[0, 0, 1:4, wd - 2:].all() and not bad[0, 0, 1:4, :wd - 2].any()  # not row 3's (or 1's) column 0
    assert not bad[0, 0, [0, 4, 5]].any()
    assert bad[1, 2, 2:5, :2].all() and not bad[1, 2, 2:5, 2:].any()  # not the rows above's last column
    assert not bad[1, 2, [0, 1, 5]].any()


RELU6_CASES = [  # (N, C, F, H, W, kernel, stride, padding, groups): every forward path under a fused ReLU6
    (1, 8, 8, 14, 14, 3, 1, 1, 8),     # depthwise 3x3 'same': flat planes (the clamp in the kernel)
    (2, 6, 6, 16, 12, 3, 2, 1, 6),     # depthwise 3x3 s2 of even planes: flat even/odd split (in the kernel)
    (1, 6, 6, 15, 15, 3, 2, 1, 6),     # depthwise 3x3 s2, odd planes: column phases (one more pass)
    (2, 4, 4, 11, 13, 5, 1, 2, 4),     # depthwise 5x5: the general kernel
    (1, 16, 24, 9, 9, 1, 1, 0, 1),     # 1x1: GEMM + compiled epilogue
    (2, 5, 7, 12, 12, 3, 2, 1, 1),     # im2col
    (2, 32, 32, 12, 12, 3, 1, 1, 1),   # Winograd
    (2, 3, 8, 10, 10, 3, 1, 1, 1),     # the direct kernel (K <= 32)
]


@pytest.mark.parametrize("case", RELU6_CASES)
@pytest.mark.parametrize("residual", [False, True])
def test_fused_relu6_clamps_on_every_path(case, residual):
    """conv2d_forward(relu=True, relu_max=6) equals min(max(conv, 0), 6) on every path
    (NaN kept, values far above 6), with a residual added before the clamp; and PyTorch."""
    n, c, f, h, wd, k, stride, padding, groups = case
    rng = np.random.default_rng(sum(case) + residual)
    x = (rng.standard_normal((n, c, h, wd)) * 4).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    w = rng.standard_normal((f, c // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    plain = conv2d_forward(x, w, b, stride, padding, groups=groups)[0]
    r = rng.standard_normal(plain.shape).astype(np.float32) * 3 if residual else None
    got, cache = conv2d_forward(x, w, b, stride, padding, groups=groups, relu=True, relu_max=6.0, residual=r)
    assert cache is None
    pre = plain + r if residual else plain
    expect = np.where(pre <= 0, np.float32(0), np.where(pre > 6, np.float32(6), pre))  # NaN stays NaN
    assert (pre > 6).any() and np.isnan(got).any()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expect))
    x[0, 0, 1, 1] = 0.0
    got = conv2d_forward(x, w, b, stride, padding, groups=groups, relu=True, relu_max=6.0, residual=r)[0]
    ref = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, padding, groups=groups)
    if residual:
        ref = ref + torch.from_numpy(r)
    np.testing.assert_allclose(got, torch.clamp(ref, 0, 6).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "6"])
def test_relu_max_must_be_a_positive_number(bad):
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"^conv2d: relu_max must be a positive finite number"):
        conv2d_forward(x, w, None, 1, 1, groups=2, relu=True, relu_max=bad)


def _batch_inner(cfg):
    """True when the configuration's columns are batch-inner (the compiled col2im_batch_inner)."""
    x, w, b, _ = T.conv_arrays(cfg, np.float64)
    cache = conv2d_forward(x, w, b, stride=cfg["stride_arg"], padding=cfg["padding_arg"],
                           dilation=cfg["dilation_arg"], groups=cfg["groups"])[1]
    return (cache is not None and not cache[7] and not isinstance(cache[1], conv._WinogradSaved)
            and cache[0].batch_inner and cache[0].dx_geometry is None and conv._direct(cache[0], False) is None)


BATCH_INNER = ([c for c in T.TORCH_CONFIGS + T.NAIVE_CONFIGS if _batch_inner(c)]
               + _drawn_configs(40, _batch_inner, 20261127))


def test_batch_inner_col2im_same_bits_both_ways_and_matches_torch():
    """Batch-inner col2im, compiled and NumPy: dx to the bit over the sweeps' configurations
    (dilation and groups among them), and against PyTorch."""
    assert len(BATCH_INNER) >= 45
    assert any(c["dilation"] != (1, 1) for c in BATCH_INNER) and any(c["groups"] > 1 for c in BATCH_INNER)
    for cfg in BATCH_INNER:
        _assert_same_bits_both_ways(cfg)
    _sweep_matches_torch(BATCH_INNER[:30])


@pytest.mark.parametrize("layout", ["nchw", "channel_major", "mixed", "cropped", "2d", "0-size"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_same_bits_both_ways_and_torch(layout, dtype):
    """The compiled ReLU backward (dy and y alike and dense) and NumPy's (everything else)
    give the same bits, -0.0 and non-finite values included, and PyTorch's values where
    they are finite (PyTorch selects: 0 for inf * 0, dy where y is NaN)."""
    from cnnkit.functional.activation import relu_backward, relu_forward
    rng = np.random.default_rng(10)
    base = rng.standard_normal((6, 5, 7, 9)).astype(dtype)
    base[0, 0, 0, :4] = [np.nan, -0.0, 0.0, -np.inf]
    g = rng.standard_normal((6, 5, 7, 9)).astype(dtype)
    g[0, 0, 0, 4:7] = [np.inf, -1.0, np.nan]
    g[0, 0, 1, :3] = [-2.0, np.inf, 3.0]
    cm = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    padded = np.zeros((5, 6, 9, 11), dtype)
    padded[:, :, 1:8, 1:10] = g.transpose(1, 0, 2, 3)
    x, dy = {"nchw": (base, g), "channel_major": (cm(base), cm(g)), "mixed": (cm(base), g),
             "cropped": (cm(base), padded[:, :, 1:8, 1:10].transpose(1, 0, 2, 3)),
             "2d": (base.reshape(30, 63), g.reshape(30, 63)), "0-size": (base[:0], g[:0])}[layout]
    outs = []
    for on in (True, False):
        previous = runtime.set_jit(on)
        try:
            with np.errstate(invalid="ignore"):  # inf * 0
                outs.append(relu_backward(dy, relu_forward(x)[1]))
        finally:
            runtime.set_jit(previous)
    assert np.array_equal(outs[0], outs[1], equal_nan=True)
    assert np.array_equal(np.signbit(outs[0]), np.signbit(outs[1]))
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    torch.relu(xt).backward(torch.from_numpy(np.array(dy)))
    ref, finite = xt.grad.numpy(), np.isfinite(outs[0]) & ~np.isnan(np.array(x))
    np.testing.assert_array_equal(outs[0][finite], ref[finite])
    if layout != "0-size":
        assert np.isnan(outs[0]).any()  # inf * 0 where y <= 0: this function's documented difference


@pytest.mark.parametrize("layout", ["nchw", "channel_major", "mixed", "cropped", "broadcast", "3d", "0-size"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_add_same_bits_as_numpy_every_layout(layout, dtype, relu):
    """functional.add (compiled where a and b are dense alike, NumPy by channels or plain
    otherwise) gives NumPy's a + b to the bit, and with relu the ReLU layer's max(., 0)
    of it, -0.0 and non-finite values included; on two threads too. The output keeps a's
    layout where the compiled loop runs."""
    from cnnkit.functional.activation import add, relu as relu_fn
    rng = np.random.default_rng(11)
    a0 = rng.standard_normal((16, 12, 33, 41)).astype(dtype)  # large enough for two threads
    b0 = rng.standard_normal((16, 12, 33, 41)).astype(dtype)
    a0[0, 0, 0, :5] = [np.nan, -0.0, 0.0, np.inf, -np.inf]
    b0[0, 0, 0, :5] = [1.0, -0.0, -0.0, -np.inf, 2.0]
    cm = lambda v: np.ascontiguousarray(v.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    padded = np.zeros((12, 16, 35, 43), dtype)
    padded[:, :, 1:34, 1:42] = b0.transpose(1, 0, 2, 3)
    a, b = {"nchw": (a0, b0), "channel_major": (cm(a0), cm(b0)), "mixed": (cm(a0), b0),
            "cropped": (cm(a0), padded[:, :, 1:34, 1:42].transpose(1, 0, 2, 3)),
            "broadcast": (a0, b0[:1, :, :1]), "3d": (a0[0], b0[0]), "0-size": (a0[:0], b0[:0])}[layout]
    with np.errstate(invalid="ignore"):  # inf - inf
        want = a + b
    if relu:
        want = relu_fn(want)
    for threads in (1, 2):
        runtime.set_num_threads(threads)
        try:
            for on in (True, False):
                previous = runtime.set_jit(on)
                try:
                    with np.errstate(invalid="ignore"):
                        got = add(a, b, relu=relu)
                finally:
                    runtime.set_jit(previous)
                assert got.shape == want.shape and got.dtype == want.dtype
                assert np.array_equal(got, want, equal_nan=True)
                assert np.array_equal(np.signbit(got), np.signbit(want))
                assert got is not a and got is not b
                if on and layout == "channel_major":
                    assert got.strides == a.strides
        finally:
            runtime.set_num_threads(1)
    if relu and layout != "0-size":
        assert (np.nan_to_num(want) >= 0).all() and np.isnan(want).any()


@pytest.mark.parametrize("n,c,h,w,stride,pad", [
    (1, 8, 56, 56, 1, 1), (3, 5, 14, 14, 1, 1), (2, 4, 28, 29, 2, 1), (1, 6, 15, 16, 2, 1),
    (2, 3, 9, 11, 1, 0), (2, 3, 10, 10, 2, (0, 1, 0, 1)), (1, 3, 7, 7, 1, 2),
    (2, 4, 13, 13, 1, 1), (1, 3, 5, 17, 1, (0, 1, 0, 0)), (4, 2, 15, 15, 1, 1)])
@pytest.mark.parametrize("relu", [False, True])
def test_depthwise_3x3_row_kernel_same_bits_and_torch(n, c, h, w, stride, pad, relu):
    """The 3x3 depthwise kernel (stride 1 or 2, every output row written once, literal tap
    offsets): the bits of NumPy's taps (NaN, -0.0, bias, fused ReLU), and PyTorch's values."""
    rng = np.random.default_rng(n * 1000 + c * 100 + h + w + stride)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 0, 1, 1], x[0, c - 1, 2, 3] = np.nan, -0.0
    wk = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    ys = []
    for on in (True, False):
        previous = runtime.set_jit(on)
        try:
            ys.append(conv2d_forward(x, wk, b, stride, pad, groups=c, relu=relu)[0])
        finally:
            runtime.set_jit(previous)
    assert np.array_equal(ys[0], ys[1], equal_nan=True) and np.isnan(ys[0]).any()
    assert np.array_equal(np.signbit(ys[0]), np.signbit(ys[1]))
    pads = (pad, pad, pad, pad) if isinstance(pad, int) else pad
    xt = TF.pad(torch.from_numpy(x.astype(np.float64)), (pads[2], pads[3], pads[0], pads[1]))
    ref = TF.conv2d(xt, torch.from_numpy(wk.astype(np.float64)), torch.from_numpy(b.astype(np.float64)), stride,
                    groups=c)
    ref = (torch.relu(ref) if relu else ref).numpy()
    finite = ~np.isnan(ref)
    np.testing.assert_allclose(ys[0][finite], ref[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,c,h,w,pad", [(2, 8, 28, 28, 1), (1, 4, 29, 31, 1), (3, 5, 14, 14, (0, 1, 0, 1)),
                                         (2, 3, 8, 9, 0), (2, 5, 10, 11, 2), (2, 4, 12, 13, (1, 0, 3, 0)),
                                         (3, 2, 5, 40, (2, 2, 0, 1)), (3, 2, 78, 78, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_3x3_stride2_backward_matches_torch(n, c, h, w, pad, dtype):
    """The 3x3 stride-2 backward kernel (by even/odd phases, written straight into dx), each
    gradient alone and both, against PyTorch in float64: left padding even and odd, input
    rows and columns that no window reaches, widths past one block of images."""
    rng = np.random.default_rng(n * 100 + c + h + w)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wk = rng.standard_normal((c, 1, 3, 3)).astype(dtype)
    y, cache = conv2d_forward(x, wk, None, 2, pad, groups=c)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, _ = conv2d_backward(dy, cache)
    assert np.array_equal(conv2d_backward(dy, cache, need_dw=False)[0], dx)
    assert np.array_equal(conv2d_backward(dy, cache, need_dx=False)[1], dw)
    pads = (pad, pad, pad, pad) if isinstance(pad, int) else pad
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(wk.astype(np.float64)).requires_grad_()
    yt = TF.conv2d(TF.pad(xt, (pads[2], pads[3], pads[0], pads[1])), wt, None, 2, groups=c)
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("jit_mode", [True])
def test_depthwise_3x3_stride2_backward_keeps_channels_apart(jit_mode):
    """A NaN weight in one channel (NaN through its dx, as in PyTorch) leaves the next
    channels' gradients equal to PyTorch's: the phase buffers that one channel leaves
    behind (positions past its images' last row and column) are not read into another's dw."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 13, 13))
    wk = rng.standard_normal((4, 1, 3, 3))
    wk[0, 0, 1, 0] = np.nan
    y, cache = conv2d_forward(x, wk, None, 2, 1, groups=4)
    dy = rng.standard_normal(y.shape)
    previous = runtime.get_num_threads()
    runtime.set_num_threads(1)  # every channel in one call of the kernel
    try:
        dx, dw, _ = conv2d_backward(dy, cache)
    finally:
        runtime.set_num_threads(previous)
    ref = _torch_depthwise(x, wk, None, dy, 2, 1, 1)
    assert np.isnan(dx[:, 0]).any()
    np.testing.assert_allclose(dw, ref[2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx[:, 1:], ref[1][:, 1:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wo,sw,dw", [(7, 2, 1), (8, 2, 1), (9, 2, 2), (16, 2, 1), (23, 2, 1), (17, 3, 2), (12, 1, 2)])
def test_strided_im2col_and_col2im_match_slices(wo, sw, dw):
    """The compiled strided copies (flat indexing; blocks of 8 at stride 2, with a
    remainder) against the NumPy slices they replace, for images n0.. of a batch:
    im2col exactly (and a run of output rows r0..r0+1 of one image, as a batch-1
    forward cuts them), col2im's sums exactly (the same order), other images untouched."""
    jit = runtime.jit_kernels()
    rng = np.random.default_rng(11)
    c, n, n0, nm, kh, kw, sh, dh, ho = 3, 5, 1, 3, 3, 3, 2, 1, 4
    hp, wp = (ho - 1) * sh + (kh - 1) * dh + 2, (wo - 1) * sw + (kw - 1) * dw + 3
    src = rng.standard_normal((c, n, hp, wp)).astype(np.float32)
    cols = np.full((c, kh * kw, nm, ho, wo), np.nan, np.float32)
    jit.im2col_strided(src, cols, n0, 0, kw, sh, sw, dh, dw)
    run = np.full((c, kh * kw, 1, 2, wo), np.nan, np.float32)
    jit.im2col_strided(src, run, n0 + 1, 1, kw, sh, sw, dh, dw)
    for k in range(kh * kw):
        p, q = divmod(k, kw)
        ref = src[:, n0:n0 + nm, p * dh:p * dh + (ho - 1) * sh + 1:sh, q * dw:q * dw + (wo - 1) * sw + 1:sw]
        np.testing.assert_array_equal(cols[:, k], ref)
        np.testing.assert_array_equal(run[:, k, 0], ref[:, 1, 1:3])
    dxp = rng.standard_normal(src.shape).astype(np.float32)
    ref = dxp.copy()
    g = rng.standard_normal(cols.shape).astype(np.float32)
    jit.col2im_strided(g, dxp, n0, kw, sh, sw, dh, dw)
    for k in range(kh * kw):
        p, q = divmod(k, kw)
        ref[:, n0:n0 + nm, p * dh:p * dh + (ho - 1) * sh + 1:sh, q * dw:q * dw + (wo - 1) * sw + 1:sw] += g[:, k]
    np.testing.assert_array_equal(dxp, ref)


@pytest.mark.parametrize("hp,wp,kh,kw,dh,dw", [(9, 37, 3, 3, 1, 1), (10, 40, 3, 3, 1, 1), (13, 39, 7, 7, 1, 1),
                                                (11, 38, 3, 2, 2, 2), (5, 33, 1, 1, 1, 1)])
def test_col2im_by_phases_matches_slice_adds(hp, wp, kh, kw, dh, dw):
    """col2im_strided at stride 2 and outputs >= COL2IM_PHASES_MIN_WIDTH wide goes by the
    planes' even and odd phases: its sums equal the NumPy slice adds exactly (the same
    order), for images n0.. of a batch whose gradient already holds values (it adds), odd
    and even plane sizes (the last element alone in the even phase), other images untouched."""
    jit = runtime.jit_kernels()
    rng = np.random.default_rng(hp * wp)
    c, n, n0, nm, sh = 3, 4, 1, 2, 2
    ho, wo = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // 2 + 1
    assert wo >= jit.COL2IM_PHASES_MIN_WIDTH
    dxp = rng.standard_normal((c, n, hp, wp)).astype(np.float32)
    ref = dxp.copy()
    g = rng.standard_normal((c, kh * kw, nm, ho, wo)).astype(np.float32)
    jit.col2im_strided(g, dxp, n0, kw, sh, 2, dh, dw)
    for k in range(kh * kw):
        p, q = divmod(k, kw)
        ref[:, n0:n0 + nm, p * dh:p * dh + (ho - 1) * sh + 1:sh, q * dw:q * dw + (wo - 1) * 2 + 1:2] += g[:, k]
    np.testing.assert_array_equal(dxp, ref)


@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
@pytest.mark.parametrize("k,stride,dil,pads,hw", [
    (3, 2, 1, (1, 1, 1, 1), (28, 28)),     # ResNet's 3x3 s2
    (7, 2, 1, (3, 3, 3, 3), (23, 21)),     # the stem, odd sizes
    (11, 4, 1, (2, 2, 2, 2), (27, 30)),    # AlexNet's conv1
    (3, 2, 1, (0, 1, 0, 1), (9, 9)),       # 'same' at stride 2: padding at the bottom/right only
    (3, 1, 2, (2, 2, 2, 2), (10, 12)),     # dilated
    (3, 3, 1, (4, 0, 5, 1), (8, 7)),       # padding wider than the kernel: rows/columns of zeros
    (5, 2, 1, (0, 0, 0, 0), (13, 18)),     # no padding
    (5, 1, 1, (2, 2, 2, 2), (11, 37)),     # stride 1: runs copied from x itself
    (3, 2, 1, (1, 1, 1, 1), (40, 70)),     # runs of 35: several blocks
    (3, 2, 2, (2, 2, 2, 2), (17, 19)),     # dilated at stride 2, odd rows: the phase alternates by row
])
@pytest.mark.parametrize("blk", [16, 4])
def test_im2col_unpadded_matches_im2col_of_the_padded_copy(k, stride, dil, pads, hw, layout, blk):
    """im2col_unpadded (columns straight from x, zeros where a window leaves it) gives
    exactly the columns im2col_strided builds from the padded copy, for images n0.. and
    for a run of output rows r0.., with x as NCHW or channel-major memory, copying in
    blocks of 16 (COPY_BLOCK) or 4 (many blocks a run). The columns are a view at the
    start of a longer buffer: the blocks that run past a row's end stay inside the view."""
    from cnnkit.functional.window import planes
    from cnnkit.functional.window import output_hw, pad_channel_major, padded_size
    jit = runtime.jit_kernels()
    rng = np.random.default_rng(sum(hw) + k)
    n, c = 4, 3
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    if layout == "channel_major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    ho, wo = output_hw(hw, (k, k), (stride, stride), (dil, dil), pads, "t")
    xp = np.ascontiguousarray(pad_channel_major(x, pads, padded_size((ho, wo), (k, k), (stride, stride), (dil, dil))))
    flat, sn, sc = planes(x)
    for n0, nm, r0, rows in ((1, 3, 0, ho), (2, 1, ho // 2, ho - ho // 2)):
        want = np.full((c, k * k, nm, ho, wo), np.nan, np.float32)
        jit.im2col_strided(xp, want, n0, 0, k, stride, stride, dil, dil)
        size = c * k * k * nm * rows * wo
        buf = np.full(size + 64, np.nan, np.float32)
        got = buf[:size].reshape(c, k * k, nm, rows, wo)
        jit.im2col_unpadded(flat, sn, sc, hw[0], hw[1], got, n0, r0, k, stride, stride, dil, dil, pads[0], pads[2], blk)
        np.testing.assert_array_equal(got, want[:, :, :, r0:r0 + rows])
        assert np.isnan(buf[size:]).all()
    assert jit.COPY_BLOCK == 16


@pytest.mark.parametrize("from_x", [False, True], ids=["padded", "from-x"])
@pytest.mark.parametrize("n,h,w", [(3, 14, 14), (2, 7, 7), (1, 16, 16), (2, 9, 40), (4, 15, 3), (2, 1, 5),
                                   (2, 5, 1), (1, 40, 40)])
def test_depthwise_3x3_s1_backward_matches_flat_kernel(n, h, w, from_x):
    """The 3x3 'same' stride-1 backwards against the general flat kernel on the same
    float32 inputs: depthwise_backward_3x3_s1 (from the padded copy: dx rows with all nine
    taps in registers) and depthwise_backward_3x3_same (from x and dy taken flat, the
    wrapped reads selected or copied to zero; what the flat forward's backward runs). dx
    to the bit (the taps added in the same order); dw, which sums in float32 blocks where
    the flat kernel sums in float64, within one float32 epsilon of the sum of its terms'
    magnitudes; NaN in dy stays in its channel."""
    jit = runtime.jit_kernels()
    rng = np.random.default_rng(n * 100 + h + w)
    c = 5
    xp = np.zeros((c, n, h + 2, w + 2), np.float32)
    xp[:, :, 1:-1, 1:-1] = rng.standard_normal((c, n, h, w))
    wk = rng.standard_normal((c, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((c, n, h, w)).astype(np.float32)
    dy[2, -1, -1, -1] = np.nan
    out = []
    for kernel in (jit.depthwise_backward_3x3_s1, jit.depthwise_backward_flat):
        dx, dwk = np.full((c, n, h, w), 7.0, np.float32), np.full((c, 3, 3), 7.0, np.float32)
        if kernel is jit.depthwise_backward_flat:  # (pads 1, 1; no dilation)
            kernel(xp, wk, dy, dx, dwk, 1, 1, 1, 1, 0, c, True, True)
        elif from_x:  # x and dy as channel-major planes: plane (n, c) at c*n_*h*w + n*h*w
            x = np.ascontiguousarray(xp[:, :, 1:-1, 1:-1])
            jit.depthwise_backward_3x3_same(x.reshape(-1), h * w, n * h * w, dy.reshape(-1), h * w, n * h * w,
                                            n, h, w, wk, dx, dwk, 0, c, True, True)
        else:
            kernel(xp, wk, dy, dx, dwk, 0, c, True, True)
        out.append((dx, dwk))
    (dx, dwk), (dx_ref, dwk_ref) = out
    assert np.array_equal(dx, dx_ref, equal_nan=True) and np.isnan(dx[2]).any() and not np.isnan(dx[[0, 1, 3, 4]]).any()
    assert np.isnan(dwk[2]).all() and not np.isnan(dwk[[0, 1, 3, 4]]).any()
    xa, ga = np.abs(xp[[0, 1, 3, 4]]).astype(np.float64), np.abs(dy[[0, 1, 3, 4]]).astype(np.float64)
    magnitude = np.stack([np.einsum("cnij,cnij->c", ga, xa[:, :, p:p + h, q:q + w])
                          for p in range(3) for q in range(3)], axis=1).reshape(4, 3, 3)
    error = np.abs(dwk[[0, 1, 3, 4]].astype(np.float64) - dwk_ref[[0, 1, 3, 4]])
    # (from x, the float32 sums group by plane, hw/16 terms a lane then a tree over the 16
    # lanes, where the padded grid's blocks run across images: 1.1 eps seen on 1x5 planes.
    # Against exact sums and PyTorch: test_depthwise_dw_float32_sums_no_worse_than_torch)
    bound = (2 if from_x else 1) * np.finfo(np.float32).eps
    assert (error <= bound * magnitude).all(), (error / magnitude).max()


@pytest.mark.parametrize("jit_mode", [True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("n,c,h", [(8, 64, 14), (2, 16, 56), (4, 32, 7), (3, 5, 9), (8, 2, 112)])
def test_depthwise_dw_float32_sums_no_worse_than_torch(jit_mode, stride, n, c, h):
    """dw of MobileNet's 3x3 depthwise convs (padding 1; stride 1: _jit._dw_3x3, stride 2:
    _jit._dw_3x3_phases), summed in float32 blocks: its error against float64 sums,
    relative to the sum of the terms' magnitudes, is at most PyTorch's float32 error on
    the same data (measured: 5-100x below it)."""
    rng = np.random.default_rng(n * 1000 + c + h)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    ho = (h - 1) // stride + 1
    dy = rng.standard_normal((n, c, ho, ho)).astype(np.float32)
    exact = torch.nn.grad.conv2d_weight(torch.from_numpy(x).double(), w.shape, torch.from_numpy(dy).double(),
                                        stride=stride, padding=1, groups=c).numpy()
    magnitude = torch.nn.grad.conv2d_weight(torch.from_numpy(np.abs(x)).double(), w.shape,
                                            torch.from_numpy(np.abs(dy)).double(), stride=stride, padding=1,
                                            groups=c).numpy()
    y, cache = conv2d_forward(x, w, None, stride, 1, 1, c)
    ours = conv2d_backward(dy, cache)[1]
    theirs = _torch_depthwise(x, w, None, dy, stride, 1, 1)[2]
    err_ours = (np.abs(ours - exact) / magnitude).max()
    err_torch = (np.abs(theirs - exact) / magnitude).max()
    assert err_ours <= err_torch, (err_ours, err_torch)
    assert err_ours <= np.finfo(np.float32).eps, err_ours


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
@pytest.mark.parametrize("pads, size_hw", [
    ((1, 1, 1, 1), (7, 9)),     # 'same' 3x3
    ((0, 2, 3, 0), (7, 10)),    # asymmetric
    ((2, 2, 2, 2), (8, 10)),    # cropped at the bottom/right (windows end before)
    ((1, 1, 1, 1), (9, 11)),    # extended past the padding (ceil mode)
    ((0, 0, 0, 0), (6, 8)),     # extended only: no top/left
    ((3, 0, 5, 0), (5, 9)),     # wide top/left padding, cropped after a few rows/columns
])
@pytest.mark.parametrize("fill", [0.0, -np.inf])
def test_compiled_pad_same_as_numpy(dtype, layout, pads, size_hw, fill):
    """window.pad_channel_major's compiled copy writes what the NumPy slices write,
    for every pad, crop and extension, from NCHW and from channel-major memory."""
    from cnnkit.functional.window import pad_channel_major
    x = np.random.default_rng(3).standard_normal((3, 4, 5, 7)).astype(dtype)
    if layout == "channel_major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    out = {}
    for mode in (True, False):
        previous = runtime.set_jit(mode)
        try:
            out[mode] = pad_channel_major(x, pads, size_hw, fill=fill)
        finally:
            runtime.set_jit(previous)
    assert out[True].shape == (4, 3) + size_hw and out[True].dtype == dtype
    np.testing.assert_array_equal(out[True], out[False])
    np.testing.assert_array_equal(out[True][:, :, pads[0], pads[2]], x[:, :, 0, 0].T)  # (C, N)
    assert (out[True][:, :, :pads[0]] == fill).all() and (out[True][:, :, :, :pads[2]] == fill).all()

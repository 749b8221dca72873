"""Winograd F(2x2, 3x3) (cnnkit.functional.winograd) and when conv2d takes it.

- The algebra: the matrices compute a 3-tap correlation exactly; each transform and its
  adjoint pass the dot-product test (<T a, b> = <a, T* b>), in both NumPy and compiled form.
- 240 random 3x3 stride-1 convolutions (pads of every form, odd sizes, 0-4 images, 1-8
  channels, flip, four memory layouts), forward and three gradients, float32 and float64,
  with the Winograd path forced, against PyTorch at test_conv.py's tolerance.
- The same with one tile row per chunk on two threads (the halo rows between chunks),
  the gradients one at a time, the fused ReLU, NumPy vs compiled kernels, larger layers
  in float32 against PyTorch in float64, and the rule that picks the path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit import runtime
from cnnkit.functional import conv, naive, winograd
from cnnkit.functional.conv import conv2d_backward, conv2d_forward
from tests.functional import test_conv as T

numba = pytest.importorskip("numba")
torch.set_num_threads(1)
JIT = runtime.jit_kernels() or pytest.skip("the JIT is off", allow_module_level=True)
KERNELS = {"numpy": winograd.NUMPY_KERNELS, "jit": JIT}


def _config(rng):
    """A random 3x3, stride-1, dilation-1, one-group conv in test_conv's format."""
    while True:
        c_in, c_out = (int(v) for v in rng.integers(1, 9, size=2))
        n = 0 if rng.random() < 0.05 else int(rng.integers(1, 5))
        h, w = (int(v) for v in rng.integers(1, 14, size=2))
        form = T.PAD_FORMS[int(rng.integers(len(T.PAD_FORMS)))]
        raw = {"int": int(rng.integers(0, 3)), "pair": (int(rng.integers(0, 3)), int(rng.integers(0, 3))),
               "quad": tuple(int(v) for v in rng.integers(0, 3, size=4))}.get(form, form)
        pads = T._normalize_padding(form, raw, (3, 3), (1, 1), (1, 1), (h, w))
        ho, wo = naive.out_size(h, 3, 1, pads[0], pads[1], 1), naive.out_size(w, 3, 1, pads[2], pads[3], 1)
        if ho >= 1 and wo >= 1:
            return dict(n=n, c_in=c_in, c_out=c_out, groups=1, h=h, w=w, kernel=(3, 3), stride=(1, 1),
                        stride_arg=1, dilation=(1, 1), dilation_arg=1, pad_form=form, padding_arg=raw,
                        pads=pads, out_hw=(ho, wo), bias=bool(rng.random() < 0.7),
                        flip=bool(rng.random() < 0.2), layout=T.LAYOUTS[int(rng.integers(len(T.LAYOUTS)))],
                        seed=int(rng.integers(2**31)))


_rng = np.random.default_rng(20261127)
CONFIGS = [_config(_rng) for _ in range(240)]


@pytest.fixture
def forced(monkeypatch):
    """Every 3x3 stride-1 one-group conv takes the Winograd path."""
    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_TILES", 0)
    monkeypatch.setattr(conv, "WINOGRAD_MAX_WASTE", float("inf"))


@pytest.fixture
def tile_row_chunks(monkeypatch):
    """One tile row per chunk, the chunks on two worker threads."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    monkeypatch.setattr(winograd, "MIN_CHUNK_MACS", 0)
    monkeypatch.setattr(winograd, "SERIAL_MACS", 0)
    assert runtime.set_num_threads(2) == 2
    yield
    runtime.set_num_threads(1)


# ---- the algebra ------------------------------------------------------------------------

def test_matrices_compute_a_three_tap_correlation():
    """A^T [(G g) * (B^T d)] = (d0 g0 + d1 g1 + d2 g2, d1 g0 + d2 g1 + d3 g2), exactly."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.integers(-9, 10, size=4).astype(float), rng.integers(-9, 10, size=3).astype(float)
        got = winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d))
        assert np.array_equal(got, [d[:3] @ g, d[1:] @ g])


def _dot_test(forward, adjoint, a, b):
    """<forward(a), b> == <a, adjoint(b)> (float64)."""
    lhs, rhs = np.vdot(forward(a), b), np.vdot(a, adjoint(b))
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + 1), (lhs, rhs)


def test_filter_transform_and_gradient_are_adjoint():
    rng = np.random.default_rng(1)
    w, du = rng.standard_normal((5, 3, 3, 3)), rng.standard_normal((16, 5, 3))
    _dot_test(winograd.transform_filter, winograd.filter_gradient, w, du)
    g = rng.standard_normal((3, 3))  # and U is G g G^T
    np.testing.assert_allclose(winograd.transform_filter(g[None, None])[:, 0, 0].reshape(4, 4),
                               winograd.G @ g @ winograd.G.T, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("kind", ["numpy", "jit"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 9, 4), (3, 1, 4, 4), (1, 2, 3, 33),
                                   (2, 2, 24, 29), (1, 1, 32, 32)])  # (N, C, Ho, Wo); the last two wide
def test_tile_transforms_pass_the_dot_product_test(kind, shape):
    """The adjoints that the backward uses are the forward transforms' transposes."""
    k, rng = KERNELS[kind], np.random.default_rng(2)
    n, c, ho, wo = shape
    th, tw = winograd.tile_grid((ho, wo))
    xp = rng.standard_normal((c, n, 2 * th + 2, 2 * tw + 2))
    v = rng.standard_normal((c, 16, n * th * tw))

    def inp(a):
        out = np.empty((c, 16, n * th * tw))
        k.winograd_input(a, out, 0, n * th)
        return out

    def inp_adj(b):
        out = np.empty_like(xp)
        k.winograd_input_adjoint(np.ascontiguousarray(b), out, np.empty((0, 2, 0)), 0, n * th, th, tw, 0, 0)
        return out
    _dot_test(inp, inp_adj, xp, v)

    y = rng.standard_normal((c, n, ho, wo))  # the output transform, channels as filters

    def out(a):
        r = np.empty((c, n, ho, wo))
        k.winograd_output(np.ascontiguousarray(a), r, np.empty(0), 0, n * th, th, False)
        return r

    def out_adj(b):
        r = np.empty((c, 16, n * th * tw))
        k.winograd_output_adjoint(b, r, 0, n * th, th)
        return r
    _dot_test(out, out_adj, v, y)


# ---- against PyTorch ---------------------------------------------------------------------

def test_sweep_covers_what_it_claims():
    seen = lambda pred: sum(1 for c in CONFIGS if pred(c))
    assert {c["pad_form"] for c in CONFIGS} == set(T.PAD_FORMS)
    assert {c["layout"] for c in CONFIGS} == set(T.LAYOUTS)
    assert seen(lambda c: c["n"] == 0) and seen(lambda c: c["flip"]) and seen(lambda c: not c["bias"])
    assert seen(lambda c: c["out_hw"][0] % 2 and c["out_hw"][1] % 2)  # odd outputs: partial tiles
    assert seen(lambda c: c["pads"][0] != c["pads"][1])


def _sweep(configs):
    for cfg in configs:
        for dtype in (np.float32, np.float64):
            x, w, b, dy = T.conv_arrays(cfg, dtype)
            y, cache = conv2d_forward(x, w, b, stride=1, padding=cfg["padding_arg"], flip=cfg["flip"])
            assert isinstance(cache[1], conv._WinogradSaved), cfg
            got = (y,) + conv2d_backward(dy, cache)
            T.check_against(cfg, dtype, got, T.torch_conv(cfg, x, w, b, dy), T.abs_scales(cfg, x, w, b, dy))


@pytest.mark.parametrize("part", range(4))
def test_winograd_matches_torch(part, forced):
    _sweep(CONFIGS[part::4])


@pytest.mark.parametrize("part", range(2))
def test_winograd_in_tile_row_chunks_on_two_threads_matches_torch(part, forced, tile_row_chunks):
    _sweep(CONFIGS[part::4])


@pytest.fixture
def from_x(monkeypatch):
    """Every compiled Winograd forward reads x itself (winograd_input_from_x)."""
    monkeypatch.setattr(winograd, "FROM_X_MIN_CHANNELS", 0)


@pytest.mark.parametrize("part", range(2))
def test_winograd_from_x_matches_torch(part, forced, from_x):
    """The sweep with the input transform reading x itself (every padding form, odd
    sizes, NCHW and channel-major layouts, empty batches), forward and backward."""
    _sweep(CONFIGS[part::2])


def test_winograd_from_x_in_tile_row_chunks_on_two_threads_matches_torch(forced, from_x, tile_row_chunks):
    _sweep(CONFIGS[1::4])


@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
@pytest.mark.parametrize("c,n,h,w,pads", [(32, 4, 28, 28, (1, 1, 1, 1)), (16, 3, 13, 11, (1, 1, 1, 1)),
                                          (8, 2, 9, 10, (0, 0, 0, 0)), (8, 2, 7, 6, (2, 2, 2, 2)),
                                          (4, 2, 12, 9, (1, 1, 0, 2)), (3, 2, 1, 1, (1, 1, 1, 1)),
                                          (3, 2, 2, 5, (2, 0, 3, 0))])
def test_input_transform_from_x_same_bits_as_from_the_padded_copy(c, n, h, w, pads, layout):
    """winograd_input_from_x gives exactly the V that winograd_input computes from the
    padded copy, for whole batches and for chunks that start and end inside images; NaN
    and infinities in x stay where they are (a column outside x is zero even where the
    clamped load next to it reads one)."""
    from cnnkit.functional.window import planes
    from cnnkit.functional.window import pad_channel_major
    rng = np.random.default_rng(h * w + c)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = np.nan, np.inf
    if layout == "channel_major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    ho, wo = h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2
    th, tw = -(-ho // 2), -(-wo // 2)
    xp = np.ascontiguousarray(pad_channel_major(x, pads, (2 * th + 2, 2 * tw + 2)))
    flat, sn, sc = planes(x)
    for r0, r1 in ((0, n * th), (1, th + 1), (th - 1, 2 * th)):
        k = (r1 - r0) * tw
        want, got = np.full((c, 16, k), 7.0, np.float32), np.full((c, 16, k), 7.0, np.float32)
        JIT.winograd_input(xp, want, r0, r1)
        JIT.winograd_input_from_x(flat, sn, sc, h, w, pads[0], pads[2], th, tw, got, r0, r1)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(4, 64, 64, 14), (2, 32, 48, 28), (1, 128, 64, 9), (2, 16, 16, 32)])
def test_layers_in_float32_match_torch_in_float64(shape, forced):
    """Real layer sizes: float32 Winograd against float64 PyTorch, within the im2col
    path's tolerance (test_conv.assert_close: about 16 ulps of the sum of |terms|)."""
    n, c, f, hw = shape
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    dy = rng.standard_normal((n, f, hw, hw)).astype(np.float32)
    cfg = dict(pad_form="int", padding_arg=1, pads=(1, 1, 1, 1), stride=(1, 1), dilation=(1, 1), groups=1,
               flip=False)
    y, cache = conv2d_forward(x, w, b, 1, 1)
    assert isinstance(cache[1], conv._WinogradSaved)
    got = (y,) + conv2d_backward(dy, cache)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    ref = T.torch_conv(cfg, x64, w64, b64, dy64)
    T.check_against(cfg, np.float32, got, ref, T.abs_scales(cfg, x64, w64, b64, dy64))


# ---- the pieces ---------------------------------------------------------------------------

@pytest.mark.parametrize("need", [(True, False), (False, True), (False, False)])
def test_gradients_one_at_a_time(need, forced, tile_row_chunks):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, 5, 9, 8)), rng.standard_normal((6, 5, 3, 3))
    y, cache = conv2d_forward(x, w, None, 1, "same")
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = conv2d_backward(dy, cache)
    dx1, dw1, db1 = conv2d_backward(dy, cache, need_dx=need[0], need_dw=need[1])
    assert db1 is None
    for want, full, one in ((need[0], dx, dx1), (need[1], dw, dw1)):
        if want:
            np.testing.assert_array_equal(one, full)
        else:
            assert one is None


@pytest.mark.parametrize("shape", [(2, 5, 11, 7), (1, 3, 4, 16), (1, 3, 6, 40)])
def test_compiled_transforms_match_numpy(shape, forced):
    """The whole conv through winograd.forward/backward with either set of kernels."""
    rng = np.random.default_rng(5)
    n, c, h, wd = shape
    x, w, b = rng.standard_normal((n, c, h, wd)), rng.standard_normal((4, c, 3, 3)), rng.standard_normal(4)
    pads, out_hw = (1, 0, 2, 1), (h - 1, wd + 1)
    dy = rng.standard_normal((4, n) + out_hw)
    res = {}
    for kind, k in KERNELS.items():
        y, saved = winograd.forward(x, w, b, pads, out_hw, False, k)
        res[kind] = (y,) + winograd.backward(dy, saved, x.shape, pads, True, True, k)
    previous, winograd.FROM_X_MIN_CHANNELS = winograd.FROM_X_MIN_CHANNELS, 0  # the compiled ones from x itself
    try:
        y, saved = winograd.forward(x, w, b, pads, out_hw, False, JIT)
        assert isinstance(saved[0], winograd.Planes)
        res["from_x"] = (y,) + winograd.backward(dy, saved, x.shape, pads, True, True, JIT)
    finally:
        winograd.FROM_X_MIN_CHANNELS = previous
    for a, r, fx in zip(res["jit"], res["numpy"], res["from_x"]):
        np.testing.assert_allclose(a, r, rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(fx, a)


def test_fused_relu(forced):
    rng = np.random.default_rng(6)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 7, 9), (5, 4, 3, 3), (5,)))
    y, cache = conv2d_forward(x, w, b, 1, 1)
    yr, none = conv2d_forward(x, w, b, 1, 1, relu=True)
    assert none is None and (yr >= 0).all() and (y < 0).any()
    np.testing.assert_array_equal(yr, np.maximum(y, 0))


def test_which_convs_take_winograd():
    """The rule (conv._winograd): 3x3, stride 1, dilation 1, one group, 16+ channels each
    way, 128+ output tiles in the batch (48+ with frozen weights), tiles not reaching far
    past odd outputs."""
    def takes(x_shape, f, stride=1, dilation=1, groups=1, padding=1, k=3, frozen=False):
        x = np.zeros(x_shape, np.float32)
        w = np.zeros((f, x_shape[1] // groups, k, k), np.float32)
        w.flags.writeable = not frozen
        return isinstance(conv2d_forward(x, w, None, stride, padding, dilation, groups)[1][1], conv._WinogradSaved)
    assert takes((128, 32, 28, 28), 32) and takes((8, 64, 56, 56), 64) and takes((1, 64, 56, 56), 64)
    assert takes((128, 16, 32, 32), 16) and takes((4, 256, 14, 14), 256)
    assert not takes((128, 8, 28, 28), 32) and not takes((128, 32, 28, 28), 8)  # few channels
    assert not takes((1, 256, 14, 14), 256)  # 49 tiles
    assert not takes((32, 512, 7, 7), 512)  # 8x8 of tiles for 7x7
    # frozen weights (an inference model): the filter transform is kept, 48+ tiles suffice,
    # and 7x7 outputs' tiles may reach further
    assert takes((1, 256, 14, 14), 256, frozen=True) and takes((1, 16, 14, 14), 16, frozen=True)
    assert takes((4, 64, 7, 7), 64, frozen=True)
    assert not takes((1, 512, 7, 7), 512, frozen=True) and not takes((1, 16, 12, 12), 16, frozen=True)  # 16, 36
    assert not takes((8, 64, 5, 5), 64, frozen=True)  # 9 tiles for 25 outputs
    assert not takes((1, 8, 14, 14), 16, frozen=True)  # few channels
    assert not takes((8, 32, 28, 28), 32, stride=2) and not takes((8, 32, 28, 28), 32, dilation=2, padding=2)
    assert not takes((8, 32, 28, 28), 32, groups=2) and not takes((8, 32, 28, 28), 32, k=5, padding=2)
    previous = runtime.set_jit(False)  # no compiled transforms: im2col
    try:
        assert not takes((128, 32, 28, 28), 32)
    finally:
        runtime.set_jit(previous)


def _frozen_copy(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def test_frozen_means_no_numpy_writer():
    a = np.ones((4, 3, 3, 3), np.float32)
    assert not winograd.frozen(a)
    view = a[:2]
    view.flags.writeable = False
    assert not winograd.frozen(view)  # a's memory stays writable through a
    a.flags.writeable = False
    assert winograd.frozen(a) and winograd.frozen(a[:2]) and winograd.frozen(a.reshape(4, 27))
    assert winograd.frozen(np.frombuffer(bytes(108 * 4), np.float32).reshape(4, 3, 3, 3))
    assert not winograd.frozen(np.frombuffer(bytearray(108 * 4), np.float32))  # a writable buffer


def test_prepared_filter_is_made_once_and_dropped_with_its_weights():
    import gc
    w = _frozen_copy(np.random.default_rng(3).standard_normal((5, 4, 3, 3)).astype(np.float32))
    u = winograd.prepared_filter(w)
    assert winograd.prepared_filter(w) is u and not u.flags.writeable
    np.testing.assert_array_equal(u, winograd.transform_filter(w))
    key = id(w)
    assert key in winograd._PREPARED
    del w
    gc.collect()
    assert key not in winograd._PREPARED


@pytest.mark.parametrize("n,c,f,h,wd", [(1, 32, 32, 14, 14), (1, 24, 40, 20, 19), (4, 16, 16, 8, 8),
                                        (1, 64, 48, 56, 56)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_frozen_weights_take_winograd_with_few_tiles_and_match_torch(n, c, f, h, wd, bias, dtype):
    """Frozen weights (as fuse_for_inference leaves them) keep their filter transform and
    run Winograd from WINOGRAD_MIN_TILES_PREPARED tiles; under FILTER_SPLIT_MAX_TILES the
    filters are split between two threads, each taking every tile. Forward (and with a
    fused ReLU) against PyTorch; the backward through the kept U too."""
    rng = np.random.default_rng(n * 1000 + c + h)
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = _frozen_copy((rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype))
    b = _frozen_copy(rng.standard_normal(f).astype(dtype)) if bias else None
    tiles = n * ((h + 1) // 2) * ((wd + 1) // 2)
    assert tiles >= conv.WINOGRAD_MIN_TILES_PREPARED
    runtime.set_num_threads(2)
    try:
        y, cache = conv2d_forward(x, w, b, 1, 1)
        yr = conv2d_forward(x, w, b, 1, 1, relu=True)[0]
        assert isinstance(cache[1], conv._WinogradSaved)
        assert id(w) in winograd._PREPARED
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, dw, db = conv2d_backward(dy, cache)
    finally:
        runtime.set_num_threads(1)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    ref = torch.nn.functional.conv2d(xt, wt, None if b is None else torch.from_numpy(b.astype(np.float64)), 1, 1)
    ref.backward(torch.from_numpy(dy.astype(np.float64)))
    tol = 1e-11 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y, ref.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(yr, np.maximum(ref.detach().numpy(), 0), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=tol, atol=tol * 10)


def test_new_frozen_weights_get_their_own_transform():
    """Assigning new weights (the way to change frozen ones) is seen at the next call."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    outs = []
    for _ in range(2):
        w = _frozen_copy(rng.standard_normal((16, 16, 3, 3)).astype(np.float32))
        got = conv2d_forward(x, w, None, 1, 1, relu=True)[0]
        ref = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(np.array(w)), None, 1, 1))
        np.testing.assert_allclose(got, ref.numpy(), rtol=2e-5, atol=2e-5)
        outs.append(got)
    assert not np.allclose(outs[0], outs[1])


@pytest.mark.parametrize("th,tw,r0,r1", [(16, 16, 0, 48), (16, 16, 5, 29), (16, 16, 16, 17), (9, 15, 4, 22),
                                         (4, 4, 0, 12), (4, 4, 3, 10), (7, 7, 2, 19), (1, 1, 0, 3)])
def test_input_transform_by_columns_matches_numpy(th, tw, r0, r1):
    """The compiled input transform goes column-first (_jit._winograd_input_by_columns,
    four rows of V written per loop): the same V as the NumPy twin (row-first) to float64
    rounding, on wide and small images (1x1 to 16x16 tiles), for chunks that start and end
    inside images and for one tile row."""
    rng = np.random.default_rng(4)
    c, n = 2, 3
    xp = rng.standard_normal((c, n, 2 * th + 2, 2 * tw + 2))
    got, ref = np.empty((c, 16, (r1 - r0) * tw)), np.empty((c, 16, (r1 - r0) * tw))
    KERNELS["jit"].winograd_input(xp, got, r0, r1)
    KERNELS["numpy"].winograd_input(xp, ref, r0, r1)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("th,tw,r0,r1,top,left", [(16, 16, 0, 48, 1, 1), (16, 16, 5, 29, 1, 1),
                                                  (16, 16, 16, 17, 0, 1), (9, 15, 4, 22, 2, 0),
                                                  (8, 8, 3, 21, 1, 1), (7, 7, 2, 19, 1, 1)])
def test_input_adjoint_on_wide_images_matches_numpy(th, tw, r0, r1, top, left):
    """The compiled input-transform adjoint writes the same dx rows and halo as the NumPy
    twin (float64, to rounding) on wide images, for chunks starting and ending inside
    images; rows it does not own stay as they were. Chunks with an image share of
    WINOGRAD_ADJOINT_FLAT_MIN (64) tiles or more go column-first
    (_jit._winograd_input_adjoint_by_columns); one tile row, and the 7x7 tiles, take the
    row-first loops."""
    rng = np.random.default_rng(5)
    c, n = 2, 3
    h, w = 2 * th + 2 - top - 1, 2 * tw + 2 - left - 1  # (one padding row/column each side at most)
    dv = rng.standard_normal((c, 16, (r1 - r0) * tw))
    start = rng.standard_normal((c, n, h, w))
    out = {}
    for kind in ("jit", "numpy"):
        dx, halo = start.copy(), np.zeros((c, 2, 2 * tw + 2))
        KERNELS[kind].winograd_input_adjoint(dv, dx, halo if r0 % th else np.empty((0, 2, 0)), r0, r1, th, tw,
                                             top, left)
        out[kind] = (dx, halo)
    np.testing.assert_allclose(out["jit"][0], out["numpy"][0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(out["jit"][1], out["numpy"][1], rtol=1e-13, atol=1e-13)


def test_buffer_rows_are_padded_off_4k_strides():
    """winograd._row_length: at least k, 4 more than a multiple of 8 (so a GEMM operand's
    rows, 16 buffer rows apart, are never a multiple of 4 KiB apart), never shrinking."""
    lengths = [winograd._row_length(k) for k in range(1, 600)]
    assert all(n >= k and n % 8 == 4 and n - k < 8 for k, n in zip(range(1, 600), lengths))
    assert lengths == sorted(lengths)
    assert all(16 * n * 4 % 4096 for n in lengths)


@pytest.mark.parametrize("kind", ["jit", "numpy"])
def test_output_transforms_ignore_spare_columns(kind):
    """M and dM buffers have spare columns past the chunk's tiles (the padded rows above):
    the output transform must not read them (NaN there stays out of y) and its adjoint
    must not write them; tw comes from the output's width, not the buffer's."""
    rng = np.random.default_rng(7)
    f, n, th, tw, r0, r1 = 3, 2, 3, 5, 1, 5
    ho, wo = 2 * th - 1, 2 * tw - 1
    k = (r1 - r0) * tw
    m = np.full((f, 16, k + 7), np.nan)
    m[:, :, :k] = rng.standard_normal((f, 16, k))
    y, y_ref = np.zeros((f, n, ho, wo)), np.zeros((f, n, ho, wo))
    KERNELS[kind].winograd_output(m, y, np.empty(0), r0, r1, th, False)
    KERNELS[kind].winograd_output(np.ascontiguousarray(m[:, :, :k]), y_ref, np.empty(0), r0, r1, th, False)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, y_ref)
    dy = rng.standard_normal((f, n, ho, wo))
    dm = np.full((f, 16, k + 7), np.nan)
    KERNELS[kind].winograd_output_adjoint(dy, dm, r0, r1, th)
    dm_ref = np.empty((f, 16, k))
    KERNELS[kind].winograd_output_adjoint(dy, dm_ref, r0, r1, th)
    np.testing.assert_array_equal(dm[:, :, :k], dm_ref)
    assert np.isnan(dm[:, :, k:]).all()


def test_plan_cuts_chunks_at_whole_images(monkeypatch):
    """Where a chunk's byte budget holds an image's tile rows or more (and the thread
    share does not decide), chunks are whole images; otherwise as many tile rows as fit.
    A chunk whose GEMMs would do under MIN_CHUNK_MACS grows to the nearest whole number of
    images that reaches it."""
    previous = runtime.get_num_threads()
    runtime.set_num_threads(2)
    try:
        monkeypatch.setattr(winograd, "MIN_CHUNK_MACS", 0)
        chunks, most, _ = winograd._plan(128, 14, 14, 32, 32, 4)  # budget 18 tile rows -> 14
        assert [r1 - r0 for r0, r1 in chunks] == [14] * 128 and most == 14 * 14
        monkeypatch.undo()
        # 14 rows: 16*32*32*196 = 3.2 M multiply-adds; 26.2 rows for 6 M -> two images
        chunks, most, _ = winograd._plan(128, 14, 14, 32, 32, 4)
        assert [r1 - r0 for r0, r1 in chunks] == [28] * 64 and most == 28 * 14
        chunks, most, _ = winograd._plan(128, 16, 16, 16, 16, 4)  # 91.6 rows -> six images
        assert {r1 - r0 for r0, r1 in chunks} == {96, 32} and most == 96 * 16
        chunks, most, _ = winograd._plan(128, 7, 7, 64, 64, 4)  # 14 rows already do 6.4 M
        assert {r1 - r0 for r0, r1 in chunks} == {14} and most == 14 * 7
        chunks, most, _ = winograd._plan(8, 28, 28, 64, 64, 4)  # budget 4 < 28: not whole images
        assert {r1 - r0 for r0, r1 in chunks} == {4} and most == 4 * 28
        chunks, _, _ = winograd._plan(1, 14, 14, 16, 16, 4)  # one image: the thread share, 7 rows
        assert [r1 - r0 for r0, r1 in chunks] == [7, 7]
    finally:
        runtime.set_num_threads(previous)

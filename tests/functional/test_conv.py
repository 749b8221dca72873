"""Tests of the conv2d kernel (cnnkit.functional.conv) and of the loop oracle
(cnnkit.functional.naive).

Four layers, as STYLE.md asks:
1. seeded random sweeps against PyTorch (>= 500 configurations per run, float32
   and float64, forward and all three gradients), and of the loop oracle;
2. the fast kernel against the loop oracle (float64, rtol 1e-12);
3. float64 central-difference gradient checks;
4. known answers: the lecture's 5x5 image, arange inputs, the lecture's
   dot-product accounting written out with primes, flip, the "flipped
   convolution" identity of the backward pass;
plus errors, N = 0 and dtype preservation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit.functional import conv, naive
from cnnkit.functional.conv import conv2d, conv2d_backward, conv2d_forward
from cnnkit.functional.window import conv_out_size, output_hw, resolve_padding
from tests.helpers import numeric_grad

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel:UserWarning")

# ---------------------------------------------------------------------------------
# Random configurations
# ---------------------------------------------------------------------------------
N_TORCH_CHUNKS, TORCH_CHUNK = 12, 50          # 600 configurations against PyTorch
N_NAIVE_CHUNKS, NAIVE_CHUNK = 6, 50           # 300 configurations against the oracle
N_ORACLE_VS_TORCH = 80                        # the oracle itself against PyTorch

PAD_FORMS = ("int", "pair", "quad", "valid", "same")
LAYOUTS = ("contiguous", "transposed", "negative_strides", "step_slice")


def _int_or_pair(rng, h, w):
    """Pass a pair as an int when both are equal, half of the time."""
    return int(h) if h == w and rng.random() < 0.5 else (int(h), int(w))


def _normalize_padding(form, raw, kernel, stride, dilation, in_hw):
    """The reference normalization to (top, bottom, left, right), written from the
    contract independently of cnnkit.functional.window."""
    if form == "int":
        return (raw, raw, raw, raw)
    if form == "pair":
        return (raw[0], raw[0], raw[1], raw[1])
    if form == "quad":
        return tuple(raw)
    if form == "valid":
        return (0, 0, 0, 0)
    top, bottom = naive.same_padding(in_hw[0], kernel[0], stride[0], dilation[0])
    left, right = naive.same_padding(in_hw[1], kernel[1], stride[1], dilation[1])
    return (top, bottom, left, right)


def draw_conv_config(rng, *, small=False):
    """One random, possible convolution. Impossible shapes (output < 1) are drawn again."""
    cmax, smax = (4, 8) if small else (8, 16)
    while True:
        kind = rng.choice(["plain", "plain", "grouped", "depthwise"])
        if kind == "plain":
            groups, c_in, c_out = 1, int(rng.integers(1, cmax + 1)), int(rng.integers(1, cmax + 1))
        elif kind == "grouped":
            groups = int(rng.integers(2, 5))
            if groups > cmax:
                continue
            c_in = groups * int(rng.integers(1, cmax // groups + 1))
            c_out = groups * int(rng.integers(1, cmax // groups + 1))
        else:  # depthwise, with a channel multiplier m: C_out = m * C_in
            c_in = int(rng.integers(1, cmax + 1))
            groups = c_in
            c_out = c_in * int(rng.integers(1, max(1, cmax // c_in) + 1))
        n = 0 if rng.random() < 0.05 else int(rng.integers(1, 3 if small else 5))
        h, w = (int(v) for v in rng.integers(1, smax + 1, size=2))
        kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
        sh, sw = (int(v) for v in rng.integers(1, 5, size=2))
        dh, dw = (int(v) for v in rng.integers(1, 4, size=2))
        form = PAD_FORMS[int(rng.integers(len(PAD_FORMS)))]
        if form == "int":
            raw = int(rng.integers(0, 4))
        elif form == "pair":
            raw = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        elif form == "quad":
            raw = tuple(int(v) for v in rng.integers(0, 4, size=4))
        else:
            raw = form
        pads = _normalize_padding(form, raw, (kh, kw), (sh, sw), (dh, dw), (h, w))
        ho = naive.out_size(h, kh, sh, pads[0], pads[1], dh)
        wo = naive.out_size(w, kw, sw, pads[2], pads[3], dw)
        if ho < 1 or wo < 1:
            continue
        return dict(
            n=n, c_in=c_in, c_out=c_out, groups=groups, h=h, w=w, kernel=(kh, kw),
            stride=(sh, sw), stride_arg=_int_or_pair(rng, sh, sw),
            dilation=(dh, dw), dilation_arg=_int_or_pair(rng, dh, dw),
            pad_form=form, padding_arg=raw, pads=pads, out_hw=(ho, wo),
            bias=bool(rng.random() < 0.7), flip=bool(rng.random() < 0.2),
            layout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
            seed=int(rng.integers(2**31)))


def make_array(rng, shape, layout, dtype):
    """A standard-normal array of ``shape`` laid out in memory as ``layout`` says.

    The view is taken after the cast (``astype`` would make it contiguous again).
    """
    shape = tuple(shape)
    normal = lambda s: rng.standard_normal(s).astype(dtype)
    if layout == "contiguous":
        a = normal(shape)
    elif layout == "transposed":           # last two axes swapped: a transposed view
        a = normal(shape[:-2] + (shape[-1], shape[-2])).swapaxes(-1, -2)
    elif layout == "negative_strides":     # every axis reversed: negative strides
        a = normal(shape)[tuple(slice(None, None, -1) for _ in shape)]
    else:                                  # every other column of a wider array
        a = normal(shape[:-1] + (2 * shape[-1],))[..., ::2]
    assert a.shape == shape and a.dtype == dtype
    return a


def conv_arrays(cfg, dtype):
    rng = np.random.default_rng(cfg["seed"])
    kh, kw = cfg["kernel"]
    x = make_array(rng, (cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]), cfg["layout"], dtype)
    w = make_array(rng, (cfg["c_out"], cfg["c_in"] // cfg["groups"], kh, kw),
                   "negative_strides" if cfg["layout"] == "negative_strides" else "contiguous", dtype)
    b = rng.standard_normal(cfg["c_out"]).astype(dtype) if cfg["bias"] else None
    dy = make_array(rng, (cfg["n"], cfg["c_out"]) + cfg["out_hw"], cfg["layout"], dtype)
    return x, w, b, dy


def _configs(seed, count, **kw):
    rng = np.random.default_rng(seed)
    return [draw_conv_config(rng, **kw) for _ in range(count)]


TORCH_CONFIGS = _configs(20240501, N_TORCH_CHUNKS * TORCH_CHUNK)
NAIVE_CONFIGS = _configs(20240502, N_NAIVE_CHUNKS * NAIVE_CHUNK, small=True)
ORACLE_CONFIGS = _configs(20240503, N_ORACLE_VS_TORCH, small=True)


# ---------------------------------------------------------------------------------
# References and comparison
# ---------------------------------------------------------------------------------
def torch_conv(cfg, x, w, b, dy):
    """PyTorch's conv2d and autograd gradients, in x's dtype.

    int / pair / 'valid' padding and 'same' at stride 1 are handed to PyTorch as
    they are; an asymmetric 4-tuple and 'same' at stride > 1 (which PyTorch's
    conv2d does not take) become an explicit F.pad of the input and padding 0.
    flip=True convolves with the rotated kernel; autograd then gives the
    gradient with respect to the unrotated one.
    """
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    wt = torch.from_numpy(np.array(w)).requires_grad_(True)
    bt = None if b is None else torch.from_numpy(np.array(b)).requires_grad_(True)
    form, raw, pads = cfg["pad_form"], cfg["padding_arg"], cfg["pads"]
    if form in ("int", "pair", "valid") or (form == "same" and cfg["stride"] == (1, 1)):
        xin, padding = xt, raw
    else:
        top, bottom, left, right = pads
        xin, padding = TF.pad(xt, (left, right, top, bottom)), 0
    w_used = wt.flip(-2, -1) if cfg["flip"] else wt
    y = TF.conv2d(xin, w_used, bt, cfg["stride"], padding, cfg["dilation"], cfg["groups"])
    y.backward(torch.from_numpy(np.array(dy)))
    return (y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(),
            None if bt is None else bt.grad.numpy())


def assert_close(actual, expected, scale, dtype, what):
    """``|actual - expected| <= atol + rtol*|expected| + c*scale`` elementwise.

    rtol/atol are 1e-4/1e-5 for float32 and 1e-10/1e-13 for float64. ``scale`` is
    the sum of the absolute values of the terms that made each element (the
    same computation run on |x|, |w|, |b|, |dy|). The last term is there because
    an element that is a sum of n terms carries a rounding error of up to about
    n * u * sum|terms| (u = 6e-8 in float32), whatever its own size: two
    implementations that add in different orders (im2col+GEMM, PyTorch's
    kernels, the loops) legitimately differ by that much where terms cancel.
    With n up to ~1000 here (dw sums over N*Ho*Wo) we allow c = 16u.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if dtype == np.float32:
        rtol, atol, c = 1e-4, 1e-5, 16 * 6e-8
    else:
        rtol, atol, c = 1e-10, 1e-13, 16 * 1.1e-16
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    tol = atol + rtol * np.abs(expected.astype(np.float64)) + c * np.asarray(scale, np.float64)
    bad = ~(err <= tol)
    if bad.any():
        k = np.flatnonzero(bad.reshape(-1))[0]
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements differ; first at flat index {k}: "
            f"actual {actual.reshape(-1)[k]!r}, expected {expected.reshape(-1)[k]!r}, "
            f"tolerance {tol.reshape(-1)[k]:.3g}")


def abs_scales(cfg, x, w, b, dy):
    """Sum of |terms| of every element of y, dx, dw, db (PyTorch, float64)."""
    a = lambda v: None if v is None else np.abs(np.asarray(v, dtype=np.float64))
    return torch_conv(cfg, a(x), a(w), a(b), a(dy))


def run_fast(cfg, x, w, b, dy):
    y, cache = conv2d_forward(x, w, b, stride=cfg["stride_arg"], padding=cfg["padding_arg"],
                              dilation=cfg["dilation_arg"], groups=cfg["groups"], flip=cfg["flip"])
    dx, dw, db = conv2d_backward(dy, cache)
    return y, dx, dw, db


def check_against(cfg, dtype, got, ref, scales):
    names = ("y", "dx", "dw", "db")
    for name, g, r, s in zip(names, got, ref, scales):
        if r is None:
            assert g is None, f"{name} should be None when there is no bias; config {cfg}"
            continue
        assert g.dtype == dtype, f"{name} dtype {g.dtype} != {dtype}; config {cfg}"
        assert_close(g, r, s, dtype, f"{name} ({np.dtype(dtype).name}) for config {cfg}")


# ---------------------------------------------------------------------------------
# 1. Against PyTorch
# ---------------------------------------------------------------------------------
def test_torch_configuration_count_and_coverage():
    """>= 500 configurations against PyTorch, and the sweep covers what it claims."""
    cs = TORCH_CONFIGS
    assert len(cs) >= 500, len(cs)
    seen = lambda pred: sum(1 for c in cs if pred(c))
    assert seen(lambda c: c["n"] == 0) > 0
    assert {c["n"] for c in cs} == {0, 1, 2, 3, 4}
    assert seen(lambda c: c["groups"] == c["c_in"] > 1 and c["c_out"] > c["c_in"]) > 0  # depthwise, multiplier
    assert seen(lambda c: 1 < c["groups"] < c["c_in"]) > 0                              # grouped
    assert seen(lambda c: c["kernel"][0] != c["kernel"][1]) > 0                          # non-square
    assert seen(lambda c: c["stride"][0] > c["kernel"][0]) > 0                          # stride > kernel
    assert seen(lambda c: c["pad_form"] == "same" and max(c["stride"]) > 1) > 0
    assert seen(lambda c: c["pad_form"] == "quad" and c["pads"][0] != c["pads"][1]) > 0
    assert {c["pad_form"] for c in cs} == set(PAD_FORMS)
    assert {c["layout"] for c in cs} == set(LAYOUTS)
    assert {d for c in cs for d in c["dilation"]} == {1, 2, 3}
    assert {s for c in cs for s in c["stride"]} == {1, 2, 3, 4}
    assert seen(lambda c: c["flip"]) > 0 and seen(lambda c: not c["bias"]) > 0
    assert seen(lambda c: c["h"] == 1 or c["w"] == 1) > 0


@pytest.mark.parametrize("chunk", range(N_TORCH_CHUNKS))
def test_conv2d_matches_torch(chunk):
    configs = TORCH_CONFIGS[chunk * TORCH_CHUNK:(chunk + 1) * TORCH_CHUNK]
    done = 0
    for cfg in configs:
        for dtype in (np.float32, np.float64):
            x, w, b, dy = conv_arrays(cfg, dtype)
            got = run_fast(cfg, x, w, b, dy)
            ref = torch_conv(cfg, x, w, b, dy)
            check_against(cfg, dtype, got, ref, abs_scales(cfg, x, w, b, dy))
        done += 1
    assert done == TORCH_CHUNK


def test_oracle_matches_torch():
    """The loop oracle itself agrees with PyTorch (float64)."""
    for cfg in ORACLE_CONFIGS:
        x, w, b, dy = conv_arrays(cfg, np.float64)
        args = (cfg["stride"], cfg["pads"], cfg["dilation"], cfg["groups"])
        y = naive.conv2d_forward_naive(x, w, b, *args, flip=cfg["flip"])
        dx, dw, db = naive.conv2d_backward_naive(dy, x, w, b, *args, flip=cfg["flip"])
        check_against(cfg, np.float64, (y, dx, dw, db), torch_conv(cfg, x, w, b, dy),
                      abs_scales(cfg, x, w, b, dy))


def test_same_padding_formula_matches_torch_at_stride_1():
    """Our reference 'same' split equals PyTorch's padding='same' (stride 1)."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 12, size=2))
        kh, kw, dh, dw = (int(v) for v in rng.integers(1, 6, size=4))
        x = torch.from_numpy(rng.standard_normal((1, 2, h, w)))
        k = torch.from_numpy(rng.standard_normal((3, 2, kh, kw)))
        pt, pb = naive.same_padding(h, kh, 1, dh)
        pl, pr = naive.same_padding(w, kw, 1, dw)
        ref = TF.conv2d(x, k, padding="same", dilation=(dh, dw))
        ours = TF.conv2d(TF.pad(x, (pl, pr, pt, pb)), k, dilation=(dh, dw))
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
        assert ref.shape[-2:] == (h, w)


# ---------------------------------------------------------------------------------
# 2. Against the loop oracle
# ---------------------------------------------------------------------------------
def test_naive_configuration_count():
    assert len(NAIVE_CONFIGS) >= 300


@pytest.mark.parametrize("chunk", range(N_NAIVE_CHUNKS))
def test_conv2d_matches_naive_oracle(chunk):
    """Fast kernel vs loops, float64, rtol 1e-12 (plus a rounding term tied to the
    sum of |terms|, see assert_close: the two add in different orders)."""
    for cfg in NAIVE_CONFIGS[chunk * NAIVE_CHUNK:(chunk + 1) * NAIVE_CHUNK]:
        x, w, b, dy = conv_arrays(cfg, np.float64)
        args = (cfg["stride"], cfg["pads"], cfg["dilation"], cfg["groups"])
        ref = (naive.conv2d_forward_naive(x, w, b, *args, flip=cfg["flip"]),
               *naive.conv2d_backward_naive(dy, x, w, b, *args, flip=cfg["flip"]))
        a = lambda v: None if v is None else np.abs(v)
        scales = (naive.conv2d_forward_naive(a(x), a(w), a(b), *args, flip=cfg["flip"]),
                  *naive.conv2d_backward_naive(a(dy), a(x), a(w), a(b), *args, flip=cfg["flip"]))
        got = run_fast(cfg, x, w, b, dy)
        for name, g, r, s in zip(("y", "dx", "dw", "db"), got, ref, scales):
            if r is None:
                assert g is None
                continue
            err = np.abs(g - r)
            tol = 1e-12 * np.abs(r) + 1e-14 * (1 + s)
            assert g.shape == r.shape and (err <= tol).all(), \
                f"{name}: max error {err.max() if err.size else 0:.3g} for config {cfg}"


@pytest.fixture
def chunked_parallel(monkeypatch):
    """One image per column chunk (or one column range per thread for 1x1 convs), the
    chunks on two worker threads: the paths that large batches take."""
    from cnnkit import runtime
    from cnnkit.functional import conv
    monkeypatch.setattr(conv._Geometry, "chunk_bytes", 1)
    monkeypatch.setattr(conv._Geometry, "parallel_bytes", 0)
    assert runtime.set_num_threads(2) == 2
    yield
    runtime.set_num_threads(1)


@pytest.mark.parametrize("chunk", range(N_NAIVE_CHUNKS))
def test_conv2d_chunked_on_two_threads_matches_naive_oracle(chunk, chunked_parallel):
    """The same 300 configurations and tolerance, with every chunk boundary and worker
    split in play (dw summed over chunks and threads, dx added image by image)."""
    test_conv2d_matches_naive_oracle(chunk)


@pytest.mark.parametrize("chunk", range(N_NAIVE_CHUNKS))
def test_conv2d_dw_summed_by_rows_matches_naive_oracle(chunk, chunked_parallel, monkeypatch):
    """The 300 configurations chunk by chunk on two threads with dw summed as (G, Fg, K),
    dy @ x_col.T (what weights of dw_rows_min and more take), instead of its transpose."""
    from cnnkit.functional import conv
    monkeypatch.setattr(conv._Geometry, "dw_rows_min", 0)
    test_conv2d_matches_naive_oracle(chunk)


@pytest.fixture(params=["dx_by_convolution", "dx_by_col2im"])
def dx_path(request, monkeypatch):
    """Either backward path for dx at stride 1, in every mode and channel count: as a
    convolution of dy with the rotated kernel, or as w.T @ dy scattered back (col2im)."""
    from cnnkit.functional import conv
    modes = ("strided", "shift") if request.param == "dx_by_convolution" else ()
    monkeypatch.setattr(conv._Geometry, "dx_by_convolution", modes)
    monkeypatch.setattr(conv._Geometry, "dx_min_channels", 1)
    monkeypatch.setattr(conv._Geometry, "dx_max_weight_ratio", float("inf"))
    conv._geometry.cache_clear()  # geometries remember their dx_geometry
    yield request.param
    monkeypatch.undo()
    conv._geometry.cache_clear()


@pytest.mark.parametrize("chunk", range(N_NAIVE_CHUNKS))
def test_conv2d_both_dx_paths_match_naive_oracle(chunk, dx_path):
    """The 300 configurations and tolerance with the stride-1 dx path forced each way
    (the default picks by mode and channels, so small configurations rarely take the
    convolution path on their own)."""
    test_conv2d_matches_naive_oracle(chunk)


@pytest.fixture(params=["batch_inner", "image_major"])
def strided_layout(request, monkeypatch):
    """Either column order of strided mode at stride 1, in every configuration, with one
    image per chunk on two worker threads: (kH*kW, Ho, Wo, images), the image index
    innermost, or (kH*kW, images, Ho, Wo)."""
    from cnnkit import runtime
    from cnnkit.functional import conv
    width = 10 ** 9 if request.param == "batch_inner" else 0
    monkeypatch.setattr(conv._Geometry, "batch_inner_max_width", width)
    monkeypatch.setattr(conv._Geometry, "chunk_bytes", 1)
    monkeypatch.setattr(conv._Geometry, "parallel_bytes", 0)
    assert runtime.set_num_threads(2) == 2
    yield request.param
    runtime.set_num_threads(1)


@pytest.mark.parametrize("chunk", range(N_NAIVE_CHUNKS))
def test_conv2d_both_strided_layouts_match_naive_oracle(chunk, strided_layout):
    """The 300 configurations and tolerance with strided mode's column order forced each
    way, chunk by chunk on two threads (the default picks by output width)."""
    test_conv2d_matches_naive_oracle(chunk)


def test_batch_inner_choice():
    """The default: batch-inner columns in strided mode at stride 1 with outputs at most
    16 wide; image-major for wider outputs, strides above 1, one image, and the other modes."""
    from cnnkit.functional import conv
    geo = lambda x, w, pads, stride=(1, 1): conv._Geometry(
        x, w, pads, stride, (1, 1), output_hw(x[2:], w[2:], stride, (1, 1), pads, "t"), 1)
    assert geo((64, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)).batch_inner             # LeNet's C2
    assert geo((8, 512, 7, 7), (512, 512, 3, 3), (1, 1, 1, 1)).batch_inner           # ResNet's last 3x3
    assert not geo((64, 1, 28, 28), (6, 1, 5, 5), (2, 2, 2, 2)).batch_inner          # 28 wide
    assert not geo((8, 128, 28, 28), (128, 128, 3, 3), (1, 1, 1, 1), (2, 2)).batch_inner  # stride 2
    assert not geo((8, 32, 28, 28), (32, 32, 3, 3), (1, 1, 1, 1)).batch_inner       # shift mode
    assert not geo((8, 32, 14, 14), (32, 32, 1, 1), (0, 0, 0, 0)).batch_inner       # pointwise
    assert not geo((1, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)).batch_inner          # one image


def test_fused_relu_forward_keeps_no_columns(monkeypatch):
    """A forward with a fused ReLU has no backward, so it builds its columns into the
    reused chunk buffer instead of keeping a fresh copy of each (small convs keep them
    for the backward otherwise); the output is the same."""
    calls = []
    real = conv._forward_columns

    def spy(x, geo, w_mat, keep, *rest):
        calls.append(keep)
        return real(x, geo, w_mat, keep, *rest)
    monkeypatch.setattr(conv, "_forward_columns", spy)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, 3, 7, 7)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    y_plain, cache = conv2d_forward(x, w, b, 2, 3)
    y_fused, none = conv2d_forward(x, w, b, 2, 3, relu=True)
    assert calls == [True, False] and cache[2] and none is None
    np.testing.assert_array_equal(y_fused, np.maximum(y_plain, 0))


RESIDUAL_CASES = [  # (N, C, F, H, kernel, stride, padding, groups): every kind of forward
    (1, 16, 32, 12, 1, 1, 0, 1),     # pointwise, one image: in the epilogue
    (3, 16, 32, 12, 1, 1, 0, 1),     # pointwise, NCHW residual of 3 images (copied to columns)
    (2, 8, 12, 11, 3, 2, 1, 1),      # strided im2col: in the epilogue
    (1, 8, 12, 9, 1, 2, 0, 1),       # 1x1 stride 2 (strided mode)
    (2, 8, 12, 10, 3, 1, 1, 1),      # shift mode: added after the conv
    (2, 32, 32, 16, 3, 1, 1, 1),     # Winograd
    (2, 6, 6, 10, 3, 1, 1, 6),       # depthwise
    (2, 1, 6, 12, 5, 1, 2, 1),       # direct (K <= 32)
    (2, 8, 16, 9, 3, 2, 1, 2),       # grouped, strided
]


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "numpy"])
@pytest.mark.parametrize("case", RESIDUAL_CASES)
def test_forward_with_residual_same_bits_as_conv_then_add(case, jit):
    """conv2d_forward(..., residual=r[, relu=True]) equals the conv followed by
    functional.add(y, r[, relu=True]) to the bit, for every kind of forward (in the GEMM
    epilogue where the results go straight into y, after the conv elsewhere), with NaN and
    -0.0 in the residual; it keeps nothing for a backward. A residual that broadcasts or
    has another dtype gets NumPy's Add semantics."""
    from cnnkit import runtime
    from cnnkit.functional.activation import add
    n, c, f, h, k, s, p, g = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c // g, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    previous = runtime.set_jit(jit)
    try:
        y = conv2d_forward(x, w, b, s, p, groups=g)[0]
        r = rng.standard_normal(y.shape).astype(np.float32)
        r[0, 0, 0, 0], r[-1, -1, -1, -1] = np.nan, -0.0
        for relu in (False, True):
            got, cache = conv2d_forward(x, w, b, s, p, groups=g, relu=relu, residual=r)
            expect = add(y, r, relu=relu)
            assert cache is None and got.shape == expect.shape
            np.testing.assert_array_equal(got, expect)
        wide = rng.standard_normal((1, f, 1, 1)).astype(np.float32)  # broadcasts over images and pixels
        np.testing.assert_array_equal(conv2d_forward(x, w, b, s, p, groups=g, residual=wide)[0], y + wide)
        r64 = r.astype(np.float64)
        got = conv2d_forward(x, w, b, s, p, groups=g, residual=r64)[0]
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, y + r64)
    finally:
        runtime.set_jit(previous)


def test_serial_choice(monkeypatch):
    """Small convs run on the calling thread; a batch-1 conv with few columns but a large
    GEMM, or a 1x1 conv of one image, is one chunk whose GEMM gets BLAS on every core; big
    convs split by images."""
    from cnnkit import runtime
    from cnnkit.functional import conv
    monkeypatch.setitem(runtime._state, "threads", 2)
    geo = lambda x, w, pads, g=1: conv._Geometry(
        x, w, pads, (1, 1), (1, 1), output_hw(x[2:], w[2:], (1, 1), (1, 1), pads, "t"), g)
    assert geo((2, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)).serial(4)                 # LeNet's C2, batch 2
    r50 = geo((1, 512, 7, 7), (512, 512, 3, 3), (1, 1, 1, 1))                          # 0.9 MB of columns
    assert r50.threads(4) == 1 and not r50.serial(4) and len(list(r50.chunks(4))) == 1
    assert not geo((1, 512, 14, 14), (512, 512, 1, 1), (0, 0, 0, 0)).serial(4)        # MobileNet's 1x1
    big = geo((64, 32, 28, 28), (32, 32, 3, 3), (1, 1, 1, 1))
    assert big.threads(4) == 2 and not big.serial(4) and len(list(big.chunks(4))) >= 2
    # a 1x1 conv of one image: one GEMM (BLAS threads it) up to 16 MB of input; batches split
    one = geo((1, 256, 56, 56), (64, 256, 1, 1), (0, 0, 0, 0))                         # 3.2 MB
    assert one.threads(4) == 1 and not one.serial(4) and len(list(one.chunks(4))) == 1
    assert geo((1, 1024, 64, 64), (64, 1024, 1, 1), (0, 0, 0, 0)).threads(4) == 2      # 16.8 MB
    assert geo((8, 512, 14, 14), (512, 512, 1, 1), (0, 0, 0, 0)).threads(4) == 2       # batch 8


def test_dx_path_choice(monkeypatch):
    """The default: dx as a convolution in strided mode from 32 channels per group,
    at stride 1, pads no wider than the dilated kernel and weights at most twice the
    input's size; col2im elsewhere."""
    from cnnkit.functional import conv
    conv._geometry.cache_clear()
    geo = lambda x, w, pads, stride=(1, 1), dil=(1, 1), g=1: conv._Geometry(
        x, w, pads, stride, dil, output_hw(x[2:], w[2:], stride, dil, pads, "t"), g)
    by_conv = geo((2, 64, 14, 14), (64, 64, 3, 3), (1, 1, 1, 1))
    assert by_conv.mode == "strided" and by_conv.dx_geometry is not None
    assert by_conv.dx_geometry.x_shape == (2, 64, 14, 14) and by_conv.dx_geometry.w_shape == (64, 64, 3, 3)
    assert by_conv.dx_geometry.pads == (1, 1, 1, 1)
    assert geo((2, 32, 28, 28), (32, 32, 3, 3), (1, 1, 1, 1)).dx_geometry is None        # shift mode
    assert geo((2, 6, 14, 14), (16, 6, 5, 5), (0, 0, 0, 0)).dx_geometry is None          # 6 channels
    assert geo((2, 64, 15, 15), (64, 64, 3, 3), (1, 1, 1, 1), (2, 2)).dx_geometry is None  # stride 2
    assert geo((2, 64, 9, 9), (64, 64, 3, 3), (3, 3, 3, 3)).dx_geometry is None          # pad > k-1
    grouped = geo((4, 128, 7, 7), (128, 32, 3, 3), (2, 2, 2, 2), dil=(2, 2), g=4)
    assert grouped.dx_geometry.pads == (2, 2, 2, 2) and grouped.dx_geometry.w_shape == (128, 32, 3, 3)
    # weights over twice the input's size (their rotated copy costs more than col2im)
    assert geo((1, 512, 7, 7), (512, 512, 3, 3), (1, 1, 1, 1)).dx_geometry is None     # 94x
    assert geo((2, 128, 7, 7), (128, 32, 3, 3), (2, 2, 2, 2), dil=(2, 2), g=4).dx_geometry is None  # 2.9x
    assert geo((64, 512, 7, 7), (512, 512, 3, 3), (1, 1, 1, 1)).dx_geometry is not None  # 1.5x


def test_chunked_parallel_equals_one_chunk_float32(monkeypatch):
    """cnn_bn's second conv at batch 16 (shift mode), its fourth (strided mode, dx as a
    convolution), a strided conv and a grouped 1x1: chunked on two threads vs one
    whole-batch chunk in float32, and vs PyTorch."""
    from cnnkit import runtime
    from cnnkit.functional import conv
    rng = np.random.default_rng(3)
    cases = [((16, 32, 28, 28), (32, 32, 3, 3), dict(padding=1)),
             ((16, 64, 14, 14), (64, 64, 3, 3), dict(padding=1)),
             ((16, 8, 15, 15), (12, 8, 3, 3), dict(stride=2, padding=1)),
             ((16, 8, 9, 9), (6, 4, 1, 1), dict(groups=2))]
    for xs, ws, kw in cases:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        y0, cache = conv2d_forward(x, w, None, **kw)
        dy = rng.standard_normal(y0.shape).astype(np.float32)
        one = (y0, *conv2d_backward(dy, cache)[:2])
        monkeypatch.setattr(conv._Geometry, "chunk_bytes", 1)
        monkeypatch.setattr(conv._Geometry, "parallel_bytes", 0)
        runtime.set_num_threads(2)
        try:
            y1, cache = conv2d_forward(x, w, None, **kw)
            many = (y1, *conv2d_backward(dy, cache)[:2])
        finally:
            runtime.set_num_threads(1)
            monkeypatch.undo()
        def torch_grads(x, w, dy):  # float64: the reference, and with |values| the size of each sum
            xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
            wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
            yt = TF.conv2d(xt, wt, None, kw.get("stride", 1), kw.get("padding", 0), 1, kw.get("groups", 1))
            yt.backward(torch.from_numpy(dy.astype(np.float64)))
            return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()
        ref, sums = torch_grads(x, w, dy), torch_grads(np.abs(x), np.abs(w), np.abs(dy))
        for name, a, b, r, s in zip(("y", "dx", "dw"), one, many, ref, sums):
            tol = 1e-6 * s  # about 8 float32 epsilons of the sum of |terms|
            assert (np.abs(b - a) <= tol).all(), f"{name} {xs}: chunked vs one chunk"
            assert (np.abs(b - r) <= tol).all(), f"{name} {xs}: chunked vs PyTorch float64"
            assert (np.abs(a - r) <= tol).all(), f"{name} {xs}: one chunk vs PyTorch float64"


ROW_RUN_CASES = [  # (C, F, H, kernel, stride, padding, dilation, groups)
    (3, 8, 23, 7, 2, 3, 1, 1),    # ResNet's stem, small: 12 output rows
    (3, 8, 27, 11, 4, 2, 1, 1),   # AlexNet's 11x11 s4: 6 rows
    (8, 12, 15, 3, 2, 1, 1, 1),   # 3x3 s2
    (6, 8, 17, 3, 1, 2, 2, 2),    # dilated, grouped, stride 1 (strided mode: a wide padded grid)
]


@pytest.mark.parametrize("unpadded", [True, False], ids=["from_x", "padded_copy"])
@pytest.mark.parametrize("jit", [True, False], ids=["jit", "numpy"])
@pytest.mark.parametrize("case", ROW_RUN_CASES)
def test_batch_1_row_runs_match_whole_image_and_torch(case, jit, unpadded, monkeypatch):
    """A one-image forward in strided mode cut into runs of output rows on two threads
    (row_run; forced here by a tiny row_run_bytes, so the runs are 1-3 rows and the
    last one short) gives the whole-image forward's values, with bias, residual and
    ReLU, inside blas_threaded (batch-1 inference) and outside it, and matches PyTorch
    in float64; a training forward cut in runs still has the right gradients (its
    backward takes whole images, its columns built again). With the columns read from x
    itself (im2col_unpadded, forced by unpadded_min_bytes = unpadded_s2_min_bytes = 0) or
    from the padded copy."""
    from cnnkit import runtime
    c, f, h, k, s, p, d, g = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((1, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c // g, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    previous = runtime.set_jit(jit)
    conv._geometry.cache_clear()
    try:
        whole = conv2d_forward(x, w, b, s, p, d, g)[0]
        r = rng.standard_normal(whole.shape).astype(np.float32)
        ref = [np.maximum(conv2d_forward(x, w, b, s, p, d, g)[0] + r, 0)]
        runtime.set_num_threads(2)
        monkeypatch.setattr(conv._Geometry, "row_run_bytes", 1)
        monkeypatch.setattr(conv._Geometry, "keep_bytes", 0)
        monkeypatch.setattr(conv._Geometry, "unpadded_min_bytes", 0 if unpadded else 1 << 60)
        monkeypatch.setattr(conv._Geometry, "unpadded_s2_min_bytes", 0 if unpadded else 1 << 60)
        conv._geometry.cache_clear()
        y, cache = conv2d_forward(x, w, b, s, p, d, g)
        geo = cache[0]
        assert isinstance(cache[1], conv.Planes) == (unpadded and jit)
        runs = list(geo.chunks(4, rows=True))
        assert geo.mode == "strided" and len(runs) >= 4 and (len(runs) % 2 == 0 or len(runs) == y.shape[2])
        assert [ch[2:] for ch in runs] == list(zip([ch[2] for ch in runs], [ch[2] for ch in runs[1:]] + [y[0, 0].size]))
        assert len(list(geo.chunks(4))) == 1  # the backward's: the whole image
        tol = 1e-6 * np.abs(TF.conv2d(torch.from_numpy(np.abs(x).astype(np.float64)),
                                      torch.from_numpy(np.abs(w).astype(np.float64)),
                                      torch.from_numpy(np.abs(b).astype(np.float64)), s, p, d, g).numpy())
        exact = TF.conv2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                          torch.from_numpy(b.astype(np.float64)), s, p, d, g).numpy()
        assert (np.abs(y - whole) <= tol).all() and (np.abs(y - exact) <= tol).all()
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = conv2d_backward(dy, cache)
        xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
        TF.conv2d(xt, wt, None, s, p, d, g).backward(torch.from_numpy(dy.astype(np.float64)))
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-4, atol=1e-4)
        for region in (False, True):
            with runtime.blas_threaded() if region else conv._no_context:
                got = conv2d_forward(x, w, b, s, p, d, g, relu=True, residual=r)[0]
            assert (np.abs(got - ref[0]) <= tol).all(), region
            assert (np.abs(got - np.maximum(exact + r, 0)) <= tol).all(), region
    finally:
        runtime.set_num_threads(1)
        runtime.set_jit(previous)
        monkeypatch.undo()
        conv._geometry.cache_clear()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [
    ((2, 3, 37, 41), (5, 3, 3, 3), 2, 1, 1, 1),    # outputs 19 and 21 wide: col2im by phases
    ((3, 4, 30, 28), (6, 4, 7, 7), 2, 3, 1, 1),    # the stem's shape, even sizes
    ((2, 2, 33, 35), (4, 2, 3, 3), 2, 2, 2, 1),    # dilated
    ((4, 6, 20, 14), (8, 3, 3, 3), 2, 1, 1, 2),    # grouped, outputs 7 wide: col2im by columns
])
def test_stride_2_phase_kernels_match_torch(case, dtype, monkeypatch):
    """A stride-2 conv whose columns come from x by even/odd phases (_im2col_unpadded_s2,
    forced by unpadded_s2_min_bytes = 0) and whose dx goes back by phases (_col2im_s2,
    outputs of 16 and more) against PyTorch: y, dx and dw in float64 to 1e-12, and
    float32 within float32 rounding; on two threads, one image per chunk."""
    from cnnkit import runtime
    xs, ws, s, p, d, g = case
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    monkeypatch.setattr(conv._Geometry, "unpadded_s2_min_bytes", 0)
    monkeypatch.setattr(conv._Geometry, "chunk_bytes", 1)
    monkeypatch.setattr(conv._Geometry, "strided_chunk_bytes", 1)
    monkeypatch.setattr(conv._Geometry, "parallel_bytes", 0)
    conv._geometry.cache_clear()
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    runtime.set_num_threads(2)
    try:
        y, cache = conv2d_forward(x, w, None, s, p, d, g)
        assert isinstance(cache[1], conv.Planes)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, dw, _ = conv2d_backward(dy, cache)
    finally:
        runtime.set_num_threads(1)
        conv._geometry.cache_clear()
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    yt = TF.conv2d(xt, wt, None, s, p, d, g)
    yt.backward(torch.from_numpy(dy.astype(np.float64)))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, want in ((y, yt.detach().numpy()), (dx, xt.grad.numpy()), (dw, wt.grad.numpy())):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_columns_from_x_survive_numba_switched_off_before_the_backward(monkeypatch):
    """A forward that kept x itself for its columns (im2col_unpadded) and a backward run
    after set_jit(False): the backward pads x then and gets the same gradients."""
    from cnnkit import runtime
    monkeypatch.setattr(conv._Geometry, "unpadded_min_bytes", 0)
    monkeypatch.setattr(conv._Geometry, "unpadded_s2_min_bytes", 0)
    monkeypatch.setattr(conv._Geometry, "keep_bytes", 0)
    conv._geometry.cache_clear()
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 5, 13, 11)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    y, cache = conv2d_forward(x, w, None, 2, 1)
    assert isinstance(cache[1], conv.Planes)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want = conv2d_backward(dy, cache)
    previous = runtime.set_jit(False)
    try:
        got = conv2d_backward(dy, cache)
    finally:
        runtime.set_jit(previous)
        conv._geometry.cache_clear()
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------
# 3. Central differences (float64)
# ---------------------------------------------------------------------------------
GRAD_CASES = [
    dict(n=2, c_in=3, c_out=4, groups=1, hw=(5, 6), k=(3, 2), stride=1, padding=1, dilation=1, flip=False),
    dict(n=2, c_in=4, c_out=6, groups=2, hw=(6, 5), k=(2, 3), stride=(2, 1), padding=(0, 1), dilation=1, flip=False),
    dict(n=1, c_in=3, c_out=6, groups=3, hw=(7, 7), k=(3, 3), stride=2, padding=(2, 0, 1, 3), dilation=(2, 1), flip=False),
    dict(n=2, c_in=2, c_out=3, groups=1, hw=(5, 5), k=(3, 2), stride=1, padding=(0, 1, 2, 0), dilation=1, flip=True),
    dict(n=1, c_in=2, c_out=2, groups=1, hw=(7, 6), k=(2, 3), stride=3, padding="same", dilation=(1, 2), flip=True),
    dict(n=2, c_in=2, c_out=2, groups=2, hw=(5, 4), k=(5, 1), stride=(1, 2), padding="valid", dilation=1, flip=False),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: f"g{c['groups']}-s{c['stride']}-p{c['padding']}-f{c['flip']}")
def test_conv2d_gradients_central_differences(case):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((case["n"], case["c_in"]) + case["hw"])
    w = rng.standard_normal((case["c_out"], case["c_in"] // case["groups"]) + case["k"])
    b = rng.standard_normal(case["c_out"])
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
              groups=case["groups"], flip=case["flip"])
    y, cache = conv2d_forward(x, w, b, **kw)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    f = lambda: conv2d(x, w, b, **kw)
    np.testing.assert_allclose(dx, numeric_grad(f, x, dy), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numeric_grad(f, w, dy), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numeric_grad(f, b, dy), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------
# 4. Known answers
# ---------------------------------------------------------------------------------
LECTURE_IMAGE = np.array([[60, 113, 56, 139, 85],
                          [73, 121, 54, 84, 128],
                          [131, 99, 70, 129, 127],
                          [80, 57, 115, 69, 134],
                          [104, 126, 123, 95, 130]], dtype=np.float64)

SHARPEN = np.array([[0, -1, 0],
                    [-1, 5, -1],
                    [0, -1, 0]], dtype=np.float64)

# Worked by hand: 5*centre - up - down - left - right, the zero padding giving 0
# for neighbours outside the image. E.g. top-left 5*60 - 113 - 73 = 114; centre
# 5*70 - 54 - 115 - 99 - 129 = -47; left edge 5*131 - 73 - 80 - 99 = 403;
# bottom row 5*123 - 115 - 126 - 95 = 279; bottom-right 5*130 - 134 - 95 = 421.
LECTURE_SHARPENED = np.array([[114, 328, -26, 470, 158],
                              [53, 266, -61, -30, 344],
                              [403, 116, -47, 295, 244],
                              [108, -135, 256, -128, 344],
                              [314, 346, 279, 153, 421]], dtype=np.float64)

BOX = np.ones((3, 3))
# 3x3 sums of the zero-padded image, e.g. top-left 60+113+73+121 = 367,
# top edge 60+113+56+73+121+54 = 477, bottom 115+69+134+123+95+130 = 666.
LECTURE_BOX_SUMS = np.array([[367, 477, 567, 546, 436],
                             [597, 777, 865, 872, 692],
                             [561, 800, 798, 910, 671],
                             [597, 905, 883, 992, 684],
                             [367, 605, 585, 666, 428]], dtype=np.float64)


def test_lecture_image_sharpen_by_hand():
    x = LECTURE_IMAGE[None, None]
    y = conv2d(x, SHARPEN[None, None], padding=1)
    np.testing.assert_array_equal(y[0, 0], LECTURE_SHARPENED)
    # the hand numbers, spot-checked from the formula, so the table itself is pinned
    img = np.pad(LECTURE_IMAGE, 1)
    for i, j in [(0, 0), (2, 2), (4, 4), (1, 3), (2, 0), (4, 2)]:
        c = 5 * img[i + 1, j + 1] - img[i, j + 1] - img[i + 2, j + 1] - img[i + 1, j] - img[i + 1, j + 2]
        assert c == LECTURE_SHARPENED[i, j]
    np.testing.assert_array_equal(naive.conv2d_forward_naive(x, SHARPEN[None, None], None, (1, 1),
                                                             (1, 1, 1, 1), (1, 1), 1)[0, 0],
                                  LECTURE_SHARPENED)


def test_lecture_image_box_sum_and_output_size():
    x = LECTURE_IMAGE[None, None].astype(np.float32)
    y = conv2d(x, BOX[None, None].astype(np.float32), padding=1)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[0, 0], LECTURE_BOX_SUMS)
    # O = (I - K + 2P)/S + 1: (5 - 3 + 2)/1 + 1 = 5; stride 2 keeps every other one
    y2 = conv2d(x, BOX[None, None].astype(np.float32), padding=1, stride=2)
    np.testing.assert_array_equal(y2[0, 0], LECTURE_BOX_SUMS[::2, ::2])
    assert conv_out_size(5, 3, 1, 1, 1) == 5 and conv_out_size(5, 3, 2, 1, 1) == 3
    # no padding: the 3x3 centre; 6x6 input with a 3x3 kernel gives 4x4 (lecture)
    np.testing.assert_array_equal(conv2d(x, BOX[None, None].astype(np.float32))[0, 0],
                                  LECTURE_BOX_SUMS[1:4, 1:4])
    assert conv_out_size(6, 3) == 4


def test_arange_known_answers():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    # y[i, j] = x[i,j] + x[i,j+1] + x[i+1,j] + x[i+1,j+1] = 16 i + 4 j + 10
    np.testing.assert_array_equal(conv2d(x, w)[0, 0], [[10, 14, 18], [26, 30, 34], [42, 46, 50]])
    np.testing.assert_array_equal(conv2d(x, w, stride=2)[0, 0], [[10, 18], [42, 50]])
    np.testing.assert_array_equal(conv2d(x, w, np.array([100.0]), stride=(1, 3))[0, 0],
                                  [[110], [126], [142]])
    # dilation 2 on a 5x5 arange: x[i,j] + x[i,j+2] + x[i+2,j] + x[i+2,j+2] = 20 i + 4 j + 24
    x5 = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    np.testing.assert_array_equal(conv2d(x5, w, dilation=2)[0, 0],
                                  [[24, 28, 32], [44, 48, 52], [64, 68, 72]])
    # asymmetric padding (top 1, bottom 0, left 0, right 2) with a 1x1 kernel of 2
    y = conv2d(np.arange(4.0).reshape(1, 1, 2, 2), np.full((1, 1, 1, 1), 2.0), padding=(1, 0, 0, 2))
    np.testing.assert_array_equal(y[0, 0], [[0, 0, 0, 0], [0, 2, 0, 0], [4, 6, 0, 0]])
    # groups=2: each output channel sees only its own input channel
    xg = np.stack([np.arange(9.0), 100 + np.arange(9.0)]).reshape(1, 2, 3, 3)
    wg = np.stack([np.ones((1, 2, 2)), -np.ones((1, 2, 2))])            # (2, 1, 2, 2)
    yg = conv2d(xg, wg, groups=2)
    np.testing.assert_array_equal(yg[0, 0], [[8, 12], [20, 24]])
    np.testing.assert_array_equal(yg[0, 1], [[-408, -412], [-420, -424]])


def test_lecture_dot_product_accounting_with_primes():
    """The lecture's 2x2 kernel on a 3x3 input, every product written out.

    Distinct primes make every product distinct, so any index mix-up shows.
    """
    x11, x12, x13, x21, x22, x23, x31, x32, x33 = 2, 3, 5, 7, 11, 13, 17, 19, 23
    w11, w12, w21, w22 = 29, 31, 37, 41
    dh11, dh12, dh21, dh22 = 43, 47, 53, 59
    x = np.array([[x11, x12, x13], [x21, x22, x23], [x31, x32, x33]], dtype=np.float64)[None, None]
    w = np.array([[w11, w12], [w21, w22]], dtype=np.float64)[None, None]
    dh = np.array([[dh11, dh12], [dh21, dh22]], dtype=np.float64)[None, None]

    h11 = w11 * x11 + w12 * x12 + w21 * x21 + w22 * x22
    h12 = w11 * x12 + w12 * x13 + w21 * x22 + w22 * x23
    h21 = w11 * x21 + w12 * x22 + w21 * x31 + w22 * x32
    h22 = w11 * x22 + w12 * x23 + w21 * x32 + w22 * x33
    dw11 = x11 * dh11 + x12 * dh12 + x21 * dh21 + x22 * dh22
    dw12 = x12 * dh11 + x13 * dh12 + x22 * dh21 + x23 * dh22
    dw21 = x21 * dh11 + x22 * dh12 + x31 * dh21 + x32 * dh22
    dw22 = x22 * dh11 + x23 * dh12 + x32 * dh21 + x33 * dh22
    # dx: each x collects w * dh from every output whose window it is in
    dx = np.array([[w11 * dh11, w12 * dh11 + w11 * dh12, w12 * dh12],
                   [w21 * dh11 + w11 * dh21, w22 * dh11 + w21 * dh12 + w12 * dh21 + w11 * dh22,
                    w22 * dh12 + w12 * dh22],
                   [w21 * dh21, w22 * dh21 + w21 * dh22, w22 * dh22]], dtype=np.float64)

    for impl in ("fast", "naive"):
        if impl == "fast":
            y, cache = conv2d_forward(x, w, np.array([0.0]))
            gx, gw, gb = conv2d_backward(dh, cache)
        else:
            args = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
            y = naive.conv2d_forward_naive(x, w, np.array([0.0]), *args)
            gx, gw, gb = naive.conv2d_backward_naive(dh, x, w, np.array([0.0]), *args)
        np.testing.assert_array_equal(y[0, 0], [[h11, h12], [h21, h22]], err_msg=impl)
        np.testing.assert_array_equal(gw[0, 0], [[dw11, dw12], [dw21, dw22]], err_msg=impl)
        np.testing.assert_array_equal(gx[0, 0], dx, err_msg=impl)
        np.testing.assert_array_equal(gb, [dh11 + dh12 + dh21 + dh22], err_msg=impl)


def test_flip_is_true_convolution():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    w[..., 0, 0] += 5.0  # clearly asymmetric
    kw = dict(stride=(1, 2), padding=(1, 0, 2, 1), dilation=(2, 1))
    conv = conv2d(x, w, flip=True, **kw)
    corr_rot = conv2d(x, np.ascontiguousarray(w[..., ::-1, ::-1]), **kw)
    corr = conv2d(x, w, **kw)
    np.testing.assert_allclose(conv, corr_rot, rtol=1e-12, atol=1e-12)
    assert np.abs(conv - corr).max() > 1.0
    # a 1-D true convolution by hand: (f * g)[t] = sum_tau f[tau] g[t - tau]
    f = np.array([1.0, 2.0, 3.0])
    g = np.array([1.0, 10.0])
    full = conv2d(f[None, None, None], g[None, None, None], padding=(0, 0, 1, 1), flip=True)
    np.testing.assert_array_equal(full[0, 0, 0], np.convolve(f, g))  # [1, 12, 23, 30]
    # gradients are with respect to the unflipped w: dw(flip) = rot180(dw of the correlation
    # with the rotated kernel)
    dy = rng.standard_normal(conv.shape)
    _, dwf, _ = conv2d_backward(dy, conv2d_forward(x, w, flip=True, **kw)[1])
    _, dwr, _ = conv2d_backward(dy, conv2d_forward(x, np.ascontiguousarray(w[..., ::-1, ::-1]), **kw)[1])
    np.testing.assert_allclose(dwf, dwr[..., ::-1, ::-1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1, (2, 1)])
def test_backward_dx_is_full_correlation_with_rotated_kernel(padding):
    """Backpropagation is a "flipped" convolution (lecture): at stride 1,
    dx = full correlation of dy with w rotated 180 degrees, in/out channels
    swapped; "full" padding is K - 1 - P on each side."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    y, cache = conv2d_forward(x, w, padding=padding)
    dy = rng.standard_normal(y.shape)
    dx, _, _ = conv2d_backward(dy, cache)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    w_rot = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[..., ::-1, ::-1])   # (C_in, C_out, kH, kW)
    full = conv2d(dy, w_rot, padding=(3 - 1 - ph, 2 - 1 - pw))
    np.testing.assert_allclose(dx, full, rtol=1e-12, atol=1e-12)
    # the same via flip=True with the swapped (unrotated) kernel
    full2 = conv2d(dy, np.ascontiguousarray(w.transpose(1, 0, 2, 3)), padding=(2 - ph, 1 - pw), flip=True)
    np.testing.assert_allclose(dx, full2, rtol=1e-12, atol=1e-12)


def test_conv_out_size_known_values():
    # the lecture: O = (I - K + 2P)/S + 1
    assert conv_out_size(227, 11, 4) == 55
    assert conv_out_size(224, 3, 1, 1, 1) == 224
    assert conv_out_size(7, 3, 2) == 3 and conv_out_size(8, 3, 2) == 3
    assert conv_out_size(7, 3, 1, dilation=2) == 3
    # ceil mode, and PyTorch's rule: the last window must start in the input or left padding
    assert conv_out_size(6, 3, 2, ceil_mode=True) == 3      # windows at 0, 2, 4
    assert conv_out_size(5, 2, 2, ceil_mode=True) == 3      # windows at 0, 2, 4 (the last one clipped)
    assert conv_out_size(6, 2, 2, 1, 1, ceil_mode=True) == 4
    assert conv_out_size(4, 2, 3, 1, 1, ceil_mode=True) == 2  # a 3rd window would start at 6 >= 4 + 1


def test_conv_out_size_ceil_mode_window_larger_than_input():
    """PyTorch's ceil mode: floor((I + 2P - D*(K-1) - 1 + (S-1))/S) + 1 is 1 even when
    the window overhangs the input by less than a stride (the window is clipped)."""
    assert TF.max_pool2d(torch.zeros(1, 1, 10, 1), (5, 1), (4, 1), 0, (3, 1), ceil_mode=True).shape[2] == 1
    assert naive.out_size(10, 5, 4, 0, 0, 3, ceil_mode=True) == 1
    assert conv_out_size(10, 5, 4, 0, 0, 3, ceil_mode=True) == 1     # extent 13 > 10
    assert TF.avg_pool2d(torch.zeros(1, 1, 4, 1), (5, 1), (4, 1), ceil_mode=True).shape[2] == 1
    assert conv_out_size(4, 5, 4, ceil_mode=True) == 1               # kernel 5 > input 4


def test_conv_out_size_random_against_reference():
    rng = np.random.default_rng(9)
    mismatches = []
    for _ in range(500):
        size, k = (int(v) for v in rng.integers(1, 20, size=2))
        s, d, pb, pa = int(rng.integers(1, 5)), int(rng.integers(1, 4)), *(int(v) for v in rng.integers(0, 4, size=2))
        ceil = bool(rng.random() < 0.5)
        ref = naive.out_size(size, k, s, pb, pa, d, ceil)
        if ref >= 1 and conv_out_size(size, k, s, pb, pa, d, ceil) != ref:
            mismatches.append(dict(size=size, kernel=k, stride=s, pad_before=pb, pad_after=pa,
                                   dilation=d, ceil_mode=ceil, expected=ref,
                                   got=conv_out_size(size, k, s, pb, pa, d, ceil)))
        if ceil and pb == pa and ref >= 1 and 2 * pb <= k:   # the reference agrees with PyTorch
            t = TF.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (pb, 0), (d, 1), ceil_mode=True)
            assert t.shape[2] == ref, (size, k, s, pb, d)
        sh = naive.same_padding(size, k, s, d)
        assert resolve_padding("same", (k, 1), (s, 1), (d, 1), (size, 1), "t")[:2] == sh
        assert naive.out_size(size, k, s, *sh, d) == -(-size // s)   # SAME: ceil(I/S)
    assert not mismatches, f"{len(mismatches)} conv_out_size mismatches, e.g. {mismatches[:5]}"


def test_resolve_padding():
    assert resolve_padding(1, (3, 3), (1, 1), (1, 1), (5, 5), "t") == (1, 1, 1, 1)
    assert resolve_padding((1, 2), (3, 3), (1, 1), (1, 1), (5, 5), "t") == (1, 1, 2, 2)
    assert resolve_padding((1, 2, 3, 4), (3, 3), (1, 1), (1, 1), (5, 5), "t") == (1, 2, 3, 4)
    assert resolve_padding("valid", (3, 3), (1, 1), (1, 1), (5, 5), "t") == (0, 0, 0, 0)
    # 'same' with stride 2 on 6: out 3, total (3-1)*2 + 3 - 6 = 1 -> (0, 1): extra at bottom
    assert resolve_padding("same", (3, 3), (2, 2), (1, 1), (6, 6), "t") == (0, 1, 0, 1)
    assert resolve_padding("same", (4, 4), (1, 1), (1, 1), (5, 5), "t") == (1, 2, 1, 2)


def test_same_padding_output_size_any_stride():
    rng = np.random.default_rng(13)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 12, size=2))
        k = tuple(int(v) for v in rng.integers(1, 6, size=2))
        s = tuple(int(v) for v in rng.integers(1, 5, size=2))
        x = rng.standard_normal((1, 2, h, w))
        y = conv2d(x, rng.standard_normal((3, 2) + k), stride=s, padding="same")
        assert y.shape == (1, 3, -(-h // s[0]), -(-w // s[1]))


# ---------------------------------------------------------------------------------
# 5. Errors, N = 0, dtypes
# ---------------------------------------------------------------------------------
ERR = (ValueError, TypeError)


def _xw(c=3, f=4, hw=(5, 5), k=(3, 3), dtype=np.float64):
    return np.zeros((2, c) + hw, dtype), np.zeros((f, c) + k, dtype)


@pytest.mark.parametrize("kwargs, match", [
    (dict(stride=0), "must be positive"),
    (dict(stride=(1, -1)), "must be positive"),
    (dict(dilation=0), "must be positive"),
    (dict(dilation=(0, 1)), "must be positive"),
    (dict(padding=-1), "must be non-negative"),
    (dict(padding=(0, -2)), "must be non-negative"),
    (dict(padding=(0, 0, -1, 0)), "must be non-negative"),
])
def test_conv2d_argument_errors(kwargs, match):
    x, w = _xw()
    with pytest.raises(ERR, match=match) as info:
        conv2d_forward(x, w, **kwargs)
    assert str(info.value).startswith("conv2d")


def test_conv2d_shape_errors():
    x, w = _xw(c=4)
    with pytest.raises(ERR, match="divisible by groups"):
        conv2d_forward(x, np.zeros((4, 2, 3, 3)), groups=3)          # 4 in-channels, 3 groups
    with pytest.raises(ERR, match="divisible by groups"):
        conv2d_forward(x, np.zeros((3, 2, 3, 3)), groups=2)          # 3 out-channels, 2 groups
    with pytest.raises(ERR, match="expected a 4-D input"):
        conv2d_forward(np.zeros((4, 5, 5)), w)
    with pytest.raises(ERR, match="channels") as info:
        conv2d_forward(x, np.zeros((4, 3, 3, 3)))                    # 4 channels, weight expects 3
    assert "4" in str(info.value) and "3" in str(info.value)
    with pytest.raises(ERR, match="channels"):
        conv2d_forward(x, np.zeros((4, 3, 3, 3)), groups=2)          # expects 2*3 = 6
    with pytest.raises(ERR, match=r"output height would be .*\(I - K \+ 2P\)/S \+ 1") as info:
        conv2d_forward(np.zeros((1, 3, 5, 9)), np.zeros((2, 3, 7, 3)))
    assert str(info.value).startswith("conv2d")
    with pytest.raises(ERR, match=r"output width would be .*\(I - K \+ 2P\)/S \+ 1"):
        conv2d_forward(np.zeros((1, 3, 9, 5)), np.zeros((2, 3, 3, 7)), padding=(1, 0))
    with pytest.raises(ERR, match="output height would be"):          # dilation makes it too large
        conv2d_forward(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), dilation=2)
    with pytest.raises(ERR, match="dtype mismatch"):
        conv2d_forward(x.astype(np.float32), np.zeros((4, 4, 3, 3), np.float64))
    with pytest.raises(ERR, match="dtype mismatch"):
        conv2d_forward(x, np.zeros((4, 4, 3, 3)), np.zeros(4, np.float32))


def test_conv2d_empty_batch():
    for dtype in (np.float32, np.float64):
        x = np.zeros((0, 3, 6, 5), dtype)
        w = np.ones((4, 3, 3, 2), dtype)
        b = np.ones(4, dtype)
        y, cache = conv2d_forward(x, w, b, stride=2, padding=1)
        assert y.shape == (0, 4, 3, 3) and y.dtype == dtype
        dx, dw, db = conv2d_backward(np.zeros(y.shape, dtype), cache)
        assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
        assert dx.dtype == dw.dtype == db.dtype == dtype
        assert not dw.any() and not db.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_preserves_dtype(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y, cache = conv2d_forward(x, w, b, stride=2, padding="same", groups=2)
    assert y.dtype == dtype
    dx, dw, db = conv2d_backward(rng.standard_normal(y.shape).astype(dtype), cache)
    assert (dx.dtype, dw.dtype, db.dtype) == (dtype, dtype, dtype)
    y2, cache2 = conv2d_forward(x, w, None, groups=2)
    _, _, db_none = conv2d_backward(np.ones(y2.shape, dtype), cache2)
    assert db_none is None


def test_inputs_not_modified():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(2)
    copies = [a.copy() for a in (x, w, b)]
    y, cache = conv2d_forward(x, w, b, padding=1, flip=True)
    dy = rng.standard_normal(y.shape)
    dy0 = dy.copy()
    conv2d_backward(dy, cache)
    for a, c in zip((x, w, b, dy), copies + [dy0]):
        np.testing.assert_array_equal(a, c)


def test_backward_unaffected_by_in_place_change_of_returned_y():
    """The caller owns the returned y: changing it in place must not change the gradients."""
    rng = np.random.default_rng(43)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    y, cache = conv2d_forward(x, w, b, stride=2, padding=1, groups=2)
    dy = rng.standard_normal(y.shape)
    clean = conv2d_backward(dy, cache)
    y2, cache2 = conv2d_forward(x, w, b, stride=2, padding=1, groups=2)
    y2 *= 2.0
    np.maximum(y2, 0, out=y2)
    for g, c in zip(conv2d_backward(dy, cache2), clean):
        np.testing.assert_array_equal(g, c)


@pytest.mark.parametrize("layout", ["contiguous", "channel_major", "transposed", "negative_strides", "strided"])
@pytest.mark.parametrize("n", [0, 1, 5])
def test_bias_gradient_in_every_layout(layout, n):
    """db (conv._bias_gradient: a matrix-vector product with ones where dy is dense NCHW
    or channel-major, NumPy's sum otherwise) against float64 sums, batch 0 included."""
    rng = np.random.default_rng(17 + n)
    shape = (n, 6, 5, 7)
    if layout == "channel_major":
        dy = np.ascontiguousarray(rng.standard_normal((6, n, 5, 7)).astype(np.float32)).transpose(1, 0, 2, 3)
    else:
        dy = make_array(rng, shape, layout, np.float32)
    db = conv._bias_gradient(dy.transpose(1, 0, 2, 3))
    assert db.shape == (6,) and db.dtype == np.float32
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)


def test_bias_gradient_of_empty_arrays():
    for shape in [(0, 2, 3, 3), (3, 0, 2, 2), (3, 2, 0, 0)]:  # (F, N, Ho, Wo)
        db = conv._bias_gradient(np.zeros(shape, np.float32))
        assert db.shape == (shape[0],) and not db.any()

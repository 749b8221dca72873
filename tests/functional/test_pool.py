"""Tests of the pooling kernels (cnnkit.functional.pool) and their loop oracles.

1. seeded random sweeps against PyTorch: >= 500 configurations each for max and
   average pooling (float32 and float64, forward and dx), plus adaptive pooling;
   the loop oracles are checked against PyTorch too;
2. the fast kernels against the loop oracles (float64), including what PyTorch
   cannot express (asymmetric padding together with ceil_mode);
3. float64 central-difference gradient checks;
4. known answers: the lecture's 5x5 image, ties, overlapping windows (AlexNet's
   3/2 pooling), dy/n spreading, NaN;
plus errors, N = 0 and dtype preservation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit import runtime
from cnnkit.functional import naive
from cnnkit.functional.pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward,
                                    adaptive_avg_pool2d_forward, avg_pool2d, avg_pool2d_backward,
                                    avg_pool2d_forward, global_avg_pool2d, max_pool2d,
                                    max_pool2d_backward, max_pool2d_forward)
from tests.functional.test_conv import LAYOUTS, LECTURE_IMAGE, assert_close, make_array
from tests.functional.conftest import jit_both_ways
from tests.helpers import numeric_grad

torch.set_num_threads(1)

N_TORCH_CHUNKS, TORCH_CHUNK = 12, 50        # 600 configurations per pool kind against PyTorch
N_NAIVE_CHUNKS, NAIVE_CHUNK = 4, 50         # 200 per pool kind against the loop oracle
N_ORACLE_VS_TORCH = 100

PAD_FORMS = ("int", "pair", "quad", "valid", "same")


def pytest_generate_tests(metafunc):
    """The max-pool tests (and the sweeps, which take a pool kind) run with the compiled
    backward (where Numba is installed) and with NumPy's (conftest.py)."""
    name = metafunc.function.__name__
    jit_both_ways(metafunc, "max_pool" in name or "kind" in metafunc.fixturenames or "op" in metafunc.fixturenames)


# ---------------------------------------------------------------------------------
# Random configurations
# ---------------------------------------------------------------------------------
def _int_or_pair(rng, h, w):
    return int(h) if h == w and rng.random() < 0.5 else (int(h), int(w))


def _has_empty_window(h, w, kernel, stride, pads, dilation, out_hw):
    """A max-pool window that holds padding only (possible with dilation): PyTorch
    then returns -inf and routes the gradient to an arbitrary index, so such
    degenerate shapes are drawn again rather than compared."""
    for i in range(out_hw[0]):
        if not naive.window_indices(i, kernel[0], stride[0], pads[0], dilation[0], h):
            return True
    for j in range(out_hw[1]):
        if not naive.window_indices(j, kernel[1], stride[1], pads[2], dilation[1], w):
            return True
    return False


def draw_pool_config(rng, kind, *, small=False, torch_comparable=True):
    """One random, possible pooling (``kind`` 'max' or 'avg').

    Padding follows PyTorch's rule (each side <= kernel/2). ceil_mode is drawn for
    every padding form unless ``torch_comparable``: PyTorch only takes symmetric
    padding, and an F.pad'ed input changes where ceil mode's last window may start.
    """
    smax = 8 if small else 16
    while True:
        n = 0 if rng.random() < 0.05 else int(rng.integers(1, 3 if small else 5))
        c = int(rng.integers(1, 5 if small else 9))
        h, w = (int(v) for v in rng.integers(1, smax + 1, size=2))
        kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
        if rng.random() < 0.25:
            stride, stride_arg = (kh, kw), None
        else:
            sh, sw = (int(v) for v in rng.integers(1, 5, size=2))
            stride, stride_arg = (sh, sw), _int_or_pair(rng, sh, sw)
        if kind == "max" and rng.random() < 0.5:
            dh, dw = (int(v) for v in rng.integers(1, 4, size=2))
        else:
            dh, dw = 1, 1
        form = PAD_FORMS[int(rng.integers(len(PAD_FORMS)))]
        if form == "int":
            raw = int(rng.integers(0, min(kh, kw) // 2 + 1))
            pads = (raw,) * 4
        elif form == "pair":
            raw = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
            pads = (raw[0], raw[0], raw[1], raw[1])
        elif form == "quad":
            raw = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kh // 2 + 1)),
                   int(rng.integers(0, kw // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
            pads = raw
        elif form == "valid":
            raw, pads = "valid", (0, 0, 0, 0)
        else:
            raw = "same"
            pads = (*naive.same_padding(h, kh, stride[0], dh), *naive.same_padding(w, kw, stride[1], dw))
        ceil_ok = form in ("int", "pair", "valid") or not torch_comparable
        ceil_mode = bool(ceil_ok and rng.random() < 0.4)
        ho = naive.out_size(h, kh, stride[0], pads[0], pads[1], dh, ceil_mode)
        wo = naive.out_size(w, kw, stride[1], pads[2], pads[3], dw, ceil_mode)
        if ho < 1 or wo < 1:
            continue
        if kind == "max" and _has_empty_window(h, w, (kh, kw), stride, pads, (dh, dw), (ho, wo)):
            continue
        cfg = dict(kind=kind, n=n, c=c, h=h, w=w, kernel=(kh, kw), kernel_arg=_int_or_pair(rng, kh, kw),
                   stride=stride, stride_arg=stride_arg, dilation=(dh, dw),
                   dilation_arg=_int_or_pair(rng, dh, dw), pad_form=form, padding_arg=raw, pads=pads,
                   ceil_mode=ceil_mode, out_hw=(ho, wo),
                   layout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
                   ints=bool(rng.random() < 0.3),   # small integers: many ties
                   seed=int(rng.integers(2**31)))
        if kind == "avg":
            cfg["count_include_pad"] = bool(rng.random() < 0.5)
            cfg["divisor_override"] = int(rng.integers(1, 7)) if rng.random() < 0.2 else None
        return cfg


def pool_arrays(cfg, dtype):
    rng = np.random.default_rng(cfg["seed"])
    x = make_array(rng, (cfg["n"], cfg["c"], cfg["h"], cfg["w"]), cfg["layout"], dtype)
    if cfg["ints"]:
        x[...] = rng.integers(-2, 3, size=x.shape)
    dy = make_array(rng, (cfg["n"], cfg["c"]) + cfg["out_hw"], cfg["layout"], dtype)
    return x, dy


def window_larger_than_input(cfg):
    """PyTorch's ceil mode gives one output even where the (dilated) window is
    larger than the padded input (floor mode: 0 outputs), e.g. size 10, kernel 5,
    dilation 3, stride 4 -> 1 output. Such configurations are kept in their own
    list and test, so that this one rule shows up under its own name."""
    h_floor = naive.out_size(cfg["h"], cfg["kernel"][0], cfg["stride"][0], *cfg["pads"][:2], cfg["dilation"][0])
    w_floor = naive.out_size(cfg["w"], cfg["kernel"][1], cfg["stride"][1], *cfg["pads"][2:], cfg["dilation"][1])
    return min(h_floor, w_floor) < 1


def _configs(kind, seed, count, **kw):
    """``count`` ordinary configurations, and the window-larger-than-input ones met on the way."""
    rng = np.random.default_rng(seed)
    ordinary, larger = [], []
    while len(ordinary) < count:
        cfg = draw_pool_config(rng, kind, **kw)
        (larger if window_larger_than_input(cfg) else ordinary).append(cfg)
    return ordinary, larger


TORCH_CONFIGS, TORCH_LARGER = {}, {}
NAIVE_CONFIGS, NAIVE_LARGER = {}, {}
ORACLE_CONFIGS = {}
for _kind, _seed in (("max", 1), ("avg", 2)):
    TORCH_CONFIGS[_kind], TORCH_LARGER[_kind] = _configs(_kind, 100 + _seed, N_TORCH_CHUNKS * TORCH_CHUNK)
    NAIVE_CONFIGS[_kind], NAIVE_LARGER[_kind] = _configs(_kind, 200 + _seed, N_NAIVE_CHUNKS * NAIVE_CHUNK,
                                                         small=True, torch_comparable=False)
    _ordinary, _larger = _configs(_kind, 300 + _seed, N_ORACLE_VS_TORCH, small=True)
    ORACLE_CONFIGS[_kind] = _ordinary + _larger


# ---------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------
def torch_pool(cfg, x, dy):
    """PyTorch's max_pool2d / avg_pool2d and the autograd dx.

    int / pair / 'valid' go to PyTorch as they are (with ceil_mode); an asymmetric
    4-tuple or 'same' becomes an explicit F.pad (-inf for max, 0 for average)
    and padding 0. For average pooling without count_include_pad the reference
    is then sum-pool / count-pool (both with divisor_override=1), the count
    being the pooled padded mask of ones.
    """
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    k, s, (top, bottom, left, right) = cfg["kernel"], cfg["stride"], cfg["pads"]
    direct = cfg["pad_form"] in ("int", "pair", "valid")
    padding = (top, left) if direct else 0
    xin = xt if direct else TF.pad(xt, (left, right, top, bottom),
                                   value=-float("inf") if cfg["kind"] == "max" else 0.0)
    if cfg["kind"] == "max":
        y = TF.max_pool2d(xin, k, s, padding, cfg["dilation"], ceil_mode=cfg["ceil_mode"])
    elif direct or cfg["count_include_pad"] or cfg["divisor_override"]:
        y = TF.avg_pool2d(xin, k, s, padding, cfg["ceil_mode"], cfg["count_include_pad"],
                          cfg["divisor_override"])
    else:
        ones = TF.pad(torch.ones_like(xt), (left, right, top, bottom))
        y = (TF.avg_pool2d(xin, k, s, 0, divisor_override=1)
             / TF.avg_pool2d(ones, k, s, 0, divisor_override=1))
    y.backward(torch.from_numpy(np.array(dy)))
    return y.detach().numpy(), xt.grad.numpy()


def run_fast(cfg, x, dy):
    if cfg["kind"] == "max":
        y, cache = max_pool2d_forward(x, cfg["kernel_arg"], cfg["stride_arg"], cfg["padding_arg"],
                                      cfg["dilation_arg"], cfg["ceil_mode"])
        return y, max_pool2d_backward(dy, cache)
    y, cache = avg_pool2d_forward(x, cfg["kernel_arg"], cfg["stride_arg"], cfg["padding_arg"],
                                  cfg["ceil_mode"], cfg["count_include_pad"], cfg["divisor_override"])
    return y, avg_pool2d_backward(dy, cache)


def run_naive(cfg, x, dy):
    if cfg["kind"] == "max":
        y, arg = naive.max_pool2d_naive(x, cfg["kernel"], cfg["stride"], cfg["pads"], cfg["dilation"],
                                        cfg["ceil_mode"])
        return y, naive.max_pool2d_backward_naive(dy, arg, x.shape)
    args = (cfg["kernel"], cfg["stride"], cfg["pads"], cfg["ceil_mode"], cfg["count_include_pad"],
            cfg["divisor_override"])
    return naive.avg_pool2d_naive(x, *args), naive.avg_pool2d_backward_naive(dy, x.shape, *args)


def abs_scales(cfg, x, dy, ref):
    """Sum of |terms| per element: the average of |x| over the window for y and
    dx's routed/spread |dy|. Max pooling's y is a copy (scale 0); its dx scale is
    |dy| routed along the same argmax, which ``ref`` (x itself) fixes."""
    x64, dy64 = np.asarray(x, np.float64), np.abs(np.asarray(dy, np.float64))
    if cfg["kind"] == "max":
        return np.zeros(ref[0].shape), torch_pool(cfg, x64, dy64)[1]
    return torch_pool(cfg, np.abs(x64), dy64)


def compare(cfg, dtype, got, ref, scales):
    for name, g, r, s in zip(("y", "dx"), got, ref, scales):
        assert g.dtype == dtype, f"{name} dtype {g.dtype} != {dtype}; config {cfg}"
        assert_close(g, r, s, dtype, f"{cfg['kind']} pool {name} ({np.dtype(dtype).name}) for config {cfg}")


def run_configs(configs, check):
    """Run every configuration and report all failures together (one failing
    configuration does not hide the others)."""
    failures = []
    for cfg in configs:
        try:
            check(cfg)
        except Exception as e:  # noqa: BLE001 - collected and re-raised below
            failures.append(f"{type(e).__name__}: {str(e)[:600]}\n    config: {cfg}")
    assert not failures, f"{len(failures)} of {len(configs)} configurations failed:\n" + "\n".join(failures[:8])


# ---------------------------------------------------------------------------------
# 1. Against PyTorch
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_torch_configuration_count_and_coverage(kind):
    cs = TORCH_CONFIGS[kind]
    assert len(cs) >= 500, len(cs)
    seen = lambda pred: sum(1 for c in cs if pred(c))
    assert {c["n"] for c in cs} == {0, 1, 2, 3, 4}
    assert {c["pad_form"] for c in cs} == set(PAD_FORMS)
    assert {c["layout"] for c in cs} == set(LAYOUTS)
    assert seen(lambda c: c["ceil_mode"]) > 0 and seen(lambda c: c["ints"]) > 0
    assert seen(lambda c: c["stride_arg"] is None) > 0
    assert seen(lambda c: c["stride"][0] > c["kernel"][0]) > 0
    assert seen(lambda c: c["kernel"][0] != c["kernel"][1]) > 0
    assert seen(lambda c: c["pad_form"] == "quad" and c["pads"][0] != c["pads"][1]) > 0
    assert seen(lambda c: c["pad_form"] == "same" and max(c["stride"]) > 1) > 0
    assert seen(lambda c: c["ceil_mode"] and max(c["pads"]) > 0) > 0
    if kind == "max":
        assert {d for c in cs for d in c["dilation"]} == {1, 2, 3}
    else:
        assert seen(lambda c: not c["count_include_pad"] and max(c["pads"]) > 0) > 0
        assert seen(lambda c: c["divisor_override"] is not None) > 0


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("chunk", range(N_TORCH_CHUNKS))
def test_pool_matches_torch(kind, chunk):
    def check(cfg):
        for dtype in (np.float32, np.float64):
            x, dy = pool_arrays(cfg, dtype)
            ref = torch_pool(cfg, x, dy)
            compare(cfg, dtype, run_fast(cfg, x, dy), ref, abs_scales(cfg, x, dy, ref))
    run_configs(TORCH_CONFIGS[kind][chunk * TORCH_CHUNK:(chunk + 1) * TORCH_CHUNK], check)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_torch_ceil_mode_window_larger_than_input(kind):
    """ceil_mode where the window is larger than the padded input: PyTorch gives
    one (clipped) window, e.g. max_pool2d(size 4, kernel 5, stride 4, ceil_mode=True)."""
    configs = TORCH_LARGER[kind]
    assert len(configs) >= 10, len(configs)
    def check(cfg):
        for dtype in (np.float32, np.float64):
            x, dy = pool_arrays(cfg, dtype)
            ref = torch_pool(cfg, x, dy)
            compare(cfg, dtype, run_fast(cfg, x, dy), ref, abs_scales(cfg, x, dy, ref))
    run_configs(configs, check)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_oracle_matches_torch(kind):
    """The loop oracles themselves agree with PyTorch (float64), ceil mode included."""
    assert any(window_larger_than_input(c) for c in ORACLE_CONFIGS[kind])
    def check(cfg):
        x, dy = pool_arrays(cfg, np.float64)
        ref = torch_pool(cfg, x, dy)
        compare(cfg, np.float64, run_naive(cfg, x, dy), ref, abs_scales(cfg, x, dy, ref))
    run_configs(ORACLE_CONFIGS[kind], check)


def test_adaptive_avg_pool_matches_torch():
    rng = np.random.default_rng(17)
    count = 0
    for _ in range(300):
        n, c = int(rng.integers(0, 4)), int(rng.integers(1, 5))
        h, w = (int(v) for v in rng.integers(1, 17, size=2))
        out = (int(rng.integers(1, h + 4)), int(rng.integers(1, w + 4)))   # also larger than the input
        arg = out[0] if out[0] == out[1] and rng.random() < 0.5 else out
        for dtype in (np.float32, np.float64):
            x = make_array(rng, (n, c, h, w), LAYOUTS[count % 4], dtype)
            dy = rng.standard_normal((n, c) + out).astype(dtype)
            y, cache = adaptive_avg_pool2d_forward(x, arg)
            dx = adaptive_avg_pool2d_backward(dy, cache)
            xt = torch.from_numpy(np.array(x)).requires_grad_(True)
            yt = TF.adaptive_avg_pool2d(xt, arg)
            yt.backward(torch.from_numpy(dy))
            what = f"adaptive_avg_pool2d x{(n, c, h, w)} out={arg} {np.dtype(dtype).name}"
            assert y.dtype == dx.dtype == dtype, what
            assert_close(y, yt.detach().numpy(), np.abs(yt.detach().numpy()) + 1, dtype, what + " y")
            assert_close(dx, xt.grad.numpy(), np.abs(xt.grad.numpy()) + 1, dtype, what + " dx")
            # and the oracle
            y_naive = naive.adaptive_avg_pool2d_naive(x.astype(np.float64), out)
            np.testing.assert_allclose(y_naive, yt.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=what)
            np.testing.assert_allclose(naive.adaptive_avg_pool2d_backward_naive(dy.astype(np.float64), x.shape),
                                       xt.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=what)
        count += 1
    assert count == 300


@pytest.mark.parametrize("shape", [(1, 2048, 7, 7), (3, 5, 8, 8), (2, 3, 1, 1), (0, 4, 3, 3), (2, 2, 64, 70)])
@pytest.mark.parametrize("layout", ["contiguous", "channel_major", "negative_strides"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_average_pool_every_layout_matches_torch(shape, layout, dtype):
    """Global average pooling sums each plane as a matrix-vector product over x's memory:
    NCHW, channel-major (C, N, H, W, what a conv returns) and a strided view (copied)."""
    rng = np.random.default_rng(sum(shape))
    n, c, h, w = shape
    if layout == "channel_major":
        x = np.ascontiguousarray(rng.standard_normal((c, n, h, w)).astype(dtype)).transpose(1, 0, 2, 3)
    else:
        x = make_array(rng, shape, layout, dtype)
    y, cache = adaptive_avg_pool2d_forward(x, 1)
    ref = TF.adaptive_avg_pool2d(torch.from_numpy(np.array(x, dtype=np.float64)), 1).numpy()
    assert y.shape == (n, c, 1, 1) and y.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------
# 2. Against the loop oracle
# ---------------------------------------------------------------------------------
def _check_against_naive(cfg):
    """float64, rtol 1e-12 (the average's sum may be added in another order)."""
    kind = cfg["kind"]
    x, dy = pool_arrays(cfg, np.float64)
    got, ref = run_fast(cfg, x, dy), run_naive(cfg, x, dy)
    scale_y = naive.avg_pool2d_naive(np.abs(x), cfg["kernel"], cfg["stride"], cfg["pads"], cfg["ceil_mode"],
                                     cfg["count_include_pad"], cfg["divisor_override"]) \
        if kind == "avg" else np.zeros(ref[0].shape)
    scale_dx = np.abs(ref[1]) + np.abs(dy).max(initial=0)
    for name, g, r, s in zip(("y", "dx"), got, ref, (scale_y, scale_dx)):
        assert g.shape == r.shape, f"{name} shape {g.shape} != {r.shape}"
        err = np.abs(g - r)
        ok = (err <= 1e-12 * np.abs(r) + 1e-14 * (1 + s)) | (np.isnan(g) & np.isnan(r))
        assert ok.all(), f"{name}: max error {err.max():.3g}"


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("chunk", range(N_NAIVE_CHUNKS))
def test_pool_matches_naive_oracle(kind, chunk):
    configs = NAIVE_CONFIGS[kind][chunk * NAIVE_CHUNK:(chunk + 1) * NAIVE_CHUNK]
    assert any(c["ceil_mode"] and c["pad_form"] in ("quad", "same") for c in NAIVE_CONFIGS[kind])
    run_configs(configs, _check_against_naive)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_naive_oracle_ceil_mode_window_larger_than_input(kind):
    assert len(NAIVE_LARGER[kind]) >= 5, len(NAIVE_LARGER[kind])
    run_configs(NAIVE_LARGER[kind], _check_against_naive)


def test_adaptive_avg_pool_matches_naive_oracle():
    rng = np.random.default_rng(19)
    for _ in range(100):
        shape = (int(rng.integers(0, 3)), 2, *(int(v) for v in rng.integers(1, 12, size=2)))
        out = tuple(int(v) for v in rng.integers(1, 9, size=2))
        x = rng.standard_normal(shape)
        dy = rng.standard_normal(shape[:2] + out)
        y, cache = adaptive_avg_pool2d_forward(x, out)
        np.testing.assert_allclose(y, naive.adaptive_avg_pool2d_naive(x, out), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(adaptive_avg_pool2d_backward(dy, cache),
                                   naive.adaptive_avg_pool2d_backward_naive(dy, shape), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------
# 3. Central differences (float64)
# ---------------------------------------------------------------------------------
def _distinct(rng, shape):
    """Values at least 0.01 apart (a permutation of a grid plus tiny noise), so
    that the central difference (eps = 1e-6) never crosses a tie."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01 + rng.uniform(0, 1e-3, size)).reshape(shape) - size * 0.005


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),                              # overlapping
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=2, stride=1, padding=1, dilation=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=2, padding=(0, 1, 1, 0)),
    dict(kernel_size=3, stride=2, padding="same"),
], ids=str)
def test_max_pool_gradient_central_differences(kw):
    rng = np.random.default_rng(23)
    x = _distinct(rng, (2, 2, 7, 6))
    y, cache = max_pool2d_forward(x, **kw)
    dy = rng.standard_normal(y.shape)
    dx = max_pool2d_backward(dy, cache)
    np.testing.assert_allclose(dx, numeric_grad(lambda: max_pool2d(x, **kw), x, dy), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, stride=1, divisor_override=3),
    dict(kernel_size=(2, 3), stride=2, padding=(1, 0, 0, 1), count_include_pad=False),
    dict(kernel_size=3, stride=2, padding="same"),
], ids=str)
def test_avg_pool_gradient_central_differences(kw):
    rng = np.random.default_rng(29)
    x = rng.standard_normal((2, 2, 7, 6))
    y, cache = avg_pool2d_forward(x, **kw)
    dy = rng.standard_normal(y.shape)
    dx = avg_pool2d_backward(dy, cache)
    np.testing.assert_allclose(dx, numeric_grad(lambda: avg_pool2d(x, **kw), x, dy), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("out", [1, (2, 3), (4, 5), (9, 2)])
def test_adaptive_avg_pool_gradient_central_differences(out):
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 2, 7, 5))
    y, cache = adaptive_avg_pool2d_forward(x, out)
    dy = rng.standard_normal(y.shape)
    dx = adaptive_avg_pool2d_backward(dy, cache)
    np.testing.assert_allclose(dx, numeric_grad(lambda: adaptive_avg_pool2d(x, out), x, dy),
                               rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------
# 4. Known answers
# ---------------------------------------------------------------------------------
def test_lecture_image_max_pool():
    x = LECTURE_IMAGE[None, None]
    # 2x2, stride 2 (floor): {60,113,73,121}, {56,139,54,84}, {131,99,80,57}, {70,129,115,69}
    np.testing.assert_array_equal(max_pool2d(x, 2)[0, 0], [[121, 139], [131, 129]])
    # ceil mode keeps the clipped last row/column: [85,128] -> 128, [104,126] -> 126, ...
    np.testing.assert_array_equal(max_pool2d(x, 2, ceil_mode=True)[0, 0],
                                  [[121, 139, 128], [131, 129, 134], [126, 123, 130]])


def test_overlapping_max_pool_accumulates_gradient():
    """AlexNet's overlapping pooling, 3x3 windows at stride 2, on the lecture image:
    the windows are rows/cols 0-2 and 2-4. 131 (row 2, col 0) wins both left
    windows, so its gradient is the sum of their two dy."""
    x = LECTURE_IMAGE[None, None]
    y, cache = max_pool2d_forward(x, 3, 2)
    np.testing.assert_array_equal(y[0, 0], [[131, 139], [131, 134]])
    dy = np.array([[1.0, 10.0], [100.0, 1000.0]])[None, None]
    dx = max_pool2d_backward(dy, cache)
    expected = np.zeros((5, 5))
    expected[2, 0] = 1.0 + 100.0     # 131 wins windows (0, 0) and (1, 0)
    expected[0, 3] = 10.0            # 139
    expected[3, 4] = 1000.0          # 134
    np.testing.assert_array_equal(dx[0, 0], expected)
    # a single centre maximum shared by all four windows gets all four gradients
    xc = np.zeros((1, 1, 5, 5))
    xc[0, 0, 2, 2] = 1.0
    y, cache = max_pool2d_forward(xc, 3, 2)
    np.testing.assert_array_equal(y, np.ones((1, 1, 2, 2)))
    assert max_pool2d_backward(dy, cache)[0, 0, 2, 2] == 1111.0


def test_max_pool_ties_go_to_first_maximum():
    x = np.full((1, 1, 2, 2), 5.0)
    y, cache = max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(max_pool2d_backward(np.ones((1, 1, 1, 1)), cache)[0, 0], [[1, 0], [0, 0]])
    x = np.array([[1.0, 3.0], [3.0, 2.0]])[None, None]
    y, cache = max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(max_pool2d_backward(np.ones((1, 1, 1, 1)), cache)[0, 0], [[0, 1], [0, 0]])
    # with padding the padded -inf never ties with a real value; 3x3 windows, stride 1, pad 1
    x = np.zeros((1, 1, 3, 3))
    y, cache = max_pool2d_forward(x, 3, 1, 1)
    dx = max_pool2d_backward(np.ones((1, 1, 3, 3)), cache)
    # each window's first real element (row-major): (0,0) for windows in rows 0-1 / cols 0-1, ...
    np.testing.assert_array_equal(dx[0, 0], [[4, 2, 0], [2, 1, 0], [0, 0, 0]])
    yt = torch.zeros(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    TF.max_pool2d(yt, 3, 1, 1).sum().backward()
    np.testing.assert_array_equal(dx, yt.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 11, 9), (1, 2, 2, 2), (2, 5, 7, 14)])
def test_max_pool_2x2_tiles_route_like_torch_with_many_ties(shape, dtype, jit_mode):
    """2x2 windows, stride 2 (the compiled backward where Numba is installed): values drawn
    from {-1, 0, 1} so that most windows hold ties, odd sizes (rows and columns that no
    window reads), a transposed input: dx exactly PyTorch's, and non-negative zeros with
    the JIT (PyTorch's +0.0)."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-1, 2, shape[:2] + shape[:1:-1]).astype(dtype).swapaxes(2, 3)
    y, cache = max_pool2d_forward(x, 2)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = max_pool2d_backward(dy, cache)
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    yt = TF.max_pool2d(xt, 2)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert dx.dtype == dtype and dx.shape == x.shape
    if jit_mode and runtime.jit_kernels() is not None:
        assert not np.signbit(dx[dx == 0]).any()


def test_max_pool_all_minus_inf_input_with_padding_like_torch():
    """Real -inf values tie with the -inf padding: PyTorch only looks at real
    pixels, so the gradient goes to the window's first real pixel, not to the padding."""
    x = np.full((1, 1, 3, 4), -np.inf)
    y, cache = max_pool2d_forward(x, 3, 2, 1)
    dx = max_pool2d_backward(np.ones(y.shape), cache)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = TF.max_pool2d(xt, 3, 2, 1)
    yt.backward(torch.ones_like(yt))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_max_pool_nan_propagates_like_torch():
    rng = np.random.default_rng(37)
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 0, 1, 1] = np.nan
    x[1, 2, 4, 3] = x[1, 2, 5, 5] = np.nan
    y, cache = max_pool2d_forward(x, 3, 2, 1)
    dy = rng.standard_normal(y.shape)
    dx = max_pool2d_backward(dy, cache)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = TF.max_pool2d(xt, 3, 2, 1)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt.detach().numpy()))
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 1, 1]) and np.isnan(y[1, 2, 2, 2])
    np.testing.assert_array_equal(y, yt.detach().numpy())        # NaN == NaN in assert_array_equal
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-15, atol=0)


def test_avg_pool_spreads_dy_over_n():
    x = LECTURE_IMAGE[None, None]
    y, cache = avg_pool2d_forward(x, 2)
    # (60+113+73+121)/4, (56+139+54+84)/4, (131+99+80+57)/4, (70+129+115+69)/4
    np.testing.assert_array_equal(y[0, 0], [[91.75, 83.25], [91.75, 95.75]])
    dy = np.array([[4.0, 8.0], [12.0, 16.0]])[None, None]
    dx = avg_pool2d_backward(dy, cache)
    expected = np.zeros((5, 5))
    expected[:4, :4] = np.kron([[1.0, 2.0], [3.0, 4.0]], np.ones((2, 2)))   # dy / 4; row/col 4 unused
    np.testing.assert_array_equal(dx[0, 0], expected)
    # 3x3 with zero padding 1: corner sum 60+113+73+121 = 367 over 9 (padding counts) or 4
    y9 = avg_pool2d(x, 3, 1, 1)
    y4 = avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    assert y9[0, 0, 0, 0] == pytest.approx(367 / 9) and y4[0, 0, 0, 0] == pytest.approx(367 / 4)
    assert y9[0, 0, 0, 1] == pytest.approx(477 / 9) and y4[0, 0, 0, 1] == pytest.approx(477 / 6)
    assert y4[0, 0, 2, 2] == pytest.approx(798 / 9)
    # overlapping windows add their shares: 3x3 stride 1 on 3x3 with pad 1, dy = 9 everywhere
    _, cache = avg_pool2d_forward(np.zeros((1, 1, 3, 3)), 3, 1, 1)
    np.testing.assert_array_equal(avg_pool2d_backward(np.full((1, 1, 3, 3), 9.0), cache)[0, 0],
                                  [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    # divisor_override
    assert avg_pool2d(x, 2, divisor_override=1)[0, 0, 0, 0] == 367.0


def test_global_and_adaptive_known_answers():
    x = LECTURE_IMAGE[None, None]
    g = global_avg_pool2d(x)
    assert g.shape == (1, 1, 1, 1) and g[0, 0, 0, 0] == pytest.approx(LECTURE_IMAGE.mean())
    assert LECTURE_IMAGE.sum() == 2502
    # 5 -> 2 bins: rows 0-2 and 2-4 (overlapping at 2), PyTorch's floor/ceil rule
    a = adaptive_avg_pool2d(x, 2)
    assert a[0, 0, 0, 0] == pytest.approx(LECTURE_IMAGE[:3, :3].mean())
    assert a[0, 0, 1, 1] == pytest.approx(LECTURE_IMAGE[2:, 2:].mean())
    # MobileNet's final 7x7 average pool equals global average pooling
    x7 = np.random.default_rng(0).standard_normal((2, 4, 7, 7))
    np.testing.assert_allclose(avg_pool2d(x7, 7), global_avg_pool2d(x7), rtol=1e-12)
    _, cache = adaptive_avg_pool2d_forward(x7, 1)
    np.testing.assert_allclose(adaptive_avg_pool2d_backward(np.full((2, 4, 1, 1), 49.0), cache),
                               np.ones((2, 4, 7, 7)), rtol=1e-12)


# ---------------------------------------------------------------------------------
# 5. Errors, N = 0, dtypes
# ---------------------------------------------------------------------------------
ERR = (ValueError, TypeError)
X = np.zeros((2, 3, 6, 6))


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=0), "must be positive"),
    (dict(kernel_size=(2, -1)), "must be positive"),
    (dict(kernel_size=2, stride=0), "must be positive"),
    (dict(kernel_size=2, padding=-1), "must be non-negative"),
    (dict(kernel_size=2, padding=(0, 0, 0, -1)), "must be non-negative"),
    (dict(kernel_size=3, padding=2), "at most half"),
    (dict(kernel_size=(4, 2), padding=(2, 2)), "at most half"),
    (dict(kernel_size=(3, 3), padding=(0, 2, 0, 0)), "at most half"),
    (dict(kernel_size=(7, 2)), r"output height would be .*\(I - K \+ 2P\)/S \+ 1"),
    (dict(kernel_size=(2, 8), padding=(1, 0)), r"output width would be .*\(I - K \+ 2P\)/S \+ 1"),
])
def test_pool_errors(op, kwargs, match):
    fn = max_pool2d_forward if op == "max_pool2d" else avg_pool2d_forward
    with pytest.raises(ERR, match=match) as info:
        fn(X, **kwargs)
    assert str(info.value).startswith(op)


def test_pool_more_errors():
    with pytest.raises(ERR, match="must be positive"):
        max_pool2d_forward(X, 2, dilation=0)
    with pytest.raises(ERR, match="expected a 4-D input"):
        max_pool2d_forward(np.zeros((3, 6, 6)), 2)
    with pytest.raises(ERR, match="expected a 4-D input"):
        avg_pool2d_forward(np.zeros((1, 2, 3, 6, 6)), 2)
    with pytest.raises(ERR, match="expected a 4-D input"):
        adaptive_avg_pool2d_forward(np.zeros((6, 6)), 2)
    with pytest.raises(ERR, match="output height would be"):   # dilation makes the window too large
        max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2, dilation=(4, 1))


def test_max_pool_half_rule_counts_kernel_size_not_dilated_extent():
    """The contract (and PyTorch: "pad should be smaller than or equal to half of
    kernel size") bounds padding by kernel_size/2, also with dilation."""
    with pytest.raises(ERR, match="at most half"):
        max_pool2d_forward(np.zeros((1, 1, 8, 8)), 2, padding=2, dilation=3)
    with pytest.raises(RuntimeError, match="half of kernel size"):
        TF.max_pool2d(torch.zeros(1, 1, 8, 8), 2, padding=2, dilation=3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pools_empty_batch_and_dtype(dtype):
    for n in (0, 2):
        x = np.random.default_rng(3).standard_normal((n, 3, 7, 6)).astype(dtype)
        for fwd, bwd, args, out in [
            (max_pool2d_forward, max_pool2d_backward, (3, 2, 1), (4, 3)),
            (avg_pool2d_forward, avg_pool2d_backward, (3, 2, 1), (4, 3)),
            (adaptive_avg_pool2d_forward, adaptive_avg_pool2d_backward, ((2, 5),), (2, 5)),
            (adaptive_avg_pool2d_forward, adaptive_avg_pool2d_backward, (1,), (1, 1)),
        ]:
            y, cache = fwd(x, *args)
            assert y.shape == (n, 3) + out and y.dtype == dtype, (fwd.__name__, y.shape, y.dtype)
            dx = bwd(np.ones(y.shape, dtype), cache)
            assert dx.shape == x.shape and dx.dtype == dtype, (bwd.__name__, dx.shape, dx.dtype)


def test_pool_inputs_not_modified():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 5))
    x0 = x.copy()
    for fwd, bwd in [(max_pool2d_forward, max_pool2d_backward), (avg_pool2d_forward, avg_pool2d_backward)]:
        y, cache = fwd(x, 3, 2, 1)
        dy = rng.standard_normal(y.shape)
        dy0 = dy.copy()
        bwd(dy, cache)
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(dy, dy0)


@pytest.mark.parametrize("op", ["max", "avg", "adaptive"])
def test_backward_unaffected_by_in_place_change_of_returned_y(op):
    """The caller owns the returned y: scaling it in place (an in-place activation
    or rescale downstream) must not change the gradient the cache gives."""
    rng = np.random.default_rng(41)
    x = rng.standard_normal((2, 3, 7, 6))
    fwd, bwd, args = dict(max=(max_pool2d_forward, max_pool2d_backward, (3, 2, 1)),
                          avg=(avg_pool2d_forward, avg_pool2d_backward, (3, 2, 1)),
                          adaptive=(adaptive_avg_pool2d_forward, adaptive_avg_pool2d_backward, ((3, 2),)))[op]
    y, cache = fwd(x, *args)
    dy = rng.standard_normal(y.shape)
    clean = bwd(dy, cache)
    y2, cache2 = fwd(x, *args)
    y2 *= 2.0
    np.testing.assert_array_equal(bwd(dy, cache2), clean)


def test_remembered_argument_checks_still_refuse_what_they_refused():
    """Conv and pool argument checks are remembered per call signature (``_check.memo``):
    a bool where an int was accepted before is still refused, lists still work, and an
    error is raised every time."""
    from cnnkit.functional import avg_pool2d_forward, conv2d_forward, max_pool2d_forward
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    for _ in range(2):
        assert conv2d_forward(x, w, None, (1, 1), 1)[0].shape == (1, 3, 6, 6)
        assert conv2d_forward(x, w, None, [1, 1], [1, 1])[0].shape == (1, 3, 6, 6)
        with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
            conv2d_forward(x, w, None, (1, True), 1)
        with pytest.raises(ValueError, match="input has 2 channels"):
            conv2d_forward(x, np.ones((3, 4, 3, 3), np.float32))
        assert max_pool2d_forward(x, (2, 2))[0].shape == (1, 2, 3, 3)
        assert avg_pool2d_forward(x, [2, 2])[0].shape == (1, 2, 3, 3)
        with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
            max_pool2d_forward(x, (2, True))
        with pytest.raises(ValueError, match="padding must be at most half"):
            avg_pool2d_forward(x, 2, padding=2)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_max_pool_2x2_nan_inf_and_ties_same_both_ways_and_like_torch(layout):
    """The compiled 2x2 stride-2 max/argmax pass (``_jit.max_pool_2x2_argmax`` and its
    route) against the NumPy path with the JIT off and against PyTorch: NaN anywhere in a
    window (two in one: the later wins, as PyTorch's running rule), all -inf windows,
    +-inf, ties, -0.0 against 0.0, odd sizes (rows and columns no window reads)."""
    rng = np.random.default_rng(43)
    x = rng.integers(-2, 3, (2, 3, 9, 7)).astype(np.float64)
    if layout == "transposed":
        x = np.ascontiguousarray(x.swapaxes(2, 3)).swapaxes(2, 3)
    x[0, 0, 0, 1] = np.nan
    x[0, 1, 2, 2] = x[0, 1, 3, 3] = np.nan
    x[1, 0, 4:6, 0:2] = -np.inf
    x[1, 1, 0, 0], x[1, 1, 1, 1] = np.inf, -np.inf
    x[1, 2, 0, 0], x[1, 2, 0, 1], x[1, 2, 1, 0], x[1, 2, 1, 1] = -0.0, 0.0, -0.0, -1.0
    dy = rng.standard_normal((2, 3, 4, 3))
    out = {}
    for on in (True, False):
        previous = runtime.set_jit(on)
        try:
            y, cache = max_pool2d_forward(x, 2)
            out[on] = (y, max_pool2d_backward(dy, cache))
        finally:
            runtime.set_jit(previous)
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    yt = TF.max_pool2d(xt, 2)
    yt.backward(torch.from_numpy(dy))
    for y, dx in out.values():
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert np.array_equal(out[True][0], out[False][0], equal_nan=True)
    assert np.array_equal(np.signbit(out[True][0]), np.signbit(out[False][0]))
    np.testing.assert_array_equal(out[True][1], out[False][1])


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("stride,padding,ceil", [(2, 1, False), (2, 0, False), (1, 1, False), ((2, 1), 1, False),
                                                 ((1, 2), 0, True), (3, 1, True), (2, 0, True)])
def test_max_pool_3x3_nan_inf_and_ties_same_both_ways_and_like_torch(layout, stride, padding, ceil):
    """The compiled 3x3 max/argmax pass (``_jit.max_pool_3x3_argmax``) and the backward
    that adds each dy at its stored argmax (``_jit.max_pool_arg_scatter``) against the
    NumPy paths with the JIT off and against PyTorch: overlapping windows (gradients
    accumulate), padding and ceil-mode overhang (never the maximum), NaN (two in one
    window: the later wins), all -inf windows (the first pixel inside the input gets the
    gradient), +-inf, many ties, odd sizes."""
    rng = np.random.default_rng(44)
    x = rng.integers(-2, 3, (2, 3, 11, 9)).astype(np.float64)
    if layout == "transposed":
        x = x.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)  # channel-major memory
    elif layout == "strided":
        x = np.repeat(x, 2, axis=3)[..., ::2]  # neither: the compiled pass reads an NCHW copy
    x[0, 0, 0, 1] = np.nan
    x[0, 1, 2, 2] = x[0, 1, 3, 3] = np.nan
    x[1, 0, 0:4, 0:4] = -np.inf
    x[1, 1, 5, 5], x[1, 1, 6, 6] = np.inf, -np.inf
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    yt = TF.max_pool2d(xt, 3, stride, padding, ceil_mode=ceil)
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    out = {}
    for on in (True, False):
        previous = runtime.set_jit(on)
        try:
            y, cache = max_pool2d_forward(x, 3, stride, padding, ceil_mode=ceil)
            out[on] = (y, cache[0], max_pool2d_backward(dy, cache))
        finally:
            runtime.set_jit(previous)
    if runtime.jit_kernels() is not None:
        assert out[True][1] == "argmax"  # (the compiled pass ran)
    for y, _, dx in out.values():
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert np.array_equal(out[True][0], out[False][0], equal_nan=True)
    np.testing.assert_allclose(out[True][2], out[False][2], rtol=1e-12, atol=1e-12)


def test_argmax_scatter_drops_windows_with_no_pixel_inside():
    """A dilated window that sees padding only (PyTorch refuses such shapes) has max -inf
    and an argmax offset in the padding: the compiled scatter adds nothing for it (and
    writes nowhere outside dx), as the NumPy route, whose padded gradient is cropped."""
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    rng = np.random.default_rng(45)
    x = rng.standard_normal((1, 2, 2, 4))
    y, cache = max_pool2d_forward(x, 2, 1, 1, dilation=3)  # every window reads rows -1 and 2 of 2 rows
    assert cache[0] == "argmax" and y.shape == (1, 2, 1, 3) and np.isneginf(y).all()
    dy = rng.standard_normal(y.shape)
    dx = max_pool2d_backward(dy, cache)
    previous = runtime.set_jit(False)
    try:
        ref = max_pool2d_backward(dy, cache)
    finally:
        runtime.set_jit(previous)
    np.testing.assert_array_equal(dx, ref)
    np.testing.assert_array_equal(dx, np.zeros_like(x))

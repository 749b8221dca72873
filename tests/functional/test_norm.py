"""Kernels of cnnkit.functional.norm: gradient checks, PyTorch, known answers, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.functional.norm import (alexnet_alpha_to_torch, batch_norm, batch_norm_backward,
                                    batch_norm_forward, local_response_norm,
                                    local_response_norm_backward, local_response_norm_forward)
from tests.functional.conftest import jit_both_ways
from tests.helpers import assert_close, numeric_grad, to_numpy, to_torch

SHAPES = [(5, 3), (3, 2, 4), (2, 3, 2, 3)]


def pytest_generate_tests(metafunc):
    """Every batch-norm test runs with the Numba-compiled training kernels (where Numba
    is installed) and with the NumPy ones (conftest.py)."""
    jit_both_ways(metafunc, "batch_norm" in metafunc.function.__name__)
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _bn_args(shape, dtype, rng, weight=True, bias=True):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = (rng.standard_normal(c) + 1).astype(dtype) if weight else None
    b = rng.standard_normal(c).astype(dtype) if bias else None
    rm = rng.standard_normal(c).astype(dtype)
    rv = rng.uniform(0.5, 2.0, c).astype(dtype)
    return x, w, b, rm, rv


# ---------------------------------------------------------------------------------
# batch norm: float64 central differences
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("weight,bias", [(True, True), (False, False), (True, False)])
def test_batch_norm_gradcheck(shape, training, weight, bias):
    rng = np.random.default_rng(0)
    x, w, b, rm, rv = _bn_args(shape, np.float64, rng, weight, bias)
    dy = rng.standard_normal(shape)

    def f():  # fresh copies: training updates the running stats in place
        return batch_norm(x, w, b, rm.copy(), rv.copy(), training)

    y, cache = batch_norm_forward(x, w, b, rm.copy(), rv.copy(), training)
    dx, dw, db = batch_norm_backward(dy, cache)
    assert_close(dx, numeric_grad(f, x, dy), rtol=1e-6, atol=1e-8, what="dx")
    if weight:
        assert_close(dw, numeric_grad(f, w, dy), rtol=1e-6, atol=1e-8, what="dweight")
    else:
        assert dw is None
    if bias:
        assert_close(db, numeric_grad(f, b, dy), rtol=1e-6, atol=1e-8, what="dbias")
    else:
        assert db is None


def test_batch_norm_gradcheck_batch_stats_in_eval():
    # running stats None (track_running_stats=False): batch statistics even when not training
    rng = np.random.default_rng(1)
    x, w, b, _, _ = _bn_args((4, 2, 3), np.float64, rng)
    dy = rng.standard_normal(x.shape)
    _, cache = batch_norm_forward(x, w, b, None, None, training=False)
    dx, _, _ = batch_norm_backward(dy, cache)
    assert_close(dx, numeric_grad(lambda: batch_norm(x, w, b, None, None, False), x, dy),
                 rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------
# batch norm: PyTorch and known answers
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(16, 4, 7, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(dtype, shape, training):
    rng = np.random.default_rng(2)
    x, w, b, rm, rv = _bn_args(shape, dtype, rng)
    dy = rng.standard_normal(shape).astype(dtype)
    xt, wt, bt = to_torch(x, True), to_torch(w, True), to_torch(b, True)
    rmt, rvt = to_torch(rm), to_torch(rv)  # copies, before ours updates rm, rv in place
    y, cache = batch_norm_forward(x, w, b, rm, rv, training, momentum=0.3, eps=1e-3)
    dx, dw, db = batch_norm_backward(dy, cache)
    yt = F.batch_norm(xt, rmt, rvt, wt, bt, training, 0.3, 1e-3)
    yt.backward(to_torch(dy))
    tol = TOL[dtype]
    for name, ours, ref in [("y", y, yt), ("dx", dx, xt.grad), ("dweight", dw, wt.grad),
                            ("dbias", db, bt.grad), ("running_mean", rm, rmt),
                            ("running_var", rv, rvt)]:
        assert ours.dtype == dtype, name
        assert_close(ours, to_numpy(ref), **tol, what=name)


def test_batch_norm_running_stats_cache_immune_to_in_place_changes():
    """With running statistics the forward is y = x * scale + shift and the cache keeps a
    copy of x (xhat is rebuilt for dgamma): changing x or y in place after the forward
    leaves the gradients alone, for an NCHW and a channel-major input, vs PyTorch."""
    rng = np.random.default_rng(5)
    for channel_major in (False, True):
        x, w, b, rm, rv = _bn_args((6, 3, 4, 5), np.float32, rng)
        if channel_major:
            x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        xt, wt, bt = to_torch(x, True), to_torch(w, True), to_torch(b, True)
        yt = F.batch_norm(xt, to_torch(rm), to_torch(rv), wt, bt, False, 0.1, 1e-5)
        yt.backward(to_torch(dy))
        y, cache = batch_norm_forward(x, w, b, rm, rv, training=False)
        assert_close(y, to_numpy(yt), **TOL[np.float32], what="y")
        x += 100.0
        y *= -1.0
        dx, dw, db = batch_norm_backward(dy, cache)
        for name, ours, ref in [("dx", dx, xt.grad), ("dweight", dw, wt.grad), ("dbias", db, bt.grad)]:
            assert_close(ours, to_numpy(ref), **TOL[np.float32], what=name)


@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
def test_compiled_bn_keeps_the_input_not_xhat(affine, relu, layout):
    """Training mode, compiled: the forward writes no xhat and keeps the input (its own
    memory when channel-major, as conv outputs are: no copy) with the float32 mean it was
    centred on. y has the bits of ``((x - mean) * inv_std) * weight + bias`` (then the
    ReLU) in float32 from those; the backward, which computes xhat again from them, and a
    backward run without the compiled kernels (xhat rebuilt in NumPy) match PyTorch."""
    from cnnkit import runtime
    if runtime.jit_kernels() is None:
        pytest.skip("Numba is not installed")
    rng = np.random.default_rng(11)
    has_w, has_b = affine in ("both", "weight"), affine in ("both", "bias")
    x, w, b, rm, rv = _bn_args((6, 5, 7, 9), np.float32, rng, has_w, has_b)
    x = x * 3 + 40  # a mean far from 0: a wrong xhat shows
    if layout == "channel_major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    xt = to_torch(x, True)
    wt, bt = (to_torch(v, True) if v is not None else None for v in (w, b))
    yt = F.batch_norm(xt, to_torch(rm.copy()), to_torch(rv.copy()), wt, bt, True, 0.1, 1e-5)
    yt = torch.relu(yt) if relu else yt
    yt.backward(to_torch(dy))
    for bwd_jit in (True, False):
        previous = runtime.set_jit(True)
        try:
            y, cache = batch_norm_forward(x, w, b, rm.copy(), rv.copy(), training=True, relu=relu)
            assert cache.xhat is None and cache.x.shape == x.shape
            assert np.shares_memory(cache.x, x) == (layout == "channel_major")
            np.testing.assert_array_equal(cache.x, x)
            shape = (1, -1, 1, 1)
            ref = (x - cache.mean.reshape(shape)) * cache.inv_std.reshape(shape)
            ref = ref * w.reshape(shape) if has_w else ref
            ref = ref + b.reshape(shape) if has_b else ref
            np.testing.assert_array_equal(y, np.maximum(ref, 0) if relu else ref)
            runtime.set_jit(bwd_jit)
            dx, dw, db = batch_norm_backward(dy, cache)
        finally:
            runtime.set_jit(previous)
        assert_close(y, to_numpy(yt), **TOL[np.float32], what="y")
        assert_close(dx, to_numpy(xt.grad), **TOL[np.float32], what=f"dx (compiled backward: {bwd_jit})")
        for name, ours, ref_t in (("dweight", dw, wt), ("dbias", db, bt)):
            if ref_t is None:
                assert ours is None, name
            else:
                assert_close(ours, to_numpy(ref_t.grad), **TOL[np.float32], what=name)


def test_batch_norm_known_answer_and_running_update():
    # one channel, values 1 and 3: mean 2, biased var 1, unbiased var 2
    x = np.array([[1.0], [3.0]])
    rm, rv = np.zeros(1), np.ones(1)
    y = batch_norm(x, None, None, rm, rv, training=True, momentum=0.1, eps=0.0)
    assert_close(y, [[-1.0], [1.0]], rtol=0, atol=1e-15)
    assert_close(rm, [0.1 * 2], rtol=0, atol=1e-15)             # 0.9 * 0 + 0.1 * 2
    assert_close(rv, [0.9 * 1 + 0.1 * 2], rtol=0, atol=1e-15)   # unbiased variance 2
    # eval uses the running stats: (x - 0.2) / sqrt(1.1)
    y = batch_norm(x, np.array([2.0]), np.array([1.0]), rm, rv, training=False, eps=0.0)
    assert_close(y, 2 * (x - 0.2) / np.sqrt(1.1) + 1, rtol=1e-14, atol=0)
    assert_close(rm, [0.2], rtol=0, atol=1e-15)  # eval leaves them alone


def test_batch_norm_running_stats_none_never_updated_and_weights_untouched():
    rng = np.random.default_rng(3)
    x, w, b, rm, rv = _bn_args((4, 3, 2, 2), np.float64, rng)
    w0, b0, rm0, rv0 = w.copy(), b.copy(), rm.copy(), rv.copy()
    batch_norm(x, w, b, rm, rv, training=False)
    for a, a0 in [(w, w0), (b, b0), (rm, rm0), (rv, rv0)]:
        np.testing.assert_array_equal(a, a0)
    y_none = batch_norm(x, w, b, None, None, training=False)
    y_train = batch_norm(x, w, b, rm.copy(), rv.copy(), training=True)
    assert_close(y_none, y_train, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_preserves_dtype_with_numpy_scalars(dtype):
    rng = np.random.default_rng(4)
    x, w, b, rm, rv = _bn_args((3, 2, 4), dtype, rng)
    y, cache = batch_norm_forward(x, w, b, rm, rv, True, momentum=np.float64(0.2),
                                  eps=np.float64(1e-5))
    dx, dw, db = batch_norm_backward(rng.standard_normal(x.shape), cache)  # float64 dy
    for a in (y, dx, dw, db, rm, rv):
        assert a.dtype == dtype


def test_batch_norm_non_contiguous_input():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 5, 4, 2)).transpose(0, 3, 2, 1)  # (3, 2, 4, 5), a view
    assert not x.flags.c_contiguous
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    dy = rng.standard_normal(x.shape)
    y1, c1 = batch_norm_forward(x, w, b, None, None, True)
    y2, c2 = batch_norm_forward(np.ascontiguousarray(x), w, b, None, None, True)
    assert_close(y1, y2, rtol=1e-14, atol=1e-14)
    assert_close(batch_norm_backward(dy, c1)[0], batch_norm_backward(dy, c2)[0],
                 rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_empty_batch_matches_torch(training):
    # PyTorch gives an empty output for N = 0, also in training, and leaves the stats
    rm, rv = np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)
    x = np.zeros((0, 3, 2, 2), np.float32)
    y, cache = batch_norm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), rm, rv,
                                  training)
    assert y.shape == x.shape and y.dtype == np.float32
    dx, dw, db = batch_norm_backward(np.zeros_like(x), cache)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)
    np.testing.assert_array_equal(rm, 0.5)
    np.testing.assert_array_equal(rv, 2.0)
    rmt, rvt = torch.full((3,), 0.5), torch.full((3,), 2.0)
    yt = F.batch_norm(to_torch(x), rmt, rvt, torch.ones(3), torch.zeros(3), training)
    assert tuple(yt.shape) == y.shape
    assert_close(rm, to_numpy(rmt))


# ---------------------------------------------------------------------------------
# batch norm: errors
# ---------------------------------------------------------------------------------
def test_batch_norm_errors():
    x = np.zeros((4, 3, 2, 2), np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"batch_norm: expected a 2-D or 3-D or 4-D input"):
        batch_norm(np.zeros((2, 3, 2, 2, 2), np.float32), None, None, None, None, True)
    with pytest.raises(TypeError, match=r"input must be float32 or float64"):
        batch_norm(np.zeros((4, 3), np.int64), None, None, None, None, True)
    with pytest.raises(TypeError, match=r"input must be a numpy.ndarray"):
        batch_norm([[1.0, 2.0]], None, None, None, None, True)
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\).*"
                                         r"weight.shape=\(4,\)"):
        batch_norm(x, np.ones(4, np.float32), None, None, None, True)
    with pytest.raises(ValueError, match=r"running_var must have shape"):
        batch_norm(x, None, None, zeros, np.ones((1, 3), np.float32), False)
    with pytest.raises(TypeError, match=r"dtype mismatch.*input.dtype='float32', "
                                        r"weight.dtype='float64'"):
        batch_norm(x, np.ones(3), None, None, None, True)
    with pytest.raises(ValueError, match=r"running_mean and running_var must both be given"):
        batch_norm(x, None, None, zeros, None, False)
    with pytest.raises(TypeError, match=r"momentum must be a number; momentum=None"):
        batch_norm(x, None, None, zeros, ones, True, momentum=None)
    with pytest.raises(TypeError, match=r"eps must be a real number"):
        batch_norm(x, None, None, None, None, True, eps="1e-5")
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per channel "
                                         r"when training.*input=\(1, 3, 1, 1\)"):
        batch_norm(np.zeros((1, 3, 1, 1), np.float32), None, None, zeros, ones, True)
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):  # batch stats in eval
        batch_norm(np.zeros((1, 3), np.float32), None, None, None, None, False)
    # inference with one value per channel is fine (running stats)
    assert batch_norm(np.zeros((1, 3), np.float32), None, None, zeros, ones, False).shape == (1, 3)
    _, cache = batch_norm_forward(x, None, None, None, None, True)
    with pytest.raises(ValueError, match=r"batch_norm_backward: dy must have the shape of the "
                                         r"forward output"):
        batch_norm_backward(np.zeros((4, 3, 2, 1), np.float32), cache)


# ---------------------------------------------------------------------------------
# local response norm
# ---------------------------------------------------------------------------------
def _lrn_loop(x, size, alpha, beta, k):
    """The slow, obvious oracle: one channel at a time, the window clipped to [0, C)."""
    y = np.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels - 1, c + (size - 1) // 2)
        s = k + alpha / size * (x[:, lo:hi + 1] ** 2).sum(axis=1)
        y[:, c] = x[:, c] / s ** beta
    return y


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 4, 2, 3)])
def test_lrn_gradcheck(size, shape):
    rng = np.random.default_rng(size)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    args = (size, 0.5, 0.75, 1.5)  # a large alpha so that the cross-channel term matters
    _, cache = local_response_norm_forward(x, *args)
    dx = local_response_norm_backward(dy, cache)
    assert_close(dx, numeric_grad(lambda: local_response_norm(x, *args), x, dy),
                 rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("alpha,beta,k", [(1e-4, 0.75, 1.0), (5e-4, 0.75, 2.0), (0.3, 0.5, 1.0),
                                          (2.0, 1.3, 0.5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lrn_matches_torch(size, alpha, beta, k, dtype):
    rng = np.random.default_rng(size)
    for shape in [(2, 6, 5), (2, 6, 3, 4)]:
        x = (rng.standard_normal(shape) * 2).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        y, cache = local_response_norm_forward(x, size, alpha, beta, k)
        dx = local_response_norm_backward(dy, cache)
        xt = to_torch(x, True)
        yt = F.local_response_norm(xt, size, alpha, beta, k)
        yt.backward(to_torch(dy))
        assert y.dtype == dx.dtype == dtype
        assert_close(y, to_numpy(yt), **TOL[dtype], what="y")
        assert_close(dx, to_numpy(xt.grad), **TOL[dtype], what="dx")


@pytest.mark.parametrize("size", [1, 2, 5, 8])
def test_lrn_matches_loop_oracle(size):
    x = np.random.default_rng(7).standard_normal((2, 6, 3, 2))
    assert_close(local_response_norm(x, size, 0.4, 0.75, 2.0), _lrn_loop(x, size, 0.4, 0.75, 2.0),
                 rtol=1e-13, atol=1e-15)


def test_lrn_known_answers():
    # all ones, alpha = size so that alpha/size = 1, beta = 1, k = 1: s_c = 1 + #window channels
    x = np.ones((1, 3, 1, 1))
    assert_close(local_response_norm(x, 3, 3.0, 1.0, 1.0).ravel(), [1 / 3, 1 / 4, 1 / 3],
                 rtol=1e-15, atol=0)
    # even size 2: the window is (c - 1, c): channel 0 sees only itself
    assert_close(local_response_norm(x, 2, 2.0, 1.0, 1.0).ravel(), [1 / 2, 1 / 3, 1 / 3],
                 rtol=1e-15, atol=0)
    # size 4: window (c - 2 .. c + 1)
    assert_close(local_response_norm(x, 4, 4.0, 1.0, 1.0).ravel(), [1 / 3, 1 / 4, 1 / 4],
                 rtol=1e-15, atol=0)


def test_alexnet_alpha_conversion():
    assert alexnet_alpha_to_torch(1e-4, 5) == pytest.approx(5e-4)
    # the paper's formula, b = a / (k + alpha * sum a^2)^beta, with its k=2, n=5, alpha=1e-4
    x = np.random.default_rng(8).standard_normal((1, 7, 2, 2)) * 30
    c = x.shape[1]
    paper = np.empty_like(x)
    for i in range(c):
        window = x[:, max(0, i - 2):min(c, i + 3)]
        paper[:, i] = x[:, i] / (2 + 1e-4 * (window ** 2).sum(axis=1)) ** 0.75
    ours = local_response_norm(x, 5, alexnet_alpha_to_torch(1e-4, 5), 0.75, 2.0)
    assert_close(ours, paper, rtol=1e-13, atol=1e-15)
    assert not np.allclose(local_response_norm(x, 5, 1e-4, 0.75, 2.0), paper, rtol=1e-6)


def test_lrn_empty_and_non_contiguous_and_5d():
    assert local_response_norm(np.zeros((0, 3, 2), np.float32), 3).shape == (0, 3, 2)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 5, 2)).transpose(3, 2, 1, 0)  # (2, 5, 3, 4), a view
    assert_close(local_response_norm(x, 3, 0.5),
                 local_response_norm(np.ascontiguousarray(x), 3, 0.5),
                 rtol=1e-15, atol=0)
    x5 = rng.standard_normal((1, 4, 2, 2, 2))
    ref = F.local_response_norm(to_torch(x5), 3, 0.5)
    assert_close(local_response_norm(x5, 3, 0.5), to_numpy(ref), rtol=1e-12, atol=1e-14)


def test_lrn_errors():
    x = np.zeros((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"local_response_norm: size must be at least 1.*size=0"):
        local_response_norm(x, 0)
    with pytest.raises(TypeError, match=r"size must be an int.*size=2.5"):
        local_response_norm(x, 2.5)
    with pytest.raises(ValueError, match=r"expected a 3-D or higher input \(N, C, \*\), got 2-D"):
        local_response_norm(np.zeros((2, 3), np.float32), 3)
    with pytest.raises(TypeError, match=r"input must be float32 or float64"):
        local_response_norm(np.zeros((1, 3, 2), np.int32), 3)
    with pytest.raises(TypeError, match=r"input must be a numpy.ndarray"):
        local_response_norm(torch.zeros(1, 3, 2), 3)
    with pytest.raises(TypeError, match=r"beta must be a real number"):
        local_response_norm(x, 3, beta=None)
    _, cache = local_response_norm_forward(x, 3)
    with pytest.raises(ValueError, match=r"dy must have the shape of the forward output"):
        local_response_norm_backward(np.zeros((1, 3, 2), np.float32), cache)

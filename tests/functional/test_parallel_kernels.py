"""The element-wise kernels split by channel over cnnkit's worker threads: the result
must be bit-for-bit the serial one (each channel is computed the same way, only by
another thread) and match PyTorch in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit import runtime
from cnnkit.functional import activation as A
from cnnkit.functional import norm as B
from cnnkit.functional import pool as P


@pytest.fixture
def two_threads(monkeypatch):
    """Returns a function that runs ``fn`` serially and on two threads, checks that the
    threaded run really split work, and returns both results."""
    splits = []
    real = runtime.parallel_map
    monkeypatch.setattr(runtime, "parallel_map", lambda fn, items: splits.append(len(items)) or real(fn, items))

    def both(fn):
        serial = fn()
        runtime.set_num_threads(2)
        try:
            splits.clear()
            threaded = fn()
        finally:
            runtime.set_num_threads(1)
        assert splits and all(s == 2 for s in splits), f"no two-way split: {splits}"
        return serial, threaded
    return both


def channel_major(a):
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def assert_same(serial, threaded):
    for s, t in zip(serial, threaded):
        if s is None:
            assert t is None
            continue
        assert s.shape == t.shape and s.dtype == t.dtype
        assert np.array_equal(s, t, equal_nan=True)


@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
@pytest.mark.parametrize("training, affine", [(True, True), (True, False), (False, True)])
def test_batch_norm_two_threads(two_threads, layout, training, affine):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 32, 32)) * 3 + 1
    x = channel_major(x) if layout == "channel_major" else x
    dy = rng.standard_normal(x.shape)
    w, b = (rng.standard_normal(16), rng.standard_normal(16)) if affine else (None, None)
    rm0, rv0 = rng.standard_normal(16), rng.random(16) + 0.5

    def run():
        rm, rv = rm0.copy(), rv0.copy()
        y, cache = B.batch_norm_forward(x, w, b, rm, rv, training, 0.1, 1e-5)
        return (y, *B.batch_norm_backward(dy, cache), rm, rv)
    serial, threaded = two_threads(run)
    assert_same(serial, threaded)
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_() if affine else None
    bt = torch.from_numpy(b).requires_grad_() if affine else None
    rm, rv = torch.from_numpy(rm0.copy()), torch.from_numpy(rv0.copy())
    yt = TF.batch_norm(xt, rm, rv, wt, bt, training, 0.1, 1e-5)
    yt.backward(torch.from_numpy(dy))
    refs = [yt.detach(), xt.grad] + ([wt.grad, bt.grad] if affine else [None, None]) + [rm, rv]
    for ours, ref in zip(threaded, refs):
        if ref is None:
            assert ours is None
        else:
            np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
def test_relu_two_threads(two_threads, layout):
    """Above ``activation.STREAM_SERIAL_BELOW`` elements (1 M) the compiled ReLU splits
    its range over the workers; the bits are the serial ones."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 16, 96, 96)).astype(np.float32)
    assert x.size >= A.STREAM_SERIAL_BELOW
    x = channel_major(x) if layout == "channel_major" else x
    x[0, 0, 0, :4] = 0.0  # the gradient at exactly 0 is 0
    dy = rng.standard_normal(x.shape).astype(np.float32)

    def run():
        y, cache = A.relu_forward(x)
        return y, A.relu_backward(dy, cache)
    serial, threaded = two_threads(run)
    assert_same(serial, threaded)
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    yt = torch.relu(xt)
    yt.backward(torch.from_numpy(dy))
    assert np.array_equal(threaded[0], yt.detach().numpy())
    assert np.array_equal(threaded[1], xt.grad.numpy())
    assert threaded[0].strides == x.strides  # keeps the input's memory layout


def test_small_relu_and_add_stay_on_the_calling_thread(monkeypatch):
    """Below ``activation.STREAM_SERIAL_BELOW`` elements the compiled ReLU and add run
    where they are called, even with two workers (a hand-off costs about what they do)."""
    if runtime.jit_kernels() is None:
        pytest.skip("the compiled kernels need Numba")
    calls = []
    real = runtime.parallel_map
    monkeypatch.setattr(runtime, "parallel_map", lambda fn, items, **kw: calls.append(len(items)) or real(fn, items, **kw))
    x = np.random.default_rng(3).standard_normal((64, 6, 28, 28)).astype(np.float32)  # LeNet-5's first ReLU
    runtime.set_num_threads(2)
    try:
        y, cache = A.relu_forward(x)
        A.relu_backward(x, cache)
        A.add(x, y)
    finally:
        runtime.set_num_threads(1)
    assert x.size < A.STREAM_SERIAL_BELOW and calls == []


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 3, 0)])
def test_max_pool_two_threads(two_threads, kernel, stride, padding):
    rng = np.random.default_rng(2)
    x = channel_major(rng.standard_normal((8, 16, 49, 48)).round(1))  # rounding makes ties
    y0 = P.max_pool2d_forward(x, kernel, stride, padding)[0]
    dy = rng.standard_normal(y0.shape)

    def run():
        y, cache = P.max_pool2d_forward(x, kernel, stride, padding)
        return y, P.max_pool2d_backward(dy, cache)
    serial, threaded = two_threads(run)
    assert_same(serial, threaded)
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    yt = TF.max_pool2d(xt, kernel, stride, padding)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(threaded[0], yt.detach().numpy())
    np.testing.assert_allclose(threaded[1], xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [(2, 2, 0, False), (3, 2, 1, False),
                                                           (2, 2, 0, True), (3, 3, 1, True)])
def test_avg_pool_two_threads(two_threads, kernel, stride, padding, ceil_mode):
    """Tiling windows (2x2 s2 on an even size) take the write-only backward; the odd
    width with ceil_mode leaves a partial window, and 3x3 s2 overlaps."""
    rng = np.random.default_rng(5)
    x = channel_major(rng.standard_normal((8, 16, 40, 41)))
    y0 = P.avg_pool2d_forward(x, kernel, stride, padding, ceil_mode)[0]
    dy = rng.standard_normal(y0.shape)

    def run():
        y, cache = P.avg_pool2d_forward(x, kernel, stride, padding, ceil_mode)
        return y, P.avg_pool2d_backward(dy, cache)
    serial, threaded = two_threads(run)
    assert_same(serial, threaded)
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    yt = TF.avg_pool2d(xt, kernel, stride, padding, ceil_mode)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(threaded[0], yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(threaded[1], xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def assert_depthwise_matches_torch(got, x, w, dy, stride, padding):
    """(y, dx, dw) of a float64 depthwise conv against PyTorch's."""
    xt, wt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(), torch.from_numpy(w).requires_grad_()
    yt = TF.conv2d(xt, wt, None, stride, padding, 1, w.shape[0])
    yt.backward(torch.from_numpy(dy))
    for ours, ref in zip(got, (yt.detach(), xt.grad, wt.grad)):
        np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0)])
@pytest.mark.parametrize("jit", [True, False])
def test_depthwise_conv_two_threads(two_threads, monkeypatch, stride, padding, jit):
    from cnnkit.functional import conv as C
    monkeypatch.setitem(runtime._state, "jit", jit)  # the compiled kernels (where Numba is) or NumPy's
    rng = np.random.default_rng(3)
    x = channel_major(rng.standard_normal((4, 64, 30, 30)))
    w = rng.standard_normal((64, 1, 3, 3))
    y0 = C.conv2d_forward(x, w, None, stride, padding, 1, 64)[0]
    dy = rng.standard_normal(y0.shape)

    def run():
        y, cache = C.conv2d_forward(x, w, None, stride, padding, 1, 64)
        return (y, *C.conv2d_backward(dy, cache)[:2])
    serial, threaded = two_threads(run)
    assert_same(serial, threaded)
    assert_depthwise_matches_torch(threaded, x, w, dy, stride, padding)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1)])
def test_depthwise_conv_channel_blocks(monkeypatch, stride, padding):
    """One channel per cache block (every block boundary in play) gives the same bits as
    one block per thread, and matches PyTorch in float64 (both shift and strided taps).
    This is the NumPy path: the JIT is off."""
    from cnnkit.functional import conv as C
    monkeypatch.setitem(runtime._state, "jit", False)
    rng = np.random.default_rng(4)
    x = channel_major(rng.standard_normal((3, 24, 17, 17)))
    w = rng.standard_normal((24, 1, 3, 3))
    y0 = C.conv2d_forward(x, w, None, stride, padding, 1, 24)[0]
    dy = rng.standard_normal(y0.shape)

    def run(block_bytes):
        monkeypatch.setattr(C._Geometry, "depthwise_block_bytes", block_bytes)
        geo = C._geometry((3, 24, 17, 17), (24, 1, 3, 3), (padding,) * 4, (stride, stride), (1, 1),
                          y0.shape[2:], 24)
        assert len(list(geo.channel_blocks(0, 24, 8))) == (24 if block_bytes == 1 else 1)
        y, cache = C.conv2d_forward(x, w, None, stride, padding, 1, 24)
        return (y, *C.conv2d_backward(dy, cache)[:2])
    whole, blocked = run(1 << 40), run(1)
    assert_same(whole, blocked)
    assert_depthwise_matches_torch(blocked, x, w, dy, stride, padding)

"""Linear, flatten and dropout kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit.functional import regularization as D
from cnnkit.functional import dense as L
from tests.helpers import assert_close, numeric_grad, to_numpy, to_torch


# ---- linear -------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape", [(4, 3), (2, 5, 3), (2, 2, 2, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_match_central_differences(x_shape, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((4, 3))
    b = rng.standard_normal(4) if bias else None
    y, cache = L.linear_forward(x, w, b)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = L.linear_backward(dy, cache)
    f = lambda: L.linear(x, w, b)  # noqa: E731
    assert_close(dx, numeric_grad(f, x, dy), rtol=1e-6, atol=1e-9, what="dx")
    assert_close(dw, numeric_grad(f, w, dy), rtol=1e-6, atol=1e-9, what="dw")
    if bias:
        assert_close(db, numeric_grad(f, b, dy), rtol=1e-6, atol=1e-9, what="db")
    else:
        assert db is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, out", [((8, 5), 3), ((2, 3, 5), 7), ((5,), 2), ((0, 5), 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(x_shape, out, dtype, bias):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((out, x_shape[-1])).astype(dtype)
    b = rng.standard_normal(out).astype(dtype) if bias else None
    y, cache = L.linear_forward(x, w, b)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = L.linear_backward(dy, cache)
    xt, wt = to_torch(x, True), to_torch(w, True)
    bt = to_torch(b, True) if bias else None
    yt = TF.linear(xt, wt, bt)
    yt.backward(to_torch(dy))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert y.shape == x_shape[:-1] + (out,)
    for ours, ref, what in [(y, yt, "y"), (dx, xt.grad, "dx"), (dw, wt.grad, "dw")] + (
            [(db, bt.grad, "db")] if bias else []):
        assert ours.dtype == dtype, what
        assert_close(ours, to_numpy(ref), **tol, what=what)


@pytest.mark.parametrize("x_shape, out", [((64, 3136), 256), ((8, 16, 300), 501), ((24, 700), 1501)])
def test_linear_split_over_two_threads_matches_torch_float64(x_shape, out, monkeypatch):
    """Shapes large enough to be cut into column ranges on two worker threads (odd
    widths: unequal ranges); float64 so any misplaced column shows."""
    from cnnkit import runtime
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal((out, x_shape[-1])), rng.standard_normal(out)
    calls = []
    monkeypatch.setattr(L, "parallel_map", lambda fn, items: calls.append(len(items)) or runtime.parallel_map(fn, items))
    runtime.set_num_threads(2)
    try:
        y, cache = L.linear_forward(x, w, b)
        dy = rng.standard_normal(y.shape)
        dx, dw, db = L.linear_backward(dy, cache)
    finally:
        runtime.set_num_threads(1)
    assert calls == [2, 2, 2]  # forward, dx, dw each in two parts
    xt, wt, bt = to_torch(x, True), to_torch(w, True), to_torch(b, True)
    yt = TF.linear(xt, wt, bt)
    yt.backward(to_torch(dy))
    for ours, ref, what in [(y, yt, "y"), (dx, xt.grad, "dx"), (dw, wt.grad, "dw"), (db, bt.grad, "db")]:
        assert_close(ours, to_numpy(ref), rtol=1e-10, atol=1e-10, what=what)


def test_linear_known_answer_and_empty_batch():
    x = np.array([[1.0, 2.0]])
    w = np.array([[1.0, 0.0], [1.0, 1.0], [0.5, -1.0]])
    np.testing.assert_array_equal(L.linear(x, w, np.array([0.0, 1.0, 2.0])), [[1.0, 4.0, 0.5]])
    y, cache = L.linear_forward(np.zeros((0, 2), np.float32), w.astype(np.float32),
                                np.zeros(3, np.float32))
    dx, dw, db = L.linear_backward(np.zeros((0, 3), np.float32), cache)
    assert y.shape == (0, 3) and dx.shape == (0, 2)
    assert np.all(dw == 0) and dw.shape == (3, 2) and np.all(db == 0) and db.dtype == np.float32


def test_linear_errors():
    x = np.zeros((2, 3))
    w = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"^linear: the input's last dimension must equal "
                                         r"in_features = weight.shape\[1\] = 3, got 5. "
                                         r"Received: input=\(2, 5\), weight=\(4, 3\)$"):
        L.linear(np.zeros((2, 5)), w)
    with pytest.raises(TypeError, match=r"^linear: dtype mismatch.*input.dtype='float32', "
                                        r"weight.dtype='float64'"):
        L.linear(x.astype(np.float32), w)
    with pytest.raises(ValueError, match=r"^linear: expected a 2-D weight"):
        L.linear(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"^linear: bias must have out_features = "
                                         r"weight.shape\[0\] elements. Received: bias=\(3,\)"):
        L.linear(x, w, np.zeros(3))
    with pytest.raises(TypeError, match=r"^linear: input must be float32 or float64"):
        L.linear(np.zeros((2, 3), dtype=np.int64), w)
    with pytest.raises(ValueError, match=r"^linear: expected a input with at least 1 dimension"):
        L.linear(np.array(1.0), w)
    _, cache = L.linear_forward(x, w)
    with pytest.raises(ValueError, match=r"^linear_backward: dy must have the shape of the "
                                         r"forward output. Received: dy=\(2, 3\), output=\(2, 4\)"):
        L.linear_backward(np.zeros((2, 3)), cache)


# ---- flatten ------------------------------------------------------------------------
@pytest.mark.parametrize("shape, start, end", [((2, 3, 4, 5), 1, -1), ((2, 3, 4, 5), 0, 2),
                                               ((2, 3, 4, 5), 2, 2), ((0, 3, 4), 1, -1),
                                               ((3,), 0, -1), ((), 0, -1)])
def test_flatten_matches_torch(shape, start, end):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    y, cache = L.flatten_forward(x, start, end)
    expected = torch.flatten(torch.as_tensor(x), start, end)
    assert y.shape == tuple(expected.shape) and y.dtype == np.float32
    np.testing.assert_array_equal(y, expected.numpy())
    dx = L.flatten_backward(y * 2, cache)
    assert dx.shape == shape
    np.testing.assert_array_equal(dx, x * 2)


def test_flatten_errors():
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"^flatten: start_dim out of range for a 3-D input "
                                         r"\(expected -3 <= start_dim < 3\)"):
        L.flatten(x, 3)
    with pytest.raises(ValueError, match=r"^flatten: start_dim must not come after end_dim. "
                                         r"Received: start_dim=2, end_dim=1, ndim=3"):
        L.flatten(x, 2, 1)
    with pytest.raises(TypeError, match=r"^flatten: end_dim must be an int"):
        L.flatten(x, 1, 2.0)
    _, cache = L.flatten_forward(x)
    with pytest.raises(ValueError, match=r"^flatten_backward: dy must have as many elements"):
        L.flatten_backward(np.zeros((2, 11)), cache)


# ---- dropout ------------------------------------------------------------------------
def test_dropout_same_seed_same_mask_and_other_seed_other_mask():
    x = np.ones((50, 40), dtype=np.float32)
    a = D.dropout(x, 0.3, True, np.random.default_rng(7))
    b = D.dropout(x, 0.3, True, np.random.default_rng(7))
    c = D.dropout(x, 0.3, True, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_statistics_scale_and_gradient(p, dtype):
    x = np.ones((400, 500), dtype=dtype)
    y, cache = D.dropout_forward(x, p, True, np.random.default_rng(3))
    assert y.dtype == dtype
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.005                 # 200k draws: ~5 sigma
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)  # kept ones scaled by 1/(1-p)
    assert abs(y.mean() - 1) < 0.02                           # E[y] = x
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(dtype)
    dx = D.dropout_backward(dy, cache)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, dy * y)                  # the same mask, the same scale


def test_dropout_gradient_matches_central_differences():
    x = np.random.default_rng(5).standard_normal((6, 7))
    y, cache = D.dropout_forward(x, 0.4, True, np.random.default_rng(6))
    dy = np.random.default_rng(7).standard_normal(x.shape)
    f = lambda: D.dropout(x, 0.4, True, np.random.default_rng(6))  # noqa: E731
    assert_close(D.dropout_backward(dy, cache), numeric_grad(f, x, dy), rtol=1e-6, atol=1e-9)


def test_dropout_eval_p0_and_p1():
    x = np.random.default_rng(8).standard_normal((5, 4)).astype(np.float32)
    dy = np.ones_like(x)
    for training, p in [(False, 0.5), (False, 1.0), (True, 0.0)]:
        rng = np.random.default_rng(9)
        y, cache = D.dropout_forward(x, p, training, rng)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(D.dropout_backward(dy, cache), dy)
        assert rng.random() == np.random.default_rng(9).random()   # no draw was taken
    y, cache = D.dropout_forward(x, 1.0, True, np.random.default_rng(0))
    assert np.all(y == 0) and y.dtype == np.float32
    assert np.all(D.dropout_backward(dy, cache) == 0)
    # PyTorch agrees on the deterministic cases
    np.testing.assert_array_equal(TF.dropout(to_torch(x), 1.0, True).numpy(), y)
    np.testing.assert_array_equal(TF.dropout(to_torch(x), 0.5, False).numpy(), x)


def test_dropout_inplace_and_empty_batch():
    x = np.ones((30, 30))
    ref = D.dropout(x.copy(), 0.5, True, np.random.default_rng(1))
    y = D.dropout(x, 0.5, True, np.random.default_rng(1), inplace=True)
    assert y is x
    np.testing.assert_array_equal(x, ref)
    y, cache = D.dropout_forward(np.zeros((0, 3), np.float32), 0.5, True, np.random.default_rng())
    assert y.shape == (0, 3)
    assert D.dropout_backward(np.zeros((0, 3), np.float32), cache).shape == (0, 3)


def test_dropout_errors():
    x = np.zeros((2, 3))
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"^dropout: dropout probability p must be between "
                                             r"0 and 1. Received: p="):
            D.dropout(x, p, True, np.random.default_rng())
    with pytest.raises(TypeError, match=r"^dropout: dropout probability p must be a real "
                                        r"number. Received: p='0.5'"):
        D.dropout(x, "0.5")
    with pytest.raises(TypeError, match=r"^dropout: rng must be a numpy.random.Generator or "
                                        r"None. Received: rng='int'"):
        D.dropout(x, 0.5, True, 0)
    with pytest.raises(TypeError, match=r"^dropout: input must be float32 or float64"):
        D.dropout(np.zeros(3, dtype=np.int32), 0.5)
    _, cache = D.dropout_forward(x, 0.5, True, np.random.default_rng())
    with pytest.raises(TypeError, match=r"^dropout_backward: dy must have the dtype"):
        D.dropout_backward(np.zeros((2, 3), np.float32), cache)

import numpy as np
import pytest
import torch

from cnnkit.nn.module import Parameter
from cnnkit.optim import clip_grad_norm_, clip_grad_value_

SHAPES = ((3, 4), (5,), (2, 3, 2), (7,))


def _pair(dtype, scale, none_at=3, seed=0):
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for k, s in enumerate(SHAPES):
        w = rng.standard_normal(s).astype(dtype)
        p, tp = Parameter(w.copy()), torch.nn.Parameter(torch.from_numpy(w.copy()))
        if k != none_at:
            g = (scale * rng.standard_normal(s)).astype(dtype)
            p.grad, tp.grad = g.copy(), torch.from_numpy(g.copy())
        ours.append(p)
        theirs.append(tp)
    return ours, theirs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, float("inf"), "inf", 1.0, 3.0])
@pytest.mark.parametrize("scale", [10.0, 0.01], ids=["clipped", "below-max"])
def test_clip_grad_norm_matches_torch(norm_type, scale, dtype):
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    ours, theirs = _pair(dtype, scale)
    before = [p.grad.copy() for p in ours if p.grad is not None]
    total = clip_grad_norm_(ours, max_norm=1.0, norm_type=norm_type)
    their_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm=1.0, norm_type=norm_type)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, their_total.item(), rtol=rtol)
    assert (total > 1.0) == (scale == 10.0)
    for k, (p, tp) in enumerate(zip(ours, theirs)):
        if tp.grad is None:
            assert p.grad is None
            continue
        assert p.grad.dtype == np.dtype(dtype)
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=rtol, atol=rtol * 1e-3)
    after = [p.grad for p in ours if p.grad is not None]
    if scale == 0.01:  # below max_norm: a no-op
        for a, b in zip(after, before):
            np.testing.assert_array_equal(a, b)
    else:
        flat = np.concatenate([g.ravel() for g in after]).astype(np.float64)
        assert np.linalg.norm(flat, ord=float(norm_type)) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_single_parameter_and_no_grads():
    p = Parameter(np.zeros(2))
    assert clip_grad_norm_([p], 1.0) == 0.0
    p.grad = np.array([3.0, 4.0])
    assert clip_grad_norm_(p, 1.0) == 5.0
    np.testing.assert_allclose(p.grad, [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-15)


def test_clip_grad_norm_nonfinite():
    p = Parameter(np.zeros(2))
    p.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match=r"clip_grad_norm_: the total norm of order 2\.0 .* is non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad, [np.inf, 1.0])
    tp = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    tp.grad = torch.tensor([np.inf, 1.0], dtype=torch.float64)
    total = clip_grad_norm_([p], 1.0)
    their_total = torch.nn.utils.clip_grad_norm_([tp], 1.0)
    assert total == their_total.item() == np.inf
    np.testing.assert_array_equal(p.grad, tp.grad.numpy())  # inf * 0 = nan, 1 * 0 = 0, as torch


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_value_matches_torch(dtype):
    ours, theirs = _pair(dtype, 2.0)
    clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, tp in zip(ours, theirs):
        if tp.grad is None:
            assert p.grad is None
            continue
        assert p.grad.dtype == np.dtype(dtype) and np.abs(p.grad).max() == np.dtype(dtype).type(0.7)
        np.testing.assert_array_equal(p.grad, tp.grad.numpy())

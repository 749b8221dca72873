"""BatchNorm1d/2d and LocalResponseNorm layers against torch.nn, state_dict, repr, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.nn.module import Layer
from cnnkit.nn.norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from tests.helpers import assert_close, numeric_grad, to_numpy, to_torch

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _pair(cls, tcls, dtype, rng, **kw):
    """Ours and torch's, with the same random gamma/beta (and non-trivial running stats)."""
    ours = cls(4, dtype=dtype, **kw)
    ref = tcls(4, dtype=TORCH_DTYPE[dtype], **kw)
    if ours.weight is not None:
        ours.weight.data[...] = rng.standard_normal(4) + 1
    if ours.bias is not None:
        ours.bias.data[...] = rng.standard_normal(4)
    if ours.track_running_stats:
        ours.running_mean[...] = rng.standard_normal(4)
        ours.running_var[...] = rng.uniform(0.5, 2, 4)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(to_torch(getattr(ours, name).data))
        for name in ("running_mean", "running_var"):
            if getattr(ref, name) is not None:
                getattr(ref, name).copy_(to_torch(getattr(ours, name)))
    return ours, ref


def _compare_state(ours, ref, tol, step):
    for name, p in ref.named_parameters():
        assert_close(getattr(ours, name).grad, to_numpy(p.grad), **tol, what=f"{step}: d{name}")
    for name, b in ref.named_buffers():
        mine = ours.state_dict()[name]
        if name == "num_batches_tracked":
            assert mine.dtype == np.int64 and mine.shape == ()
            assert int(mine) == int(b), f"{step}: num_batches_tracked"
        else:
            assert_close(mine, to_numpy(b), **tol, what=f"{step}: {name}")


CASES = [  # (ours, torch's, input shape)
    (BatchNorm1d, torch.nn.BatchNorm1d, (8, 4)),
    (BatchNorm1d, torch.nn.BatchNorm1d, (5, 4, 6)),
    (BatchNorm2d, torch.nn.BatchNorm2d, (6, 4, 5, 3)),
]
OPTIONS = [
    dict(),
    dict(momentum=None),
    dict(momentum=0.5, eps=1e-3),
    dict(affine=False),
    dict(bias=False),
    dict(track_running_stats=False),
    dict(affine=False, track_running_stats=False, momentum=None),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,tcls,shape", CASES)
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_batch_norm_layer_matches_torch(dtype, cls, tcls, shape, kw):
    rng = np.random.default_rng(0)
    ours, ref = _pair(cls, tcls, dtype, rng, **kw)
    assert repr(ours) == repr(ref)
    tol = TOL[dtype]
    for step in range(3):  # training: outputs, dx, accumulated grads, running stats
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        y = ours(x)
        dx = ours.backward(dy)
        xt = to_torch(x, True)
        yt = ref(xt)
        yt.backward(to_torch(dy))
        assert y.dtype == dx.dtype == dtype
        assert_close(y, to_numpy(yt), **tol, what=f"train {step}: y")
        assert_close(dx, to_numpy(xt.grad), **tol, what=f"train {step}: dx")
        _compare_state(ours, ref, tol, f"train {step}")
    ours.eval()
    ref.eval()
    for step in range(2):  # eval: running stats (or batch stats without tracking)
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        y = ours(x)
        dx = ours.backward(dy)
        xt = to_torch(x, True)
        yt = ref(xt)
        yt.backward(to_torch(dy))
        assert_close(y, to_numpy(yt), **tol, what=f"eval {step}: y")
        assert_close(dx, to_numpy(xt.grad), **tol, what=f"eval {step}: dx")
        _compare_state(ours, ref, tol, f"eval {step}")


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_layer_gradcheck(training):
    rng = np.random.default_rng(1)
    bn = BatchNorm2d(3, dtype=np.float64)
    bn.weight.data[...] = rng.standard_normal(3)
    bn.bias.data[...] = rng.standard_normal(3)
    bn.running_var[...] = rng.uniform(0.5, 2, 3)
    bn.train(training)
    x = rng.standard_normal((2, 3, 2, 2))
    dy = rng.standard_normal(x.shape)
    saved = {k: b.copy() for k, b in bn.named_buffers()}

    def f():
        for k, b in bn.named_buffers():  # undo the running-stat updates of training forwards
            b[...] = saved[k]
        return bn(x)

    f()
    dx = bn.backward(dy)
    dw, db = bn.weight.grad.copy(), bn.bias.grad.copy()
    assert_close(dx, numeric_grad(f, x, dy), rtol=1e-6, atol=1e-8, what="dx")
    assert_close(dw, numeric_grad(f, bn.weight.data, dy), rtol=1e-6, atol=1e-8, what="dweight")
    assert_close(db, numeric_grad(f, bn.bias.data, dy), rtol=1e-6, atol=1e-8, what="dbias")


def test_cumulative_average_is_the_mean_of_batch_stats():
    # momentum=None: after k batches the running mean is the plain mean of the k batch means
    rng = np.random.default_rng(2)
    bn = BatchNorm1d(2, momentum=None, dtype=np.float64)
    means, variances = [], []
    for _ in range(4):
        x = rng.standard_normal((5, 2)) + rng.standard_normal(2)
        bn(x)
        means.append(x.mean(0))
        variances.append(x.var(0, ddof=1))
    assert int(bn.num_batches_tracked) == 4
    assert_close(bn.running_mean, np.mean(means, 0), rtol=1e-12, atol=1e-14)
    # the first batch replaces the initial value 1 entirely (factor 1/1)
    assert_close(bn.running_var, np.mean(variances, 0), rtol=1e-12, atol=1e-14)


def test_state_dict_round_trip_with_torch():
    ref = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    for _ in range(3):
        ref(torch.randn(4, 5, 3, 3) * 2 + 1)
    ref.eval()
    ours = BatchNorm2d(5)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict({k: to_numpy(v) for k, v in ref.state_dict().items()})
    assert int(ours.num_batches_tracked) == 3 and ours.num_batches_tracked.dtype == np.int64
    assert ours.running_mean.dtype == np.float32
    ours.eval()
    x = np.random.default_rng(3).standard_normal((2, 5, 4, 4)).astype(np.float32)
    assert_close(ours(x), to_numpy(ref(to_torch(x))))
    # the buffers were replaced by load_state_dict: training still updates the new ones
    ours.train()
    ref.train()
    ours(x)
    ref(to_torch(x))
    assert_close(ours.running_mean, to_numpy(ref.running_mean))
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 4
    # and back: torch loads ours
    ref2 = torch.nn.BatchNorm2d(5)
    ref2.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    assert_close(to_numpy(ref2.running_var), ours.running_var)


@pytest.mark.parametrize("kw", [dict(affine=False), dict(track_running_stats=False),
                                dict(bias=False)])
def test_state_dict_keys_match_torch(kw):
    assert list(BatchNorm1d(3, **kw).state_dict()) == \
        list(torch.nn.BatchNorm1d(3, **kw).state_dict())
    assert [n for n, _ in BatchNorm2d(3, **kw).named_parameters()] == \
        [n for n, _ in torch.nn.BatchNorm2d(3, **kw).named_parameters()]


def test_to_double_and_defaults():
    bn = BatchNorm2d(3)
    assert bn.weight.dtype == bn.running_mean.dtype == np.float32
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.bias.data, 0)
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    assert bn.num_parameters() == 6 and len(list(bn.buffers())) == 3
    bn.double()
    assert bn.weight.dtype == bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64
    y = bn(np.random.default_rng(0).standard_normal((2, 3, 2, 2)))
    assert y.dtype == np.float64 and int(bn.num_batches_tracked) == 1
    bn.reset_parameters()
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(bn.running_mean, 0)


def test_frozen_parameters_get_no_grad_and_backward_needs_forward():
    bn = BatchNorm1d(3)
    bn.requires_grad_(False)
    bn(np.ones((4, 3), np.float32) * np.arange(4, dtype=np.float32)[:, None])
    bn.backward(np.ones((4, 3), np.float32))
    assert bn.weight.grad is None and bn.bias.grad is None
    with pytest.raises(RuntimeError, match=r"backward called without a forward"):
        bn.backward(np.ones((4, 3), np.float32))


def test_empty_batch_matches_torch():
    ours, ref = BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = np.zeros((0, 3, 2, 2), np.float32)
    assert ours(x).shape == tuple(ref(to_torch(x)).shape) == (0, 3, 2, 2)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 1  # torch counts it
    np.testing.assert_array_equal(ours.running_mean, 0)
    ours.eval()
    assert ours(x).shape == (0, 3, 2, 2)


def test_single_value_per_channel():
    parent = Layer()
    parent.bn1 = BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"^BatchNorm1d 'bn1': expected more than 1 value per "
                                         r"channel when training.*input=\(1, 3\)"):
        parent.bn1(np.ones((1, 3), np.float32))
    assert int(parent.bn1.num_batches_tracked) == 0  # a failed forward changes nothing
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):
        BatchNorm2d(3)(np.ones((1, 3, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):  # batch stats in eval
        BatchNorm2d(3, track_running_stats=False).eval()(np.ones((1, 3, 1, 1), np.float32))
    assert BatchNorm2d(3).eval()(np.ones((1, 3, 1, 1), np.float32)).shape == (1, 3, 1, 1)
    assert BatchNorm2d(3)(np.ones((1, 3, 1, 2), np.float32)).shape == (1, 3, 1, 2)


def test_batch_norm_input_errors():
    with pytest.raises(ValueError, match=r"^BatchNorm2d: expected a 4-D input \(N, C, H, W\), "
                                         r"got 3-D. Received: input=\(2, 3, 4\)"):
        BatchNorm2d(3)(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"expected a 2-D or 3-D input \(N, C\[, L\]\), got 4-D"):
        BatchNorm1d(3)(np.zeros((2, 3, 4, 4), np.float32))
    parent = Layer()
    parent.norm = BatchNorm2d(64)
    with pytest.raises(ValueError, match=r"^BatchNorm2d 'norm': expected 64 channels "
                                         r"\(num_features\) in dim 1 of the input, got 32.*"
                                         r"num_features=64"):
        parent.norm(np.zeros((2, 32, 4, 4), np.float32))
    with pytest.raises(TypeError, match=r"^BatchNorm2d: dtype mismatch.*input.dtype='float64', "
                                        r"weight.dtype='float32'"):
        BatchNorm2d(3)(np.zeros((2, 3, 4, 4)))
    with pytest.raises(TypeError, match=r"dtype mismatch.*running_mean.dtype='float32'"):
        BatchNorm2d(3, affine=False)(np.zeros((2, 3, 4, 4)))
    with pytest.raises(TypeError, match=r"input must be float32 or float64"):
        BatchNorm2d(3)(np.zeros((2, 3, 4, 4), np.int64))


def test_batch_norm_constructor_errors():
    with pytest.raises(ValueError, match=r"^BatchNorm2d: num_features must be positive"):
        BatchNorm2d(0)
    with pytest.raises(TypeError, match=r"num_features must be an int.*num_features=3.0"):
        BatchNorm2d(3.0)
    with pytest.raises(ValueError, match=r"eps must be >= 0.*eps=-1"):
        BatchNorm2d(3, eps=-1)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\].*momentum=1.5"):
        BatchNorm1d(3, momentum=1.5)
    with pytest.raises(TypeError, match=r"momentum must be a real number or None"):
        BatchNorm1d(3, momentum="0.1")
    with pytest.raises(TypeError, match=r"affine must be a bool"):
        BatchNorm1d(3, affine=1)
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64.*'int32'"):
        BatchNorm1d(3, dtype=np.int32)


@pytest.mark.parametrize("args,kw", [((64,), {}), ((3,), dict(eps=1e-3, momentum=None)),
                                     ((3,), dict(affine=False, track_running_stats=False)),
                                     ((3,), dict(bias=False))])
def test_batch_norm_repr(args, kw):
    assert repr(BatchNorm2d(*args, **kw)) == repr(torch.nn.BatchNorm2d(*args, **kw))
    assert repr(BatchNorm1d(*args, **kw)) == repr(torch.nn.BatchNorm1d(*args, **kw))


# ---------------------------------------------------------------------------------
# LocalResponseNorm
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,kw", [(5, dict(k=2.0)), (2, dict(alpha=0.1)),
                                     (3, dict(alpha=1.0, beta=0.5, k=0.5)), (1, {})])
@pytest.mark.parametrize("shape", [(2, 6, 4), (2, 6, 3, 3)])
def test_lrn_layer_matches_torch(dtype, size, kw, shape):
    rng = np.random.default_rng(size)
    ours, ref = LocalResponseNorm(size, **kw), torch.nn.LocalResponseNorm(size, **kw)
    assert repr(ours) == repr(ref)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = ours(x)
    dx = ours.backward(dy)
    xt = to_torch(x, True)
    ref(xt).backward(to_torch(dy))
    assert y.dtype == dx.dtype == dtype
    assert_close(y, to_numpy(ref(xt)), **TOL[dtype])
    assert_close(dx, to_numpy(xt.grad), **TOL[dtype])


def test_lrn_layer_basics_and_errors():
    assert repr(LocalResponseNorm(5)) == "LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=1.0)"
    assert repr(LocalResponseNorm(5, k=2.0)) == repr(torch.nn.LocalResponseNorm(5, k=2.0))
    assert list(LocalResponseNorm(5).state_dict()) == []
    with pytest.raises(ValueError, match=r"^LocalResponseNorm: size must be at least 1.*size=0"):
        LocalResponseNorm(0)
    with pytest.raises(TypeError, match=r"size must be an int"):
        LocalResponseNorm(True)
    with pytest.raises(TypeError, match=r"alpha must be a real number"):
        LocalResponseNorm(5, alpha="1e-4")
    parent = Layer()
    parent.lrn = LocalResponseNorm(5)
    with pytest.raises(ValueError, match=r"^LocalResponseNorm 'lrn': expected a 3-D or higher "
                                         r"input \(N, C, \*\), got 2-D"):
        parent.lrn(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError, match=r"backward called without a forward"):
        LocalResponseNorm(3).backward(np.zeros((1, 3, 2), np.float32))

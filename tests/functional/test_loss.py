"""Loss kernels: PyTorch semantics (weights, ignore_index, label smoothing, probability
targets, reductions), central-difference gradients, the lecture's ``a - y``, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit.functional import loss as L
from tests.helpers import assert_close, numeric_grad, to_numpy, to_torch

SHAPES = [(4, 5), (3, 4, 2), (2, 3, 2, 2), (5,), (0, 3)]


def _index_shape(shape):
    return () if len(shape) == 1 else (shape[0],) + shape[2:]


def _make(shape, dtype, seed=0, ignore=-100):
    """Logits, class-index target (one entry set to ``ignore``), probability target, weight."""
    rng = np.random.default_rng(seed)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    y = rng.integers(0, n_classes, _index_shape(shape))
    if y.size > 1:
        y.flat[0] = ignore
    p = rng.dirichlet(np.ones(n_classes), size=_index_shape(shape))     # (N, d1, ..., C)
    p = np.moveaxis(p, -1, 0 if len(shape) == 1 else 1).astype(dtype)  # (N, C, d1, ...)
    w = rng.uniform(0.5, 2.0, n_classes).astype(dtype)
    return x, y, np.ascontiguousarray(p), w


def _t(a):
    """A torch tensor of ``a`` with its shape kept (``to_torch`` turns 0-D into 1-D)."""
    return torch.as_tensor(np.array(a))


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _upstream(out, dtype, rng):
    return rng.standard_normal(np.shape(out)).astype(dtype) if np.ndim(out) else dtype(1.7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_matches_torch(shape, dtype):
    x, y, p, w = _make(shape, dtype)
    rng = np.random.default_rng(1)
    for reduction, eps, weight, target in itertools.product(
            ["mean", "sum", "none"], [0.0, 0.2], [None, w], [y, p]):
        what = f"{shape} {reduction} eps={eps} weight={weight is not None} {target.dtype}"
        out, cache = L.cross_entropy_forward(x, target, weight, reduction=reduction,
                                             label_smoothing=eps)
        g = _upstream(out, dtype, rng)
        dx = L.cross_entropy_backward(g, cache)
        xt = to_torch(x, requires_grad=True)
        ref = TF.cross_entropy(xt, _t(target), None if weight is None else to_torch(weight),
                               reduction=reduction, label_smoothing=eps)
        ref.backward(_t(g))
        assert np.asarray(out).dtype == dtype and dx.dtype == dtype, what
        assert_close(out, to_numpy(ref), **_tol(dtype), what=what)
        assert_close(dx, to_numpy(xt.grad), **_tol(dtype), what=what)
        assert_close(L.cross_entropy(x, target, weight, reduction=reduction, label_smoothing=eps),
                     out, rtol=0, atol=0, what=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_nll_loss_matches_torch(shape, dtype):
    x, y, _, w = _make(shape, dtype)
    rng = np.random.default_rng(2)
    for reduction, weight in itertools.product(["mean", "sum", "none"], [None, w]):
        out, cache = L.nll_loss_forward(x, y, weight, reduction=reduction)
        g = _upstream(out, dtype, rng)
        dx = L.nll_loss_backward(g, cache)
        xt = to_torch(x, requires_grad=True)
        ref = TF.nll_loss(xt, _t(y), None if weight is None else to_torch(weight),
                          reduction=reduction)
        ref.backward(_t(g))
        assert np.asarray(out).dtype == dtype and dx.dtype == dtype
        assert_close(out, to_numpy(ref), **_tol(dtype), what=reduction)
        assert_close(dx, to_numpy(xt.grad), **_tol(dtype), what=reduction)


@pytest.mark.parametrize("ignore_index", [1, 0, -1])
def test_ignore_index_inside_or_outside_the_class_range(ignore_index):
    x, y, _, w = _make((6, 3), np.float64, seed=3, ignore=ignore_index)
    y[1] = ignore_index
    for op, ref, kw in [(L.cross_entropy_forward, TF.cross_entropy, {"label_smoothing": 0.1}),
                        (L.nll_loss_forward, TF.nll_loss, {})]:
        for weight in (None, w):
            out, _ = op(x, y, weight, ignore_index=ignore_index, **kw)
            expected = ref(to_torch(x), to_torch(y), None if weight is None else to_torch(weight),
                           ignore_index=ignore_index, **kw)
            assert_close(out, to_numpy(expected), rtol=1e-12, atol=0)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    """The lecture's delta = a - y, divided by N for the mean."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    _, cache = L.cross_entropy_forward(x, y)
    dx = L.cross_entropy_backward(1.0, cache)
    a = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(dx, (a - onehot) / 5, rtol=1e-13, atol=1e-15)
    # sum reduction: no 1/N; and the loss itself is -log a[n, y_n]
    loss, cache = L.cross_entropy_forward(x, y, reduction="sum")
    np.testing.assert_allclose(L.cross_entropy_backward(1.0, cache), a - onehot, rtol=1e-13,
                               atol=1e-15)
    np.testing.assert_allclose(loss, -np.log(a[np.arange(5), y]).sum(), rtol=1e-13)


def test_uniform_logits_give_log_c():
    loss = L.cross_entropy(np.zeros((3, 10), dtype=np.float32), np.array([0, 4, 9]))
    assert isinstance(loss, np.float32)
    np.testing.assert_allclose(loss, np.log(10), rtol=1e-6)


CE_CONFIGS = [
    dict(reduction="mean"),
    dict(reduction="sum", label_smoothing=0.3),
    dict(reduction="none"),
    dict(reduction="mean", weight=True, label_smoothing=0.1),
    dict(reduction="none", weight=True, label_smoothing=0.2),
    dict(reduction="mean", probs=True, weight=True, label_smoothing=0.25),
    dict(reduction="none", probs=True),
    dict(reduction="mean", ignore_index=2, weight=True),
]


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)])
@pytest.mark.parametrize("config", CE_CONFIGS, ids=str)
def test_cross_entropy_gradient_matches_central_differences(shape, config):
    config = dict(config)
    x, y, p, w = _make(shape, np.float64, seed=5, ignore=config.get("ignore_index", -100))
    target = p if config.pop("probs", False) else y
    weight = w if config.pop("weight", False) else None
    out, cache = L.cross_entropy_forward(x, target, weight, **config)
    dy = np.random.default_rng(6).standard_normal(np.shape(out))
    dx = L.cross_entropy_backward(dy if np.ndim(out) else 0.7, cache)
    f = lambda: L.cross_entropy(x, target, weight, **config)  # noqa: E731
    expected = numeric_grad(f, x, dy if np.ndim(out) else 0.7)
    assert_close(dx, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_and_mse_gradients_match_central_differences(reduction):
    x, y, p, w = _make((4, 3, 2), np.float64, seed=7)
    dy = np.random.default_rng(8).standard_normal(_index_shape(x.shape))
    g = dy if reduction == "none" else 1.3
    _, cache = L.nll_loss_forward(x, y, w, reduction=reduction)
    expected = numeric_grad(lambda: L.nll_loss(x, y, w, reduction=reduction), x, g)
    assert_close(L.nll_loss_backward(g, cache), expected, rtol=1e-6, atol=1e-9)

    t = np.random.default_rng(9).standard_normal(x.shape)
    g = np.random.default_rng(10).standard_normal(x.shape) if reduction == "none" else 1.3
    _, cache = L.mse_loss_forward(x, t, reduction=reduction)
    expected = numeric_grad(lambda: L.mse_loss(x, t, reduction=reduction), x, g)
    assert_close(L.mse_loss_backward(g, cache), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 5), (7,), (0, 2)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch(shape, dtype, reduction):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(dtype)
    t = rng.standard_normal(shape).astype(dtype)
    out, cache = L.mse_loss_forward(x, t, reduction=reduction)
    g = _upstream(out, dtype, rng)
    dx = L.mse_loss_backward(g, cache)
    xt = to_torch(x, requires_grad=True)
    ref = TF.mse_loss(xt, to_torch(t), reduction=reduction)
    ref.backward(_t(g))
    assert np.asarray(out).dtype == dtype and dx.dtype == dtype
    assert_close(out, to_numpy(ref), **_tol(dtype))
    assert_close(dx, to_numpy(xt.grad), **_tol(dtype))
    assert_close(L.mse_loss(x, t, reduction=reduction), out, rtol=0, atol=0)


def test_empty_batch_and_fully_ignored_batch_follow_torch():
    x = np.zeros((0, 3), dtype=np.float32)
    y = np.zeros(0, dtype=np.int64)
    assert np.isnan(L.cross_entropy(x, y))                       # 0/0, as PyTorch
    assert np.isnan(L.cross_entropy(x, np.zeros((0, 3), np.float32)))
    assert np.isnan(L.nll_loss(x, y))
    assert L.cross_entropy(x, y, reduction="sum") == 0
    none, cache = L.cross_entropy_forward(x, y, reduction="none")
    assert none.shape == (0,) and none.dtype == np.float32
    dx = L.cross_entropy_backward(np.zeros(0, np.float32), cache)
    assert dx.shape == (0, 3) and dx.dtype == np.float32
    _, cache = L.nll_loss_forward(x, y, reduction="sum")
    assert L.nll_loss_backward(1.0, cache).shape == (0, 3)
    x2 = np.ones((2, 3))
    ignored = np.full(2, -100)
    assert np.isnan(L.cross_entropy(x2, ignored))
    assert np.isnan(to_numpy(TF.cross_entropy(to_torch(x2), to_torch(ignored))))
    assert L.cross_entropy(x2, ignored, reduction="sum") == 0


def test_stable_for_huge_logits_and_nll_ignores_minus_inf_elsewhere():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype=np.float32)
    y = np.array([0, 2])
    loss, cache = L.cross_entropy_forward(x, y)
    assert np.isfinite(loss) and np.all(np.isfinite(L.cross_entropy_backward(1.0, cache)))
    assert_close(loss, to_numpy(TF.cross_entropy(to_torch(x), to_torch(y))), rtol=1e-6)
    with np.errstate(divide="ignore"):
        logp = np.log(np.array([[1.0, 0.0], [0.5, 0.5]]))      # -inf off the targets
    out = L.nll_loss(logp, np.array([0, 1]), reduction="none")
    np.testing.assert_allclose(out, [0.0, np.log(2)])
    ignored = L.nll_loss(np.array([[-np.inf, 0.0]]), np.array([-100]), reduction="sum")
    assert ignored == 0                                        # not 0 * -inf = nan


def test_none_reduction_accepts_a_scalar_upstream_gradient():
    x, y, _, _ = _make((4, 3), np.float64)
    _, cache = L.cross_entropy_forward(x, y, reduction="none")
    _, cache_sum = L.cross_entropy_forward(x, y, reduction="sum")
    np.testing.assert_allclose(L.cross_entropy_backward(2.0, cache),
                               L.cross_entropy_backward(2.0, cache_sum))


def test_int32_and_uint8_targets_are_accepted():
    x, y, _, _ = _make((4, 3), np.float64)
    y[0] = 1
    ref = L.cross_entropy(x, y)
    assert L.cross_entropy(x, y.astype(np.int32)) == ref
    assert L.cross_entropy(x, y.astype(np.uint8)) == ref


# ---- errors ---------------------------------------------------------------------------
def test_target_value_errors_name_the_bad_value():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"^cross_entropy: target 4 is out of bounds: class "
                                         r"indices must be in \[0, 3\] or equal ignore_index. "
                                         r"Received: target_value=4, num_classes=4, "
                                         r"ignore_index=-100$"):
        L.cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"^nll_loss: target -1 is out of bounds"):
        L.nll_loss(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"target -100 is out of bounds.*ignore_index=3"):
        L.cross_entropy(x, np.array([0, -100, 1]), ignore_index=3)


def test_target_shape_and_dtype_errors():
    x = np.zeros((3, 4, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^cross_entropy: target must have shape \(3, 5\) "
                                         r"\(class indices\) or \(3, 4, 5\) \(class "
                                         r"probabilities\).*Received: input=\(3, 4, 5\), "
                                         r"target=\(3,\)"):
        L.cross_entropy(x, np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"^cross_entropy: a class-index target must be an "
                                        r"integer array.*Received: target.dtype='float32'"):
        L.cross_entropy(x, np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(TypeError, match=r"class-index target must be an integer.*'bool'"):
        L.nll_loss(x, np.zeros((3, 5), dtype=bool))
    with pytest.raises(TypeError, match=r"^cross_entropy: a class-probability target .* must "
                                        r"be float.*Received: target.dtype='int64'"):
        L.cross_entropy(x, np.zeros((3, 4, 5), dtype=np.int64))
    with pytest.raises(ValueError, match=r"class-probability target must have the input's "
                                         r"shape. Received: input=\(3, 4, 5\), target=\(3, 4, 6\)"):
        L.cross_entropy(x, np.zeros((3, 4, 6), dtype=np.float32))
    with pytest.raises(TypeError, match=r"dtype mismatch.*input.dtype='float32', "
                                        r"target.dtype='float64'"):
        L.cross_entropy(x, np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match=r"^nll_loss: target must have shape \(3, 5\)"):
        L.nll_loss(x, np.zeros((3, 4, 5), dtype=np.float32))   # no probabilities for nll
    with pytest.raises(TypeError, match=r"^cross_entropy: target must be a numpy.ndarray. "
                                        r"Received: target='list'"):
        L.cross_entropy(x, [0, 1, 2])


def test_input_weight_and_option_errors():
    x = np.zeros((2, 3))
    y = np.array([0, 1])
    with pytest.raises(TypeError, match=r"^cross_entropy: input must be float32 or float64"):
        L.cross_entropy(np.zeros((2, 3), dtype=np.int64), y)
    with pytest.raises(ValueError, match=r"^cross_entropy: expected a input with at least 1 "
                                         r"dimension"):
        L.cross_entropy(np.array(1.0), y)
    with pytest.raises(ValueError, match=r"^cross_entropy: weight must have one entry per "
                                         r"class \(C = 3\). Received: weight=\(4,\)"):
        L.cross_entropy(x, y, np.ones(4))
    with pytest.raises(TypeError, match=r"^nll_loss: dtype mismatch.*weight.dtype='float32'"):
        L.nll_loss(x, y, np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"^cross_entropy: reduction must be 'mean', 'sum' or "
                                         r"'none'. Received: reduction='avg'"):
        L.cross_entropy(x, y, reduction="avg")
    with pytest.raises(ValueError, match=r"^mse_loss: reduction must be.*'elementwise_mean'"):
        L.mse_loss(x, x, reduction="elementwise_mean")
    with pytest.raises(ValueError, match=r"^cross_entropy: label_smoothing must be between 0.0 "
                                         r"and 1.0. Received: label_smoothing=1.5"):
        L.cross_entropy(x, y, label_smoothing=1.5)
    with pytest.raises(TypeError, match=r"^nll_loss: ignore_index must be an int. "
                                        r"Received: ignore_index=1.0"):
        L.nll_loss(x, y, ignore_index=1.0)


def test_mse_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"^mse_loss: target must have the input's shape "
                                         r"\(no broadcasting\). Received: input=\(2, 3\), "
                                         r"target=\(1, 3\)"):
        L.mse_loss(x, np.zeros((1, 3)))
    with pytest.raises(TypeError, match=r"^mse_loss: dtype mismatch"):
        L.mse_loss(x, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match=r"^mse_loss: target must be float32 or float64"):
        L.mse_loss(x, np.zeros((2, 3), dtype=np.int64))


def test_backward_gradient_errors():
    x, y, _, _ = _make((4, 3), np.float64)
    _, cache = L.cross_entropy_forward(x, y)
    with pytest.raises(ValueError, match=r"^cross_entropy_backward: the gradient of a reduced "
                                         r"\('mean'\) loss must be a scalar. Received: "
                                         r"dloss=\(4,\)"):
        L.cross_entropy_backward(np.ones(4), cache)
    with pytest.raises(TypeError, match=r"^cross_entropy_backward: dloss must be a real number"):
        L.cross_entropy_backward("1", cache)
    _, cache = L.mse_loss_forward(x, x, reduction="none")
    with pytest.raises(ValueError, match=r"^mse_loss_backward: dy must have the shape of the "
                                         r"forward output"):
        L.mse_loss_backward(np.ones(4), cache)
    _, cache = L.nll_loss_forward(x, y, reduction="none")
    with pytest.raises(TypeError, match=r"^nll_loss_backward: dy must have the dtype"):
        L.nll_loss_backward(np.ones(4, dtype=np.float32), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_plain_path_same_bits_as_general_and_torch(dtype, reduction):
    """(N, C) logits with in-range class indices, no weight, no smoothing take a path
    without the one-hot matrix: the loss and the gradient are the general path's bits
    (forced here by a weight of ones), and PyTorch's numbers, also with a -inf logit
    (the general path's 0 * -inf gives NaN there; PyTorch and the plain path do not)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 11)).astype(dtype)
    y = rng.integers(0, 11, 37)
    dl = rng.standard_normal(37).astype(dtype) if reduction == "none" else 0.7
    plain_l, plain_c = L.cross_entropy_forward(x, y, reduction=reduction)
    assert plain_c[1].dtype.kind == "i"  # the plain path ran
    general_l, general_c = L.cross_entropy_forward(x, y, np.ones(11, dtype), reduction=reduction)
    assert general_c[1].dtype.kind == "f"
    np.testing.assert_array_equal(plain_l, general_l)
    dx_plain, dx_general = L.cross_entropy_backward(dl, plain_c), L.cross_entropy_backward(dl, general_c)
    np.testing.assert_array_equal(dx_plain, dx_general)
    assert np.array_equal(np.signbit(dx_plain), np.signbit(dx_general))
    x[3, (y[3] + 1) % 11] = -np.inf
    got_l, c = L.cross_entropy_forward(x, y, reduction=reduction)
    got_dx = L.cross_entropy_backward(dl, c)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    ref = TF.cross_entropy(xt, torch.from_numpy(y), reduction=reduction)
    ref.backward(torch.as_tensor(dl, dtype=xt.dtype) if reduction == "none" else torch.tensor(dl, dtype=xt.dtype))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.isfinite(got_l).all() and np.isfinite(got_dx).all()
    np.testing.assert_allclose(got_l, ref.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(got_dx, xt.grad.numpy(), rtol=tol, atol=tol)


def test_cross_entropy_plain_path_still_refuses_out_of_range_targets():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="out of bounds"):
        L.cross_entropy_forward(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="out of bounds"):
        L.cross_entropy_forward(x, np.array([-1, 0]))
    loss, cache = L.cross_entropy_forward(x, np.array([0, -100]))  # ignore_index: the general path
    assert cache[1].dtype.kind == "f" and np.isclose(loss, np.log(3))

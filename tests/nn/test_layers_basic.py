"""Basic layers (activations, Linear, Flatten, Dropout, losses) against torch.nn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as tnn

from cnnkit.nn.activation import (ELU, Identity, LeakyReLU, LogSoftmax, ReLU, ScaledTanh,
                                  Sigmoid, Softmax, Tanh)
from cnnkit.nn.dropout import Dropout
from cnnkit.nn.linear import Flatten, Linear
from cnnkit.nn.loss import CrossEntropyLoss, MSELoss, NLLLoss
from cnnkit.nn.module import Layer
from tests.helpers import assert_close, numeric_grad, to_numpy, to_torch


class Holder(Layer):
    """A parent, so that a child's errors carry its dotted name."""

    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


# ---- repr -----------------------------------------------------------------------------
REPRS = [
    (lambda: ReLU(), lambda: tnn.ReLU()),
    (lambda: ReLU(inplace=True), lambda: tnn.ReLU(inplace=True)),
    (lambda: LeakyReLU(), lambda: tnn.LeakyReLU()),
    (lambda: LeakyReLU(0.2, True), lambda: tnn.LeakyReLU(0.2, True)),
    (lambda: ELU(), lambda: tnn.ELU()),
    (lambda: ELU(alpha=0.5, inplace=True), lambda: tnn.ELU(alpha=0.5, inplace=True)),
    (lambda: Sigmoid(), lambda: tnn.Sigmoid()),
    (lambda: Tanh(), lambda: tnn.Tanh()),
    (lambda: Softmax(), lambda: tnn.Softmax()),
    (lambda: Softmax(dim=1), lambda: tnn.Softmax(dim=1)),
    (lambda: LogSoftmax(dim=-1), lambda: tnn.LogSoftmax(dim=-1)),
    (lambda: Identity(54, unused=2), lambda: tnn.Identity(54, unused=2)),
    (lambda: Linear(3, 4), lambda: tnn.Linear(3, 4)),
    (lambda: Linear(3, 4, bias=False), lambda: tnn.Linear(3, 4, bias=False)),
    (lambda: Flatten(), lambda: tnn.Flatten()),
    (lambda: Flatten(0, 2), lambda: tnn.Flatten(0, 2)),
    (lambda: Dropout(), lambda: tnn.Dropout()),
    (lambda: Dropout(0.2, True), lambda: tnn.Dropout(0.2, True)),
    (lambda: CrossEntropyLoss(label_smoothing=0.1),
     lambda: tnn.CrossEntropyLoss(label_smoothing=0.1)),
    (lambda: NLLLoss(), lambda: tnn.NLLLoss()),
    (lambda: MSELoss(reduction="sum"), lambda: tnn.MSELoss(reduction="sum")),
]


@pytest.mark.parametrize("ours, theirs", REPRS)
def test_repr_equals_pytorch(ours, theirs):
    assert repr(ours()) == repr(theirs())
    assert repr(ScaledTanh()) == "ScaledTanh()"


# ---- activation layers ----------------------------------------------------------------
ACTIVATIONS = [
    (lambda: ReLU(), lambda: tnn.ReLU()),
    (lambda: LeakyReLU(0.2), lambda: tnn.LeakyReLU(0.2)),
    (lambda: ELU(0.7), lambda: tnn.ELU(0.7)),
    (lambda: Sigmoid(), lambda: tnn.Sigmoid()),
    (lambda: Tanh(), lambda: tnn.Tanh()),
    (lambda: Softmax(dim=1), lambda: tnn.Softmax(dim=1)),
    (lambda: LogSoftmax(dim=-1), lambda: tnn.LogSoftmax(dim=-1)),
    (lambda: Identity(), lambda: tnn.Identity()),
    (lambda: Flatten(), lambda: tnn.Flatten()),
    (lambda: Flatten(0, -2), lambda: tnn.Flatten(0, -2)),
]


@pytest.mark.parametrize("ours, theirs", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameter_free_layers_match_torch(ours, theirs, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 2).astype(dtype)
    layer = ours()
    y = layer(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    xt = to_torch(x, True)
    yt = theirs()(xt)
    yt.backward(to_torch(dy))
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, to_numpy(yt), **_tol(dtype))
    assert_close(dx, to_numpy(xt.grad), **_tol(dtype))


@pytest.mark.parametrize("make", [lambda: ReLU(), lambda: LeakyReLU(0.3), lambda: ELU(),
                                  lambda: Sigmoid(), lambda: Tanh(), lambda: ScaledTanh(),
                                  lambda: Softmax(0), lambda: LogSoftmax(1), lambda: Flatten()])
def test_parameter_free_layers_match_central_differences(make):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 2))
    x = np.sign(x) * (0.1 + np.abs(x))                      # away from kinks
    dy = rng.standard_normal(make()(x).shape)
    layer = make()
    layer(x)
    dx = layer.backward(dy)
    f = lambda: make()(x).copy()  # noqa: E731  (Flatten returns a view of the perturbed x)
    assert_close(dx, numeric_grad(f, x, dy), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4])
def test_softmax_dim_none_follows_the_legacy_rule(ndim):
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)[:ndim])
    for ours, theirs in [(Softmax(), tnn.Softmax()), (LogSoftmax(), tnn.LogSoftmax())]:
        with pytest.warns(UserWarning, match="Implicit dimension choice"):
            y = ours(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = theirs(torch.as_tensor(x))
        assert_close(y, expected.numpy(), rtol=1e-12, atol=1e-14)
    if ndim in (2, 3):  # the rule itself: axis 1 for 2-D, axis 0 (!) for 3-D
        axis = 0 if ndim == 3 else 1
        with pytest.warns(UserWarning):
            np.testing.assert_allclose(Softmax()(x).sum(axis=axis), 1.0)


def test_inplace_layers_overwrite_their_input():
    # (layer, y at x = -1, dy/dx at x = -1); at x = 2 both are (2, 1)
    for layer, y_neg, slope_neg in [(ReLU(inplace=True), 0.0, 0.0),
                                    (LeakyReLU(0.1, inplace=True), -0.1, 0.1),
                                    (ELU(inplace=True), np.expm1(-1.0), np.exp(-1.0))]:
        x = np.array([-1.0, 2.0])
        y = layer(x)
        assert y is x
        np.testing.assert_allclose(x, [y_neg, 2.0])
        np.testing.assert_allclose(layer.backward(np.ones(2)), [slope_neg, 1.0])
    x = np.array([-1.0, 2.0])
    ReLU()(x)
    assert x[0] == -1.0


def test_identity_passes_the_same_arrays():
    layer = Identity()
    x = np.ones((2, 3), np.float32)
    assert layer(x) is x
    dy = np.ones((2, 3), np.float32)
    assert layer.backward(dy) is dy


def test_activation_layer_errors_name_the_layer():
    net = Holder(act=ReLU(), soft=Softmax(dim=3), flat=Flatten(2))
    with pytest.raises(TypeError, match=r"^ReLU 'act': input must be float32 or float64. "
                                        r"Received: dtype='int64'"):
        net.act(np.arange(3))
    with pytest.raises(ValueError, match=r"^softmax: axis out of range"):
        net.soft(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^Flatten 'flat': start_dim out of range for a 2-D "
                                         r"input"):
        net.flat(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"^LeakyReLU: negative_slope must be a real number"):
        LeakyReLU("0.1")
    with pytest.raises(TypeError, match=r"^Flatten: start_dim must be an int. "
                                        r"Received: start_dim=1.5"):
        Flatten(1.5)
    with pytest.raises(RuntimeError, match=r"^ReLU 'act': backward called without a forward"):
        net.act.backward(np.zeros(3))


# ---- Linear ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape", [(6, 5), (2, 3, 5), (0, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_with_copied_weights(dtype, x_shape, bias):
    rng = np.random.default_rng(3)
    ours = Linear(5, 4, bias, rng=rng, dtype=dtype)
    theirs = tnn.Linear(5, 4, bias).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        theirs.weight.copy_(torch.as_tensor(ours.weight.data))
        if bias:
            theirs.bias.copy_(torch.as_tensor(ours.bias.data))
    x = rng.standard_normal(x_shape).astype(dtype)
    y = ours(x)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = ours.backward(dy)
    xt = to_torch(x, True)
    yt = theirs(xt)
    yt.backward(to_torch(dy))
    assert_close(y, to_numpy(yt), **_tol(dtype), what="y")
    assert_close(dx, to_numpy(xt.grad), **_tol(dtype), what="dx")
    assert_close(ours.weight.grad, to_numpy(theirs.weight.grad), **_tol(dtype), what="dw")
    assert y.dtype == dx.dtype == ours.weight.grad.dtype == dtype
    if bias:
        assert_close(ours.bias.grad, to_numpy(theirs.bias.grad), **_tol(dtype), what="db")
    else:
        assert ours.bias is None


def test_linear_layer_gradients_match_central_differences():
    rng = np.random.default_rng(4)
    layer = Linear(3, 2, rng=rng, dtype=np.float64)
    x = rng.standard_normal((4, 3))
    dy = rng.standard_normal((4, 2))
    layer(x)
    dx = layer.backward(dy)
    f = lambda: layer(x)  # noqa: E731
    assert_close(dx, numeric_grad(f, x, dy), rtol=1e-6, atol=1e-9)
    assert_close(layer.weight.grad, numeric_grad(f, layer.weight.data, dy), rtol=1e-6, atol=1e-9)
    assert_close(layer.bias.grad, numeric_grad(f, layer.bias.data, dy), rtol=1e-6, atol=1e-9)


def test_linear_init_is_pytorch_default_and_seeded():
    a = Linear(100, 50, rng=np.random.default_rng(5))
    b = Linear(100, 50, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert a.weight.shape == (50, 100) and a.bias.shape == (50,)
    assert a.weight.dtype == np.float32 and a.bias.dtype == np.float32
    bound = 1 / np.sqrt(100)
    for p in (a.weight.data, a.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    # uniform on [-bound, bound]: variance bound^2 / 3
    assert abs(a.weight.data.var() - bound ** 2 / 3) < 0.1 * bound ** 2 / 3
    assert a.num_parameters() == 100 * 50 + 50 == sum(
        p.numel() for p in tnn.Linear(100, 50).parameters())
    assert list(a.state_dict()) == ["weight", "bias"]
    assert list(Linear(3, 2, bias=False).state_dict()) == ["weight"]


def test_linear_gradients_accumulate_and_dtype_conversion():
    layer = Linear(3, 2, rng=np.random.default_rng(6))
    x = np.ones((4, 3), np.float32)
    dy = np.ones((4, 2), np.float32)
    layer(x)
    layer.backward(dy)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * first)
    layer.double()
    assert layer(x.astype(np.float64)).dtype == np.float64


def test_linear_errors():
    net = Holder(fc=Linear(4, 2))
    with pytest.raises(ValueError, match=r"^Linear 'fc': expected an input with in_features=4 "
                                         r"in its last dimension, got 3. Received: "
                                         r"input=\(5, 3\), in_features=4$"):
        net.fc(np.zeros((5, 3), np.float32))
    with pytest.raises(TypeError, match=r"^Linear 'fc': dtype mismatch.*input.dtype='float64', "
                                        r"weight.dtype='float32', bias.dtype='float32'"):
        net.fc(np.zeros((5, 4)))
    with pytest.raises(TypeError, match=r"^Linear 'fc': input must be float32 or float64"):
        net.fc(np.zeros((5, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"^Linear: in_features must be non-negative. "
                                         r"Received: in_features=-1"):
        Linear(-1, 2)
    with pytest.raises(TypeError, match=r"^Linear: out_features must be an int. "
                                        r"Received: out_features=2.0"):
        Linear(3, 2.0)
    with pytest.raises(TypeError, match=r"^Linear: dtype must be float32 or float64. "
                                        r"Received: dtype='int32'"):
        Linear(3, 2, dtype=np.int32)
    with pytest.raises(RuntimeError, match=r"backward called without a forward"):
        net.fc.backward(np.zeros((5, 2), np.float32))


# ---- Dropout --------------------------------------------------------------------------
def test_dropout_layer_train_eval_and_seed():
    x = np.ones((40, 50), np.float32)
    a, b = Dropout(0.25, rng=np.random.default_rng(9)), Dropout(0.25, rng=np.random.default_rng(9))
    ya, yb = a(x), b(x)
    np.testing.assert_array_equal(ya, yb)
    assert ya.dtype == np.float32 and set(np.unique(ya)) == {0.0, np.float32(1 / 0.75)}
    np.testing.assert_array_equal(a.backward(np.ones_like(x)), ya)
    assert not np.array_equal(a(x), ya)                       # a fresh mask each forward
    a.eval()
    np.testing.assert_array_equal(a(x), x)
    np.testing.assert_array_equal(a.backward(2 * x), 2 * x)
    assert abs(Dropout(0.5, rng=np.random.default_rng(1))(np.ones(10 ** 5)).mean() - 1) < 0.02


def test_dropout_layer_errors():
    with pytest.raises(ValueError, match=r"^Dropout: dropout probability p must be between 0 "
                                         r"and 1. Received: p=1.2"):
        Dropout(1.2)
    with pytest.raises(TypeError, match=r"^Dropout: rng must be a numpy.random.Generator"):
        Dropout(0.5, rng=np.random.RandomState(0))
    net = Holder(drop=Dropout())
    with pytest.raises(TypeError, match=r"^Dropout 'drop': input must be float32 or float64"):
        net.drop(np.zeros(3, dtype=np.int8))


# ---- losses ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_layers_match_torch(dtype, reduction):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 4, 3)).astype(dtype)
    y = rng.integers(0, 4, (6, 3))
    y[0, 0] = 2
    w = rng.uniform(0.5, 2, 4).astype(dtype)
    t = rng.standard_normal(x.shape).astype(dtype)
    cases = [
        (CrossEntropyLoss(w, ignore_index=2, reduction=reduction, label_smoothing=0.1),
         tnn.CrossEntropyLoss(to_torch(w), ignore_index=2, reduction=reduction,
                              label_smoothing=0.1), y),
        (NLLLoss(w, ignore_index=2, reduction=reduction),
         tnn.NLLLoss(to_torch(w), ignore_index=2, reduction=reduction), y),
        (MSELoss(reduction=reduction), tnn.MSELoss(reduction=reduction), t),
    ]
    for ours, theirs, target in cases:
        value = ours(x, target)
        grad = rng.standard_normal(np.shape(value)).astype(dtype) if reduction == "none" else 0.5
        dx = ours.backward(grad)
        xt = to_torch(x, True)
        ref = theirs(xt, to_torch(target))
        ref.backward(torch.as_tensor(np.array(grad, dtype=dtype)))
        what = type(ours).__name__
        assert np.asarray(value).dtype == dtype and dx.dtype == dtype, what
        if reduction != "none":
            assert np.ndim(value) == 0 and isinstance(value, np.floating), what
        assert_close(value, to_numpy(ref), **_tol(dtype), what=what)
        assert_close(dx, to_numpy(xt.grad), **_tol(dtype), what=what)


def test_loss_layer_gradients_match_central_differences():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 3))
    y = np.array([0, 2, 1, -100, 2])
    probs = rng.dirichlet(np.ones(3), size=5)
    w = np.array([0.5, 1.0, 2.0])
    for loss, target in [(CrossEntropyLoss(w, label_smoothing=0.2), y),
                         (CrossEntropyLoss(w, reduction="sum", label_smoothing=0.3), probs),
                         (NLLLoss(w), y), (MSELoss(), probs)]:
        loss(x, target)
        dx = loss.backward(1.5)
        expected = numeric_grad(lambda: loss(x, target), x, 1.5)
        assert_close(dx, expected, rtol=1e-6, atol=1e-9, what=repr(loss))


def test_cross_entropy_layer_known_gradient_and_grad_argument():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([2, 0, 1, 1])
    loss = CrossEntropyLoss()
    value = loss(x, y)
    assert isinstance(value, np.float32)
    dx = loss.backward()
    a = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dx, (a - np.eye(3)[y]) / 4, rtol=1e-5, atol=1e-7)
    loss(x, y)
    np.testing.assert_allclose(loss.backward(np.float64(3.0)), 3 * dx, rtol=1e-6)
    none = CrossEntropyLoss(reduction="none")
    assert none(x, y).shape == (4,)
    np.testing.assert_allclose(none.backward(), dx * 4, rtol=1e-6)   # None: ones
    none(x, y)
    g = np.arange(4, dtype=np.float32)
    np.testing.assert_allclose(none.backward(g), dx * 4 * g[:, None], rtol=1e-6)
    with pytest.raises(RuntimeError, match="backward called without a forward"):
        none.backward()


def test_small_network_backward_chain_matches_torch():
    """model.backward(loss.backward()) through Linear -> ReLU -> Dropout(eval) -> Linear."""
    rng = np.random.default_rng(13)
    fc1, act, drop, fc2 = (Linear(6, 5, rng=rng, dtype=np.float64), ReLU(), Dropout(0.5),
                           Linear(5, 3, rng=rng, dtype=np.float64))
    drop.eval()
    t1, t2 = tnn.Linear(6, 5).double(), tnn.Linear(5, 3).double()
    with torch.no_grad():
        for ours, theirs in [(fc1, t1), (fc2, t2)]:
            theirs.weight.copy_(torch.as_tensor(ours.weight.data))
            theirs.bias.copy_(torch.as_tensor(ours.bias.data))
    x = rng.standard_normal((7, 6))
    y = rng.integers(0, 3, 7)
    loss = CrossEntropyLoss(label_smoothing=0.05)
    value = loss(fc2(drop(act(fc1(x)))), y)
    dx = fc1.backward(act.backward(drop.backward(fc2.backward(loss.backward()))))
    xt = to_torch(x, True)
    ref = tnn.CrossEntropyLoss(label_smoothing=0.05)(t2(torch.relu(t1(xt))), to_torch(y))
    ref.backward()
    tol = dict(rtol=1e-10, atol=1e-12)
    assert_close(value, ref.item(), **tol)
    assert_close(dx, to_numpy(xt.grad), **tol)
    for ours, theirs in [(fc1, t1), (fc2, t2)]:
        assert_close(ours.weight.grad, to_numpy(theirs.weight.grad), **tol)
        assert_close(ours.bias.grad, to_numpy(theirs.bias.grad), **tol)


def test_loss_weight_is_a_buffer_and_follows_to():
    loss = CrossEntropyLoss(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert list(loss.state_dict()) == ["weight"]
    assert list(tnn.CrossEntropyLoss(torch.ones(3)).state_dict()) == ["weight"]
    assert list(CrossEntropyLoss().state_dict()) == []
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"^CrossEntropyLoss: dtype mismatch"):
        loss(x, np.array([0, 1]))
    loss.double()
    assert loss.weight.dtype == np.float64
    assert np.isfinite(loss(x, np.array([0, 1])))


def test_loss_layer_errors_name_the_layer():
    net = Holder(crit=CrossEntropyLoss(), nll=NLLLoss(), mse=MSELoss())
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss 'crit': target 9 is out of bounds.*"
                                         r"Received: target_value=9, num_classes=4"):
        net.crit(x, np.array([0, 9, 1]))
    with pytest.raises(ValueError, match=r"^NLLLoss 'nll': target must have shape \(3,\)"):
        net.nll(x, np.array([0, 1]))
    with pytest.raises(TypeError, match=r"^CrossEntropyLoss 'crit': a class-index target must "
                                        r"be an integer array"):
        net.crit(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"^MSELoss 'mse': target must have the input's shape"):
        net.mse(x, np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: reduction must be 'mean', 'sum' "
                                         r"or 'none'. Received: reduction='batchmean'"):
        CrossEntropyLoss(reduction="batchmean")
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: label_smoothing must be between"):
        CrossEntropyLoss(label_smoothing=-0.1)
    with pytest.raises(TypeError, match=r"^NLLLoss: ignore_index must be an int"):
        NLLLoss(ignore_index="a")
    with pytest.raises(ValueError, match=r"^NLLLoss: expected a 1-D weight \(C\), got 2-D"):
        NLLLoss(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^MSELoss: reduction must be"):
        MSELoss(reduction="avg")
    net.crit(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^cross_entropy_backward: the gradient of a reduced "
                                         r"\('mean'\) loss must be a scalar"):
        net.crit.backward(np.ones(3, np.float32))

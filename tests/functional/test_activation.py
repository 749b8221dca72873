"""Activation kernels: gradient checks, PyTorch comparison, known answers, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit.functional import activation as A
from tests.helpers import assert_close, numeric_grad, to_numpy, to_torch

# name -> (forward, backward, keyword options, torch reference)
OPS = {
    "relu": (A.relu_forward, A.relu_backward, {}, TF.relu),
    "leaky_relu": (A.leaky_relu_forward, A.leaky_relu_backward, {"negative_slope": 0.2},
                   lambda t: TF.leaky_relu(t, 0.2)),
    "leaky_relu_neg": (A.leaky_relu_forward, A.leaky_relu_backward, {"negative_slope": -0.5},
                       lambda t: TF.leaky_relu(t, -0.5)),
    "elu": (A.elu_forward, A.elu_backward, {}, TF.elu),
    "elu_a": (A.elu_forward, A.elu_backward, {"alpha": 0.7}, lambda t: TF.elu(t, 0.7)),
    "sigmoid": (A.sigmoid_forward, A.sigmoid_backward, {}, torch.sigmoid),
    "tanh": (A.tanh_forward, A.tanh_backward, {}, torch.tanh),
    "scaled_tanh": (A.scaled_tanh_forward, A.scaled_tanh_backward, {},
                    lambda t: 1.7159 * torch.tanh(t * (2.0 / 3.0))),
    "softmax0": (A.softmax_forward, A.softmax_backward, {"axis": 0}, lambda t: TF.softmax(t, 0)),
    "softmax1": (A.softmax_forward, A.softmax_backward, {"axis": 1}, lambda t: TF.softmax(t, 1)),
    "softmax-1": (A.softmax_forward, A.softmax_backward, {"axis": -1},
                  lambda t: TF.softmax(t, -1)),
    "log_softmax1": (A.log_softmax_forward, A.log_softmax_backward, {"axis": 1},
                     lambda t: TF.log_softmax(t, 1)),
    "log_softmax-1": (A.log_softmax_forward, A.log_softmax_backward, {"axis": -1},
                      lambda t: TF.log_softmax(t, -1)),
}
PLAIN = {"relu": A.relu, "leaky_relu": A.leaky_relu, "elu": A.elu, "sigmoid": A.sigmoid,
         "tanh": A.tanh, "scaled_tanh": A.scaled_tanh}
SHAPES = [(2, 3), (3, 4, 5), (2, 3, 2, 2)]


def _away_from_kinks(x):
    """Keep |x| >= 0.1 so a central difference never straddles the kink at 0."""
    return np.sign(x) * (0.1 + np.abs(x))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradient_matches_central_differences(name, shape):
    fwd, bwd, kw, _ = OPS[name]
    rng = np.random.default_rng(1)
    x = _away_from_kinks(rng.standard_normal(shape))
    dy = rng.standard_normal(shape)
    y, cache = fwd(x.copy(), **kw)
    dx = bwd(dy, cache)
    expected = numeric_grad(lambda: fwd(x, **kw)[0], x, dy)
    assert_close(dx, expected, rtol=1e-6, atol=1e-8, what=name)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch(name, dtype, shape):
    fwd, bwd, kw, ref = OPS[name]
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x.flat[0] = 0.0                          # the kink: torch's gradient convention at 0
    dy = rng.standard_normal(shape).astype(dtype)
    y, cache = fwd(x, **kw)
    dx = bwd(dy, cache)
    xt = to_torch(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(to_torch(dy))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, to_numpy(yt), **tol, what=f"{name} y")
    assert_close(dx, to_numpy(xt.grad), **tol, what=f"{name} dx")


@pytest.mark.parametrize("name", PLAIN)
def test_plain_function_equals_forward(name):
    fwd, _, kw, _ = OPS[name]
    x = np.random.default_rng(3).standard_normal((4, 5))
    np.testing.assert_array_equal(PLAIN[name](x, **kw), fwd(x, **kw)[0])
    np.testing.assert_array_equal(A.softmax(x, 1), A.softmax_forward(x, 1)[0])
    np.testing.assert_array_equal(A.log_softmax(x, 0), A.log_softmax_forward(x, 0)[0])


def test_gradients_at_zero_follow_pytorch():
    x = np.zeros(3)
    dy = np.ones(3)
    assert np.all(A.relu_backward(dy, A.relu_forward(x)[1]) == 0)
    assert np.all(A.leaky_relu_backward(dy, A.leaky_relu_forward(x, 0.3)[1]) == 0.3)
    assert np.all(A.elu_backward(dy, A.elu_forward(x, alpha=0.7)[1]) == 0.7)


def test_known_values():
    x = np.array([-2.0, -0.5, 0.0, 1.5])
    np.testing.assert_array_equal(A.relu(x), [0, 0, 0, 1.5])
    np.testing.assert_allclose(A.leaky_relu(x, 0.1), [-0.2, -0.05, 0, 1.5])
    np.testing.assert_allclose(A.elu(x), [np.exp(-2) - 1, np.exp(-0.5) - 1, 0, 1.5])
    # LeCun's constants make f(+-1) = +-1 (to 4 digits) and f'(0) = 1.7159 * 2/3.
    np.testing.assert_allclose(A.scaled_tanh(np.array([-1.0, 1.0])), [-1, 1], atol=1e-4)
    g = A.scaled_tanh_backward(np.ones(1), A.scaled_tanh_forward(np.zeros(1))[1])
    np.testing.assert_allclose(g, [1.7159 * 2 / 3])
    np.testing.assert_allclose(A.softmax(np.log(np.array([[1.0, 2.0, 5.0]])), 1),
                               [[0.125, 0.25, 0.625]])
    np.testing.assert_allclose(A.log_softmax(np.zeros((1, 4)), 1), np.full((1, 4), -np.log(4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_for_large_inputs(dtype):
    x = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s = A.sigmoid(x)
        sm = A.softmax(x, 1)
        lsm = A.log_softmax(x, 1)
        e = A.elu(x)
    assert np.all(np.isfinite(s)) and s[0, 0] == 0 and s[0, -1] == 1
    assert np.all(np.isfinite(sm)) and sm[0, -1] == 1
    assert np.all(np.isfinite(lsm)) and lsm[0, -1] == 0 and lsm[0, 0] == dtype(-2e4)
    assert e[0, 0] == -1
    # the tiny tail of the sigmoid is kept (1 / (1 + exp(100)) would round fine, but
    # exp(-x) for x = -1e4 would overflow); compare with the exact value where it is normal
    np.testing.assert_allclose(A.sigmoid(np.array([-30.0])), [1 / (1 + np.exp(30.0))], rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_with_float64_scalars(dtype):
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(dtype)
    dy = np.ones_like(x)
    for fwd, bwd, kw in [(A.leaky_relu_forward, A.leaky_relu_backward,
                          {"negative_slope": np.float64(0.1)}),
                         (A.elu_forward, A.elu_backward, {"alpha": np.float64(2.0)}),
                         (A.relu_forward, A.relu_backward, {}),
                         (A.sigmoid_forward, A.sigmoid_backward, {}),
                         (A.tanh_forward, A.tanh_backward, {}),
                         (A.scaled_tanh_forward, A.scaled_tanh_backward, {}),
                         (A.softmax_forward, A.softmax_backward, {"axis": 1}),
                         (A.log_softmax_forward, A.log_softmax_backward, {"axis": 0})]:
        y, cache = fwd(x, **kw)
        assert y.dtype == dtype, fwd.__name__
        assert bwd(dy, cache).dtype == dtype, bwd.__name__


@pytest.mark.parametrize("name", OPS)
def test_empty_batch(name):
    fwd, bwd, kw, _ = OPS[name]
    x = np.zeros((0, 3, 2), dtype=np.float32)
    y, cache = fwd(x, **kw)
    assert y.shape == (0, 3, 2) and y.dtype == np.float32
    assert bwd(np.zeros_like(y), cache).shape == (0, 3, 2)


def test_softmax_of_0d_input_is_one():
    y, cache = A.softmax_forward(np.array(2.5), -1)
    assert y.shape == () and y == 1.0
    assert A.softmax_backward(np.array(3.0), cache) == 0.0
    assert A.log_softmax(np.array(2.5), 0) == 0.0


@pytest.mark.parametrize("fwd, bwd, kw", [
    (A.relu_forward, A.relu_backward, {}),
    (A.leaky_relu_forward, A.leaky_relu_backward, {"negative_slope": -0.5}),
    (A.elu_forward, A.elu_backward, {"alpha": 0.5}),
])
def test_inplace_overwrites_input_and_keeps_gradient(fwd, bwd, kw):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3))
    dy = rng.standard_normal((4, 3))
    y_ref, cache_ref = fwd(x.copy(), **kw)
    x_in = x.copy()
    y, cache = fwd(x_in, inplace=True, **kw)
    assert y is x_in
    np.testing.assert_array_equal(x_in, y_ref)
    np.testing.assert_array_equal(bwd(dy, cache), bwd(dy, cache_ref))
    # not inplace: the input is untouched
    x_keep = x.copy()
    fwd(x_keep, **kw)
    np.testing.assert_array_equal(x_keep, x)


@pytest.mark.parametrize("fwd", [A.relu_forward, A.sigmoid_forward, A.tanh_forward,
                                 A.scaled_tanh_forward, A.elu_forward, A.leaky_relu_forward])
def test_integer_and_non_array_inputs_are_type_errors(fwd):
    with pytest.raises(TypeError, match=r"input must be float32 or float64\. "
                                        r"Received: dtype='int64'"):
        fwd(np.arange(4))
    with pytest.raises(TypeError, match="input must be a numpy.ndarray. Received: input='list'"):
        fwd([1.0, 2.0])


def test_softmax_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"^softmax: axis out of range for a 2-D input .*"
                                         r"Received: axis=2, ndim=2"):
        A.softmax(x, 2)
    with pytest.raises(ValueError, match=r"^log_softmax: axis out of range.*axis=-3"):
        A.log_softmax(x, -3)
    with pytest.raises(TypeError, match=r"^softmax: axis must be an int. Received: axis=None"):
        A.softmax(x, None)
    with pytest.raises(TypeError, match="softmax: input must be float32 or float64"):
        A.softmax(np.zeros((2, 3), dtype=np.int32), 1)


def test_option_type_errors():
    with pytest.raises(TypeError, match="leaky_relu: negative_slope must be a real number. "
                                        "Received: negative_slope='a'"):
        A.leaky_relu(np.zeros(2), "a")
    with pytest.raises(TypeError, match="elu: alpha must be a real number. Received: alpha=True"):
        A.elu(np.zeros(2), True)


@pytest.mark.parametrize("fwd, bwd, kw", [(f, b, kw) for f, b, kw, _ in OPS.values()])
def test_backward_checks_dy(fwd, bwd, kw):
    x = np.zeros((2, 3))
    _, cache = fwd(x, **kw)
    with pytest.raises(ValueError, match=r"_backward: dy must have the shape of the forward "
                                         r"output. Received: dy=\(3, 2\), output=\(2, 3\)"):
        bwd(np.zeros((3, 2)), cache)
    with pytest.raises(TypeError, match=r"_backward: dy must have the dtype of the forward output"):
        bwd(np.zeros((2, 3), dtype=np.float32), cache)


@pytest.mark.parametrize("layout", ["nchw", "channel_major"])
def test_relu_cache_is_a_mask_not_the_output(layout):
    """The backward needs only y > 0: the cache holds that as booleans in y's layout (a
    quarter of a float32 y), not y itself, so y can be freed once the next layer is done."""
    x = np.random.default_rng(3).standard_normal((4, 3, 5, 6)).astype(np.float32)
    if layout == "channel_major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    y, cache = A.relu_forward(x)
    mask = cache[0]
    assert mask.dtype == np.bool_ and mask.nbytes * 4 == y.nbytes and not np.shares_memory(mask, y)
    np.testing.assert_array_equal(mask, y > 0)
    assert all(c is not y for c in cache)
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    y[...] = -1.0  # the caller may change y: the backward does not read it
    np.testing.assert_array_equal(A.relu_backward(dy, cache), dy * (x > 0))

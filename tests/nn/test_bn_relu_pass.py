"""A batch norm whose only reader is a ReLU applies that ReLU in its own pass, inside
Sequential and Graph (cnnkit.nn.containers._relu_after): the same bits as the two layers
run one after the other, forward and backward, with and without Numba; and only where
nothing else sees the batch norm's output."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import nn, runtime
from cnnkit.nn import activation


def _pair(bn_cls=nn.BatchNorm2d, c=5, seed=0):
    bn = bn_cls(c)
    rng = np.random.default_rng(seed)
    bn.weight.data[...] = rng.standard_normal(c).astype(np.float32)
    bn.bias.data[...] = rng.standard_normal(c).astype(np.float32)
    bn.bias.data[0] = 0.0  # with a zero weight below: outputs exactly 0 (the ReLU's edge)
    bn.weight.data[0] = 0.0
    return bn, nn.ReLU()


def _manual(bn, relu, x, dy):
    """The two layers called one after the other (no container: no fusion)."""
    y = relu(bn(x))
    dx = bn.backward(relu.backward(dy))
    return y, dx, bn.weight.grad.copy(), bn.bias.grad.copy(), bn.running_mean.copy(), bn.running_var.copy()


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "numpy"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,bn_cls", [((6, 5, 7, 9), nn.BatchNorm2d), ((32, 5), nn.BatchNorm1d)])
@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
def test_sequential_bn_relu_same_bits_as_the_two_layers(jit, training, shape, bn_cls, layout):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    if layout == "channel-major":  # as conv outputs are
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, 0)), 0, 1)
    dy = rng.standard_normal(shape).astype(np.float32)
    previous = runtime.set_jit(jit)
    try:
        ref = _manual(*[m.train(training) for m in _pair(bn_cls)], x, dy)
        bn, relu = _pair(bn_cls)
        seq = nn.Sequential(bn, relu).train(training)
        y = seq(x)
        assert relu._cache is activation._APPLIED  # (the batch norm applied it)
        seq.needs_input_grad = True
        dx = seq.backward(dy)
        got = (y, dx, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var)
    finally:
        runtime.set_jit(previous)
    assert (ref[0] == 0).any() and (ref[0] > 0).any()
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(np.signbit(a), np.signbit(b))


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "numpy"])
def test_graph_bn_relu_fused_only_where_the_relu_alone_reads_it(jit):
    """conv -> bn1 -> relu1 (fused); bn2 read by relu2 and by the Add (not fused); bn3 the
    graph's output read by relu3 too (not fused). Same bits as the layers by hand."""
    def make():
        rng = np.random.default_rng(5)
        g = nn.Graph(outputs=None)
        g.add("conv", nn.Conv2d(3, 4, 3, padding=1, rng=rng))
        g.add("bn1", _pair(c=4, seed=1)[0])
        g.add("relu1", nn.ReLU())
        g.add("bn2", _pair(c=4, seed=2)[0])
        g.add("relu2", nn.ReLU())
        g.add("add", nn.Add(), inputs=["relu2", "bn2"])
        g.add("bn3", _pair(c=4, seed=3)[0])
        g.add("relu3", nn.ReLU())
        g.set_outputs("relu3", "bn3")
        return g
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    dys = (rng.standard_normal((3, 4, 6, 6)).astype(np.float32), rng.standard_normal((3, 4, 6, 6)).astype(np.float32))
    previous = runtime.set_jit(jit)
    try:
        g = make()
        outs = g(x)
        assert g.relu1._cache is activation._APPLIED
        assert g.relu2._cache is not activation._APPLIED and g.relu3._cache is not activation._APPLIED
        g.needs_input_grad = True
        dx = g.backward(dys)
        h = make()  # by hand, node by node
        v = {"input": x}
        for name, inputs in h.nodes:
            v[name] = h._children[name](*[v[i] for i in inputs])
        grads = {"relu3": dys[0], "bn3": dys[1]}
        for name, inputs in reversed(h.nodes):
            layer = h._children[name]
            d = layer.backward(grads.pop(name))
            for i, di in zip(inputs, d if len(inputs) > 1 else (d,)):
                grads[i] = di if i not in grads else grads[i] + di
    finally:
        runtime.set_jit(previous)
    np.testing.assert_array_equal(outs[0], v["relu3"])
    np.testing.assert_array_equal(outs[1], v["bn3"])
    np.testing.assert_array_equal(dx, grads["input"])
    for name in ("conv", "bn1", "bn2", "bn3"):
        np.testing.assert_array_equal(g._children[name].weight.grad, h._children[name].weight.grad)


def test_the_pass_lasts_one_call():
    """A failed batch norm inside a Sequential leaves no flag behind: the ReLU, called on
    its own afterwards, clamps; the batch norm, on its own, does not."""
    bn, relu = _pair()
    seq = nn.Sequential(bn, relu)
    with pytest.raises(ValueError, match="channels"):
        seq(np.ones((2, 3, 4, 4), np.float32))
    x = -np.ones((2, 5, 4, 4), np.float32)
    np.testing.assert_array_equal(relu(x), np.zeros_like(x))
    y = bn(np.random.default_rng(0).standard_normal((2, 5, 4, 4)).astype(np.float32))
    assert (y < 0).any()


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "numpy"])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 2, 0), (2, 1, 0)])
def test_relu_then_max_pool_same_values_as_the_two_layers(jit, kernel, stride, padding):
    """conv -> ReLU -> max pool inside a Sequential: the pool applies the ReLU to its
    output instead (a ReLU commutes with a max); the outputs are the same bits and the
    gradients the same values as the layers by hand, with ties at 0, NaN, and windows
    that hold no positive value."""
    rng = np.random.default_rng(kernel * 10 + stride + padding)
    x = rng.standard_normal((3, 2, 9, 9)).astype(np.float32)
    x[2, 1, 4, 4] = np.nan  # image 2: NaN windows (NaN wins a max; the ReLU keeps it)

    def make():
        r = np.random.default_rng(3)
        return nn.Conv2d(2, 4, 3, padding=1, rng=r), nn.ReLU(), nn.MaxPool2d(kernel, stride, padding)
    previous = runtime.set_jit(jit)
    try:
        conv, relu, pool = make()
        conv.bias.data[0] = -50.0  # channel 0: every value negative, every window at 0 after the ReLU
        seq = nn.Sequential(conv, relu, pool)
        y = seq(x)
        assert relu._cache is activation._APPLIED and pool._cache[0] == "relu"
        dy = rng.standard_normal(y.shape).astype(np.float32)
        seq.needs_input_grad = True
        dx = seq.backward(dy)
        c2, r2, p2 = make()
        c2.bias.data[0] = -50.0
        ref = p2(r2(c2(x)))
        ref_dx = c2.backward(r2.backward(p2.backward(dy)))
    finally:
        runtime.set_jit(previous)
    assert (y[:2, 0] == 0).all() and (y > 0).any() and np.isnan(y[2]).any()
    np.testing.assert_array_equal(y, ref)
    assert np.array_equal(np.signbit(y), np.signbit(ref))
    np.testing.assert_array_equal(dx, ref_dx)
    # The conv's own gradients sum the same values; the pool's gradient reaches the conv in
    # another memory layout than the ReLU's would (a cropped view, not a dense copy), so the
    # bias gradient may be summed in another order: a few ulps.
    np.testing.assert_allclose(conv.weight.grad, c2.weight.grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv.bias.grad, c2.bias.grad, rtol=1e-6, atol=1e-6)


def test_relu_after_a_batch_norm_stays_there_before_a_pool():
    """bn -> ReLU -> max pool: the batch norm applies the ReLU; the pool does not again."""
    bn, relu = _pair()
    pool = nn.MaxPool2d(2)
    seq = nn.Sequential(bn, relu, pool)
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 6)).astype(np.float32)
    y = seq(x)
    assert relu._cache is activation._APPLIED and pool._cache[0] != "relu"
    np.testing.assert_array_equal(y, nn.MaxPool2d(2)(nn.ReLU()(bn(x))))


@pytest.mark.parametrize("jit", [True, False], ids=["jit", "numpy"])
def test_residual_add_applies_the_relu_after_it(jit):
    """A ResNet block's join, relu(bn2 + input), in a Graph: the Add applies the ReLU and
    keeps its mask (add_relu_forward); outputs and gradients are the same bits as the
    nodes run by hand. An Add with a fused inference ReLU, or of three inputs, is left
    alone."""
    def make():
        r = np.random.default_rng(9)
        g = nn.Graph()
        g.add("conv1", nn.Conv2d(4, 4, 3, padding=1, bias=False, rng=r))
        g.add("bn1", _pair(c=4, seed=1)[0])
        g.add("relu1", nn.ReLU())
        g.add("conv2", nn.Conv2d(4, 4, 3, padding=1, bias=False, rng=r))
        g.add("bn2", _pair(c=4, seed=2)[0])
        g.add("add", nn.Add(), inputs=["bn2", "input"])
        g.add("relu", nn.ReLU())
        return g
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
    dy = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
    previous = runtime.set_jit(jit)
    try:
        g = make()
        y = g(x)
        assert g._children["relu"]._cache is activation._APPLIED and g._children["add"]._cache[1] is not None
        g.needs_input_grad = True
        dx = g.backward(dy)
        h = make()
        v = {"input": x}
        for name, inputs in h.nodes:
            v[name] = h._children[name](*[v[i] for i in inputs])
        grads = {"relu": dy}
        for name, inputs in reversed(h.nodes):
            d = h._children[name].backward(grads.pop(name))
            for i, di in zip(inputs, d if len(inputs) > 1 else (d,)):
                grads[i] = di if i not in grads else grads[i] + di
    finally:
        runtime.set_jit(previous)
    assert (v["relu"] == 0).any()
    np.testing.assert_array_equal(y, v["relu"])
    np.testing.assert_array_equal(dx, grads["input"])
    for name in ("conv1", "conv2", "bn1", "bn2"):
        np.testing.assert_array_equal(g._children[name].weight.grad, h._children[name].weight.grad)
    g3 = nn.Graph()
    g3.add("add", nn.Add(), inputs=["input", "input", "input"])
    g3.add("relu", nn.ReLU())
    np.testing.assert_array_equal(g3(x), np.maximum(3 * x, 0))
    assert g3._children["relu"]._cache is not activation._APPLIED

"""Tests of the layers Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d (cnnkit.nn).

Create in ours, create in torch, copy the weights, compare outputs and gradients;
central differences in float64; the default initialization; repr against torch's;
the lecture's parameter counts; errors carrying the layer's label; N = 0; dtypes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from cnnkit.nn.containers import Sequential
from cnnkit.nn.conv import Conv2d
from cnnkit.nn.module import Layer
from cnnkit.nn.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from tests.functional.test_conv import assert_close, draw_conv_config, make_array, torch_conv
from tests.helpers import numeric_grad

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel:UserWarning")

ERR = (ValueError, TypeError)


def _t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


# ---------------------------------------------------------------------------------
# Conv2d against PyTorch
# ---------------------------------------------------------------------------------
def _layer_configs(count, seed=4242):
    rng = np.random.default_rng(seed)
    return [draw_conv_config(rng) for _ in range(count)]


LAYER_CONFIGS = _layer_configs(60)


def _torch_conv_layer(layer, cfg):
    """torch.nn.Conv2d with our weights, where torch takes the padding; else None."""
    form = cfg["pad_form"]
    if cfg["flip"] or form == "quad" or (form == "same" and cfg["stride"] != (1, 1)):
        return None
    padding = cfg["padding_arg"]
    t = torch.nn.Conv2d(cfg["c_in"], cfg["c_out"], cfg["kernel"], cfg["stride_arg"], padding,
                        cfg["dilation_arg"], cfg["groups"], bias=cfg["bias"],
                        dtype=torch.float32 if layer.weight.dtype == np.float32 else torch.float64)
    with torch.no_grad():
        t.weight.copy_(_t(layer.weight.data))
        if cfg["bias"]:
            t.bias.copy_(_t(layer.bias.data))
    return t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_layer_matches_torch(dtype):
    n_module = 0
    for i, cfg in enumerate(LAYER_CONFIGS):
        layer = Conv2d(cfg["c_in"], cfg["c_out"], cfg["kernel"], cfg["stride_arg"], cfg["padding_arg"],
                       cfg["dilation_arg"], cfg["groups"], bias=cfg["bias"], flip=cfg["flip"],
                       rng=np.random.default_rng(i), dtype=dtype)
        rng = np.random.default_rng(cfg["seed"])
        x = make_array(rng, (cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]), cfg["layout"], dtype)
        y = layer(x)
        dy = make_array(rng, y.shape, cfg["layout"], dtype)
        dx = layer.backward(dy)
        got = (y, dx, layer.weight.grad, None if layer.bias is None else layer.bias.grad)
        t = _torch_conv_layer(layer, cfg)
        if t is not None:
            n_module += 1
            xt = _t(x, True)
            yt = t(xt)
            yt.backward(_t(dy))
            ref = (yt.detach().numpy(), xt.grad.numpy(), t.weight.grad.numpy(),
                   None if t.bias is None else t.bias.grad.numpy())
        else:
            ref = torch_conv(cfg, x, layer.weight.data, None if layer.bias is None else layer.bias.data, dy)
        a = lambda v: None if v is None else np.abs(np.asarray(v, np.float64))
        scales = torch_conv(cfg, a(x), a(layer.weight.data), a(None if layer.bias is None else layer.bias.data),
                            a(dy))
        for name, g, r, s in zip(("y", "dx", "weight.grad", "bias.grad"), got, ref, scales):
            if r is None:
                assert g is None
                continue
            assert g.dtype == dtype, (name, g.dtype, cfg)
            assert_close(g, r, s, dtype, f"Conv2d {name} for config {cfg}")
    assert n_module >= 20   # most went through torch.nn.Conv2d itself


def test_conv2d_gradients_accumulate_and_cache_is_used_once():
    rng = np.random.default_rng(0)
    layer = Conv2d(3, 4, 3, padding=1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 3, 5, 5))
    dy = rng.standard_normal((2, 4, 5, 5))
    layer(x)
    layer.backward(dy)
    gw, gb = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * gw, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, 2 * gb, rtol=1e-12)
    with pytest.raises(RuntimeError, match="backward"):
        layer.backward(dy)                      # a second backward without a forward
    layer.zero_grad()
    assert layer.weight.grad is None
    frozen = Conv2d(3, 4, 3, rng=rng).requires_grad_(False)
    frozen(x.astype(np.float32))
    frozen.backward(np.ones((2, 4, 3, 3), np.float32))
    assert frozen.weight.grad is None and frozen.bias.grad is None


def test_conv2d_flip_layer():
    rng = np.random.default_rng(1)
    conv = Conv2d(2, 3, (3, 2), padding=1, flip=True, rng=np.random.default_rng(5), dtype=np.float64)
    corr = Conv2d(2, 3, (3, 2), padding=1, rng=np.random.default_rng(6), dtype=np.float64)
    corr.weight.data = np.ascontiguousarray(conv.weight.data[..., ::-1, ::-1])
    corr.bias.data = conv.bias.data.copy()
    x = rng.standard_normal((2, 2, 5, 4))
    np.testing.assert_allclose(conv(x), corr(x), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal((2, 3, 5, 5))
    np.testing.assert_allclose(conv.backward(dy), corr.backward(dy), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, corr.weight.grad[..., ::-1, ::-1], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------
# Central differences (float64)
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(2, 3), stride=(2, 1), padding=(1, 0, 0, 2), groups=2),
    dict(in_channels=2, out_channels=4, kernel_size=3, dilation=2, padding="same", groups=2, bias=False),
    dict(in_channels=2, out_channels=2, kernel_size=(3, 2), stride=2, padding="same", flip=True),
], ids=str)
def test_conv2d_layer_central_differences(kw):
    rng = np.random.default_rng(7)
    layer = Conv2d(**kw, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, kw["in_channels"], 6, 5))
    y = layer(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    f = lambda: layer(x)
    np.testing.assert_allclose(dx, numeric_grad(f, x, dy), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.weight.grad, numeric_grad(f, layer.weight.data, dy), rtol=1e-6, atol=1e-8)
    if layer.bias is not None:
        np.testing.assert_allclose(layer.bias.grad, numeric_grad(f, layer.bias.data, dy), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("layer", [
    MaxPool2d(3, 2, 1), MaxPool2d((2, 3), stride=1, dilation=(2, 1)), MaxPool2d(3, 2, ceil_mode=True),
    AvgPool2d(3, 2, 1), AvgPool2d((3, 2), 2, (1, 0), ceil_mode=True, count_include_pad=False),
    AvgPool2d(2, divisor_override=3), AdaptiveAvgPool2d((3, 4)), AdaptiveAvgPool2d(1),
], ids=repr)
def test_pool_layer_central_differences(layer):
    rng = np.random.default_rng(8)
    # distinct values 0.01 apart: no max-pool tie is crossed by eps = 1e-6
    x = (rng.permutation(2 * 2 * 7 * 6) * 0.01 + rng.uniform(0, 1e-3, 168)).reshape(2, 2, 7, 6)
    y = layer(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, numeric_grad(lambda: layer(x), x, dy), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------
# Pool layers against PyTorch
# ---------------------------------------------------------------------------------
POOL_CASES = [
    ("MaxPool2d", dict(kernel_size=2)),
    ("MaxPool2d", dict(kernel_size=3, stride=2)),
    ("MaxPool2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2))),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("MaxPool2d", dict(kernel_size=2, stride=3, dilation=2, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=2)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=2, stride=1, divisor_override=3)),
    ("AdaptiveAvgPool2d", dict(output_size=1)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, 4))),
    ("AdaptiveAvgPool2d", dict(output_size=(9, 2))),
]
OURS = dict(MaxPool2d=MaxPool2d, AvgPool2d=AvgPool2d, AdaptiveAvgPool2d=AdaptiveAvgPool2d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kw", POOL_CASES, ids=[f"{n}-{k}" for n, k in POOL_CASES])
def test_pool_layer_matches_torch(name, kw, dtype):
    rng = np.random.default_rng(9)
    for shape, layout in [((2, 3, 7, 6), "contiguous"), ((1, 2, 8, 9), "transposed"),
                          ((3, 1, 5, 5), "negative_strides"), ((0, 2, 6, 6), "contiguous")]:
        x = make_array(rng, shape, layout, dtype)
        layer, t = OURS[name](**kw), getattr(torch.nn, name)(**kw)
        y = layer(x)
        xt = _t(x, True)
        yt = t(xt)
        dy = rng.standard_normal(y.shape).astype(dtype)
        yt.backward(_t(dy))
        dx = layer.backward(dy)
        what = f"{name}({kw}) x{shape} {layout} {np.dtype(dtype).name}"
        assert y.dtype == dx.dtype == dtype, what
        assert_close(y, yt.detach().numpy(), np.abs(yt.detach().numpy()) + 1, dtype, what + " y")
        assert_close(dx, xt.grad.numpy(), np.abs(xt.grad.numpy()) + 1, dtype, what + " dx")


def test_max_pool_layer_return_indices_like_torch():
    rng = np.random.default_rng(10)
    x = rng.integers(-2, 3, size=(2, 3, 7, 6)).astype(np.float32)   # many ties
    for kw in [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=(2, 3), stride=1, dilation=(2, 1), ceil_mode=True)]:
        layer = MaxPool2d(**kw, return_indices=True)
        out = layer(x)
        assert isinstance(out, tuple) and len(out) == 2, f"{kw}: expected (y, indices)"
        y, idx = out
        yt, it = TF.max_pool2d(_t(x), **kw, return_indices=True)
        np.testing.assert_array_equal(y, yt.numpy(), err_msg=str(kw))
        np.testing.assert_array_equal(idx, it.numpy(), err_msg=str(kw))
        dx = layer.backward(np.ones(y.shape, np.float32))
        np.testing.assert_array_equal(dx.reshape(2, 3, -1).sum(-1), np.full((2, 3), y[0, 0].size))


# ---------------------------------------------------------------------------------
# Initialization, parameter counts, repr
# ---------------------------------------------------------------------------------
def test_conv2d_default_init_like_torch():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, fan_in = C_in/groups*kH*kW."""
    for args, kw in [((64, 128, 3), {}), ((32, 64, (5, 3)), dict(groups=4)), ((16, 48, 3), dict(groups=16))]:
        layer = Conv2d(*args, **kw, rng=np.random.default_rng(0))
        t = torch.nn.Conv2d(*args, **kw)
        c_in, c_out, k = args
        kh, kw_ = (k, k) if isinstance(k, int) else k
        fan_in = c_in // kw.get("groups", 1) * kh * kw_
        bound = 1 / math.sqrt(fan_in)
        w = layer.weight.data
        assert w.shape == tuple(t.weight.shape) and w.dtype == np.float32
        assert layer.bias.data.shape == (c_out,) and layer.bias.data.dtype == np.float32
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        # Statistical checks at ~5 sigma for n samples of U(-b, b): the mean has sd
        # b/sqrt(3n), the sample variance b^2/3 has relative sd sqrt(0.8/n), and
        # P(max|w| < (1 - 10/n) b) = (1 - 10/n)^n ~ e^-10.
        n = w.size
        assert np.abs(w).max() >= (1 - 10 / n) * bound                # fills the interval
        assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
        assert np.var(w) == pytest.approx(bound ** 2 / 3, rel=5 * math.sqrt(0.8 / n))
        assert np.abs(layer.bias.data).max() <= bound * (1 + 1e-6)
        # torch's own init has the same bound
        tw = t.weight.detach().numpy()
        assert np.abs(tw).max() <= bound * (1 + 1e-6) and np.abs(tw).max() >= (1 - 10 / n) * bound


def test_conv2d_init_is_seedable_and_dtype():
    a = Conv2d(3, 8, 3, rng=np.random.default_rng(123))
    b = Conv2d(3, 8, 3, rng=np.random.default_rng(123))
    c = Conv2d(3, 8, 3, rng=np.random.default_rng(124))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    d = Conv2d(3, 8, 3, rng=np.random.default_rng(1), dtype=np.float64)
    assert d.weight.data.dtype == d.bias.data.dtype == np.float64
    e = Conv2d(3, 8, 3, bias=False)
    assert e.bias is None and [n for n, _ in e.named_parameters()] == ["weight"]
    assert a.weight.grad is None


def test_lecture_parameter_counts():
    """W_C = K^2 * C * N, B_C = N: the lecture's AlexNet numbers (counted without groups)."""
    assert Conv2d(3, 96, 11, stride=4).num_parameters() == 34_944        # P_C1
    assert Conv2d(96, 256, 5, padding=2).num_parameters() == 614_656     # P_C2
    assert Conv2d(256, 384, 3, padding=1).num_parameters() == 885_120    # P_C3
    assert Conv2d(384, 384, 3, padding=1).num_parameters() == 1_327_488  # P_C4
    assert Conv2d(384, 256, 3, padding=1).num_parameters() == 884_992    # P_C5
    # MobileNet's example: 256 filters 5x5x3 giving 8x8, vs depthwise + pointwise
    positions = 8 * 8
    normal = Conv2d(3, 256, 5, bias=False)
    depthwise = Conv2d(3, 3, 5, groups=3, bias=False)
    pointwise = Conv2d(3, 256, 1, bias=False)
    assert normal.num_parameters() * positions == 1_228_800
    assert depthwise.num_parameters() * positions == 4_800
    assert pointwise.num_parameters() * positions == 49_152
    # The lecture prints "DW+S: 52,952", but its own terms add up to 4,800 + 49,152 = 53,952
    # (a slip in the slide, also quoted in DESIGN.md); the layers give the correct sum.
    assert (depthwise.num_parameters() + pointwise.num_parameters()) * positions == 53_952
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    assert pointwise(depthwise(x)).shape == normal(x).shape == (1, 256, 8, 8)


def test_depthwise_layer_is_per_channel_convolution():
    rng = np.random.default_rng(11)
    dw = Conv2d(3, 6, 3, padding=1, groups=3, rng=rng, dtype=np.float64)     # channel multiplier 2
    x = rng.standard_normal((2, 3, 5, 4))
    y = dw(x)
    for c in range(3):
        for m in range(2):
            f = 2 * c + m
            single = TF.conv2d(_t(x[:, c:c + 1]), _t(dw.weight.data[f:f + 1]), _t(dw.bias.data[f:f + 1]),
                               padding=1).numpy()
            np.testing.assert_allclose(y[:, f:f + 1], single, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("args, kw", [
    ((3, 8, 3), {}),
    ((3, 8, (3, 2)), dict(stride=2, padding=(1, 0), dilation=2, bias=False)),
    ((4, 8, 3), dict(groups=2, padding="valid")),
    ((3, 8, 3), dict(padding="same")),
    ((3, 8, 5), dict(stride=(2, 1), padding=2, groups=1)),
    ((16, 16, 3), dict(padding=1, groups=16, bias=True)),
    ((3, 8, 1), dict(padding=0, dilation=1)),
], ids=str)
def test_conv2d_repr_like_torch(args, kw):
    assert repr(Conv2d(*args, **kw)) == repr(torch.nn.Conv2d(*args, **kw))


@pytest.mark.parametrize("name, kw", [
    ("MaxPool2d", dict(kernel_size=3, stride=2)),
    ("MaxPool2d", dict(kernel_size=2)),
    ("MaxPool2d", dict(kernel_size=(3, 2), stride=1, padding=1, dilation=2, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=3)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=(2, 4), stride=(1, 2))),
    ("AdaptiveAvgPool2d", dict(output_size=1)),
    ("AdaptiveAvgPool2d", dict(output_size=(2, 3))),
], ids=str)
def test_pool_repr_like_torch(name, kw):
    assert repr(OURS[name](**kw)) == repr(getattr(torch.nn, name)(**kw))


# ---------------------------------------------------------------------------------
# Errors: the layer's label first
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, kw, match", [
    ((3, 4, 0), {}, "must be positive"),
    ((3, 4, (3, -1)), {}, "must be positive"),
    ((3, 4, 3), dict(stride=0), "must be positive"),
    ((3, 4, 3), dict(dilation=0), "must be positive"),
    ((3, 4, 3), dict(padding=-1), "must be non-negative"),
    ((3, 4, 3), dict(padding=(1, 0, -1, 0)), "must be non-negative"),
    ((4, 4, 3), dict(groups=3), "divisible by groups"),
    ((4, 6, 3), dict(groups=4), "divisible by groups"),
], ids=str)
def test_conv2d_constructor_errors(args, kw, match):
    with pytest.raises(ERR, match=match) as info:
        Conv2d(*args, **kw)
    assert str(info.value).startswith("Conv2d")


@pytest.mark.parametrize("cls, kw, match", [
    (MaxPool2d, dict(kernel_size=0), "must be positive"),
    (MaxPool2d, dict(kernel_size=2, stride=0), "must be positive"),
    (MaxPool2d, dict(kernel_size=2, dilation=0), "must be positive"),
    (MaxPool2d, dict(kernel_size=2, padding=-1), "must be non-negative"),
    (MaxPool2d, dict(kernel_size=3, padding=2), "at most half"),
    (AvgPool2d, dict(kernel_size=(0, 2)), "must be positive"),
    (AvgPool2d, dict(kernel_size=2, stride=(1, 0)), "must be positive"),
    (AvgPool2d, dict(kernel_size=2, padding=-1), "must be non-negative"),
    (AvgPool2d, dict(kernel_size=(4, 2), padding=(0, 2)), "at most half"),
], ids=str)
def test_pool_constructor_errors(cls, kw, match):
    with pytest.raises(ERR, match=match) as info:
        cls(**kw)
    assert str(info.value).startswith(cls.__name__)


class _Net(Layer):
    """A root that holds ``features``, so the layers' paths are 'features.0', ..."""

    def __init__(self, *layers):
        super().__init__()
        self.features = Sequential(*layers)

    def forward(self, x):
        return self.features(x)


def test_layer_forward_errors_name_the_layer():
    net = _Net(Conv2d(3, 4, 3, rng=np.random.default_rng(0)), MaxPool2d(2), AvgPool2d(2),
               AdaptiveAvgPool2d(1))
    conv, mp, ap, aap = (net.features[i] for i in range(4))
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ERR, match=r"^Conv2d 'features\.0'.*channels") as info:
        conv(np.zeros((1, 4, 8, 8), np.float32))
    assert "4" in str(info.value) and "3" in str(info.value)
    with pytest.raises(ERR, match=r"^Conv2d 'features\.0'.*expected a 4-D input"):
        conv(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ERR, match=r"^Conv2d 'features\.0'.*output height would be .*\(I - K \+ 2P\)/S \+ 1"):
        conv(np.zeros((1, 3, 2, 8), np.float32))
    with pytest.raises(ERR, match=r"^Conv2d 'features\.0'.*output width would be"):
        conv(np.zeros((1, 3, 8, 2), np.float32))
    with pytest.raises(ERR, match=r"^Conv2d 'features\.0'.*dtype mismatch"):
        conv(x.astype(np.float64))
    with pytest.raises(ERR, match=r"^MaxPool2d 'features\.1'.*expected a 4-D input"):
        mp(np.zeros((8, 8), np.float32))
    with pytest.raises(ERR, match=r"^MaxPool2d 'features\.1'.*output height would be"):
        mp(np.zeros((1, 3, 1, 8), np.float32))
    with pytest.raises(ERR, match=r"^AvgPool2d 'features\.2'.*output width would be"):
        ap(np.zeros((1, 3, 8, 1), np.float32))
    with pytest.raises(ERR, match=r"^AdaptiveAvgPool2d 'features\.3'.*expected a 4-D input"):
        aap(np.zeros((3, 8, 8), np.float32))
    # a root layer uses its bare class name
    with pytest.raises(ERR, match=r"^Conv2d: .*channels"):
        Conv2d(3, 4, 3)(np.zeros((1, 5, 8, 8), np.float32))
    assert net(x).shape == (1, 4, 1, 1)


# ---------------------------------------------------------------------------------
# N = 0 and dtypes through layers
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_empty_batch_and_dtype(dtype):
    layers = [Conv2d(3, 6, 3, stride=2, padding=1, groups=3, rng=np.random.default_rng(0), dtype=dtype),
              MaxPool2d(3, 2, 1), AvgPool2d(2, ceil_mode=True), AdaptiveAvgPool2d((2, 2))]
    for n in (0, 2):
        x = np.random.default_rng(1).standard_normal((n, 3, 9, 8)).astype(dtype)
        shapes = [x.shape]
        h = x
        for layer in layers:
            h = layer(h)
            assert h.dtype == dtype, (layer, h.dtype)
            shapes.append(h.shape)
        assert shapes[1:] == [(n, 6, 5, 4), (n, 6, 3, 2), (n, 6, 2, 1), (n, 6, 2, 2)]
        g = np.ones(h.shape, dtype)
        for layer, shape in zip(reversed(layers), reversed(shapes[:-1])):
            g = layer.backward(g)
            assert g.shape == shape and g.dtype == dtype, (layer, g.shape, g.dtype)
        conv = layers[0]
        assert conv.weight.grad.dtype == conv.bias.grad.dtype == dtype
        if n == 0:
            assert not conv.weight.grad.any() and not conv.bias.grad.any()
        conv.zero_grad()

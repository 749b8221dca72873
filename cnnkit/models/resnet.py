"""Residual networks (He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image
Recognition", arXiv:1512.03385).

``resnet18/34/50/101/152``: the ImageNet networks of table 1, in torchvision's layout
(``conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc``; blocks with ``conv1, bn1,
conv2, bn2[, conv3, bn3]`` and a projection ``downsample.0`` (1x1 conv) /
``downsample.1`` (BN) where the shape changes: the paper's option B, section 3.3), so
``list(model.state_dict())`` equals torchvision's keys and its weights load.
Deviation from the paper, as torchvision "v1.5": in the Bottleneck the stride-2 sits
on the 3x3 conv (the paper strides the first 1x1 conv, which then skips 3/4 of its
input).

``resnet20/32/56``: the CIFAR-10 networks of section 4.2: a 3x3 conv with 16 maps, then
three stages of ``n`` BasicBlocks (``n = 3, 5, 9``; 6n+2 weighted layers) on 32x32,
16x16 and 8x8 maps with 16/32/64 filters, global average pooling and an FC layer.
``shortcut="A"`` (the paper's choice for CIFAR): identity shortcuts whose dimension
increase is a parameter-free :class:`ShortcutA` (stride-2 subsampling and zero-padded
channels); ``shortcut="B"`` uses 1x1 projections (+BN) there instead.

Each residual block is a :class:`cnnkit.nn.Graph` whose ``add`` node sums the residual
branch and the shortcut (``y = relu(F(x) + x)``, equation 1).

Shapes for a 224x224 input: conv1 (7x7/2, pad 3) -> 112, maxpool (3x3/2, pad 1) -> 56,
layer2/3/4 halve: 28, 14, 7; ``AdaptiveAvgPool2d(1)`` -> (N, C, 1, 1). CIFAR: 32 -> 32,
16, 8 (28x28 Fashion-MNIST: 28, 14, 7), global average pool.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._errors import value_error
from ..functional.activation import _check_dy, _check_float
from ..nn.activation import ReLU
from ..nn.containers import Add, Graph, Sequential
from ..nn.conv import Conv2d
from ..nn.linear import Flatten, Linear
from ..nn.module import Layer
from ..nn.norm import BatchNorm2d
from ..nn.pool import AdaptiveAvgPool2d, MaxPool2d
from . import register


class ShortcutA(Layer):
    """The parameter-free shortcut of He et al. 2015, section 3.3 option A / section 4.2:
    ``x`` subsampled with ``stride`` (every ``stride``-th row and column: the identity
    on a stride-2 grid) and padded with zero channels from ``in_channels`` to
    ``out_channels`` (``(out - in) // 2`` zero maps before, the rest after).

    Shape: input ``(N, C_in, H, W)``, output ``(N, C_out, ceil(H/s), ceil(W/s))``.
    Backward: ``dx[:, :, ::s, ::s] = dy[:, before:before + C_in]``, zero elsewhere.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        if out_channels < in_channels or stride < 1:
            raise value_error("ShortcutA", "needs out_channels >= in_channels and stride >= 1",
                              in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.in_channels, self.out_channels, self.stride = int(in_channels), int(out_channels), int(stride)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label(), min_ndim=4)
        if x.shape[1] != self.in_channels:
            raise value_error(self.label(), f"expected {self.in_channels} input channels",
                              shape=tuple(x.shape))
        s, before, c = self.stride, (self.out_channels - self.in_channels) // 2, self.in_channels
        sub = x.transpose(1, 0, 2, 3)[:, :, ::s, ::s]                            # (C_in, N, H', W')
        # channel-major memory seen as (N, C_out, H', W'), as conv and batch-norm outputs are:
        # the Add that reads it next then adds both in one compiled pass
        y = np.empty((self.out_channels,) + sub.shape[1:], dtype=x.dtype)
        y[:before] = 0
        y[before + c:] = 0
        y[before:before + c] = sub
        self._cache = (x.shape, (y.shape[1], y.shape[0]) + y.shape[2:], x.dtype)
        return y.transpose(1, 0, 2, 3)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x_shape, y_shape, dtype = self._take_cache()
        _check_dy(dy, y_shape, dtype, self.label())
        s, before = self.stride, (self.out_channels - self.in_channels) // 2
        dx = np.zeros((x_shape[1], x_shape[0]) + tuple(x_shape[2:]), dtype=dtype)  # (C_in, N, H, W)
        dx[:, :, ::s, ::s] = dy.transpose(1, 0, 2, 3)[before:before + self.in_channels]
        return dx.transpose(1, 0, 2, 3)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _conv_bn(g: Graph, i: int, cin: int, cout: int, k: int, stride: int, rng, dtype, relu: bool) -> None:
    g.add(f"conv{i}", Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, rng=rng, dtype=dtype))
    g.add(f"bn{i}", BatchNorm2d(cout, dtype=dtype))
    if relu:
        g.add(f"relu{i}", ReLU())


def _finish(g: Graph, shortcut: Layer | None) -> Graph:
    """Add the shortcut (after the residual branch, torchvision's key order), the sum, the ReLU."""
    last = g.nodes[-1][0]
    other = "input"
    if shortcut is not None:
        other = g.add("downsample" if not isinstance(shortcut, ShortcutA) else "shortcut", shortcut, inputs="input")
    g.add("add", Add(), inputs=[last, other])
    g.add("relu", ReLU())
    return g


def _projection(cin: int, cout: int, stride: int, rng, dtype) -> Sequential:
    return Sequential(Conv2d(cin, cout, 1, stride=stride, bias=False, rng=rng, dtype=dtype),
                      BatchNorm2d(cout, dtype=dtype))


def basic_block(cin: int, cout: int, stride: int, shortcut: str, rng, dtype) -> Graph:
    """3x3 conv-BN-ReLU, 3x3 conv-BN, + shortcut, ReLU (figure 5 left). Output ``cout`` maps."""
    g = Graph()
    _conv_bn(g, 1, cin, cout, 3, stride, rng, dtype, relu=True)
    _conv_bn(g, 2, cout, cout, 3, 1, rng, dtype, relu=False)
    sc = None
    if stride != 1 or cin != cout:
        sc = ShortcutA(cin, cout, stride) if shortcut == "A" else _projection(cin, cout, stride, rng, dtype)
    return _finish(g, sc)


def bottleneck(cin: int, width: int, stride: int, rng, dtype) -> Graph:
    """1x1 (width), 3x3 (width, carries the stride: v1.5), 1x1 (4*width), + shortcut, ReLU
    (figure 5 right)."""
    g = Graph()
    _conv_bn(g, 1, cin, width, 1, 1, rng, dtype, relu=True)
    _conv_bn(g, 2, width, width, 3, stride, rng, dtype, relu=True)
    _conv_bn(g, 3, width, 4 * width, 1, 1, rng, dtype, relu=False)
    sc = _projection(cin, 4 * width, stride, rng, dtype) if stride != 1 or cin != 4 * width else None
    return _finish(g, sc)


def _imagenet_resnet(kind: str, depths: tuple, num_classes: int, in_channels: int, rng, dtype) -> Sequential:
    rng = np.random.default_rng() if rng is None else rng
    expansion = 4 if kind == "bottleneck" else 1
    parts = OrderedDict(
        conv1=Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, rng=rng, dtype=dtype),  # (N, 64, 112, 112)
        bn1=BatchNorm2d(64, dtype=dtype),
        relu=ReLU(),
        maxpool=MaxPool2d(3, stride=2, padding=1))                                                # (N, 64, 56, 56)
    cin = 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        blocks = []
        for b in range(n):
            stride = 2 if (b == 0 and stage > 1) else 1
            if kind == "bottleneck":
                blocks.append(bottleneck(cin, width, stride, rng, dtype))
            else:
                blocks.append(basic_block(cin, width, stride, "B", rng, dtype))
            cin = width * expansion
        parts[f"layer{stage}"] = Sequential(*blocks)                      # 56, 28, 14, 7 at 224
    parts["avgpool"] = AdaptiveAvgPool2d(1)                               # (N, 512*e, 1, 1)
    parts["flatten"] = Flatten()
    parts["fc"] = Linear(cin, num_classes, rng=rng, dtype=dtype)
    return Sequential(parts)


def _make(name: str, kind: str, depths: tuple, params: str):
    def builder(num_classes: int = 1000, in_channels: int = 3, *, rng: np.random.Generator | None = None,
                dtype=np.float32) -> Sequential:
        return _imagenet_resnet(kind, depths, num_classes, in_channels, rng, dtype)
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{name}: He et al. 2015 table 1, {kind} blocks {list(depths)} per stage, torchvision "
                       f"layout; {params} parameters at 1000 classes.\n\n"
                       "Shape: input ``(N, in_channels, H, W)`` (224x224 native); output ``(N, num_classes)``.")
    return register(name)(builder)


resnet18 = _make("resnet18", "basic", (2, 2, 2, 2), "11,689,512")
resnet34 = _make("resnet34", "basic", (3, 4, 6, 3), "21,797,672")
resnet50 = _make("resnet50", "bottleneck", (3, 4, 6, 3), "25,557,032")
resnet101 = _make("resnet101", "bottleneck", (3, 4, 23, 3), "44,549,160")
resnet152 = _make("resnet152", "bottleneck", (3, 8, 36, 3), "60,192,808")


def _cifar_resnet(n: int, num_classes: int, in_channels: int, shortcut: str, rng, dtype) -> Sequential:
    if shortcut not in ("A", "B"):
        raise value_error("resnet (CIFAR)", "shortcut must be 'A' (zero-padding identity) or 'B' (projection)",
                          shortcut=shortcut)
    rng = np.random.default_rng() if rng is None else rng
    parts = OrderedDict(
        conv1=Conv2d(in_channels, 16, 3, padding=1, bias=False, rng=rng, dtype=dtype),  # (N, 16, 32, 32)
        bn1=BatchNorm2d(16, dtype=dtype),
        relu=ReLU())
    cin = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        blocks = []
        for b in range(n):
            stride = 2 if (b == 0 and stage > 1) else 1
            blocks.append(basic_block(cin, width, stride, shortcut, rng, dtype))
            cin = width
        parts[f"layer{stage}"] = Sequential(*blocks)                       # 32, 16, 8 at 32x32
    parts["avgpool"] = AdaptiveAvgPool2d(1)                                # (N, 64, 1, 1)
    parts["flatten"] = Flatten()
    parts["fc"] = Linear(64, num_classes, rng=rng, dtype=dtype)
    return Sequential(parts)


def _make_cifar(name: str, n: int, params: str, params_b: str):
    def builder(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", *,
                rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
        return _cifar_resnet(n, num_classes, in_channels, shortcut, rng, dtype)
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{name}: He et al. 2015 section 4.2, n={n} ({6 * n + 2} layers); {params} parameters "
                       f"with shortcut='A' (parameter-free) and 10 classes, {params_b} with shortcut='B'.\n\n"
                       "Shape: input ``(N, in_channels, H, W)`` (32x32 native, 28x28 works); output "
                       "``(N, num_classes)``.")
    return register(name)(builder)


resnet20 = _make_cifar("resnet20", 3, "269,722", "272,474")
resnet32 = _make_cifar("resnet32", 5, "464,154", "466,906")
resnet56 = _make_cifar("resnet56", 9, "853,018", "855,770")

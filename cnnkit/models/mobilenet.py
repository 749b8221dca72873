"""MobileNets: depthwise-separable convolutions for small, fast models.

``mobilenet_v1``: Howard et al. 2017, "MobileNets: Efficient Convolutional Neural
Networks for Mobile Vision Applications" (arXiv:1704.04861), table 1: a full 3x3 conv
with 32 maps and stride 2, then 13 depthwise-separable blocks (3x3 depthwise conv + BN +
ReLU, 1x1 pointwise conv + BN + ReLU; figure 3), average pooling, FC. BN follows every
conv, so the convs have no bias (BN's shift replaces it). Table 1 prints the 13th
depthwise conv as "s2" on a 7x7 input with a 7x7 output; that is a known typo and it
has stride 1 here (as in every released implementation). Width multiplier ``alpha``
(section 3.3): every layer has ``int(alpha * C)`` maps; resolution multiplier ``rho``
(section 3.4): the native input is ``round(224 * rho)`` (``model.input_size``; 0.714
gives 160, table 7). ``rho`` changes no parameter: the average pool is global
(``AdaptiveAvgPool2d(1)``, the paper's 7x7 pool at 224), so any input size >= 32 runs.

Counts at ``alpha=1``, 1000 classes: 4,231,976 trainable (4,210,088 conv + FC weights
and biases, plus 21,888 BN gammas and betas), 568,740,352 multiply-adds at 224.

``mobilenet_v2``: Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (arXiv:1801.04381), table 2, in torchvision's layout: ``features.0``
(conv 3x3/2 + BN + ReLU6), ``features.1``-``features.17`` InvertedResidual blocks
(``conv.0.0``/``conv.0.1`` the 1x1 expansion conv/BN, ``conv.1.*`` the 3x3 depthwise
conv/BN, ``conv.2`` the linear 1x1 projection, ``conv.3`` its BN; the first block,
with expansion 1, has no expansion conv), ``features.18`` (1x1 conv to 1280 + BN +
ReLU6), global average pool, ``classifier.0`` Dropout(0.2), ``classifier.1`` Linear.
Each block is a :class:`cnnkit.nn.Graph`; stride-1 blocks with equal in/out channels
add the identity shortcut. 3,504,872 parameters at 1000 classes.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._errors import value_error
from ..nn.activation import ReLU, ReLU6
from ..nn.containers import Add, Graph, Sequential
from ..nn.conv import Conv2d
from ..nn.dropout import Dropout
from ..nn.linear import Flatten, Linear
from ..nn.norm import BatchNorm2d
from ..nn.pool import AdaptiveAvgPool2d
from . import register

# Table 1 of Howard et al. after the first conv: (output channels, stride of the depthwise conv)
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _conv_bn_act(cin, cout, k, stride, groups, act, rng, dtype) -> Sequential:
    return Sequential(Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False,
                             rng=rng, dtype=dtype),
                      BatchNorm2d(cout, dtype=dtype), act())


@register("mobilenet_v1")
def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3, alpha: float = 1.0, rho: float = 1.0, *,
                 rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
    """MobileNet v1 (Howard et al. 2017, table 1) with width multiplier ``alpha`` and
    resolution multiplier ``rho``.

    ``features.0`` is the first conv (``features.0.0`` conv, ``.1`` BN, ``.2`` ReLU);
    ``features.1``-``features.13`` the depthwise-separable blocks (``.0`` depthwise conv,
    ``.1`` BN, ``.2`` ReLU, ``.3`` pointwise conv, ``.4`` BN, ``.5`` ReLU).

    Shape: input ``(N, in_channels, S, S)`` with ``S = model.input_size = round(224 * rho)``
    natively; ``features`` gives ``(N, int(1024 * alpha), S/32, S/32)``; output ``(N, num_classes)``.
    """
    if not 0 < alpha <= 4 or not 0 < rho <= 4:
        raise value_error("mobilenet_v1", "alpha and rho must be in (0, 4]", alpha=alpha, rho=rho)
    rng = np.random.default_rng() if rng is None else rng
    width = lambda c: max(1, int(c * alpha))  # noqa: E731  (section 3.3: alpha * M maps)
    cin = width(32)
    layers = [_conv_bn_act(in_channels, cin, 3, 2, 1, ReLU, rng, dtype)]   # (N, 32a, S/2, S/2)
    for cout, stride in V1_BLOCKS:
        cout = width(cout)
        dw = _conv_bn_act(cin, cin, 3, stride, cin, ReLU, rng, dtype)      # depthwise: one filter per map
        pw = _conv_bn_act(cin, cout, 1, 1, 1, ReLU, rng, dtype)            # pointwise: mixes the maps
        layers.append(Sequential(*dw, *pw))
        cin = cout
    model = Sequential(OrderedDict(
        features=Sequential(*layers),                                      # (N, 1024a, S/32, S/32)
        avgpool=AdaptiveAvgPool2d(1),                                      # (N, 1024a, 1, 1)
        flatten=Flatten(),
        classifier=Linear(cin, num_classes, rng=rng, dtype=dtype)))
    model.input_size = int(round(224 * rho))
    return model


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's rounding of a channel count to a multiple of 8 (never below 90% of ``v``)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


# Table 2 of Sandler et al.: expansion t, output channels c, repeats n, first stride s
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))


def inverted_residual(cin: int, cout: int, stride: int, expand: int, rng, dtype) -> Graph:
    """[1x1 expand-BN-ReLU6], 3x3 depthwise-BN-ReLU6, 1x1 linear projection-BN, + x when
    ``stride == 1 and cin == cout`` (Sandler et al. figure 3b / table 1)."""
    hidden = int(round(cin * expand))
    layers = []
    if expand != 1:
        layers.append(_conv_bn_act(cin, hidden, 1, 1, 1, ReLU6, rng, dtype))
    layers += [_conv_bn_act(hidden, hidden, 3, stride, hidden, ReLU6, rng, dtype),
               Conv2d(hidden, cout, 1, bias=False, rng=rng, dtype=dtype), BatchNorm2d(cout, dtype=dtype)]
    g = Graph()
    g.add("conv", Sequential(*layers))
    if stride == 1 and cin == cout:
        g.add("add", Add(), inputs=["conv", "input"])
    return g


@register("mobilenet_v2")
def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.2,
                 *, rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
    """MobileNetV2 (Sandler et al. 2018, table 2) in torchvision's layout (module docstring).

    Shape: input ``(N, in_channels, 224, 224)`` natively; ``features`` gives ``(N, 1280, 7, 7)``;
    output ``(N, num_classes)``.
    """
    rng = np.random.default_rng() if rng is None else rng
    cin = _make_divisible(32 * width_mult)
    last = _make_divisible(1280 * max(1.0, width_mult))
    layers = [_conv_bn_act(in_channels, cin, 3, 2, 1, ReLU6, rng, dtype)]  # (N, 32, 112, 112)
    for t, c, n, s in V2_SETTINGS:
        cout = _make_divisible(c * width_mult)
        for i in range(n):
            layers.append(inverted_residual(cin, cout, s if i == 0 else 1, t, rng, dtype))
            cin = cout
    layers.append(_conv_bn_act(cin, last, 1, 1, 1, ReLU6, rng, dtype))   # (N, 1280, 7, 7)
    return Sequential(OrderedDict(
        features=Sequential(*layers),
        avgpool=AdaptiveAvgPool2d(1),                                      # (N, 1280, 1, 1)
        flatten=Flatten(),
        classifier=Sequential(Dropout(dropout, rng=rng), Linear(last, num_classes, rng=rng, dtype=dtype))))

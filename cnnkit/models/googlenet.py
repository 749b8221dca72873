"""GoogLeNet (Szegedy et al. 2014/2015, "Going Deeper with Convolutions", arXiv:1409.4842).

``googlenet``: the paper's network (table 1, figure 3): conv 7x7/2 (64), max pool 3x3/2,
LRN, conv 1x1 (64), conv 3x3 (192), LRN, max pool 3x3/2, inception 3a-3b, max pool,
inception 4a-4e, max pool, inception 5a-5b, average pool 7x7/1, dropout 40%, FC. Every
conv has a bias and is followed by a ReLU (section 5: "All the convolutions, including
those inside the Inception modules, use rectified linear activation"). An inception
module (figure 2b) is a :class:`cnnkit.nn.Graph` of four branches joined by ``Concat``:
``branch1`` 1x1; ``branch2`` 1x1 reduce then 3x3; ``branch3`` 1x1 reduce then 5x5;
``branch4`` 3x3/1 max pool then the 1x1 "pool proj". The LRN settings, which the paper
does not give, are those of the authors' Caffe model (size 5, alpha 1e-4, beta 0.75,
k 1; Caffe and PyTorch both divide alpha by the size). The pools have padding 1 so that
224 -> 112 -> 56 -> 28 -> 14 -> 7 as in table 1.

``aux_logits=True`` adds both auxiliary classifiers of section 5 on top of inception
4a and 4d: average pool 5x5/3 (14x14 -> 4x4), 1x1 conv with 128 filters + ReLU, FC 1024
+ ReLU, dropout 70%, FC to the classes. In training mode such a model returns
``(logits, aux2_logits, aux1_logits)`` (torchvision's order) and its backward takes
three gradients (the paper weights the auxiliary losses by 0.3); in eval mode it
returns the main logits only, as at inference time in the paper.

``googlenet_torchvision``: torchvision's variant, with its key names: BasicConv2d
(``conv`` without bias, ``bn`` BatchNorm with eps 0.001, ReLU) everywhere, no LRN, a
3x3 conv in the "5x5" branch (``branch3``), max pools with ``ceil_mode=True`` (and a
2x2 ``maxpool4``), global average pooling, dropout 0.2; the auxiliary heads (when
``aux_logits=True``) pool adaptively to 4x4. torchvision's ``transform_input``
(re-normalizing inputs for the ported weights) is not part of the model here.

Parameters at 1000 classes: ``googlenet`` 6,998,552 (13,378,280 with the auxiliary
heads), ``googlenet_torchvision`` 6,624,904 (13,004,888 with them).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..nn.activation import ReLU
from ..nn.containers import Concat, Graph, Sequential
from ..nn.conv import Conv2d
from ..nn.dropout import Dropout
from ..nn.linear import Flatten, Linear
from ..nn.norm import BatchNorm2d, LocalResponseNorm
from ..nn.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from . import register

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION = OrderedDict(
    inception3a=(192, 64, 96, 128, 16, 32, 32),
    inception3b=(256, 128, 128, 192, 32, 96, 64),
    inception4a=(480, 192, 96, 208, 16, 48, 64),
    inception4b=(512, 160, 112, 224, 24, 64, 64),
    inception4c=(512, 128, 128, 256, 24, 64, 64),
    inception4d=(512, 112, 144, 288, 32, 64, 64),
    inception4e=(528, 256, 160, 320, 32, 128, 128),
    inception5a=(832, 256, 160, 320, 32, 128, 128),
    inception5b=(832, 384, 192, 384, 48, 128, 128))
POOL_AFTER = {"inception3b": "maxpool3", "inception4e": "maxpool4"}


class GoogLeNet(Graph):
    """A Graph whose auxiliary outputs exist in training mode only (see the module docstring)."""

    @property
    def output_names(self) -> tuple[str, ...]:
        names = Graph.output_names.fget(self)
        return names if self.training else names[:1]


def _conv(cin, cout, k, torchvision, rng, dtype, stride=1, padding=None) -> Sequential:
    """Paper: conv (with bias) + ReLU; torchvision: BasicConv2d = conv (no bias) + BN(eps 0.001) + ReLU."""
    padding = k // 2 if padding is None else padding
    conv = Conv2d(cin, cout, k, stride=stride, padding=padding, bias=not torchvision, rng=rng, dtype=dtype)
    if torchvision:
        return Sequential(OrderedDict(conv=conv, bn=BatchNorm2d(cout, eps=0.001, dtype=dtype), relu=ReLU()))
    return Sequential(OrderedDict(conv=conv, relu=ReLU()))


def inception(cin, n1, n3r, n3, n5r, n5, pool_proj, torchvision, rng, dtype) -> Graph:
    """Figure 2b: four branches on the same input, concatenated along channels.
    Output ``n1 + n3 + n5 + pool_proj`` maps of the input's size."""
    k = 3 if torchvision else 5
    g = Graph()
    g.add("branch1", _conv(cin, n1, 1, torchvision, rng, dtype), inputs="input")
    g.add("branch2", Sequential(_conv(cin, n3r, 1, torchvision, rng, dtype),
                                _conv(n3r, n3, 3, torchvision, rng, dtype)), inputs="input")
    g.add("branch3", Sequential(_conv(cin, n5r, 1, torchvision, rng, dtype),
                                _conv(n5r, n5, k, torchvision, rng, dtype)), inputs="input")
    g.add("branch4", Sequential(MaxPool2d(3, stride=1, padding=1, ceil_mode=torchvision),
                                _conv(cin, pool_proj, 1, torchvision, rng, dtype)), inputs="input")
    g.add("concat", Concat(1), inputs=["branch1", "branch2", "branch3", "branch4"])
    return g


def aux_head(cin, num_classes, torchvision, rng, dtype) -> Sequential:
    """Section 5's auxiliary classifier: pool to 4x4, 1x1 conv 128, FC 1024, dropout 0.7, FC."""
    return Sequential(OrderedDict(
        avgpool=AdaptiveAvgPool2d(4) if torchvision else AvgPool2d(5, stride=3),   # (N, C, 4, 4) from 14x14
        conv=_conv(cin, 128, 1, torchvision, rng, dtype),                           # (N, 128, 4, 4)
        flatten=Flatten(),                                                          # (N, 2048)
        fc1=Linear(2048, 1024, rng=rng, dtype=dtype),
        relu=ReLU(),
        dropout=Dropout(0.7, rng=rng),
        fc2=Linear(1024, num_classes, rng=rng, dtype=dtype)))


def _googlenet(num_classes, in_channels, aux_logits, torchvision, rng, dtype) -> GoogLeNet:
    rng = np.random.default_rng() if rng is None else rng
    tv = torchvision
    pool = lambda k=3: MaxPool2d(k, stride=2, ceil_mode=True) if tv else MaxPool2d(k, stride=2, padding=1)  # noqa: E731
    g = GoogLeNet()
    g.add("conv1", _conv(in_channels, 64, 7, tv, rng, dtype, stride=2, padding=3))  # (N, 64, 112, 112)
    g.add("maxpool1", pool())                                                       # (N, 64, 56, 56)
    if not tv:
        g.add("lrn1", LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
    g.add("conv2", _conv(64, 64, 1, tv, rng, dtype))
    g.add("conv3", _conv(64, 192, 3, tv, rng, dtype))                              # (N, 192, 56, 56)
    if not tv:
        g.add("lrn2", LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
    g.add("maxpool2", pool())                                                       # (N, 192, 28, 28)
    for name, spec in INCEPTION.items():
        g.add(name, inception(*spec, tv, rng, dtype))                               # 28, 28, 14 x5, 7, 7
        if name in POOL_AFTER:
            g.add(POOL_AFTER[name], pool(2 if tv and name == "inception4e" else 3))
    main_input = g.nodes[-1][0]                                                     # (N, 1024, 7, 7)
    if aux_logits:  # added here so that the keys follow torchvision's order; they read 4a and 4d
        g.add("aux1", aux_head(512, num_classes, tv, rng, dtype), inputs="inception4a")
        g.add("aux2", aux_head(528, num_classes, tv, rng, dtype), inputs="inception4d")
    g.add("avgpool", AdaptiveAvgPool2d(1) if tv else AvgPool2d(7, stride=1), inputs=main_input)  # (N, 1024, 1, 1)
    g.add("flatten", Flatten())
    g.add("dropout", Dropout(0.2 if tv else 0.4, rng=rng))
    g.add("fc", Linear(1024, num_classes, rng=rng, dtype=dtype))
    if aux_logits:
        g.set_outputs("fc", "aux2", "aux1")
    return g


@register("googlenet")
def googlenet(num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False, *,
              rng: np.random.Generator | None = None, dtype=np.float32) -> GoogLeNet:
    """GoogLeNet as in Szegedy et al. 2015, table 1 (module docstring); 6,998,552 parameters,
    13,378,280 with ``aux_logits=True``.

    Shape: input ``(N, in_channels, 224, 224)``; output ``(N, num_classes)`` (in training
    mode with ``aux_logits``, a tuple of three such arrays).
    """
    return _googlenet(num_classes, in_channels, aux_logits, False, rng, dtype)


@register("googlenet_torchvision")
def googlenet_torchvision(num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False, *,
                          rng: np.random.Generator | None = None, dtype=np.float32) -> GoogLeNet:
    """torchvision's GoogLeNet (BN, no conv biases, 3x3 "5x5" branch, ceil-mode pools) with
    its ``state_dict`` keys; 6,624,904 parameters without the auxiliary heads.

    Shape: input ``(N, in_channels, 224, 224)``; output ``(N, num_classes)``.
    """
    return _googlenet(num_classes, in_channels, aux_logits, True, rng, dtype)

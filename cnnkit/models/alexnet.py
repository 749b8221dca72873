"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, "ImageNet classification with deep
convolutional neural networks", section 3, Fig. 2), and torchvision's variant.

``alexnet``: the paper's network. Five convolutions with 96-256-384-384-256 filters;
conv2, conv4 and conv5 are split in two groups (the two GPUs of section 3.2: a filter
sees only the maps on its own GPU), conv3 sees both towers (groups=1); ReLU after
every layer (3.1); local response normalization after the ReLUs of conv1 and conv2
(3.3: k=2, n=5, alpha=1e-4, beta=0.75; PyTorch divides alpha by n, so the layer gets
``alexnet_alpha_to_torch(1e-4, 5) = 5e-4``); overlapping max pooling 3/2 (3.4) after
both normalizations and after conv5; dropout 0.5 before the first two FC layers (4.2).

Deviation: the paper says 224x224 inputs, but with an 11x11 stride-4 conv1 only
227x227 gives its 55x55 maps (``(227 - 11)/4 + 1 = 55``), so the native size is 227.
conv1's 96 filters see all input channels (on two GPUs, 48 each: a groups=1 conv).

Shapes at 227: 227 -conv1-> 55 -pool-> 27 -conv2-> 27 -pool-> 13 -conv3,4,5-> 13
-pool-> 6; 256*6*6 = 9,216 features.

Parameters (``W = K*K*C/groups*N``, ``B = N``), 3 input channels, 1000 classes:

    layer   groups=2 (paper)                groups=1 (lecture, single tower)
    conv1   11*11*3*96 + 96    =    34,944       34,944
    conv2   5*5*48*256 + 256   =   307,456      614,656
    conv3   3*3*256*384 + 384  =   885,120      885,120
    conv4   3*3*192*384 + 384  =   663,936    1,327,488
    conv5   3*3*192*256 + 256  =   442,624      884,992
    fc6     9216*4096 + 4096   = 37,752,832  37,752,832
    fc7     4096*4096 + 4096   = 16,781,312  16,781,312
    fc8     4096*1000 + 1000   =  4,097,000   4,097,000
    total                        60,965,224  62,378,344

``alexnet_torchvision``: torchvision's ``AlexNet`` (after Krizhevsky's 2014 "One weird
trick" single-GPU net): 64-192-384-256-256 filters, conv1 padding 2, no LRN, no
groups, ``AdaptiveAvgPool2d((6, 6))`` and dropout before fc6 and fc7; 61,100,840
parameters, state_dict keys equal to torchvision's.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..functional.norm import alexnet_alpha_to_torch
from ..nn.activation import ReLU
from ..nn.containers import Sequential
from ..nn.conv import Conv2d
from ..nn.dropout import Dropout
from ..nn.linear import Flatten, Linear
from ..nn.norm import LocalResponseNorm
from ..nn.pool import AdaptiveAvgPool2d, MaxPool2d
from . import register


def _lrn() -> LocalResponseNorm:
    # section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75 (alpha in PyTorch's convention: 5e-4)
    return LocalResponseNorm(5, alpha=alexnet_alpha_to_torch(1e-4, 5), beta=0.75, k=2.0)


@register("alexnet")
def alexnet(num_classes: int = 1000, in_channels: int = 3, groups: int = 2, dropout: float = 0.5, *,
            rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
    """The paper's AlexNet (section 3); ``groups=1`` merges the two towers (the lecture's count).

    Children: ``features`` (0 conv1, 1 ReLU, 2 LRN, 3 pool, 4 conv2, 5 ReLU, 6 LRN, 7 pool,
    8 conv3, 9 ReLU, 10 conv4, 11 ReLU, 12 conv5, 13 ReLU, 14 pool), ``flatten``,
    ``classifier`` (0 Dropout, 1 fc6, 2 ReLU, 3 Dropout, 4 fc7, 5 ReLU, 6 fc8).

    Shape: input ``(N, in_channels, 227, 227)``, output ``(N, num_classes)`` logits.
    """
    rng = np.random.default_rng() if rng is None else rng
    if groups not in (1, 2):
        raise ValueError(f"alexnet: groups must be 1 (one tower) or 2 (the paper's two GPUs). "
                         f"Received: groups={groups!r}")

    def conv(cin, cout, k, stride=1, padding=0, g=1):
        return Conv2d(cin, cout, k, stride=stride, padding=padding, groups=g, rng=rng, dtype=dtype)

    return Sequential(OrderedDict(
        features=Sequential(
            conv(in_channels, 96, 11, stride=4), ReLU(), _lrn(), MaxPool2d(3, 2),       # (N, 96, 27, 27)
            conv(96, 256, 5, padding=2, g=groups), ReLU(), _lrn(), MaxPool2d(3, 2),     # (N, 256, 13, 13)
            conv(256, 384, 3, padding=1), ReLU(),                                       # both towers
            conv(384, 384, 3, padding=1, g=groups), ReLU(),
            conv(384, 256, 3, padding=1, g=groups), ReLU(), MaxPool2d(3, 2)),           # (N, 256, 6, 6)
        flatten=Flatten(),                                                              # (N, 9216)
        classifier=Sequential(
            Dropout(dropout, rng=rng), Linear(256 * 6 * 6, 4096, rng=rng, dtype=dtype), ReLU(),
            Dropout(dropout, rng=rng), Linear(4096, 4096, rng=rng, dtype=dtype), ReLU(),
            Linear(4096, num_classes, rng=rng, dtype=dtype))))


@register("alexnet_torchvision")
def alexnet_torchvision(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, *,
                        rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
    """torchvision's ``alexnet``: same children and state_dict keys (``features.0/3/6/8/10``,
    ``classifier.1/4/6``), so its weights load. ``AdaptiveAvgPool2d((6, 6))`` lets it take
    any input of at least 63x63; its native size is 224.

    Shape: input ``(N, in_channels, H, W)``, output ``(N, num_classes)`` logits.
    """
    rng = np.random.default_rng() if rng is None else rng

    def conv(cin, cout, k, stride=1, padding=0):
        return Conv2d(cin, cout, k, stride=stride, padding=padding, rng=rng, dtype=dtype)

    return Sequential(OrderedDict(
        features=Sequential(
            conv(in_channels, 64, 11, stride=4, padding=2), ReLU(), MaxPool2d(3, 2),
            conv(64, 192, 5, padding=2), ReLU(), MaxPool2d(3, 2),
            conv(192, 384, 3, padding=1), ReLU(),
            conv(384, 256, 3, padding=1), ReLU(),
            conv(256, 256, 3, padding=1), ReLU(), MaxPool2d(3, 2)),
        avgpool=AdaptiveAvgPool2d((6, 6)),
        flatten=Flatten(),                                                              # (N, 9216)
        classifier=Sequential(
            Dropout(dropout, rng=rng), Linear(256 * 6 * 6, 4096, rng=rng, dtype=dtype), ReLU(),
            Dropout(dropout, rng=rng), Linear(4096, 4096, rng=rng, dtype=dtype), ReLU(),
            Linear(4096, num_classes, rng=rng, dtype=dtype))))

"""VGG (Simonyan & Zisserman 2014, "Very deep convolutional networks for large-scale
image recognition", section 2 and Table 1), in torchvision's layout.

Configurations (Table 1; numbers are 3x3 conv widths, ``M`` a 2x2/2 max pool, ``1x1:N``
a 1x1 conv; every conv has stride 1, "same" padding and a ReLU):

    A      (11 weight layers)  64 M 128 M 256 256 M 512 512 M 512 512 M
    A-LRN  (11)                A with LRN after the first conv's ReLU
    B      (13)                64 64 M 128 128 M 256 256 M 512 512 M 512 512 M
    C      (16)                B with a third conv, 1x1, in each of the last three blocks
    D      (16)                B with a third 3x3 conv in each of the last three blocks
    E      (19)                B with a third and fourth 3x3 conv in the last three blocks

then FC-4096, FC-4096, FC-1000 (ReLU and dropout 0.5 after the first two, section 3.1).
Parameters at 224x224, 3 input channels, 1000 classes (conv ``W = K*K*C*N + N``, the
first FC layer reads 512*7*7 = 25,088 features):

    A 132,863,336   A-LRN 132,863,336   B 133,047,848   C 133,638,952
    D 138,357,544   E 143,667,240

Layout: torchvision's ``VGG`` (``features`` numbered 0, 1, ... over conv/ReLU/pool
[/BatchNorm] layers, ``avgpool = AdaptiveAvgPool2d((7, 7))``, ``classifier`` 0 Linear,
1 ReLU, 2 Dropout, 3 Linear, 4 ReLU, 5 Dropout, 6 Linear), so ``vgg11``, ``vgg13``,
``vgg16`` and ``vgg19`` (aliases of A, B, D, E) have torchvision's state_dict keys, and
``batch_norm=True`` gives ``vgg11_bn``'s layout (conv, BatchNorm2d, ReLU per layer; a
later addition, not in the paper). Deviations: the adaptive pool is torchvision's (it
is the identity at 224x224 and lets the nets take smaller inputs, down to 32x32);
A-LRN's normalization uses Krizhevsky et al.'s constants as section 2.1 says (k=2,
n=5, alpha=1e-4 i.e. 5e-4 in PyTorch's convention, beta=0.75).
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
from ..nn.norm import BatchNorm2d, LocalResponseNorm
from ..nn.pool import AdaptiveAvgPool2d, MaxPool2d
from . import register

# Table 1. Ints: 3x3 convs; (1, N): a 1x1 conv; "M": max pool; "LRN": local response norm.
CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (1, 256), "M", 512, 512, (1, 512), "M",
          512, 512, (1, 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def make_features(config: list, in_channels: int, batch_norm: bool, rng, dtype) -> Sequential:
    """torchvision's ``make_layers``: conv[-BN]-ReLU per number, MaxPool2d(2, 2) per ``M``."""
    layers, c = [], in_channels
    for item in config:
        if item == "M":
            layers.append(MaxPool2d(2, 2))
        elif item == "LRN":
            layers.append(LocalResponseNorm(5, alpha=alexnet_alpha_to_torch(1e-4, 5), beta=0.75, k=2.0))
        else:
            k, out = item if isinstance(item, tuple) else (3, item)
            layers.append(Conv2d(c, out, k, padding=k // 2, rng=rng, dtype=dtype))
            if batch_norm:
                layers.append(BatchNorm2d(out, dtype=dtype))
            layers.append(ReLU())
            c = out
    return Sequential(*layers)


def vgg(config: str, num_classes: int, in_channels: int, batch_norm: bool, dropout: float, rng, dtype) -> Sequential:
    """A VGG of configuration ``config`` (a key of ``CONFIGS``) in torchvision's layout."""
    rng = np.random.default_rng() if rng is None else rng
    return Sequential(OrderedDict(
        features=make_features(CONFIGS[config], in_channels, batch_norm, rng, dtype),   # (N, 512, 7, 7) at 224
        avgpool=AdaptiveAvgPool2d((7, 7)),
        flatten=Flatten(),                                                             # (N, 25088)
        classifier=Sequential(
            Linear(512 * 7 * 7, 4096, rng=rng, dtype=dtype), ReLU(), Dropout(dropout, rng=rng),
            Linear(4096, 4096, rng=rng, dtype=dtype), ReLU(), Dropout(dropout, rng=rng),
            Linear(4096, num_classes, rng=rng, dtype=dtype))))


def _builder(name: str, config: str, doc: str):
    def build(num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, dropout: float = 0.5, *,
              rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
        return vgg(config, num_classes, in_channels, batch_norm, dropout, rng, dtype)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"VGG configuration {config} (Simonyan & Zisserman 2014, Table 1){doc}, in torchvision's "
                     "layout; ``batch_norm=True`` inserts BatchNorm2d after every conv (torchvision's _bn "
                     "variants).\n\n    Shape: input ``(N, in_channels, H, W)`` with ``H, W >= 32`` (native "
                     "224), output ``(N, num_classes)`` logits.\n    ")
    return register(name)(build)


vgg_a = _builder("vgg_a", "A", "")
vgg_a_lrn = _builder("vgg_a_lrn", "A-LRN", ", LRN after the first conv")
vgg_b = _builder("vgg_b", "B", "")
vgg_c = _builder("vgg_c", "C", ", 1x1 convs ending the last three blocks")
vgg_d = _builder("vgg_d", "D", "")
vgg_e = _builder("vgg_e", "E", "")
vgg11 = _builder("vgg11", "A", " (torchvision's name)")
vgg13 = _builder("vgg13", "B", " (torchvision's name)")
vgg16 = _builder("vgg16", "D", " (torchvision's name)")
vgg19 = _builder("vgg19", "E", " (torchvision's name)")

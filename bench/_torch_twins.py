"""PyTorch twins of cnnkit zoo models for the benchmarks: the same layers with the same
``state_dict`` keys, so cnnkit's weights load strictly. Written from the papers'
tables (and cnnkit's documented choices), not generated from cnnkit's code.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


class _CifarBlock(nn.Module):
    """He et al. 2016, section 4.2: two 3x3 conv-BN, identity shortcut; where the shape
    changes, option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.stride != 1 or self.extra:
            before = self.extra // 2
            shortcut = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, before, self.extra - before))
        return F.relu(out + shortcut)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    layers = OrderedDict(conv1=nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), bn1=nn.BatchNorm2d(16),
                         relu=nn.ReLU())
    cin = 16
    for s, width in enumerate((16, 32, 64), start=1):
        blocks = []
        for b in range(3):
            blocks.append(_CifarBlock(cin, width, 2 if b == 0 and s > 1 else 1))
            cin = width
        layers[f"layer{s}"] = nn.Sequential(*blocks)
    layers.update(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(64, num_classes))
    return nn.Sequential(layers)


def _cbr(cin, cout, k, stride, groups):
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """Howard et al. 2017, table 1: a 3x3 s2 conv, then 13 depthwise-separable blocks."""
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    features = [nn.Sequential(*_cbr(in_channels, 32, 3, 2, 1))]
    cin = 32
    for cout, stride in blocks:
        features.append(nn.Sequential(*_cbr(cin, cin, 3, stride, cin), *_cbr(cin, cout, 1, 1, 1)))
        cin = cout
    return nn.Sequential(OrderedDict(features=nn.Sequential(*features), avgpool=nn.AdaptiveAvgPool2d(1),
                                     flatten=nn.Flatten(), classifier=nn.Linear(1024, num_classes)))


def cnn_bn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """[conv3x3-BN-ReLU x2, max pool] with 32 then 64 maps, Dropout-FC(256)-ReLU-Dropout-FC."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    features = block(in_channels, 32) + block(32, 32) + [nn.MaxPool2d(2)] + block(32, 64) + block(64, 64) \
        + [nn.MaxPool2d(2)]
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(*features), avgpool=nn.AdaptiveAvgPool2d(7), flatten=nn.Flatten(),
        classifier=nn.Sequential(nn.Dropout(0.25), nn.Linear(64 * 49, 256), nn.ReLU(), nn.Dropout(0.25),
                                 nn.Linear(256, num_classes))))


TWINS = {"resnet20": resnet20, "mobilenet_v1": mobilenet_v1, "cnn_bn": cnn_bn}

__all__ = ["TWINS", "torch"]

"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied
to document recognition", Fig. 2), here in its modern form.

``lenet5_modern`` keeps the paper's layout (C1 6@5x5, S2, C3 16@5x5, S4, F5 120,
F6 84, output) and swaps in today's parts: ReLU for the scaled tanh, max pooling
for the trainable subsampling, full C3 connectivity for the paper's partial table,
and a linear layer read by softmax cross-entropy for the RBF output units. C1 pads
by 2, so a 28x28 MNIST image sees the 32x32 field the paper used.

Shapes for a 28x28 input (``O = (I - K + 2P)/S + 1``):
    C1 conv 5x5 pad 2: 28 -> 28, 6 maps      S2 max 2x2: 28 -> 14
    C3 conv 5x5:       14 -> 10, 16 maps     S4 max 2x2: 10 -> 5      16*5*5 = 400
For 32x32: 32 -> 32 -> 16 -> 12 -> 6, and ``AdaptiveAvgPool2d(5)`` averages the
6x6 maps to 5x5 (on 28x28 inputs it is the identity), as torchvision's AlexNet and
VGG do, so one model takes both sizes and the classifier always sees 400 features.

Trainable parameters (``W = K*K*C*N``, ``B = N``), ``in_channels=1``, 10 classes:
    C1 5*5*1*6 + 6 = 156        C3 5*5*6*16 + 16 = 2,416
    F5 400*120 + 120 = 48,120   F6 120*84 + 84 = 10,164     out 84*10 + 10 = 850
    total 61,706
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..nn.activation import ReLU
from ..nn.containers import Sequential
from ..nn.conv import Conv2d
from ..nn.linear import Flatten, Linear
from ..nn.pool import AdaptiveAvgPool2d, MaxPool2d
from . import register


@register("lenet5_modern")
def lenet5_modern(num_classes: int = 10, in_channels: int = 1, *,
                  rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
    """LeNet-5 with ReLU, max pooling and a softmax classifier; 28x28 or 32x32 inputs.

    Children: ``features`` (conv/ReLU/pool x2), ``avgpool``, ``flatten``,
    ``classifier`` (Linear 400-120, ReLU, Linear 120-84, ReLU, Linear 84-num_classes),
    so ``state_dict`` keys are ``features.0.weight`` ... ``classifier.4.bias``.

    Shape: input ``(N, in_channels, H, W)`` with ``H, W >= 28`` (C3 must leave at
    least 5x5 maps before the adaptive pool), output ``(N, num_classes)`` logits.
    """
    rng = np.random.default_rng() if rng is None else rng
    return Sequential(OrderedDict(
        features=Sequential(
            Conv2d(in_channels, 6, 5, padding=2, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2),  # C1, S2
            Conv2d(6, 16, 5, rng=rng, dtype=dtype), ReLU(), MaxPool2d(2)),                     # C3, S4
        avgpool=AdaptiveAvgPool2d(5),          # (N, 16, 5, 5) from 28x28 or 32x32 inputs
        flatten=Flatten(),                     # (N, 400)
        classifier=Sequential(
            Linear(16 * 5 * 5, 120, rng=rng, dtype=dtype), ReLU(),                             # F5
            Linear(120, 84, rng=rng, dtype=dtype), ReLU(),                                     # F6
            Linear(84, num_classes, rng=rng, dtype=dtype))))                                   # output

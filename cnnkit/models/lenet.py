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


# ---- the original LeNet-5 (LeCun et al. 1998, section II.B) -------------------------------
# Table I: the S2 maps (0-5) each C3 map (0-15) reads. Maps 0-5 see 3 neighbouring maps,
# 6-11 four neighbouring maps, 12-14 four non-neighbouring ones, 15 all six: 60 kernels.
C3_CONNECTIONS = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# The RBF prototypes: stylized 7-wide x 12-high bitmaps of the digits 0-9 ('#' = +1,
# '.' = -1), in the spirit of the paper's Fig. 3 (the paper drew the whole ASCII set).
DIGIT_BITMAPS = {
    0: """
..###..
.#...#.
#.....#
#.....#
#.....#
#.....#
#.....#
#.....#
#.....#
#.....#
.#...#.
..###..""",
    1: """
...#...
..##...
.#.#...
...#...
...#...
...#...
...#...
...#...
...#...
...#...
...#...
.#####.""",
    2: """
.#####.
#.....#
......#
......#
.....#.
....#..
...#...
..#....
.#.....
#......
#......
#######""",
    3: """
.#####.
#.....#
......#
......#
......#
..####.
......#
......#
......#
......#
#.....#
.#####.""",
    4: """
.....#.
....##.
...#.#.
..#..#.
.#...#.
#....#.
#######
.....#.
.....#.
.....#.
.....#.
.....#.""",
    5: """
#######
#......
#......
#......
######.
......#
......#
......#
......#
......#
#.....#
.#####.""",
    6: """
..####.
.#.....
#......
#......
#......
######.
#.....#
#.....#
#.....#
#.....#
#.....#
.#####.""",
    7: """
#######
......#
......#
.....#.
.....#.
....#..
....#..
...#...
...#...
..#....
..#....
..#....""",
    8: """
.#####.
#.....#
#.....#
#.....#
.#...#.
..###..
.#...#.
#.....#
#.....#
#.....#
#.....#
.#####.""",
    9: """
.#####.
#.....#
#.....#
#.....#
#.....#
.######
......#
......#
......#
......#
.....#.
.####..""",
}


def digit_prototypes() -> np.ndarray:
    """The 10 fixed RBF prototypes, ``(10, 84)`` of +1/-1: digit ``d``'s 12x7 bitmap, row-major."""
    rows = []
    for d in range(10):
        lines = DIGIT_BITMAPS[d].strip().splitlines()
        if len(lines) != 12 or any(len(line) != 7 for line in lines):
            raise RuntimeError(f"lenet5: the bitmap of digit {d} is not 12 rows of 7 characters")
        rows.append([1.0 if ch == "#" else -1.0 for line in lines for ch in line])
    return np.array(rows)


@register("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1, output: str = "logits", *,
           rng: np.random.Generator | None = None, dtype=np.float32) -> Sequential:
    """LeNet-5 as LeCun, Bottou, Bengio and Haffner (1998) describe it (section II.B, Fig. 2).

    Layers (every weighted sum up to F6 goes through ``f(a) = 1.7159 tanh(2a/3)``,
    section II.B and Appendix A):

        pad      28x28 inputs are zero-padded by 2 to the paper's 32x32 field (PadTo)
        C1       conv 6@5x5 (32 -> 28)                         5*5*1*6 + 6      =    156
        S2       trainable 2x2 subsampling (28 -> 14)          6 coeff + 6 bias =     12
        C3       sparse conv 16@5x5, Table I (14 -> 10)        60*5*5 + 16      =  1,516
        S4       trainable 2x2 subsampling (10 -> 5)           16 + 16          =     32
        C5       conv 120@5x5 (5 -> 1)                         5*5*16*120 + 120 = 48,120
        F6       linear 120 -> 84                              120*84 + 84      = 10,164
        output   10 Euclidean RBF units, fixed 7x12 bitmaps    840 fixed (a buffer)
        trainable total (in_channels=1)                                         = 60,000

    Children: ``features`` (C1 ... C5 with their squashings), ``flatten``, ``classifier``
    (F6, its squashing, the RBF layer), behind ``pad``.

    ``output="logits"`` (the default) returns ``-y``, the negated RBF distances, so the
    model plugs into ``CrossEntropyLoss`` like every other zoo model (the largest logit
    is the nearest prototype); ``output="rbf"`` returns the paper's distances
    ``y_i = sum_j (x_j - w_ij)^2`` (smaller = better). Deviation: the paper trained with
    its own MAP criterion (eq. 9) and a stochastic diagonal Levenberg-Marquardt method;
    here the loss and optimizer are the caller's choice.

    ``num_classes != 10``: the prototypes are no longer digits; they are random +1/-1
    84-vectors drawn from ``rng`` (the paper's ASCII-set output used 96 such bitmaps).
    ``in_channels`` other than 1 changes only C1's parameter count.

    Shape: input ``(N, in_channels, H, W)`` with ``H, W`` up to 32 (28x28 and 32x32 as
    intended); output ``(N, num_classes)``.
    """
    from ..nn.activation import ScaledTanh
    from ..nn.lenet_layers import EuclideanRBF, PadTo, SparseConv2d, Subsampling

    if output not in ("logits", "rbf"):
        raise ValueError(f"lenet5: output must be 'logits' or 'rbf'. Received: output={output!r}")
    rng = np.random.default_rng() if rng is None else rng
    if num_classes == 10:
        prototypes = digit_prototypes()
    else:
        prototypes = rng.choice([-1.0, 1.0], size=(int(num_classes), 84))
    return Sequential(OrderedDict(
        pad=PadTo(32),
        features=Sequential(
            Conv2d(in_channels, 6, 5, rng=rng, dtype=dtype), ScaledTanh(),                 # C1: (N, 6, 28, 28)
            Subsampling(6, rng=rng, dtype=dtype), ScaledTanh(),                            # S2: (N, 6, 14, 14)
            SparseConv2d(6, 16, 5, [list(c) for c in C3_CONNECTIONS], rng=rng, dtype=dtype),
            ScaledTanh(),                                                                  # C3: (N, 16, 10, 10)
            Subsampling(16, rng=rng, dtype=dtype), ScaledTanh(),                           # S4: (N, 16, 5, 5)
            Conv2d(16, 120, 5, rng=rng, dtype=dtype), ScaledTanh()),                       # C5: (N, 120, 1, 1)
        flatten=Flatten(),                                                                 # (N, 120)
        classifier=Sequential(
            Linear(120, 84, rng=rng, dtype=dtype), ScaledTanh(),                           # F6
            EuclideanRBF(84, prototypes, negate=(output == "logits"), dtype=dtype))))      # output

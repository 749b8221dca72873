"""Default initialization, as PyTorch's ``reset_parameters`` of Conv2d and Linear.

``kaiming_uniform_(w, a=sqrt(5))`` gives the bound ``gain * sqrt(3 / fan_in)`` with
``gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)``, i.e. ``1 / sqrt(fan_in)``; the bias is
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` too. ``fan_in = C_in/groups * kH * kW`` for a
conv and ``in_features`` for a linear layer.
"""

from __future__ import annotations

import math

import numpy as np


def uniform_fan_in(shape, fan_in: int, rng: np.random.Generator | None, dtype) -> np.ndarray:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` of ``shape`` (zeros-safe for fan_in == 0)."""
    rng = np.random.default_rng() if rng is None else rng
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return rng.uniform(-bound, bound, size=shape).astype(dtype)

"""Inverted dropout (Srivastava et al. 2014; the scaling at training time as PyTorch).

In training each element is kept with probability ``1 - p`` and scaled by
``1 / (1 - p)``, so that ``E[y] = x`` and evaluation is the identity. The mask comes
only from the ``numpy.random.Generator`` passed in: the same seed gives the same mask.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._errors import type_error, value_error
from .activation import _check_dy, _check_float


def check_dropout_p(p, where: str) -> float:
    """``p`` is a real number in ``[0, 1]`` (as ``torch.nn.Dropout``)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise type_error(where, "dropout probability p must be a real number", p=p)
    if not 0.0 <= float(p) <= 1.0:  # also rejects NaN
        raise value_error(where, "dropout probability p must be between 0 and 1", p=p)
    return float(p)


def dropout_forward(x: np.ndarray, p: float = 0.5, training: bool = True,
                    rng: np.random.Generator | None = None, inplace: bool = False):
    """``y = x * keep / (1 - p)`` with ``keep ~ Bernoulli(1 - p)`` element-wise.

    Identity (and no random draw) when ``training`` is False, ``p == 0`` or ``x`` is
    empty; all zeros when ``p == 1``, as PyTorch. ``rng=None`` draws from a fresh,
    unseeded ``np.random.default_rng()`` (not reproducible). The cache is the mask.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """
    _check_float(x, "dropout")
    p = check_dropout_p(p, "dropout")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise type_error("dropout", "rng must be a numpy.random.Generator or None",
                         rng=type(rng).__name__)
    if not training or p == 0.0 or x.size == 0:
        return x, (None, x.shape, x.dtype)
    rng = np.random.default_rng() if rng is None else rng
    keep = rng.random(x.shape, dtype=np.float32) >= p     # P(keep) = 1 - p; False for p = 1
    scale = x.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))
    mask = keep * scale                                    # 0 or 1/(1-p), x's dtype
    y = np.multiply(x, mask, out=x if inplace else None)
    return y, (mask, x.shape, x.dtype)


def dropout_backward(dy: np.ndarray, cache) -> np.ndarray:
    """``dx = dy * keep / (1 - p)``, the same mask as the forward (``dy`` in eval)."""
    mask, shape, dtype = cache
    _check_dy(dy, shape, dtype, "dropout_backward")
    return dy if mask is None else dy * mask


def dropout(x: np.ndarray, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | None = None, inplace: bool = False) -> np.ndarray:
    return dropout_forward(x, p, training, rng, inplace)[0]

"""``Dropout``: inverted dropout, active only in training mode (``layer.train()``)."""

from __future__ import annotations

import numpy as np

from .._errors import type_error
from ..functional import regularization as F
from ..functional.activation import _check_float
from .module import Layer


class Dropout(Layer):
    """In training, zero each element with probability ``p`` and scale the kept ones by
    ``1 / (1 - p)`` (Srivastava et al. 2014, scaled at training time as PyTorch); in
    eval mode the identity.

    The mask comes only from ``rng`` (a ``numpy.random.Generator``): the same seed
    gives the same masks. ``rng=None`` creates an unseeded generator.

    Shape: input ``(*)``, output ``(*)``, same shape.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *,
                 rng: np.random.Generator | None = None):
        super().__init__()
        name = type(self).__name__
        F.check_dropout_p(p, name)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise type_error(name, "rng must be a numpy.random.Generator or None",
                             rng=type(rng).__name__)
        self.p = p                    # as given, so that the repr is PyTorch's
        self.inplace = bool(inplace)
        self.rng = np.random.default_rng() if rng is None else rng

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_float(x, self.label())
        y, self._cache = F.dropout_forward(x, self.p, self.training, self.rng, self.inplace)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return F.dropout_backward(dy, self._take_cache())

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

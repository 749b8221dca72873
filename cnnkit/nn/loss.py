"""Loss layers: ``value = loss(input, target)``, then ``dx = loss.backward()``.

A loss layer ends the forward chain and starts the backward one:
``model.backward(loss.backward())``. ``backward(grad=None)`` returns
``d loss / d input``; ``grad`` scales it (a scalar), or for ``reduction='none'`` is
the gradient of each per-position loss (an array of the loss's shape; None means
ones, i.e. the gradient of the loss's sum).
"""

from __future__ import annotations

import numpy as np

from ..functional import loss as F
from ..functional._check import check_array
from .module import Layer


class _Loss(Layer):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        F.check_loss_options(type(self).__name__, reduction=reduction)
        self.reduction = reduction

    def backward(self, grad=None) -> np.ndarray:
        return self._backward(1.0 if grad is None else grad, self._take_cache())


class _WeightedLoss(_Loss):
    def __init__(self, weight: np.ndarray | None = None, reduction: str = "mean"):
        super().__init__(reduction)
        if weight is not None:
            check_array(weight, type(self).__name__, ndim=1, name="weight", layout="C")
        self.register_buffer("weight", weight)   # saved in state_dict, as PyTorch


class CrossEntropyLoss(_WeightedLoss):
    """Softmax cross-entropy from logits (``torch.nn.CrossEntropyLoss``); see
    ``cnnkit.functional.loss.cross_entropy_forward`` for the formula. The gradient is
    ``softmax(x) - onehot(y)`` (the lecture's ``delta = a - y``), divided by ``N`` for
    the mean.

    Shape:
        input ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; target ``(N,)``,
        ``(N, d1, ...)`` or ``()`` of integer class indices, or float class
        probabilities of the input's shape. Output: a scalar, or ``(N, d1, ...)`` for
        ``reduction='none'``.
    """

    _backward = staticmethod(F.cross_entropy_backward)

    def __init__(self, weight: np.ndarray | None = None, *, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(weight, reduction)
        _, self.ignore_index, _ = F.check_loss_options(
            type(self).__name__, ignore_index=ignore_index, label_smoothing=label_smoothing)
        self.label_smoothing = label_smoothing

    def forward(self, input: np.ndarray, target: np.ndarray):
        try:
            value, self._cache = F.cross_entropy_forward(
                input, target, self.weight, ignore_index=self.ignore_index,
                reduction=self.reduction, label_smoothing=self.label_smoothing)
        except (ValueError, TypeError) as e:
            raise type(e)(_relabel(str(e), "cross_entropy", self.label())) from None
        return value


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (``torch.nn.NLLLoss``):
    ``loss_n = -weight[y_n] * input[n, y_n]``; use after ``LogSoftmax(dim=1)``.

    Shape:
        input ``(N, C)``, ``(N, C, d1, ...)`` or ``(C,)``; target ``(N,)``,
        ``(N, d1, ...)`` or ``()`` of integer class indices. Output: a scalar, or
        ``(N, d1, ...)`` for ``reduction='none'``.
    """

    _backward = staticmethod(F.nll_loss_backward)

    def __init__(self, weight: np.ndarray | None = None, *, ignore_index: int = -100,
                 reduction: str = "mean"):
        super().__init__(weight, reduction)
        _, self.ignore_index, _ = F.check_loss_options(type(self).__name__,
                                                       ignore_index=ignore_index)

    def forward(self, input: np.ndarray, target: np.ndarray):
        try:
            value, self._cache = F.nll_loss_forward(input, target, self.weight,
                                                    ignore_index=self.ignore_index,
                                                    reduction=self.reduction)
        except (ValueError, TypeError) as e:
            raise type(e)(_relabel(str(e), "nll_loss", self.label())) from None
        return value


class MSELoss(_Loss):
    """Mean squared error ``(x - t)^2`` averaged over all elements
    (``torch.nn.MSELoss``).

    Shape: input ``(*)``, target ``(*)`` the same shape; output a scalar, or ``(*)``
    for ``reduction='none'``.
    """

    _backward = staticmethod(F.mse_loss_backward)

    def __init__(self, *, reduction: str = "mean"):
        super().__init__(reduction)

    def forward(self, input: np.ndarray, target: np.ndarray):
        try:
            value, self._cache = F.mse_loss_forward(input, target, reduction=self.reduction)
        except (ValueError, TypeError) as e:
            raise type(e)(_relabel(str(e), "mse_loss", self.label())) from None
        return value


def _relabel(text: str, op: str, label: str) -> str:
    """Name the layer instead of the kernel in a kernel's error message."""
    return label + text[len(op):] if text.startswith(op + ":") else text
